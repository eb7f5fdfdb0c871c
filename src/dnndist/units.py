"""The ``units`` attribute of stored variables, defined once (torch-free).

A network's weights and activations have no physical unit; what a value is measured in is
the layer's own scale: a weight in "weight units", a layer output (and a bias, which adds to
it) in "activation units". Counts are "count", the loss is in "nat", gradients are loss per
unit of what they are taken with respect to, and "1" is left to dimensionless numbers
(skewness, kurtosis, ratios, flags, indices, gains).
"""

from __future__ import annotations

COUNT = "count"
DIMENSIONLESS = "1"
NAT = "nat"
WEIGHT = "weight units"
ACTIVATION = "activation units"
WEIGHT_GRADIENT = f"{NAT} per weight unit"
ACTIVATION_GRADIENT = f"{NAT} per activation unit"


def power(units: str, p: int) -> str:
    """``units`` raised to the power p: "(activation units)^2"; p = 0 (and "1") gives "1"."""
    if p == 0 or units == DIMENSIONLESS:
        return DIMENSIONLESS
    if p == 1:
        return units
    return f"({units})^{p}"
