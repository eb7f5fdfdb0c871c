"""The features store: streaming moments and fixed-bin histograms of every analysed feature map over every input of each split, and raw samples."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from dnndist import (
    DnndistError,
    dims,
    models,
    moments,
    streaming,
    units,
)
from dnndist.extract.inputs import Recorder, extraction_setup
from dnndist.extract.store import (
    checkpoint_files,
    extract_epochs,
    finish,
    layer_coords,
    load_weights,
    log,
    store_attrs,
    write_store,
)
from dnndist.settings import ExtractSettings, RunId

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
    ex, device, inputs, model, specs = extraction_setup(settings, store)
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
                **layer_coords(self.specs),
                dims.KIND: self.kinds,
                dims.SPLIT: self.splits,
            },
        )
        # the bin edges as coordinates of `hist` (with the run dims, so runs combine)
        root = finish(root, run).set_coords(list(BIN_EDGES))
        return root, {spec.name: finish(self._sample_group(spec), run) for spec in self.specs}

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
