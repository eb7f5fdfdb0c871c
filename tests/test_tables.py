"""Tables and the claim rules, on constructed per-seed tables with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from dnndist import DnndistError, tables
from dnndist.stats import distribution_stats

INITS = ["orthogonal", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "ones", "zeros"]
ORDERED = {
    "orthogonal": 0.5,
    "kaiming_normal": 0.8,
    "kaiming_uniform": 0.9,
    "xavier_normal": 1.2,
    "xavier_uniform": 1.3,
}


def training_table(
    final: dict[str, float],
    seeds: int = 10,
    sd: float = 0.05,
    epochs: int = 4,
    seed: int = 0,
    diverged: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Per-seed losses: train (epochs 1..E), valid and test (0..E); a seed effect shared by all
    inits (same data order) plus independent noise of ``sd``; zeros flat at ln 10, ones at 50."""
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 0.2, seeds)
    final = {**final, "ones": 50.0, "zeros": 2.303}
    rows = []
    for init, s in itertools.product(INITS, range(seeds)):
        noise = rng.normal(0, sd)
        for e, split in itertools.product(range(epochs + 1), ("train", "valid", "test")):
            if split == "train" and e == 0:
                continue
            v = 2.303 if init == "zeros" else final[init] + (epochs - e) * 0.3 + common[s] + noise
            rows.append(
                {
                    "variant": "base",
                    "init": init,
                    "seed": s,
                    "epoch": e,
                    "split": split,
                    "statistic": "loss",
                    "value": v,
                }
            )
    for init, n in (diverged or {}).items():
        rows += [
            {
                "variant": "base",
                "init": init,
                "seed": s,
                "epoch": 1,
                "split": "train",
                "statistic": "diverged",
                "value": 1.0,
            }
            for s in range(n)
        ]
    return pd.DataFrame(rows)


def verdict(df: pd.DataFrame, claim: str) -> str:
    return df.set_index("claim").loc[claim, "verdict"]


NO_WEIGHTS = pd.DataFrame(columns=["variant", "init", "seed", "epoch", "layer", "depth", "param", "statistic", "value"])
NO_FEATURES = pd.DataFrame(
    columns=["variant", "init", "seed", "epoch", "layer", "depth", "kind", "split", "statistic", "value"]
)


def test_c1_holds_when_orthogonal_truly_leads_with_10_seeds():
    df = tables.claims(training_table(ORDERED), NO_WEIGHTS, NO_FEATURES, None)
    for claim in ("C1a", "C1a final", "C1a test", "C1b", "C1c"):
        assert verdict(df, claim) == "holds", claim
    row = df.set_index("claim").loc["C1a"]
    assert row["n_seeds"] == 10 and row["comparisons"] == 4 and row["ci_low"] < row["effect"] < row["ci_high"] < 1
    assert "t-interval" in row["rule"] and "Holm" in row["rule"]
    assert "area under the curve" in row["statistic"] and "2 %" in row["rule"]  # the curve, with its margin
    assert "epoch 4" in df.set_index("claim").loc["C1a final", "statistic"]
    assert "test" in df.set_index("claim").loc["C1a test", "statistic"]


def test_c1_equal_inits_are_not_refuted():
    equal = {i: 1.0 for i in ORDERED}
    df = tables.claims(training_table(equal, seed=3), NO_WEIGHTS, NO_FEATURES, None)
    for claim in ("C1a", "C1a final", "C1a test"):
        assert verdict(df, claim) in ("inconclusive", "equivalent"), claim  # never refuted


def test_c1_reversed_order_does_not_hold():
    reverse = {
        "orthogonal": 1.5,
        "kaiming_normal": 0.8,
        "kaiming_uniform": 0.9,
        "xavier_normal": 0.4,
        "xavier_uniform": 1.3,
    }
    df = tables.claims(training_table(reverse), NO_WEIGHTS, NO_FEATURES, None)
    assert verdict(df, "C1a") == "does not hold"
    assert df.set_index("claim").loc["C1a", "value"].startswith("refuted by: orthogonal / kaiming")


def test_two_seeds_are_descriptive_only_but_reported():
    df = tables.claims(training_table(ORDERED, seeds=2), NO_WEIGHTS, NO_FEATURES, None)
    assert set(df["verdict"]) == {"descriptive only"}
    row = df.set_index("claim").loc["C1a"]
    assert row["n_seeds"] == 2 and np.isfinite(row["effect"]) and np.isfinite(row["ci_low"])
    one = tables.claims(training_table(ORDERED, seeds=1), NO_WEIGHTS, NO_FEATURES, None).set_index("claim").loc["C1a"]
    assert one["verdict"] == "descriptive only" and np.isfinite(one["effect"]) and np.isnan(one["ci_low"])
    assert "(no interval: 1 seed)" in one["value"]
    no_train = training_table(ORDERED)  # C1c where ones has no training loss (its best epoch is 0)
    no_train = no_train[~((no_train["init"] == "ones") & (no_train["split"] == "train"))]
    c1c = tables.claims(no_train, NO_WEIGHTS, NO_FEATURES, None).set_index("claim").loc["C1c"]
    assert c1c["n_seeds"] == 0 and "no interval: 0 seeds with a value" in c1c["value"]


def test_diverged_runs_are_flagged():
    df = tables.claims(training_table(ORDERED, diverged={"ones": 2}), NO_WEIGHTS, NO_FEATURES, None)
    d = df.set_index("claim").loc["D"]
    assert d["verdict"] == "flagged" and d["value"] == "ones (2 seeds)"
    assert df.set_index("claim").loc["C1c", "n_seeds"] == 8  # the diverged seeds of ones are left out
    assert df.set_index("claim").loc["C1a", "n_seeds"] == 10


def weights_table(
    std: dict[str, float],
    seeds: int = 10,
    layers=(("conv1", 1), ("conv2", 2), ("fc1", 3)),
    sd: float = 0.005,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-seed std of weights and biases at the last epoch (5) per init and layer."""
    rng = np.random.default_rng(seed)
    rows = []
    for init, s, (layer, depth), param in itertools.product(std, range(seeds), layers, ("weight", "bias")):
        v = std[init] * (1 + rng.normal(0, sd / 0.1))
        rows.append(
            {
                "variant": "base",
                "init": init,
                "seed": s,
                "epoch": 5,
                "layer": layer,
                "depth": depth,
                "param": param,
                "statistic": "std",
                "value": v,
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("orth,expected", [(0.11, "holds"), (0.09, "does not hold"), (0.1, "inconclusive")])
def test_c2_orthogonal_variance_rule(orth, expected):
    # 10 seeds, seed sd 2.5 % of the std: 0.11 leads by 4 seed-SDs (2.8 of the paired difference)
    # in every (layer, param, other init); 0.1 is equal
    std = {"orthogonal": orth, **{i: 0.1 for i in INITS[1:5]}}
    df = tables.claims(training_table(ORDERED), weights_table(std, sd=0.0025), NO_FEATURES, None)
    row = df.set_index("claim").loc["C2"]
    assert row["verdict"] == expected and row["comparisons"] == 3 * 2 * 4


def tidy_row(init: str, seed: int, epoch: int, layer: str, depth: int, param: str, stat: str, value) -> dict:
    """One row of the per-run weights table (variant base)."""
    return {
        "variant": "base",
        "init": init,
        "seed": seed,
        "epoch": epoch,
        "layer": layer,
        "depth": depth,
        "param": param,
        "statistic": stat,
        "value": value,
    }


def shape_rows(
    init: str, sampler, n: int, seeds: int, epoch: int, layer: str = "conv1", depth: int = 1, seed: int = 0
) -> list[dict]:
    rng = np.random.default_rng([seed, depth, epoch])
    rows = []
    for s in range(seeds):
        st = distribution_stats(sampler(rng, n))
        rows += [tidy_row(init, s, epoch, layer, depth, "weight", k, v) for k, v in st.items()]
    return rows


@pytest.mark.parametrize("shape,expected", [("normal", "holds"), ("uniform", "does not hold")])
def test_c3_against_the_size_calibrated_null_band(shape, expected):
    """A layer of 432 weights: Gaussian at the end -> holds; still uniform -> does not hold (the KS
    of a uniform layer, ~0.06, is above what a Gaussian sample of 432 gives, ~0.044; its kurtosis
    -1.2 is outside the Gaussian band)."""
    end = (lambda r, n: r.normal(0, 0.1, n)) if shape == "normal" else (lambda r, n: r.uniform(-0.1, 0.1, n))
    rows = []
    for layer, depth, n in (("conv1", 1, 432), ("conv2", 2, 2304)):
        rows += shape_rows("kaiming_uniform", lambda r, k: r.uniform(-0.1, 0.1, k), n, 10, 0, layer, depth)
        rows += shape_rows("kaiming_uniform", end, n, 10, 5, layer, depth)
    df = tables.claims(training_table(ORDERED), pd.DataFrame(rows), NO_FEATURES, None)
    row = df.set_index("claim").loc["C3 kaiming_uniform"]
    assert row["verdict"] == expected and row["comparisons"] == 4
    assert "Gaussian < 0.04" in row["value"]  # the null band is in the table


def growth_rows(ratio: dict[str, float], seeds: int = 10, sd: float = 0.02) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for init, s, (layer, depth), param in itertools.product(
        INITS[:5], range(seeds), (("conv1", 1), ("fc1", 2)), ("weight", "bias")
    ):
        for epoch, std, mean in (
            (0, 0.1, 0.0),
            (5, 0.1 * ratio[param] * np.exp(rng.normal(0, sd)), rng.normal(0, 0.002)),
        ):
            rows += [tidy_row(init, s, epoch, layer, depth, param, k, v) for k, v in (("std", std), ("mean", mean))]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "w_ratio,b_ratio,expected",
    [(1.2, 1.1, "holds"), (0.8, 1.2, "does not hold"), (2.0, 1.2, "does not hold"), (1.0, 1.2, "inconclusive")],
)
def test_c4_grows_slightly(w_ratio, b_ratio, expected):
    df = tables.claims(training_table(ORDERED), growth_rows({"weight": w_ratio, "bias": b_ratio}), NO_FEATURES, None)
    assert verdict(df, "C4a") == expected
    assert verdict(df, "C4b") == "holds"  # |mean| << 0.1 std
    assert "(1, 1.5)" in df.set_index("claim").loc["C4a", "rule"]


def feature_row(init: str, seed: int, epoch: int, layer: str, depth: int, kind: str, stat: str, value) -> dict:
    """One row of the per-run features table (variant base, train inputs): a weights row's keys
    with ``kind`` and ``split`` in place of ``param``."""
    row = tidy_row(init, seed, epoch, layer, depth, "", stat, value)
    del row["param"]
    return {**row, "kind": kind, "split": "train"}


def feature_table(growth_by_depth: bool, seeds: int = 10) -> pd.DataFrame:
    """Feature std per layer: 1.0 before training; after, x(1 + depth/4) (grows more in deeper layers)
    or x2 everywhere; conv10 is deeper than conv2 (depth 3 vs 2)."""
    rng = np.random.default_rng(2)
    layers = (("conv1", 1), ("conv2", 2), ("conv10", 3), ("fc1", 4))
    rows = []
    for init, s, (layer, depth), kind in itertools.product(INITS[:5], range(seeds), layers, ("pre", "post")):
        after = (1 + depth / 4 if growth_by_depth else 2.0) * np.exp(rng.normal(0, 0.05))
        for epoch, v in ((0, np.exp(rng.normal(0, 0.05))), (5, after)):
            rows.append(feature_row(init, s, epoch, layer, depth, kind, "std", v))
    return pd.DataFrame(rows)


def test_c5_split_pre_post_and_ordered_by_depth():
    df = tables.claims(training_table(ORDERED), NO_WEIGHTS, feature_table(True), None).set_index("claim")
    for claim in ("C5a pre", "C5a post", "C5b pre", "C5b post"):
        assert df.loc[claim, "verdict"] == "holds", claim
    assert "(conv1, conv2, conv10; linear layers apart" in df.loc["C5b pre", "statistic"]  # fc1 not in the trend
    flat = tables.claims(training_table(ORDERED), NO_WEIGHTS, feature_table(False), None).set_index("claim")
    assert flat.loc["C5a pre", "verdict"] == "holds" and flat.loc["C5b pre", "verdict"] != "holds"


def test_layers_without_depth_sort_naturally():
    layers = pd.DataFrame({"layer": ["conv10", "conv2", "fc1", "conv1"]})
    assert tables.depth_sorted(layers) == ["conv1", "conv2", "conv10", "fc1"]


def em_ab_table(seeds: int = 10, em_cv: float = 0.3, ab_cv: float = 0.1, samples: int = 200) -> pd.DataFrame:
    """Emission with a larger CV over inputs but a 10x smaller mean than absorption (as when
    C_out < C_in): the raw variance is larger for absorption, the scale-free CV for emission."""
    rng = np.random.default_rng(3)
    frames = []
    for init, s, layer, c in itertools.product(INITS[:2], range(seeds), ("conv2", "conv3"), range(4)):
        for measure, mean, cv in (("emission", 1.0 + 0.1 * c, em_cv), ("absorption", 10.0 + c, ab_cv)):
            v = mean * (1 + cv * rng.normal(size=samples))
            frames.append(
                pd.DataFrame(
                    {
                        "variant": "base",
                        "init": init,
                        "seed": s,
                        "epoch": 5,
                        "layer": layer,
                        "measure": measure,
                        "channel": c,
                        "sample": np.arange(samples),
                        "value": v,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def test_c6_compares_coefficients_of_variation_not_raw_variances():
    em = em_ab_table()
    summary = tables.emission_summary(em)
    assert (summary["var_absorption"] > summary["var_emission"]).all() and summary["emission_cv_larger"].all()
    df = tables.claims(training_table(ORDERED), NO_WEIGHTS, NO_FEATURES, em).set_index("claim")
    assert df.loc["C6", "verdict"] == "holds" and df.loc["C6", "effect"] == pytest.approx(3.0, rel=0.1)
    assert df.loc["C6", "comparisons"] == 4  # (init, conv layer)
    rev = tables.claims(training_table(ORDERED), NO_WEIGHTS, NO_FEATURES, em_ab_table(em_cv=0.1, ab_cv=0.3)).set_index(
        "claim"
    )
    assert rev.loc["C6", "verdict"] == "does not hold"


def test_init_check_reports_theory_and_empirical():
    rows = []
    for stat, v in {
        "std": 0.117,
        "init_std": 0.1179,
        "init_bound": np.nan,
        "min": -0.5,
        "max": 0.45,
        "fan_in": 144,
        "fan_out": 144,
        "gain": 2**0.5,
    }.items():
        rows.append(
            {
                "variant": "base",
                "init": "kaiming_normal",
                "epoch": 0,
                "layer": "conv2",
                "depth": 2,
                "param": "weight",
                "statistic": stat,
                "mean": v,
                "ci_low": v,
                "ci_high": v,
                "n_seeds": 2,
            }
        )
    t = tables.init_check(pd.DataFrame(rows))
    row = t.iloc[0]
    assert row["fan_in"] == 144 and row["empirical_max_abs"] == 0.5 and row["gain"] == pytest.approx(2**0.5)
    assert row["std_ratio"] == pytest.approx(0.117 / 0.1179)


def test_write_table_formats(tmp_path):
    df = pd.DataFrame({"claim": ["C1"], "value": [0.123456789], "verdict": ["holds"]})
    tables.write_table(df, tmp_path / "t", "A caption with 95 % CI")
    assert (tmp_path / "t.csv").read_text().startswith("claim,value,verdict")
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("A caption") and "| C1" in md and "0.1235" in md
    tex = (tmp_path / "t.tex").read_text()
    assert "\\caption{A caption with 95 \\% CI}" in tex and "\\begin{tabular}" in tex
    page = (tmp_path / "t.html").read_text()  # shown inside the report
    assert ">claim</th>" in page and '<td class="col-value num">0.1235</td>' in page
    assert '<td class="col-verdict verdict v-holds">holds</td>' in page and "A caption with 95 % CI" in page
    tables.write_table(df.iloc[:0], tmp_path / "empty", "Nothing")
    assert "no rows" in (tmp_path / "empty.html").read_text()


def test_factor_effects_recover_a_planted_effect():
    """Synthetic weights table: batch norm adds 0.2 to the near-zero mass (plus seed noise),
    leaky ReLU nothing; the table finds the first (t-test over 5 seeds, Holm over the statistics)
    and not the second; with 2 seeds it only describes."""
    from dnndist.tables import factor_effects

    rng = np.random.default_rng(0)
    variants = {
        "base": {"model": {"norm": "none", "activation": "relu"}},
        "bn": {"model": {"norm": "batch", "activation": "relu"}},
        "leaky": {"model": {"norm": "none", "activation": "leaky_relu"}},
        "bn-leaky": {"model": {"norm": "batch", "activation": "leaky_relu"}},
    }
    rows = []
    for v, s in variants.items():
        for seed in range(5):
            for layer in ("conv1", "conv2", "fc1"):
                for epoch in (0, 3):
                    # seed noise shared by the variants that differ only in the activation, so its effect is exactly 0
                    noise = np.random.default_rng([seed, len(layer), epoch, s["model"]["norm"] == "batch"]).normal(
                        0, 0.01
                    )
                    nz = 0.1 + (0.2 if s["model"]["norm"] == "batch" and epoch == 3 else 0) + noise
                    for stat, val in (("near_zero_rel_0.1", nz), ("kurtosis", rng.normal(0, 0.1))):
                        rows.append(
                            {
                                "variant": v,
                                "init": "kaiming_normal",
                                "seed": seed,
                                "epoch": epoch,
                                "layer": layer,
                                "depth": 1,
                                "param": "weight",
                                "statistic": stat,
                                "value": val,
                            }
                        )
    weights = pd.DataFrame(rows)
    df = factor_effects(weights, variants)
    nz = df[df["statistic"] == "near_zero_rel_0.1"].set_index("factor")
    assert nz.loc["model.norm", "verdict"] == "increases" and abs(nz.loc["model.norm", "effect"] - 0.2) < 0.02
    assert nz.loc["model.norm", "n_pairs"] == 2 and nz.loc["model.norm", "n_seeds"] == 5
    assert nz.loc["model.norm", "ci_low"] > 0.15 and nz.loc["model.norm", "p_holm"] < 0.05
    assert nz.loc["model.activation", "verdict"] == "inconclusive"
    assert set(df["factor"]) == {"model.norm", "model.activation"}
    few = factor_effects(weights[weights["seed"] < 2], variants)
    assert set(few["verdict"]) == {"descriptive only"} and few["effect"].notna().any()


def test_emission_summary_spread_across_channels():
    """Emission medians differ between channels (1, 2, 3, ...), absorption's are equal: the
    across-channel spread flags emission; over inputs absorption varies more (CV 1/3 vs 0.01)."""
    from dnndist.tables import emission_summary

    rng = np.random.default_rng(0)
    rows = []
    for c in range(6):
        for sample in range(200):
            rows.append(
                ("base", "kaiming_normal", 0, 1, "conv2", "emission", c, sample, (c + 1) * (1 + 0.01 * rng.normal()))
            )
            rows.append(("base", "kaiming_normal", 0, 1, "conv2", "absorption", c, sample, 3 + rng.normal()))
    df = pd.DataFrame(
        rows, columns=["variant", "init", "seed", "epoch", "layer", "measure", "channel", "sample", "value"]
    )
    out = emission_summary(df).iloc[0]
    assert out["emission_spread_larger"] and not out["emission_cv_larger"]
    assert (
        abs(out["channel_cv_emission"] - np.std(np.arange(1, 7)) / 3.5) < 0.01 and out["channel_cv_absorption"] < 0.05
    )
    assert out["cv_emission"] == pytest.approx(0.01, rel=0.2) and out["cv_absorption"] == pytest.approx(1 / 3, rel=0.1)


def trend_rows(
    variant: str, sign: int, last: int, seeds: int, conv: int = 6, linear: int = 2, noise: float = 0.5
) -> list[dict]:
    """Near-zero mass rising (sign +1) or falling (-1) with depth over the conv layers, plus seed
    noise; ``linear`` fc layers after them with a level of their own; ndim marks the layer kind."""
    rng = np.random.default_rng([seeds, sign + 1])
    rows = []
    layers = [(f"conv{d}", d, 4) for d in range(1, conv + 1)] + [(f"fc{i}", conv + i, 2) for i in range(1, linear + 1)]
    for seed in range(seeds):
        for layer, depth, ndim in layers:
            for epoch in (0, last):
                value = (sign * depth + rng.normal(0, noise) if ndim == 4 else 100.0 - depth) if epoch == last else 0.0
                base = {
                    "variant": variant,
                    "init": "kaiming_normal",
                    "seed": seed,
                    "epoch": epoch,
                    "layer": layer,
                    "depth": depth,
                    "param": "weight",
                }
                rows += [
                    {**base, "statistic": "near_zero_rel_0.1", "value": value},
                    {**base, "statistic": "ndim", "value": ndim},
                ]
    return rows


def test_depth_trend_per_variant_and_layer_kind():
    """Rising in one variant, falling in the other, each at its own last epoch; conv and linear
    layers apart (3 linear layers fall with depth on a much higher level: pooled with the convs
    they would make the rising variant look flat)."""
    from dnndist.tables import depth_trend

    rows = trend_rows("base", 1, 5, 6, linear=3) + trend_rows("depth6", -1, 3, 6, linear=3)
    out = depth_trend(pd.DataFrame(rows)).set_index(["variant", "layer_kind"])
    assert out.loc[("base", "conv"), "verdict"] == "increases" and out.loc[("depth6", "conv"), "verdict"] == "decreases"
    assert out.loc[("base", "conv"), "spearman_rho"] > 0.8 and out.loc[("base", "conv"), "layers"] == 6
    assert out.loc[("base", "linear"), "spearman_rho"] == -1.0 and out.loc[("base", "linear"), "layers"] == 3
    assert out.loc[("base", "conv"), "n_seeds"] == 6
    few = depth_trend(pd.DataFrame(trend_rows("base", 1, 5, 2))).set_index("layer_kind")
    assert (
        few.loc["conv", "verdict"] == "undecidable at 2 seeds (needs 6)" and "linear" not in few.index
    )  # 2 linear: no trend
    assert -1.0 <= few.loc["conv", "ci_low"] <= few.loc["conv", "ci_high"] <= 1.0  # t(1) = 12.7 ran past +-1


def _range_rows(
    init, seed, epoch, layer, depth, lo, hi, count=432, within_unit=1.0, within_default=1.0, param="weight"
):
    stats = {"count": count, "min": lo, "max": hi, "within_unit": within_unit, "within_default_bound": within_default}
    return [tidy_row(init, seed, epoch, layer, depth, param, k, v) for k, v in stats.items()]


def test_range_table_reports_the_extreme_seed_not_the_mean():
    # kaiming_normal conv1: seed 0 reaches 1.116 (3 weights outside [-1, 1]), seed 1 only 0.696;
    # a seed mean (0.906) would hide the weights outside [-1, 1]
    rows = (
        _range_rows("kaiming_normal", 0, 0, "conv1", 1, -0.9, 0.9)
        + _range_rows("kaiming_normal", 1, 0, "conv1", 1, -0.6, 0.5)
        + _range_rows("kaiming_normal", 0, 10, "conv1", 1, -0.8, 1.116, within_unit=1 - 3 / 432, within_default=0.4)
        + _range_rows("kaiming_normal", 1, 10, "conv1", 1, -0.696, 0.6, within_default=0.5)
        + _range_rows("kaiming_normal", 0, 10, "conv1", 1, -0.1, 0.1, count=16, param="bias")
        + _range_rows("kaiming_normal", 1, 10, "conv1", 1, -0.1, 0.1, count=16, param="bias")
        + _range_rows("torch_default", 0, 0, "conv1", 1, -0.19, 0.19)
        + _range_rows("torch_default", 0, 10, "conv1", 1, -0.3, 0.3, within_default=0.9)
    )
    t = tables.range_table(pd.DataFrame(rows))
    kn = t[(t["init"] == "kaiming_normal") & (t["param"] == "weight")].iloc[0]
    assert kn["max_abs_after"] == pytest.approx(1.116) and kn["max_abs_per_seed_after"] == "1.12, 0.696"
    assert kn["seeds_outside_unit_after"] == "1/2" and kn["n_outside_unit_after"] == 3
    assert kn["seeds_outside_unit_before"] == "0/2" and kn["max_abs_before"] == pytest.approx(0.9)
    assert kn["within_default_bound_after"] == pytest.approx(0.45)
    assert list(t["param"][t["init"] == "kaiming_normal"]) == ["weight", "bias"]
    td = t[t["init"] == "torch_default"].iloc[0]  # the forum's question: PyTorch's own init
    assert td["max_abs_after"] == pytest.approx(0.3) and td["within_default_bound_after"] == pytest.approx(0.9)


def test_depth_trend_orders_twelve_layers_by_depth_not_by_name():
    """conv10..conv12 sort before conv2 by name; the trend must follow depth (a plain CNN of 12 convs)."""
    from dnndist.tables import depth_trend

    rows = pd.DataFrame(trend_rows("depth12", 1, 20, 10, conv=12, linear=2, noise=0.2))
    assert sorted(set(rows["layer"]))[:4] == ["conv1", "conv10", "conv11", "conv12"]  # name order is not depth order
    out = depth_trend(rows).set_index("layer_kind")
    assert out.loc["conv", "layers"] == 12 and out.loc["conv", "spearman_rho"] > 0.95
    assert out.loc["conv", "verdict"] == "increases"


def test_claims_stages_read_each_run_at_its_own_best_validation_epoch():
    """claims_stages cuts every run at its stage epoch: at 'best', each run's epoch of lowest
    validation loss (different per run here), so C1a final's effect is the mean over seeds of the paired
    training-loss ratios at those epochs (geometric: the mean of the log ratios), computed here by hand."""
    rows, best = [], {}
    for init, base in (("orthogonal", 0.5), ("kaiming_normal", 0.8)):
        for s in range(6):
            b = 2 + (s + (init == "orthogonal")) % 3  # best epochs 2..4, differing between runs
            best[(init, s)] = b
            for e in range(7):
                valid = 1.0 + 0.1 * (e - b) ** 2 + 0.01 * s
                rows.append(("base", init, s, e, "valid", "loss", valid))
                if e:
                    rows.append(
                        ("base", init, s, e, "train", "loss", base + 1.0 / e + 0.013 * s * (init == "orthogonal"))
                    )
    training = pd.DataFrame(rows, columns=["variant", "init", "seed", "epoch", "split", "statistic", "value"])
    out = tables.claims_stages(training, None, None, None, [3, "best"])
    c1a = out[out["claim"] == "C1a final"].set_index("stage")
    assert list(c1a.index) == ["epoch 3", "best validation", "last epoch"]
    assert list(c1a["ends"]) == ["3", "2-4", "6"]
    assert list(c1a["role"]) == ["exploratory", "exploratory", "primary"]  # one primary stage: the claims table's

    def train_loss(init, s, e):
        return float(
            training.query("init == @init and seed == @s and epoch == @e and split == 'train'")["value"].iloc[0]
        )

    by_hand = np.exp(
        np.mean(
            [
                np.log(
                    train_loss("orthogonal", s, best[("orthogonal", s)])
                    / train_loss("kaiming_normal", s, best[("kaiming_normal", s)])
                )
                for s in range(6)
            ]
        )
    )
    assert c1a.loc["best validation", "effect"] == pytest.approx(by_hand, rel=1e-12)
    at3 = np.exp(
        np.mean([np.log(train_loss("orthogonal", s, 3) / train_loss("kaiming_normal", s, 3)) for s in range(6)])
    )
    assert c1a.loc["epoch 3", "effect"] == pytest.approx(at3, rel=1e-12)
    assert out.groupby("claim")["changes"].nunique().eq(1).all()  # one flag per claim
    assert c1a["changes"].iloc[0] == (c1a["verdict"].nunique() > 1)


def test_claims_stages_refuse_a_stage_that_is_not_a_checkpoint():
    w = pd.DataFrame(
        [
            tidy_row(i, s, e, "conv1", 1, "weight", "std", 1.0)
            for i in ("orthogonal", "kaiming_normal")
            for s in range(2)
            for e in (0, 4)
        ]
    )
    t = training_table(ORDERED, seeds=2)
    with pytest.raises(DnndistError, match="has no epoch 2 for base/"):
        tables.claims_stages(t, w, None, None, [2])


def test_range_and_depth_trend_at_the_last_stage_are_the_plain_tables():
    """The stage versions cut the tables and call the plain functions: at the last epoch they give
    the range table's 'after' columns and the depth-trend table unchanged; at an earlier stage
    they read that epoch."""
    rng = np.random.default_rng(3)
    rows = []
    for init, s, e in itertools.product(("kaiming_normal", "xavier_uniform"), range(6), (0, 2, 5)):
        for depth, layer in enumerate(("conv1", "conv2", "conv3"), start=1):
            w = rng.normal(0, 0.3 + 0.1 * depth + 0.05 * e, 400)
            for stat, value in distribution_stats(w).items():
                rows.append(tidy_row(init, s, e, layer, depth, "weight", stat, value))
    weights = pd.DataFrame(rows)
    training = training_table(ORDERED, seeds=6, epochs=5)
    training = training[training["init"].isin(["kaiming_normal", "xavier_uniform"])]
    rng_last = tables.range_stages(training, weights, [2])
    plain = tables.range_table(weights)
    last = rng_last[rng_last["stage"] == "last epoch"].reset_index(drop=True)
    for col in ("max_abs_after", "seeds_outside_unit_after", "n_outside_unit_after"):
        assert list(last[col]) == list(plain[col])
    at2 = rng_last[rng_last["stage"] == "epoch 2"].reset_index(drop=True)
    w2 = weights[weights["epoch"] == 2].pivot_table(
        index=["init", "layer", "seed"], columns="statistic", values="value"
    )
    extreme = np.maximum(w2["max"].abs(), w2["min"].abs()).groupby(level=["init", "layer"]).max()
    for r in at2.itertuples():  # the largest |w| over seeds at epoch 2, not at 5
        assert r.max_abs_after == extreme[(r.init, r.layer)]
    trend = tables.depth_trend_stages(training, weights, [2])
    pd.testing.assert_frame_equal(
        trend[trend["stage"] == "last epoch"].drop(columns=["stage", "ends"]).reset_index(drop=True),
        tables.depth_trend(weights)
        .sort_values(["variant", "init", "layer_kind", "statistic"], kind="stable")
        .reset_index(drop=True),
        check_like=True,
    )


def test_a_run_that_diverged_between_checkpoints_is_left_out_at_every_stage():
    """A run whose metrics stop at epoch 3 (diverged) while its weights have stand-ins at the
    checkpoints 0, 2 and 4: the stage tables do not stop on the missing epoch 3, the last stage's
    claims are the claims table's, and the run is left out of every stage (the same seeds)."""
    t = training_table(ORDERED, seeds=6, epochs=4)
    run0 = (t["init"] == "orthogonal") & (t["seed"] == 0)
    flag = {"variant": "base", "init": "orthogonal", "seed": 0, "epoch": 3, "split": "train", "statistic": "diverged"}
    t = pd.concat([t[~(run0 & (t["epoch"] > 3))], pd.DataFrame([{**flag, "value": 1.0}])], ignore_index=True)
    rows = []
    for init, s, e in itertools.product(ORDERED, range(6), (0, 2, 4)):
        for depth, layer in enumerate(("conv1", "conv2", "conv3"), start=1):
            rows.append(tidy_row(init, s, e, layer, depth, "weight", "std", 0.1 * depth * (1 + 0.01 * e + 0.001 * s)))
            rows.append(tidy_row(init, s, e, layer, depth, "weight", "mean", 0.0))
    w = pd.DataFrame(rows)
    assert (t["statistic"] == "diverged").any() and t[(t["init"] == "orthogonal") & (t["seed"] == 0)]["epoch"].max() < 4
    out = tables.claims_stages(t, w, None, None, [2])
    plain = tables.claims(t, w, None, None)
    last = out[out["stage"] == "last epoch"].set_index("claim")
    for r in plain[plain["claim"] != "D"].itertuples():
        assert (last.loc[r.claim, "verdict"], last.loc[r.claim, "value"]) == (r.verdict, r.value), r.claim
    c2 = out[out["claim"] == "C2"].set_index("stage")
    assert c2.loc["epoch 2", "n_seeds"] == c2.loc["last epoch", "n_seeds"] == 5  # seed 0 of orthogonal left out


def test_c6_that_holds_before_training_says_so():
    """Emission's larger CV present at epoch 0 and at the end: "holds, already at initialisation",
    with the epoch-0 decision beside the final one; absent at epoch 0: plain "holds"."""
    end = em_ab_table()
    for before, expected in (
        (em_ab_table(), "holds, already at initialisation"),
        (em_ab_table(em_cv=0.1, ab_cv=0.3), "holds"),
    ):
        both = pd.concat([before.assign(epoch=0), end], ignore_index=True)
        row = tables.claims(training_table(ORDERED), NO_WEIGHTS, NO_FEATURES, both).set_index("claim").loc["C6"]
        assert row["verdict"] == expected
        assert "before training (epoch 0): " + ("holds" if expected != "holds" else "does not hold") in row["value"]
        assert row["effect"] == pytest.approx(3.0, rel=0.1)  # the final value stays the row's effect


def c4b_rows(seeds: int, bias_size: int, drift: float) -> pd.DataFrame:
    """Weights (4096 values) and biases (``bias_size`` values) of two layers, drawn afresh at epoch 0
    around 0 and at the end around ``drift`` std: the end's and the start's means each scatter by
    1 / sqrt(size) of the std, a bias's by 0.25."""
    rng = np.random.default_rng(4)
    rows = []
    for init, s, (layer, depth) in itertools.product(INITS[:5], range(seeds), (("conv1", 1), ("fc1", 2))):
        for param, k in (("weight", 4096), ("bias", bias_size)):
            start = rng.normal(0.0, 1.0, k) * 0.1
            end = start + rng.normal(drift, 0.02, k) * 0.1  # training moves every value by about drift std
            for epoch, v in ((0, start), (5, end)):
                rows += [
                    tidy_row(init, s, epoch, layer, depth, param, stat, val)
                    for stat, val in (("mean", v.mean()), ("std", v.std()), ("count", k))
                ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("drift,expected", [(0.0, "holds"), (0.3, "does not hold")])
def test_c4b_is_the_drift_of_the_mean_so_small_tensors_can_hold(drift, expected):
    """Biases of 16 values: mean / std at the end scatters by 0.25 between seeds, over the 0.1
    band, so the old statistic could never hold at 10 seeds (issue 2/7: 0 % at a true mean of 0);
    the drift from epoch 0, paired by seed, cancels the init's own scatter and comes out either way."""
    row = tables.claims(training_table(ORDERED), c4b_rows(10, 16, drift), NO_FEATURES, None).set_index("claim")
    assert row.loc["C4b", "verdict"] == expected
    assert row.loc["C4b", "comparisons"] == 5 * 2 * 2
    assert "drift of the mean" in row.loc["C4b", "statistic"]


def level_rows(mean_after: float, std_before: float, seeds: int = 10) -> pd.DataFrame:
    """Pre-activation mean and std per (init, seed, layer) at epochs 0 and 5, with seed noise."""
    rng = np.random.default_rng(6)
    rows = []
    for init, s, (layer, depth) in itertools.product(INITS[:5], range(seeds), (("conv1", 1), ("fc1", 2))):
        for epoch, mean, std in ((0, 0.0, std_before), (5, mean_after, 3.0)):
            for stat, v in (("mean", mean + rng.normal(0, 0.05)), ("std", std * np.exp(rng.normal(0, 0.05)))):
                rows.append(feature_row(init, s, epoch, layer, depth, "pre", stat, v))
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "mean_after,std_before,c5c,c5d",
    [(0.3, 1.0, "holds", "holds"), (2.0, 1.0, "does not hold", "holds"), (0.3, 0.2, "holds", "does not hold")],
)
def test_c5_levels_the_paper_states(mean_after, std_before, c5c, c5d):
    """C5c: feature mean within +-1.0 after training; C5d: feature std within a factor 2 of 1 at
    initialisation (the paper's Fig 3 sentences, untested before)."""
    df = tables.claims(training_table(ORDERED), NO_WEIGHTS, level_rows(mean_after, std_before), None).set_index("claim")
    assert df.loc["C5c", "verdict"] == c5c and df.loc["C5d", "verdict"] == c5d
    assert df.loc["C5c", "comparisons"] == 5 * 2 and "(0.5, 2)" in df.loc["C5d", "rule"]


def test_emission_summary_says_how_many_channels_of_how_many():
    """The em_ab table holds the first stats.EM_AB_CHANNELS channels of a layer: the summary says
    how many of how many, out (emission) and in (absorption)."""
    rows = [
        ("base", "kaiming_normal", 0, 1, "conv2", measure, c, total, s, 1.0 + c + s)
        for measure, total in (("emission", 64), ("absorption", 16))
        for c in range(16)
        for s in range(3)
    ]
    cols = ["variant", "init", "seed", "epoch", "layer", "measure", "channel", "layer_channels", "sample", "value"]
    out = tables.emission_summary(pd.DataFrame(rows, columns=cols))
    assert out["channels"].tolist() == ["16 of 64 out, 16 of 16 in"]


# --------------------------------------------------------------------------- at a glance
def glance_weights(seeds: int = 5) -> pd.DataFrame:
    """Per-seed weights rows with known answers: std grows by 10 % (orthogonal) and 20 % (kaiming
    normal) in every layer; kaiming normal's conv1 leaves [-1, 1] after training in 2 seeds;
    ones end at mean 0.9 with std 0.01; zeros stay 0."""
    rows = []
    layers = (("conv1", 1), ("fc1", 2))
    for init, seed, (layer, depth), epoch in itertools.product(
        ["orthogonal", "kaiming_normal", "ones", "zeros"], range(seeds), layers, (0, 3)
    ):
        growth = {"orthogonal": 1.1, "kaiming_normal": 1.2}.get(init, 1.0)
        big = init == "kaiming_normal" and layer == "conv1" and epoch == 3 and seed < 2
        values = {
            "std": 0.1 * (growth if epoch else 1.0),
            "min": -0.5,
            "max": 1.25 if big else 0.5,
            "kurtosis": 0.3 if epoch else 0.0,
            "near_zero_rel_0.1": 0.08,
            "mean": 0.0,
        }
        if init in ("ones", "zeros"):
            const = 1.0 if init == "ones" else 0.0
            values = {
                "std": 0.01 if (init == "ones" and epoch) else 0.0,
                "mean": 0.9 if (init == "ones" and epoch) else const,
            }
            values |= {"min": values["mean"], "max": values["mean"]}
        rows += [tidy_row(init, seed, epoch, layer, depth, "weight", k, v) for k, v in values.items()]
    return pd.DataFrame(rows)


def test_at_a_glance_says_what_the_tables_say():
    training = training_table(ORDERED, seeds=5, epochs=3)
    training = pd.concat(
        [
            training,
            training[training["statistic"] == "loss"].assign(statistic="accuracy", value=lambda d: 1 / d["value"]),
        ]
    )
    out = tables.at_a_glance(training, glance_weights())
    text = dict(zip(out["source"], out["finding"]))
    acc = training[(training["statistic"] == "accuracy") & (training["split"] == "test") & (training["epoch"] == 3)]
    best = acc.groupby("init")["value"].mean().idxmax()
    assert text["training"].startswith("Test accuracy after 3 epochs (mean over 5 seeds), best first: ")
    assert text["training"].split("best first: ")[1].startswith(best.replace("_", " "))
    assert (
        "after training, weights leave [-1, 1] only in kaiming normal conv1 (largest |w| 1.25, 2 of 5 seeds)"
        in text["range"]
    )
    assert "at initialisation, every weight lies inside [-1, 1] (largest |w| 0.5)" in text["range"]
    assert "+10.0 % (orthogonal" in text["weights: std"] and "to +20.0 % (kaiming normal" in text["weights: std"]
    assert "it grew in 4 of 4 (init, layer) pairs" in text["weights: std"]
    assert "kaiming normal 0.00 -> 0.30" in text["weights: kurtosis"]
    assert "ones: layer means 0.9 to 0.9, std at most 0.01" in text["weights: mean, std"]
    assert "zeros: every weight still equals 0 in every layer" in text["weights: mean, std"]


def test_at_a_glance_leaves_out_diverged_runs_and_names_them():
    training = training_table(ORDERED, seeds=5, epochs=3, diverged={"kaiming_normal": 2})
    out = tables.at_a_glance(training, glance_weights())
    text = dict(zip(out["source"], out["finding"]))
    assert "kaiming normal conv1" not in text["range"]  # the 2 seeds with large weights diverged
    assert text["training: diverged"] == "Left out above: runs that diverged, kaiming_normal (2 seeds)."
