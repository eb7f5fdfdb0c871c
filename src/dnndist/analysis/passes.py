"""The passes of ``analyze``: weight statistics and spectra, features over the inputs, emission and absorption."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import nn

from dnndist import DnndistError, dims, extract, models, spectral, stats, units
from dnndist.analysis.inputs import _Split, input_splits
from dnndist.analysis.model import _state, log
from dnndist.analysis.options import _Label, _Options
from dnndist.analysis.result import Analysis
from dnndist.gradients import conv_geometry
from dnndist.settings import Origin, StatsSettings


def _weight_analysis(
    module: nn.Module,
    specs: list[models.LayerSpec],
    name: str,
    settings: dict[str, Any],
    origin: Origin,
    label: _Label,
    tables: bool = True,
) -> Analysis:
    """The analysis of the module's weights: the weights store, its statistics, spectrum,
    eigenvalues and histograms (no features yet, no per-layer views; ``tables=False``: the store only)."""
    epoch, reference = label.epoch, label.reference_init
    root, groups = extract.weight_groups(origin, [epoch], specs, [_state(module, specs)], [False], reference)
    root = root.assign_attrs(
        **extract.store_attrs(origin, "weights", torch.device("cpu")),
        analysed_with="dnndist analyze",
        reference_init=reference,
    )
    if not tables:
        empty = pd.DataFrame()
        return Analysis(
            name,
            specs,
            settings,
            empty,
            xr.Dataset(),
            root,
            groups,
            empty,
            empty,
            empty,
            {},
            epoch=epoch,
            reference_init=reference,
        )
    with one_blas_thread():
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
def one_blas_thread() -> Iterator[None]:
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
    _store_features(result, arrays, passes, labels, splits, origin, dev, kinds, opts.tables)
    if grads is not None and grads.done:
        grads.store(result, gradient_split.name, origin, dev, opts.tables)


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
    tables: bool = True,
) -> None:
    """The features store (a common sample of the splits) and, with ``tables``, its statistics and
    histograms, into ``result``."""
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
    if not tables:
        return
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

    def store(self, result: Analysis, split: str, origin: Origin, dev: torch.device, tables: bool = True) -> None:
        """The gradients store (root and one group per conv layer) and, with ``tables``, the em/ab
        table, into ``result``."""
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
        if tables:
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
