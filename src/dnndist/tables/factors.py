"""The experiment factors: each factor level's effect on the trained weights against its base
level, paired by init and seed over variant pairs that differ only in that factor."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from dnndist import verdicts

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


GROUP_COLUMNS = (
    "group",
    "base_group",
    "statistic",
    "description",
    "base_mean",
    "group_mean",
    "effect",
    "ci_low",
    "ci_high",
    "n_seeds",
    "unpaired_seeds",
    "p_value",
    "p_holm",
    "verdict",
)
OUTCOME_STATS = {"accuracy": "final accuracy (fraction)", "loss": "final cross-entropy loss (nat)"}


def group_effects(training: pd.DataFrame | None, weights: pd.DataFrame, base: str | None = None) -> pd.DataFrame:
    """Recorded groups compared (``dnndist report``): each group against ``base`` (default: the first
    by name), paired by seed, on the final accuracy and loss (of the test split, else valid, else
    train) and on each statistic of ``FACTOR_STATS`` (mean over the weight layers), each at every
    run's last record point. The effect of a seed is group minus base; the verdict is
    ``verdicts.effects`` (two-sided t over the common seeds, Holm over the statistics of a group;
    "descriptive only" below 5 seeds). Seeds only one of the two groups has are counted in
    ``unpaired_seeds`` and not used. Groups live in the ``init`` column of the tables."""
    per_run = _last_values(weights, training)
    groups = sorted(per_run.index.get_level_values("init").unique())
    base = base if base is not None else (groups[0] if groups else None)
    if base is not None and base not in groups:
        raise ValueError(f"base group {base!r} is not among the groups ({', '.join(groups)})")
    stats = {**OUTCOME_STATS, **FACTOR_STATS}
    pairs = set(zip(per_run.index.get_level_values("init"), per_run.index.get_level_values("statistic"), strict=True))
    out = []
    for group in (g for g in groups if g != base):
        seed_sets = [set(per_run.xs((g,), level=["init"]).index.get_level_values("seed")) for g in (base, group)]
        common, unpaired = sorted(seed_sets[0] & seed_sets[1]), len(seed_sets[0] ^ seed_sets[1])
        present = [s for s in stats if (base, s) in pairs and (group, s) in pairs]
        diffs, base_means, group_means = [], [], []
        for stat in present:
            a = per_run.xs((base, stat), level=["init", "statistic"]).reindex(common)
            b = per_run.xs((group, stat), level=["init", "statistic"]).reindex(common)
            d = (b - a).to_numpy(dtype=float)
            diffs.append(list(d[np.isfinite(d)]))
            base_means.append(float(a.mean()))
            group_means.append(float(b.mean()))
        if not present:
            continue
        dec = verdicts.effects(verdicts.pad(diffs))
        for i, stat in enumerate(present):
            out.append(
                {
                    "group": group,
                    "base_group": base,
                    "statistic": stat,
                    "description": stats[stat],
                    "base_mean": base_means[i],
                    "group_mean": group_means[i],
                    "effect": dec.mean[i],
                    "ci_low": dec.low[i],
                    "ci_high": dec.high[i],
                    "n_seeds": int(dec.n[i]),
                    "unpaired_seeds": unpaired,
                    "p_value": dec.p[i],
                    "p_holm": dec.p_adj[i],
                    "verdict": dec.outcome[i],
                }
            )
    return pd.DataFrame(out, columns=GROUP_COLUMNS)


def _last_values(weights: pd.DataFrame, training: pd.DataFrame | None) -> pd.Series:
    """(init, statistic, seed) -> a run's value at its last record point: the weight statistics of
    ``FACTOR_STATS`` averaged over the weight layers, the final accuracy and loss."""
    w = weights[(weights["param"] == "weight") & weights["statistic"].isin(FACTOR_STATS)]
    w = w[w["epoch"] == w.groupby(["init", "seed"])["epoch"].transform("max")]
    parts = [w.groupby(["init", "statistic", "seed"])["value"].mean()]
    if training is not None and not training.empty:
        t = training[training["statistic"].isin(OUTCOME_STATS)]
        t = t[t["epoch"] == t.groupby(["init", "seed"])["epoch"].transform("max")]
        for split in ("test", "valid", "train"):
            if (t["split"] == split).any():
                parts.append(t[t["split"] == split].groupby(["init", "statistic", "seed"])["value"].mean())
                break
    return pd.concat(parts).sort_index()
