"""dnndist.analyze and `dnndist analyze`: any model, the workflow's numbers from the workflow's functions."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

import dnndist
from dnndist import DnndistError, analysis, cli, dims, extract, integrity, plots, spectral, stats
from dnndist import config as dcfg
from dnndist.gradients import emission_absorption_explicit
from dnndist.settings import StatsSettings

from .conftest import env


def two_layer(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    )


@pytest.mark.slow
def test_import_dnndist_stays_light():
    code = (
        "import sys, dnndist; assert 'torch' not in sys.modules, 'torch imported'; "
        "from dnndist import analyze, Analysis; assert 'torch' in sys.modules; "
        "import dnndist.analysis; assert dnndist.analyze is dnndist.analysis.analyze; print(analyze.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "analyze", out.stderr
    out = subprocess.run(
        [sys.executable, "-c", "import sys, dnndist.plots, dnndist.recorded; assert 'torch' not in sys.modules"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr  # figures (draw_esd included) and dnndist report need no torch


# --------------------------------------------------------------------------- ResNet-18 built locally
@pytest.fixture(scope="module")
def resnet18_default():
    """torchvision's ResNet-18 (weights=None: no download) with PyTorch's default init in every conv and linear layer."""
    import torchvision

    torch.manual_seed(0)  # the bounds below hold for typical draws, not for every one
    net = torchvision.models.resnet18(weights=None)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
    return net, dnndist.analyze(net)


@pytest.mark.slow
def test_resnet18_every_conv_and_fc_is_a_layer(resnet18_default):
    net, r = resnet18_default
    expected = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(expected) == 21
    assert [s.name for s in r.layers] == expected == r.table["layer"].tolist()
    assert r.table["depth"].tolist() == list(range(1, 22))
    assert (r.table["layer_kind"] == "conv").sum() == 20 and r.table["layer"].iloc[-1] == "fc"
    pre = {s.name: s.pre for s in r.layers}  # the batch norm after each conv, as the registry's ResNets
    assert (
        pre["conv1"] == "bn1"
        and pre["layer1.0.conv2"] == "layer1.0.bn2"
        and pre["layer2.0.downsample.0"] == "layer2.0.downsample.1"
    )
    assert pre["fc"] == "fc"
    assert set(r.weight_groups) == set(expected) and "norm_running_var" in r.weight_groups["layer1.0.conv1"]


def test_resnet18_torch_default_weights_inside_their_bound(resnet18_default):
    net, r = resnet18_default
    t = r.table.set_index("layer")
    assert t.at["conv1", "fan_in"] == 3 * 7 * 7 and t.at["fc", "fan_in"] == 512 and t.at["fc", "fan_out"] == 1000
    assert t.at["layer2.0.downsample.0", "shape"] == "128x64x1x1" and t.at["conv1", "params"] == 64 * 3 * 49
    assert t.at["fc", "params"] == 1000 * 512 + 1000
    np.testing.assert_allclose(t["default_bound"], 1 / np.sqrt(t["fan_in"]))
    assert (t["within_default_bound"] == 1.0).all() and (t["within_unit"] == 1.0).all()
    assert (t["max_abs"] <= t["default_bound"]).all() and (t["max_abs"] > 0.99 * t["default_bound"]).all()
    np.testing.assert_allclose(t["std"], t["default_bound"] / np.sqrt(3), rtol=0.05)  # U(-k, k)
    np.testing.assert_allclose(t["std_ratio_to_init"], 1.0, rtol=0.05)  # the reference init is torch_default
    assert t["kurtosis"].between(-1.3, -1.1).all()
    assert (t["mean"].abs() < 0.05 * t["default_bound"]).all()
    shapes = {n: tuple(m.weight.shape) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert (t["count"] == pd.Series({n: float(np.prod(s)) for n, s in shapes.items()})).all()
    assert t.at["conv1", "num_evals"] == 3 * 49 and (t["lambda_max"] > 0).all()  # WeightWatcher: M x kh*kw eigenvalues
    assert t["bias_mean"].notna().tolist() == [False] * 20 + [True]  # only fc has a bias
    assert t.at["fc", "bias_within_default_bound"] == 1.0
    assert set(r.eigenvalues) == set(t.index) and r.eigenvalues["fc"].size == 512
    ds = r.dataset
    assert ds["stdev"].dims == (dims.LAYER, dims.PARAM) and ds.sizes["layer"] == 21
    assert ds["within_default_bound"].sel(param="weight").values.tolist() == [1.0] * 21
    assert ds["depth"].values.tolist() == list(range(1, 22))
    for name, var in ds.data_vars.items():
        assert var.attrs["long_name"] and var.attrs["units"] == "1", name
    for key in ("dnndist_version", "git_commit", "torch_version", "config_hash", "created"):
        assert key in ds.attrs, key
    assert ds.attrs["model"] == "ResNet" and ds.attrs["init"] == "unknown"  # no checkpoint says which
    assert r.weights.attrs["reference_init"] == "torch_default"


# --------------------------------------------------------------------------- a custom two-layer module
def test_two_layer_module_weights_only():
    net = two_layer()
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r = dnndist.analyze(net)
    assert [(s.name, s.kind, s.pre, s.post) for s in r.layers] == [
        ("0", "linear", "0", "1"),
        ("2", "linear", "2", None),
    ]
    assert r.table["shape"].tolist() == ["16x8", "3x16"] and r.table["params"].tolist() == [16 * 8 + 16, 3 * 16 + 3]
    w = net[0].weight.detach().double().numpy()
    t = r.table.set_index("layer")
    assert t.at["0", "mean"] == pytest.approx(w.mean()) and t.at["0", "std"] == pytest.approx(w.std())
    assert t.at["0", "bias_max"] == pytest.approx(net[0].bias.max().item())
    assert np.array_equal(r.weight_groups["0"]["weight"].values[0, 0, 0, 0], net[0].weight.detach().numpy())
    assert r.features is None and r.gradients is None and "pre_std" not in r.table
    assert net.training and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_two_layer_module_with_a_tensor():
    net = two_layer()
    x = torch.randn(100, 8, generator=torch.Generator().manual_seed(1))
    r = dnndist.analyze(net, x, batch_size=32, sample_size=10)
    with torch.no_grad():
        pre0 = net[0](x).double().numpy()
        post0, out = np.maximum(pre0, 0), net(x).double().numpy()
    for layer, kind, ref in (("0", "pre", pre0), ("0", "post", post0), ("2", "pre", out)):
        f = r.features.sel(layer=layer, kind=kind, split="inputs").squeeze()
        n = ref.size
        assert f["n"].item() == n
        assert f["mu"].item() == pytest.approx(ref.mean(), rel=1e-6, abs=1e-9)
        assert f["m2"].item() / n == pytest.approx(ref.var(), rel=1e-6)
        assert f["vmin"].item() == pytest.approx(ref.min()) and f["vmax"].item() == pytest.approx(ref.max())
        assert f["hist"].sum().item() + f["underflow"].item() + f["overflow"].item() == n
    assert np.isnan(r.features["n"].sel(layer="2", kind="post")).all()  # the classifier has no activation after it
    t = r.table.set_index("layer")
    assert t.at["0", "pre_std"] == pytest.approx(pre0.std(), rel=1e-6) and t.at["0", "post_std"] == pytest.approx(
        post0.std(), rel=1e-6
    )
    assert np.isnan(t.at["2", "post_std"])
    g = r.feature_groups["0"]["pre"]
    assert g.dims[-3:] == ("split", "sample", "unit") and g.sizes["sample"] == 10
    np.testing.assert_array_equal(g.values.reshape(10, 16), net[0](x[:10]).detach().numpy())
    assert (r.features["sample_label"].values == -1).all()
    assert r.gradients is None  # no conv layer: no emission/absorption
    assert r.dataset["feature_std"].dims == ("layer", "kind", "split")
    assert not [v for v in r.dataset.variables if hasattr(xr.Dataset, str(v))]  # r.dataset.stdev works
    np.testing.assert_allclose(
        r.dataset.stdev.sel(param="weight", layer="0"), net[0].weight.detach().double().std(unbiased=False)
    )


def test_two_layer_module_with_a_dataloader():
    net = two_layer()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(100, 8, generator=g), torch.randint(0, 3, (100,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=25)
    r = dnndist.analyze(net, loader, sample_size=30)  # the sample spans two batches
    by_tensor = dnndist.analyze(net, x, batch_size=25, sample_size=30)
    assert r.features["n"].equals(by_tensor.features["n"])
    np.testing.assert_allclose(r.features["m2"].values, by_tensor.features["m2"].values, rtol=1e-9)
    np.testing.assert_array_equal(r.features["sample_label"].values.ravel(), y[:30].numpy())
    np.testing.assert_array_equal(r.feature_groups["2"]["pre"].values.reshape(30, 3), net(x[:30]).detach().numpy())
    only_x = dnndist.analyze(net, torch.utils.data.DataLoader(x, batch_size=40), max_inputs=50)
    assert only_x.features["n"].sel(layer="0", kind="pre").item() == 50 * 16


def test_conv_model_emission_absorption_as_the_gradients_stage(caplog):
    """The gradient pass takes its inputs from the feature pass's batches as they come (7 + 3 of
    12), in gradient batches of 4, and logs its progress."""
    net = small_cnn()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(12, 3, 8, 8, generator=g), torch.randint(0, 5, (12,), generator=g)
    with caplog.at_level(logging.INFO, logger="dnndist.analysis"):
        r = dnndist.analyze(net, [(x[:7], y[:7]), (x[7:], y[7:])], gradient_inputs=10, gradient_batch_size=4)
    assert "emission/absorption: 10 / 10 inputs" in caplog.text
    assert r.gradients.attrs["gradient_target"] == "label"
    np.testing.assert_array_equal(r.gradients["sample_label"].values.ravel(), y[:10].numpy())
    assert all(
        p.grad is None for p in net.parameters()
    )  # the analysis ran on a copy: the caller's module has no gradients
    a1 = net[0](x[:10])
    a1.retain_grad()
    h = net[2](net[1](a1))
    h.retain_grad()
    losses = F.cross_entropy(net[5](net[4](net[3](h))), y[:10], reduction="none")
    losses.sum().backward()
    np.testing.assert_allclose(r.gradients["loss"].values.ravel(), losses.detach().numpy(), rtol=1e-5)
    for name, conv, grad, size in (("0", net[0], a1.grad, (8, 8)), ("2", net[2], h.grad, (8, 8))):
        em, ab = emission_absorption_explicit(grad, conv.weight.detach(), size, conv.stride, conv.padding)
        grp = r.gradient_groups[name]
        assert grp["em"].dims[-2:] == ("sample", "out_channel") and grp["ab"].dims[-2:] == ("sample", "in_channel")
        np.testing.assert_allclose(grp["em"].values.reshape(10, -1), em.numpy(), rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(grp["ab"].values.reshape(10, -1), ab.numpy(), rtol=1e-4, atol=1e-8)
    assert {"median_emission", "cv_absorption"} <= set(r.table) and np.isnan(
        r.table.set_index("layer").at["5", "median_emission"]
    )
    predicted = dnndist.analyze(net, x, gradient_inputs=4)  # no labels: the model's own prediction
    assert predicted.gradients.attrs["gradient_target"] == "predicted" and predicted.gradients.sizes["sample"] == 4


def test_emission_skips_a_reflect_padded_conv_and_keeps_the_others(caplog):
    net = small_cnn()
    net[0] = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    x = torch.randn(6, 3, 8, 8)
    with caplog.at_level(logging.WARNING, logger="dnndist.analysis"):
        r = dnndist.analyze(net, x, gradient_inputs=6)
    assert "emission/absorption skips layer 0: padding_mode 'reflect'" in caplog.text
    assert list(r.gradient_groups) == ["2"] and r.gradient_groups["2"].sizes["sample"] == 6


# --------------------------------------------------------------------------- the workflow's numbers
@pytest.fixture
def workflow_run(tiny_runs):
    """The suite's tiny trained kaiming-normal run (conftest) and its stores."""
    _, store, runs = tiny_runs
    s, run_dir = runs["kaiming_normal"]
    return s, store, run_dir


def test_a_checkpoint_of_the_workflow_labels_what_analyze_writes(workflow_run, tmp_path):
    """A dnndist checkpoint says which run and epoch it is: analyze labels its tables, stores and
    figures with that init, seed and epoch and compares with that init's theory; the same tensors
    in a plain state dict are init 'unknown' at epoch 0, compared with torch_default, by name."""
    from safetensors.torch import save_file

    from dnndist.checkpoints import load_checkpoint

    _, _, run_dir = workflow_run
    ckpt = run_dir / "checkpoints" / "epoch_0001.safetensors"
    r = dnndist.analyze("paper_cnn", weights=ckpt)
    assert set(r.weight_stats["init"]) == {"kaiming_normal"} and set(r.weight_stats["epoch"]) == {1}
    assert r.weights.attrs["init"] == "kaiming_normal" and r.weights.attrs["reference_init"] == "kaiming_normal"
    assert r.weights["epoch"].values.tolist() == [1] and r.weights["seed"].values.tolist() == [0]
    r.write(tmp_path / "out", figures=False)
    written = pd.read_csv(tmp_path / "out" / "weights.csv")
    assert set(written["init"]) == {"kaiming_normal"} and set(written["epoch"]) == {1}
    plain = tmp_path / "plain.safetensors"
    save_file(load_checkpoint(ckpt)[0], str(plain))  # the tensors without dnndist's metadata
    u = dnndist.analyze("paper_cnn", weights=plain)
    assert set(u.weight_stats["init"]) == {"unknown"} and set(u.weight_stats["epoch"]) == {0}
    assert u.weights.attrs["reference_init"] == "torch_default"
    t, tu = r.table.set_index("layer"), u.table.set_index("layer")
    np.testing.assert_array_equal(t["std"], tu["std"])  # the same weights
    assert not np.allclose(t["std_ratio_to_init"], tu["std_ratio_to_init"])  # against another reference
    u.write(tmp_path / "unknown")
    assert (tmp_path / "unknown" / "weights.png").is_file()


def test_same_weight_statistics_as_the_workflow(workflow_run):
    _, _, run_dir = workflow_run
    groups = stats.open_layer_groups(run_dir / "weights.zarr")
    with analysis.one_blas_thread():  # analyze's BLAS threads: the eigenvalues' last bits depend on the thread count
        wf = stats.weight_table(groups)  # the default stats settings, as analyze's
        sp_wf = stats.spectrum_table({k: g.sel(epoch=[1]) for k, g in groups.items()})
    wf = wf[wf["epoch"] == 1]
    r = dnndist.analyze("paper_cnn", weights=run_dir / "checkpoints" / "epoch_0001.safetensors", init="kaiming_normal")
    assert [s_.name for s_ in r.layers] == list(groups)
    for layer, g in groups.items():  # the same tensors in the same store layout
        assert r.weight_groups[layer]["weight"].dims == g["weight"].dims
        np.testing.assert_array_equal(
            r.weight_groups[layer]["weight"].values[:, :, :, 0], g["weight"].sel(epoch=[1]).values[:, :, :, 0]
        )
        ours, theirs = (
            pd.Series({k: v for k, v in a.items() if k != "analysed"}, dtype=object)
            for a in (r.weight_groups[layer]["weight"].attrs, g["weight"].attrs)
        )
        pd.testing.assert_series_equal(
            ours.sort_index(), theirs.sort_index()
        )  # fan_in, init_std, ... (NaN bound equal)
    key = ["layer", "param", "statistic"]
    a = r.weight_stats.set_index(key)["value"].sort_index()
    b = wf.set_index(key)["value"].sort_index()
    assert a.index.equals(b.index)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())  # exactly: one implementation
    np.testing.assert_array_equal(r.spectrum["singular_value"].to_numpy(), sp_wf["singular_value"].to_numpy())
    t = r.table.set_index("layer")  # the per-layer table holds the same numbers
    w1 = b.xs("weight", level="param").unstack("statistic")
    for stat in (
        "mean",
        "std",
        "kurtosis",
        "within_unit",
        "within_default_bound",
        "ks_normal",
        "tail_index",
        "alpha",
        "lambda_max",
    ):
        np.testing.assert_array_equal(
            t.loc[list(groups), stat].to_numpy(dtype=float), w1.loc[list(groups), stat].to_numpy(), err_msg=stat
        )


def test_same_feature_statistics_as_the_workflow(workflow_run):
    """The features of the valid split, fed to analyze in the workflow's batches, give the workflow's numbers exactly."""
    s, store, run_dir = workflow_run
    ex = s.extract
    inputs = extract.load_inputs(s, store, torch.device("cpu"))
    order = inputs.order("valid", ex.seed)
    chunks = [order[: ex.sample_size]] + list(order[ex.sample_size :].split(ex.batch_size))
    batches = [inputs.batch("valid", idx) for idx in chunks]
    r = dnndist.analyze(
        "paper_cnn",
        batches,
        weights=run_dir / "checkpoints" / "epoch_0001.safetensors",
        init="kaiming_normal",
        histogram_bins=ex.histogram_bins,
        sample_size=ex.sample_size,
        emission=False,
    )
    wf = (
        xr.open_zarr(run_dir / "features.zarr", consolidated=False)
        .sel(epoch=1, split="valid")
        .squeeze(drop=True)
        .load()
    )
    ours = (
        r.features.sel(epoch=1, split="inputs").squeeze(drop=True).sel(layer=wf["layer"].values)
    )  # the checkpoint's epoch
    for name in (
        "n",
        "mu",
        "m2",
        "m3",
        "m4",
        "vmin",
        "vmax",
        "variance",
        "stdev",
        "skewness",
        "kurtosis",
        "hist_lo",
        "hist_hi",
        "underflow",
        "overflow",
        "hist",
        "bin_lo",
        "bin_hi",
    ):
        np.testing.assert_array_equal(ours[name].values, wf[name].values, err_msg=name)
    np.testing.assert_array_equal(r.features["sample_label"].values.ravel(), wf["sample_label"].values)
    g = xr.open_zarr(run_dir / "features.zarr", group="conv2", consolidated=False)
    np.testing.assert_array_equal(
        r.feature_groups["conv2"]["pre"].values.squeeze(), g["pre"].sel(epoch=1, split="valid").values.squeeze()
    )


@pytest.mark.slow
def test_inplace_activations_do_not_change_the_features():
    """torchvision's ResNets apply ReLU(inplace=True) to a batch norm's output and add the residual in
    place: a feature is read when its module returns it, not after the forward pass."""
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    r = dnndist.analyze(net, x, emission=False)
    outs = {}
    handles = [
        net.get_submodule(m).register_forward_hook(lambda mod, a, o, m=m: outs.__setitem__(m, o.clone()))
        for m in ("bn1", "layer1.0.bn2")
    ]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    for layer, module in (("conv1", "bn1"), ("layer1.0.conv2", "layer1.0.bn2")):
        f = r.features.sel(layer=layer, kind="pre").squeeze()
        assert f["vmin"].item() < 0  # a batch norm's output, not the ReLU's
        assert f["mu"].item() == pytest.approx(outs[module].double().mean().item(), rel=1e-5, abs=1e-7)


# --------------------------------------------------------------------------- inputs from an image folder
def test_image_folder_and_archive_inputs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    net = analysis.load_model("paper_cnn")[0].eval()
    r = dnndist.analyze(net, root, emission=False, workers=1)
    imgs = np.stack(
        [np.asarray(Image.open(root / c / f"{i}.png")).transpose(2, 0, 1) for c in ("cat", "dog") for i in range(3)]
    )
    x = imgs.astype(np.float64) / 255
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    xin = torch.from_numpy((x - mean[:, None, None]) / std[:, None, None]).float()
    with torch.no_grad():
        ref = net.conv1(xin).double().numpy()
    f = r.features.sel(layer="conv1", kind="pre", split="inputs").squeeze()
    assert f["n"].item() == ref.size and f["mu"].item() == pytest.approx(ref.mean(), rel=1e-4, abs=1e-6)
    assert r.features["sample_label"].values.ravel().tolist() == [0, 0, 0, 1, 1, 1]
    import tarfile

    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(root / "cat", arcname=f"{split}/cat")
            tar.add(root / "dog", arcname=f"{split}/dog")
    r2 = dnndist.analyze(net, archive, emission=False, workers=1, per_class=2)
    assert r2.features["split"].values.tolist() == ["test", "train"]
    assert r2.features["n"].sel(layer="conv1", kind="pre").values.ravel().tolist() == [4 * 16 * 32 * 32] * 2
    assert {"test_pre_std", "train_pre_std"} <= set(r2.table)
    r3 = dnndist.analyze(net, archive, gradient_inputs=3, gradient_split="train", workers=1, per_class=2)
    assert r3.gradients.attrs["gradient_split"] == "train" and r3.gradients.sizes["sample"] == 3
    with pytest.raises(DnndistError, match="gradient split 'valid' is not among the inputs' splits \\(test, train\\)"):
        dnndist.analyze(net, archive, gradient_inputs=3, gradient_split="valid", workers=1)


# --------------------------------------------------------------------------- files
@pytest.mark.slow
def test_write_stores_tables_and_figures(tmp_path):
    net = small_cnn()
    x = torch.randn(20, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    r = dnndist.analyze(net, x, gradient_inputs=8)
    written = r.write(tmp_path / "out")
    out = tmp_path / "out"
    for name in (
        "weights.zarr",
        "features.zarr",
        "gradients.zarr",
        "layers.csv",
        "weights.csv",
        "spectrum.csv",
        "weight_hist.csv",
        "features.csv",
        "feature_hist.csv",
        "em_ab.csv",
        "weights.png",
        "features.png",
        "esd/0.png",
        "esd/5.png",
    ):
        assert out / name in written and (out / name).exists(), name
    for store in ("weights.zarr", "features.zarr", "gradients.zarr"):
        integrity.verify_store(out / store)
    # the statistics stage reads analyze's store as it reads the workflow's
    again = stats.weight_stats_of_store(out / "weights.zarr", StatsSettings.from_dict({"stats": r.settings["stats"]}))
    pd.testing.assert_frame_equal(again.reset_index(drop=True), r.weight_stats.reset_index(drop=True))
    assert pd.read_csv(out / "layers.csv")["layer"].astype(str).tolist() == ["0", "2", "5"]


def test_draw_esd_marks_the_fit_and_xmin():
    rng = np.random.default_rng(0)
    w = rng.standard_t(2.5, (300, 600)) * 0.05  # heavy-tailed: a power-law tail WeightWatcher fits
    st = spectral.spectral_stats(w)
    ev = spectral.esd(spectral.weight_matrices(w)[0])
    fig = plots.draw_esd(ev, st["alpha"], st["alpha_xmin"], "w")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    gids = {a.get_gid() for a in ax.get_children()}
    assert {"esd", "fit", "xmin"} <= gids and f"{st['alpha']:.2f}" in ax.get_title()
    xline = next(a for a in ax.lines if a.get_gid() == "xmin")
    assert xline.get_xdata()[0] == pytest.approx(st["alpha_xmin"])
    plots.plt.close(fig)
    fig = plots.draw_esd(ev, title="no fit")
    assert (
        "fit" not in {a.get_gid() for a in fig.axes[0].get_children()} and "no power-law fit" in fig.axes[0].get_title()
    )
    plots.plt.close(fig)


# --------------------------------------------------------------------------- the CLI and bad input
@pytest.mark.slow
def test_cli_on_a_saved_state_dict(tmp_path, capsys, resnet18_default):
    """The CLI in this process (a subprocess proves nothing more here, and would simulate the
    size-calibrated references of ResNet-18's layer sizes again: the fixture's run cached them)."""
    import torchvision

    from dnndist import cli

    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "W.pth")
    out = tmp_path / "out"
    argv = ["analyze", "--model", "torchvision:resnet18", "--weights", str(tmp_path / "W.pth"), "--out", str(out)]
    assert cli.main([*argv, "--no-figures"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("torchvision:resnet18: 21 Conv2d/Linear layers") and "layer4.1.conv2" in stdout
    assert "; init unknown (compared with torch_default), epoch 0" in stdout.splitlines()[0]
    integrity.verify_store(out / "weights.zarr")
    g = xr.open_zarr(out / "weights.zarr", group="layer1.0.conv1", consolidated=False)
    np.testing.assert_array_equal(g["weight"].values.squeeze(), net.layer1[0].conv1.weight.detach().numpy())
    attrs = xr.open_zarr(out / "weights.zarr", consolidated=False).attrs
    assert attrs["weights"] == str(tmp_path / "W.pth") and attrs["weights_sha256"] == integrity.sha256(
        tmp_path / "W.pth"
    )
    layers = pd.read_csv(out / "layers.csv")
    assert len(layers) == 21 and layers["layer"].tolist()[0] == "conv1"
    convs = layers[
        layers["layer_kind"] == "conv"
    ]  # torchvision's init: kaiming_normal_(mode='fan_out'), std sqrt(2 / fan_out)
    np.testing.assert_allclose(convs["std"], np.sqrt(2 / convs["fan_out"]), rtol=0.05)
    tidy = pd.read_csv(out / "weights.csv")
    assert list(tidy.columns) == ["variant", "init", "seed", "epoch", "layer", "depth", "param", "statistic", "value"]


@pytest.fixture
def unfit_weights(tmp_path):
    path = tmp_path / "unfit.pth"
    torch.save(nn.Sequential(nn.Linear(2, 2)).state_dict(), path)
    return path


@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_exit_status_2(tmp_path, unfit_weights, capsys):
    cases = [
        (["--model", "nosuch"], "unknown model 'nosuch'"),
        (["--model", "torchvision:nosuch"], "unknown model 'torchvision:nosuch'"),
        (["--model", "torchvision:resnet18", "--weights", str(tmp_path / "missing.pth")], "does not exist"),
        (["--model", "paper_cnn", "--weights", str(unfit_weights)], "does not fit model paper_cnn"),
        (["--model", "paper_cnn", "--inputs", str(tmp_path / "no-images")], "does not exist"),
    ]
    for argv, message in cases:
        assert cli.main(["analyze", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("dnndist analyze: error:") and message in err and "\n" not in err, err
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dnndist",
            "analyze",
            "--model",
            "torchvision:resnet18",
            "--weights",
            str(unfit_weights),
        ],
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (
        proc.stderr
    )


def test_python_bad_input_raises_dnndist_error(tmp_path, unfit_weights):
    net = two_layer()
    for call, message in [
        (lambda: dnndist.analyze(42), "expected a torch.nn.Module or a model name, got a int"),
        (lambda: dnndist.analyze(nn.ReLU()), "no Conv2d or Linear layer"),
        (lambda: dnndist.analyze("resnet9"), "unknown model 'resnet9'"),
        (lambda: dnndist.analyze(net, weights=tmp_path / "missing.pth"), "does not exist"),
        (lambda: dnndist.analyze(net, weights=unfit_weights), "does not fit model Sequential"),
        (lambda: dnndist.analyze(net, tmp_path / "missing"), "does not exist"),
        (lambda: dnndist.analyze(net, torch.zeros(4, 8, dtype=torch.uint8)), "floating-point"),
        (lambda: dnndist.analyze(net, torch.randn(4, 9)), "cannot run on the inputs"),
        (lambda: dnndist.analyze(net, {"x": 1}), "expected an image folder, a tensor or a DataLoader"),
        (lambda: dnndist.analyze(net, init="he"), "unknown init 'he'"),
    ]:
        with pytest.raises(DnndistError, match=message):
            call()


def test_model_defaults_are_the_config_schema_defaults():
    schema = dcfg.load_schema()
    for section, defaults in (("model", analysis.MODEL_DEFAULTS), ("stats", analysis.STATS_DEFAULTS)):
        filled: dict = {}
        dcfg.fill_defaults(filled, schema["$defs"][section], schema)
        assert {k: filled[k] for k in defaults} == defaults, section


def _overlapping_tick_labels(fig) -> list[str]:
    """The x tick labels of a figure's panels that overlap a neighbour (drawn, as saved)."""
    fig.canvas.draw()
    bad = []
    for ax in fig.axes:
        boxes = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        bad += [ax.get_title() for a, b in zip(boxes, boxes[1:]) if a.x1 > b.x0]
    return bad


def test_a_checkpoint_gives_its_image_size_and_model_options_and_the_figures_read(tmp_path):
    """A workflow checkpoint of the paper CNN at 16 x 16 with a hidden layer of 64 records both
    (`input`, `model`): analyze builds that model without --image-size or options; its figures
    use the workflow's style, whose tick labels do not overlap (the default style's did)."""
    from dnndist import checkpoints, models
    from dnndist.settings import ModelSettings

    settings = ModelSettings.from_dict({"name": "paper_cnn", "hidden": 64})
    torch.manual_seed(0)
    model = models.build(settings, 3, 10, 16)
    meta = {
        "format": checkpoints.FORMAT,
        "init": "kaiming_normal",
        "seed": "0",
        "epoch": "2",
        "variant": "base",
        "model": __import__("json").dumps(settings.to_dict(), sort_keys=True),
        "input": "[3, 16, 16]",
    }
    path = tmp_path / "epoch_0002.safetensors"
    path.write_bytes(checkpoints.st_bytes(checkpoints.state_dict_cpu(model), meta))
    r = dnndist.analyze("paper_cnn", weights=path)
    assert r.table.set_index("layer").loc["fc1", "shape"] == "64x256"
    with pytest.raises(DnndistError, match="does not fit"):
        dnndist.analyze("paper_cnn", weights=path, image_size=32)  # a size given is the size used
    written = r.write_figures(tmp_path / "figs")
    assert (tmp_path / "figs" / "weights.png") in written
    fig = plots.draw_weight_distributions(r.weight_hist)  # in the style write_figures set
    assert _overlapping_tick_labels(fig) == []
