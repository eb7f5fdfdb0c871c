"""Atomic file and directory writes: a killed job never leaves something that looks complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

KINDS = ("weights", "features", "gradients")


def result_stores(results_dir: str | os.PathLike[str], kind: str) -> list[Path]:
    """The extracted stores of one kind under an experiment's results directory (complete ones only)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return sorted(Path(results_dir).glob(f"runs/*/*/seed*/{kind}.zarr"))


def open_results(results_dir: str | os.PathLike[str], kind: str, group: str | None = None) -> Any:
    """All runs' stores of one kind, combined lazily (dask-backed) along variant, init, seed, epoch.

    ``group`` selects a layer group (e.g. "conv1"); None opens the root dataset.
    """
    import xarray as xr

    stores = result_stores(results_dir, kind)
    if not stores:
        raise FileNotFoundError(f"no {kind}.zarr stores under {results_dir}/runs; run the extraction stage")
    parts = [open_store_lazily(p, group) for p in stores]
    return xr.combine_by_coords(parts, combine_attrs="drop_conflicts", join="outer")


def open_store_lazily(path: str | os.PathLike[str], group: str | None = None) -> Any:
    """One zarr store as a lazy Dataset: by its consolidated metadata (one read), or, for a
    store written before dnndist consolidated them, by listing it (without the warnings that
    Snakemake's marker file in a directory output would cause)."""
    import xarray as xr

    try:
        return xr.open_zarr(path, group=group, consolidated=True)
    except (KeyError, ValueError, FileNotFoundError):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp is not recognized")
            return xr.open_zarr(path, group=group, consolidated=False)


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path; on success move it to ``path`` (file or directory).

    On any error the temporary is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
