"""Extraction: the three zarr datasets against direct recomputation from the checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
import xarray as xr

from dnndist import DnndistError, data, extract, inits, outputs, train
from dnndist.dims import RUN_DIMS
from dnndist.gradients import emission_absorption_explicit
from dnndist.io import layer_groups, open_results
from dnndist.settings import ExtractSettings, StatsSettings

from .conftest import EX, env, settings_for


@pytest.fixture
def run(tiny_runs):
    """The suite's two tiny trained runs and their three extracted stores (conftest)."""
    return tiny_runs


def model_at(s, store, run_dir, epoch):
    model = extract.build_model(s, data.store_info(store))
    extract.load_weights(model, run_dir / "checkpoints" / f"epoch_{epoch:04d}.safetensors")
    return model.eval()


def test_weights_dataset(run):
    root, store, runs = run
    s, run_dir = runs["kaiming_normal"]
    ds = xr.open_zarr(run_dir / "weights.zarr", group="conv2", consolidated=False)
    assert ds["weight"].dims == (
        "variant",
        "init",
        "seed",
        "epoch",
        "out_channel",
        "in_channel",
        "kernel_y",
        "kernel_x",
    )
    assert ds["bias"].dims == ("variant", "init", "seed", "epoch", "out_channel")
    assert ds["weight"].dtype == np.float32 and ds["weight"].chunks is not None  # lazy, dask-backed
    assert ds["init"].values.tolist() == ["kaiming_normal"] and ds["epoch"].values.tolist() == [0, 1]
    a = ds["weight"].attrs
    assert (a["fan_in"], a["fan_out"], a["depth"]) == (144, 144, 2)
    assert a["init_std"] == pytest.approx(inits.theory("kaiming_normal", (16, 16, 3, 3), np.sqrt(2))["std"])
    assert a["long_name"] and "units" in a
    tensors, _ = train.load_checkpoint(run_dir / "checkpoints" / "epoch_0001.safetensors")
    assert np.array_equal(ds["weight"].sel(epoch=1).values[0, 0, 0], tensors["conv2.weight"].numpy())
    fc = xr.open_zarr(run_dir / "weights.zarr", group="fc1", consolidated=False)
    assert fc["weight"].dims[-2:] == ("out_feature", "in_feature") and fc["weight"].shape[-2:] == (512, 1024)
    rootds = xr.open_zarr(run_dir / "weights.zarr", consolidated=False)
    assert rootds["layer"].values.tolist() == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert rootds["fan_in"].squeeze().values.tolist() == [
        27,
        144,
        144,
        1024,
        512,
    ]  # per run: models may differ by variant
    assert not rootds["diverged"].values.any()
    for key in (
        "config_hash",
        "dnndist_version",
        "git_commit",
        "torch_version",
        "xarray_version",
        "zarr_version",
        "device",
        "seed",
        "created",
    ):
        assert key in rootds.attrs, key


def features_by_numpy(s, store, run_dir, epoch, split, layer_module):
    """All activations of one layer over a whole split, by a plain forward pass."""
    inputs = extract.load_inputs(s, store, torch.device("cpu"))
    model = model_at(s, store, run_dir, epoch)
    outs = []
    model.get_submodule(layer_module).register_forward_hook(
        lambda m, a, o: outs.append(o.detach().double().numpy().ravel())
    )
    order = inputs.order(split, s.extract.seed)
    with torch.no_grad():
        for idx in order.split(50):
            model(inputs.batch(split, idx)[0])
    return np.concatenate(outs)


@pytest.mark.parametrize(
    "split,layer,kind,module",
    [("valid", "conv2", "pre", "conv2"), ("random", "fc1", "post", "act4"), ("train", "conv1", "post", "act1")],
)
def test_streaming_statistics_equal_numpy(run, split, layer, kind, module):
    _, store, runs = run
    s, run_dir = runs["kaiming_normal"]
    ds = (
        xr.open_zarr(run_dir / "features.zarr", consolidated=False)
        .sel(epoch=1, layer=layer, kind=kind, split=split)
        .squeeze()
        .compute()
    )
    x = features_by_numpy(s, store, run_dir, 1, split, module)
    n = x.size
    assert ds["n"].item() == n
    assert ds["mu"].item() == pytest.approx(x.mean(), rel=1e-6, abs=1e-12)
    assert ds["m2"].item() / n == pytest.approx(x.var(), rel=1e-6)
    assert ds["m3"].item() / n / (ds["m2"].item() / n) ** 1.5 == pytest.approx(scipy.stats.skew(x), rel=1e-6)
    assert ds["m4"].item() / n / (ds["m2"].item() / n) ** 2 - 3 == pytest.approx(scipy.stats.kurtosis(x), rel=1e-6)
    assert ds["vmin"].item() == x.min() and ds["vmax"].item() == x.max()
    assert ds["hist"].sum().item() + ds["underflow"].item() + ds["overflow"].item() == n
    lo, hi = ds["hist_lo"].item(), ds["hist_hi"].item()
    ref, _ = np.histogram(x, bins=np.linspace(lo, hi, EX["histogram_bins"] + 1))  # x: the float32 values, as float64
    assert np.array_equal(ds["hist"].values, ref)  # exact: the documented edges, compared exactly
    assert ds["underflow"].item() == (x < lo).sum() and ds["overflow"].item() == (x > hi).sum()
    derived = {
        "variance": np.var(x),
        "stdev": np.std(x),
        "skewness": scipy.stats.skew(x),
        "kurtosis": scipy.stats.kurtosis(x),  # excess (Fisher), as the long_name says
    }
    for name, want in derived.items():
        assert ds[name].item() == pytest.approx(want, rel=1e-6), name
    assert "excess" in ds["kurtosis"].attrs["long_name"]
    _, edges = np.histogram(x, bins=EX["histogram_bins"], range=(lo, hi))
    assert np.array_equal(ds["bin_lo"].values, edges[:-1]) and np.array_equal(ds["bin_hi"].values, edges[1:])
    assert ds["hist"].coords["bin_lo"].dims == ("bin",)  # the edges travel with the histogram


def test_raw_feature_sample_matches_a_direct_forward(run):
    _, store, runs = run
    s, run_dir = runs["xavier_uniform"]
    root = xr.open_zarr(run_dir / "features.zarr", consolidated=False)
    g = xr.open_zarr(run_dir / "features.zarr", group="conv3", consolidated=False)
    assert g["pre"].dims == ("variant", "init", "seed", "epoch", "split", "sample", "channel", "y", "x")
    assert g["pre"].sizes["sample"] == EX["sample_size"]
    inputs = extract.load_inputs(s, store, torch.device("cpu"))
    idx = torch.from_numpy(root["sample_index"].sel(split="valid").values.squeeze().astype(np.int64))
    model = model_at(s, store, run_dir, 0)
    with torch.no_grad():
        out = inputs.batch("valid", idx)[0]
        for name, module in model.named_children():  # forward up to conv3 by hand
            out = module(out)
            if name == "conv3":
                break
    assert np.allclose(g["pre"].sel(epoch=0, split="valid").values.squeeze(), out.numpy(), rtol=1e-5, atol=1e-6)


def test_inputs_are_identical_across_inits(run):
    _, _, runs = run
    a = xr.open_zarr(runs["kaiming_normal"][1] / "features.zarr", consolidated=False)
    b = xr.open_zarr(runs["xavier_uniform"][1] / "features.zarr", consolidated=False)
    assert np.array_equal(a["sample_index"].values, b["sample_index"].values)
    ga = xr.open_zarr(runs["kaiming_normal"][1] / "gradients.zarr", consolidated=False)
    gb = xr.open_zarr(runs["xavier_uniform"][1] / "gradients.zarr", consolidated=False)
    assert np.array_equal(ga["sample_index"].values, gb["sample_index"].values)


def test_gradients_dataset_against_autograd(run):
    _, store, runs = run
    s, run_dir = runs["kaiming_normal"]
    root = xr.open_zarr(run_dir / "gradients.zarr", consolidated=False).sel(epoch=1).squeeze().compute()
    conv2 = xr.open_zarr(run_dir / "gradients.zarr", group="conv2", consolidated=False).sel(epoch=1).squeeze()
    fc1 = xr.open_zarr(run_dir / "gradients.zarr", group="fc1", consolidated=False).sel(epoch=1).squeeze()
    assert conv2["em"].dims == ("sample", "out_channel") and conv2["ab"].dims == ("sample", "in_channel")
    inputs = extract.load_inputs(s, store, torch.device("cpu"))
    idx = torch.from_numpy(root["sample_index"].values.astype(np.int64))
    first = idx[: EX["gradient_batch_size"]]
    x, y = inputs.batch("train", first)
    model = model_at(s, store, run_dir, 1).double()
    feats = {}
    model.conv2.register_forward_hook(lambda m, a, o: feats.update(inp=a[0], out=o))
    logits = model(x.double())
    losses = F.cross_entropy(logits, y, reduction="none")
    assert np.allclose(root["loss"].values[: len(first)], losses.detach().numpy(), rtol=1e-4)
    (g_out,) = torch.autograd.grad(losses.sum(), feats["out"], retain_graph=True)
    em, ab = emission_absorption_explicit(g_out, model.conv2.weight.detach(), tuple(feats["inp"].shape[-2:]), 1, 1)
    assert np.allclose(conv2["em"].values[: len(first)], em.numpy(), rtol=1e-4)
    assert np.allclose(conv2["ab"].values[: len(first)], ab.numpy(), rtol=1e-4)
    assert np.allclose(conv2["grad_pre"].values[: len(first)], g_out.numpy(), rtol=1e-4, atol=1e-7)
    (gw,) = torch.autograd.grad(losses.mean(), model.fc1.weight)
    gref = gw.numpy()  # float32 extraction vs float64 reference: tolerance relative to the largest entry
    assert np.allclose(fc1["weight_grad"].isel(batch=0).values, gref, rtol=1e-4, atol=1e-5 * np.abs(gref).max())
    assert root["param_grad_norm"].sel(layer="fc1", param="weight").isel(batch=0).item() == pytest.approx(
        gw.norm().item(), rel=1e-4
    )
    # em/ab are streamed into the store one gradient batch per chunk (memory does not grow with N)
    import zarr

    arr = zarr.open_group(str(run_dir / "gradients.zarr"), mode="r")["conv2"]["em"]
    n_epochs = len(s.checkpoint_epochs)
    assert arr.chunks == (1, 1, 1, 1, EX["gradient_batch_size"], 16)
    assert arr.nchunks_initialized == n_epochs * EX["gradient_batches"]
    assert root.attrs["gradient_target"] == "label" and "config_hash" in root.attrs


@pytest.mark.parametrize("channels_last", [True, False])
def test_extraction_runs_the_model_in_the_training_layout(run, tmp_path, channels_last):
    """Extraction runs the model in the memory format training used (channels_last by default:
    several times faster max-pooling on a CPU); the features do not depend on it beyond float
    rounding (the fixture's stores were extracted channels_last; the tests above check them
    against a plain contiguous forward pass)."""
    _, store, runs = run
    s, run_dir = runs["kaiming_normal"]
    d = s.to_dict()
    other = ExtractSettings.from_dict({**d, "train": {**d["train"], "channels_last": channels_last}})
    _, _, _, model, _ = extract.extraction_setup(other, store)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert model.conv1.weight.is_contiguous(memory_format=fmt)
    assert model.conv1.weight.is_contiguous() is not channels_last  # a 3x3 kernel's layouts differ
    out = extract.extract_features(other, run_dir / "checkpoints", store, tmp_path / "features.zarr")
    for group in ("conv1", None):
        a = xr.open_zarr(run_dir / "features.zarr", group=group, consolidated=False).compute()
        b = xr.open_zarr(out, group=group, consolidated=False).compute()
        for name in a.data_vars:
            if a[name].dtype.kind == "f":
                np.testing.assert_allclose(b[name].values, a[name].values, rtol=1e-5, atol=1e-6, err_msg=name)
            elif name != "hist":  # a value within rounding of a bin edge may change bins
                assert np.array_equal(b[name].values, a[name].values), name
        if "hist" in a:
            assert np.abs(b["hist"].values - a["hist"].values).sum() <= 1e-4 * a["hist"].values.sum()


def test_small_arrays_are_one_chunk_and_large_ones_a_chunk_per_epoch(run, monkeypatch):
    """A run's array of at most WHOLE_BYTES is one chunk (a chunk is a file and a read); a larger
    one is chunked by epoch (and split, batch), its tensor dims whole."""
    import zarr

    _, _, runs = run
    _, run_dir = runs["kaiming_normal"]
    features = zarr.open_group(str(run_dir / "features.zarr"), mode="r")
    assert features["m2"].chunks == features["m2"].shape and features["m2"].shape[3] == 2  # 2 epochs, 1 chunk
    weights = zarr.open_group(str(run_dir / "weights.zarr"), mode="r")
    assert weights["conv1/weight"].chunks == weights["conv1/weight"].shape
    layers = layer_groups(run_dir / "weights.zarr")  # from zarr's metadata, in depth order
    assert layers == [str(v) for v in xr.open_zarr(run_dir / "weights.zarr")["layer"].values]
    convs = [name for name in layers if name.startswith("conv")]
    assert convs and layer_groups(run_dir / "gradients.zarr", "em") == convs
    small = xr.DataArray(
        np.zeros((1, 1, 1, 3, 16, 8), np.float32), dims=(*RUN_DIMS, "epoch", "out_feature", "in_feature")
    )
    assert extract.chunk_shape(small) == (1, 1, 1, 3, 16, 8)
    monkeypatch.setattr("dnndist.extract.store.WHOLE_BYTES", small.nbytes - 1)
    assert extract.chunk_shape(small) == (1, 1, 1, 1, 16, 8)
    monkeypatch.setattr("dnndist.extract.store.WHOLE_BYTES", 0)
    split = xr.DataArray(np.zeros((1, 1, 1, 3, 2, 5)), dims=(*RUN_DIMS, "epoch", "split", "bin"))
    assert extract.chunk_shape(split) == (1, 1, 1, 1, 1, 5)


def test_open_results_combines_runs_lazily(run):
    root, _, _ = run
    w = open_results(root, "weights", group="conv1")
    assert w.sizes["init"] == 2 and w.sizes["epoch"] == 2
    assert hasattr(w["weight"].data, "dask")
    f = open_results(root, "features")
    assert set(f["init"].values) == {"kaiming_normal", "xavier_uniform"}
    assert f["mu"].dims == ("variant", "init", "seed", "epoch", "layer", "kind", "split")


def test_store_variables_are_no_dataset_methods_and_carry_units(run):
    """Attribute access works in a notebook (f.m2 / f.n), and units say what a value is in."""
    root, _, runs = run
    _, run_dir = runs["kaiming_normal"]
    for kind in ("weights", "features", "gradients"):
        top = xr.open_zarr(run_dir / f"{kind}.zarr")
        for ds in [top, *(xr.open_zarr(run_dir / f"{kind}.zarr", group=str(g)) for g in top["layer"].values)]:
            clash = [name for name in ds.variables if hasattr(xr.Dataset, str(name))]
            assert not clash, (kind, clash)
            for name, var in ds.variables.items():
                assert var.attrs.get("long_name") and var.attrs.get("units"), (kind, name)
    f = open_results(root, "features")
    std = (f.m2 / f.n) ** 0.5
    np.testing.assert_allclose(std.values, f.stdev.values, rtol=1e-12)
    units = {k: f[k].attrs["units"] for k in ("n", "mu", "m2", "stdev", "skewness", "hist", "bin_lo")}
    assert units == {
        "n": "count",
        "mu": "activation units",
        "m2": "(activation units)^2",
        "stdev": "activation units",
        "skewness": "1",
        "hist": "count",
        "bin_lo": "activation units",
    }
    w = open_results(root, "weights", group="conv2")
    assert (w.weight.attrs["units"], w.bias.attrs["units"]) == ("weight units", "activation units")


def test_combined_stores_keep_per_run_attributes(run):
    root, _, runs = run
    w = open_results(root, "weights", group="conv2")
    for init, (_, run_dir) in runs.items():
        attrs = xr.open_zarr(run_dir / "weights.zarr", group="conv2").attrs
        for key in ("init_std", "init_bound", "gain"):
            np.testing.assert_equal(w[key].sel(variant="base", init=init, seed=0).item(), attrs[key], err_msg=key)
        top = xr.open_zarr(run_dir / "weights.zarr").attrs  # provenance: on the root
        assert open_results(root, "weights")["config_hash"].sel(init=init).item() == top["config_hash"]
    assert w["init_std"].dims == ("variant", "init", "seed") and w["init_std"].attrs["units"] == "weight units"
    assert w.attrs["layer"] == "conv2" and "init_std" not in w.attrs  # shared attrs stay attrs
    stds = {
        i: inits.theory(i, (16, 16, 3, 3), g)["std"]
        for i, g in (("kaiming_normal", np.sqrt(2)), ("xavier_uniform", 1.0))
    }
    assert w["init_std"].squeeze().to_series().to_dict() == pytest.approx(stds)


def test_notebook_snippet_std_of_conv2_per_init(run):
    """docs/notebook.md's two lines: the std of conv2's weights per init over epochs."""
    root, _, runs = run
    df = (
        open_results(root, "weights", group="conv2")["weight"]
        .std(["out_channel", "in_channel", "kernel_y", "kernel_x"])
        .sel(variant="base", seed=0)
        .to_pandas()
    )
    assert df.index.tolist() == ["kaiming_normal", "xavier_uniform"] and df.columns.tolist() == [0, 1]
    for init, (_, run_dir) in runs.items():
        tensors, _ = train.load_checkpoint(run_dir / "checkpoints" / "epoch_0001.safetensors")
        assert df.at[init, 1] == pytest.approx(tensors["conv2.weight"].double().std(unbiased=False).item(), rel=1e-5)


def test_features_store_with_the_old_names_opens_with_the_new(run, tmp_path):
    from dnndist.io import open_store_lazily

    _, _, runs = run
    _, run_dir = runs["kaiming_normal"]
    new = xr.open_zarr(run_dir / "features.zarr").load()
    old = new.rename({"n": "count", "mu": "mean", "vmin": "min", "vmax": "max"})
    for v in old.variables.values():
        v.encoding = {}
    old.to_zarr(tmp_path / "old.zarr", zarr_format=3, consolidated=False)
    got = open_store_lazily(tmp_path / "old.zarr")
    assert {"n", "mu", "vmin", "vmax"} <= set(got.data_vars) and "count" not in got.variables
    np.testing.assert_array_equal(got["mu"].values, new["mu"].values)


def test_stores_open_in_a_notebook_without_warnings(run):
    """Stores carry consolidated metadata (written before Snakemake adds its marker file), so
    `xr.open_zarr(path)` and `open_results` open them without a warning, marker or not."""
    import warnings

    import xarray as xr

    root, _, runs = run
    for _, run_dir in runs.values():
        for kind in ("weights", "features", "gradients"):
            (run_dir / f"{kind}.zarr" / ".snakemake_timestamp").touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _, run_dir in runs.values():
            for kind in ("weights", "features", "gradients"):
                xr.open_zarr(run_dir / f"{kind}.zarr")
        open_results(root, "weights", group="conv2")
        open_results(root, "features")


def store_files(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def json_differences(a, b, path=""):
    """The paths (``attributes/created``) where two JSON documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(a.keys() | b.keys()) for d in json_differences(a.get(k), b.get(k), f"{path}/{k}")]
    return [] if a == b else [path.lstrip("/")]


@pytest.mark.slow
def test_killed_extraction_reruns_to_the_same_bytes(run, tmp_path):
    _, store, runs = run
    s, run_dir = runs["kaiming_normal"]
    d = s.to_dict()
    d = {
        **d,
        "random": {**d["random"], "random_size": 3000},  # long enough to be killed mid-way
        "extract": {**d["extract"], "splits": ["valid", "random"]},
    }
    out = tmp_path / "features.zarr"
    cmd = [
        sys.executable,
        "-m",
        "dnndist",
        "extract",
        "features",
        "--settings",
        json.dumps(d),
        "--checkpoints",
        str(run_dir / "checkpoints"),
        "--data",
        str(store),
        "--out",
        str(out),
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=env(), stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "epoch 0 done" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing that looks complete
    assert subprocess.run(cmd, env=env(), capture_output=True).returncode == 0
    ref = tmp_path / "ref.zarr"
    extract.extract_features(ExtractSettings.from_dict(d), run_dir / "checkpoints", store, ref)
    a, b = store_files(out), store_files(ref)
    assert a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k]]
    assert differing == ["zarr.json"]  # every array chunk and array's metadata equal
    ja, jb = json.loads(a["zarr.json"]), json.loads(b["zarr.json"])
    assert json_differences(ja, jb) == ["attributes/created"]  # only the store's creation time
    ja, jb = json.loads(a["zarr.json"]), json.loads(b["zarr.json"])
    ja["attributes"].pop("created"), jb["attributes"].pop("created")
    assert ja == jb


@pytest.mark.slow
def test_feature_memory_does_not_grow_with_split_size(run, tmp_path):
    _, store, runs = run
    s, run_dir = runs["kaiming_normal"]
    script = (
        "import resource, sys; from dnndist import extract; from dnndist.settings import ExtractSettings;"
        "s = ExtractSettings.from_json(sys.argv[1]); extract.extract_features(s, sys.argv[2], sys.argv[3], sys.argv[4]);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    peaks = {}
    for n in (1_000, 10_000):
        d = s.to_dict()
        sn = {
            **d,
            "checkpoint_epochs": [1],
            "random": {**d["random"], "random_size": n},
            "extract": {**d["extract"], "splits": ["random"], "batch_size": 500},
        }
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                json.dumps(sn),
                str(run_dir / "checkpoints"),
                str(store),
                str(tmp_path / f"f{n}.zarr"),
            ],
            env=env(),
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        peaks[n] = int(proc.stdout.split()[-1])
    assert (
        xr.open_zarr(tmp_path / "f10000.zarr", consolidated=False)["n"].sel(layer="conv1", kind="pre").max()
        == 10_000 * 16 * 32 * 32
    )
    assert peaks[10_000] < 1.15 * peaks[1_000], peaks


def test_weight_and_feature_tables_from_the_stores(run):
    from dnndist import stats

    _, store, runs = run
    s, run_dir = runs["kaiming_normal"]
    w = stats.weight_stats_of_store(
        run_dir / "weights.zarr", StatsSettings.from_dict({"stats": {"near_zero": [0.01], "near_zero_rel": [0.1]}})
    )
    row = w.set_index(["epoch", "layer", "param", "statistic"])["value"]
    tensors, _ = train.load_checkpoint(run_dir / "checkpoints" / "epoch_0001.safetensors")
    x = tensors["conv2.weight"].double().numpy().ravel()
    assert row[(1, "conv2", "weight", "std")] == pytest.approx(x.std())
    assert row[(1, "conv2", "weight", "kurtosis")] == pytest.approx(scipy.stats.kurtosis(x))
    assert row[(1, "conv2", "weight", "near_zero_abs_0.01")] == pytest.approx((np.abs(x) < 0.01).mean())
    assert row[(1, "conv2", "weight", "within_default_bound")] == pytest.approx((np.abs(x) <= 1 / 12).mean())
    assert row[(0, "conv2", "weight", "std_ratio_to_init")] == pytest.approx(1.0, abs=0.15)  # fresh kaiming weights
    assert set(w["init"]) == {"kaiming_normal"} and set(w["param"]) == {"weight", "bias"}
    f = stats.feature_table(xr.open_zarr(run_dir / "features.zarr", consolidated=False))
    fr = f.set_index(["epoch", "layer", "kind", "split", "statistic"])["value"]
    act = features_by_numpy(s, store, run_dir, 1, "valid", "conv2")
    assert fr[(1, "conv2", "pre", "valid", "std")] == pytest.approx(act.std(), rel=1e-6)
    assert fr[(1, "conv2", "pre", "valid", "kurtosis")] == pytest.approx(scipy.stats.kurtosis(act), rel=1e-6)


@pytest.mark.slow
def test_best_validation_epoch_is_extracted_beside_the_scheduled_ones(run, tmp_path):
    """train.checkpoints: [..., best] with a best epoch that is not scheduled: the three stores
    hold it as one more epoch, with the attribute best_epoch; em_ab tables it for stats.claims_at."""
    from dnndist import stats

    root, store, _ = run
    tr = {"epochs": 3, "lr": 3e-2, "checkpoints": [0, "best"], "eval_batch_size": 500}
    s = settings_for(tmp_path, train=tr, stats={"claims_at": ["best"]})
    run_dir = tmp_path / "run"
    summary = train.train_run(s, store, run_dir, threads=1)
    best = summary["best_epoch"]
    assert best not in (0, 3), f"the best epoch ({best}) is a scheduled one with these settings; pick others"
    for kind, fn in extract.EXTRACTORS.items():
        fn(s, run_dir / "checkpoints", store, run_dir / f"{kind}.zarr")
        ds = xr.open_zarr(run_dir / f"{kind}.zarr", consolidated=False)
        assert ds.attrs["best_epoch"] == best and list(ds["epoch"].values) == sorted({0, best, 3}), kind
    grads = {
        str(layer): xr.open_zarr(run_dir / "gradients.zarr", group=str(layer), consolidated=False)
        for layer in xr.open_zarr(run_dir / "gradients.zarr", consolidated=False)["layer"].values
    }
    table = stats.em_ab_table(grads, stats.stage_epochs([0, best, 3], ("best",), best))
    assert sorted(set(table["epoch"])) == [0, best, 3]  # the first too: C6 is decided before training
    for layer, ds in ((n, g) for n, g in grads.items() if stats.EMISSION in g):  # conv layers: every channel
        rows = table[(table["layer"] == layer) & (table["measure"] == "emission")]
        assert rows["channel"].nunique() == ds.sizes["out_channel"] == rows["layer_channels"].iloc[0], layer
    (run_dir / "checkpoints" / train.BEST_FILE).unlink()
    with pytest.raises(DnndistError, match="best.json is missing"):
        extract.extract_weights(s, run_dir / "checkpoints", store, tmp_path / "again.zarr")


def _weight_table_tensor_by_tensor(weights, settings):
    """The weights table as weight_table computed it before it was vectorised over tensors (the
    reference): distribution_stats and spectral_stats of one tensor at a time, read epoch by epoch."""
    from dnndist import stats

    rows = []
    for layer, ds in weights.items():
        a = ds["weight"].attrs
        for epoch in ds["epoch"].values:
            for param in [p for p in ("weight", "bias") if p in ds]:
                x = stats.tensor_at(ds[param], epoch)
                std = a["init_std"] if param == "weight" else a["bias_init_std"]
                v = stats.distribution_stats(
                    x,
                    thresholds=settings.near_zero,
                    rel_thresholds=settings.near_zero_rel,
                    fan_in=int(a["fan_in"]),
                    init_std=std,
                )
                if param == "weight":
                    v.update(stats.spectral_stats(x))
                    v.update(fan_in=float(a["fan_in"]), fan_out=float(a["fan_out"]), init_std=float(a["init_std"]))
                    v.update(init_bound=float(a["init_bound"]), gain=float(a["gain"]))
                else:
                    v.update(init_std=float(a["bias_init_std"]), init_bound=float(a["bias_init_bound"]))
                base = {
                    **stats.run_of(ds),
                    "epoch": int(epoch),
                    "layer": layer,
                    "depth": int(a["depth"]),
                    "param": param,
                }
                rows.extend({**base, "statistic": k, "value": val} for k, val in v.items())
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_stats_of_a_variants_runs_in_one_process_equal_run_by_run(run, tmp_path):
    """`stats-runs` (the workflow's one job per variant: the runs' weight statistics vectorised over
    their tensors) writes each run's tables byte for byte as `stats-run` writes them for the run
    alone, and the weights table is the one computed tensor by tensor."""
    import shutil

    from dnndist import cli, stats

    _, _, runs = run
    settings = StatsSettings.from_dict({"stats": {"near_zero": [0.001, 0.01], "near_zero_rel": [0.1]}})
    settings_json = json.dumps({"stats": {"near_zero": [0.001, 0.01], "near_zero_rel": [0.1], "claims_at": []}})

    def copies(folder: str) -> list:
        """Each run's three stores copied into folder/<init> (a run directory of its own)."""
        for init, (_, run_dir) in runs.items():
            for kind in ("weights", "features", "gradients"):
                shutil.copytree(run_dir / f"{kind}.zarr", tmp_path / folder / init / f"{kind}.zarr")
        return [tmp_path / folder / init for init in runs]

    together = copies("together")
    assert cli.main(["stats-runs", "--settings", settings_json, "--run-dirs", *map(str, together)]) == 0
    for init, (_, run_dir) in runs.items():
        alone = tmp_path / "alone" / init
        stores = [
            a for kind in ("weights", "features", "gradients") for a in (f"--{kind}", str(run_dir / f"{kind}.zarr"))
        ]
        assert cli.main(["stats-run", "--settings", settings_json, *stores, "--out-dir", str(alone)]) == 0
        tables = sorted(p.name for p in alone.iterdir())
        assert tables == sorted(f"{name}.csv" for name in outputs.run_tables())
        for name in tables:
            assert (tmp_path / "together" / init / "stats" / name).read_bytes() == (alone / name).read_bytes(), name
        groups = stats.open_layer_groups(run_dir / "weights.zarr")
        reference = _weight_table_tensor_by_tensor(groups, settings)
        assert (alone / "weights.csv").read_text() == reference.to_csv(index=False)
        # the spectra computed once for both tables: the spectrum table as spectrum_table gives it alone
        assert (alone / "spectrum.csv").read_text() == stats.spectrum_table(groups).to_csv(index=False)
    # the runs shared by processes (the workflow's job threads; one BLAS thread each, as the rule
    # sets): the same bytes as one process
    one_blas = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    written = {}
    for workers in ("1", "2"):
        dirs = copies(f"workers{workers}")
        argv = ["stats-runs", "--settings", settings_json, "--run-dirs", *map(str, dirs), "--workers", workers]
        proc = subprocess.run([sys.executable, "-m", "dnndist", *argv], env=one_blas, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        written[workers] = {(d.name, p.name): p.read_bytes() for d in dirs for p in sorted((d / "stats").iterdir())}
    assert len(written["2"]) == len(runs) * len(outputs.run_tables()) and written["2"] == written["1"]
