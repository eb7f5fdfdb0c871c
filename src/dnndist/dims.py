"""Canonical dimension names, defined once; the stores' writers (extraction, `dnndist analyze`)
check their datasets against them (`check`)."""

from __future__ import annotations

from collections.abc import Iterable

# Run factors
VARIANT = "variant"
INIT = "init"
SEED = "seed"
EPOCH = "epoch"
# Model structure
LAYER = "layer"
# Inputs
SPLIT = "split"
SAMPLE = "sample"
# Tensors
CHANNEL = "channel"  # image colour channel / feature-map channel
OUT_CHANNEL = "out_channel"
IN_CHANNEL = "in_channel"
KERNEL_Y = "kernel_y"
KERNEL_X = "kernel_x"
OUT_FEATURE = "out_feature"
IN_FEATURE = "in_feature"
Y = "y"
X = "x"
UNIT = "unit"  # output unit of a linear layer (feature maps of conv layers use CHANNEL)
KIND = "kind"  # pre | post activation
BIN = "bin"  # histogram bin
BATCH = "batch"  # gradient batch
PARAM = "param"  # weight | bias

ALL = frozenset(
    {
        VARIANT,
        INIT,
        SEED,
        EPOCH,
        LAYER,
        SPLIT,
        SAMPLE,
        CHANNEL,
        OUT_CHANNEL,
        IN_CHANNEL,
        KERNEL_Y,
        KERNEL_X,
        OUT_FEATURE,
        IN_FEATURE,
        Y,
        X,
        UNIT,
        KIND,
        BIN,
        BATCH,
        PARAM,
    }
)

LONG_NAMES = {  # the long_name of each dimension's coordinate, where it has one
    VARIANT: "experiment variant",
    INIT: "weight initialisation",
    SEED: "random seed of the run",
    EPOCH: "training epoch of the checkpoint",
    LAYER: "layer (module name)",
    SPLIT: "input split",
    KIND: "pre- or post-activation output",
    PARAM: "layer parameter",
}

IMAGE_DIMS = (SAMPLE, CHANNEL, Y, X)
RUN_DIMS = (VARIANT, INIT, SEED)  # every extracted dataset carries these (length 1 per store) and EPOCH
CONV_WEIGHT_DIMS = (OUT_CHANNEL, IN_CHANNEL, KERNEL_Y, KERNEL_X)
LINEAR_WEIGHT_DIMS = (OUT_FEATURE, IN_FEATURE)


def check(dims: Iterable[str], where: str = "dataset") -> None:
    """Raise if any dimension name is not one of the canonical names."""
    unknown = sorted(set(dims) - ALL)
    if unknown:
        raise ValueError(f"{where}: non-canonical dimension name(s) {unknown}; known: {sorted(ALL)}")
