"""Tables (CSV + Markdown + LaTeX from the same tidy data) and the paper-claims check.

Every claim is decided by a rule written here (and quoted in the table's ``rule`` column):
a claim *holds* when the statistic points the claimed way and the 95 % bootstrap CIs over
seeds separate the compared groups, *does not hold* when it points the other way with
separated CIs, and is *inconclusive* otherwise (overlapping CIs, one seed, missing runs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from dnndist.io import write_text
from dnndist.stats import bootstrap_ci, diverged_runs

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
FLAGGED = "flagged"  # a row that reports a fault (divergence), not a claim


def write_table(df: pd.DataFrame, stem: str | Path, caption: str) -> None:
    """stem.csv, stem.md (with the caption) and stem.tex (a table environment)."""
    stem = str(stem)
    fmt = df.copy()
    for col in fmt.select_dtypes("number").columns:
        fmt[col] = fmt[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    write_text(stem + ".csv", df.to_csv(index=False))
    write_text(stem + ".md", f"{caption}\n\n" + fmt.to_markdown(index=False) + "\n")
    latex = fmt.to_latex(index=False, escape=True)
    write_text(stem + ".tex", "\\begin{table}\n\\centering\n\\caption{" + caption.replace("%", "\\%") + "}\n" + latex + "\\end{table}\n")


def _pick(summary: pd.DataFrame, **eq) -> pd.DataFrame:
    m = np.ones(len(summary), dtype=bool)
    for k, v in eq.items():
        m &= summary[k].to_numpy() == v
    return summary[m]


def _first_variant(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["variant"] == df["variant"].iloc[0]] if len(df) else df


def init_check(weights: pd.DataFrame) -> pd.DataFrame:
    """Theoretical vs empirical std and bound of fresh weights (epoch 0), per layer and init."""
    w = _first_variant(weights)
    w = w[(w["epoch"] == w["epoch"].min()) & (w["param"] == "weight")]
    # unstack, not pivot_table: keep the all-NaN theory_bound of normal inits, add no index combinations
    piv = w.set_index(["init", "layer", "depth", "statistic"])["mean"].unstack("statistic").reset_index()
    piv["max_abs"] = np.maximum(piv["max"].abs(), piv["min"].abs())
    out = piv[["init", "layer", "depth", "fan_in", "fan_out", "init_std", "std", "init_bound", "max_abs"]].copy()
    out["std_ratio"] = out["std"] / out["init_std"]
    return out.rename(columns={"init_std": "theory_std", "std": "empirical_std", "init_bound": "theory_bound", "max_abs": "empirical_max_abs"}) \
        .sort_values(["init", "depth"]).drop(columns="depth").reset_index(drop=True)


def range_table(weights: pd.DataFrame) -> pd.DataFrame:
    """Fraction of weights within [-k, k] (k = 1/sqrt(fan_in)) and [-1, 1], min and max, before vs after."""
    w = _first_variant(weights)
    w = w[w["param"] == "weight"]
    first, last = w["epoch"].min(), w["epoch"].max()
    stats = ["within_default_bound", "within_unit", "min", "max"]
    rows = []
    for (init, layer), d in w[w["statistic"].isin(stats)].groupby(["init", "layer"], sort=False):
        row = {"init": init, "layer": layer, "depth": d["depth"].iloc[0]}
        for epoch, tag in ((first, "before"), (last, "after")):
            for stat in stats:
                v = d[(d["epoch"] == epoch) & (d["statistic"] == stat)]["mean"]
                row[f"{stat}_{tag}"] = float(v.iloc[0]) if len(v) else math.nan
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["init", "depth"]).drop(columns="depth").reset_index(drop=True)


def depth_trend(weights_tidy: pd.DataFrame, stats: tuple[str, ...] = ("near_zero_rel_0.1", "kurtosis", "tail_index")) -> pd.DataFrame:
    """Spearman rank correlation of a weight statistic with layer depth (each variant's last
    epoch), per variant and init: computed per seed, then mean and bootstrap 95 % CI over seeds."""
    w = weights_tidy[(weights_tidy["param"] == "weight") & (weights_tidy["statistic"].isin(stats))]
    w = w[w["epoch"] == w.groupby("variant")["epoch"].transform("max")]
    rows = []
    for (variant, init, stat), d in w.groupby(["variant", "init", "statistic"], sort=False):
        rhos = []
        for _, ds in d.groupby("seed"):
            ds = ds.dropna(subset=["value"])
            if ds["depth"].nunique() >= 3 and ds["value"].nunique() > 1:
                rhos.append(float(scipy.stats.spearmanr(ds["depth"], ds["value"]).statistic))
        mean, lo, hi = bootstrap_ci(rhos)
        rows.append({"variant": variant, "init": init, "statistic": stat, "spearman_rho": mean, "ci_low": lo, "ci_high": hi, "n_seeds": len(rhos),
                     "layers": int(d["depth"].nunique())})
    return pd.DataFrame(rows)


def emission_summary(em_ab: pd.DataFrame) -> pd.DataFrame:
    """Per-channel median and variance over inputs of emission and absorption (last epoch), and per
    layer whether emission varies more than absorption (mean per-channel variance)."""
    d = em_ab[em_ab["epoch"] == em_ab["epoch"].max()]
    per = d.groupby(["variant", "init", "seed", "layer", "measure", "channel"])["value"].agg(["median", "var"]).reset_index()
    layer = per.groupby(["variant", "init", "seed", "layer", "measure"])[["median", "var"]].mean().reset_index()
    wide = layer.pivot_table(index=["variant", "init", "seed", "layer"], columns="measure", values=["median", "var"])
    wide.columns = [f"{a}_{b}" for a, b in wide.columns]
    wide = wide.reset_index()
    wide["emission_varies_more"] = wide["var_emission"] > wide["var_absorption"]
    # across channels: spread (coefficient of variation) of the per-channel medians
    cv = per.groupby(["variant", "init", "seed", "layer", "measure"])["median"].agg(
        lambda v: float(v.std(ddof=0) / v.mean()) if v.mean() > 0 else math.nan).unstack("measure")
    cv.columns = [f"channel_cv_{m}" for m in cv.columns]
    wide = wide.merge(cv.reset_index(), on=["variant", "init", "seed", "layer"], how="left")
    wide["emission_spread_larger"] = wide["channel_cv_emission"] > wide["channel_cv_absorption"]
    return wide


def _compare(a: tuple[float, float, float], b: tuple[float, float, float]) -> str:
    """'<' / '>' when the CIs separate, '?' otherwise (or without CIs)."""
    (_, alo, ahi), (_, blo, bhi) = a, b
    if any(math.isnan(v) for v in (alo, ahi, blo, bhi)):
        return "?"
    if ahi < blo:
        return "<"
    if alo > bhi:
        return ">"
    return "?"


def _ci(summary: pd.DataFrame) -> tuple[float, float, float]:
    if len(summary) == 0:
        return math.nan, math.nan, math.nan
    r = summary.iloc[0]
    return float(r["mean"]), float(r["ci_low"]), float(r["ci_high"])


def _fmt(ci: tuple[float, float, float]) -> str:
    m, lo, hi = ci
    return f"{m:.4g}" + ("" if math.isnan(lo) else f" [{lo:.4g}, {hi:.4g}]")


def claims(training: pd.DataFrame, weights: pd.DataFrame, features: pd.DataFrame, emission: pd.DataFrame | None) -> pd.DataFrame:
    """One row per paper claim: statistic, value with CI, verdict, and the rule that decided it.
    Inputs are the seed summaries (mean, ci_low, ci_high) of the first variant."""
    training, weights, features = (_first_variant(x) for x in (training, weights, features))
    rows = []
    last = training["epoch"].max()

    def loss(init: str, epoch: int = last) -> tuple[float, float, float]:
        return _ci(_pick(training, init=init, epoch=epoch, split="train", statistic="loss"))

    # C1: final training loss ordering orthogonal < kaiming < xavier; zeros flat; ones high
    order = [("orthogonal",), ("kaiming_normal", "kaiming_uniform"), ("xavier_normal", "xavier_uniform")]
    present = set(training["init"])
    if all(any(i in present for i in g) for g in order):
        groups = [min((loss(i) for i in g if i in present), key=lambda c: c[0]) for g in order]
        cmp = [_compare(groups[0], groups[1]), _compare(groups[1], groups[2])]
        verdict = HOLDS if cmp == ["<", "<"] else FAILS if ">" in cmp else UNSURE
        value = "; ".join(f"{name} {_fmt(g)}" for name, g in zip(("orthogonal", "kaiming", "xavier"), groups))
    else:
        verdict, value = UNSURE, "missing inits"
    rows.append(("C1a", "loss ordering orthogonal < kaiming < xavier", f"final training loss (epoch {last}), best of each family", value,
                 verdict, "holds if each family's CI lies entirely below the next one's"))
    if "zeros" in present:
        first_loss = _ci(_pick(training, init="zeros", epoch=training[training["split"] == "train"]["epoch"].min(), split="train", statistic="loss"))
        change = abs(loss("zeros")[0] - first_loss[0]) / max(first_loss[0], 1e-12)
        rows.append(("C1b", "zeros does not train", "relative change of training loss, first to last epoch", f"{change:.3g}",
                     HOLDS if change < 0.01 else FAILS, "holds if the loss changes by less than 1 %"))
    if "ones" in present:
        others = [loss(i) for i in present - {"ones", "zeros"}]
        best = max(others, key=lambda c: c[0]) if others else (math.nan,) * 3
        c = _compare(loss("ones"), best)
        rows.append(("C1c", "ones stays at a high loss", "final training loss: ones vs the worst other init",
                     f"{_fmt(loss('ones'))} vs {_fmt(best)}", HOLDS if c == ">" else FAILS if c == "<" else UNSURE,
                     "holds if the CI of ones lies above that of every other init (except zeros)"))

    # C2: orthogonal has the largest weight and bias variance in every layer (last epoch)
    w_last = weights[weights["epoch"] == weights["epoch"].max()]
    random_inits = sorted(set(w_last["init"]) - {"ones", "zeros"})
    if "orthogonal" in random_inits and len(random_inits) > 1:
        wins = losses = total = 0
        for (layer, param), d in w_last[w_last["statistic"] == "std"].groupby(["layer", "param"]):
            orth = _ci(d[d["init"] == "orthogonal"])
            rest = [_ci(d[d["init"] == i]) for i in random_inits if i != "orthogonal"]
            top = max(rest, key=lambda c: c[0])
            total += 1
            c = _compare(orth, top)
            wins += c == ">"
            losses += orth[0] < top[0] and c == "<"
        verdict = HOLDS if wins == total else FAILS if losses > 0 else UNSURE
        rows.append(("C2", "orthogonal has the largest weight and bias variance in every layer",
                     "std at the last epoch, orthogonal vs the largest other random init", f"largest in {wins} of {total} (layer, param) with separated CIs; smaller with separated CIs in {losses}",
                     verdict, "holds if orthogonal's CI lies above all others in every layer and param; fails if below in any"))

    # C3: uniform inits end Gaussian-shaped (KS distance to the fitted normal drops below 0.05)
    first_e, last_e = weights["epoch"].min(), weights["epoch"].max()
    for init in ("kaiming_uniform", "xavier_uniform"):
        d = weights[(weights["init"] == init) & (weights["param"] == "weight") & (weights["statistic"] == "ks_normal")]
        if d.empty:
            continue
        before, after = d[d["epoch"] == first_e].set_index("layer")["mean"], d[d["epoch"] == last_e].set_index("layer")["mean"]
        gaussian = bool((after < 0.05).all())
        dropped = bool((after < before).all())
        rows.append((f"C3 {init}", "uniform inits end Gaussian-shaped", "KS distance to the fitted normal per layer, first -> last epoch",
                     ", ".join(f"{layer} {before[layer]:.3f}->{after[layer]:.3f}" for layer in after.index),
                     HOLDS if gaussian and dropped else FAILS if not dropped else UNSURE,
                     "holds if KS drops in every layer and ends below 0.05; fails if it does not drop in some layer"))

    # C4: weight std grows slightly with training, mean stays near 0
    ratios, means_ok = [], True
    for init in random_inits:
        d = weights[(weights["init"] == init) & (weights["param"] == "weight")]
        s0 = d[(d["epoch"] == first_e) & (d["statistic"] == "std")].set_index("layer")["mean"]
        s1 = d[(d["epoch"] == last_e) & (d["statistic"] == "std")].set_index("layer")["mean"]
        m1 = d[(d["epoch"] == last_e) & (d["statistic"] == "mean")].set_index("layer")["mean"]
        ratios.extend((s1 / s0.reindex(s1.index)).dropna().tolist())
        means_ok &= bool((m1.abs() < 0.1 * s1.reindex(m1.index)).all())
    if ratios:
        r = np.array(ratios)
        grows = bool((r > 1).all())
        slightly = bool((r < 1.5).all())
        rows.append(("C4", "weight std grows slightly with training; the mean stays near 0",
                     "std(last)/std(first) over layers x random inits; |mean| < 0.1 std", f"ratio {r.min():.3f} .. {r.max():.3f}; mean near 0: {means_ok}",
                     HOLDS if grows and slightly and means_ok else FAILS if not grows else UNSURE,
                     "holds if every ratio is in (1, 1.5) and every |mean| < 0.1 std; fails if some std shrinks"))

    # C5: feature variance grows after training and with depth (pre-activations, train inputs)
    f = features[(features["kind"] == "pre") & (features["split"] == "train") & (features["statistic"] == "std")] if len(features) else features
    if len(f):
        grow, deeper = [], []
        for init in random_inits:
            d = f[f["init"] == init]
            s0 = d[d["epoch"] == d["epoch"].min()].set_index("layer")["mean"]
            s1 = d[d["epoch"] == d["epoch"].max()].set_index("layer")["mean"]
            grow.append(bool((s1 > s0).all()))
            if len(s1) >= 3:
                deeper.append(float(scipy.stats.spearmanr(np.arange(len(s1)), s1.to_numpy()).statistic))
        verdict = HOLDS if all(grow) and deeper and min(deeper) > 0 else FAILS if not any(grow) else UNSURE
        rows.append(("C5", "feature variance grows after training and with depth",
                     "pre-activation std on train inputs: last vs first epoch per layer; Spearman(depth, std) at the last epoch",
                     f"grows in all layers for {sum(grow)}/{len(grow)} inits; rho {min(deeper):.2f} .. {max(deeper):.2f}" if deeper else f"{sum(grow)}/{len(grow)}",
                     verdict, "holds if std grows in every layer for every random init and rho > 0 for all; fails if it grows for none"))

    # C6: emission varies more than absorption
    if emission is not None and len(emission):
        e = emission[emission["init"].isin(random_inits)] if random_inits else emission
        share = float(e["emission_varies_more"].mean()) if len(e) else math.nan
        rows.append(("C6", "emission varies more than absorption", "mean per-channel variance over inputs, per (init, seed, conv layer)",
                     f"emission larger in {share:.0%} of {len(e)}", HOLDS if share == 1 else FAILS if share < 0.5 else UNSURE,
                     "holds if emission's variance is larger in every case; fails if in fewer than half"))
        if "emission_spread_larger" in e:
            spread = float(e["emission_spread_larger"].mean()) if len(e) else math.nan
            rows.append(("C6b", "emission differs more between channels than absorption",
                         "coefficient of variation of the per-channel medians across channels, per (init, seed, conv layer)",
                         f"emission larger in {spread:.0%} of {len(e)}", HOLDS if spread == 1 else FAILS if spread < 0.5 else UNSURE,
                         "holds if emission's spread is larger in every case; fails if in fewer than half"))
    div = diverged_runs(training)
    if div:  # flagged, so that no verdict above is read without knowing which runs stopped early
        value = "; ".join(f"{init} ({n} seed{'s' * (n != 1)})" for (_, init), n in sorted(div.items()))
        rows.append(("D", "runs that diverged", "seeds whose training loss became NaN/inf (they stop there)", value,
                     FLAGGED, "listed whenever a run diverged; claims above use the epochs each run reached"))
    return pd.DataFrame(rows, columns=["claim", "statement", "statistic", "value", "verdict", "rule"])


FACTOR_STATS = {"near_zero_rel_0.1": "near-zero mass (|w| < 0.1 std)", "kurtosis": "excess kurtosis",
                "tail_index": "Hill tail index (smaller = heavier)", "std": "std of the weights"}


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


def factor_effects(weights: pd.DataFrame, variants: Mapping[str, Mapping[str, Any]], base: str | None = None) -> pd.DataFrame:
    """Which factor makes the weights' near-zero peak heavier: for every pair of variants that
    differ in exactly one factor, the change of each statistic (level minus base level) per
    (init, seed), averaged over the weight layers at each run's last epoch; the effect is its
    mean over the pairs and inits of each seed, with a bootstrap CI over seeds."""
    factors = variant_factors(variants)
    base = base if base in factors else next(iter(factors), None)
    w = weights[(weights["param"] == "weight") & weights["statistic"].isin(FACTOR_STATS)]
    last = w.groupby(["variant", "init", "seed"])["epoch"].transform("max")
    w = w[w["epoch"] == last]
    per_run = w.groupby(["variant", "init", "seed", "statistic"])["value"].mean()  # mean over layers
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
    out = []
    by_contrast: dict[tuple[str, str], list[tuple[str, str, Any]]] = {}
    for k, level, base_level, a, b in rows:
        by_contrast.setdefault((k, json.dumps(level)), []).append((a, b, base_level))
    for (k, level_json), pairs in by_contrast.items():
        for stat, label in FACTOR_STATS.items():
            per_seed: dict[int, list[float]] = {}
            base_vals = []
            for a, b, _ in pairs:
                runs_a, runs_b = _runs_of(per_run, a, stat), _runs_of(per_run, b, stat)
                both = runs_a.index.intersection(runs_b.index)  # (init, seed) present in both variants
                for init, seed in both:
                    per_seed.setdefault(int(seed), []).append(float(runs_b[(init, seed)]) - float(runs_a[(init, seed)]))
                    base_vals.append(float(runs_a[(init, seed)]))
            seeds = sorted(per_seed)
            mean, lo, hi = bootstrap_ci([float(np.nanmean(per_seed[s_])) for s_ in seeds])
            verdict = UNSURE if not np.isfinite(lo) else "increases" if lo > 0 else "decreases" if hi < 0 else "no clear effect"
            out.append({"factor": k, "level": json.loads(level_json), "base_level": pairs[0][2], "statistic": stat,
                        "description": label, "base_mean": float(np.nanmean(base_vals)) if base_vals else math.nan,
                        "effect": mean, "ci_low": lo, "ci_high": hi, "n_pairs": len(pairs), "n_seeds": len(seeds),
                        "verdict": verdict})
    cols = ["factor", "level", "base_level", "statistic", "description", "base_mean", "effect", "ci_low", "ci_high",
            "n_pairs", "n_seeds", "verdict"]
    return pd.DataFrame(out, columns=cols)


def _runs_of(per_run: pd.Series, variant: str, stat: str) -> pd.Series:
    """One variant's values of one statistic, indexed by (init, seed)."""
    sub = per_run[(per_run.index.get_level_values("variant") == variant) & (per_run.index.get_level_values("statistic") == stat)]
    return sub.droplevel(["variant", "statistic"])


CAPTIONS: Mapping[str, str] = {
    "init_check": "Theoretical vs empirical weight std and bound at epoch 0 (fan_in = C_in*kh*kw for conv layers); mean over seeds.",
    "range": "Fraction of weights within the default-init bound [-k, k], k = 1/sqrt(fan_in), and within [-1, 1], with min and max, before and after training; mean over seeds.",
    "depth_trend": "Spearman rank correlation of near-zero mass, excess kurtosis and Hill tail index with layer depth at the last epoch, per variant and init; mean and 95 % bootstrap CI over seeds.",
    "emission": "Emission and absorption per conv layer at the last epoch: per-channel median and variance over inputs (mean over channels), whether emission varies more over inputs, and the spread of the per-channel medians across channels (coefficient of variation) with whether emission's is larger.",
    "factors": "Effect of each experiment factor on the trained weights (last epoch, weight layers averaged): level minus base level over variant pairs that differ only in that factor; mean and 95 % bootstrap CI over seeds. Verdict: increases/decreases if the CI excludes 0.",
    "claims": "The paper's claims, each with the statistic used, its value (mean [95 % CI] over seeds) and a verdict decided by the stated rule.",
}
