"""TensorBoard export: the event files read back equal the stores they were written from."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from dnndist import cli, train  # noqa: E402
from dnndist import tensorboard as tb  # noqa: E402

pytestmark = pytest.mark.slow  # every test here reads the suite's tiny runs (conftest.tiny_runs)


def read_events(logdir):
    acc = EventAccumulator(str(logdir), size_guidance={"histograms": 0})
    acc.Reload()
    return acc


def histogram(acc, tag, step):
    (event,) = [e for e in acc.Histograms(tag) if e.step == step]
    return event.histogram_value


@pytest.fixture(scope="module")
def exported(tiny_runs, tmp_path_factory):
    _, _, runs = tiny_runs
    _, run_dir = runs["kaiming_normal"]
    logdir = tmp_path_factory.mktemp("tb")
    out = tb.write_events(run_dir, logdir)
    return run_dir, logdir, out, read_events(out)


def test_events_land_in_one_run_folder_per_run(exported):
    _, logdir, out, acc = exported
    assert out == logdir / "base" / "kaiming_normal" / "seed0"
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    tags = set(acc.Tags()["histograms"])
    assert {"weights/conv1", "biases/fc2", "features/train/conv2/pre", "features/random/fc1/post"} <= tags
    assert {"emission/conv2", "absorption/conv1", "loss/per_sample", "gradients/weights/conv1"} <= tags
    assert "features/valid/fc2/post" not in tags  # nothing stored for it
    assert [e.step for e in acc.Histograms("weights/conv2")] == [0, 1]  # one step per checkpoint epoch


def test_feature_histograms_equal_the_store(exported):
    run_dir, _, _, acc = exported
    f = xr.open_zarr(run_dir / "features.zarr").squeeze(["variant", "init", "seed"], drop=True).load()
    for epoch in (0, 1):
        for split, layer, kind in (("valid", "conv2", "pre"), ("train", "fc1", "post"), ("random", "conv1", "pre")):
            d = f.sel(epoch=epoch, split=split, layer=layer, kind=kind)
            h = histogram(acc, f"features/{split}/{layer}/{kind}", epoch)
            under, over = int(d["underflow"]), int(d["overflow"])
            counts = np.array(h.bucket)
            limits = np.array(h.bucket_limit)
            inner = slice(1 if under else 0, len(counts) - (1 if over else 0))
            np.testing.assert_array_equal(counts[inner], d["hist"].values)
            np.testing.assert_array_equal(limits[inner], d["bin_hi"].values)
            if under:
                assert (counts[0], limits[0]) == (under, float(d["hist_lo"]))
            if over:
                assert (counts[-1], limits[-1]) == (over, float(d["vmax"]))
            assert h.num == float(d["n"]) == counts.sum()
            assert (h.min, h.max) == (float(d["vmin"]), float(d["vmax"]))
            assert h.sum == pytest.approx(float(d["n"] * d["mu"]), rel=1e-12)
            assert h.sum_squares / h.num - (h.sum / h.num) ** 2 == pytest.approx(float(d["variance"]), rel=1e-6)


def test_weight_histograms_equal_the_checkpoint(exported):
    run_dir, _, _, acc = exported
    tensors, _ = train.load_checkpoint(run_dir / "checkpoints" / "epoch_0001.safetensors")
    for tag, key in (("weights/conv2", "conv2.weight"), ("biases/fc1", "fc1.bias")):
        x = tensors[key].double().numpy().ravel()
        h = histogram(acc, tag, 1)
        bins = int(np.clip(np.sqrt(x.size), 10, 100))
        counts, edges = np.histogram(x, bins=bins, range=(x.min(), x.max()))
        np.testing.assert_array_equal(h.bucket, counts)
        np.testing.assert_array_equal(h.bucket_limit, edges[1:])
        assert (h.num, h.min, h.max) == (x.size, x.min(), x.max())
        assert h.sum == pytest.approx(x.sum(), rel=1e-9, abs=1e-9)
        assert h.sum_squares == pytest.approx((x * x).sum(), rel=1e-9)


def test_gradient_histograms_equal_the_store(exported):
    run_dir, _, _, acc = exported
    g = xr.open_zarr(run_dir / "gradients.zarr", group="conv2")
    em = g["em"].sel(epoch=1).values.ravel()
    h = histogram(acc, "emission/conv2", 1)
    assert h.num == em.size and h.max == em.max() and sum(h.bucket) == em.size
    loss = xr.open_zarr(run_dir / "gradients.zarr")["loss"].sel(epoch=0).values.ravel()
    assert histogram(acc, "loss/per_sample", 0).sum == pytest.approx(loss.sum(), rel=1e-12)


def test_a_second_export_replaces_the_first(exported):
    run_dir, logdir, out, _ = exported
    assert tb.write_events(run_dir, logdir, kinds=["weights"]) == out
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert all(t.startswith(("weights/", "biases/")) for t in read_events(out).Tags()["histograms"])


def test_constant_tensor_is_one_bucket():
    h = tb.values_histogram(np.full(7, 0.5))
    assert (h.bucket_limits, h.bucket_counts, h.num, h.min, h.max) == ([0.5], [7], 7.0, 0.5, 0.5)
    assert tb.values_histogram(np.array([np.nan, np.inf])) is None


def test_cli_one_line_errors(tiny_runs, tmp_path, capsys):
    _, _, runs = tiny_runs
    _, run_dir = runs["kaiming_normal"]
    assert cli.main(["tensorboard", "--run", str(tmp_path), "--out", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no weights store" in err
    bad = tmp_path / "bad"
    (bad / "features.zarr").mkdir(parents=True)
    (bad / "features.zarr" / "zarr.json").write_text("{not json")
    assert cli.main(["tensorboard", "--run", str(bad), "--out", str(tmp_path / "tb"), "--kinds", "features"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a readable features store" in err
    assert not (tmp_path / "tb").exists()  # nothing written
    assert cli.main(["tensorboard", "--run", str(run_dir), "--out", str(tmp_path / "tb"), "--kinds", "weights"]) == 0
    assert "tensorboard --logdir" in capsys.readouterr().out


def test_cli_exports_several_runs_in_one_call(tiny_runs, tmp_path, capsys):
    _, _, runs = tiny_runs
    dirs = [str(run_dir) for _, run_dir in runs.values()]
    assert cli.main(["tensorboard", "--run", *dirs, "--out", str(tmp_path / "tb"), "--kinds", "weights"]) == 0
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]
    assert len(wrote) == len(dirs) == len({line for line in wrote})
    for init in runs:
        assert list((tmp_path / "tb" / "base" / init).glob("seed*/events.out.tfevents.*")), init
