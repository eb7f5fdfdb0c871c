"""Tables and the claim rules, on constructed seed summaries with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from dnndist import tables

INITS = ["orthogonal", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "ones", "zeros"]


def training_summary(losses: dict[str, float], width: float) -> pd.DataFrame:
    rows = []
    for init, epoch in itertools.product(INITS, (1, 5)):
        final = losses[init]
        m = final if epoch == 5 else (2.303 if init == "zeros" else final + 1.0)
        rows.append({"variant": "base", "init": init, "epoch": epoch, "split": "train", "statistic": "loss",
                     "mean": m, "ci_low": m - width if width else np.nan, "ci_high": m + width if width else np.nan, "n_seeds": 3})
    return pd.DataFrame(rows)


def verdict(df: pd.DataFrame, claim: str) -> str:
    return df.set_index("claim").loc[claim, "verdict"]


EMPTY = pd.DataFrame(columns=["variant", "init", "epoch", "layer", "param", "statistic", "mean", "ci_low", "ci_high", "depth"])
FEAT = pd.DataFrame(columns=["variant", "init", "epoch", "layer", "kind", "split", "statistic", "mean", "ci_low", "ci_high"])


@pytest.mark.parametrize("order,width,expected", [
    ({"orthogonal": 0.5, "kaiming_normal": 0.8, "kaiming_uniform": 0.9, "xavier_normal": 1.2, "xavier_uniform": 1.3}, 0.05, "holds"),
    ({"orthogonal": 1.5, "kaiming_normal": 0.8, "kaiming_uniform": 0.9, "xavier_normal": 0.4, "xavier_uniform": 1.3}, 0.05, "does not hold"),
    ({"orthogonal": 0.5, "kaiming_normal": 0.8, "kaiming_uniform": 0.9, "xavier_normal": 1.2, "xavier_uniform": 1.3}, 0.5, "inconclusive"),
    ({"orthogonal": 0.5, "kaiming_normal": 0.8, "kaiming_uniform": 0.9, "xavier_normal": 1.2, "xavier_uniform": 1.3}, 0.0, "inconclusive"),
])
def test_c1_loss_ordering_rule(order, width, expected):
    losses = {**order, "ones": 50.0, "zeros": 2.303}
    df = tables.claims(training_summary(losses, width), EMPTY, FEAT, None)
    assert verdict(df, "C1a") == expected
    assert verdict(df, "C1b") == "holds"  # zeros flat
    assert verdict(df, "C1c") == ("holds" if width and width < 1 else "inconclusive")


def weights_summary(orth_std: float) -> pd.DataFrame:
    rows = []
    for init, layer, param in itertools.product(INITS[:5], ("conv1", "fc1"), ("weight", "bias")):
        m = orth_std if init == "orthogonal" else 0.1
        rows.append({"variant": "base", "init": init, "epoch": 5, "layer": layer, "param": param, "statistic": "std",
                     "mean": m, "ci_low": m - 0.01, "ci_high": m + 0.01, "depth": 1})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("orth,expected", [(0.2, "holds"), (0.05, "does not hold"), (0.105, "inconclusive")])
def test_c2_orthogonal_variance_rule(orth, expected):
    losses = {i: 1.0 for i in INITS}
    df = tables.claims(training_summary(losses, 0.0), weights_summary(orth), FEAT, None)
    assert verdict(df, "C2") == expected


def test_init_check_reports_theory_and_empirical():
    rows = []
    for stat, v in {"std": 0.117, "init_std": 0.1179, "init_bound": np.nan, "min": -0.5, "max": 0.45, "fan_in": 144, "fan_out": 144}.items():
        rows.append({"variant": "base", "init": "kaiming_normal", "epoch": 0, "layer": "conv2", "depth": 2, "param": "weight",
                     "statistic": stat, "mean": v, "ci_low": v, "ci_high": v, "n_seeds": 2})
    t = tables.init_check(pd.DataFrame(rows))
    row = t.iloc[0]
    assert row["fan_in"] == 144 and row["empirical_max_abs"] == 0.5
    assert row["std_ratio"] == pytest.approx(0.117 / 0.1179)


def test_write_table_formats(tmp_path):
    df = pd.DataFrame({"claim": ["C1"], "value": [0.123456789], "verdict": ["holds"]})
    tables.write_table(df, tmp_path / "t", "A caption with 95 % CI")
    assert (tmp_path / "t.csv").read_text().startswith("claim,value,verdict")
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("A caption") and "| C1" in md and "0.1235" in md
    tex = (tmp_path / "t.tex").read_text()
    assert "\\caption{A caption with 95 \\% CI}" in tex and "\\begin{tabular}" in tex


def test_factor_effects_recover_a_planted_effect():
    """Synthetic weights table: batch norm adds 0.2 to the near-zero mass (plus seed noise),
    leaky ReLU nothing; the table finds the first with a CI excluding 0 and not the second."""
    import numpy as np
    import pandas as pd

    from dnndist.tables import factor_effects

    rng = np.random.default_rng(0)
    variants = {"base": {"model": {"norm": "none", "activation": "relu"}},
                "bn": {"model": {"norm": "batch", "activation": "relu"}},
                "leaky": {"model": {"norm": "none", "activation": "leaky_relu"}},
                "bn-leaky": {"model": {"norm": "batch", "activation": "leaky_relu"}}}
    rows = []
    for v, s in variants.items():
        for seed in range(5):
            for layer in ("conv1", "conv2", "fc1"):
                for epoch in (0, 3):
                    # seed noise shared by the variants that differ only in the activation, so its effect is exactly 0
                    noise = np.random.default_rng([seed, len(layer), epoch, s["model"]["norm"] == "batch"]).normal(0, 0.01)
                    nz = 0.1 + (0.2 if s["model"]["norm"] == "batch" and epoch == 3 else 0) + noise
                    for stat, val in (("near_zero_rel_0.1", nz), ("kurtosis", rng.normal(0, 0.1))):
                        rows.append({"variant": v, "init": "kaiming_normal", "seed": seed, "epoch": epoch, "layer": layer,
                                     "depth": 1, "param": "weight", "statistic": stat, "value": val})
    df = factor_effects(pd.DataFrame(rows), variants)
    nz = df[df["statistic"] == "near_zero_rel_0.1"].set_index("factor")
    assert nz.loc["model.norm", "verdict"] == "increases" and abs(nz.loc["model.norm", "effect"] - 0.2) < 0.02
    assert nz.loc["model.norm", "n_pairs"] == 2 and nz.loc["model.norm", "n_seeds"] == 5
    assert nz.loc["model.activation", "verdict"] == "no clear effect"
    assert set(df["factor"]) == {"model.norm", "model.activation"}


def test_emission_summary_spread_across_channels():
    """Emission medians differ between channels (1, 2, 3, ...), absorption's are equal: the
    across-channel spread flags emission, the over-input variance can say otherwise."""
    import numpy as np
    import pandas as pd

    from dnndist.tables import emission_summary

    rng = np.random.default_rng(0)
    rows = []
    for c in range(6):
        for sample in range(200):
            rows.append(("base", "kaiming_normal", 0, 1, "conv2", "emission", c, sample, (c + 1) * (1 + 0.01 * rng.normal())))
            rows.append(("base", "kaiming_normal", 0, 1, "conv2", "absorption", c, sample, 3 + rng.normal()))
    df = pd.DataFrame(rows, columns=["variant", "init", "seed", "epoch", "layer", "measure", "channel", "sample", "value"])
    out = emission_summary(df).iloc[0]
    assert out["emission_spread_larger"] and not out["emission_varies_more"]
    assert abs(out["channel_cv_emission"] - np.std(np.arange(1, 7)) / 3.5) < 0.01 and out["channel_cv_absorption"] < 0.05


def test_depth_trend_per_variant():
    """Near-zero mass rising with depth in one variant and falling in the other: rho +1 and -1,
    each at that variant's own last epoch."""
    import pandas as pd

    from dnndist.tables import depth_trend

    rows = []
    for variant, sign, last in (("base", 1, 5), ("depth6", -1, 3)):
        for seed in (0, 1):
            for depth in range(1, 7):
                for epoch in (0, last):
                    value = sign * depth + seed if epoch == last else 0.0
                    rows.append({"variant": variant, "init": "kaiming_normal", "seed": seed, "epoch": epoch, "layer": f"l{depth}",
                                 "depth": depth, "param": "weight", "statistic": "near_zero_rel_0.1", "value": value})
    out = depth_trend(pd.DataFrame(rows)).set_index("variant")
    assert out.loc["base", "spearman_rho"] == 1.0 and out.loc["depth6", "spearman_rho"] == -1.0
    assert out.loc["base", "n_seeds"] == 2 and out.loc["depth6", "layers"] == 6
