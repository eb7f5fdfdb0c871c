"""Model registry. Every model is an ``nn.Sequential`` with named children, plus a list of
``LayerSpec`` naming the analysed layers (their weight module, and the modules whose
outputs are the layer's pre- and post-activation features)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from dnndist import DnndistError


@dataclass(frozen=True)
class LayerSpec:
    name: str  # e.g. conv1
    kind: str  # conv | linear
    depth: int  # 1-based position among weight layers
    pre: str  # module whose output is the pre-activation feature (the layer itself, or its norm)
    post: str | None  # activation module (post-activation feature), None for the classifier
    analysed: bool  # starred in the paper


class Net(nn.Sequential):
    """A sequential model that knows its analysed layers."""

    def __init__(self, modules: dict[str, nn.Module], layers: list[LayerSpec], settings: Mapping[str, Any]):
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self.layer_specs = layers
        self.settings = dict(settings)


def activation(settings: Mapping[str, Any]) -> nn.Module:
    if settings["activation"] == "relu":
        return nn.ReLU()
    return nn.LeakyReLU(settings["negative_slope"])


def _pool_positions(depth: int) -> set[int]:
    """After which conv layers (1-based) to max-pool: thirds of the depth (3 -> {1, 2})."""
    return {p for p in (round(depth / 3), round(2 * depth / 3)) if 1 <= p <= depth}


def plain_cnn(settings: Mapping[str, Any], in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> Net:
    """Conv(3x3, pad 1) [+BN] + act blocks, max-pool after 1/3 and 2/3 of the depth,
    then Linear(hidden) + act and the classifier. depth=3, width=16 is the paper CNN."""
    depth, width, hidden = settings["depth"], settings["width"], settings["hidden"]
    modules: dict[str, nn.Module] = {}
    layers: list[LayerSpec] = []
    pools = _pool_positions(depth)
    size, cin = image_size, in_channels
    for i in range(1, depth + 1):
        modules[f"conv{i}"] = nn.Conv2d(cin, width, 3, 1, 1)
        pre = f"conv{i}"
        if settings["norm"] == "batch":
            modules[f"norm{i}"] = nn.BatchNorm2d(width)
            pre = f"norm{i}"
        modules[f"act{i}"] = activation(settings)
        layers.append(LayerSpec(f"conv{i}", "conv", i, pre, f"act{i}", True))
        if i in pools:
            modules[f"pool{i}"] = nn.MaxPool2d(2)
            size //= 2
        cin = width
    modules["flatten"] = nn.Flatten()
    modules["fc1"] = nn.Linear(width * size * size, hidden)
    modules[f"act{depth + 1}"] = activation(settings)
    layers.append(LayerSpec("fc1", "linear", depth + 1, "fc1", f"act{depth + 1}", True))
    modules["fc2"] = nn.Linear(hidden, num_classes)
    layers.append(LayerSpec("fc2", "linear", depth + 2, "fc2", None, False))
    return Net(modules, layers, settings)


def paper_cnn(settings: Mapping[str, Any], in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> Net:
    """The CNN of the paper: Conv(3,16) ReLU Pool Conv(16,16) ReLU Pool Conv(16,16) ReLU
    Flatten Linear(1024,512) ReLU Linear(512,10) (at 32x32 inputs)."""
    return plain_cnn({**settings, "depth": 3, "width": 16}, in_channels, num_classes, image_size)


MODELS: dict[str, Callable[..., Net]] = {"paper_cnn": paper_cnn, "plain_cnn": plain_cnn}


def build(settings: Mapping[str, Any], in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> Net:
    try:
        factory = MODELS[settings["name"]]
    except KeyError:
        raise DnndistError(f"unknown model {settings['name']!r}; known: {sorted(MODELS)}") from None
    return factory(settings, in_channels=in_channels, num_classes=num_classes, image_size=image_size)
