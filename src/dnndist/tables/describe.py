"""The descriptive tables: init formulas against measurement, ranges (do weights stay inside
[-1, 1]?), depth trends, emission against absorption; and what they share with the claims (each
run's rows at its own last epoch)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from dnndist import verdicts
from dnndist.stats import RUN_DIMS

RUN = RUN_DIMS  # variant, init, seed: one run


def _at_end(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows at its own last epoch: the end of training, or of the stage that the tables
    were cut at (``claims_stages``; at the best-validation epoch the runs end at different epochs)."""
    return df[df["epoch"] == df.groupby(RUN)["epoch"].transform("max")] if len(df) else df


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
