"""The paper's claims C1-C6, decided from the per-seed tables.

Every claim is decided by a calibrated rule of dnndist.verdicts (quoted in the table's ``rule``
column, explained in docs/statistics.md): comparisons are paired by seed, intervals are
t-intervals over seeds, several comparisons in one claim are corrected with Holm's method, "no
difference" claims are equivalence tests with a stated margin. A claim *holds*, *does not hold*,
or is *inconclusive*; with fewer than 5 seeds it is *descriptive only* (the value and interval
are still reported)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from dnndist import verdicts
from dnndist.conventions import CONSTANT_INITS, ONES, ORTHOGONAL, ZEROS, ordering_pairs, uniform_paper_inits
from dnndist.stats import diverged_runs, gaussian_reference
from dnndist.tables.describe import RUN, _at_end, _em_ab_per_run, _layer_kind
from dnndist.tables.format import FLAGGED
from dnndist.verdicts import HOLDS

RANDOM_EXCLUDED = CONSTANT_INITS
C1B_MARGIN = 0.01  # "does not move": the relative change of the loss stays within +-1 %
C1A_MARGIN = math.log(1.02)  # "faster": losses 2 % or less apart are practically the same (log ratio)
C4_RANGE = (1.0, 1.5)  # "grows slightly": the std ratio last/first lies in (1, 1.5)
C4_MEAN_MARGIN = 0.1  # "the mean stays near 0": |mean| < 0.1 std


@dataclasses.dataclass(frozen=True)
class ClaimRow:
    """One row of the claims table: the claim, what it says and which statistic decides it, the
    deciding comparison's value in words, seeds and comparisons, its effect with interval and
    p-value, the verdict and the rule in words."""

    claim: str
    statement: str
    statistic: str
    value: str
    n_seeds: int
    comparisons: int
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str
    rule: str


CLAIM_COLUMNS = [f.name for f in dataclasses.fields(ClaimRow)]
RULE_DIRECTIONAL = (
    "paired by seed; holds if the 95 % t-interval of every comparison lies on the claimed side; "
    "does not hold if some comparison lies on the other side (t-test, Holm over the {m} comparisons); "
    "descriptive only with < 5 seeds"
)
RULE_TREND = (
    "Spearman rho per seed; holds if every comparison's mean rho is on the claimed side by the sign-flip test over seeds "
    "(2.5 % one-sided); does not hold if some comparison is significantly on the other side (Holm over the {m} comparisons); "
    "undecidable with < {needed} seeds (the smallest Holm-adjusted p-value, 2 x {m} x 2^-n, must be < 5 %)"
)
RULE_MARGIN = (
    "effect < 1 by a practical margin ({pct} of the loss); paired by seed; holds if the 95 % t-interval of every "
    "comparison lies below 1 - {pct}; does not hold if some comparison lies significantly above 1 + {pct} (t-test, "
    "Holm over the {m} comparisons); equivalent if every comparison's 90 % interval lies within +-{pct} (TOST); "
    "descriptive only with < 5 seeds"
)
RULE_INTERVAL = (
    "holds if the 90 % t-interval over seeds of every comparison lies inside {band} (TOST, 5 % each side); "
    "does not hold if some comparison lies outside it (one-sided t-test, Holm over the {m} comparisons); "
    "descriptive only with < 5 seeds"
)


def claims_variant(variants: Iterable[str]) -> str | None:
    """The variant whose runs test the paper's claims: 'base' if present, else the first by name."""
    names = sorted(set(variants))
    return "base" if "base" in names else (names[0] if names else None)


def _claims_variant(df: pd.DataFrame) -> str | None:
    return claims_variant(df["variant"] if len(df) else [])


def _finite(v: pd.Series) -> pd.Series:
    v = pd.to_numeric(v, errors="coerce")
    return v[np.isfinite(v)]


def _by_seed(df: pd.DataFrame, **eq: Any) -> pd.Series:
    """The ``value`` column of the rows matching ``eq``, indexed by seed (finite values only)."""
    m = np.ones(len(df), dtype=bool)
    for k, v in eq.items():
        m &= df[k].to_numpy() == v
    sub = df[m]
    return _finite(sub.groupby("seed")["value"].mean()) if len(sub) else pd.Series(dtype=float)


def _paired(a: pd.Series, b: pd.Series, how: str = "diff") -> list[float]:
    """Per-seed a - b (or log(a / b)) over the seeds both have: same seed, same data order."""
    seeds = a.index.intersection(b.index)
    x, y = a.loc[seeds].to_numpy(dtype=float), b.loc[seeds].to_numpy(dtype=float)
    if how == "logratio":
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.log(x / y)
    else:
        v = x - y
    return [float(t) for t in v if np.isfinite(t)]


def _fmt(v: float, ratio: bool = False) -> str:
    return "nan" if not np.isfinite(v) else f"{math.exp(v) if ratio else v:.4g}"


def _claim_row(
    claim: str,
    statement: str,
    statistic: str,
    dec: verdicts.Decision | None,
    labels: list[str],
    rule: str,
    ratio: bool = False,
    detail: str = "",
) -> ClaimRow:
    """One claims-table row from a decision over len(labels) comparisons: the deciding comparison's
    effect and interval (as a ratio where ``ratio``), its p-value (Holm-adjusted when it refutes)."""
    if dec is None or not labels:
        nan = math.nan
        return ClaimRow(
            claim, statement, statistic, detail or "no runs to compare", 0, 0, nan, nan, nan, nan, verdicts.UNSURE, rule
        )
    outcome = str(dec.outcome)
    i = int(dec.worst)
    mean, lo, hi = (float(dec.mean[i]), float(dec.low[i]), float(dec.high[i]))
    p = float(dec.p_adj[i] if outcome == verdicts.FAILS else dec.p[i])
    conv = (lambda v: math.exp(v) if np.isfinite(v) else math.nan) if ratio else float
    n_seeds = int(np.min(dec.n)) if len(labels) else 0
    value = f"{'refuted by' if outcome == verdicts.FAILS else 'weakest'}: {labels[i]} {_fmt(mean, ratio)}"
    k = int(dec.n[i]) if np.ndim(dec.n) else int(dec.n)
    value += (
        f" [{_fmt(lo, ratio)}, {_fmt(hi, ratio)}]"
        if np.isfinite(lo)
        else f" (no interval: {k} seed{'s' * (k != 1)}{'' if k else ' with a value, e.g. no training loss at epoch 0'})"
    )
    if len(labels) > 1:
        value += f" ({len(labels)} comparisons)"
    if detail:
        value += f"; {detail}"
    return ClaimRow(
        claim, statement, statistic, value, n_seeds, len(labels), conv(mean), conv(lo), conv(hi), p, outcome, rule
    )


def _directional_row(
    claim: str,
    statement: str,
    statistic: str,
    comps: dict[str, list[float]],
    direction: int,
    ratio: bool = False,
    detail: str = "",
    test: str = "t",
) -> ClaimRow:
    labels = list(comps)
    dec = verdicts.directional(verdicts.pad(list(comps.values())), direction, test=test) if labels else None
    if dec is not None and test == "sign":  # a mean of Spearman rhos: its t-interval is cut to rho's range
        dec.low, dec.high = np.clip(dec.low, -1.0, 1.0), np.clip(dec.high, -1.0, 1.0)
    side = ("> 1" if direction > 0 else "< 1") if ratio else ("> 0" if direction > 0 else "< 0")
    needed = verdicts.seeds_needed(len(labels), test)
    rule = f"effect {side}; " + (RULE_TREND if test == "sign" else RULE_DIRECTIONAL).format(
        m=len(labels), needed=needed
    )
    return _claim_row(claim, statement, statistic, _squeeze(dec), labels, rule, ratio, detail)


def _interval_row(
    claim: str,
    statement: str,
    statistic: str,
    comps: dict[str, list[float]],
    low: Any,
    high: Any,
    band: str,
    ratio: bool = False,
    detail: str = "",
) -> ClaimRow:
    labels = list(comps)
    dec = verdicts.interval(verdicts.pad(list(comps.values())), low, high) if labels else None
    return _claim_row(
        claim,
        statement,
        statistic,
        _squeeze(dec),
        labels,
        RULE_INTERVAL.format(band=band, m=len(labels)),
        ratio,
        detail,
    )


def _squeeze(dec: verdicts.Decision | None) -> verdicts.Decision | None:
    """A decision over one claim (leading shape ()) with plain arrays over its comparisons."""
    if dec is None:
        return None
    return verdicts.Decision(
        dec.outcome[()] if np.ndim(dec.outcome) else dec.outcome,
        dec.mean,
        dec.low,
        dec.high,
        dec.p,
        dec.p_adj,
        dec.n,
        int(np.asarray(dec.worst).reshape(-1)[0]),
        dec.confidence,
    )


def _end_text(df: pd.DataFrame) -> str:
    """The runs' last epoch, in words: 'epoch 50', or the range where the runs end apart."""
    if not len(df):
        return "epoch ?"
    ends = df.groupby(RUN)["epoch"].max()
    lo, hi = int(ends.min()), int(ends.max())
    return f"epoch {lo}" if lo == hi else f"each run's last epoch ({lo}-{hi})"


def _span(first: Any, last: str) -> str:
    """'epochs 1-50', or 'epochs 1 to each run's last epoch (7-23)'."""
    return f"epochs {first}-{last.removeprefix('epoch ')}" if last.startswith("epoch ") else f"epochs {first} to {last}"


def depth_sorted(layers: pd.DataFrame) -> list[str]:
    """Layer names in depth order (by the ``depth`` column, else by the number in the name: conv2 < conv10)."""
    if "depth" in layers and layers["depth"].notna().all():
        return list(layers.drop_duplicates("layer").sort_values("depth")["layer"])
    key = lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]  # noqa: E731
    return sorted(layers["layer"].unique(), key=key)


def _c1(training: pd.DataFrame, random_inits: list[str]) -> list[ClaimRow]:
    rows = []
    tr = training[training["statistic"] == "loss"]
    present = set(tr["init"])
    end, last = _at_end(tr), _end_text(tr)
    pairs = [(a, b) for a, b in ordering_pairs() if a in present and b in present]
    train = tr[tr["split"] == "train"]
    epochs = sorted(train["epoch"].unique())

    def final(init: str, split: str = "train") -> pd.Series:
        return _by_seed(end, init=init, split=split)

    def auc(init: str) -> pd.Series:  # mean training loss over all its epochs; a run with a gap has none
        d = train[train["init"] == init]
        per = d.groupby("seed").agg(
            mean=("value", "mean"), count=("value", "count"), lo=("epoch", "min"), hi=("epoch", "max")
        )
        return _finite(per["mean"][per["count"] == per["hi"] - per["lo"] + 1])

    test_split = "test" if (tr["split"] == "test").any() else "valid"
    statement = "loss ordering orthogonal < kaiming < xavier"
    for claim, stat, fn in (  # the curve is the primary statistic of "converges fastest"
        (
            "C1a",
            f"training loss averaged over {_span(epochs[0] if epochs else '?', last)} (area under the curve)",
            auc,
        ),
        ("C1a final", f"final training loss ({last})", final),
        ("C1a test", f"final {test_split} loss ({last})", lambda i: final(i, test_split)),
    ):
        comps = {f"{a} / {b}": _paired(fn(a), fn(b), "logratio") for a, b in pairs}
        labels = list(comps)
        dec = verdicts.directional_with_margin(verdicts.pad(list(comps.values())), -1, C1A_MARGIN) if labels else None
        rows.append(
            _claim_row(
                claim,
                statement,
                f"{stat}; paired ratios orthogonal / kaiming_x, kaiming_x / xavier_x (on the log scale)",
                _squeeze(dec),
                labels,
                RULE_MARGIN.format(pct=f"{100 * math.expm1(C1A_MARGIN):.0f} %", m=len(labels)),
                ratio=True,
                detail="" if pairs else "missing inits",
            )
        )
    if ZEROS in present:
        rows.append(_c1b(tr, end, last))
    if ONES in present:
        rows.append(_c1c(end, last, random_inits))
    return rows


def _c1b(tr: pd.DataFrame, end: pd.DataFrame, last: str) -> ClaimRow:
    """C1b: zeros does not train (the relative change of its loss from the first to the last epoch)."""
    split = "valid" if ((tr["split"] == "valid") & (tr["epoch"] == tr["epoch"].min())).any() else "train"
    first_epoch = int(tr[tr["split"] == split]["epoch"].min())
    a, b = (
        _by_seed(tr, init=ZEROS, split=split, epoch=first_epoch),
        _by_seed(end, init=ZEROS, split=split),
    )
    seeds = a.index.intersection(b.index)
    change = ((b.loc[seeds] - a.loc[seeds]) / a.loc[seeds].abs().clip(lower=1e-12)).tolist()
    return _interval_row(
        "C1b",
        "zeros does not train",
        f"relative change of the {split} loss, epoch {first_epoch} -> {last.removeprefix('epoch ')}",
        {ZEROS: change},
        -C1B_MARGIN,
        C1B_MARGIN,
        f"(-{C1B_MARGIN:g}, {C1B_MARGIN:g}) (margin: 1 % of the loss)",
    )


def _c1c(end: pd.DataFrame, last: str, random_inits: list[str]) -> ClaimRow:
    """C1c: ones stays at a high loss (its final training loss against each other random init's)."""

    def final(init: str) -> pd.Series:
        return _by_seed(end, init=init, split="train")

    others = [i for i in random_inits if i != ONES]
    comps = {f"{ONES} / {i}": _paired(final(ONES), final(i), "logratio") for i in others}
    return _directional_row(
        "C1c",
        "ones stays at a high loss",
        f"final training loss ratio ones / each random init ({last})",
        comps,
        +1,
        ratio=True,
    )


def _c2(weights: pd.DataFrame, random_inits: list[str]) -> ClaimRow | None:
    if ORTHOGONAL not in random_inits or len(random_inits) < 2:
        return None
    w = _at_end(weights)
    w = w[w["statistic"] == "std"]
    comps = {}
    for layer in depth_sorted(w):
        for param in ("weight", "bias"):
            d = w[(w["layer"] == layer) & (w["param"] == param)]
            if d.empty:
                continue
            orth = _by_seed(d, init=ORTHOGONAL)
            for other in random_inits:
                if other != ORTHOGONAL:
                    comps[f"{layer} {param} vs {other}"] = _paired(orth, _by_seed(d, init=other), "logratio")
    return _directional_row(
        "C2",
        "orthogonal has the largest weight and bias variance in every layer",
        "std ratio orthogonal / each other random init at the last epoch, per layer and param",
        comps,
        +1,
        ratio=True,
    )


def _reference(d: pd.DataFrame, stat: str) -> pd.Series:
    """A per-seed reference column (e.g. ks_normal_null95) of one layer, computed from the sample
    size where the table predates it."""
    ref = _by_seed(d, statistic=stat)
    if len(ref):
        return ref
    count = _by_seed(d, statistic="count")
    return pd.Series({s: gaussian_reference(int(n))[stat] for s, n in count.items()}, dtype=float)


def _c3(weights: pd.DataFrame) -> list[ClaimRow]:
    rows = []
    end, last = _at_end(weights), _end_text(weights)
    for init in uniform_paper_inits():
        w = end[(end["init"] == init) & (end["param"] == "weight")]
        if w.empty:
            continue
        comps, lows, highs, detail = {}, [], [], []
        for layer in depth_sorted(w):
            d = w[w["layer"] == layer]
            ks, kurt = _by_seed(d, statistic="ks_normal"), _by_seed(d, statistic="kurtosis")
            band = _reference(d, "ks_normal_null95").mean()
            lo, hi = _reference(d, "kurtosis_null_lo").mean(), _reference(d, "kurtosis_null_hi").mean()
            comps[f"{layer} ln KS"] = np.log(ks[ks > 0]).tolist()  # a positive, right-skewed distance: its log
            lows.append(-np.inf), highs.append(math.log(band) if band > 0 else -np.inf)
            comps[f"{layer} kurtosis"] = kurt.tolist()
            lows.append(lo), highs.append(hi)
            detail.append(
                f"{layer} KS {ks.mean():.3g} (Gaussian < {band:.2g}), kurtosis {kurt.mean():.2g} (Gaussian [{lo:.2g}, {hi:.2g}])"
            )
        rows.append(
            _interval_row(
                f"C3 {init}",
                "uniform inits end Gaussian-shaped",
                f"KS distance to the fitted normal (tested as its natural log, ln KS) and excess kurtosis per layer "
                f"at the last epoch ({last})",
                comps,
                np.array(lows),
                np.array(highs),
                "the range a Gaussian sample of the layer's size gives (KS below its 95th percentile, kurtosis in its 2.5-97.5 % band)",
                detail="; ".join(detail),
            )
        )
    return rows


def _c4(weights: pd.DataFrame, random_inits: list[str]) -> list[ClaimRow]:
    first, last = int(weights["epoch"].min()), _end_text(weights)
    weights = weights.assign(at_end=weights.index.isin(_at_end(weights).index))
    ratios, means, skipped = {}, {}, 0
    for init in random_inits:
        w = weights[weights["init"] == init]
        for layer in depth_sorted(w):
            for param in ("weight", "bias"):
                d = w[(w["layer"] == layer) & (w["param"] == param)]
                if d.empty:
                    continue
                s0, s1 = _by_seed(d, statistic="std", epoch=first), _by_seed(d, statistic="std", at_end=True)
                if len(s0) and (s0 > 0).all():
                    ratios[f"{init} {layer} {param}"] = _paired(s1, s0, "logratio")
                else:
                    skipped += 1  # a constant start (zero bias): no ratio
                m0, m1 = _by_seed(d, statistic="mean", epoch=first), _by_seed(d, statistic="mean", at_end=True)
                scale = s0.where(s0 > 0, s1)  # a constant start (zero biases): the final spread
                seeds = m0.index.intersection(m1.index).intersection(scale[scale > 0].index)
                drift = (m1.loc[seeds] - m0.loc[seeds]) / scale.loc[seeds]
                means[f"{init} {layer} {param}"] = [float(v) for v in drift if np.isfinite(v)]
    lo, hi = C4_RANGE
    rows = [
        _interval_row(
            "C4a",
            "weight and bias std grow slightly with training",
            f"std({last}) / std(epoch {first}) per init, layer and param",
            ratios,
            math.log(lo),
            math.log(hi),
            f'({lo:g}, {hi:g}) ("slightly": by less than 50 %)',
            ratio=True,
            detail=f"{skipped} tensors without a ratio (constant at epoch {first})" if skipped else "",
        )
    ]
    rows.append(
        _interval_row(
            "C4b",
            "the mean of weights and biases stays near 0",
            f"drift of the mean, (mean({last}) - mean(epoch {first})) / std(epoch {first}), per init, layer and "
            "param, paired by seed (a zero-std start: / the final std)",
            means,
            -C4_MEAN_MARGIN,
            C4_MEAN_MARGIN,
            f"(-{C4_MEAN_MARGIN:g}, {C4_MEAN_MARGIN:g}) (the mean moves by less than 0.1 std)",
        )
    )
    return rows


def _c5(features: pd.DataFrame, random_inits: list[str]) -> list[ClaimRow]:
    rows = []
    f = features[features["statistic"] == "std"]
    if f.empty:
        return rows
    split = "train" if (f["split"] == "train").any() else str(f["split"].iloc[0])
    f = f[f["split"] == split]
    first, last = int(f["epoch"].min()), _end_text(f)
    f = f.assign(at_end=f.index.isin(_at_end(f).index))
    for kind in ("pre", "post"):
        fk = f[f["kind"] == kind]
        if fk.empty:
            continue
        order = depth_sorted(fk)
        convs = [layer for layer, k in zip(order, _layer_kind(pd.DataFrame({"layer": order}))) if k == "conv"]
        growth, trends = {}, {}
        for init in random_inits:
            d = fk[fk["init"] == init]
            logs = {}
            for layer in order:
                dl = d[d["layer"] == layer]
                s0, s1 = _by_seed(dl, epoch=first), _by_seed(dl, at_end=True)
                seeds = s0.index.intersection(s1.index)
                with np.errstate(invalid="ignore", divide="ignore"):
                    logs[layer] = np.log(s1.loc[seeds] / s0.loc[seeds])
                growth[f"{init} {layer}"] = [float(v) for v in logs[layer] if np.isfinite(v)]
            table = pd.DataFrame(logs).reindex(columns=convs)  # the trend over the convs: fc1 apart (depth_trend)
            depth = (
                fk.drop_duplicates("layer").set_index("layer")["depth"].reindex(convs).to_numpy(dtype=float)
                if "depth" in fk
                else np.arange(len(convs), dtype=float)
            )
            if len(convs) >= 3 and len(table):
                trends[init] = [
                    float(r) for r in verdicts.spearman_per_seed(table.to_numpy(dtype=float), depth) if np.isfinite(r)
                ]
        rows.append(
            _directional_row(
                f"C5a {kind}",
                "feature std grows after training",
                f"{kind}-activation std on {split} inputs, ratio {last} / epoch {first}, per init and layer",
                growth,
                +1,
                ratio=True,
            )
        )
        rows.append(
            _directional_row(
                f"C5b {kind}",
                "feature std grows more in deeper layers",
                f"Spearman rho (per seed) between depth and log std ratio {last} / {first} of {kind}-activations "
                f"over the {len(convs)} conv layers ({', '.join(convs)}; linear layers apart, as in depth_trend), per init",
                trends,
                +1,
                detail="" if len(convs) >= 3 else "fewer than 3 conv layers",
                test="sign",
            )
        )
    return rows + _c5_levels(features, random_inits)


C5_MEAN_BAND = 1.0  # "slightly off after (by less than 1.0)": |feature mean| < 1.0
C5_STD_FACTOR = 2.0  # "before training the std is about 1.0": within a factor 2 of 1


def _c5_levels(features: pd.DataFrame, random_inits: list[str]) -> list[ClaimRow]:
    """C5c: the pre-activation mean lies within +-1.0 after training; C5d: the pre-activation std
    is about 1.0 before training (within a factor 2), per random init and layer, train inputs."""
    f = features[(features["kind"] == "pre") & features["init"].isin(random_inits)]
    if f.empty or not (f["statistic"] == "mean").any():
        return []
    split = "train" if (f["split"] == "train").any() else str(f["split"].iloc[0])
    f = f[f["split"] == split]
    first, end, last = int(f["epoch"].min()), _at_end(f), _end_text(f)
    means, stds = {}, {}
    for init in random_inits:
        for layer in depth_sorted(f[f["init"] == init]):
            sel = dict(init=init, layer=layer)
            means[f"{init} {layer}"] = _by_seed(end, statistic="mean", **sel).tolist()
            s0 = _by_seed(f, statistic="std", epoch=first, **sel)
            stds[f"{init} {layer}"] = np.log(s0[s0 > 0]).tolist()
    band = math.log(C5_STD_FACTOR)
    return [
        _interval_row(
            "C5c",
            "feature mean slightly off zero after training, by less than 1.0",
            f"pre-activation mean on {split} inputs at {last}, per init and layer",
            means,
            -C5_MEAN_BAND,
            C5_MEAN_BAND,
            f"(-{C5_MEAN_BAND:g}, {C5_MEAN_BAND:g})",
        ),
        _interval_row(
            "C5d",
            "feature std about 1.0 before training",
            f"pre-activation std on {split} inputs at epoch {first}, per init and layer (log scale)",
            stds,
            -band,
            band,
            f"({1 / C5_STD_FACTOR:g}, {C5_STD_FACTOR:g}) (within a factor {C5_STD_FACTOR:g} of 1)",
            ratio=True,
        ),
    ]


def _c6(em_ab: pd.DataFrame | None, random_inits: list[str]) -> list[ClaimRow]:
    if em_ab is None or not len(em_ab):
        return []
    per = em_ab if "cv_emission" in em_ab else _em_ab_per_run(em_ab)
    per = per[per["init"].isin(random_inits)] if random_inits else per
    rows = []
    for claim, statement, col, stat in (
        (
            "C6",
            "emission varies more over inputs than absorption",
            "cv",
            "coefficient of variation over inputs per channel (mean over the channels), emission / absorption, per init and conv layer",
        ),
        (
            "C6b",
            "emission differs more between channels than absorption",
            "channel_cv",
            "spread (CV) of the per-channel medians across channels, emission / absorption, per init and conv layer",
        ),
    ):
        comps = {}
        for (init, layer), d in per.groupby(["init", "layer"], sort=True):
            em, ab = d.set_index("seed")[f"{col}_emission"], d.set_index("seed")[f"{col}_absorption"]
            comps[f"{init} {layer}"] = _paired(_finite(em), _finite(ab), "logratio")
        rows.append(_directional_row(claim, statement, stat, comps, +1, ratio=True))
    return rows


def claims(
    training: pd.DataFrame,
    weights: pd.DataFrame,
    features: pd.DataFrame,
    em_ab: pd.DataFrame | None,
    variant: str | None = None,
) -> pd.DataFrame:
    """One row per paper claim, decided from the per-seed tables (training, weights, features, em_ab
    or its per-run emission summary) of one variant (``variant``, default 'base' or the first by
    name): the statistic, the deciding comparison's effect and interval, n, the verdict and its rule
    (dnndist.verdicts; docs/statistics.md). A "D" row lists the runs that diverged; they are left
    out of every comparison (they stopped early: their losses are partial, their weights frozen)."""
    given = [df for df in (training, weights, features, em_ab) if df is not None and len(df)]
    variant = variant or (_claims_variant(given[0]) if given else None)
    stopped = set()  # (init, seed) of the runs that diverged: they stopped early, so they are left out (row D)
    if training is not None and len(training):
        flags = training[(training["variant"] == variant) & (training["statistic"] == "diverged")]
        stopped = set(zip(flags["init"], flags["seed"]))

    def pick(df: pd.DataFrame | None) -> pd.DataFrame | None:
        if df is None or not len(df):
            return None
        df = df[df["variant"] == variant]
        return df[[k not in stopped for k in zip(df["init"], df["seed"])]] if stopped else df

    tr, w, f, em = pick(training), pick(weights), pick(features), pick(em_ab)
    inits = set().union(*(set(df["init"]) for df in (tr, w, f, em) if df is not None))
    random_inits = sorted(inits - set(RANDOM_EXCLUDED))
    rows = _c1(tr, random_inits) if tr is not None else []
    if w is not None:
        rows += [r for r in [_c2(w, random_inits)] if r] + _c3(w) + _c4(w, random_inits)
    if f is not None:
        rows += _c5(f, random_inits)
    rows += _c6(em, random_inits)
    rows = _at_initialisation(rows, w, em, random_inits)
    div = diverged_runs(training) if training is not None and len(training) else {}
    if div:  # flagged, so that no verdict above is read without knowing which runs stopped early
        value = "; ".join(
            (f"{init}" if v == variant else f"{v}/{init}") + f" ({n} seed{'s' * (n != 1)})"
            for (v, init), n in sorted(div.items())
        )
        rows.append(
            ClaimRow(
                "D",
                "runs that diverged",
                "seeds whose training loss became NaN/inf or passed train.diverge_above x ln(classes) (they stop there)",
                value,
                sum(div.values()),
                0,
                math.nan,
                math.nan,
                math.nan,
                math.nan,
                FLAGGED,
                "listed whenever a run diverged; the claims above leave these seeds out (they stopped early)",
            )
        )
    return pd.DataFrame([dataclasses.astuple(r) for r in rows], columns=CLAIM_COLUMNS)


AT_INIT = ("C2", "C6", "C6b")  # claims a structural property could decide before any training
ALREADY = "already at initialisation"


def _first_epoch(df: pd.DataFrame | None) -> pd.DataFrame | None:
    """The rows of each run's first epoch (before training), or None where a run has one epoch only."""
    if df is None or not len(df) or "epoch" not in df or df["epoch"].nunique() < 2:
        return None
    return df[df["epoch"] == df.groupby(RUN)["epoch"].transform("min")]


def _at_initialisation(
    rows: list[ClaimRow], w: pd.DataFrame | None, em: pd.DataFrame | None, random_inits: list[str]
) -> list[ClaimRow]:
    """C2, C6 and C6b decided again on the first epoch (before training) by the same rule: the row
    reports that value beside the final one, and a claim that holds at both reads "holds, already at
    initialisation" (a property of the inits or of the architecture, not a finding of training)."""
    w0, em0 = _first_epoch(w), _first_epoch(em)
    before = {
        r.claim: r
        for r in ([_c2(w0, random_inits)] if w0 is not None else [])
        + (_c6(em0, random_inits) if em0 is not None else [])
        if r
    }
    out = []
    for r in rows:
        b = before.get(r.claim) if r.claim in AT_INIT else None
        if b is not None:
            verdict = f"{HOLDS}, {ALREADY}" if r.verdict == HOLDS and b.verdict == HOLDS else r.verdict
            r = dataclasses.replace(
                r, value=f"{r.value}; before training (epoch 0): {b.verdict}, {b.value}", verdict=verdict
            )
        out.append(r)
    return out
