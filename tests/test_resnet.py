"""Experiment 2 on ResNets: the registry (torchvision ResNets and the CIFAR variant), given
local weights, and the experiment-2 rules end to end on a slice of the shared JPEG copy."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
import xarray as xr

from dnndist import DnndistError, models, train
from dnndist.gradients import emission_absorption_explicit
from dnndist.settings import ModelSettings

from .conftest import snakemake, write_yaml


@pytest.mark.parametrize(
    "name,size,convs", [("resnet18", 64, 20), ("resnet34", 64, 36), ("resnet50", 64, 53), ("resnet18_cifar", 32, 20)]
)
def test_registry_builds_every_conv_as_an_analysed_layer(name, size, convs):
    net = models.build(ModelSettings(name=name), 3, 10, size)
    specs = [s for s in net.layer_specs if s.kind == "conv"]
    assert len(specs) == convs and all(s.analysed for s in specs)
    modules = dict(net.named_modules())
    assert any(modules[s.name].stride == (2, 2) for s in specs)  # stride-2 convs are analysed
    assert any(modules[s.name].kernel_size == (1, 1) and "downsample" in s.name for s in specs)
    assert all(isinstance(modules[s.pre], torch.nn.BatchNorm2d) for s in specs)
    assert net(torch.randn(2, 3, size, size)).shape == (2, 10)
    if name.endswith("_cifar"):
        assert modules["conv1"].kernel_size == (3, 3) and isinstance(modules["maxpool"], torch.nn.Identity)


def test_torchvision_weights_load_unchanged_and_bad_files_are_refused(tmp_path):
    ref = torchvision.models.resnet18(num_classes=7).eval()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    net = models.build(ModelSettings(name="resnet18", weights=str(path)), 3, 10, 64).eval()  # 7 classes, from the file
    models.load_pretrained(net, models.read_weights(path), str(path))
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(net(x), ref(x))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(DnndistError, match="not a readable state dict"):
        models.read_weights(tmp_path / "junk.pth")
    torch.save(torchvision.models.resnet34(num_classes=7).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(DnndistError, match="does not fit model resnet18"):
        models.load_pretrained(net, models.read_weights(tmp_path / "r34.pth"), "r34.pth")


def test_emission_absorption_of_resnet_convs_match_explicit_maps():
    """Stride-2 3x3 and 1x1 downsample convs of a ResNet: the quadratic form equals the explicit
    per-sample maps (float64)."""
    from dnndist.gradients import emission_absorption

    net = models.build(ModelSettings(name="resnet18"), 3, 10, 64).double()
    for name in ("layer2.0.conv1", "layer2.0.downsample.0"):
        conv = dict(net.named_modules())[name]
        g = torch.randn(3, conv.out_channels, 4, 4, dtype=torch.float64)
        em, ab = emission_absorption(g, conv.weight.detach(), (8, 8), conv.stride, conv.padding, conv.dilation)
        em2, ab2 = emission_absorption_explicit(
            g, conv.weight.detach(), (8, 8), conv.stride, conv.padding, conv.dilation
        )
        assert torch.allclose(em, em2, rtol=1e-9) and torch.allclose(ab, ab2, rtol=1e-9), name


@pytest.mark.slow
def test_experiment2_on_local_resnet18_weights_and_a_jpeg_slice(tmp_path, shared_jpeg):
    """A ResNet-18 state dict saved locally, a 10-class slice of the shared CIFAR-10 JPEGs at
    64x64 with ImageNet normalisation: the workflow analyses the given weights (no training),
    with emission/absorption for every conv layer, Fig 4 for selected layers and the table."""
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    layers = ["conv1", "layer2.0.conv1", "layer2.0.downsample.0", "layer4.1.conv2"]
    cfg = {
        "results": str(tmp_path / "results"),
        "resources": str(tmp_path / "results" / "resources"),
        "data": {
            "source": "imagefolder",
            "valid_size": 10,
            "random_size": 8,
            "imagefolder": {"path": str(shared_jpeg), "image_size": 64, "limit_per_class": 4, "normalize": "imagenet"},
        },
        "inits": ["torch_default"],
        "model": {"name": "resnet18", "weights": str(weights)},
        "train": {"eval_batch_size": 32},
        "extract": {
            "splits": ["train", "random"],
            "sample_size": 4,
            "max_inputs": 16,
            "gradient_target": "predicted",
            "gradient_batches": 3,
            "gradient_batch_size": 8,
            "parameter_gradients": False,
            "feature_gradients": False,
            "batch_size": 16,
        },
        "plots": {"emission_init": "torch_default", "emission_layers": layers},
    }
    write_yaml(tmp_path / "resnet.yaml", cfg)
    snakemake(tmp_path, "--cores", "2", "--configfile", str(tmp_path / "resnet.yaml"), timeout=1200)
    run = tmp_path / "results" / "runs" / "base" / "torch_default" / "seed0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["weights_sha256"] == digest and summary["epochs_trained"] == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("*.safetensors")) == ["epoch_0000.safetensors"]
    tensors, meta = train.load_checkpoint(run / "checkpoints" / "epoch_0000.safetensors")
    given = torch.load(weights, weights_only=True)
    assert meta["weights_sha256"] == digest
    assert all(torch.equal(tensors[k], given[k]) for k in given)  # analysed as given, not trained
    grads = xr.open_zarr(run / "gradients.zarr", consolidated=False)
    assert grads.attrs["weights_sha256"] == digest
    net = models.build(ModelSettings(name="resnet18"), 3, 1000, 64)
    convs = [s.name for s in net.layer_specs if s.kind == "conv"]
    for name in convs:
        g = xr.open_zarr(run / "gradients.zarr", group=name, consolidated=False)
        conv = dict(net.named_modules())[name]
        assert g["em"].shape == (1, 1, 1, 1, 24, conv.out_channels) and g["ab"].shape[-1] == conv.in_channels, name
        em = g["em"].values
        assert np.isfinite(em).all() and (em >= 0).all() and (em > 0).mean() > 0.5, name  # ReLU can silence a channel
    em = pd.read_csv(tmp_path / "results" / "tables" / "emission.csv")
    assert set(em["layer"]) == set(convs) and em["emission_cv_larger"].isin([True, False]).all()
    assert (
        np.isfinite(em["cv_emission"]).all() and np.isfinite(em["cv_absorption"]).all()
    )  # scale-free C6 for all 20 convs
    fig = tmp_path / "results" / "figures" / "fig4_emission.png"
    assert fig.stat().st_size > 5000
    ab = pd.read_csv(tmp_path / "results" / "stats" / "em_ab.csv")
    assert {"layer2.0.downsample.0", "layer4.1.conv2"} <= set(ab["layer"])
