"""The draws and the theoretical moments of each init (each declared once, in ``conventions.INITS``).

Conventions (paper.md, section 2.1; torch's conventions): for a weight of shape
(C_out, C_in, kh, kw), fan_in = C_in*kh*kw and fan_out = C_out*kh*kw; for a linear
layer (out, in), fan_in = in and fan_out = out. g is the gain, set by ``init.gain``:

- ``torch`` (default): what ``torch.nn.init`` gives a user who calls the init with its
  default arguments and the model's nonlinearity: g = 1 for xavier_* and orthogonal,
  g = ``calculate_gain(activation)`` for kaiming_* (sqrt(2) for ReLU; mode fan_in);
- ``relu``: ``calculate_gain(activation)`` for every init (the "ReLU gain everywhere"
  convention; it gives orthogonal kaiming's element std in every layer of the paper CNN
  and makes xavier and kaiming identical in conv2/conv3, where fan_in = fan_out);
- a number: that g for every init.

- xavier_normal:   N(0, s^2),  s = g*sqrt(2/(fan_in+fan_out))
- xavier_uniform:  U(-a, a),   a = g*sqrt(6/(fan_in+fan_out))
- kaiming_normal:  N(0, s^2),  s = g/sqrt(fan_in)
- kaiming_uniform: U(-a, a),   a = g*sqrt(3/fan_in)
- orthogonal:      rows (or columns) of the (C_out, fan_in) matrix orthonormal, times g;
                   element std g/sqrt(max(C_out, fan_in)), |w| <= g
- ones / zeros:    every weight (and, with bias 'auto', every bias) the constant
- torch_default:   PyTorch's own reset_parameters: U(-k, k), k = 1/sqrt(fan_in)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from dnndist.conventions import GAIN_CONVENTIONS, INIT_NAMES, INITS, InitSpec
from dnndist.settings import ModelSettings


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a conv (C_out, C_in, *kernel) or linear (out, in) weight."""
    if len(shape) < 2:
        raise ValueError(f"fan_in/fan_out need a weight with >= 2 dims, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def activation_gain(model: ModelSettings) -> float:
    """``torch.nn.init.calculate_gain`` of the model's nonlinearity."""
    if model.activation == "leaky_relu":
        return nn.init.calculate_gain("leaky_relu", model.negative_slope)
    return nn.init.calculate_gain("relu")


def gain_for(init: str, convention: str | float, model: ModelSettings) -> float:
    """The gain g of ``init`` under a gain convention (``torch``, ``relu`` or a number)."""
    if not isinstance(convention, str):
        return float(convention)
    if convention == "relu":
        return activation_gain(model)
    if convention != "torch":
        raise ValueError(f"unknown gain convention {convention!r}; known: {GAIN_CONVENTIONS} or a number")
    return activation_gain(model) if _spec(init).family == "kaiming" else 1.0


def _spec(init: str) -> InitSpec:
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; known: {tuple(INIT_NAMES)}")
    return INITS[init]


def theory(init: str, shape: tuple[int, ...], gain: float) -> dict[str, float]:
    """Theoretical mean, std and bound (max |w|; nan if unbounded) of a fresh weight, from the
    init's family and draw (``conventions.INITS``)."""
    spec = _spec(init)
    fan_in, fan_out = fans(shape)
    nan = float("nan")
    uniform = spec.draw == "uniform"
    if spec.family == "xavier":
        if uniform:
            a = gain * math.sqrt(6.0 / (fan_in + fan_out))
            return {"mean": 0.0, "std": a / math.sqrt(3.0), "bound": a}
        return {"mean": 0.0, "std": gain * math.sqrt(2.0 / (fan_in + fan_out)), "bound": nan}
    if spec.family == "kaiming":
        if uniform:
            a = gain * math.sqrt(3.0 / fan_in)
            return {"mean": 0.0, "std": a / math.sqrt(3.0), "bound": a}
        return {"mean": 0.0, "std": gain / math.sqrt(fan_in), "bound": nan}
    if spec.family == "orthogonal":
        return {"mean": 0.0, "std": gain / math.sqrt(max(shape[0], fan_in)), "bound": gain}
    if spec.draw == "constant":
        return {"mean": float(spec.value), "std": 0.0, "bound": abs(float(spec.value))}
    k = 1.0 / math.sqrt(fan_in)  # torch: PyTorch's reset_parameters
    return {"mean": 0.0, "std": k / math.sqrt(3.0), "bound": k}


def _normal(w: torch.Tensor, std: float, g: torch.Generator) -> None:
    nn.init.normal_(w, 0.0, std, generator=g)


def _uniform(w: torch.Tensor, a: float, g: torch.Generator) -> None:
    nn.init.uniform_(w, -a, a, generator=g)


def _weight_init(init: str) -> Callable[[torch.Tensor, float, torch.Generator], None]:
    draw = INITS[init].draw

    def fn(w: torch.Tensor, gain: float, g: torch.Generator) -> None:
        t = theory(init, tuple(w.shape), gain)
        if draw == "normal":
            _normal(w, t["std"], g)
        elif draw == "uniform":
            _uniform(w, t["bound"], g)
        elif draw == "orthogonal":
            nn.init.orthogonal_(w, gain=gain, generator=g)
        else:
            nn.init.constant_(w, t["mean"])

    return fn


def weight_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def apply(model: nn.Module, init: str, gain: float, bias: str, seed: int) -> None:
    """Initialise every conv and linear layer of ``model`` in place, deterministically from ``seed``.

    Layers are visited in definition order with one generator, so a layer's draw
    depends only on the seed and the layers before it.
    """
    spec = _spec(init)
    g = torch.Generator().manual_seed(seed)
    for _, module in weight_modules(model):
        w = module.weight
        if spec.family == "torch":
            _torch_default(w, g)
        else:
            _weight_init(init)(w, gain, g)
        if module.bias is not None:
            mode = _bias_mode(spec, bias)
            if mode == "constant":
                nn.init.constant_(module.bias, float(spec.value))
            elif mode == "zeros":
                nn.init.zeros_(module.bias)
            else:
                k = 1.0 / math.sqrt(fans(tuple(w.shape))[0])
                nn.init.uniform_(module.bias, -k, k, generator=g)


def _torch_default(w: torch.Tensor, g: torch.Generator) -> None:
    # torch's reset_parameters: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)


def _bias_mode(spec: InitSpec, bias: str) -> str:
    """init.bias, with auto resolved: a constant init's constant, else PyTorch's default bias."""
    if bias != "auto":
        return bias
    return "constant" if spec.draw == "constant" else "torch_default"


def bias_theory(init: str, bias: str, fan_in: int) -> dict[str, float]:
    spec = _spec(init)
    if _bias_mode(spec, bias) == "constant":
        v = float(spec.value)
        return {"mean": v, "std": 0.0, "bound": abs(v)}
    mode = bias
    if mode == "zeros":
        return {"mean": 0.0, "std": 0.0, "bound": 0.0}
    k = 1.0 / math.sqrt(fan_in)
    return {"mean": 0.0, "std": k / math.sqrt(3.0), "bound": k}
