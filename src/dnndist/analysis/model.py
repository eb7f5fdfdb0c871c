"""The model ``analyze`` reads: a registry or torchvision model with local weights, its analysed layers, and their tensors."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnndist import DnndistError, models
from dnndist.settings import ModelSettings, StatsSettings

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
