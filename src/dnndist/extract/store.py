"""What every extractor shares: the checkpoints it reads, the model it builds, and the zarr v3 stores it writes (atomically, every array checksummed)."""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from dnndist import (
    DnndistError,
    checkpoints,
    conventions,
    data,
    dims,
    integrity,
    models,
    units,
)
from dnndist.io import atomic_path
from dnndist.provenance import attrs as provenance_attrs
from dnndist.settings import Origin, RunId, RunSettings

log = logging.getLogger(__name__)
SPLIT_ORDER = ("train", "valid", "random", "test")  # a split's seed offset; fixed forever
RUN_CHUNKED = set(dims.RUN_DIMS) | {dims.EPOCH, dims.SPLIT, dims.BATCH}
WHOLE_BYTES = 1 << 20  # an array of at most this many bytes (a run's) is one chunk: read in one go
TABLE_UNITS = {  # the weights store's per-layer table
    "fan_in": units.COUNT,
    "fan_out": units.COUNT,
    "init_std": units.WEIGHT,
    "init_bound": units.WEIGHT,
    "bias_init_std": units.ACTIVATION,
    "bias_init_bound": units.ACTIVATION,
}
NORM_UNITS = {  # a batch norm's parameters: its output is the layer's pre-activation
    "weight": units.ACTIVATION,  # scales the normalised (unitless) value into the layer's output
    "bias": units.ACTIVATION,
    "running_mean": units.ACTIVATION,
    "running_var": units.power(units.ACTIVATION, 2),
}
PARAM_GRADIENT_UNITS = f"{units.WEIGHT_GRADIENT} (weight) or {units.ACTIVATION_GRADIENT} (bias)"


# --------------------------------------------------------------------------- common
def checkpoint_files(ckpt_dir: str | Path, epochs: list[int]) -> dict[int, Path]:
    ckpt_dir = Path(ckpt_dir)
    files = {e: ckpt_dir / f"epoch_{e:04d}.safetensors" for e in epochs}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DnndistError(f"missing checkpoint(s) {missing}; rerun the training stage")
    integrity.verify_checksums(ckpt_dir, [p.name for p in files.values()])
    return files


def best_epoch_of(settings: RunSettings, ckpt_dir: str | Path) -> int | None:
    """The run's best-validation epoch (``best.json`` of its checkpoints), where it keeps one."""
    if not settings.train.keeps_best or settings.given_weights:
        return None
    path = Path(ckpt_dir) / checkpoints.BEST_FILE
    if not path.is_file():
        raise DnndistError(f"{path} is missing (train.checkpoints keeps 'best'); rerun the training stage")
    integrity.verify_checksums(Path(ckpt_dir), [path.name])
    try:
        epoch = json.loads(path.read_text())["epoch"]
        return None if epoch is None else int(epoch)  # None: no validation loss was ever finite
    except (ValueError, KeyError, TypeError) as exc:
        raise DnndistError(f"{path}: not a best-epoch record ({type(exc).__name__}: {exc})") from None


def extract_epochs(settings: RunSettings, ckpt_dir: str | Path) -> tuple[list[int], dict[str, int]]:
    """The epochs extracted (the scheduled checkpoints and the best-validation epoch, where kept)
    and the stores' attribute ``best_epoch`` (where there is one)."""
    best = best_epoch_of(settings, ckpt_dir)
    epochs = sorted(set(settings.checkpoint_epochs) | ({best} if best is not None else set()))
    return epochs, ({} if best is None else {"best_epoch": best})


def build_model(settings: RunSettings, info: data.StoreInfo) -> models.Net:
    model = models.build(settings.model, info.channels, len(info.classes), info.image_size)
    models.check_head(model, len(info.classes), settings.given_weights or "model")
    return model


def load_weights(model: torch.nn.Module, path: Path) -> dict[str, str]:
    tensors, meta = checkpoints.load_checkpoint(path)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise DnndistError(f"{path} does not fit the configured model: {exc}") from None
    return meta


def finish(ds: xr.Dataset, run: RunId) -> xr.Dataset:
    ds = ds.expand_dims({dims.VARIANT: [run.variant], dims.INIT: [run.init_name], dims.SEED: [run.seed]})
    # strings as variable-length (object) arrays: zarr v3 has no stable fixed-width string type
    ds = ds.assign_coords({k: c.astype(object) for k, c in ds.coords.items() if c.dtype.kind == "U"})
    named = [k for k in ds.indexes if k in dims.LONG_NAMES]
    ds = ds.assign_coords(
        {k: ds[k].assign_attrs(long_name=dims.LONG_NAMES[k], units=units.DIMENSIONLESS) for k in named}
    )
    dims.check(ds.dims, "extracted dataset")
    return ds.transpose(*dims.RUN_DIMS, ...)


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Run dims, epoch, split and batch chunked by 1 and tensor dims whole (data variables and
    coordinates over several dims, such as the histogram's bin edges); an array of at most
    WHOLE_BYTES (the per-layer statistics of a features store, a conv layer's weights at every
    epoch) is one chunk, since each chunk costs a file and a read (the run dims are 1 either way)."""
    arrays = {**ds.data_vars, **{k: c for k, c in ds.coords.items() if c.ndim > 1}}
    return {name: {"chunks": chunk_shape(var)} for name, var in arrays.items()}


def chunk_shape(var: xr.DataArray) -> tuple[int, ...]:
    """One array's chunk shape (``_encoding``): whole when at most WHOLE_BYTES, else 1 along the
    run dims, epoch, split and batch."""
    if var.nbytes <= WHOLE_BYTES:
        return tuple(max(1, n) for n in var.shape)
    return tuple(1 if d in RUN_CHUNKED else max(1, n) for d, n in zip(var.dims, var.shape))


def _to_zarr(ds: xr.Dataset, path: Path, encoding: dict[str, dict[str, Any]] | None = None, **kwargs: Any) -> Any:
    """Write (part of) a store: zarr v3, every array checksummed (coordinates too) and every chunk
    written (integrity). Arrays already in the group (mode "a") keep what they were written with."""
    base = encoding or _encoding(ds)
    existing = _array_names(path, kwargs.get("group")) if kwargs.get("mode") == "a" else set()
    names = [name for name in (*ds.data_vars, *ds.coords) if name not in existing]
    enc = {name: {**base.get(name, {}), **integrity.checksummed()} for name in names}
    return ds.to_zarr(path, zarr_format=3, consolidated=False, write_empty_chunks=True, encoding=enc, **kwargs)


def _array_names(path: Path, group: str | None) -> set[str]:
    """The arrays already in a group of a store being written (none if it does not exist yet)."""
    import zarr

    try:
        return {name for name, _ in zarr.open_group(str(path), path=group or "", mode="r").arrays()}
    except (FileNotFoundError, KeyError):  # zarr's GroupNotFoundError is a FileNotFoundError
        return set()


def write_store(path: str | Path, root: xr.Dataset, groups: Mapping[str, xr.Dataset], attrs: Mapping[str, str]) -> Path:
    """Write a root dataset and its groups as one zarr v3 store, atomically."""
    with atomic_path(path) as tmp:
        root = root.assign_attrs(**attrs)
        _to_zarr(root, tmp, mode="w")
        for name, ds in groups.items():
            _to_zarr(ds, tmp, group=name, mode="w")
        integrity.consolidate(tmp)  # one metadata read for notebooks (xr.open_zarr without warnings)
    return Path(path)


def store_attrs(origin: Origin, kind: str, device: torch.device) -> dict[str, str]:
    run, given = origin.run, origin.model.weights
    extra = {"gain_convention": conventions.describe(origin.init_scheme.gain)}
    if given:  # experiment 2: which weights were analysed
        extra = {"weights": given, "weights_sha256": integrity.sha256(given)}
    return provenance_attrs(
        origin.config_hash,
        kind=kind,
        device=str(device),
        variant=run.variant,
        init=run.init_name,
        seed=run.seed,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **extra,
    )


def layer_coords(specs: list[models.LayerSpec]) -> dict[str, Any]:
    depth = {"long_name": "position of the layer among the weight layers (1: first)", "units": units.DIMENSIONLESS}
    return {dims.LAYER: [s.name for s in specs], "depth": (dims.LAYER, [s.depth for s in specs], depth)}


def _weight_dims(kind: str) -> tuple[str, ...]:
    return dims.CONV_WEIGHT_DIMS if kind == "conv" else dims.LINEAR_WEIGHT_DIMS


def _out_dim(kind: str) -> str:
    return dims.OUT_CHANNEL if kind == "conv" else dims.OUT_FEATURE
