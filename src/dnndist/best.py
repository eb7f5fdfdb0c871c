"""The best-validation epoch: one rule for the training stage (which epoch's weights to keep as
the ``best`` checkpoint, ``train.checkpoints: [..., best]``) and for the tables stage (at which
epoch the claims "at the best-validation epoch" are read, ``stats.claims_at``). Torch-free.

The rule: the epoch (0 = before training) with the lowest loss on the ``valid`` split; the
first of tied epochs; a non-finite loss never counts. With ``data.valid_split: test`` (the
paper's split) the valid split is the test set, so the epoch is chosen on the data it is then
reported on: an optimistic choice, as early stopping on the test set always is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings and config import this module: it stays light
    import pandas as pd

BEST = "best"  # the word for it in train.checkpoints and stats.claims_at
SPLIT = "valid"
RULE = (
    "the epoch (0 = before training) with the lowest validation loss, the first of ties; non-finite losses never count"
)


def improves(best_loss: float | None, loss: float) -> bool:
    """Whether ``loss`` makes a new best after ``best_loss`` (None: nothing finite seen yet)."""
    return math.isfinite(loss) and (best_loss is None or loss < best_loss)


def best_epoch(epoch_losses: Iterable[tuple[int, float]]) -> tuple[int, float] | None:
    """(epoch, loss) of the best epoch among (epoch, validation loss) pairs in epoch order, or None."""
    best: tuple[int, float] | None = None
    for epoch, loss in epoch_losses:
        if improves(best[1] if best else None, float(loss)):
            best = (int(epoch), float(loss))
    return best


def best_epochs(training: pd.DataFrame) -> dict[tuple[str, str, int], int]:
    """(variant, init, seed) -> the best epoch, from the tidy training table (its epoch rows of
    the valid split's loss), for every run that has a finite validation loss."""
    d = training[(training["split"] == SPLIT) & (training["statistic"] == "loss")].sort_values("epoch", kind="stable")
    out = {}
    for (variant, init, seed), run in d.groupby(["variant", "init", "seed"], sort=True):
        found = best_epoch(zip(run["epoch"], run["value"]))
        if found is not None:
            out[(str(variant), str(init), int(seed))] = found[0]
    return out
