"""Gain conventions of the init formulas, named for captions and store attributes (torch-free).

``torch`` (the default) is what ``torch.nn.init`` gives with its default arguments and the
model's nonlinearity; ``relu`` puts the activation's gain on every init (the convention of
earlier dnndist releases); a number is that gain for every init. ``dnndist.inits`` turns a
convention into the gain of each init.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GAIN_CONVENTIONS = ("torch", "relu")
INIT_NAMES = (  # the init registry's names (dnndist.inits), here so that figures and tables need no torch
    "orthogonal",
    "kaiming_normal",
    "kaiming_uniform",
    "xavier_normal",
    "xavier_uniform",
    "ones",
    "zeros",
    "torch_default",
)
# the init label of weights whose init is not known (dnndist analyze of a file without dnndist's
# metadata and without --init): they are still compared with a reference init, named apart
UNKNOWN_INIT = "unknown"


def describe(convention: str | float) -> str:
    """One phrase naming a gain convention."""
    if convention == "torch":
        return "torch (PyTorch's default gains: 1 for xavier and orthogonal, calculate_gain(activation) for kaiming)"
    if convention == "relu":
        return "relu (calculate_gain(activation) for every init)"
    return f"g = {float(convention):g} for every init"


def note(conventions: Mapping[str, Any]) -> str:
    """A caption sentence naming the gain convention of each variant ({variant: convention})."""
    if not conventions:
        return ""
    if len(set(map(str, conventions.values()))) == 1:
        return f"Gain convention: {describe(next(iter(conventions.values())))}."
    return "Gain conventions: " + "; ".join(f"{v}: {describe(c)}" for v, c in conventions.items()) + "."
