"""A run's folder while it trains and when it is done: its members' state (``Member``), the
scheduled and best checkpoints written as training goes, resume cuts, and the finished run moved
into place (checkpoints with SHA256SUMS, ``best.json``, ``metrics.csv``, ``summary.json``)."""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from dnndist import best, integrity
from dnndist.checkpoints import BEST_FILE, checkpoint_bytes, load_checkpoint, st_bytes
from dnndist.io import atomic_path, write_bytes, write_json, write_text
from dnndist.settings import RunSettings

METRIC_COLUMNS = ["variant", "init", "seed", "epoch", "step", "split", "metric", "value"]


@dataclass
class Member:
    """One run of the stack: its settings and directories."""

    settings: RunSettings
    run_dir: Path
    state_dir: Path  # .resume/<config hash>
    best_loss: float | None = None  # the lowest finite validation loss so far (train.checkpoints: best)


def make_members(settings_list: Sequence[RunSettings], run_dirs: Sequence[str | Path]) -> list[Member]:
    members = []
    for s, d in zip(settings_list, run_dirs):
        d = Path(d)
        m = Member(s, d, d / ".resume" / s.config_hash)
        (m.state_dir / "metrics").mkdir(parents=True, exist_ok=True)
        (m.state_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        for stale in (d / ".resume").iterdir():
            if stale != m.state_dir:  # resume state of other settings is useless now
                shutil.rmtree(stale, ignore_errors=True)
        members.append(m)
    return members


def valid_loss(frame: pd.DataFrame) -> float | None:
    """The epoch's validation loss in a run's metric rows of one epoch (None if not evaluated)."""
    v = frame.loc[(frame["split"] == best.SPLIT) & (frame["metric"] == "loss") & frame["step"].isna(), "value"]
    return float(v.iloc[0]) if len(v) else None


def save_checkpoints(m: Member, net: nn.Module, epoch: int, frame: pd.DataFrame, diverged: bool, step: int) -> None:
    """The epoch's checkpoint where it is scheduled (or the run diverged), and ``best_NNNN`` where
    its validation loss is a new best (``train.checkpoints: [..., best]``; dnndist.best)."""
    scheduled = epoch in m.settings.checkpoint_epochs or diverged
    loss = valid_loss(frame)
    new_best = m.settings.train.keeps_best and loss is not None and best.improves(m.best_loss, loss)
    if not (scheduled or new_best):
        return
    blob = checkpoint_bytes(net, m.settings, epoch, diverged, step)
    if scheduled:
        write_bytes(m.state_dir / "checkpoints" / f"epoch_{epoch:04d}.safetensors", blob)
    if new_best:
        write_bytes(m.state_dir / "checkpoints" / f"best_{epoch:04d}.safetensors", blob)
        m.best_loss = loss


EPOCH_FILE = re.compile(r"^(?:epoch|best)_(\d+)\.")  # epoch_0003.csv, epoch_0003.safetensors, best_0003.safetensors


def drop_epochs_after(m: Member, epoch: int) -> None:
    """Delete a run's metrics and checkpoints of the epochs after ``epoch`` (-1: all). Temporary
    files of an interrupted atomic write (``.epoch_0003...tmp-...``) do not match; nothing reads them."""
    for sub in ("metrics", "checkpoints"):
        for f in (m.state_dir / sub).iterdir():
            found = EPOCH_FILE.match(f.name)
            if found and int(found[1]) > epoch:
                f.unlink()


def finish_run(m: Member, diverged: bool) -> dict[str, Any]:
    """Move a run's outputs into place from its resume directory and write its summary."""
    settings, state_dir, run_dir = m.settings, m.state_dir, m.run_dir
    run = settings.run
    frames = [pd.read_csv(f) for f in sorted((state_dir / "metrics").glob("epoch_*.csv"))]
    metrics = pd.concat(frames, ignore_index=True)
    metrics.insert(0, "seed", run.seed)
    metrics.insert(0, "init", run.init_name)
    metrics.insert(0, "variant", run.variant)
    metrics = metrics[METRIC_COLUMNS]
    last_epoch = int(metrics["epoch"].max())
    best_epoch = move_checkpoints(settings, state_dir, run_dir)
    write_text(run_dir / "metrics.csv", metrics.to_csv(index=False))
    epoch_rows = metrics[metrics["step"].isna()]
    final = {
        f"{r.split}_{r.metric}": float(r.value) for r in epoch_rows[epoch_rows["epoch"] == last_epoch].itertuples()
    }
    given = settings.given_weights
    summary = {
        "run": dataclasses.asdict(run),
        "status": "diverged" if diverged else "completed",
        "epochs_trained": last_epoch,
        "epochs": last_epoch if given else settings.train.epochs,
        "checkpoint_epochs": list(settings.checkpoint_epochs),
        "config_hash": settings.config_hash,
        "final": final,
    }
    if best_epoch is not None:
        summary["best_epoch"] = best_epoch
    if given:
        summary["weights"] = given
        summary["weights_sha256"] = integrity.sha256(given)
    if diverged:
        summary["diverged_step"] = int(metrics.loc[metrics["metric"] == "diverged", "step"].iloc[0])
    write_json(run_dir / "summary.json", summary)
    shutil.rmtree(run_dir / ".resume", ignore_errors=True)
    return summary


def move_checkpoints(settings: RunSettings, state_dir: Path, run_dir: Path) -> int | None:
    """The run's checkpoints into place; with ``best`` kept, also the best epoch's (as
    ``epoch_NNNN``, unless it is a scheduled one already) and ``best.json``. Returns the best epoch."""
    ckpts = {int(f.stem.split("_")[1]): f for f in (state_dir / "checkpoints").glob("epoch_*.safetensors")}
    bests = sorted((state_dir / "checkpoints").glob("best_*.safetensors"))
    with atomic_path(run_dir / "checkpoints") as tmp:
        tmp.mkdir()
        last = max(ckpts)
        for epoch in settings.checkpoint_epochs:
            if epoch in ckpts:
                shutil.copyfile(ckpts[epoch], tmp / f"epoch_{epoch:04d}.safetensors")
            else:  # a diverged run has no later checkpoints: its last state stands in, flagged diverged
                tensors, meta = load_checkpoint(ckpts[last])
                meta.update({"epoch": str(epoch), "diverged": "true", "trained_epochs": str(last)})
                (tmp / f"epoch_{epoch:04d}.safetensors").write_bytes(st_bytes(tensors, meta))
        best_epoch = place_best(bests[-1] if bests else None, tmp) if settings.train.keeps_best else None
        named = [*tmp.glob("epoch_*.safetensors"), *tmp.glob(BEST_FILE)]
        (tmp / integrity.SUMS).write_text(integrity.checksums_text(named))
    return best_epoch


def place_best(path: Path | None, tmp: Path) -> int | None:
    """The best checkpoint as ``epoch_NNNN`` (the same bytes a scheduled one of that epoch has)
    and ``best.json``: its epoch (null where no validation loss was ever finite), the split and
    the rule."""
    epoch = int(path.stem.split("_")[1]) if path is not None else None
    if path is not None and not (tmp / f"epoch_{epoch:04d}.safetensors").exists():
        shutil.copyfile(path, tmp / f"epoch_{epoch:04d}.safetensors")
    write_json(tmp / BEST_FILE, {"epoch": epoch, "rule": best.RULE, "split": best.SPLIT})
    return epoch
