"""The weights store: every weight and bias tensor at each checkpoint, with the per-layer table (fans, the init's theoretical std and bound)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from dnndist import (
    conventions,
    data,
    dims,
    inits,
    models,
    units,
)
from dnndist.extract.store import (
    NORM_UNITS,
    TABLE_UNITS,
    _out_dim,
    _weight_dims,
    build_model,
    checkpoint_files,
    extract_epochs,
    finish,
    layer_coords,
    load_weights,
    log,
    store_attrs,
    write_store,
)
from dnndist.settings import Origin, RunSettings

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
        groups[spec.name] = finish(ds, origin.run)
    return finish(_weight_root(epochs, specs, diverged, table), origin.run), groups


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
        coords={dims.EPOCH: epochs, **layer_coords(specs)},
    )
