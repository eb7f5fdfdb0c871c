"""dnndist as a library: the workflow's statistics of any model, in one call.

    import dnndist
    result = dnndist.analyze(model)                      # any torch.nn.Module
    result = dnndist.analyze("torchvision:resnet18", weights="resnet18.pth", inputs="images/")
    result.table                                         # one row per Conv2d/Linear layer
    result.dataset                                       # the same numbers as an xarray Dataset
    result.write("out/")                                 # weights.zarr (+ features.zarr, gradients.zarr), CSVs, figures

Every ``Conv2d`` and ``Linear`` of the model (``named_modules`` order, which is the depth order)
is a layer. The numbers are those of the workflow, computed by the same functions:

- weights: ``dnndist.extract.weight_groups`` builds the weights store (root + one group per layer,
  what ``dnndist extract weights`` writes for a checkpoint), ``dnndist.stats.weight_table`` its
  statistics (moments, quantiles, near-zero mass, the fractions inside [-1, 1] and inside
  PyTorch's default-init bound 1/sqrt(fan_in), KS distance to the fitted normal, Hill tail index
  with its size-calibrated reference, WeightWatcher's spectral metrics), ``stats.spectrum_table``
  the singular values and ``stats.weight_histograms`` the histograms;
- features (with ``inputs``): ``dnndist.extract.feature_pass`` (the exact streaming moments and
  fixed-bin histograms of ``dnndist.streaming``) and ``extract.FeatureArrays`` build the features
  store; ``stats.feature_table`` / ``stats.feature_histograms`` read it;
- emission / absorption (with ``inputs``, conv layers): ``extract.gradient_batch`` on the first
  ``gradient_inputs`` inputs; ``stats.em_ab_table`` and ``tables.emission_summary`` summarise it.

The workflow compares a layer with the theory of the init it was trained from. A checkpoint of
the workflow (``checkpoints/epoch_NNNN.safetensors``) says which: its metadata's init, seed and
epoch label what ``analyze`` writes, and its init is the reference. Other weights have no known
init: they are labelled ``init = unknown`` and compared with ``init`` (default ``torch_default``,
PyTorch's own U(-1/sqrt(fan_in), 1/sqrt(fan_in))), named as ``reference_init``; ``init_std``,
``init_bound`` and ``std_ratio_to_init`` are relative to the reference. An ``init`` given is
both the label and the reference. ``within_default_bound`` is always the torch-default bound.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import nn

from dnndist import DnndistError, data, dims, extract, inits, models, spectral, stats, tables, units
from dnndist.checkpoints import checkpoint_meta, resolve_device
from dnndist.conventions import UNKNOWN_INIT
from dnndist.gradients import conv_geometry
from dnndist.io import DATASET_NAMES, atomic_path, write_text
from dnndist.provenance import config_hash
from dnndist.settings import InitScheme, ModelSettings, Origin, RunId, StatsSettings

log = logging.getLogger(__name__)

# the config schema's defaults ($defs model/stats), from the settings' own (tests/test_settings.py and
# tests/test_analyze.py check them against the schema)
MODEL_DEFAULTS: dict[str, Any] = {k: v for k, v in ModelSettings().to_dict().items() if k != "name"}
STATS_DEFAULTS: dict[str, Any] = {
    f.name: list(getattr(StatsSettings(), f.name)) for f in dataclasses.fields(StatsSettings)
}
TORCHVISION = "torchvision:"
INPUT_SPLIT = "inputs"  # the split name of inputs that are not an image folder with split sub-folders
NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)
ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
)
NORMALIZE = ("dataset", "imagenet", "none")


# --------------------------------------------------------------------------- the model
def load_model(
    model: Any,
    weights: str | Path | None = None,
    *,
    num_classes: int | None = None,
    in_channels: int = 3,
    image_size: int = 32,
    options: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, str]:
    """(module, name) of ``model``: an ``nn.Module`` as it is, a registry name (``paper_cnn``,
    ``resnet18_cifar``, ...; ``options`` overrides the registry settings, e.g. ``{"depth": 6}``) or
    ``torchvision:<name>`` (built with ``weights=None``: nothing is downloaded). ``weights``: a local
    state dict (``models.read_weights``: safetensors, or torch.load with weights_only=True; NaN
    refused) that must fit the model exactly; a built model takes its number of classes from it."""
    state = models.read_weights(weights) if weights is not None else None
    head = models.state_num_classes(state) if state is not None else None
    if isinstance(model, str):
        name = model
        if model.startswith(TORCHVISION):
            module = _torchvision(model[len(TORCHVISION) :], head or num_classes)
        elif model in models.MODELS:
            settings = ModelSettings.from_dict({**MODEL_DEFAULTS, **(options or {}), "name": model, "weights": None})
            module = models.build(settings, in_channels, head or num_classes or 10, image_size)
        else:
            raise DnndistError(
                f"unknown model {model!r}; use one of {', '.join(sorted(models.MODELS))} "
                f"or torchvision:<name> (e.g. torchvision:resnet18), or pass a torch.nn.Module"
            )
    elif isinstance(model, nn.Module):
        module, name = model, type(model).__name__
    else:
        raise DnndistError(f"expected a torch.nn.Module or a model name, got a {type(model).__name__}")
    if state is not None:
        models.load_pretrained(module, state, str(weights), name)
    return module, name


def _torchvision(arch: str, num_classes: int | None) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        close = [k for k in known if k.startswith(arch[:4])] or known[:5]
        raise DnndistError(
            f"unknown model 'torchvision:{arch}'; torchvision's classification models include {', '.join(close[:8])}"
        )
    kwargs: dict[str, Any] = {"weights": None}  # no download, ever
    if num_classes:
        kwargs["num_classes"] = num_classes
    if arch in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = True  # their scipy init, without torchvision's warning about a future default
    return torchvision.models.get_model(arch, **kwargs)


def layer_specs(module: nn.Module) -> list[models.LayerSpec]:
    """Every Conv2d and Linear of ``module`` in ``named_modules`` order, as analysed layers.

    A registry model keeps its own specs (the workflow's). Otherwise a layer's pre-activation
    feature is its batch/group/layer norm where one follows it (the next child of an
    ``nn.Sequential``, or the ``bnK`` sibling of a ``convK``, as in torchvision's ResNets) and its
    post-activation feature the activation module that follows in an ``nn.Sequential`` (when that
    module is used nowhere else); else the layer's own output and no post-activation feature."""
    if isinstance(getattr(module, "layer_specs", None), list):
        return [dataclasses.replace(s, analysed=True) for s in module.layer_specs]
    uses = Counter(id(m) for _, m in module.named_modules(remove_duplicate=False))
    named = dict(module.named_modules())
    specs: list[models.LayerSpec] = []
    for name, m in named.items():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        pre, post = name, None
        parent_name, _, leaf = name.rpartition(".")
        parent = named[parent_name]
        prefix = f"{parent_name}." if parent_name else ""
        if isinstance(parent, nn.Sequential):
            after = list(parent.named_children())
            after = after[[k for k, _ in after].index(leaf) + 1 :]
            if after and isinstance(after[0][1], NORMS):
                pre, after = prefix + after[0][0], after[1:]
            if after and isinstance(after[0][1], ACTIVATIONS) and uses[id(after[0][1])] == 1:
                post = prefix + after[0][0]
        elif re.fullmatch(r"conv\d*", leaf) and isinstance(named.get(f"{prefix}bn{leaf[4:]}"), NORMS):
            pre = f"{prefix}bn{leaf[4:]}"
        specs.append(
            models.LayerSpec(name, "conv" if isinstance(m, nn.Conv2d) else "linear", len(specs) + 1, pre, post, True)
        )
    if not specs:
        raise DnndistError(f"{type(module).__name__} has no Conv2d or Linear layer to analyse")
    return specs


def _state(module: nn.Module, specs: list[models.LayerSpec]) -> dict[str, torch.Tensor]:
    """The tensors ``extract.weight_groups`` reads, as CPU copies keyed like a state dict: each
    layer's weight and bias, and a conv's batch norm (weight, bias, running mean and variance)."""
    named = dict(module.named_modules())
    out: dict[str, torch.Tensor] = {}

    def keep(key: str, t: torch.Tensor) -> None:
        t = t.detach().to("cpu", copy=True)
        out[key] = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t

    for s in specs:
        layer = named[s.name]
        if isinstance(layer.weight, nn.parameter.UninitializedParameter):
            raise DnndistError(f"layer {s.name} is not initialised yet (a lazy module): run one forward pass first")
        keep(f"{s.name}.weight", layer.weight)
        if layer.bias is not None:
            keep(f"{s.name}.bias", layer.bias)
        norm = named.get(s.pre)
        params = [getattr(norm, p, None) for p in ("weight", "bias", "running_mean", "running_var")]
        if s.kind == "conv" and s.pre != s.name and all(isinstance(p, torch.Tensor) for p in params):
            for p, t in zip(("weight", "bias", "running_mean", "running_var"), params):
                keep(f"{s.pre}.{p}", t)
    return out


# --------------------------------------------------------------------------- inputs
@dataclasses.dataclass
class _Split:
    name: str
    batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]]  # (model input, labels or None)


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".tar", ".tar.gz", ".tgz"))


def _image_splits(
    path: Path,
    image_size: int,
    resize: int | None,
    normalize: str,
    per_class: int | None,
    batch_size: int,
    workers: int | None,
) -> list[_Split]:
    """An image folder or archive, ``<class>/<image>`` (one split, 'inputs') or
    ``<split>/<class>/<image>`` (one split per sub-folder): listed, decoded (resized and centre-cropped)
    and normalised as the data stage does (``data.iter_imagefolder``, ``data.prepare``)."""
    if path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
    elif _is_archive(path):
        names = [name for name, _ in data.iter_tar(path, wanted=set())]
    elif path.exists():
        raise DnndistError(f"inputs {path}: expected an image folder or a .tar/.tar.gz of one")
    else:
        raise DnndistError(f"inputs {path} does not exist")
    images = [n for n in names if n.lower().endswith(data.IMAGE_EXTENSIONS)]
    depth = Counter(n.count("/") for n in images)
    if depth.get(1):
        subdirs = {INPUT_SPLIT: ""}
    elif depth.get(2):
        subdirs = {s: s for s in sorted({n.split("/")[0] for n in images if n.count("/") == 2})}
    else:
        raise DnndistError(
            f"inputs {path}: no images in image-folder layout (<class>/<image> or <split>/<class>/<image>)"
        )
    refs = data.sources._select_refs(path, names, subdirs, per_class)
    classes = sorted({r.cls for r in refs})
    index = {c: i for i, c in enumerate(classes)}
    decoded: dict[str, list[np.ndarray]] = {s: [] for s in subdirs}
    for ref, img in data.iter_imagefolder(path, refs, image_size, resize or image_size, workers):
        decoded[ref.split].append(img)
    arrays = {s: torch.from_numpy(np.stack(v)) for s, v in decoded.items()}
    labels = {s: torch.tensor([index[r.cls] for r in refs if r.split == s], dtype=torch.int64) for s in subdirs}
    if normalize == "imagenet":
        mean, std = torch.tensor(data.IMAGENET_MEAN), torch.tensor(data.IMAGENET_STD)
    elif normalize == "none":
        mean, std = torch.zeros(3), torch.ones(3)
    else:  # the data stage's statistics (StoreWriter), over the train split if there is one, else all images
        pool = [arrays["train"]] if "train" in arrays else list(arrays.values())
        mean, std = _channel_mean_std(pool)
    log.info(
        "inputs: %s (%s; %d classes)", path, ", ".join(f"{s}: {len(v)} images" for s, v in arrays.items()), len(classes)
    )

    def batches(split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(arrays[split]), batch_size):
            sl = slice(start, start + batch_size)
            yield data.prepare(arrays[split][sl], mean.float(), std.float()), labels[split][sl]

    return [_Split(s, batches(s)) for s in subdirs]


def _channel_mean_std(pool: list[torch.Tensor], chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std of uint8 images (N, C, H, W) scaled to [0, 1], as the data
    stage computes them, accumulated in float64 over chunks of images (a float64 copy of 10,000
    images at 224 x 224 is 12 GB)."""
    total, sq, count = 0.0, 0.0, 0
    for a in pool:
        for start in range(0, len(a), chunk):
            x = a[start : start + chunk].numpy().astype(np.float64) / 255.0
            total = total + x.sum(axis=(0, 2, 3))
            sq = sq + (x**2).sum(axis=(0, 2, 3))
            count += x.shape[0] * x.shape[2] * x.shape[3]
    m = total / count
    return torch.tensor(m), torch.tensor(np.sqrt(np.maximum(sq / count - m**2, 0.0)))


def _batch_of(item: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, y or None) of one DataLoader item: a tensor, or a tuple/list (x, y, ...)."""
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(item[0])
        y = torch.as_tensor(item[1]) if len(item) > 1 and isinstance(item[1], (torch.Tensor, np.ndarray)) else None
        return x, (y if y is not None and y.ndim == 1 and len(y) == len(x) and not y.is_floating_point() else None)
    if isinstance(item, (torch.Tensor, np.ndarray)):
        return torch.as_tensor(item), None
    raise DnndistError(f"inputs: a batch must be a tensor or a tuple (x, y, ...), got a {type(item).__name__}")


def input_splits(
    inputs: Any,
    *,
    batch_size: int = 256,
    image_size: int = 32,
    resize: int | None = None,
    normalize: str = "dataset",
    per_class: int | None = None,
    workers: int | None = None,
) -> list[_Split]:
    """The splits of ``inputs``: an image folder or archive (path), a tensor / array of model inputs
    (cut into batches), or an iterable of batches (a DataLoader yielding x or (x, y, ...))."""
    if normalize not in NORMALIZE:
        raise DnndistError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    if isinstance(inputs, (str, Path)):
        return _image_splits(Path(inputs), image_size, resize, normalize, per_class, batch_size, workers)
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(inputs)
        if x.ndim < 2 or len(x) == 0:
            raise DnndistError(f"inputs: expected a batch of model inputs (N, ...), got shape {tuple(x.shape)}")
        return [_Split(INPUT_SPLIT, ((b, None) for b in x.split(batch_size)))]
    if isinstance(inputs, Iterable) and not isinstance(inputs, (Mapping, bytes)):
        return [_Split(INPUT_SPLIT, (_batch_of(item) for item in inputs))]
    raise DnndistError(f"inputs: expected an image folder, a tensor or a DataLoader, got a {type(inputs).__name__}")


# --------------------------------------------------------------------------- the result
@dataclasses.dataclass
class Analysis:
    """What ``analyze`` measured. ``table`` and ``dataset`` hold the per-layer numbers; the other
    members are the workflow's stores (root + groups, in memory) and tidy tables."""

    name: str
    layers: list[models.LayerSpec]
    settings: dict[str, Any]
    table: pd.DataFrame  # one row per layer
    dataset: xr.Dataset  # statistics over (layer, param) [+ feature statistics over (layer, kind, split)]
    weights: xr.Dataset  # the weights store's root
    weight_groups: dict[str, xr.Dataset]
    weight_stats: pd.DataFrame  # tidy, the workflow's stats/weights.csv
    weight_hist: pd.DataFrame
    spectrum: pd.DataFrame  # singular values of the flat reshape (stats/spectrum.csv)
    eigenvalues: dict[str, np.ndarray]  # the ESD of each layer (eigenvalues of W^T W, WeightWatcher's matrices)
    features: xr.Dataset | None = None
    feature_groups: dict[str, xr.Dataset] | None = None
    feature_stats: pd.DataFrame | None = None
    feature_hist: pd.DataFrame | None = None
    gradients: xr.Dataset | None = None
    gradient_groups: dict[str, xr.Dataset] | None = None
    em_ab: pd.DataFrame | None = None
    epoch: int = 0  # the checkpoint's epoch (a dnndist checkpoint's metadata), else 0
    reference_init: str = "torch_default"  # the init init_std and std_ratio_to_init are those of

    SUMMARY = (
        "layer",
        "shape",
        "mean",
        "std",
        "kurtosis",
        "within_unit",
        "within_default_bound",
        "tail_index",
        "alpha",
        "pre_std",
        "post_std",
        "median_emission",
        "median_absorption",
    )

    def __repr__(self) -> str:
        extra = ""
        if self.features is not None:
            extra = f", features over inputs ({self.features.attrs.get('inputs_per_split', '?')})"
        if self.gradients is not None:
            extra += f", emission/absorption of {self.gradients.sizes[dims.SAMPLE]} inputs"
        return (
            f"<Analysis of {self.name}: {len(self.layers)} Conv2d/Linear layers{extra}; .table, .dataset, .write(out)>"
        )

    def summary(self, columns: Sequence[str] = SUMMARY) -> str:
        """A short text table of the per-layer numbers (the CLI prints it); feature columns of
        several splits as ``<split>_pre_std``."""
        cols = [
            c for col in columns for c in self.table if c == col or (col.endswith("_std") and c.endswith(f"_{col}"))
        ]
        return self.table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")

    def write(self, out: str | Path, figures: bool = True) -> list[Path]:
        """The stores the workflow writes (weights.zarr; features.zarr and gradients.zarr with
        inputs), the per-layer table (layers.csv), the tidy tables (weights.csv, spectrum.csv,
        weight_hist.csv, features.csv, feature_hist.csv, em_ab.csv) and, with ``figures``,
        weights.png, features.png and esd/<layer>.png. Returns the paths written."""
        out = Path(out)
        written = [extract.write_store(out / "weights.zarr", self.weights, self.weight_groups, self.weights.attrs)]
        if self.features is not None:
            written.append(
                extract.write_store(out / "features.zarr", self.features, self.feature_groups, self.features.attrs)
            )
        if self.gradients is not None:
            written.append(
                extract.write_store(out / "gradients.zarr", self.gradients, self.gradient_groups, self.gradients.attrs)
            )
        for name, df in (
            ("layers", self.table),
            ("weights", self.weight_stats),
            ("spectrum", self.spectrum),
            ("weight_hist", self.weight_hist),
            ("features", self.feature_stats),
            ("feature_hist", self.feature_hist),
            ("em_ab", self.em_ab),
        ):
            if df is not None:
                write_text(out / f"{name}.csv", df.to_csv(index=False))
                written.append(out / f"{name}.csv")
        if figures:
            written += self.write_figures(out)
        return written

    def write_figures(self, out: str | Path) -> list[Path]:
        from dnndist import plots, resources

        out = Path(out)
        plots.use_style(resources.style_path())  # the workflow's figures' sizes: tick labels that fit
        figs = [("weights.png", lambda: plots.draw_weight_distributions(self.weight_hist))]
        if self.feature_hist is not None and not self.feature_hist.empty:
            figs.append(("features.png", lambda: plots.draw_features(self.feature_hist)))
        w = self.table.set_index("layer")
        for layer, ev in self.eigenvalues.items():
            figs.append(
                (
                    f"esd/{layer}.png",
                    lambda ev=ev, layer=layer: plots.draw_esd(
                        ev, float(w.at[layer, "alpha"]), float(w.at[layer, "alpha_xmin"]), layer
                    ),
                )
            )
        written = []
        for name, draw in figs:
            fig = draw()
            with atomic_path(out / name) as tmp:
                fig.savefig(tmp, format="png", dpi=150)
            plots.plt.close(fig)
            written.append(out / name)
        return written


# --------------------------------------------------------------------------- analyze
def analyze(
    model: Any,
    inputs: Any = None,
    *,
    weights: str | Path | None = None,
    init: str | None = None,
    gain: str | float = "torch",
    bias: str = "auto",
    activation: str = "relu",
    num_classes: int | None = None,
    in_channels: int = 3,
    image_size: int | None = None,
    resize: int | None = None,
    normalize: str = "dataset",
    per_class: int | None = None,
    max_inputs: int | None = None,
    batch_size: int = 256,
    sample_size: int = 16,
    histogram_bins: int = 100,
    kinds: Sequence[str] = ("pre", "post"),
    emission: bool = True,
    gradient_inputs: int = 64,
    gradient_batch_size: int = 32,
    gradient_target: str = "auto",
    gradient_split: str | None = None,
    near_zero: Sequence[float] = STATS_DEFAULTS["near_zero"],
    near_zero_rel: Sequence[float] = STATS_DEFAULTS["near_zero_rel"],
    model_options: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    workers: int | None = None,
    channels_last: bool = True,
) -> Analysis:
    """The workflow's statistics of one model (see the module docstring).

    ``model``: an ``nn.Module``, a registry name or ``torchvision:<name>`` (``load_model``);
    ``weights``: a local state dict loaded into it. ``inputs`` (optional): an image folder or
    .tar.gz (``<class>/<image>`` or ``<split>/<class>/<image>``; decoded at ``image_size``, default
    224 for torchvision models and 32 otherwise, and normalised by ``normalize``: dataset, imagenet
    or none), a tensor of model inputs, or a DataLoader yielding x or (x, y); with them, feature
    statistics over at most ``max_inputs`` inputs per split (``kinds``: pre, post) and, for conv
    layers, emission / absorption of the first ``gradient_inputs`` inputs (``emission``) of the split
    ``gradient_split`` (default: the first) against the labels (``gradient_target`` label; auto: when the inputs have labels the model can output,
    else its own prediction). ``init``, ``gain``, ``bias``, ``activation``: the init the weights
    are compared with (``init_std``, ``std_ratio_to_init``; ``init`` default: the checkpoint's own,
    else torch_default, with the weights labelled init ``unknown``). The model is used in eval mode on
    ``device`` (default: where its parameters are) and left as it was; with ``channels_last``
    (default, as the workflow's ``train.channels_last``) its features and gradients are computed
    on a copy in that memory format (faster on a CPU, and the workflow's numbers exactly)."""
    opts = _Options.of(locals())
    opts.check()
    module, name = _load(model, num_classes, in_channels, opts)
    specs = layer_specs(module)
    settings, origin, label = _settings(opts, name)
    dev = _device(module, device)
    result = _weight_analysis(module, specs, name, settings, origin, label)
    if inputs is not None:
        _features(result, module, inputs, origin, dev, opts)
    result.table = per_layer_table(result)
    result.dataset = per_layer_dataset(result)
    return result


@dataclasses.dataclass(frozen=True)
class _Options:
    """``analyze``'s options: its parameters but the model, its shape, the inputs and the device
    (``image_size`` defaulted for the model)."""

    weights: str | Path | None
    init: str | None
    gain: str | float
    bias: str
    activation: str
    image_size: int
    resize: int | None
    normalize: str
    per_class: int | None
    max_inputs: int | None
    batch_size: int
    sample_size: int
    histogram_bins: int
    kinds: Sequence[str]
    emission: bool
    gradient_inputs: int
    gradient_batch_size: int
    gradient_target: str
    gradient_split: str | None
    near_zero: Sequence[float]
    near_zero_rel: Sequence[float]
    model_options: Mapping[str, Any] | None
    workers: int | None
    channels_last: bool

    @classmethod
    def of(cls, args: Mapping[str, Any]) -> _Options:
        """The options among ``analyze``'s arguments (its ``locals()``). Where not given, a checkpoint
        of the workflow's gives the image size and, for its own registry model, the model options
        (its metadata); otherwise the image size is 224 for torchvision models and 32 for others."""
        model, image_size, options = args["model"], args["image_size"], args["model_options"]
        meta = checkpoint_meta(args["weights"]) if args["weights"] is not None else {}
        if image_size is None and meta.get("input"):
            image_size = int(json.loads(meta["input"])[-1])
        if image_size is None:
            image_size = 224 if isinstance(model, str) and model.startswith(TORCHVISION) else 32
        saved = json.loads(meta["model"]) if meta.get("model") else {}
        if options is None and isinstance(model, str) and saved.get("name") == model:
            options = {k: v for k, v in saved.items() if k not in ("name", "weights")}
        fields = {f.name: args[f.name] for f in dataclasses.fields(cls)}
        return cls(**{**fields, "image_size": image_size, "model_options": options})

    def check(self) -> None:
        """DnndistError for an unknown init, gain, bias, activation or gradient target, or a size below 1."""
        init, gain = self.init, self.gain
        if init is not None and init not in inits.INIT_NAMES:
            raise DnndistError(f"unknown init {init!r}; known: {', '.join(inits.INIT_NAMES)}")
        if not (
            gain in ("torch", "relu") or (isinstance(gain, (int, float)) and not isinstance(gain, bool) and gain > 0)
        ):
            raise DnndistError(f"gain must be torch, relu or a positive number, got {gain!r}")
        if self.bias not in ("auto", "zeros", "torch_default"):
            raise DnndistError(f"bias must be auto, zeros or torch_default, got {self.bias!r}")
        if self.activation not in ("relu", "leaky_relu"):
            raise DnndistError(f"activation must be relu or leaky_relu, got {self.activation!r}")
        if self.gradient_target not in ("auto", "label", "predicted"):
            raise DnndistError(f"gradient_target must be auto, label or predicted, got {self.gradient_target!r}")
        for key in ("batch_size", "sample_size", "histogram_bins", "gradient_batch_size"):
            value = getattr(self, key)
            if int(value) < 1:
                raise DnndistError(f"{key} must be a positive integer, got {value}")


def _load(model: Any, num_classes: int | None, in_channels: int, opts: _Options) -> tuple[nn.Module, str]:
    """``load_model`` with the options' weights, image size and model options."""
    return load_model(
        model,
        opts.weights,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=opts.image_size,
        options=opts.model_options,
    )


@dataclasses.dataclass(frozen=True)
class _Label:
    """What the analysed weights are: the epoch they are labelled with and the init compared with."""

    epoch: int
    reference_init: str


def _settings(opts: _Options, name: str) -> tuple[dict[str, Any], Origin, _Label]:
    """The run settings the statistics read (model ``name``, the init label, seed and epoch, the
    reference init) and the stores' origin. A checkpoint of the workflow labels them with its own
    init, seed and epoch (its metadata); other weights are init ``unknown`` at epoch 0."""
    meta = checkpoint_meta(opts.weights) if opts.weights is not None else {}
    known = opts.init or meta.get("init")
    model_settings = {
        **MODEL_DEFAULTS,
        **(opts.model_options or {}),
        "name": name,
        "activation": opts.activation,
        "weights": str(opts.weights) if opts.weights is not None else None,
    }
    seed = int(meta.get("seed", 0))
    settings = {
        "run": {"variant": name, "init_name": known or UNKNOWN_INIT, "seed": seed},
        "model": model_settings,
        "init": {"gain": opts.gain, "bias": opts.bias},
        "checkpoint_epochs": [int(meta.get("epoch", 0))],
        "stats": {"near_zero": list(opts.near_zero), "near_zero_rel": list(opts.near_zero_rel)},
    }
    if meta:
        log.info(
            "%s: a dnndist checkpoint of %s/%s/seed%s at epoch %s",
            opts.weights,
            meta.get("variant"),
            meta.get("init"),
            meta.get("seed"),
            meta.get("epoch"),
        )
    origin = Origin(
        RunId(name, known or UNKNOWN_INIT, seed),
        ModelSettings.from_dict(model_settings),
        InitScheme(opts.gain, opts.bias),
        config_hash(settings),
    )
    return settings, origin, _Label(int(meta.get("epoch", 0)), known or "torch_default")


def _device(module: nn.Module, device: str | torch.device | None) -> torch.device:
    """The device to analyse on: ``device``, or where the module's parameters are (cpu without any)."""
    params = list(module.parameters())
    if device is None:
        return params[0].device if params else torch.device("cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise DnndistError(f"device {str(device)!r}: CUDA is not available on this machine")
    return resolve_device(str(device))


def _weight_analysis(
    module: nn.Module,
    specs: list[models.LayerSpec],
    name: str,
    settings: dict[str, Any],
    origin: Origin,
    label: _Label,
) -> Analysis:
    """The analysis of the module's weights: the weights store, its statistics, spectrum,
    eigenvalues and histograms (no features yet, no per-layer views)."""
    epoch, reference = label.epoch, label.reference_init
    root, groups = extract.weight_groups(origin, [epoch], specs, [_state(module, specs)], [False], reference)
    root = root.assign_attrs(
        **extract.store_attrs(origin, "weights", torch.device("cpu")),
        analysed_with="dnndist analyze",
        reference_init=reference,
    )
    with _one_blas_thread():
        stats_settings = StatsSettings.from_dict({"stats": settings.get("stats", {})})
        weight_stats, spectrum = stats.weight_and_spectrum_tables([groups], stats_settings)[0]
        eigenvalues = {
            s.name: spectral.esd(
                spectral.weight_matrices(groups[s.name]["weight"].values.reshape(groups[s.name]["weight"].shape[4:]))[0]
            )
            for s in specs
        }
    hist = stats.weight_histograms(groups, [epoch])
    return Analysis(
        name,
        specs,
        settings,
        pd.DataFrame(),
        xr.Dataset(),
        root,
        groups,
        weight_stats,
        hist.assign(depth=hist[dims.LAYER].map({s.name: s.depth for s in specs})),
        spectrum,
        eigenvalues,
        epoch=epoch,
        reference_init=reference,
    )


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """numpy's BLAS/LAPACK on one thread (where threadpoolctl is installed): the Gram matrices and
    eigenvalue calls of the statistics are on matrices of at most a few thousand columns, where OpenBLAS's
    threads gain little on an idle machine and lose up to 50x on a busy one."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def _limited(
    split: _Split,
    max_inputs: int | None,
    dev: torch.device,
    dtype: torch.dtype,
    labels: list[torch.Tensor],
    feed: _GradientPass | None,
) -> Iterator[torch.Tensor]:
    """The model inputs of a split on ``dev`` (at most ``max_inputs``); records the labels (-1: none)
    and hands each batch to ``feed`` (the gradient pass, which takes the inputs it still needs)."""
    seen = 0
    for x, y in split.batches:
        if max_inputs is not None and seen >= max_inputs:
            break
        if max_inputs is not None:
            x, y = x[: max_inputs - seen], (y[: max_inputs - seen] if y is not None else None)
        if len(x) == 0:
            continue
        if not x.is_floating_point():
            raise DnndistError(
                f"inputs must be floating-point model inputs, got {x.dtype} (normalise images first, "
                "or pass an image folder)"
            )
        labels.append(y.to(torch.int64).cpu() if y is not None else torch.full((len(x),), -1, dtype=torch.int64))
        x = x.to(dev, dtype)
        if feed is not None:
            feed.add(x, y.to(dev) if y is not None else None)
        seen += len(x)
        yield x


def _features(
    result: Analysis, module: nn.Module, inputs: Any, origin: Origin, dev: torch.device, opts: _Options
) -> None:
    """Feature statistics and histograms of the inputs (``input_splits``) per split and, with
    ``opts.emission``, emission / absorption of the conv layers, into ``result``."""
    splits = input_splits(
        inputs,
        batch_size=opts.batch_size,
        image_size=opts.image_size,
        resize=opts.resize,
        normalize=opts.normalize,
        per_class=opts.per_class,
        workers=opts.workers,
    )
    kinds = list(opts.kinds)
    gradient_inputs = opts.gradient_inputs if opts.emission else 0
    bad = sorted(set(kinds) - {"pre", "post"})
    if bad:
        raise DnndistError(f"kinds must be pre and/or post, got {bad}")
    specs = result.layers
    was_training = module.training
    params = list(module.parameters())
    dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float32
    if params and (params[0].device != dev or opts.channels_last):  # the caller's module stays as it is
        fmt = torch.channels_last if opts.channels_last else torch.contiguous_format
        module = copy.deepcopy(module).to(device=dev, memory_format=fmt)
    arrays = extract.FeatureArrays(specs, kinds, [s.name for s in splits], [result.epoch], opts.histogram_bins)
    convs = _emission_convs(module, specs) if gradient_inputs else []
    gradient_split = _gradient_split(splits, opts)
    module.eval()
    grads = _GradientPass(module, convs, gradient_inputs, opts) if gradient_inputs and convs else None
    try:
        passes, labels = _feature_passes(module, splits, arrays, dev, dtype, opts, grads, gradient_split.name)
    finally:
        module.train(was_training)
        if grads is not None:
            grads.close()
    _store_features(result, arrays, passes, labels, splits, origin, dev, kinds)
    if grads is not None and grads.done:
        grads.store(result, gradient_split.name, origin, dev)


def _emission_convs(module: nn.Module, specs: list[models.LayerSpec]) -> list[models.LayerSpec]:
    """The conv layers emission/absorption can describe (zero padding); the others skipped with a log line."""
    modules = dict(module.named_modules())
    out = []
    for s in specs:
        if s.kind != "conv":
            continue
        try:
            conv_geometry(modules[s.name])
        except ValueError as exc:
            log.warning("emission/absorption skips layer %s: %s", s.name, exc)
            continue
        out.append(s)
    return out


def _gradient_split(splits: list[_Split], opts: _Options) -> _Split:
    """The split whose first inputs the gradient pass takes: ``gradient_split``, else the first."""
    if opts.gradient_split is None:
        return splits[0]
    named = [s for s in splits if s.name == opts.gradient_split]
    if not named:
        raise DnndistError(
            f"gradient split {opts.gradient_split!r} is not among the inputs' splits ({', '.join(s.name for s in splits)})"
        )
    return named[0]


_Pass = tuple[dict[tuple[str, str], Any], dict[tuple[str, str], np.ndarray]]  # extract.feature_pass's result


def _feature_passes(
    module: nn.Module,
    splits: list[_Split],
    arrays: extract.FeatureArrays,
    dev: torch.device,
    dtype: torch.dtype,
    opts: _Options,
    grads: _GradientPass | None,
    gradient_split: str,
) -> tuple[list[_Pass], dict[str, list[torch.Tensor]]]:
    """One feature pass per split (``extract.feature_pass``): the passes and the labels per split;
    the gradient split's inputs also go through the gradient pass ``grads`` as they are decoded."""
    passes, labels = [], {}
    for split in splits:
        labels[split.name] = []
        feed = grads if split.name == gradient_split else None
        batches = _limited(split, opts.max_inputs, dev, dtype, labels[split.name], feed)
        try:
            passes.append(extract.feature_pass(module, arrays.modules, batches, opts.histogram_bins, opts.sample_size))
        except DnndistError:
            raise
        except (RuntimeError, ValueError, TypeError) as exc:
            raise DnndistError(f"the model cannot run on the inputs ({_first_line(exc)})") from None
        log.info("features: %s done (%d inputs)", split.name, sum(len(v) for v in labels[split.name]))
    return passes, labels


def _store_features(
    result: Analysis,
    arrays: extract.FeatureArrays,
    passes: list[_Pass],
    labels: dict[str, list[torch.Tensor]],
    splits: list[_Split],
    origin: Origin,
    dev: torch.device,
    kinds: list[str],
) -> None:
    """The features store (a common sample of the splits), its statistics and histograms, into ``result``."""
    n_sample = min(len(next(iter(s.values()))) for _, s in passes) if arrays.modules else 0
    for si, (feats, sample) in enumerate(passes):
        arrays.add(0, si, feats, {k: v[:n_sample] for k, v in sample.items()})
    label_of = {s: torch.cat(v).numpy() for s, v in labels.items()}
    idx = np.stack([np.arange(n_sample) for _ in splits])
    lab = np.stack([label_of[s.name][:n_sample] for s in splits])
    root, groups = arrays.datasets(origin.run, idx, lab)
    result.features = root.assign_attrs(
        **extract.store_attrs(origin, "features", dev),
        analysed_with="dnndist analyze",
        inputs_per_split=", ".join(f"{s}: {len(v)}" for s, v in label_of.items()),
    )
    result.feature_groups = groups
    result.feature_stats = stats.feature_table(result.features)
    hist = stats.feature_histograms(result.features, [result.epoch], kind="pre" if "pre" in kinds else kinds[0])
    result.feature_hist = (
        hist.assign(depth=hist[dims.LAYER].map({s.name: s.depth for s in result.layers})) if not hist.empty else hist
    )


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


class _GradientPass:
    """Emission / absorption of every conv layer over the first ``n`` inputs, computed batch by
    batch as the inputs are decoded (``add``; ``extract.gradient_batch``, as the gradients stage
    computes them) on a copy of the model (the caller's gradients stay), with progress in the log."""

    PROGRESS_EVERY_S = 10.0

    def __init__(self, module: nn.Module, convs: list[models.LayerSpec], n: int, opts: _Options) -> None:
        self.model = copy.deepcopy(module).eval()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.convs, self.n, self.batch_size, self.target = convs, n, opts.gradient_batch_size, opts.gradient_target
        self.rec, self.grads = extract.gradient_recorder(self.model, {s.name for s in convs})
        self.losses: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.em: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {s.name: ([], []) for s in convs}
        self.seen = 0
        self.busy = 0.0  # seconds in this pass (the feature pass runs between its batches)
        self.t0 = self.last = time.perf_counter()

    @property
    def done(self) -> int:
        return self.seen

    def add(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        """The gradient pass of the inputs of ``x`` (labels ``y``) it still needs."""
        take = min(len(x), self.n - self.seen)
        if take <= 0:
            return
        if self.target == "auto":  # resolved on the first batch
            self.target = _gradient_target(self.model, y, "auto")
        elif self.target == "label" and y is None:
            _gradient_target(self.model, y, "label")
        with torch.enable_grad():  # the feature pass runs under no_grad
            for xb, yb in zip(x[:take].split(self.batch_size), _split_or_none(y, take, self.batch_size)):
                t = time.perf_counter()
                self._batch(xb, yb)
                self.busy += time.perf_counter() - t
                self._progress()  # every PROGRESS_EVERY_S, within a large chunk of inputs too

    def _batch(self, xb: torch.Tensor, yb: torch.Tensor | None) -> None:
        try:
            loss, em_ab = extract.gradient_batch(self.model, xb, yb, self.target, self.rec, self.grads, self.convs)
        except DnndistError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise DnndistError(
                f"emission/absorption needs a classifier with (batch, classes) logits ({_first_line(exc)}); "
                "analyze without it: emission=False / --no-emission"
            ) from None
        self.losses.append(loss.detach().double().cpu().numpy())
        self.labels.append(yb.cpu().numpy() if yb is not None else np.full(len(xb), -1, dtype=np.int64))
        for name, (e, a) in em_ab.items():
            self.em[name][0].append(e.double().cpu().numpy())
            self.em[name][1].append(a.double().cpu().numpy())
        self.seen += len(xb)

    def _progress(self) -> None:
        now = time.perf_counter()
        if self.seen < self.n and now - self.last < self.PROGRESS_EVERY_S:
            return
        self.last, took = now, now - self.t0
        left = took / self.seen * (self.n - self.seen) if self.seen < self.n else 0.0
        log.info(
            "emission/absorption: %d / %d inputs, %.0f s (%.3f s per input in this pass%s)",
            self.seen,
            self.n,
            took,
            self.busy / self.seen,
            f"; about {left:.0f} s left" if left else "",
        )

    def close(self) -> None:
        self.rec.close()

    def store(self, result: Analysis, split: str, origin: Origin, dev: torch.device) -> None:
        """The gradients store (root and one group per conv layer) and the em/ab table, into ``result``."""
        epoch = result.epoch
        root = _gradient_root(
            np.concatenate(self.losses)[None], np.concatenate(self.labels), split, self.target, self.convs, epoch
        )
        groups = {}
        for s in self.convs:
            e, a = (np.concatenate(v)[None] for v in self.em[s.name])
            groups[s.name] = extract.finish(_em_ab_dataset(s, e, a, epoch), origin.run)
        result.gradients = extract.finish(root, origin.run).assign_attrs(
            **extract.store_attrs(origin, "gradients", dev), analysed_with="dnndist analyze"
        )
        result.gradient_groups = groups
        result.em_ab = stats.em_ab_table(groups, epoch)


def _split_or_none(y: torch.Tensor | None, take: int, size: int) -> Iterable[torch.Tensor | None]:
    return y[:take].split(size) if y is not None else [None] * len(range(0, take, size))


def _gradient_target(gmodel: nn.Module, y: torch.Tensor | None, target: str) -> str:
    """The gradient target, auto resolved: label when there are labels the model's last linear
    layer can output, else predicted; DnndistError for label without labels."""
    if target == "auto":
        heads = [m for m in gmodel.modules() if isinstance(m, nn.Linear)]
        target = (
            "label"
            if y is not None and heads and int(y.max()) < heads[-1].out_features and int(y.min()) >= 0
            else "predicted"
        )
    if target == "label" and y is None:
        raise DnndistError(
            "gradient_target 'label' needs inputs with labels (an image folder or a DataLoader of (x, y))"
        )
    return target


def _gradient_root(
    loss: np.ndarray, labels: np.ndarray, split: str, target: str, convs: list[models.LayerSpec], epoch: int
) -> xr.Dataset:
    """The gradients store's root: the per-sample loss (epoch x sample), the inputs' indices and labels."""
    n = len(labels)
    return xr.Dataset(
        {
            "loss": (
                (dims.EPOCH, dims.SAMPLE),
                loss,
                {"long_name": "per-sample cross-entropy", "units": "nat"},
            ),
            "sample_index": (
                (dims.SAMPLE,),
                np.arange(n),
                {"long_name": f"index of the input in the {split} split", "units": "1"},
            ),
            "sample_label": ((dims.SAMPLE,), labels, {"long_name": "class label (-1: none)", "units": "1"}),
        },
        coords={dims.EPOCH: [epoch], **extract.layer_coords(convs)},
        attrs={"gradient_split": split, "gradient_target": target},
    )


def _em_ab_dataset(s: models.LayerSpec, e: np.ndarray, a: np.ndarray, epoch: int) -> xr.Dataset:
    """One conv layer's group of the gradients store: emission ``e`` and absorption ``a`` (epoch x sample x channel)."""
    return xr.Dataset(
        {
            "em": (
                (dims.EPOCH, dims.SAMPLE, dims.OUT_CHANNEL),
                e,
                {"long_name": f"{s.name} emission", "units": units.ACTIVATION_GRADIENT},
            ),
            "ab": (
                (dims.EPOCH, dims.SAMPLE, dims.IN_CHANNEL),
                a,
                {"long_name": f"{s.name} absorption", "units": units.ACTIVATION_GRADIENT},
            ),
        },
        coords={dims.EPOCH: [epoch]},
        attrs={"layer": s.name, "depth": s.depth},
    )


# --------------------------------------------------------------------------- per-layer views
LONG_NAMES = {
    "count": "number of finite values",
    "nonfinite": "number of non-finite values",
    "ndim": "tensor rank",
    "mean": "mean",
    "std": "standard deviation",
    "min": "minimum",
    "max": "maximum",
    "skewness": "skewness",
    "kurtosis": "excess kurtosis",
    "within_unit": "fraction of values in [-1, 1]",
    "within_default_bound": "fraction of values inside PyTorch's default-init bound 1/sqrt(fan_in)",
    "ks_normal": "Kolmogorov-Smirnov distance to the fitted normal",
    "tail_index": "Hill tail index of |w|",
    "ks_normal_null95": "95th percentile of ks_normal for a Gaussian sample of this size",
    "kurtosis_null_lo": "2.5 % point of the excess kurtosis of a Gaussian sample of this size",
    "kurtosis_null_hi": "97.5 % point of the excess kurtosis of a Gaussian sample of this size",
    "tail_index_gaussian": "median Hill tail index of a Gaussian sample of this size",
    "tail_index_uniform": "median Hill tail index of a uniform sample of this size",
    "tail_k": "values the Hill estimator uses",
    "std_ratio_to_init": "std / the reference init's std",
    "fan_in": "fan-in",
    "fan_out": "fan-out",
    "init_std": "std of the reference init",
    "init_bound": "bound of the reference init",
    "gain": "gain of the reference init",
    "alpha": "power-law exponent of the ESD tail (WeightWatcher)",
    "alpha_fitted": "1 when alpha was fitted",
    "alpha_flat_esd": "1 when the fitted ESD spans less than a factor 2 (flat: alpha not a tail exponent)",
    "alpha_few_evals": "1 when fewer than 50 eigenvalues were fitted (alpha uncertain)",
    "alpha_xmin": "lower end of the fitted ESD tail",
    "alpha_ks_distance": "KS distance of the ESD tail to the power law",
    "alpha_sigma": "standard error of alpha",
    "num_pl_spikes": "eigenvalues in the fitted tail",
    "alpha_weighted": "alpha * log10(lambda_max)",
    "log_alpha_norm": "log10 of the sum of eigenvalues ** alpha",
    "lambda_max": "largest eigenvalue of W^T W",
    "log_spectral_norm": "log10(lambda_max)",
    "log_norm": "log10 of the sum of eigenvalues",
    "stable_rank": "sum of eigenvalues / lambda_max",
    "mp_softrank": "Marchenko-Pastur bulk edge / lambda_max",
    "num_evals": "number of eigenvalues",
    "matrix_rank": "eigenvalues above round-off",
    "flat_spectral_norm": "largest singular value of the C_out x fan_in reshape",
    "flat_stable_rank": "stable rank of the C_out x fan_in reshape",
    "default_bound": "PyTorch's default-init bound 1/sqrt(fan_in)",
    "max_abs": "largest |value|",
    "params": "number of parameters",
}


def _long_name(stat: str) -> str:
    if stat in LONG_NAMES:
        return LONG_NAMES[stat]
    m = re.fullmatch(r"q(\d\d)", stat)
    if m:
        return f"{int(m[1])} % quantile"
    m = re.fullmatch(r"near_zero_(abs|rel)_(.+)", stat)
    if m:
        return f"fraction of values with |x| < {m[2]}" + (" std" if m[1] == "rel" else "")
    return stat.replace("_", " ")


def per_layer_table(result: Analysis) -> pd.DataFrame:
    """One row per layer (depth order): shape and size, every weight statistic of the tidy table,
    the bias statistics prefixed ``bias_``, and with inputs the feature moments (``pre_std``, ...;
    ``<split>_pre_std`` for several splits) and the emission summary of conv layers."""
    ws = result.weight_stats
    wide = ws.pivot_table(index=[dims.LAYER, dims.PARAM], columns="statistic", values="value", sort=False, dropna=False)
    stat_order = list(dict.fromkeys(ws["statistic"]))
    rows = []
    for s in result.layers:
        g = result.weight_groups[s.name]
        shape = tuple(g["weight"].shape[4:])
        row: dict[str, Any] = {
            "layer": s.name,
            "depth": s.depth,
            "layer_kind": s.kind,
            "shape": "x".join(map(str, shape)),
            "params": int(np.prod(shape)) + (int(g["bias"].shape[-1]) if "bias" in g else 0),
        }
        w = wide.loc[(s.name, "weight")]
        row.update({k: w[k] for k in stat_order if k in w.index and pd.notna(w[k])})
        row["default_bound"] = 1.0 / math.sqrt(row["fan_in"])
        row["max_abs"] = max(abs(row["min"]), abs(row["max"]))
        if (s.name, "bias") in wide.index:
            b = wide.loc[(s.name, "bias")]
            row.update({f"bias_{k}": b[k] for k in stat_order if k in b.index and pd.notna(b[k])})
        rows.append(row)
    table = pd.DataFrame(rows)
    front = [
        "layer",
        "depth",
        "layer_kind",
        "shape",
        "params",
        "fan_in",
        "fan_out",
        "default_bound",
        "mean",
        "std",
        "min",
        "max",
        "max_abs",
    ]
    table = table[[c for c in front if c in table] + [c for c in table if c not in front]]
    if result.feature_stats is not None:
        table = table.merge(_feature_columns(result.feature_stats), left_on="layer", right_index=True, how="left")
    if result.em_ab is not None and not result.em_ab.empty:
        em = tables.emission_summary(result.em_ab).drop(columns=["variant", "init", "seed"]).set_index("layer")
        table = table.merge(em, left_on="layer", right_index=True, how="left")
    return table


def _feature_columns(fs: pd.DataFrame) -> pd.DataFrame:
    """The feature statistics one column per (split, kind, statistic) -- ``pre_std``, or
    ``<split>_pre_std`` for several splits --, one row per layer, in the table's order."""
    multi = fs[dims.SPLIT].nunique() > 1
    fs = fs.assign(
        column=[
            (f"{sp}_" if multi else "") + f"{k}_{st}"
            for sp, k, st in zip(fs[dims.SPLIT], fs[dims.KIND], fs["statistic"])
        ]
    )
    feat = fs.pivot_table(index=dims.LAYER, columns="column", values="value", sort=False)
    rank = {k: [*dict.fromkeys(fs[k])] for k in (dims.SPLIT, dims.KIND, "statistic")}
    cols = sorted(
        dict.fromkeys(zip(fs[dims.SPLIT], fs[dims.KIND], fs["statistic"], fs["column"])),  # split, kind, statistic
        key=lambda c: (rank[dims.SPLIT].index(c[0]), rank[dims.KIND].index(c[1]), rank["statistic"].index(c[2])),
    )
    return feat[[c[3] for c in cols if c[3] in feat]]


def per_layer_dataset(result: Analysis) -> xr.Dataset:
    """``table``'s numbers with named dims: weight statistics over (layer, param), feature
    statistics over (layer, kind, split) as ``feature_<statistic>``; layer coordinates depth and
    layer_kind; long_name/units on every variable; the weights store's provenance as attrs."""
    layers = [s.name for s in result.layers]
    ws = result.weight_stats.set_index([dims.LAYER, dims.PARAM, "statistic"])["value"]
    ws = ws[~ws.index.duplicated()].unstack("statistic")
    ds = xr.Dataset.from_dataframe(ws[list(dict.fromkeys(result.weight_stats["statistic"]))])
    ds = ds.reindex({dims.LAYER: layers, dims.PARAM: [p for p in ("weight", "bias") if p in ds[dims.PARAM].values]})
    for name in ds.data_vars:
        ds[name].attrs = {"long_name": _long_name(name), "units": "1"}
    ds = ds.rename({k: v for k, v in DATASET_NAMES.items() if k in ds.data_vars})  # not Dataset methods
    if result.feature_stats is not None:
        fs = result.feature_stats.set_index([dims.LAYER, dims.KIND, dims.SPLIT, "statistic"])["value"].unstack(
            "statistic"
        )
        f = xr.Dataset.from_dataframe(fs).reindex({dims.LAYER: layers})
        for name in list(f.data_vars):
            f[name].attrs = {"long_name": f"feature {_long_name(name)}", "units": "1"}
        ds = ds.merge(f.rename({n: f"feature_{n}" for n in f.data_vars}))
    ds = ds.assign_coords(
        depth=(dims.LAYER, [s.depth for s in result.layers]), layer_kind=(dims.LAYER, [s.kind for s in result.layers])
    )
    dims.check(ds.dims, "analysis dataset")
    return ds.assign_attrs(**{k: v for k, v in result.weights.attrs.items()}, model=result.name)
