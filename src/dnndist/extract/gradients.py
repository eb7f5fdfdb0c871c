"""The gradients store: loss, parameter gradients and per-input emission/absorption of every conv layer over the labelled gradient batches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from dnndist import (
    DnndistError,
    dims,
    integrity,
    models,
    units,
)
from dnndist.extract.inputs import Inputs, Recorder, extraction_setup
from dnndist.extract.store import (
    PARAM_GRADIENT_UNITS,
    _out_dim,
    _to_zarr,
    _weight_dims,
    checkpoint_files,
    extract_epochs,
    finish,
    layer_coords,
    load_weights,
    log,
    store_attrs,
)
from dnndist.gradients import conv_geometry, emission_absorption
from dnndist.io import atomic_path
from dnndist.settings import ExtractSection, ExtractSettings, RunId

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
    ex, device, inputs, model, specs = extraction_setup(settings, store)
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
        root = finish(root, settings.run).assign_attrs(**attrs)
        _to_zarr(root, tmp, mode="a")
        for s in specs:
            ds = finish(_gradient_group(s, plan, arrays, ex.parameter_gradients), settings.run)
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
        coords={dims.EPOCH: plan.epochs, **layer_coords(plan.specs), dims.PARAM: list(PARAMS)},
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
        ds = finish(xr.Dataset(v, coords={dims.EPOCH: epochs}, attrs={"layer": s.name, "depth": s.depth}), run)
        enc = {k: {"chunks": (1, 1, 1, 1, bs, var.shape[-1])} for k, var in ds.data_vars.items()}
        _to_zarr(ds, tmp, encoding=enc, group=s.name, mode="w", compute=False)
    root = zarr.open_group(str(tmp), mode="r+", zarr_format=3)
    return {s.name: {k: root[s.name][k].with_config({"write_empty_chunks": True}) for k in ("em", "ab")} for s in convs}
