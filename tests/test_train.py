"""Training: determinism, kill-and-resume byte identity, divergence, penalties, learning."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from dnndist import config as dcfg
from dnndist import data, models, progress, rundir, train
from dnndist.settings import DataSettings, RunSettings

from .conftest import env, tiny_config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "dataset.zarr"
    settings = {"source": "synthetic", "synthetic": {"train_size": 1200, "test_size": 200, "image_size": 32, "seed": 0}}
    return data.build_store(DataSettings.from_dict(settings), out)


def settings_for(tmp_path, init="kaiming_normal", seed=0, **sections):
    cfg = dcfg.validate(tiny_config(tmp_path, **sections), check_paths=False)
    return RunSettings.from_dict(dcfg.run_settings(cfg, dcfg.Run("base", init, seed)))


def ckpt_bytes(run_dir):
    return {p.name: p.read_bytes() for p in sorted((run_dir / "checkpoints").glob("epoch_*"))}


def test_outputs_and_metrics_table(tmp_path, store):
    s = settings_for(tmp_path, train={"epochs": 2, "checkpoints": [1], "lr": 1e-3, "eval_batch_size": 500})
    summary = train.train_run(s, store, tmp_path / "run", threads=1)
    assert summary["status"] == "completed" and summary["epochs_trained"] == 2
    assert sorted(ckpt_bytes(tmp_path / "run")) == [
        "epoch_0000.safetensors",
        "epoch_0001.safetensors",
        "epoch_0002.safetensors",
    ]
    sums = (tmp_path / "run" / "checkpoints" / "SHA256SUMS").read_text().splitlines()  # recorded at write
    assert [line.split("  ")[1] for line in sums] == sorted(ckpt_bytes(tmp_path / "run"))
    assert sums[0].split("  ")[0] == hashlib.sha256(ckpt_bytes(tmp_path / "run")["epoch_0000.safetensors"]).hexdigest()
    assert not (tmp_path / "run" / ".resume").exists()
    m = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(m.columns) == train.METRIC_COLUMNS
    steps = m[m["step"].notna() & (m["metric"] == "loss")]
    assert len(steps) == 2 * 18  # 1100 train images in batches of 64, the last one partial
    epoch_rows = m[m["step"].isna()]
    assert set(epoch_rows["split"]) == {"train", "valid", "test"}
    assert set(epoch_rows[epoch_rows["epoch"] == 0]["split"]) == {"valid", "test"}
    # the per-epoch train loss is the size-weighted mean of its steps
    e1 = steps[steps["epoch"] == 1]["value"]
    assert epoch_rows.query("epoch == 1 and split == 'train' and metric == 'loss'")["value"].item() == pytest.approx(
        e1.mean(), rel=0.02
    )
    tensors, meta = train.load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_0002.safetensors")
    assert meta["epoch"] == "2" and meta["init"] == "kaiming_normal" and meta["diverged"] == "false"
    assert tensors["conv1.weight"].shape == (16, 3, 3, 3)
    t0, _ = train.load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_0000.safetensors")
    assert not torch.equal(t0["conv1.weight"], tensors["conv1.weight"])  # it trained


@pytest.mark.slow
def test_same_settings_same_bytes_and_seed_matters(tmp_path, store):
    s = settings_for(tmp_path)
    train.train_run(s, store, tmp_path / "a", threads=1)
    train.train_run(s, store, tmp_path / "b", threads=1)
    assert ckpt_bytes(tmp_path / "a") == ckpt_bytes(tmp_path / "b")
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    train.train_run(settings_for(tmp_path, seed=1), store, tmp_path / "c", threads=1)
    assert ckpt_bytes(tmp_path / "a") != ckpt_bytes(tmp_path / "c")


@pytest.mark.slow
def test_best_checkpoint_keeps_the_epoch_of_lowest_validation_loss(tmp_path, store):
    """train.checkpoints: [..., best] keeps the best-validation epoch (dnndist.best's rule, applied
    to metrics.csv independently here) with the weights a scheduled checkpoint of it has."""
    tr = {"epochs": 4, "lr": 1e-2, "eval_batch_size": 500}  # a high lr: the valid loss stops falling early
    summary = train.train_run(settings_for(tmp_path, train={**tr, "checkpoints": [2, "best"]}), store, tmp_path / "a")
    m = pd.read_csv(tmp_path / "a" / "metrics.csv")
    valid = m[(m["split"] == "valid") & (m["metric"] == "loss") & m["step"].isna()]
    expected = int(valid.loc[valid["value"].idxmin(), "epoch"])  # the first of the lowest
    assert expected not in (0, 2, 4), "pick settings whose best epoch is not scheduled"
    ckpts = tmp_path / "a" / "checkpoints"
    assert summary["best_epoch"] == expected == json.loads((ckpts / train.BEST_FILE).read_text())["epoch"]
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == sorted(["SHA256SUMS", "best.json", *(f"epoch_{e:04d}.safetensors" for e in {0, 2, 4, expected})])
    assert train.BEST_FILE in (ckpts / "SHA256SUMS").read_text()
    assert not list((tmp_path / "a").glob(".resume"))  # the best_NNNN files lived only there
    train.train_run(settings_for(tmp_path, train={**tr, "checkpoints": [expected, 2]}), store, tmp_path / "b")
    got, meta = train.load_checkpoint(ckpts / f"epoch_{expected:04d}.safetensors")
    ref, _ = train.load_checkpoint(tmp_path / "b" / "checkpoints" / f"epoch_{expected:04d}.safetensors")
    assert meta["epoch"] == str(expected) and got.keys() == ref.keys()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert not (tmp_path / "b" / "checkpoints" / train.BEST_FILE).exists()  # not kept unless asked


RECIPE = {
    "optimizer": "sgd",
    "nesterov": True,
    "lr": 0.02,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "augment": "flip_crop",
    "label_smoothing": 0.1,
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [{}, RECIPE], ids=["paper", "recipe"])
def test_kill_and_resume_gives_identical_bytes(tmp_path, store, recipe):
    """Also with the ResNet recipe: the lr and the augmentation are functions of (seed, step),
    so the resumed epochs see the batches and rates of the uninterrupted run."""
    # the paper case at a high lr: its best epoch (1) is not scheduled, so its best_0001 must survive
    # the kill and the pruning of the resumed epochs
    tr = {"epochs": 6, "checkpoints": [2, 4, "best"], "lr": 1e-2, "eval_batch_size": 500, **recipe}
    s = settings_for(tmp_path, train=tr)
    train.train_run(s, store, tmp_path / "ref", threads=1)
    run_dir = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "dnndist",
        "train",
        "--settings",
        json.dumps(s.to_dict()),
        "--data",
        str(store),
        "--out",
        str(run_dir),
        "--threads",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(run_dir.glob(".resume/*/*/state_0002.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "summary.json").exists()
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr  # it resumed rather than starting over
    assert ckpt_bytes(run_dir) == ckpt_bytes(tmp_path / "ref")
    assert (run_dir / "metrics.csv").read_bytes() == (tmp_path / "ref" / "metrics.csv").read_bytes()
    best_json = [(d / "checkpoints" / train.BEST_FILE).read_bytes() for d in (run_dir, tmp_path / "ref")]
    assert best_json[0] == best_json[1]
    if not recipe:
        assert json.loads(best_json[0])["epoch"] not in (0, 2, 4, 6)


@pytest.mark.slow
def test_changed_settings_do_not_resume_stale_state(tmp_path, store):
    s1 = settings_for(tmp_path, train={"epochs": 2, "lr": 1e-3, "checkpoints": [], "eval_batch_size": 500})
    stale = tmp_path / "run" / ".resume" / "0123456789abcdef"
    stale.mkdir(parents=True)
    (stale / "state_0001.pt").write_bytes(b"garbage")
    train.train_run(s1, store, tmp_path / "run", threads=1)
    train.train_run(s1, store, tmp_path / "fresh", threads=1)
    assert ckpt_bytes(tmp_path / "run") == ckpt_bytes(tmp_path / "fresh")


def test_divergence_is_recorded_and_the_run_ends_cleanly(tmp_path, store):
    s = settings_for(
        tmp_path, init="ones", train={"epochs": 3, "lr": 1e6, "checkpoints": [1, 2], "eval_batch_size": 500}
    )
    summary = train.train_run(s, store, tmp_path / "run", threads=1)
    assert summary["status"] == "diverged" and summary["epochs_trained"] < 3
    assert summary["diverged_step"] >= 0
    m = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert (m["metric"] == "diverged").sum() == 1
    files = ckpt_bytes(tmp_path / "run")
    assert sorted(files) == [
        "epoch_0000.safetensors",
        "epoch_0001.safetensors",
        "epoch_0002.safetensors",
        "epoch_0003.safetensors",
    ]
    _, meta = train.load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_0003.safetensors")
    assert meta["diverged"] == "true"


@pytest.mark.slow
def test_l1_and_l2_shrink_weights(tmp_path, store):
    def final_abs(**tr):
        s = settings_for(tmp_path, train={"epochs": 2, "lr": 1e-3, "checkpoints": [], "eval_batch_size": 500, **tr})
        out = tmp_path / json.dumps(tr, sort_keys=True).replace('"', "").replace(" ", "")
        train.train_run(s, store, out, threads=1)
        t, _ = train.load_checkpoint(out / "checkpoints" / "epoch_0002.safetensors")
        return sum(t[k].abs().sum().item() for k in t if k.endswith("weight"))

    plain = final_abs()
    assert final_abs(l1=1e-3) < 0.9 * plain
    assert final_abs(weight_decay=1.0) < 0.99 * plain


def test_learns_clearly_above_chance_on_demo_data(tmp_path, store):
    s = settings_for(tmp_path, train={"epochs": 2, "lr": 1e-3, "checkpoints": [], "eval_batch_size": 500})
    summary = train.train_run(s, store, tmp_path / "run", threads=2)
    assert summary["final"]["valid_accuracy"] > 0.3  # chance is 0.1


def test_bn_and_leaky_relu_train(tmp_path, store):
    s = settings_for(tmp_path, model={"norm": "batch", "activation": "leaky_relu"})
    summary = train.train_run(s, store, tmp_path / "run", threads=1)
    assert summary["status"] == "completed"
    t, _ = train.load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_0001.safetensors")
    assert "norm1.running_mean" in t
    model = models.build(s.model)
    model.load_state_dict(t)
    acts = [m for m in model.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert acts and not any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    seen = []
    acts[0].register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
    model.eval()(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    pre, post = seen[0]
    slope = s.model.negative_slope
    assert slope > 0 and (post < 0).any()  # leaky: negative inputs pass, scaled by the slope
    torch.testing.assert_close(post, torch.where(pre > 0, pre, slope * pre))


def test_resume_state_is_loaded_weights_only(tmp_path, store, monkeypatch):
    s = settings_for(tmp_path, train={"epochs": 2, "checkpoints": [], "lr": 1e-3, "eval_batch_size": 500})

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash after the last epoch")

    monkeypatch.setattr(train, "finish_run", crash)  # the run folder is not completed
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.train_run(s, store, tmp_path / "run", threads=1)
    monkeypatch.undo()
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real(*a, **k))
    summary = train.train_run(s, store, tmp_path / "run", threads=1)
    assert summary["status"] == "completed"
    assert calls and all(k.get("weights_only") is True for k in calls)


def test_progress_logs_steps_rate_and_time_left_without_a_terminal(caplog):
    """Under Snakemake (no terminal, --no-progress) a long training job still says where it is."""
    import logging

    bar = progress.Progress(total_steps=100, done_steps=20, enabled=False, images_per_step=64, every_s=0.0)
    with caplog.at_level(logging.INFO, logger="dnndist.train"):
        time.sleep(0.01)
        bar.advance(10)
    line = caplog.messages[-1]
    assert line.startswith("step 30/100 (30 %)") and "images/s" in line and "left" in line


def test_resume_cleanup_skips_the_temporary_files_of_a_killed_write(tmp_path):
    """A kill during an atomic write leaves '.epoch_0003.safetensors.tmp-...'; the resume's cleanup
    deletes the files of the epochs after the resumed one and is not stopped by such a name."""
    m = rundir.Member(settings=None, run_dir=tmp_path, state_dir=tmp_path / "state")  # type: ignore[arg-type]
    names = {
        "metrics": ["epoch_0001.csv", "epoch_0003.csv"],
        "checkpoints": ["epoch_0002.safetensors", "best_0001.safetensors", "best_0003.safetensors"],
    }
    for sub, files in names.items():
        (m.state_dir / sub).mkdir(parents=True)
        for f in [*files, ".epoch_0003.safetensors.tmp-ab12cd34"]:
            (m.state_dir / sub / f).write_text("x")
    rundir.drop_epochs_after(m, 2)
    left = {sub: sorted(p.name for p in (m.state_dir / sub).iterdir()) for sub in names}
    assert left == {
        "metrics": [".epoch_0003.safetensors.tmp-ab12cd34", "epoch_0001.csv"],
        "checkpoints": [".epoch_0003.safetensors.tmp-ab12cd34", "best_0001.safetensors", "epoch_0002.safetensors"],
    }
