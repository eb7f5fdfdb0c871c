"""Tables (CSV + Markdown + LaTeX from the same tidy data) and the paper-claims check.

Every claim is decided from the per-seed tables by a calibrated rule of dnndist.verdicts (quoted
in the table's ``rule`` column, explained in docs/statistics.md): comparisons are paired by
seed, intervals are t-intervals over seeds, several comparisons in one claim are corrected with
Holm's method, "no difference" claims are equivalence tests with a stated margin. A claim
*holds*, *does not hold*, or is *inconclusive*; with fewer than 5 seeds it is *descriptive only*
(the value and interval are still reported).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dnndist import DnndistError, best, verdicts
from dnndist.glance import at_a_glance  # noqa: F401  (a Table's compute: outputs.TABLES)
from dnndist.io import write_text
from dnndist.stats import RUN_DIMS, diverged_runs, gaussian_reference
from dnndist.verdicts import DESCRIPTIVE, FAILS, HOLDS, UNSURE  # noqa: F401  (the verdict vocabulary, re-exported)

FLAGGED = "flagged"  # a row that reports a fault (divergence), not a claim


def write_table(df: pd.DataFrame, stem: str | Path, caption: str) -> None:
    """stem.csv, stem.md (with the caption), stem.tex (a table environment) and stem.html (the
    table with its caption, shown inside the Snakemake report)."""
    stem = str(stem)
    fmt = df.copy()
    for col in fmt.select_dtypes("number").columns:
        fmt[col] = fmt[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    write_text(stem + ".csv", df.to_csv(index=False))
    write_text(stem + ".md", f"{caption}\n\n" + fmt.to_markdown(index=False) + "\n")
    latex = fmt.to_latex(index=False, escape=True)
    write_text(
        stem + ".tex",
        "\\begin{table}\n\\centering\n\\caption{" + caption.replace("%", "\\%") + "}\n" + latex + "\\end{table}\n",
    )
    write_text(stem + ".html", to_html(fmt, caption, numeric=list(df.select_dtypes("number").columns)))


HTML_STYLE = """.dnndist-table table{border-collapse:collapse;font:12px/1.35 system-ui,sans-serif;margin:0}
.dnndist-table th,.dnndist-table td{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top;max-width:36em}
.dnndist-table th{background:#f3f4f6;position:sticky;top:0}
.dnndist-table td.num{text-align:right;white-space:nowrap}
.dnndist-table td.verdict{font-weight:600;white-space:nowrap}
.dnndist-table .v-holds{background:#d1fae5}.dnndist-table .v-does-not-hold{background:#fee2e2}
.dnndist-table .v-inconclusive{background:#fef3c7}.dnndist-table .v-descriptive-only{background:#f3f4f6}
.dnndist-table .v-undecidable{background:#e5e7eb;font-style:italic}
.dnndist-table .v-flagged{background:#fed7aa}.dnndist-table .v-increases,.dnndist-table .v-decreases{background:#dbeafe}
.dnndist-table p.caption{font:12px/1.4 system-ui,sans-serif;color:#374151;max-width:60em}"""


def to_html(fmt: pd.DataFrame, caption: str, numeric: list[str] = ()) -> str:
    """A formatted table as an HTML page that also works as a fragment (the report's front page
    includes the claims table): the verdict column, where there is one, follows the statement it
    decides and is coloured by verdict; the caption below the table; no rows says so."""
    import html

    cols = list(fmt.columns)
    if "verdict" in cols and "statement" in cols:
        cols.remove("verdict")
        cols.insert(cols.index("statement") + 1, "verdict")

    def slug(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

    head = "".join(f'<th class="col-{slug(str(c))}">{html.escape(str(c))}</th>' for c in cols)

    def cell(col: str, value: Any) -> str:  # classes: col-<column> (the front page hides some), verdict, num
        text = "" if pd.isna(value) else str(value)
        kind = (
            f" verdict v-{slug(text.split(',')[0].split(' at ')[0])}"
            if col == "verdict"
            else " num"
            if col in numeric
            else ""
        )
        return f'<td class="col-{slug(col)}{kind}">{html.escape(text)}</td>'

    rows = "\n".join(
        "<tr>" + "".join(cell(c, v) for c, v in zip(cols, rec)) + "</tr>" for rec in fmt[cols].itertuples(index=False)
    )
    body = rows or f'<tr><td colspan="{max(len(cols), 1)}">no rows</td></tr>'
    return (
        f'<!DOCTYPE html>\n<meta charset="utf-8">\n<style>\n{HTML_STYLE}\n</style>\n<div class="dnndist-table">\n'
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"
        f'<p class="caption">{html.escape(caption)}</p>\n</div>\n'
    )


def _first_variant(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["variant"] == df["variant"].iloc[0]] if len(df) else df


def init_check(weights: pd.DataFrame) -> pd.DataFrame:
    """Theoretical vs empirical std and bound of fresh weights (epoch 0), per layer and init."""
    w = _first_variant(weights)
    w = w[(w["epoch"] == w["epoch"].min()) & (w["param"] == "weight")]
    # unstack, not pivot_table: keep the all-NaN theory_bound of normal inits, add no index combinations
    piv = w.set_index(["init", "layer", "depth", "statistic"])["mean"].unstack("statistic").reset_index()
    piv["max_abs"] = np.maximum(piv["max"].abs(), piv["min"].abs())
    out = piv[
        ["init", "layer", "depth", "fan_in", "fan_out", "gain", "init_std", "std", "init_bound", "max_abs"]
    ].copy()
    out["std_ratio"] = out["std"] / out["init_std"]
    return (
        out.rename(
            columns={
                "init_std": "theory_std",
                "std": "empirical_std",
                "init_bound": "theory_bound",
                "max_abs": "empirical_max_abs",
            }
        )
        .sort_values(["init", "depth"])
        .drop(columns="depth")
        .reset_index(drop=True)
    )


RANGE_STATS = ["count", "min", "max", "within_unit", "within_default_bound"]


def range_table(weights: pd.DataFrame) -> pd.DataFrame:
    """Do weights stay inside [-1, 1]? Per (init, layer, param) of the first variant, before
    (first epoch) and after (each run's last epoch): the largest |w| over seeds and each seed's
    (the extreme is what the question is about, not a seed mean), how many seeds have any weight
    outside [-1, 1] and how many weights that is in all, and the mean fraction inside PyTorch's
    default-init bound [-k, k], k = 1/sqrt(fan_in). From the per-seed weights table."""
    w = _first_variant(weights)
    w = w[w["statistic"].isin(RANGE_STATS)]
    w = w.assign(
        when=np.where(
            w["epoch"] == w["epoch"].min(),
            "before",
            np.where(w["epoch"] == w.groupby(["init", "seed"])["epoch"].transform("max"), "after", ""),
        )
    )
    w = w[w["when"] != ""]
    wide = w.pivot_table(
        index=["init", "layer", "depth", "param", "when", "seed"], columns="statistic", values="value"
    ).reset_index()
    wide["max_abs"] = np.maximum(wide["max"].abs(), wide["min"].abs())
    wide["n_outside"] = np.rint(wide["count"] * (1.0 - wide["within_unit"]))
    rows = []
    for (init, layer, depth, param), d in wide.groupby(["init", "layer", "depth", "param"], sort=False):
        row: dict[str, Any] = {"init": init, "layer": layer, "depth": depth, "param": param}
        for tag in ("before", "after"):
            s = d[d["when"] == tag].sort_values("seed")
            row[f"max_abs_{tag}"] = float(s["max_abs"].max()) if len(s) else math.nan
            row[f"max_abs_per_seed_{tag}"] = ", ".join(f"{v:.3g}" for v in s["max_abs"])
            row[f"seeds_outside_unit_{tag}"] = f"{int((s['n_outside'] > 0).sum())}/{len(s)}"
            row[f"n_outside_unit_{tag}"] = int(s["n_outside"].sum()) if len(s) else 0
            row[f"within_default_bound_{tag}"] = (
                float(s["within_default_bound"].mean()) if "within_default_bound" in s else math.nan
            )
        rows.append(row)
    out = pd.DataFrame(rows).assign(weight_first=lambda t: t["param"] != "weight")
    return (
        out.sort_values(["init", "weight_first", "depth"])
        .drop(columns=["weight_first", "depth"])
        .reset_index(drop=True)
    )


DEPTH_STATS = ("near_zero_rel_0.1", "kurtosis", "tail_index")


def _layer_kind(w: pd.DataFrame) -> pd.Series:
    """'conv' or 'linear' per row: from the weight tensor's rank (the ``ndim`` statistic: 4 = conv,
    2 = linear) where the table has it, else from the layer name (fc*, linear*, classifier*, head*)."""
    names = w["layer"].astype(str)
    kind = pd.Series(
        np.where(names.str.contains(r"(?:^|\.)(?:fc|linear|classifier|head)", regex=True), "linear", "conv"),
        index=w.index,
    )
    if "statistic" in w and (w["statistic"] == "ndim").any():
        nd = w[(w["statistic"] == "ndim") & (w["param"] == "weight")].groupby("layer")["value"].max()
        by_rank = names.map(
            lambda n: "conv" if nd.get(n, np.nan) >= 3 else "linear" if nd.get(n, np.nan) == 2 else None
        )
        kind = by_rank.where(by_rank.notna(), kind)
    return kind


DEPTH_TREND_COLUMNS = (
    "variant",
    "init",
    "layer_kind",
    "statistic",
    "spearman_rho",
    "ci_low",
    "ci_high",
    "n_seeds",
    "layers",
    "p_value",
    "p_holm",
    "verdict",
)


def depth_trend(weights_tidy: pd.DataFrame, stats: tuple[str, ...] = DEPTH_STATS) -> pd.DataFrame:
    """Does a weight statistic rise or fall with depth? Per variant, init and layer kind (conv and
    linear layers apart: fan_in, and with it the scale of everything, changes at the boundary), at
    each run's last epoch: Spearman's rho between depth and the statistic over that kind's
    layers, computed per seed; its mean and 95 % t-interval over seeds; the sign-flip test of mean
    rho = 0 over seeds with Holm's correction over the statistics of the same (variant, init, kind).
    Verdict increases / decreases / inconclusive, or "undecidable at n seeds (needs N)" where Holm
    over the statistics puts every call out of reach (verdicts.seeds_needed). Kinds with fewer than 3 layers have no trend (no row)."""
    w = weights_tidy[weights_tidy["param"] == "weight"]
    w = w.assign(layer_kind=_layer_kind(w))
    w = w[w["statistic"].isin(stats)]
    w = _at_end(w)
    rows = []
    for (variant, init, kind), d in w.groupby(["variant", "init", "layer_kind"], sort=False):
        layers = d.drop_duplicates("layer").sort_values("depth")
        if len(layers) < 3:
            continue
        order = list(layers["layer"])
        depth = layers["depth"].to_numpy(dtype=float)
        names = [s for s in stats if s in set(d["statistic"])]
        seeds = sorted(d["seed"].unique())
        rho = np.full((len(names), len(seeds)), np.nan)
        for i, stat in enumerate(names):
            piv = (
                d[d["statistic"] == stat]
                .pivot_table(index="seed", columns="layer", values="value")
                .reindex(index=seeds, columns=order)
            )
            rho[i] = verdicts.spearman_per_seed(piv.to_numpy(dtype=float), depth)
        dec = verdicts.effects(rho, test="sign")
        for i, stat in enumerate(names):
            rows.append(
                {
                    "variant": variant,
                    "init": init,
                    "layer_kind": kind,
                    "statistic": stat,
                    "spearman_rho": dec.mean[i],
                    "ci_low": max(float(dec.low[i]), -1.0),  # rho lives in [-1, 1]; a t-interval does not know it
                    "ci_high": min(float(dec.high[i]), 1.0),
                    "n_seeds": int(dec.n[i]),
                    "layers": len(order),
                    "p_value": dec.p[i],
                    "p_holm": dec.p_adj[i],
                    "verdict": dec.outcome[i],
                }
            )
    return pd.DataFrame(rows, columns=DEPTH_TREND_COLUMNS)


def _em_ab_per_run(em_ab: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, init, seed, layer) at the last epoch, for emission and absorption: the mean over
    channels of each channel's median, variance and coefficient of variation (std / mean) over
    inputs, and the spread of the per-channel medians across channels (their CV)."""
    d = _at_end(em_ab)
    run = ["variant", "init", "seed", "layer", "measure"]
    per = d.groupby([*run, "channel"])["value"].agg(["median", "var", "mean", "std"]).reset_index()
    with np.errstate(invalid="ignore", divide="ignore"):
        per["cv"] = np.where(per["mean"] > 0, per["std"] / per["mean"], np.nan)
    layer = per.groupby(run)[["median", "var", "cv"]].mean()
    layer["channel_cv"] = per.groupby(run)["median"].agg(
        lambda v: float(v.std(ddof=0) / v.mean()) if v.mean() > 0 else math.nan
    )
    wide = layer.unstack("measure")
    wide.columns = [f"{a}_{b}" for a, b in wide.columns]
    wide = wide.reset_index()
    info = per.groupby(run).agg(used=("channel", "nunique"))
    info["total"] = d.groupby(run)["layer_channels"].max() if "layer_channels" in d else info["used"]
    text = (info["used"].astype(str) + " of " + info["total"].astype(int).astype(str)).unstack("measure")
    wide["channels"] = [  # the table holds the first stats.EM_AB_CHANNELS of each layer
        f"{text.loc[k, 'emission']} out, {text.loc[k, 'absorption']} in"
        for k in wide[run[:-1]].itertuples(index=False, name=None)
    ]
    return wide


def emission_summary(em_ab: pd.DataFrame) -> pd.DataFrame:
    """Emission and absorption per conv layer (last epoch), per run: per-channel median and variance
    over inputs (mean over channels), the scale-free dispersion over inputs -- the coefficient of
    variation of each channel (mean over channels) -- and whether emission's is larger, and the
    spread of the per-channel medians across channels (CV) with whether emission's is larger.
    Raw variances are not compared: the totals of emission and absorption over channels are equal,
    so their means differ by C_out / C_in and so do their variances (docs/statistics.md)."""
    wide = _em_ab_per_run(em_ab)
    wide["emission_cv_larger"] = wide["cv_emission"] > wide["cv_absorption"]
    wide["emission_spread_larger"] = wide["channel_cv_emission"] > wide["channel_cv_absorption"]
    cols = [
        "variant",
        "init",
        "seed",
        "layer",
        "channels",
        "median_emission",
        "median_absorption",
        "var_emission",
        "var_absorption",
        "cv_emission",
        "cv_absorption",
        "emission_cv_larger",
        "channel_cv_emission",
        "channel_cv_absorption",
        "emission_spread_larger",
    ]
    return wide[[c for c in cols if c in wide]]


# ----------------------------------------------------------------------------- claims
RANDOM_EXCLUDED = ("ones", "zeros")
C1B_MARGIN = 0.01  # "does not move": the relative change of the loss stays within +-1 %
C1A_MARGIN = math.log(1.02)  # "faster": losses 2 % or less apart are practically the same (log ratio)
C4_RANGE = (1.0, 1.5)  # "grows slightly": the std ratio last/first lies in (1, 1.5)
C4_MEAN_MARGIN = 0.1  # "the mean stays near 0": |mean| < 0.1 std
CLAIM_COLUMNS = [
    "claim",
    "statement",
    "statistic",
    "value",
    "n_seeds",
    "comparisons",
    "effect",
    "ci_low",
    "ci_high",
    "p_value",
    "verdict",
    "rule",
]
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
) -> tuple:
    """One claims-table row from a decision over len(labels) comparisons: the deciding comparison's
    effect and interval (as a ratio where ``ratio``), its p-value (Holm-adjusted when it refutes)."""
    if dec is None or not labels:
        return (
            claim,
            statement,
            statistic,
            detail or "no runs to compare",
            0,
            0,
            math.nan,
            math.nan,
            math.nan,
            math.nan,
            verdicts.UNSURE,
            rule,
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
    return (claim, statement, statistic, value, n_seeds, len(labels), conv(mean), conv(lo), conv(hi), p, outcome, rule)


def _directional_row(
    claim: str,
    statement: str,
    statistic: str,
    comps: dict[str, list[float]],
    direction: int,
    ratio: bool = False,
    detail: str = "",
    test: str = "t",
) -> tuple:
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
) -> tuple:
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


RUN = RUN_DIMS  # variant, init, seed: one run


def _at_end(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows at its own last epoch: the end of training, or of the stage that the tables
    were cut at (``claims_stages``; at the best-validation epoch the runs end at different epochs)."""
    return df[df["epoch"] == df.groupby(RUN)["epoch"].transform("max")] if len(df) else df


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


def _depth_sorted(layers: pd.DataFrame) -> list[str]:
    """Layer names in depth order (by the ``depth`` column, else by the number in the name: conv2 < conv10)."""
    if "depth" in layers and layers["depth"].notna().all():
        return list(layers.drop_duplicates("layer").sort_values("depth")["layer"])
    key = lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]  # noqa: E731
    return sorted(layers["layer"].unique(), key=key)


def _c1(training: pd.DataFrame, random_inits: list[str]) -> list[tuple]:
    rows = []
    tr = training[training["statistic"] == "loss"]
    present = set(tr["init"])
    end, last = _at_end(tr), _end_text(tr)
    pairs = [
        (a, b)
        for a, b in (
            ("orthogonal", "kaiming_normal"),
            ("orthogonal", "kaiming_uniform"),
            ("kaiming_normal", "xavier_normal"),
            ("kaiming_uniform", "xavier_uniform"),
        )
        if a in present and b in present
    ]
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
    if "zeros" in present:
        rows.append(_c1b(tr, end, last))
    if "ones" in present:
        rows.append(_c1c(end, last, random_inits))
    return rows


def _c1b(tr: pd.DataFrame, end: pd.DataFrame, last: str) -> tuple:
    """C1b: zeros does not train (the relative change of its loss from the first to the last epoch)."""
    split = "valid" if ((tr["split"] == "valid") & (tr["epoch"] == tr["epoch"].min())).any() else "train"
    first_epoch = int(tr[tr["split"] == split]["epoch"].min())
    a, b = (
        _by_seed(tr, init="zeros", split=split, epoch=first_epoch),
        _by_seed(end, init="zeros", split=split),
    )
    seeds = a.index.intersection(b.index)
    change = ((b.loc[seeds] - a.loc[seeds]) / a.loc[seeds].abs().clip(lower=1e-12)).tolist()
    return _interval_row(
        "C1b",
        "zeros does not train",
        f"relative change of the {split} loss, epoch {first_epoch} -> {last.removeprefix('epoch ')}",
        {"zeros": change},
        -C1B_MARGIN,
        C1B_MARGIN,
        f"(-{C1B_MARGIN:g}, {C1B_MARGIN:g}) (margin: 1 % of the loss)",
    )


def _c1c(end: pd.DataFrame, last: str, random_inits: list[str]) -> tuple:
    """C1c: ones stays at a high loss (its final training loss against each other random init's)."""

    def final(init: str) -> pd.Series:
        return _by_seed(end, init=init, split="train")

    others = [i for i in random_inits if i != "ones"]
    comps = {f"ones / {i}": _paired(final("ones"), final(i), "logratio") for i in others}
    return _directional_row(
        "C1c",
        "ones stays at a high loss",
        f"final training loss ratio ones / each random init ({last})",
        comps,
        +1,
        ratio=True,
    )


def _c2(weights: pd.DataFrame, random_inits: list[str]) -> tuple | None:
    if "orthogonal" not in random_inits or len(random_inits) < 2:
        return None
    w = _at_end(weights)
    w = w[w["statistic"] == "std"]
    comps = {}
    for layer in _depth_sorted(w):
        for param in ("weight", "bias"):
            d = w[(w["layer"] == layer) & (w["param"] == param)]
            if d.empty:
                continue
            orth = _by_seed(d, init="orthogonal")
            for other in random_inits:
                if other != "orthogonal":
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


def _c3(weights: pd.DataFrame) -> list[tuple]:
    rows = []
    end, last = _at_end(weights), _end_text(weights)
    for init in ("kaiming_uniform", "xavier_uniform"):
        w = end[(end["init"] == init) & (end["param"] == "weight")]
        if w.empty:
            continue
        comps, lows, highs, detail = {}, [], [], []
        for layer in _depth_sorted(w):
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


def _c4(weights: pd.DataFrame, random_inits: list[str]) -> list[tuple]:
    first, last = int(weights["epoch"].min()), _end_text(weights)
    weights = weights.assign(at_end=weights.index.isin(_at_end(weights).index))
    ratios, means, skipped = {}, {}, 0
    for init in random_inits:
        w = weights[weights["init"] == init]
        for layer in _depth_sorted(w):
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


def _c5(features: pd.DataFrame, random_inits: list[str]) -> list[tuple]:
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
        order = _depth_sorted(fk)
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


def _c5_levels(features: pd.DataFrame, random_inits: list[str]) -> list[tuple]:
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
        for layer in _depth_sorted(f[f["init"] == init]):
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


def _c6(em_ab: pd.DataFrame | None, random_inits: list[str]) -> list[tuple]:
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
            (
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
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


AT_INIT = ("C2", "C6", "C6b")  # claims a structural property could decide before any training
ALREADY = "already at initialisation"


def _first_epoch(df: pd.DataFrame | None) -> pd.DataFrame | None:
    """The rows of each run's first epoch (before training), or None where a run has one epoch only."""
    if df is None or not len(df) or "epoch" not in df or df["epoch"].nunique() < 2:
        return None
    return df[df["epoch"] == df.groupby(RUN)["epoch"].transform("min")]


def _at_initialisation(
    rows: list[tuple], w: pd.DataFrame | None, em: pd.DataFrame | None, random_inits: list[str]
) -> list[tuple]:
    """C2, C6 and C6b decided again on the first epoch (before training) by the same rule: the row
    reports that value beside the final one, and a claim that holds at both reads "holds, already at
    initialisation" (a property of the inits or of the architecture, not a finding of training)."""
    w0, em0 = _first_epoch(w), _first_epoch(em)
    before = {
        r[0]: r
        for r in ([_c2(w0, random_inits)] if w0 is not None else [])
        + (_c6(em0, random_inits) if em0 is not None else [])
        if r
    }
    col = {c: i for i, c in enumerate(CLAIM_COLUMNS)}
    out = []
    for r in rows:
        b = before.get(r[0]) if r[0] in AT_INIT else None
        if b is not None:
            r = list(r)
            r[col["value"]] = f"{r[col['value']]}; before training (epoch 0): {b[col['verdict']]}, {b[col['value']]}"
            if r[col["verdict"]] == HOLDS and b[col["verdict"]] == HOLDS:
                r[col["verdict"]] = f"{HOLDS}, {ALREADY}"
            r = tuple(r)
        out.append(r)
    return out


STAGE_COLUMNS = [
    "claim",
    "statement",
    "stage",
    "role",
    "ends",
    "value",
    "n_seeds",
    "effect",
    "ci_low",
    "ci_high",
    "verdict",
    "changes",
]


def claims_stages(
    training: pd.DataFrame,
    weights: pd.DataFrame,
    features: pd.DataFrame,
    em_ab: pd.DataFrame | None,
    stages: list[int | str],
) -> pd.DataFrame:
    """The claims decided at each training stage (``stats.claims_at``: checkpoint epochs and
    ``best``, the best-validation epoch of each run, dnndist.best) and at the last epoch: every
    table cut at the stage's epoch per run, then ``claims`` as at the end of training. ``changes``
    marks the claims whose verdict is not the same at every stage (e.g. where overfitting turns it).
    ``role``: the last epoch is the primary stage, the one the claims table decides; the others are
    exploratory (looking at several stages and quoting the one that agrees is a multiple comparison
    no correction here undoes)."""
    frames = []
    named = {"training": training, "weights": weights, "features": features, "em_ab": em_ab}
    for label, ends, cut in _stage_cuts(training, named, stages):
        table = claims(*cut.values())
        if len(table):
            frames.append(
                table.assign(stage=label, role=PRIMARY if label == _stage_label(LAST) else EXPLORATORY, ends=ends)
            )
    long = pd.concat(frames, ignore_index=True)
    long = long[long["claim"] != "D"]
    long["changes"] = long.groupby("claim")["verdict"].transform("nunique") > 1
    order = {c: i for i, c in enumerate(dict.fromkeys(long["claim"]))}
    long = long.sort_values("claim", key=lambda c: c.map(order), kind="stable")
    return long[STAGE_COLUMNS].reset_index(drop=True)


LAST = "last"  # the stage after every stats.claims_at stage: the end of training
PRIMARY, EXPLORATORY = "primary", "exploratory"


def _stage_label(stage: int | str) -> str:
    if stage == LAST:
        return "last epoch"
    return "best validation" if stage == best.BEST else f"epoch {stage}"


def _ends_text(ends: Mapping[Any, int]) -> str:
    """The epochs at which the runs are read at a stage: '10', or '7-23' (min-max over runs)."""
    if not ends:
        return ""
    lo, hi = min(ends.values()), max(ends.values())
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def _stage_cuts(
    training: pd.DataFrame, named: Mapping[str, pd.DataFrame | None], stages: list[int | str]
) -> list[tuple[str, str, dict[str, pd.DataFrame | None]]]:
    """Per stage (those given, then the last epoch): its label, the runs' epochs at it, and the
    tables cut at it (each run's rows up to its stage epoch; at the last epoch the tables as they
    are, so those rows are the plain tables'). A run that diverged keeps its flag at every stage:
    the claims leave it out of each (row D), so the stages compare the same seeds."""
    out = []
    for stage in [*stages, LAST]:
        ends = _stage_ends(training, stage)
        cut = dict(named) if stage == LAST else {name: _cut(df, ends, name, stage) for name, df in named.items()}
        out.append((_stage_label(stage), _ends_text(ends), cut))
    return out


def _weights_at_stages(
    table: Any, training: pd.DataFrame, weights: pd.DataFrame, stages: list[int | str]
) -> pd.DataFrame:
    """``table(weights)`` at each stage (``_stage_cuts``), stacked, with the columns ``stage`` and ``ends``."""
    frames = [
        table(cut["weights"]).assign(stage=label, ends=ends)
        for label, ends, cut in _stage_cuts(training, {"weights": weights}, stages)
    ]
    return pd.concat(frames, ignore_index=True)


def range_stages(training: pd.DataFrame, weights: pd.DataFrame, stages: list[int | str]) -> pd.DataFrame:
    """The range table ("do weights stay inside [-1, 1]?") with 'after' read at each stage of
    ``stats.claims_at`` and at the last epoch (column ``stage``; ``ends``: the runs' epochs)."""
    long = _weights_at_stages(range_table, training, weights, stages)
    first = ["init", "layer", "param", "stage", "ends"]
    return long[first + [c for c in long.columns if c not in first and not c.endswith("_before")]]


def depth_trend_stages(training: pd.DataFrame, weights: pd.DataFrame, stages: list[int | str]) -> pd.DataFrame:
    """The depth-trend table ("are deeper layers sparser or heavier-tailed?") at each stage of
    ``stats.claims_at`` and at the last epoch (column ``stage``; ``ends``: the runs' epochs)."""
    keys = ["variant", "init", "layer_kind", "statistic"]
    long = _weights_at_stages(depth_trend, training, weights, stages).sort_values(keys, kind="stable")
    return long[[*keys, "stage", "ends", *[c for c in DEPTH_TREND_COLUMNS if c not in keys]]].reset_index(drop=True)


def _stage_ends(training: pd.DataFrame, stage: int | str) -> dict[tuple[str, str, int], int]:
    """(variant, init, seed) -> the run's epoch at the stage: a fixed epoch, the run's best-validation
    epoch, or its last (runs that diverged, whose metrics stop early, not counted there). Runs
    without one (no finite validation loss for 'best') are left out."""
    if stage == best.BEST:
        return best.best_epochs(training)
    runs = training.groupby(RUN)["epoch"].max()
    if stage == LAST:
        stopped = set(map(tuple, training.loc[training["statistic"] == "diverged", RUN].astype(str).to_numpy()))
        runs = runs[[tuple(map(str, k)) not in stopped for k in runs.index]]
    return {(str(v), str(i), int(s)): int(e) if stage == LAST else int(stage) for (v, i, s), e in runs.items()}


def _cut(
    df: pd.DataFrame | None, ends: Mapping[tuple[str, str, int], int], name: str, stage: Any
) -> pd.DataFrame | None:
    """Each run's rows up to its epoch at the stage; a checkpoint table must have that epoch."""
    if df is None or not len(df):
        return df
    keys = list(zip(df["variant"].astype(str), df["init"].astype(str), df["seed"].astype(int)))
    end = np.array([ends.get(k, -1) for k in keys])
    keep = df["epoch"].to_numpy() <= end
    if name == "training":  # a divergence flag stays at every stage: the run is left out of each
        keep |= (df["statistic"] == "diverged").to_numpy()
    out = df[keep]
    if name != "training" and len(out):
        have = out.groupby(RUN)["epoch"].max()
        missing = [(k, ends[k]) for k in ends if k in have.index and int(have[k]) != ends[k]]
        if missing:
            (v, i, s), e = missing[0]
            raise DnndistError(
                f"claims at stage {stage!r}: the {name} table has no epoch {e} for {v}/{i}/seed{s} "
                "(it is not a checkpoint: add it, or 'best', to train.checkpoints and stats.claims_at)"
            )
    return out


FACTOR_STATS = {
    "near_zero_rel_0.1": "near-zero mass (|w| < 0.1 std)",
    "kurtosis": "excess kurtosis",
    "tail_index": "Hill tail index (smaller = heavier)",
    "std": "std of the weights",
}


def variant_factors(variants: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each variant as {factor path: value}, over every path any variant sets (the resolved
    value, the base's where a variant does not set it). Input: {variant: resolved settings of
    its first run} restricted to the swept sections."""

    def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, Mapping):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    flats = {name: flat(settings) for name, settings in variants.items()}
    keys = sorted({k for f in flats.values() for k in f})
    varying = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats.values()}) > 1]
    return {name: {k: f.get(k) for k in varying} for name, f in flats.items()}


FACTOR_COLUMNS = (
    "factor",
    "level",
    "base_level",
    "statistic",
    "description",
    "base_mean",
    "effect",
    "ci_low",
    "ci_high",
    "n_pairs",
    "n_seeds",
    "p_value",
    "p_holm",
    "verdict",
)


def factor_effects(
    weights: pd.DataFrame, variants: Mapping[str, Mapping[str, Any]], base: str | None = None
) -> pd.DataFrame:
    """Which factor makes the weights' near-zero peak heavier: for every pair of variants that
    differ in exactly one factor, the change of each statistic (level minus base level) per
    (init, seed) -- paired: same init, same seed --, averaged over the weight layers at each run's
    last epoch; the effect of a seed is its mean over the pairs and inits, and the verdict comes
    from the t-test over seeds with Holm's correction over the statistics of the factor level
    (dnndist.verdicts.effects)."""
    factors = variant_factors(variants)
    base = base if base in factors else next(iter(factors), None)
    w = weights[(weights["param"] == "weight") & weights["statistic"].isin(FACTOR_STATS)]
    last = w.groupby(["variant", "init", "seed"])["epoch"].transform("max")
    w = w[w["epoch"] == last]
    per_run = w.groupby(["variant", "init", "seed", "statistic"])["value"].mean()  # mean over layers
    out = []
    for (k, level_json), pairs in _contrasts(factors, base).items():
        per_stat, base_means = [], []
        for stat in FACTOR_STATS:
            seed_effects, base_mean = _paired_effects(per_run, pairs, stat)
            per_stat.append(seed_effects)
            base_means.append(base_mean)
        dec = verdicts.effects(verdicts.pad(per_stat))
        for i, (stat, label) in enumerate(FACTOR_STATS.items()):
            out.append(
                {
                    "factor": k,
                    "level": json.loads(level_json),
                    "base_level": pairs[0][2],
                    "statistic": stat,
                    "description": label,
                    "base_mean": base_means[i],
                    "effect": dec.mean[i],
                    "ci_low": dec.low[i],
                    "ci_high": dec.high[i],
                    "n_pairs": len(pairs),
                    "n_seeds": int(dec.n[i]),
                    "p_value": dec.p[i],
                    "p_holm": dec.p_adj[i],
                    "verdict": dec.outcome[i],
                }
            )
    return pd.DataFrame(out, columns=FACTOR_COLUMNS)


def _contrasts(
    factors: dict[str, dict[str, Any]], base: str | None
) -> dict[tuple[str, str], list[tuple[str, str, Any]]]:
    """Per (factor, level as JSON), the variant pairs (a, b, base level) that differ only in that
    factor, a at its base level (the base variant's) and b at the level."""
    rows = []
    names = list(factors)
    for a in names:
        for b in names:
            diff = [k for k in factors[a] if factors[a][k] != factors[b][k]]
            if a == b or len(diff) != 1:
                continue
            k = diff[0]
            base_level = factors[base][k] if base else None
            if factors[a][k] != base_level or factors[b][k] == base_level:
                continue  # a holds the factor at its base level, b at another level
            rows.append((k, factors[b][k], factors[a][k], a, b))
    by_contrast: dict[tuple[str, str], list[tuple[str, str, Any]]] = {}
    for k, level, base_level, a, b in rows:
        by_contrast.setdefault((k, json.dumps(level)), []).append((a, b, base_level))
    return by_contrast


def _paired_effects(per_run: pd.Series, pairs: list[tuple[str, str, Any]], stat: str) -> tuple[list[float], float]:
    """One statistic's change b - a over the variant pairs, paired by (init, seed): the mean change
    per seed (seed order) and the mean of the base variants' values."""
    per_seed: dict[int, list[float]] = {}
    base_vals = []
    for a, b, _ in pairs:
        runs_a, runs_b = _runs_of(per_run, a, stat), _runs_of(per_run, b, stat)
        both = runs_a.index.intersection(runs_b.index)  # (init, seed) present in both variants
        for init, seed in both:
            d = float(runs_b[(init, seed)]) - float(runs_a[(init, seed)])
            if np.isfinite(d):
                per_seed.setdefault(int(seed), []).append(d)
                base_vals.append(float(runs_a[(init, seed)]))
    return [float(np.mean(per_seed[s_])) for s_ in sorted(per_seed)], float(
        np.mean(base_vals)
    ) if base_vals else math.nan


def _runs_of(per_run: pd.Series, variant: str, stat: str) -> pd.Series:
    """One variant's values of one statistic, indexed by (init, seed)."""
    sub = per_run[
        (per_run.index.get_level_values("variant") == variant) & (per_run.index.get_level_values("statistic") == stat)
    ]
    return sub.droplevel(["variant", "statistic"])
