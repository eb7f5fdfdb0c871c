"""The training cache of stacked runs: a run's outputs stored under a key of its own settings and
the training code, so that no other run can change them (no torch here).

A stacked job trains several runs as one wide model, and float32 kernels round differently for
another width: a run trained beside other runs is equal to itself trained alone only to float
tolerance. With ``stacked: true`` the workflow therefore trains into ``<results>/cache/train/<key>/``
(``checkpoints/``, ``metrics.csv``, ``summary.json``), where the key is a digest of the run's
resolved settings and of the source of every dnndist module training runs (``run_key``), and
restores each run's folder from its entry (``restore``: hard links where the file system allows,
copies elsewhere, after checking every checkpoint against its SHA256SUMS). Stacks are formed from
the runs whose entry is not complete (``is_complete``), so an override of one init, an added seed
or a removed init leaves every other run's entry, and with it its bytes, as they were; a setting
changed back finds its old entry and trains nothing. Deleting the cache costs a retraining, nothing
else.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dnndist import DnndistError, integrity
from dnndist.io import atomic_path
from dnndist.provenance import config_hash

ENTRY_FILES = ("metrics.csv", "summary.json")  # beside checkpoints/; summary.json is written last


def run_key(settings: Mapping[str, Any], code: str) -> str:
    """The cache key of a run: its resolved settings (dnndist.config.run_settings, as the JSON
    the training job reads), ``code``, the digest of the training modules' source, and the
    content of the given weights it analyses instead of training (model.weights), if any."""
    weights = settings.get("model", {}).get("weights")
    content = integrity.sha256(weights) if weights and os.path.isfile(weights) else None
    return config_hash({"settings": settings, "training_code": code, "weights_sha256": content})


def is_complete(entry: str | os.PathLike[str]) -> bool:
    """A finished entry: the training job writes its summary.json last (after the checkpoints
    and the metrics), so an entry of a killed job has none and is trained again (resumed)."""
    entry = Path(entry)
    return (entry / "checkpoints" / integrity.SUMS).is_file() and all((entry / f).is_file() for f in ENTRY_FILES)


def _checkpoint_files(entry: Path) -> list[str]:
    """The files of an entry's checkpoints (not Snakemake's markers), SHA256SUMS last."""
    names = sorted(p.name for p in (entry / "checkpoints").iterdir() if p.is_file() and not p.name.startswith("."))
    return [n for n in names if n != integrity.SUMS] + [integrity.SUMS]


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no second copy of the bytes; every dnndist writer replaces a file rather than
    writing into it, so a link cannot be changed through the run's folder), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def restore(entry: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> None:
    """A run's outputs from its cache entry: ``checkpoints/`` (each file checked against the
    entry's SHA256SUMS first), ``metrics.csv`` and then ``summary.json``, each put in place whole."""
    entry, run_dir = Path(entry), Path(run_dir)
    if not is_complete(entry):
        raise DnndistError(f"{entry}: not a complete training cache entry (no summary.json); rerun the workflow")
    names = _checkpoint_files(entry)
    try:
        integrity.verify_checksums(entry / "checkpoints", names[:-1])
    except integrity.IntegrityError as exc:
        raise DnndistError(f"training cache entry damaged: {exc} (delete {entry} to retrain the run)") from None
    with atomic_path(run_dir / "checkpoints") as tmp:
        tmp.mkdir()
        for name in names:
            _link_or_copy(entry / "checkpoints" / name, tmp / name)
    for name in ENTRY_FILES:
        with atomic_path(run_dir / name) as tmp:
            _link_or_copy(entry / name, tmp)
