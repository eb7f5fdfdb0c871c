"""The report's first lines: what the tables say, in plain words (``tables.at_a_glance``).

Each row is one finding, a sentence generated from the per-seed tables with its numbers (means
over seeds, ranges over layers and initialisations) and the table it comes from. Descriptive:
the verdicts are the claims table's. First variant only; runs that diverged are left out and
named. Torch-free.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dnndist.conventions import CONSTANT_INITS as CONSTANT  # every weight equal at initialisation
from dnndist.stats import RUN_DIMS, diverged_runs

GLANCE_COLUMNS = ["finding", "source"]
GAUSSIAN_NEAR_ZERO = 0.0797  # P(|z| < 0.1) for a normal z: a Gaussian's near_zero_rel_0.1
UNIFORM_NEAR_ZERO = 0.0577  # 0.1 / sqrt(3): a uniform's


def _label(init: str) -> str:
    return init.replace("_", " ")


def _g(v: float) -> str:
    return f"{v:.3g}" if np.isfinite(v) else "n/a"


def _pct(v: float) -> str:
    return f"{100 * v:+.1f} %" if np.isfinite(v) else "n/a"


def _first_variant(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["variant"] == df["variant"].iloc[0]] if len(df) else df


def _stat(weights: pd.DataFrame, statistic: str) -> pd.DataFrame:
    """One weight statistic per run, layer and epoch: columns init, seed, layer, depth, epoch, value."""
    d = weights[(weights["param"] == "weight") & (weights["statistic"] == statistic)]
    return d[["init", "seed", "layer", "depth", "epoch", "value"]]


def _ends(d: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each run's rows at the first checkpoint and at its own last epoch."""
    first = d[d["epoch"] == d["epoch"].min()]
    last = d[d["epoch"] == d.groupby(["init", "seed"])["epoch"].transform("max")]
    return first, last


def _seed_means(d: pd.DataFrame) -> pd.Series:
    """(init, layer) -> mean over seeds, in depth order."""
    return d.groupby(["init", "depth", "layer"])["value"].mean().droplevel("depth")


def _training_sentence(training: pd.DataFrame, inits: list[str]) -> list[tuple[str, str]]:
    if training is None or training.empty:
        return []
    split = "test" if "test" in set(training["split"]) else "valid"
    acc = training[(training["split"] == split) & (training["statistic"] == "accuracy")]
    if acc.empty:
        return []
    last = acc[acc["epoch"] == acc.groupby(["init", "seed"])["epoch"].transform("max")]
    means = last.groupby("init")["value"].mean()
    seeds = last.groupby("init")["seed"].nunique()
    epochs = int(last["epoch"].max())
    order = sorted((i for i in inits if i in means), key=lambda i: -means[i])
    parts = ", ".join(f"{_label(i)} {means[i]:.3f}" for i in order)
    n = _seeds(int(seeds.min())) if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()} seeds"
    return [(f"{split.capitalize()} accuracy after {epochs} epochs (mean over {n}), best first: {parts}.", "training")]


def _seeds(n: int) -> str:
    return f"{n} seed{'s' * (n != 1)}"


def _outside(d: pd.DataFrame, seeds: int) -> tuple[str, frozenset]:
    """Which (init, layer) pairs have a weight outside [-1, 1], in words, and the set of them."""
    out = d[d["value"] > 1.0]
    if out.empty:
        return f"every weight lies inside [-1, 1] (largest |w| {_g(d['value'].max())})", frozenset()
    worst = out.groupby(["init", "layer"]).agg(top=("value", "max"), n=("seed", "nunique"))
    worst = worst.sort_values("top", ascending=False)
    shown = "; ".join(
        f"{_label(i)} {layer} (largest |w| {_g(r.top)}, {int(r.n)} of {_seeds(seeds)})"
        for (i, layer), r in worst.head(4).iterrows()
    )
    more = f"; {len(worst) - 4} more in the range table" if len(worst) > 4 else ""
    return f"weights leave [-1, 1] only in {shown}{more}", frozenset(worst.index)


def _range_sentence(weights: pd.DataFrame, random: list[str]) -> list[tuple[str, str]]:
    lo, hi = _stat(weights, "min"), _stat(weights, "max")
    if lo.empty:
        return []
    both = lo.merge(hi, on=["init", "seed", "layer", "depth", "epoch"], suffixes=("_min", "_max"))
    both["value"] = np.maximum(both["value_min"].abs(), both["value_max"].abs())
    first, last = (d[d["init"].isin(random)] for d in _ends(both))
    if last.empty:
        return []
    seeds = int(last["seed"].nunique())
    after, where_after = _outside(last, seeds)
    if first["epoch"].iloc[0] == last["epoch"].max():
        return [(f"Range (random inits): {after}.", "range")]
    before, where_before = _outside(first, seeds)
    if where_after == where_before and where_after:
        top = first[first["value"] > 1.0]["value"].max()
        before = f"the same layers (largest |w| {_g(top)})"
    return [(f"Range (random inits): after training, {after}; at initialisation, {before}.", "range")]


def _std_sentence(weights: pd.DataFrame, random: list[str]) -> list[tuple[str, str]]:
    d = _stat(weights, "std")
    first, last = _ends(d[d["init"].isin(random)])
    if first.empty or first["epoch"].iloc[0] == last["epoch"].max():
        return []
    ratio = last.merge(first, on=["init", "seed", "layer", "depth"], suffixes=("", "_0"))
    ratio["value"] = ratio["value"] / ratio["value_0"] - 1.0
    change = _seed_means(ratio)
    grew = int((change > 0).sum())
    lo, hi = change.idxmin(), change.idxmax()
    return [
        (
            f"Weight std from initialisation to the end of training changed by {_pct(change[lo])} "
            f"({_label(lo[0])} {lo[1]}) to {_pct(change[hi])} ({_label(hi[0])} {hi[1]}); "
            f"it grew in {grew} of {len(change)} (init, layer) pairs (mean over seeds of each run's change).",
            "weights: std",
        )
    ]


def _shape_sentence(weights: pd.DataFrame, random: list[str]) -> list[tuple[str, str]]:
    kurt, near = _stat(weights, "kurtosis"), _stat(weights, "near_zero_rel_0.1")
    kurt = kurt[kurt["init"].isin(random)]
    if kurt.empty:
        return []
    first, last = _ends(kurt)
    k0, k1 = (_seed_means(x).groupby(level="init").median() for x in (first, last))
    moved = ", ".join(f"{_label(i)} {k0[i]:.2f} -> {k1[i]:.2f}" for i in random if i in k0)
    rows = [
        (
            f"Shape: excess kurtosis (0 for a Gaussian, -1.2 for a uniform; median over layers), "
            f"initialisation -> end: {moved}.",
            "weights: kurtosis",
        )
    ]
    near = _ends(near[near["init"].isin(random)])[1]
    if len(near):
        m = _seed_means(near)
        rows.append(
            (
                f"Near zero: after training, {100 * m.min():.1f} % to {100 * m.max():.1f} % of a layer's "
                f"weights lie within 0.1 std of 0 (a Gaussian has {100 * GAUSSIAN_NEAR_ZERO:.1f} %, a uniform "
                f"{100 * UNIFORM_NEAR_ZERO:.1f} %; least {_label(m.idxmin()[0])} {m.idxmin()[1]}, most "
                f"{_label(m.idxmax()[0])} {m.idxmax()[1]}).",
                "weights: near_zero_rel_0.1",
            )
        )
    return rows


def _constant_sentence(weights: pd.DataFrame, inits: list[str]) -> list[tuple[str, str]]:
    parts = []
    for init in (i for i in CONSTANT if i in inits):
        mean, std = (_ends(_stat(weights[weights["init"] == init], s))[1] for s in ("mean", "std"))
        if mean.empty:
            continue
        m, s = _seed_means(mean), _seed_means(std)
        if float(s.max()) == 0.0:
            parts.append(f"{init}: every weight still equals {_g(float(m.iloc[0]))} in every layer")
        else:
            parts.append(
                f"{init}: layer means {_g(m.min())} to {_g(m.max())}, std at most {_g(s.max())} "
                "(the weights of a layer move together)"
            )
    if not parts:
        return []
    return [("Constant initialisations after training: " + "; ".join(parts) + ".", "weights: mean, std")]


def at_a_glance(training: pd.DataFrame | None, weights: pd.DataFrame) -> pd.DataFrame:
    """Plain-words findings of the first variant: accuracy, range, std change, shape, near-zero
    mass, constant inits. Runs that diverged are left out (the last row names them)."""
    weights = _first_variant(weights)
    training = _first_variant(training) if training is not None else None
    if weights.empty:
        return pd.DataFrame(columns=GLANCE_COLUMNS)
    diverged = diverged_runs(training) if training is not None and len(training) else {}
    if diverged and training is not None:
        bad = training[training["statistic"] == "diverged"][RUN_DIMS].drop_duplicates()
        keep = weights.merge(bad, on=RUN_DIMS, how="left", indicator=True)["_merge"].eq("left_only").to_numpy()
        weights = weights[keep]
    inits = list(dict.fromkeys(weights["init"]))
    random = [i for i in inits if i not in CONSTANT]
    rows = [
        *_training_sentence(training, inits),
        *_range_sentence(weights, random),
        *_std_sentence(weights, random),
        *_shape_sentence(weights, random),
        *_constant_sentence(weights, inits),
    ]
    if diverged:
        named = ", ".join(f"{init} ({n} seed{'s' * (n != 1)})" for (_, init), n in sorted(diverged.items()))
        rows.append((f"Left out above: runs that diverged, {named}.", "training: diverged"))
    return pd.DataFrame(rows, columns=GLANCE_COLUMNS)
