"""Model registry. The plain CNNs are an ``nn.Sequential`` of named children (``Net``), the
ResNets wrap torchvision's modules with torchvision's state-dict keys (``ResNet``); both carry a
list of ``LayerSpec`` naming the analysed layers (their weight module, and the modules whose
outputs are the layer's pre- and post-activation features)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from dnndist import DnndistError
from dnndist.settings import ModelSettings


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

    def __init__(self, modules: dict[str, nn.Module], layers: list[LayerSpec], settings: ModelSettings):
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self.layer_specs = layers
        self.settings = settings


def activation(settings: ModelSettings) -> nn.Module:
    if settings.activation == "relu":
        return nn.ReLU()
    return nn.LeakyReLU(settings.negative_slope)


def _pool_positions(depth: int) -> set[int]:
    """After which conv layers (1-based) to max-pool: thirds of the depth (3 -> {1, 2})."""
    return {p for p in (round(depth / 3), round(2 * depth / 3)) if 1 <= p <= depth}


def plain_cnn(settings: ModelSettings, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> Net:
    """Conv(3x3, pad 1) [+BN] + act blocks, max-pool after 1/3 and 2/3 of the depth,
    then Linear(hidden) + act and the classifier. depth=3, width=16 is the paper CNN."""
    depth, width, hidden = settings.depth, settings.width, settings.hidden
    modules: dict[str, nn.Module] = {}
    layers: list[LayerSpec] = []
    pools = _pool_positions(depth)
    size, cin = image_size, in_channels
    for i in range(1, depth + 1):
        modules[f"conv{i}"] = nn.Conv2d(cin, width, 3, 1, 1)
        pre = f"conv{i}"
        if settings.norm == "batch":
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


def paper_cnn(settings: ModelSettings, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> Net:
    """The CNN of the paper: Conv(3,16) ReLU Pool Conv(16,16) ReLU Pool Conv(16,16) ReLU
    Flatten Linear(1024,512) ReLU Linear(512,10) (at 32x32 inputs)."""
    return plain_cnn(dataclasses.replace(settings, depth=3, width=16), in_channels, num_classes, image_size)


MODELS: dict[str, Callable[..., Net]] = {"paper_cnn": paper_cnn, "plain_cnn": plain_cnn}


# --------------------------------------------------------------------------- ResNets


class ResNet(nn.Module):
    """A torchvision ResNet whose state-dict keys are torchvision's (``conv1.weight``,
    ``layer1.0.conv1.weight``, ``fc.weight``), so torchvision-format weights load as they are."""

    def __init__(self, net: nn.Module, layers: list[LayerSpec], settings: ModelSettings):
        super().__init__()
        for name, module in net.named_children():
            self.add_module(name, module)
        self.layer_specs = layers
        self.settings = settings

    def forward(self, x):  # torchvision's ResNet._forward_impl
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet(settings: ModelSettings, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> ResNet:
    """torchvision ResNet-18/34/50; the ``_cifar`` variants use a 3x3 stride-1 stem and no
    max-pool (for 32x32 inputs). Every convolution is an analysed layer (stride-2 and 1x1
    downsample convs included); pre-activation features are each conv's batch-norm output."""
    import torchvision

    name = settings.name
    base = name.removesuffix("_cifar")
    net = getattr(torchvision.models, base)(weights=None, num_classes=num_classes)
    if in_channels != 3 or name.endswith("_cifar"):
        k, s, p = (3, 1, 1) if name.endswith("_cifar") else (7, 2, 3)
        net.conv1 = nn.Conv2d(in_channels, 64, k, s, p, bias=False)
    if name.endswith("_cifar"):
        net.maxpool = nn.Identity()
    modules = dict(net.named_modules())
    layers: list[LayerSpec] = []
    for mod_name, mod in net.named_modules():
        if isinstance(mod, nn.Conv2d):
            parent, _, leaf = mod_name.rpartition(".")
            if leaf.startswith("conv"):
                bn = f"{parent + '.' if parent else ''}bn{leaf[4:]}"
            else:  # downsample.0 -> downsample.1
                bn = f"{parent}.1"
            layers.append(LayerSpec(mod_name, "conv", len(layers) + 1, bn if bn in modules else mod_name, None, True))
    layers.append(LayerSpec("fc", "linear", len(layers) + 1, "fc", None, True))
    return ResNet(net, layers, settings)


MODELS.update(
    {n: resnet for n in ("resnet18", "resnet34", "resnet50", "resnet18_cifar", "resnet34_cifar", "resnet50_cifar")}
)


def read_weights(path: str | Path) -> dict[str, Any]:
    """A local state dict: safetensors, or a torch file read with weights_only=True (no pickle
    code runs), of dense real floating-point tensors (BatchNorm's integer step counter aside).
    A clear error for anything else, a FIFO or device refused before it is opened."""
    import stat
    import warnings

    import torch

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DnndistError(f"weights file {path} does not exist") from None
    except OSError as exc:
        raise DnndistError(f"weights file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise DnndistError(f"weights file {path} is not a file (a folder, FIFO or device)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            with warnings.catch_warnings():  # e.g. torch's note that it validates sparse tensors: refused below
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DnndistError(f"weights file {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
        raise DnndistError(f"{path}: not a readable state dict ({_why_unreadable(path, exc)})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DnndistError(f"{path}: expected a mapping of parameter names to tensors")
    for name, v in state.items():  # an integer, boolean or complex "weight" has no distribution to measure
        if v.layout != torch.strided:
            raise DnndistError(f"{path}: tensor {name!r} is {v.layout}, not dense: save it with .to_dense()")
        counter = str(name).endswith("num_batches_tracked") and not v.is_floating_point() and not v.is_complex()
        if not (v.is_floating_point() or counter):
            raise DnndistError(f"{path}: tensor {name!r} is {v.dtype}: weights must be real floating-point tensors")
    bad = {
        k: int((~torch.isfinite(v)).sum())
        for k, v in state.items()
        if v.is_floating_point() and not torch.isfinite(v).all()
    }
    if (
        bad
    ):  # refused, not flagged: one NaN weight turns every statistic of its layer (and the features after it) into NaN
        name, n = next(iter(bad.items()))
        raise DnndistError(
            f"{path}: {len(bad)} tensor(s) hold NaN/inf values (e.g. {name!r}: {n}); refusing to analyse non-finite weights"
        )
    return state


def _why_unreadable(path: Path, exc: Exception) -> str:
    """One short line for a state dict that did not load (torch's own can run to 1,000
    characters with terminal colours, and advises loading untrusted pickles)."""
    import pickle
    import re

    if isinstance(exc, pickle.UnpicklingError):
        return "it pickles objects besides tensors, e.g. a whole nn.Module: save model.state_dict(); dnndist runs no pickled code"
    with open(path, "rb") as fh:
        head = fh.read(4)
    if path.suffix == ".safetensors" and head == b"PK\x03\x04":
        return "a torch zip file named .safetensors: name it .pt"
    first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {first[0][:200] if first else 'no message'}"


def num_outputs(model: nn.Module) -> int:
    """Outputs of the classifier head (the last linear layer)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


def check_head(model: nn.Module, num_classes: int, source: str) -> None:
    """Every class index of the data must be an output of the model's head."""
    head = num_outputs(model)
    if num_classes > head:
        raise DnndistError(f"{source}: the data has {num_classes} classes but the model's head has {head} outputs")


def load_pretrained(model: nn.Module, state: Mapping[str, Any], source: str, name: str | None = None) -> None:
    """Load a state dict that must fit ``model`` exactly, else a one-line DnndistError naming the
    mismatch. ``name``: the model's name in the message (default: the registry name, else the class)."""
    name = name or getattr(getattr(model, "settings", None), "name", type(model).__name__)
    missing, unexpected = [], []
    try:
        result = model.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as exc:  # shape mismatches
        raise DnndistError(f"{source} does not fit model {name}: {str(exc).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise DnndistError(
            f"{source} does not fit model {name}: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )


def state_num_classes(state: Mapping[str, Any]) -> int | None:
    """Outputs of a state dict's classifier: the rows of its last 2-d ``*.weight`` (None if it has none)."""
    head = [k for k in state if k.endswith(".weight") and getattr(state[k], "ndim", 0) == 2]
    return int(state[head[-1]].shape[0]) if head else None


def build(settings: ModelSettings, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """The configured model (randomly initialised; see ``read_weights`` for given weights).
    With ``settings.weights`` the number of classes is that of the weights' classifier."""
    try:
        factory = MODELS[settings.name]
    except KeyError:
        raise DnndistError(f"unknown model {settings.name!r}; known: {sorted(MODELS)}") from None
    if settings.weights:
        num_classes = state_num_classes(read_weights(settings.weights)) or num_classes
    model = factory(settings, in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    model.input_shape = (in_channels, image_size, image_size)  # what its checkpoints record (analyze reads it)
    return model
