"""The claims, ranges and depth trends at each stage of training (``stats.claims_at``: checkpoint
epochs and each run's best-validation epoch) and at the last epoch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from dnndist import DnndistError, best
from dnndist.tables.claims import claims
from dnndist.tables.describe import DEPTH_TREND_COLUMNS, RUN, depth_trend, range_table

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
