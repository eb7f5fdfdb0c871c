"""Atomic file and directory writes: a killed job never leaves something that looks complete."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dnndist import dims, units

KINDS = ("weights", "features", "gradients")
# the layout of the extracted stores (their variables' names and meaning): the extract rule passes it as
# a param, so raising it when a store's variables change makes Snakemake re-extract stores written before
STORE_LAYOUT = 2  # 2: features n/mu/vmin/vmax (were count/mean/min/max), derived moments, bin edges, units


def result_stores(results_dir: str | os.PathLike[str], kind: str) -> list[Path]:
    """The extracted stores of one kind under an experiment's results directory (complete ones only)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return sorted(Path(results_dir).glob(f"runs/*/*/seed*/{kind}.zarr"))


def open_results(results_dir: str | os.PathLike[str], kind: str, group: str | None = None) -> Any:
    """All runs' stores of one kind, combined lazily (dask-backed) along variant, init, seed, epoch.

    ``group`` selects a layer group (e.g. "conv1"); None opens the root dataset. A store attribute
    that differs between runs (a layer's ``init_std``, ``gain``; ``created``, ``config_hash``)
    becomes a coordinate over (variant, init, seed); attributes all runs share stay attributes.
    """
    import xarray as xr

    stores = result_stores(results_dir, kind)
    if not stores:
        raise FileNotFoundError(f"no {kind}.zarr stores under {results_dir}/runs; run the extraction stage")
    parts = per_run_attrs([open_store_lazily(p, group) for p in stores])
    return xr.combine_by_coords(parts, combine_attrs="drop_conflicts", join="outer")


def per_run_attrs(parts: list[Any]) -> list[Any]:
    """The datasets of single runs (run dims of length 1) with each scalar attribute whose value
    differs between them moved into a coordinate over the run dims (NaN or "" where a run lacks it),
    so combining them keeps it instead of dropping the conflict."""
    import numpy as np

    from dnndist import dims

    reserved = set(dims.ALL).union(*(set(p.variables) for p in parts))
    keys = sorted({k for p in parts for k, v in p.attrs.items() if isinstance(v, str | int | float)} - reserved)
    varying = [k for k in keys if len({repr(p.attrs.get(k)) for p in parts}) > 1]
    if not varying or not all(set(dims.RUN_DIMS) <= set(p.dims) for p in parts):
        return parts
    numeric = {
        k: all(isinstance(p.attrs[k], int | float) and not isinstance(p.attrs[k], bool) for p in parts if k in p.attrs)
        for k in varying
    }
    out = []
    for p in parts:
        coords = {}
        for k in varying:
            value = p.attrs.get(k, np.nan if numeric[k] else "")
            attrs = {"long_name": f"{k.replace('_', ' ')} (store attribute of the run)"}
            if numeric[k]:
                attrs["units"] = ATTR_UNITS.get(k, units.DIMENSIONLESS)
            coords[k] = (dims.RUN_DIMS, np.full((1, 1, 1), value, dtype=float if numeric[k] else object), attrs)
        run = p.assign_coords(coords)
        run.attrs = {k: v for k, v in p.attrs.items() if k not in varying}
        out.append(run)
    return out


ATTR_UNITS = {  # units of the numeric store attributes that can differ between runs (the rest: "1")
    "init_std": units.WEIGHT,
    "init_bound": units.WEIGHT,
    "init_mean": units.WEIGHT,
    "bias_init_std": units.ACTIVATION,
    "bias_init_bound": units.ACTIVATION,
    "fan_in": units.COUNT,
    "fan_out": units.COUNT,
}


# statistics whose usual names are xarray Dataset methods (ds.mean is the method, not the variable):
# their names as Dataset variables, so attribute access works in a notebook (ds.m2 / ds.n)
DATASET_NAMES = {"count": "n", "mean": "mu", "min": "vmin", "max": "vmax", "std": "stdev", "var": "variance"}
# the features store's statistics as named before they were renamed
LEGACY_FEATURE_NAMES = {k: DATASET_NAMES[k] for k in ("count", "mean", "min", "max")}


def open_store_lazily(path: str | os.PathLike[str], group: str | None = None, dask: bool = True) -> Any:
    """One zarr store as a lazy Dataset (dask-backed; ``dask=False``: lazily indexed, a variable
    read with all its chunks at once when it is used, which for one run's small arrays costs less
    than dask's task per chunk): by its consolidated metadata (one read), or, for a
    store written before dnndist consolidated them, by listing it (``import dnndist`` silences
    zarr's warning about Snakemake's marker file in a directory output). A features store written
    before its statistics were renamed gets the current names (``LEGACY_FEATURE_NAMES``)."""
    import xarray as xr

    chunks = {} if dask else {"chunks": None}
    try:
        ds = xr.open_zarr(path, group=group, consolidated=True, **chunks)
    except (KeyError, ValueError, FileNotFoundError):
        ds = xr.open_zarr(path, group=group, consolidated=False, **chunks)
    if "m2" in ds.data_vars:
        ds = ds.rename({k: v for k, v in LEGACY_FEATURE_NAMES.items() if k in ds.data_vars})
    return ds


def layer_groups(path: str | os.PathLike[str], having: str | None = None) -> list[str]:
    """The layer groups of an extracted store in depth order (its ``layer`` coordinate), from
    zarr's metadata without opening the root as a Dataset; ``having``: only the groups that hold
    this array (``em``: the conv layers of a gradients store)."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    names = [str(v) for v in root[dims.LAYER][...]]
    return [name for name in names if having is None or having in root[name]]


def _tmp_sibling(path: Path) -> Path:
    """``.<name>.tmp-<pid>-<random>``: the writer's pid tells a later writer whether it is gone."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove_stale_siblings(path: Path) -> None:
    """Remove the temporaries of ``path`` that a killed writer left (its process is gone, or
    it predates the pid in the name): a kill -9 mid-write left them for ever."""
    for old in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        pid = old.name.rsplit(".tmp-", 1)[1].split("-")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue  # another process writes it now
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path; on success move it to ``path`` (file or directory).

    On any error the temporary is removed and ``path`` is left untouched; temporaries of
    ``path`` left by a killed writer are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(path)
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
