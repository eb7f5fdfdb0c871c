"""Stacked training (dnndist.stacked): exact equivalence of the wide model in float64, and
per-run outputs of a stacked group equal to per-run training to float tolerance."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dnndist import config as dcfg
from dnndist import inits, models, stacked, train

from .conftest import env, snakemake, tiny_config, write_yaml

MODEL = {"name": "paper_cnn", "depth": 3, "width": 16, "hidden": 512, "norm": "none", "activation": "relu", "negative_slope": 0.3}


def _nets(settings: dict, names: list[str], image: int = 32) -> list[models.Net]:
    nets = []
    for seed, name in enumerate(names):
        net = models.build(settings, 3, 10, image).double()
        inits.apply(net, name, inits.gain_for(name, "torch", settings), "auto", seed)
        nets.append(net)
    return nets


@pytest.mark.parametrize("settings", [
    MODEL,
    {**MODEL, "name": "plain_cnn", "depth": 6, "width": 8, "hidden": 32, "norm": "batch", "activation": "leaky_relu"},
], ids=["paper_cnn", "plain_cnn_bn_leaky_depth6"])
def test_wide_model_equals_separate_models_in_float64(settings):
    """Logits, losses and every parameter gradient of the stacked model equal those of the
    separate models (autograd on each) to 1e-12 in float64; BN buffers follow too."""
    names = ["kaiming_normal", "xavier_uniform", "orthogonal"]
    nets = _nets(settings, names)
    wide = stacked.StackedCNN(nets).double()
    x = torch.randn(5, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 9, 2, 2])
    losses, _ = stacked.stacked_step_losses(wide, x, y)
    losses.sum().backward()
    for i, net in enumerate(nets):
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        assert torch.allclose(losses[i], loss, rtol=1e-12, atol=0)
        probe = models.build(settings, 3, 10, 32).double()
        wide.unstack_into(i, probe)
        for (name, p), (_, q) in zip(net.named_parameters(), probe.named_parameters()):
            assert torch.equal(p, q), name  # unstacking returns the run's own weights
        grads = {n: p.grad for n, p in net.named_parameters()}
        for name, mod in wide.stack.items():
            if not hasattr(mod, "weight") or mod.weight is None:
                continue
            for attr in ("weight", "bias"):
                g = getattr(mod, attr).grad
                own = grads[f"{name}.{attr}"]
                part = g[i] if name in wide.linears else g[i * own.shape[0] : (i + 1) * own.shape[0]]
                assert torch.allclose(part, own, rtol=1e-10, atol=1e-13), f"{name}.{attr}"
        for name, buf in net.named_buffers():
            other = dict(probe.named_buffers())[name]
            assert torch.allclose(buf, other, rtol=1e-12), name


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("stk")
    cfg = dcfg.validate(tiny_config(d / "results"), check_paths=False)
    out = d / "dataset.zarr"
    subprocess.run([sys.executable, "-m", "dnndist", "data", "--settings", json.dumps(dcfg.data_settings(cfg)),
                    "--out", str(out)], check=True, env=env(), capture_output=True)
    return out


def _group(tmp_path, **train_over):
    # the float32 tolerance below was set with the ReLU gain on every init: under PyTorch's gains
    # xavier_uniform's smaller conv weights leave some Adam steps sign-like on tiny gradients,
    # where float32 reduction order moves a weight by ~0.1 lr (exactness: the float64 tests above)
    cfg = dcfg.validate(tiny_config(tmp_path / "results", inits=["kaiming_normal", "xavier_uniform", "zeros"], init={"gain": "relu"},
                                    train={"epochs": 2, "lr": 1.0e-3, "checkpoints": [0, 1, 2], "eval_batch_size": 500,
                                           **train_over}), check_paths=False)
    runs = dcfg.runs(cfg)
    return runs, [dcfg.run_settings(cfg, r) for r in runs]


def test_stacked_group_matches_per_run_training(tmp_path, store):
    """Tolerance (stated in the README): after 2 epochs (14 Adam steps) every weight tensor
    is within 1e-4 of per-run training relative to the tensor's largest magnitude, and every
    metric within 1e-5; same files, same rows, same metadata."""
    runs, settings = _group(tmp_path)
    stacked.train_group(settings, store, [tmp_path / "stk" / r.init for r in runs], threads=2, progress=False)
    for s, r in zip(settings, runs):
        train.train_run(s, store, tmp_path / "per" / r.init, threads=2, progress=False)
        a, b = tmp_path / "per" / r.init, tmp_path / "stk" / r.init
        assert sorted(p.name for p in (a / "checkpoints").iterdir()) == sorted(p.name for p in (b / "checkpoints").iterdir())
        for ck in (a / "checkpoints").glob("epoch_*"):
            ta, ma = train.load_checkpoint(ck)
            tb, mb = train.load_checkpoint(b / "checkpoints" / ck.name)
            assert ma == mb
            for k in ta:
                scale = float(ta[k].abs().max()) or 1.0
                assert float((ta[k] - tb[k]).abs().max()) <= 1e-4 * scale, (r.init, ck.name, k)
        pa, pb = pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv")
        assert pa.drop(columns="value").equals(pb.drop(columns="value"))
        assert (pa["value"] - pb["value"]).abs().max() <= 1e-5
        sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
        assert sa["status"] == sb["status"] == "completed" and sa["config_hash"] == sb["config_hash"]
        assert not (b / ".resume").exists()


def test_divergence_in_a_group_stops_only_that_run(tmp_path, store):
    """SGD at lr 1e4 makes the models diverge; each run of the group stops at the same step
    as its per-run training, with the same last finite weights, and the others go on."""
    runs, settings = _group(tmp_path, optimizer="sgd", lr=1.0e4)
    stacked.train_group(settings, store, [tmp_path / "stk" / r.init for r in runs], threads=2, progress=False)
    statuses = set()
    for s, r in zip(settings, runs):
        per = train.train_run(s, store, tmp_path / "per" / r.init, threads=2, progress=False)
        stk = json.loads((tmp_path / "stk" / r.init / "summary.json").read_text())
        assert stk["status"] == per["status"] and stk.get("diverged_step") == per.get("diverged_step"), r.init
        statuses.add(stk["status"])
        ta, _ = train.load_checkpoint(tmp_path / "per" / r.init / "checkpoints" / "epoch_0002.safetensors")
        tb, _ = train.load_checkpoint(tmp_path / "stk" / r.init / "checkpoints" / "epoch_0002.safetensors")
        for k in ta:
            assert torch.allclose(ta[k], tb[k], rtol=1e-4, atol=1e-4 * float(ta[k].abs().max())), (r.init, k)
    assert "diverged" in statuses


def test_stack_groups_and_cli_errors(tmp_path):
    cfg = dcfg.validate(tiny_config(tmp_path / "r", inits=["kaiming_normal", "xavier_uniform", "ones"], seeds=[0, 1],
                                    stacked=True, overrides={"ones": {"train": {"lr": 1.0e-5}}}), check_paths=False)
    groups = dcfg.stack_groups(cfg)
    assert [g.name for g in groups] == ["base-seed0-1", "base-seed0-2", "base-seed1-1", "base-seed1-2"]
    assert [r.init for r in groups[0].runs] == ["kaiming_normal", "xavier_uniform"]  # ones trains with another lr
    assert sum(len(g.runs) for g in groups) == len(dcfg.runs(cfg))
    with pytest.raises(dcfg.ConfigError, match="config key 'stacked'"):
        bad = tiny_config(tmp_path / "r", stacked=True, model={"name": "resnet18"})
        dcfg.validate(bad, check_paths=False)
    proc = subprocess.run([sys.executable, "-m", "dnndist", "train-stacked", "--settings", "{}", "--data", "x", "--out", "y"],
                          env=env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "JSON list" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_stacked_workflow_plans_one_job_per_group_and_trains(tmp_path):
    cfg = tiny_config(tmp_path / "results", inits=["kaiming_normal", "xavier_uniform", "ones"], stacked=True)
    write_yaml(tmp_path / "tiny.yaml", cfg)
    targets = [str(tmp_path / "results" / "runs" / "base" / i / "seed0" / "summary.json") for i in cfg["inits"]]
    snakemake(tmp_path, *targets, "--cores", "2", "--configfile", str(tmp_path / "tiny.yaml"))
    log = (tmp_path / "results" / "logs" / "train" / "stacked" / "base-seed0-1.log").read_text()
    assert "stacked group of 3 runs" in log
    for t in targets:
        assert json.loads(open(t).read())["status"] == "completed"
    # editing one init's training settings splits it off: its group and the rest rerun
    cfg2 = {**cfg, "overrides": {"ones": {"train": {"lr": 5.0e-4}}}}
    write_yaml(tmp_path / "tiny2.yaml", cfg2)
    proc = snakemake(tmp_path, *targets, "-n", "--configfile", str(tmp_path / "tiny2.yaml"))
    out = proc.stdout + proc.stderr
    assert "train_stacked_base_seed0_1" in out and "train_stacked_base_seed0_2" in out
