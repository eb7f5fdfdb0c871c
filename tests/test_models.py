"""Model registry: the paper CNN exactly, the deeper plain family, BN and leaky ReLU."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from dnndist import models
from dnndist.settings import ModelSettings

BASE = ModelSettings(
    name="paper_cnn",
    depth=3,
    width=16,
    hidden=512,
    norm="none",
    activation="relu",
    negative_slope=0.3,
)


def test_paper_cnn_matches_the_paper():
    m = models.build(BASE)
    convs = [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in m if isinstance(c, nn.Conv2d)]
    assert convs == [
        (3, 16, (3, 3), (1, 1), (1, 1)),
        (16, 16, (3, 3), (1, 1), (1, 1)),
        (16, 16, (3, 3), (1, 1), (1, 1)),
    ]
    assert (m.fc1.in_features, m.fc1.out_features, m.fc2.out_features) == (1024, 512, 10)
    assert [type(x).__name__ for x in m] == [
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "Flatten",
        "Linear",
        "ReLU",
        "Linear",
    ]
    assert sum(p.numel() for p in m.parameters()) == 535_018  # ../shared/perf-notes.md
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert [(s.name, s.depth, s.analysed) for s in m.layer_specs] == [
        ("conv1", 1, True),
        ("conv2", 2, True),
        ("conv3", 3, True),
        ("fc1", 4, True),
        ("fc2", 5, False),
    ]


@pytest.mark.parametrize("depth", [3, 6, 9, 12])
def test_plain_cnn_depths(depth):
    m = models.build(dataclasses.replace(BASE, name="plain_cnn", depth=depth))
    assert sum(isinstance(x, nn.Conv2d) for x in m) == depth
    assert sum(isinstance(x, nn.MaxPool2d) for x in m) == 2
    assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_batchnorm_and_leaky_relu_variants():
    m = models.build(dataclasses.replace(BASE, norm="batch", activation="leaky_relu", negative_slope=0.3))
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m) == 3
    leaky = [x for x in m if isinstance(x, nn.LeakyReLU)]
    assert len(leaky) == 4 and leaky[0].negative_slope == 0.3
    assert m.layer_specs[0].pre == "norm1"
    assert m(torch.randn(4, 3, 32, 32)).shape == (4, 10)


def test_unknown_model_is_a_clear_error():
    from dnndist import DnndistError

    with pytest.raises(DnndistError, match="unknown model"):
        models.build(dataclasses.replace(BASE, name="vgg"))
