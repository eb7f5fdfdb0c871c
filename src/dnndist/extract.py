"""Extraction stage: a run's checkpoints -> three zarr-backed xarray datasets.

Each store has the run dimensions (variant, init, seed; length 1 here) and ``epoch``, so
the stores of all runs combine lazily into one dataset per kind (``dnndist.io.open_results``).
Every store is written to a temporary path and renamed: a killed job leaves nothing
that looks complete.

- ``weights.zarr``: per layer group (conv1, ..., fc2) the ``weight`` and ``bias`` at every
  checkpoint epoch with named tensor dims, plus fan_in/fan_out and the init's theoretical
  std and bound; the root holds per-layer tables and the ``diverged`` flag.
- ``features.zarr``: root: exact streaming statistics (``n``, ``mu``, central moment sums
  m2..m4, ``vmin``, ``vmax``, the derived ``variance``, ``stdev``, ``skewness``, ``kurtosis``
  (excess), a fixed-bin histogram ``hist`` with its edges ``bin_lo``/``bin_hi`` and
  under/overflow; ``dnndist.streaming``) of every
  analysed layer's pre- and post-activation output over all inputs of each split (train, valid, random);
  per layer group: raw activations of a seeded sample of inputs (the same for all runs).
- ``gradients.zarr``: over seeded labelled batches, per-sample loss, parameter gradients
  (and per-batch norms), gradients w.r.t. each analysed feature map, and emission ``em``
  (sample, out_channel) / absorption ``ab`` (sample, in_channel) of every conv layer.

Gradients are of the per-sample cross-entropy (model in eval mode, so samples are
independent); parameter gradients are divided by the batch size, i.e. those of the
mean loss that training uses.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from dnndist import (
    DnndistError,
    checkpoints,
    conventions,
    data,
    dims,
    inits,
    integrity,
    models,
    moments,
    streaming,
    units,
)
from dnndist.gradients import conv_geometry, emission_absorption
from dnndist.io import atomic_path
from dnndist.provenance import attrs as provenance_attrs
from dnndist.settings import ExtractSection, ExtractSettings, InputSettings, Origin, RandomInputs, RunId, RunSettings

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


def _finish(ds: xr.Dataset, run: RunId) -> xr.Dataset:
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
    return {name: {"chunks": _chunks(var)} for name, var in arrays.items()}


def _chunks(var: xr.DataArray) -> tuple[int, ...]:
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


def _layer_coords(specs: list[models.LayerSpec]) -> dict[str, Any]:
    depth = {"long_name": "position of the layer among the weight layers (1: first)", "units": units.DIMENSIONLESS}
    return {dims.LAYER: [s.name for s in specs], "depth": (dims.LAYER, [s.depth for s in specs], depth)}


def _weight_dims(kind: str) -> tuple[str, ...]:
    return dims.CONV_WEIGHT_DIMS if kind == "conv" else dims.LINEAR_WEIGHT_DIMS


def _out_dim(kind: str) -> str:
    return dims.OUT_CHANNEL if kind == "conv" else dims.OUT_FEATURE


# --------------------------------------------------------------------------- weights
WEIGHT_TABLE = ("fan_in", "fan_out", "init_std", "init_bound", "bias_init_std", "bias_init_bound")


def extract_weights(settings: RunSettings, ckpt_dir: str | Path, store: str | Path, out: str | Path) -> Path:
    info = data.store_info(store)
    model = build_model(settings, info)
    epochs, best = extract_epochs(settings, ckpt_dir)
    files = checkpoint_files(ckpt_dir, epochs)
    states, diverged = [], []
    for e in epochs:
        meta = load_weights(model, files[e])
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        diverged.append(meta.get("diverged") == "true")
    root, groups = weight_groups(settings.origin, epochs, model.layer_specs, states, diverged)
    log.info(
        "weights: %d layers x %d checkpoints (epochs %s)%s -> %s",
        len(groups),
        len(epochs),
        epochs,
        f", diverged at {[e for e, d in zip(epochs, diverged) if d]}" if any(diverged) else "",
        out,
    )
    attrs = {**store_attrs(settings.origin, "weights", torch.device("cpu")), **best}
    return write_store(out, root, groups, attrs)


def weight_groups(
    origin: Origin,
    epochs: list[int],
    specs: list[models.LayerSpec],
    states: list[Mapping[str, torch.Tensor]],
    diverged: list[bool],
    reference: str | None = None,
) -> tuple[xr.Dataset, dict[str, xr.Dataset]]:
    """The content of a weights store, in memory: (root, {layer: group}) from one state dict per
    checkpoint epoch (``epochs``; CPU tensors keyed like ``model.state_dict()``).

    ``origin`` supplies the run coordinates, the init whose theoretical std and bound are recorded
    (``run.init_name``, or ``reference`` where the weights' own init is not known, and the init
    scheme's gain and bias) and the model's activation (for kaiming gains). Used by the extraction
    stage and by ``dnndist.analyze``."""
    reference = reference or origin.run.init_name
    gain = inits.gain_for(reference, origin.init_scheme.gain, origin.model)
    groups, table = {}, {k: [] for k in WEIGHT_TABLE}
    for spec in specs:
        layer_attrs = _layer_attrs(origin, spec, tuple(states[0][f"{spec.name}.weight"].shape), gain, reference)
        for k in table:
            table[k].append(layer_attrs[k])
        ds = xr.Dataset(_weight_variables(spec, states, layer_attrs), coords={dims.EPOCH: epochs}, attrs=layer_attrs)
        groups[spec.name] = _finish(ds, origin.run)
    return _finish(_weight_root(epochs, specs, diverged, table), origin.run), groups


def _layer_attrs(
    origin: Origin, spec: models.LayerSpec, shape: tuple[int, ...], gain: float, init: str
) -> dict[str, Any]:
    """A weight layer's attributes: where it is, its fans and the theoretical moments of ``init``."""
    fan_in, fan_out = inits.fans(shape)
    th, bth = inits.theory(init, shape, gain), inits.bias_theory(init, origin.init_scheme.bias, fan_in)
    return {
        "layer": spec.name,
        "depth": spec.depth,
        "layer_kind": spec.kind,
        "analysed": int(spec.analysed),
        "fan_in": fan_in,
        "fan_out": fan_out,
        "init": init,
        "gain": gain,
        "gain_convention": conventions.describe(origin.init_scheme.gain),
        "init_std": th["std"],
        "init_bound": th["bound"],
        "init_mean": th["mean"],
        "bias_init_std": bth["std"],
        "bias_init_bound": bth["bound"],
    }


def _weight_variables(
    spec: models.LayerSpec, states: list[Mapping[str, torch.Tensor]], layer_attrs: Mapping[str, Any]
) -> dict[str, tuple]:
    """A layer group's variables: weight, bias (where it has one; ResNet convs have none) and the
    parameters of the batch norm after a conv (where there is one), at every checkpoint epoch."""
    w = torch.stack([s[f"{spec.name}.weight"] for s in states]).numpy()
    out_dim = _out_dim(spec.kind)
    variables = {
        "weight": (
            (dims.EPOCH, *_weight_dims(spec.kind)),
            w,
            {"long_name": f"{spec.name} weight", "units": units.WEIGHT, **layer_attrs},
        ),
    }
    if f"{spec.name}.bias" in states[0]:
        variables["bias"] = (
            (dims.EPOCH, out_dim),
            torch.stack([s[f"{spec.name}.bias"] for s in states]).numpy(),
            {"long_name": f"{spec.name} bias", "units": units.ACTIVATION, **layer_attrs},
        )
    norm = spec.pre  # the batch norm after the conv, where there is one
    if spec.kind == "conv" and norm != spec.name and f"{norm}.weight" in states[0]:
        for p in ("weight", "bias", "running_mean", "running_var"):
            arr = torch.stack([s[f"{norm}.{p}"] for s in states]).numpy()
            variables[f"norm_{p}"] = (
                (dims.EPOCH, out_dim),
                arr,
                {"long_name": f"{norm} {p.replace('_', ' ')}", "units": NORM_UNITS[p]},
            )
    return variables


def _weight_root(
    epochs: list[int], specs: list[models.LayerSpec], diverged: list[bool], table: Mapping[str, list]
) -> xr.Dataset:
    """The weights store's root: the diverged flag per epoch and the per-layer table."""
    return xr.Dataset(
        {
            "diverged": (
                (dims.EPOCH,),
                np.array(diverged),
                {"long_name": "run diverged before this checkpoint", "units": units.DIMENSIONLESS},
            ),
            **{
                k: (
                    (dims.LAYER,),
                    np.array(v, dtype=float if "init" in k else int),
                    {"long_name": k.replace("_", " "), "units": TABLE_UNITS[k]},
                )
                for k, v in table.items()
            },
        },
        coords={dims.EPOCH: epochs, **_layer_coords(specs)},
    )


# --------------------------------------------------------------------------- recording
class Recorder:
    """Forward hooks that keep the outputs of named modules of the last forward pass."""

    def __init__(
        self, model: torch.nn.Module, names: set[str], on_output: Callable[[str, torch.Tensor], None] | None = None
    ):
        self.outputs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}
        self.handles = []
        modules = dict(model.named_modules())
        for name in names:
            self.handles.append(modules[name].register_forward_hook(self._hook(name, on_output)))

    def _hook(self, name: str, on_output: Callable[[str, torch.Tensor], None] | None):
        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self.outputs[name] = output
            self.inputs[name] = args[0]
            if on_output is not None:
                on_output(name, output)

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


# --------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """The analysis splits as model inputs on the device: uint8 images (train/valid/test),
    or the 'random' split (Gaussian, already in input space), generated batch by batch."""

    ds: data.Dataset
    input: InputSettings
    random: RandomInputs

    @property
    def device(self) -> torch.device:
        return self.ds.images["train"].device

    def size(self, split: str) -> int:
        if split == "random":
            return int(self.random.random_size)
        if split not in self.ds.labels:
            raise DnndistError(f"split {split!r} is not available (have {sorted(self.ds.labels)} and 'random')")
        return len(self.ds.labels[split])

    def batch(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "random":  # the order is the identity, so idx is a contiguous range
            start, n = int(idx[0]), len(idx)
            shape = tuple(self.ds.images["train"].shape[1:])
            x = data.random_inputs(n, shape, self.random.random_seed, start=start).to(self.device)
            return x, torch.full((n,), -1, dtype=torch.int64, device=self.device)
        inp = self.input
        x = data.prepare(self.ds.images[split][idx], self.ds.mean, self.ds.std, inp.transform, inp.threshold)
        return x, self.ds.labels[split][idx]

    def order(self, split: str, seed: int) -> torch.Tensor:
        """Seeded order in which a split's inputs are visited (the sample is its head);
        random inputs are i.i.d., so their order is the identity."""
        if split == "random":
            return torch.arange(self.size(split), device=self.device)
        g = torch.Generator().manual_seed(seed * 1009 + SPLIT_ORDER.index(split))
        return torch.randperm(self.size(split), generator=g).to(self.device)


def load_inputs(settings: ExtractSettings, store: str | Path, device: torch.device) -> Inputs:
    ds = data.make_splits(data.open_store(store), **settings.split.kwargs()).to(device)
    return Inputs(ds, settings.input, settings.random)


def _setup(
    settings: ExtractSettings, store: str | Path
) -> tuple[ExtractSection, torch.device, Inputs, models.Net, list[models.LayerSpec]]:
    """What both forward-pass extractors start from: inputs and model on the device, the analysed layers."""
    device = checkpoints.resolve_device(settings.train.device)
    inputs = load_inputs(settings, store, device)
    fmt = checkpoints.memory_format(settings.train)
    model = build_model(settings, data.store_info(store)).to(device=device, memory_format=fmt).eval()
    return settings.extract, device, inputs, model, [s for s in model.layer_specs if s.analysed]


# --------------------------------------------------------------------------- features
FEATURE_STATS = ("n", "mean", "m2", "m3", "m4", "min", "max", "nonfinite")  # streaming.FeatureStats.values()
# the features store's variables: (name, long_name, units) of each streamed statistic; the names
# are no Dataset methods (f.count, f.mean, f.min, f.max are), so f.m2 / f.n works in a notebook
FEATURE_VARIABLES = {
    "n": ("n", "number of finite values", units.COUNT),
    "mean": ("mu", "mean activation", units.ACTIVATION),
    "m2": ("m2", "sum of squared deviations from the mean", units.power(units.ACTIVATION, 2)),
    "m3": ("m3", "sum of cubed deviations from the mean", units.power(units.ACTIVATION, 3)),
    "m4": ("m4", "sum of 4th-power deviations from the mean", units.power(units.ACTIVATION, 4)),
    "min": ("vmin", "minimum activation", units.ACTIVATION),
    "max": ("vmax", "maximum activation", units.ACTIVATION),
    "nonfinite": ("nonfinite", "number of non-finite values", units.COUNT),
    "hist_lo": ("hist_lo", "histogram lower edge", units.ACTIVATION),
    "hist_hi": ("hist_hi", "histogram upper edge", units.ACTIVATION),
    "underflow": ("underflow", "values below the histogram range", units.COUNT),
    "overflow": ("overflow", "values above the histogram range", units.COUNT),
}
BIN_EDGES = {  # coordinates of `hist`: each bin's edges (np.linspace(hist_lo, hist_hi, bins + 1))
    "bin_lo": (slice(None, -1), "lower edge of the histogram bin"),
    "bin_hi": (slice(1, None), "upper edge of the histogram bin (the last bin includes it)"),
}


def extract_features(settings: ExtractSettings, ckpt_dir: str | Path, store: str | Path, out: str | Path) -> Path:
    ex, device, inputs, model, specs = _setup(settings, store)
    kinds = list(ex.features)
    splits = list(ex.splits)
    epochs, best = extract_epochs(settings, ckpt_dir)
    files = checkpoint_files(ckpt_dir, epochs)
    plans = {}
    for split in splits:
        order = inputs.order(split, ex.seed)[: ex.max_inputs or None]
        plans[split] = order
    n_sample = min(ex.sample_size, *(len(o) for o in plans.values()))
    arrays = FeatureArrays(specs, kinds, splits, epochs, ex.histogram_bins)
    for ei, epoch in enumerate(epochs):
        load_weights(model, files[epoch])
        for si, split in enumerate(splits):
            order = plans[split]
            chunks = [order[:n_sample]] + list(order[n_sample:].split(ex.batch_size))
            batches = (inputs.batch(split, idx)[0] for idx in chunks if len(idx))
            arrays.add(ei, si, *feature_pass(model, arrays.modules, batches, ex.histogram_bins, n_sample))
        log.info("features: epoch %d done", epoch)
    idx = np.stack([plans[s][:n_sample].cpu().numpy() for s in splits])
    labels = np.stack([inputs.batch(s, plans[s][:n_sample])[1].cpu().numpy() for s in splits])
    root, groups = arrays.datasets(settings.run, idx, labels)
    attrs = {**store_attrs(settings.origin, "features", device), **best}
    return write_store(out, root, groups, attrs)


def feature_modules(specs: list[models.LayerSpec], kinds: list[str]) -> dict[tuple[str, str], str]:
    """(layer, kind) -> the module whose output is that feature: the layer's ``pre`` module, its
    ``post`` (activation) module where it has one."""
    module_of = {(s.name, "pre"): s.pre for s in specs} | {(s.name, "post"): s.post for s in specs if s.post}
    return {(s.name, k): module_of[(s.name, k)] for s in specs for k in kinds if (s.name, k) in module_of}


def feature_pass(
    model: torch.nn.Module,
    modules: Mapping[tuple[str, str], str],
    batches: Iterable[torch.Tensor],
    bins: int,
    n_sample: int,
) -> tuple[dict[tuple[str, str], streaming.FeatureStats], dict[tuple[str, str], np.ndarray]]:
    """One pass of ``batches`` (model inputs) through ``model`` (in eval mode): the exact streaming
    statistics (``streaming.FeatureStats``) of every feature in ``modules`` ((layer, kind) -> module
    name) over all inputs, and the raw features of the first ``n_sample`` inputs (float32, host).

    A feature is read in its module's forward hook, when the module returns it: an in-place
    operation later in the forward pass (torchvision's ``ReLU(inplace=True)`` after a batch norm,
    a residual ``out += identity``) would otherwise change it before it is read."""
    feats = {key: streaming.FeatureStats(bins) for key in modules}
    parts: dict[tuple[str, str], list[np.ndarray]] = {key: [] for key in modules}
    keys_of: dict[str, list[tuple[str, str]]] = {}
    for key, module in modules.items():
        keys_of.setdefault(module, []).append(key)
    seen = 0
    sampled: set[tuple[str, str]] = (
        set()
    )  # features whose sample this batch has given (a module called twice gives one)

    def read(name: str, output: torch.Tensor) -> None:
        for key in keys_of[name]:
            feats[key].update(output)
            if seen < n_sample and key not in sampled:  # the sample: raw activations to the host (a copy)
                parts[key].append(np.array(output[: n_sample - seen].float().cpu().numpy()))
                sampled.add(key)

    rec = Recorder(model, set(keys_of), on_output=read)
    try:
        with torch.no_grad():
            for x in batches:
                sampled.clear()
                model(x)
                seen += len(x)
                rec.outputs.clear()  # let the allocator reuse this batch's maps for the next one
                rec.inputs.clear()
    finally:
        rec.close()
    if seen == 0:
        raise DnndistError("no inputs to compute feature statistics over")
    return feats, {key: np.concatenate(p) for key, p in parts.items()}


class FeatureArrays:
    """The content of a features store, filled one (epoch, split) pass at a time: the streaming
    statistics and histograms of every (layer, kind) and the raw features of the sample."""

    def __init__(
        self, specs: list[models.LayerSpec], kinds: list[str], splits: list[str], epochs: list[int], bins: int
    ):
        self.specs, self.kinds, self.splits, self.epochs = specs, kinds, splits, epochs
        self.modules = feature_modules(specs, kinds)
        shape = (len(epochs), len(specs), len(kinds), len(splits))
        self.stats = {
            k: np.full(shape, np.nan) for k in (*FEATURE_STATS, "hist_lo", "hist_hi", "underflow", "overflow")
        }
        self.hist = np.full((*shape, bins), np.nan)
        self.edges = np.full((*shape, bins + 1), np.nan)
        self.samples: dict[tuple[str, str], list[list[np.ndarray]]] = {
            key: [[None] * len(splits) for _ in epochs] for key in self.modules
        }

    def add(
        self,
        ei: int,
        si: int,
        feats: Mapping[tuple[str, str], streaming.FeatureStats],
        sample: Mapping[tuple[str, str], np.ndarray],
    ) -> None:
        st = self.stats
        for li, spec in enumerate(self.specs):
            for ki, kind in enumerate(self.kinds):
                if (spec.name, kind) not in feats:
                    continue
                f = feats[(spec.name, kind)]
                vals = f.values()
                for k in FEATURE_STATS:
                    st[k][ei, li, ki, si] = vals[k]
                st["hist_lo"][ei, li, ki, si], st["hist_hi"][ei, li, ki, si] = f.lo, f.hi
                st["underflow"][ei, li, ki, si], st["overflow"][ei, li, ki, si] = float(f.under), float(f.over)
                self.hist[ei, li, ki, si] = f.counts
                if f.binning is not None:
                    self.edges[ei, li, ki, si] = f.binning.edges
        for key, arr in sample.items():
            self.samples[key][ei][si] = arr

    def datasets(
        self, run: RunId, sample_index: np.ndarray, sample_label: np.ndarray
    ) -> tuple[xr.Dataset, dict[str, xr.Dataset]]:
        """(root, {layer: group}) of the features store; ``sample_index`` and ``sample_label`` are
        (split, sample) arrays: where the sampled inputs come from and their labels (-1: none)."""
        root = xr.Dataset(
            {
                **self.statistics(),
                "sample_index": (
                    (dims.SPLIT, dims.SAMPLE),
                    sample_index,
                    {"long_name": "index of the input in its split", "units": units.DIMENSIONLESS},
                ),
                "sample_label": (
                    (dims.SPLIT, dims.SAMPLE),
                    sample_label,
                    {"long_name": "class label (-1 for random inputs)", "units": units.DIMENSIONLESS},
                ),
            },
            coords={
                dims.EPOCH: self.epochs,
                **_layer_coords(self.specs),
                dims.KIND: self.kinds,
                dims.SPLIT: self.splits,
            },
        )
        # the bin edges as coordinates of `hist` (with the run dims, so runs combine)
        root = _finish(root, run).set_coords(list(BIN_EDGES))
        return root, {spec.name: _finish(self._sample_group(spec), run) for spec in self.specs}

    def statistics(self) -> dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, str]]]:
        """The statistics variables of the root: stored moments, derived moments, histogram, edges."""
        sd = (dims.EPOCH, dims.LAYER, dims.KIND, dims.SPLIT)
        out = {
            name: (sd, self.stats[k], {"long_name": long_name, "units": unit})
            for k, (name, long_name, unit) in FEATURE_VARIABLES.items()
        }
        derived = moments.derived_moments(*(self.stats[k] for k in ("n", "m2", "m3", "m4")))
        for name, (long_name, p) in moments.DERIVED_MOMENTS.items():
            out[name] = (sd, derived[name], {"long_name": long_name, "units": units.power(units.ACTIVATION, p)})
        out["hist"] = (
            (*sd, dims.BIN),
            self.hist,
            {"long_name": "histogram counts (equal bins from hist_lo to hist_hi)", "units": units.COUNT},
        )
        for name, (sl, long_name) in BIN_EDGES.items():
            out[name] = ((*sd, dims.BIN), self.edges[..., sl], {"long_name": long_name, "units": units.ACTIVATION})
        return out

    def _sample_group(self, spec: models.LayerSpec) -> xr.Dataset:
        """A layer's group of the features store: the raw features of the sample, per kind."""
        variables = {}
        for kind in self.kinds:
            if (spec.name, kind) not in self.samples:
                continue
            arr = np.stack(
                [np.stack(per_split) for per_split in self.samples[(spec.name, kind)]]
            )  # (epoch, split, sample, ...)
            tensor_dims = (dims.CHANNEL, dims.Y, dims.X) if arr.ndim == 6 else (dims.UNIT,)
            variables[kind] = (
                (dims.EPOCH, dims.SPLIT, dims.SAMPLE, *tensor_dims),
                arr,
                {"long_name": f"{spec.name} {kind}-activation output", "units": units.ACTIVATION},
            )
        return xr.Dataset(
            variables,
            coords={dims.EPOCH: self.epochs, dims.SPLIT: self.splits},
            attrs={"layer": spec.name, "depth": spec.depth},
        )


# --------------------------------------------------------------------------- gradients
PARAMS = ("weight", "bias")


@dataclass
class GradientPlan:
    """What the gradients stage measures: the inputs of a split (in seeded order, cut into
    batches), the checkpoint epochs, the layers and the feature maps ((layer, kind) -> module)."""

    split: str
    order: torch.Tensor
    batches: list[torch.Tensor]
    epochs: list[int]
    specs: list[models.LayerSpec]
    feat_kinds: list[str]
    feat_modules: dict[tuple[str, str], str]

    @property
    def convs(self) -> list[models.LayerSpec]:
        return [s for s in self.specs if s.kind == "conv"]

    @property
    def n(self) -> int:
        return len(self.order)


def gradient_plan(ex: ExtractSection, inputs: Inputs, specs: list[models.LayerSpec], epochs: list[int]) -> GradientPlan:
    split, bs, nb = ex.gradient_split, ex.gradient_batch_size, ex.gradient_batches
    order = inputs.order(split, ex.seed + 1)[: bs * nb]
    feat_kinds = list(ex.features) if ex.feature_gradients else []
    feat_modules = {
        (s.name, k): (s.pre if k == "pre" else s.post)
        for s in specs
        for k in feat_kinds
        if (s.pre if k == "pre" else s.post)
    }
    return GradientPlan(split, order, list(order.split(bs)), epochs, specs, feat_kinds, feat_modules)


@dataclass
class GradientArrays:
    """What the gradients stage keeps in memory, filled batch by batch: per-sample losses
    (epoch, sample), parameter gradient norms (epoch, layer, param, batch), the parameter
    gradients (per (layer, param): one (batch, ...) array per epoch) and the feature-map
    gradients (per (layer, kind): (epoch, sample, ...)); ``em_ab``: the streamed conv arrays."""

    loss: np.ndarray
    pnorm: np.ndarray
    pgrad: dict[tuple[str, str], list[np.ndarray]]
    fgrad: dict[tuple[str, str], np.ndarray]
    em_ab: dict[str, dict[str, Any]]

    @classmethod
    def empty(cls, plan: GradientPlan, em_ab: dict[str, dict[str, Any]]) -> GradientArrays:
        e = len(plan.epochs)
        return cls(
            np.zeros((e, plan.n)),
            np.zeros((e, len(plan.specs), len(PARAMS), len(plan.batches))),
            {(s.name, p): [] for s in plan.specs for p in PARAMS},
            {},
            em_ab,
        )


def extract_gradients(settings: ExtractSettings, ckpt_dir: str | Path, store: str | Path, out: str | Path) -> Path:
    """Per-sample losses, parameter and feature-map gradients, and emission/absorption of every
    conv layer over ``gradient_batches x gradient_batch_size`` inputs. Emission and absorption
    are streamed into the store batch by batch (chunks of one batch), so memory does not grow
    with the number of inputs; parameter and feature gradients (switches) are kept in memory."""
    ex, device, inputs, model, specs = _setup(settings, store)
    modules = dict(model.named_modules())
    epochs, best = extract_epochs(settings, ckpt_dir)
    plan = gradient_plan(ex, inputs, specs, epochs)
    files = checkpoint_files(ckpt_dir, plan.epochs)
    bs, nb = ex.gradient_batch_size, ex.gradient_batches
    if plan.n < bs * nb:
        log.warning(
            "gradients: the %s split has %d inputs, fewer than the %d x %d asked for", plan.split, plan.n, nb, bs
        )
    rec, grads = gradient_recorder(model, {s.name for s in plan.convs} | set(plan.feat_modules.values()))
    with atomic_path(out) as tmp:
        streams = _em_ab_streams(tmp, settings.run, plan.convs, modules, plan.epochs, plan.n, bs)
        arrays, gp = GradientArrays.empty(plan, streams), GradientPass(model, inputs, plan, ex, rec, grads)
        try:
            for ei, epoch in enumerate(plan.epochs):
                load_weights(model, files[epoch])
                _gradient_epoch(gp, arrays, ei)
                log.info("gradients: epoch %d done", epoch)
        finally:
            rec.close()
        labels = np.concatenate([inputs.batch(plan.split, idx)[1].cpu().numpy() for idx in plan.batches])
        root = _gradient_root(plan, arrays, labels, ex.gradient_target)
        attrs = {**store_attrs(settings.origin, "gradients", device), **best}
        root = _finish(root, settings.run).assign_attrs(**attrs)
        _to_zarr(root, tmp, mode="a")
        for s in specs:
            ds = _finish(_gradient_group(s, plan, arrays, ex.parameter_gradients), settings.run)
            mode = "a" if s.name in streams else "w"  # conv groups already hold the streamed em/ab
            _to_zarr(ds, tmp, group=s.name, mode=mode)
        integrity.consolidate(tmp)
    return Path(out)


@dataclass
class GradientPass:
    """One checkpoint's model with its recorder (:func:`gradient_recorder`), and what it is run on."""

    model: torch.nn.Module
    inputs: Inputs
    plan: GradientPlan
    ex: ExtractSection
    rec: Recorder
    grads: dict[str, torch.Tensor]


def _gradient_epoch(gp: GradientPass, arrays: GradientArrays, ei: int) -> None:
    """The gradients of checkpoint ``ei`` (its weights loaded) over every batch, into ``arrays``."""
    plan, modules = gp.plan, dict(gp.model.named_modules())
    for p in gp.model.parameters():
        p.requires_grad_(True)
    per_batch: dict[tuple[str, str], list[np.ndarray]] = {key: [] for key in arrays.pgrad}
    pos = 0
    for bi, idx in enumerate(plan.batches):
        x, y = gp.inputs.batch(plan.split, idx)
        losses, em_ab = gradient_batch(gp.model, x, y, gp.ex.gradient_target, gp.rec, gp.grads, plan.convs)
        sl = slice(pos, pos + len(idx))
        arrays.loss[ei, sl] = losses.detach().double().cpu().numpy()
        for s in plan.convs:
            e, a = em_ab[s.name]
            arrays.em_ab[s.name]["em"][0, 0, 0, ei, sl] = e.double().cpu().numpy()
            arrays.em_ab[s.name]["ab"][0, 0, 0, ei, sl] = a.double().cpu().numpy()
        for key, mod in plan.feat_modules.items():
            g = gp.grads[mod].detach().float().cpu().numpy()
            shape = (len(plan.epochs), plan.n, *g.shape[1:])
            arrays.fgrad.setdefault(key, np.zeros(shape, dtype=np.float32))[ei, sl] = g
        keep = per_batch if gp.ex.parameter_gradients else None
        _param_grads(modules, plan.specs, len(idx), arrays.pnorm[ei, :, :, bi], keep)
        pos += len(idx)
    for key in arrays.pgrad:
        if per_batch[key]:
            arrays.pgrad[key].append(np.stack(per_batch[key]))


def _param_grads(
    modules: Mapping[str, torch.nn.Module],
    specs: list[models.LayerSpec],
    batch_size: int,
    norms: np.ndarray,
    keep: dict[tuple[str, str], list[np.ndarray]] | None,
) -> None:
    """The L2 norms (layer, param) of one batch's mean-loss parameter gradients into ``norms``
    (NaN for a parameter the layer lacks: ResNet convs have no bias); the gradients into ``keep``."""
    for li, s in enumerate(specs):
        for pi, p in enumerate(PARAMS):
            param = getattr(modules[s.name], p)
            if param is None:
                norms[li, pi] = np.nan
                continue
            g = param.grad.detach() / batch_size
            norms[li, pi] = float(g.double().norm())
            if keep is not None:
                keep[(s.name, p)].append(g.float().cpu().numpy())


def _gradient_root(plan: GradientPlan, arrays: GradientArrays, labels: np.ndarray, target: str) -> xr.Dataset:
    """The gradients store's root: per-sample losses, parameter gradient norms and the inputs."""
    return xr.Dataset(
        {
            "loss": (
                (dims.EPOCH, dims.SAMPLE),
                arrays.loss,
                {"long_name": "per-sample cross-entropy", "units": "nat"},
            ),
            "param_grad_norm": (
                (dims.EPOCH, dims.LAYER, dims.PARAM, dims.BATCH),
                arrays.pnorm,
                {"long_name": "L2 norm of the mean-loss parameter gradient", "units": PARAM_GRADIENT_UNITS},
            ),
            "sample_index": (
                (dims.SAMPLE,),
                plan.order.cpu().numpy(),
                {"long_name": f"index of the input in the {plan.split} split", "units": units.DIMENSIONLESS},
            ),
            "sample_label": ((dims.SAMPLE,), labels, {"long_name": "class label", "units": units.DIMENSIONLESS}),
        },
        coords={dims.EPOCH: plan.epochs, **_layer_coords(plan.specs), dims.PARAM: list(PARAMS)},
        attrs={"gradient_split": plan.split, "gradient_target": target},
    )


def _gradient_group(
    s: models.LayerSpec, plan: GradientPlan, arrays: GradientArrays, parameter_gradients: bool
) -> xr.Dataset:
    """A layer's group of the gradients store: its parameter and feature-map gradients."""
    v = {}
    if parameter_gradients:
        v["weight_grad"] = (
            (dims.EPOCH, dims.BATCH, *_weight_dims(s.kind)),
            np.stack(arrays.pgrad[(s.name, "weight")]),
            {"long_name": f"{s.name} weight gradient (mean loss of a batch)", "units": units.WEIGHT_GRADIENT},
        )
        if arrays.pgrad[(s.name, "bias")]:
            v["bias_grad"] = (
                (dims.EPOCH, dims.BATCH, _out_dim(s.kind)),
                np.stack(arrays.pgrad[(s.name, "bias")]),
                {"long_name": f"{s.name} bias gradient (mean loss of a batch)", "units": units.ACTIVATION_GRADIENT},
            )
    for k in plan.feat_kinds:
        if (s.name, k) in arrays.fgrad:
            tensor_dims = (dims.CHANNEL, dims.Y, dims.X) if s.kind == "conv" else (dims.UNIT,)
            v[f"grad_{k}"] = (
                (dims.EPOCH, dims.SAMPLE, *tensor_dims),
                arrays.fgrad[(s.name, k)],
                {
                    "long_name": f"gradient of the per-sample loss w.r.t. the {s.name} {k}-activation output",
                    "units": units.ACTIVATION_GRADIENT,
                },
            )
    return xr.Dataset(v, coords={dims.EPOCH: plan.epochs}, attrs={"layer": s.name, "depth": s.depth})


def gradient_recorder(model: torch.nn.Module, names: set[str]) -> tuple[Recorder, dict[str, torch.Tensor]]:
    """A Recorder of the named modules' inputs and outputs that also keeps the gradient of the loss
    w.r.t. each output (filled by the backward pass of :func:`gradient_batch`)."""
    grads: dict[str, torch.Tensor] = {}

    def keep_grad(name: str, output: torch.Tensor) -> None:
        if output.requires_grad:
            output.register_hook(lambda g: grads.__setitem__(name, g))

    return Recorder(model, names, on_output=keep_grad), grads


def gradient_batch(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    target: str,
    rec: Recorder,
    grads: dict[str, torch.Tensor],
    convs: list[models.LayerSpec],
) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Forward and backward pass of one batch (``rec``, ``grads``: :func:`gradient_recorder` of the
    conv layers and any other watched modules): the per-sample cross-entropy against the labels
    ``y`` (``target`` 'label') or the model's own prediction ('predicted'; also when ``y`` is None),
    and each conv layer's emission (B, C_out) and absorption (B, C_in). The summed loss is
    back-propagated, so each sample's gradient is that of its own loss (eval mode) and parameter
    ``.grad`` holds the gradient of the summed loss."""
    modules = dict(model.named_modules())
    model.zero_grad(set_to_none=True)
    grads.clear()
    logits = model(x)
    if target == "predicted" or y is None:
        y = logits.detach().argmax(1)
    elif int(y.max()) >= logits.shape[1]:
        raise DnndistError(
            f"the model has {logits.shape[1]} outputs but the inputs have labels up to {int(y.max())}; "
            "set extract.gradient_target: predicted to analyse given weights on other classes"
        )
    losses = F.cross_entropy(logits, y, reduction="none")
    losses.sum().backward()  # each sample's gradient is that of its own loss
    em_ab = {}
    for s in convs:
        conv = modules[s.name]
        size = tuple(rec.inputs[s.name].shape[-2:])
        em_ab[s.name] = emission_absorption(grads[s.name], conv.weight.detach(), size, *conv_geometry(conv))
    return losses, em_ab


def _em_ab_streams(
    tmp: Path,
    run: RunId,
    convs: list[models.LayerSpec],
    modules: Mapping[str, torch.nn.Module],
    epochs: list[int],
    n: int,
    bs: int,
) -> dict[str, dict[str, Any]]:
    """Create the em/ab arrays of every conv layer in the store (chunks of one gradient batch)
    and return them open for writing: zarr arrays indexed like the xarray variables."""
    import dask.array as da
    import zarr

    for s in convs:
        conv = modules[s.name]
        v = {}
        for name, dim, ch, what in (
            ("em", dims.OUT_CHANNEL, conv.out_channels, "emission"),
            ("ab", dims.IN_CHANNEL, conv.in_channels, "absorption"),
        ):
            v[name] = (
                (dims.EPOCH, dims.SAMPLE, dim),
                da.zeros((len(epochs), n, ch), chunks=(1, bs, ch), dtype=np.float64),
                {"long_name": f"{s.name} {what}", "units": units.ACTIVATION_GRADIENT},
            )
        ds = _finish(xr.Dataset(v, coords={dims.EPOCH: epochs}, attrs={"layer": s.name, "depth": s.depth}), run)
        enc = {k: {"chunks": (1, 1, 1, 1, bs, var.shape[-1])} for k, var in ds.data_vars.items()}
        _to_zarr(ds, tmp, encoding=enc, group=s.name, mode="w", compute=False)
    root = zarr.open_group(str(tmp), mode="r+", zarr_format=3)
    return {s.name: {k: root[s.name][k].with_config({"write_empty_chunks": True}) for k in ("em", "ab")} for s in convs}


EXTRACTORS = {"weights": extract_weights, "features": extract_features, "gradients": extract_gradients}


def extract_run(settings: ExtractSettings, ckpt_dir: str | Path, store: str | Path, out_dir: str | Path) -> None:
    """The three stores of one run (``out_dir``/weights.zarr, features.zarr, gradients.zarr)."""
    for kind, extractor in EXTRACTORS.items():
        extractor(settings, ckpt_dir, store, Path(out_dir) / f"{kind}.zarr")
