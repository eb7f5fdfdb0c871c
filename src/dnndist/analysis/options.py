"""``analyze``'s options, the settings and labels of what it read (a checkpoint's own metadata), and the device."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnndist import DnndistError, inits
from dnndist.analysis.model import MODEL_DEFAULTS, TORCHVISION, load_model, log
from dnndist.checkpoints import checkpoint_meta, resolve_device
from dnndist.conventions import UNKNOWN_INIT
from dnndist.provenance import config_hash
from dnndist.settings import InitScheme, ModelSettings, Origin, RunId


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
    tables: bool = True

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
