"""A run's stores as TensorBoard histograms, to browse a run beside the report.

``write_events(run_dir, logdir)`` writes one event file under ``logdir/<variant>/<init>/seed<seed>``
(so several runs exported to one logdir show as TensorBoard runs), with one step per checkpoint
epoch and these histogram tags:

- ``weights/<layer>``, ``biases/<layer>``: the layer's weight and bias (``weights.zarr``);
- ``features/<split>/<layer>/<kind>``: the streaming histogram of a layer's pre- or post-activation
  output over all inputs of a split (``features.zarr``: its bins, with the values below and above
  the histogram range as one bucket each), with the exact count, sum and sum of squares;
- ``gradients/weights/<layer>``, ``gradients/biases/<layer>`` (all gradient batches pooled),
  ``gradients/features/<layer>/<kind>``: where the gradients store holds them;
  ``emission/<layer>``, ``absorption/<layer>`` (over samples and channels) and ``loss/per_sample``.

Tensors of the weights and gradients stores are binned here like the report's weight histograms
(sqrt(n) equal bins from min to max, 10 to ``max_bins``). Needs the ``tensorboard`` package
(``pip install 'dnndist[tensorboard]'``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dnndist import DnndistError, dims
from dnndist.io import KINDS, atomic_path, open_store_lazily

log = logging.getLogger(__name__)
REQUIRED = {"weights": "diverged", "features": "hist", "gradients": "loss"}  # a variable each root has


@dataclass(frozen=True)
class Histogram:
    """What ``SummaryWriter.add_histogram_raw`` takes: ``bucket_limits`` are the buckets' upper edges."""

    min: float
    max: float
    num: float
    sum: float
    sum_squares: float
    bucket_limits: list[float]
    bucket_counts: list[float]


def values_histogram(x: Any, max_bins: int = 100) -> Histogram | None:
    """Histogram of the finite values of an array: sqrt(n) equal bins (10 to ``max_bins``) from its
    min to its max; a constant array is one bucket. None when no value is finite."""
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None
    lo, hi = float(x.min()), float(x.max())
    if hi > lo:
        counts, edges = np.histogram(x, bins=int(np.clip(np.sqrt(x.size), 10, max_bins)), range=(lo, hi))
        limits = edges[1:]
    else:
        counts, limits = np.array([x.size]), np.array([hi])
    return Histogram(lo, hi, float(x.size), float(x.sum()), float((x * x).sum()), limits.tolist(), counts.tolist())


def feature_histogram(d: Any) -> Histogram | None:
    """The stored histogram of one (epoch, layer, kind, split) cell of a features store (a loaded
    Dataset without other dims): its bins, and the under/overflow as a bucket below ``hist_lo`` and
    one up to ``vmax``. None for a cell without values (no post-activation after the classifier)."""
    n = float(d["n"])
    if not n > 0:
        return None
    counts = d["hist"].values.astype(np.float64)
    if "bin_hi" in d.coords:
        limits = d["bin_hi"].values.astype(np.float64)
    else:  # a store written before the edges were stored: the same np.linspace
        limits = np.linspace(float(d["hist_lo"]), float(d["hist_hi"]), counts.size + 1)[1:]
    under, over = float(d["underflow"]), float(d["overflow"])
    if under > 0:
        limits, counts = np.append(float(d["hist_lo"]), limits), np.append(under, counts)
    if over > 0:
        limits, counts = np.append(limits, float(d["vmax"])), np.append(counts, over)
    mu = float(d["mu"])
    return Histogram(
        float(d["vmin"]), float(d["vmax"]), n, n * mu, float(d["m2"]) + n * mu * mu, limits.tolist(), counts.tolist()
    )


Event = tuple[str, int, Histogram]  # (tag, step = checkpoint epoch, histogram)


def weight_events(groups: dict[str, Any], max_bins: int = 100) -> Iterator[Event]:
    """``weights/<layer>`` and ``biases/<layer>`` at every checkpoint epoch of a weights store's groups."""
    for layer, ds in groups.items():
        for epoch in ds[dims.EPOCH].values:
            for var, prefix in (("weight", "weights"), ("bias", "biases")):
                if var in ds:
                    h = values_histogram(ds[var].sel({dims.EPOCH: epoch}).values, max_bins)
                    if h is not None:
                        yield f"{prefix}/{layer}", int(epoch), h


def feature_events(root: Any) -> Iterator[Event]:
    """``features/<split>/<layer>/<kind>`` at every checkpoint epoch of a features store's root."""
    ds = root.squeeze([d for d in dims.RUN_DIMS if d in root.dims], drop=True)
    for epoch in ds[dims.EPOCH].values:
        cell = ds.sel({dims.EPOCH: epoch}).load()
        for split in cell[dims.SPLIT].values:
            for layer in cell[dims.LAYER].values:
                for kind in cell[dims.KIND].values:
                    h = feature_histogram(cell.sel({dims.SPLIT: split, dims.LAYER: layer, dims.KIND: kind}))
                    if h is not None:
                        yield f"features/{split}/{layer}/{kind}", int(epoch), h


def gradient_events(root: Any, groups: dict[str, Any], max_bins: int = 100) -> Iterator[Event]:
    """Per-sample loss, parameter and feature gradients, emission and absorption at every
    checkpoint epoch of a gradients store (what it holds of them)."""
    tags = {"weight_grad": "gradients/weights", "bias_grad": "gradients/biases", "em": "emission", "ab": "absorption"}
    for epoch in root[dims.EPOCH].values:
        at = {dims.EPOCH: epoch}
        h = values_histogram(root["loss"].sel(at).values, max_bins)
        if h is not None:
            yield "loss/per_sample", int(epoch), h
        for layer, ds in groups.items():
            for var in ds.data_vars:
                if var in tags:
                    tag = f"{tags[var]}/{layer}"
                elif str(var).startswith("grad_"):
                    tag = f"gradients/features/{layer}/{str(var).removeprefix('grad_')}"
                else:
                    continue
                h = values_histogram(ds[var].sel(at).values, max_bins)
                if h is not None:
                    yield tag, int(epoch), h


def open_store(run_dir: str | Path, kind: str) -> tuple[Any, dict[str, Any]]:
    """(root, {layer: group}) of one of a run's stores, lazily; a missing or unreadable store is a
    one-line DnndistError."""
    path = Path(run_dir) / f"{kind}.zarr"
    if not (path / "zarr.json").is_file():
        raise DnndistError(f"{path}: no {kind} store (no zarr.json); run the extraction stage for this run first")
    try:
        root = open_store_lazily(path)
        groups = {}
        if kind != "features":  # the features store's groups hold raw samples, not exported
            groups = {str(layer): open_store_lazily(path, group=str(layer)) for layer in root[dims.LAYER].values}
    except Exception as exc:  # noqa: BLE001 - zarr/xarray raise many kinds; the first line says which
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise DnndistError(f"{path}: not a readable {kind} store ({type(exc).__name__}: {first})") from None
    if REQUIRED[kind] not in root.variables:
        raise DnndistError(f"{path}: not a dnndist {kind} store (no {REQUIRED[kind]!r} variable)")
    return root, groups


def run_events(run_dir: str | Path, kinds: Sequence[str] = KINDS, max_bins: int = 100) -> Iterator[Event]:
    """Every histogram of a run's stores of the given kinds; the stores are opened here, so a
    missing or bad one fails before the first histogram is asked for."""
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        raise DnndistError(f"kinds must be among {list(KINDS)}, got {bad}")
    stores = {kind: open_store(run_dir, kind) for kind in kinds}
    return _events(stores, max_bins)


def _events(stores: dict[str, tuple[Any, dict[str, Any]]], max_bins: int) -> Iterator[Event]:
    for kind, (root, groups) in stores.items():
        if kind == "weights":
            yield from weight_events(groups, max_bins)
        elif kind == "features":
            yield from feature_events(root)
        else:
            yield from gradient_events(root, groups, max_bins)


def run_name(run_dir: str | Path, kinds: Sequence[str]) -> Path:
    """``<variant>/<init>/seed<seed>`` of the run whose stores are in ``run_dir`` (from the first store)."""
    root, _ = open_store(run_dir, kinds[0])
    variant, init, seed = (str(root[d].values.ravel()[0]) for d in dims.RUN_DIMS)
    return Path(variant) / init / f"seed{seed}"


def write_events(run_dir: str | Path, logdir: str | Path, kinds: Sequence[str] = KINDS, max_bins: int = 100) -> Path:
    """Write a run's histograms as a TensorBoard event file under ``logdir/<variant>/<init>/seed<seed>``
    (replacing an earlier export of the run, atomically); return that directory."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DnndistError(
            "the TensorBoard export needs the tensorboard package: pip install 'dnndist[tensorboard]'"
        ) from None
    kinds = list(kinds)
    if not kinds:
        raise DnndistError("no store kinds to export")
    out = Path(logdir) / run_name(run_dir, kinds)
    events = run_events(run_dir, kinds, max_bins)
    n = 0
    with atomic_path(out) as tmp:
        writer = SummaryWriter(log_dir=str(tmp))
        try:
            for tag, step, h in events:
                writer.add_histogram_raw(tag, global_step=step, **vars(h))
                n += 1
        except (DnndistError, OSError):
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged chunk: zarr/numcodecs raise many kinds
            first = next((line for line in str(exc).splitlines() if line.strip()), "")
            raise DnndistError(
                f"{run_dir}: a store could not be read ({type(exc).__name__}: {first}); "
                "delete the damaged store and rerun the extraction stage"
            ) from None
        finally:
            writer.close()
    log.info("tensorboard: %d histograms of %s -> %s", n, run_dir, out)
    return out
