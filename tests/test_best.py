"""The best-validation epoch: one rule (dnndist.best) for training and for the tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dnndist import best
from dnndist import config as dcfg

from .conftest import tiny_config


def test_the_first_of_the_lowest_finite_losses_wins():
    assert best.best_epoch([(0, 2.0), (1, 1.5), (2, 1.5), (3, 1.7)]) == (1, 1.5)  # ties: the first
    assert best.best_epoch([(0, math.nan), (1, math.inf), (2, 3.0)]) == (2, 3.0)  # non-finite never counts
    assert best.best_epoch([(0, math.nan)]) is None and best.best_epoch([]) is None
    assert best.improves(None, 1.0) and not best.improves(1.0, 1.0) and not best.improves(None, math.nan)


def test_best_epochs_agree_with_numpy_on_a_training_table():
    rng = np.random.default_rng(0)
    rows = [
        ("base", init, s, e, split, "loss", float(rng.normal(2, 1)))
        for init in ("a", "b")
        for s in range(3)
        for e in range(6)
        for split in ("valid", "test")
    ]
    df = pd.DataFrame(rows, columns=["variant", "init", "seed", "epoch", "split", "statistic", "value"])
    got = best.best_epochs(df)
    for (_v, i, s), e in got.items():
        run = df[(df["init"] == i) & (df["seed"] == s) & (df["split"] == "valid")]
        assert e == int(run["epoch"].to_numpy()[np.argmin(run["value"].to_numpy())])
    assert len(got) == 6


@pytest.mark.parametrize(
    "train,stats,message",
    [
        ({"epochs": 4, "checkpoints": [0, 2]}, {"claims_at": ["best"]}, "'best' needs 'best' in train.checkpoints"),
        ({"epochs": 4, "checkpoints": [0, 2]}, {"claims_at": [3]}, "epoch 3 is not a checkpoint"),
        ({"epochs": 4, "checkpoints": [0, "worst"]}, {}, "train.checkpoints"),
    ],
)
def test_stages_must_be_kept_checkpoints(tmp_path, train, stats, message):
    with pytest.raises(dcfg.ConfigError, match=message):
        dcfg.validate(tiny_config(tmp_path, train=train, stats=stats), check_paths=False)


def test_valid_stages_pass_and_best_stays_out_of_the_scheduled_epochs(tmp_path):
    cfg = dcfg.validate(
        tiny_config(tmp_path, train={"epochs": 4, "checkpoints": [2, "best"]}, stats={"claims_at": [2, "best"]}),
        check_paths=False,
    )
    assert dcfg.checkpoint_epochs(cfg["train"]) == [0, 2, 4]


def test_every_run_must_keep_the_stages_overrides_included(tmp_path):
    """A per-init override that drops a stage's checkpoint is refused at validation, naming the run,
    not at the tables step after all the training."""
    cfg = tiny_config(
        tmp_path,
        train={"epochs": 4, "checkpoints": [2, "best"]},
        stats={"claims_at": [2, "best"]},
        overrides={"xavier_uniform": {"train": {"checkpoints": [3, "best"]}}},
    )
    with pytest.raises(dcfg.ConfigError, match="epoch 2 is not a checkpoint .*xavier_uniform/seed0"):
        dcfg.validate(cfg, check_paths=False)
    cfg["stats"]["claims_at"] = [0]
    with pytest.raises(dcfg.ConfigError, match="claims_at"):  # epoch 0 (nothing trained) is no stage
        dcfg.validate(cfg, check_paths=False)
