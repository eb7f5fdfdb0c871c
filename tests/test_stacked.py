"""Stacked training (dnndist.stacked, the one loop in dnndist.train): exact equivalence of
the wide model in float64 with per-run inputs, and of whole training epochs in float64 with
the ResNet recipe (augmentation, one-cycle lr, label smoothing, Nesterov SGD), per-run
outputs of a stack of mixed inits and seeds equal to per-run training to float tolerance,
divergence of one run isolated, and the periodic finiteness look (snapshot + replay) equal
to looking at every step."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dnndist import config as dcfg
from dnndist import data, inits, models, stacked, train
from dnndist.checkpoints import load_checkpoint
from dnndist.settings import ModelSettings, RunSettings

from .conftest import REPO, cli_run, snakemake, tiny_config, write_yaml
from .test_recipe import RECIPE as RECIPE_RUN

# the ResNet recipe of tests/test_recipe.py (Nesterov SGD, one-cycle lr, flip_crop, label smoothing), its
# checkpoints and evaluation batch left to each test here
RECIPE = {k: v for k, v in RECIPE_RUN.items() if k not in ("checkpoints", "eval_batch_size")}
MODEL = {
    "name": "paper_cnn",
    "depth": 3,
    "width": 16,
    "hidden": 512,
    "norm": "none",
    "activation": "relu",
    "negative_slope": 0.3,
}


def _nets(settings: ModelSettings, names: list[str], image: int = 32) -> list[models.Net]:
    nets = []
    for seed, name in enumerate(names):
        net = models.build(settings, 3, 10, image).double()
        inits.apply(net, name, inits.gain_for(name, "torch", settings), "auto", seed)
        nets.append(net)
    return nets


@pytest.mark.parametrize(
    "settings",
    [
        MODEL,
        {
            **MODEL,
            "name": "plain_cnn",
            "depth": 6,
            "width": 8,
            "hidden": 32,
            "norm": "batch",
            "activation": "leaky_relu",
        },
    ],
    ids=["paper_cnn", "plain_cnn_bn_leaky_depth6"],
)
@pytest.mark.parametrize("first", ["by_run", "grouped"])
def test_wide_model_equals_separate_models_in_float64(settings, first, monkeypatch):
    """Each run reads its own batch (its seed's data order). Logits, losses and every parameter
    gradient of the stacked model equal those of the separate models (autograd on each) to
    1e-12 in float64; BN buffers follow too. Both forms of the first conv: run by run (the
    CPU's) and one conv grouped over the K input blocks (the GPU's)."""
    if first == "grouped":
        monkeypatch.setattr(stacked.StackedCNN, "first_by_run_on", ())
    settings = ModelSettings.from_dict(settings)
    names = ["kaiming_normal", "xavier_uniform", "orthogonal"]
    nets = _nets(settings, names)
    wide = stacked.StackedCNN(nets).double()
    x = torch.randn(3, 5, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([[0, 3, 9, 2, 2], [1, 1, 4, 7, 0], [5, 6, 8, 9, 3]])
    losses, _ = wide.losses(x, y, torch.contiguous_format)
    losses.sum().backward()
    for i, net in enumerate(nets):
        loss = F.cross_entropy(net(x[i]), y[i])
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


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_training_runs_each_activation_after_its_max_pool_with_the_same_outputs_and_gradients(activation):
    """Training runs act1/pool1 as pool1/act1 (``stacked.train_order``): the logits and every
    gradient of a stack of one equal the model's own forward pass bit for bit in float32, for
    ReLU (ties only at zero, where the gradient is zero) and LeakyReLU; inputs are mostly
    negative so that many pooling windows hold only negative values. The model itself keeps its
    order (extraction's: post-activation features are the maps before the pool)."""
    settings = ModelSettings.from_dict({**MODEL, "activation": activation})
    net = models.build(settings, 3, 10, 32)
    inits.apply(net, "kaiming_normal", inits.gain_for("kaiming_normal", "torch", settings), "auto", 0)
    names = [n for n, _ in net.named_children()]
    order = [n for n, _ in stacked.train_order(net.named_children())]
    assert names[:4] == ["conv1", "act1", "pool1", "conv2"] and order[:4] == ["conv1", "pool1", "act1", "conv2"]
    assert order.index("act3") == names.index("act3")  # no pool after conv3: unchanged
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)) - 1.0
    y = torch.arange(16) % 10
    single = stacked.Single(net)
    assert [n for n, _ in net.named_children()] == names
    out = {}
    for label, forward in (("model", net), ("train order", single)):
        net.zero_grad(set_to_none=True)
        logits = forward(x)
        F.cross_entropy(logits, y).backward()
        out[label] = (logits.detach(), {n: p.grad.clone() for n, p in net.named_parameters()})
    assert torch.equal(out["model"][0], out["train order"][0])
    for name, g in out["model"][1].items():
        assert torch.equal(g, out["train order"][1][name]), name
    assert (out["model"][1]["conv1.weight"] != 0).any()


def _double(monkeypatch):
    """Train in float64: models and prepared inputs (the same code path otherwise)."""
    build, prepare = train.build_model, data.prepare
    monkeypatch.setattr(train, "build_model", lambda *a, **k: build(*a, **k).double())
    monkeypatch.setattr(data, "prepare", lambda *a, **k: prepare(*a, **k).double())


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_stack_of_mixed_inits_and_seeds_equals_per_run_in_float64(tmp_path, store, monkeypatch, optimizer):
    """Augmentation, label smoothing, the one-cycle lr and (SGD) Nesterov momentum: every run
    of a stack of mixed inits and seeds ends its two epochs (10 steps, a partial last batch in
    each epoch) with the weights and step losses of its training alone, to 1e-9 in float64.
    Adam divides each gradient by its own running RMS: a weight whose gradient is a cancellation
    of much larger terms carries their rounding (1e-16 of them) into a step of full size, so
    under Adam (lr 0.05 here) a few fc1 weights differ by up to ~5e-12, 1e-10 of one step."""
    _double(monkeypatch)
    runs = [("kaiming_normal", 0), ("xavier_uniform", 1), ("kaiming_normal", 1), ("orthogonal", 2)]
    over = {"nesterov": False} if optimizer == "adam" else {}
    cfg = dcfg.validate(
        tiny_config(
            tmp_path / "results", inits=sorted({i for i, _ in runs}), train={**RECIPE, "optimizer": optimizer, **over}
        ),
        check_paths=False,
    )
    settings = [RunSettings.from_dict(dcfg.run_settings(cfg, dcfg.Run("base", i, s))) for i, s in runs]
    ds = data.make_splits(data.open_store(store), **settings[0].split.kwargs())
    cpu = torch.device("cpu")
    stack = train.Trainer(settings, ds, cpu)
    alone = [train.Trainer([s], ds, cpu) for s in settings]
    assert stack.steps == 5 and stack.n_train % stack.bs  # 300 images in batches of 64
    for epoch in range(2):
        out = stack.epoch(epoch * stack.steps, lambda n: None)
        for i, t in enumerate(alone):
            own = t.epoch(epoch * t.steps, lambda n: None)
            torch.testing.assert_close(torch.from_numpy(out.losses[:, i]), torch.from_numpy(own.losses[:, 0]))
    for i, t in enumerate(alone):
        probe = train.build_model(settings[i], ds, cpu)
        stack.stack.unstack_into(i, probe)
        for (name, p), q in zip(probe.named_parameters(), t.stack.net.parameters()):
            assert p.dtype == torch.float64
            assert torch.allclose(p, q, rtol=1e-9, atol=1e-12 if optimizer == "sgd" else 1e-10), (runs[i], name)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("stk")
    cfg = dcfg.validate(tiny_config(d / "results"), check_paths=False)
    out = d / "dataset.zarr"
    assert cli_run("data", "--settings", json.dumps(dcfg.data_settings(cfg)), "--out", out)[0] == 0
    return out


def _group(tmp_path, seeds=(0, 1), model=None, **train_over):
    # the float32 tolerance below was set with the ReLU gain on every init: under PyTorch's gains
    # xavier_uniform's smaller conv weights leave some Adam steps sign-like on tiny gradients,
    # where float32 reduction order moves a weight by ~0.1 lr (exactness: the float64 tests above)
    cfg = dcfg.validate(
        tiny_config(
            tmp_path / "results",
            inits=["kaiming_normal", "xavier_uniform", "zeros"],
            init={"gain": "relu"},
            seeds=list(seeds),
            model=model or {},
            train={"epochs": 2, "lr": 1.0e-3, "checkpoints": [0, 1, 2], "eval_batch_size": 500, **train_over},
        ),
        check_paths=False,
    )
    runs = dcfg.runs(cfg)
    return runs, [RunSettings.from_dict(dcfg.run_settings(cfg, r)) for r in runs]


@pytest.mark.slow
def test_stacked_group_matches_per_run_training(tmp_path, store):
    """Three inits x two seeds in one stack against per-run training, after 2 epochs (14 Adam
    steps at lr 1e-3): same files, rows and metadata, and float32 numbers that agree within
    bounds that hold whatever kernels the CPU runs (README, "Stacked training").

    Exactness is the float64 test above. In float32 the stack and a run alone sum in other
    orders (oneDNN picks kernels by instruction set), and Adam turns that rounding into whole
    steps where a gradient is near zero: its update is m/(sqrt(v)+eps), about sign(g) * lr, so
    such a weight can move by up to 2 * 3.2 * lr a step ((1 - b1)/sqrt(1 - b2) = 3.2 bounds
    Adam's step). Measured on AVX-512, AVX2 and the default (scalar) kernels: 1-2 weights of a
    run's 535k differ by 0.01-0.11 lr, the rest by < 1e-6 lr. So the bounds are on the bulk:
    - per tensor, the mean |difference| <= 1e-3 lr (measured <= 2e-6 lr);
    - per run, at most 1e-4 of all weights further apart than 0.1 lr (measured <= 2e-6);
    - losses within 1e-5 relative (float32 sums of <= 500 terms; measured <= 2e-7), and
      accuracies within one image of the smallest batch (1/32; the tiny config's is 44)."""
    runs, settings = _group(tmp_path)
    train.train_stack(
        settings, store, [tmp_path / "stk" / r.init / str(r.seed) for r in runs], threads=2, progress=False
    )
    for s, r in zip(settings, runs):
        train.train_run(s, store, tmp_path / "per" / r.init / str(r.seed), threads=2, progress=False)
        a, b = tmp_path / "per" / r.init / str(r.seed), tmp_path / "stk" / r.init / str(r.seed)
        assert sorted(p.name for p in (a / "checkpoints").iterdir()) == sorted(
            p.name for p in (b / "checkpoints").iterdir()
        )
        lr = s.train.lr
        for ck in (a / "checkpoints").glob("epoch_*"):
            ta, ma = load_checkpoint(ck)
            tb, mb = load_checkpoint(b / "checkpoints" / ck.name)
            assert ma == mb
            far = total = 0
            for k in ta:
                diff = (ta[k].double() - tb[k].double()).abs()
                assert float(diff.mean()) <= 1e-3 * lr, (r.init, r.seed, ck.name, k, float(diff.mean()))
                far, total = far + int((diff > 0.1 * lr).sum()), total + diff.numel()
            assert far <= 1e-4 * total, (r.init, r.seed, ck.name, far, total)
        pa, pb = pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv")
        assert pa.drop(columns="value").equals(pb.drop(columns="value"))
        loss, gap = pa["metric"] == "loss", (pa["value"] - pb["value"]).abs()
        assert (gap[loss] <= 1e-5 * pa["value"][loss].abs()).all(), pa[loss & (gap > 1e-5 * pa["value"].abs())]
        assert (gap[~loss] <= 1 / 32).all()
        sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
        assert sa["status"] == sb["status"] == "completed" and sa["config_hash"] == sb["config_hash"]
        assert not (b / ".resume").exists()


@pytest.mark.slow
def test_divergence_in_a_group_stops_only_that_run(tmp_path, store):
    """SGD at lr 1e4 makes the models diverge; each run of the group stops at the same step
    as its per-run training, with the same last finite weights, and the others go on.

    "The same" on any CPU: a step at lr 1e4 moves the weights by orders of magnitude, so a
    snapshot one step off would differ by order 1 in every tensor, while the summation order of
    the right step's gradients (oneDNN's kernels differ by instruction set) is amplified into
    differences of a few 1e-5 of a tensor's norm (measured: <= 6.4e-5 with the scalar kernels,
    ATEN_CPU_CAPABILITY=default, single elements up to 2.5e-4 of the tensor's largest). The
    bound: every tensor within 1e-2 of its norm, and finite."""
    runs, settings = _group(tmp_path, seeds=(0,), optimizer="sgd", lr=1.0e4)
    train.train_stack(settings, store, [tmp_path / "stk" / r.init for r in runs], threads=2, progress=False)
    statuses = set()
    for s, r in zip(settings, runs):
        per = train.train_run(s, store, tmp_path / "per" / r.init, threads=2, progress=False)
        stk = json.loads((tmp_path / "stk" / r.init / "summary.json").read_text())
        assert stk["status"] == per["status"] and stk.get("diverged_step") == per.get("diverged_step"), r.init
        statuses.add(stk["status"])
        ta, _ = load_checkpoint(tmp_path / "per" / r.init / "checkpoints" / "epoch_0002.safetensors")
        tb, _ = load_checkpoint(tmp_path / "stk" / r.init / "checkpoints" / "epoch_0002.safetensors")
        for k in ta:
            a, b = ta[k].double(), tb[k].double()
            assert torch.isfinite(a).all() and torch.isfinite(b).all(), (r.init, k)
            assert float((a - b).norm()) <= 1e-2 * float(a.norm()), (r.init, k)
    assert "diverged" in statuses


@pytest.mark.slow
def test_stack_groups_and_cli_errors(tmp_path):
    cfg = dcfg.validate(
        tiny_config(
            tmp_path / "r",
            inits=["kaiming_normal", "xavier_uniform", "ones"],
            seeds=[0, 1],
            stacked=True,
            overrides={"ones": {"train": {"lr": 1.0e-5}}},
        ),
        check_paths=False,
    )
    groups = dcfg.stack_groups(cfg)
    assert [g.name for g in groups] == ["base-1", "base-2"]  # inits and seeds stack together
    assert [r.name for r in groups[0].runs] == [
        "base/kaiming_normal/seed0",
        "base/kaiming_normal/seed1",
        "base/xavier_uniform/seed0",
        "base/xavier_uniform/seed1",
    ]
    assert [r.init for r in groups[1].runs] == ["ones", "ones"]  # ones trains with another lr
    assert sum(len(g.runs) for g in groups) == len(dcfg.runs(cfg))
    capped = dcfg.validate({**cfg, "stack_max": 3}, check_paths=False)
    assert [len(g.runs) for g in dcfg.stack_groups(capped)] == [3, 1, 2]  # stack_max bounds a group
    with pytest.raises(dcfg.ConfigError, match="config key 'stacked'"):
        bad = tiny_config(tmp_path / "r", stacked=True, model={"name": "resnet18"})
        dcfg.validate(bad, check_paths=False)
    rc, err = cli_run("train-stacked", "--settings", "{}", "--data", "x", "--out", "y")
    assert rc == 2 and "JSON list" in err and "Traceback" not in err


def _file_states(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """(inode, mtime in ns, bytes) of every file of the runs under ``root`` but Snakemake's markers:
    equal states mean a file was neither rewritten nor replaced."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".snakemake")
    }


@pytest.mark.slow
def test_a_run_of_a_stack_depends_on_its_own_settings_only(tmp_path):
    """stacked: true keeps the workflow's promise (dnndist.runcache): the runs that need training
    form the stacks, so an override of one init trains that run alone and leaves the others' files
    untouched (not retrained, not even rewritten), an added seed trains only the new run, a setting
    changed back trains nothing and restores the first bytes, and a touched module plans nothing."""
    cfg = tiny_config(tmp_path / "results", inits=["kaiming_normal", "xavier_uniform", "ones"], stacked=True)
    write_yaml(tmp_path / "tiny.yaml", cfg)
    runs = tmp_path / "results" / "runs" / "base"

    def targets(c):
        return [str(runs / i / f"seed{s}" / "summary.json") for i in c["inits"] for s in (0, 1)[: 1 + (i in c["more"])]]

    def run(c, name, plan=False):
        write_yaml(tmp_path / f"{name}.yaml", {k: v for k, v in c.items() if k != "more"})
        args = (*targets(c), "--configfile", str(tmp_path / f"{name}.yaml"))
        planned = snakemake(tmp_path, *args, "-n").stdout if plan else ""
        snakemake(tmp_path, *args, "--cores", "2")
        logs = sorted(
            (tmp_path / "results" / "logs" / "train" / "stacked").glob("*.log"), key=lambda p: p.stat().st_mtime
        )
        return planned, logs[-1].read_text() if logs else ""

    first = {**cfg, "more": []}
    _, log = run(first, "first")
    assert "stack of 3 run(s) (kaiming_normal/seed0, xavier_uniform/seed0, ones/seed0)" in log
    assert all(json.loads(open(t).read())["status"] == "completed" for t in targets(first))
    before = _file_states(runs)
    # an override of one init: that run alone trains (a stack of one) and is restored
    changed = {**first, "overrides": {"ones": {"train": {"lr": 5.0e-4}}}}
    planned, log = run(changed, "changed", plan=True)
    assert re.search(r"^train_stacked_base_1\s+1$", planned, re.M) and re.search(r"^restore\s+1$", planned, re.M)
    assert "stack of 1 run(s) (ones/seed0)" in log
    after = _file_states(runs)
    for name, state in before.items():
        assert (after[name] == state) == (not name.startswith("ones/")), name  # only the changed run's files
    assert (
        json.loads((runs / "ones" / "seed0" / "summary.json").read_text())["config_hash"]
        != json.loads(before["ones/seed0/summary.json"][2])["config_hash"]
    )
    # an added seed trains only the new run
    more = {
        **changed,
        "more": ["xavier_uniform"],
        "overrides": {**changed["overrides"], "xavier_uniform": {"seeds": [0, 1]}},
    }
    planned, log = run(more, "more")
    assert "stack of 1 run(s) (xavier_uniform/seed1)" in log
    grown = _file_states(runs)
    assert {k: v for k, v in grown.items() if k in after} == after
    # the override taken back: its first training is found in the cache, nothing trains
    planned, _ = run({**more, "overrides": {"xavier_uniform": {"seeds": [0, 1]}}}, "back", plan=True)
    assert "train_stacked" not in planned and re.search(r"^restore\s+1$", planned, re.M)
    assert {k: v[2] for k, v in _file_states(runs).items() if k in before} == {k: v[2] for k, v in before.items()}
    # a module touched without a change plans nothing (its content is what the rules record)
    module = REPO / "src" / "dnndist" / "stacked.py"
    stat = module.stat()
    try:
        os.utime(module, (stat.st_atime + 5, stat.st_mtime + 5))
        touched = snakemake(tmp_path, *targets(more), "-n", "--configfile", str(tmp_path / "back.yaml"))
    finally:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "Nothing to be done" in touched.stdout + touched.stderr


@pytest.mark.slow
def test_set_resources_for_train_reach_the_stack_groups_rules(tmp_path):
    """Snakemake applies set-resources by rule name; the groups' rules are named per group, so
    the SLURM profile's `train: gpu: 1` must be carried over to them (else no GPU is asked for)."""
    cfg = tiny_config(tmp_path / "results", inits=["kaiming_normal", "xavier_uniform"], stacked=True)
    write_yaml(tmp_path / "tiny.yaml", cfg)
    args = ["-n", "--configfile", str(tmp_path / "tiny.yaml"), "--set-resources", "train:gpu=1", "train:mem_mb=9000"]
    args += ["extract:gpu=1", "extract:runtime=77"]
    out = snakemake(tmp_path, *args).stdout
    block = out.split("rule train_stacked_base_1:")[1].split("\n\n")[0]
    resources = re.search(r"resources: (.*)", block)[1]
    assert "gpu=1" in resources and "mem_mb=9000" in resources and "torch_threads=2" in resources
    block = out.split("rule extract:")[1].split("\n\n")[0]  # one extraction job per run, stacked or not
    resources = re.search(r"resources: (.*)", block)[1]
    assert "gpu=1" in resources and "runtime=77" in resources and "mem_mb=6000" in resources
    plain = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "tiny.yaml")).stdout
    block = plain.split("rule train_stacked_base_1:")[1].split("\n\n")[0]
    assert "gpu=" not in block and f"mem_mb={4000 + 500 * 2}" in block  # the group's own estimate


def _poison_step(monkeypatch, init: str, at_step: int) -> None:
    """Make the loss of the run with this init NaN at global step ``at_step`` (its input block only)."""
    original = train.Trainer.train_step

    def poisoned(self, x, y, step_no, pos, look=None):
        names = [r.init_name for r in self.runs]
        if init in names:  # on the device, no host read of step_no: the same inside a captured CUDA graph
            i, x = names.index(init), x.clone()
            x[i] = torch.where(torch.as_tensor(step_no, device=x.device) == at_step, float("nan"), x[i])
        original(self, x, y, step_no, pos, look)

    monkeypatch.setattr(train.Trainer, "train_step", poisoned)


class _InfiniteGradient(torch.autograd.Function):
    """The losses unchanged forward; backward, an infinite gradient for the runs in ``mask``."""

    @staticmethod
    def forward(ctx, losses, mask):
        ctx.save_for_backward(mask)
        return losses.clone()

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return torch.where(mask, torch.full_like(grad, float("inf")), grad), None


def _overflow_step(monkeypatch, init: str, at_step: int) -> None:
    """The run with this init keeps a finite loss at global step ``at_step``, but its gradients
    overflow (on the device, capture-safe): a divergence the loss alone does not show."""
    original = train.Trainer.train_step

    def overflowing(self, x, y, step_no, pos, look=None):
        names = [r.init_name for r in self.runs]
        losses = self.stack.losses

        def poisoned(*args, **kwargs):
            out, correct = losses(*args, **kwargs)
            at = torch.as_tensor(step_no, device=out.device) == at_step
            mask = at & (torch.arange(len(names), device=out.device) == names.index(init))
            return _InfiniteGradient.apply(out, mask), correct

        self.stack.losses = poisoned
        try:
            original(self, x, y, step_no, pos, look)
        finally:
            del self.stack.losses

    monkeypatch.setattr(train.Trainer, "train_step", overflowing)


def _clean_and_poisoned(tmp_path, store, monkeypatch, runs, settings, init, at_step, poison=_poison_step, **kw):
    """The stack trained as it is (``clean``) and with ``init``'s run poisoned at ``at_step`` (``nan``)."""
    dirs = lambda tag: [tmp_path / tag / r.init for r in runs]  # noqa: E731
    train.train_stack(settings, store, dirs("clean"), progress=False, **kw)
    poison(monkeypatch, init, at_step)
    return dirs, train.train_stack(settings, store, dirs("nan"), progress=False, **kw)


def _ckpts(d):
    return {p.name: p.read_bytes() for p in sorted((d / "checkpoints").glob("epoch_*"))}


@pytest.mark.slow
def test_one_diverging_run_leaves_the_others_identical(tmp_path, store, monkeypatch):
    """Run 2 of a stack of three turns NaN at step 9 (epoch 2 has steps 5-9; 300 images in
    batches of 64), inside a look window (check_every 4): the other runs' checkpoints and metrics are byte-identical to the
    same stack without the NaN; run 2 stops at step 9 with the weights it had before that
    step, as the same run trained alone does, and is marked diverged."""
    runs, settings = _group(tmp_path, seeds=(0,), check_every=4)
    dirs, out = _clean_and_poisoned(tmp_path, store, monkeypatch, runs, settings, "zeros", 9, threads=2)
    assert [o["status"] for o in out] == ["completed", "completed", "diverged"] and out[2]["diverged_step"] == 9
    for i in (0, 1):
        assert _ckpts(dirs("nan")[i]) == _ckpts(dirs("clean")[i])
        assert (dirs("nan")[i] / "metrics.csv").read_bytes() == (dirs("clean")[i] / "metrics.csv").read_bytes()
    m = pd.read_csv(dirs("nan")[2] / "metrics.csv")
    assert m.query("split == 'train' and metric == 'loss' and step == step")["step"].max() == 8  # steps 0-8 kept
    # per-run training of run 2 with the same NaN stops at the same step with the same weights
    alone = train.train_run(settings[2], store, tmp_path / "alone", threads=2, progress=False)
    assert alone["diverged_step"] == 9
    for name in ("epoch_0002.safetensors",):
        ta, ma = load_checkpoint(tmp_path / "alone" / "checkpoints" / name)
        tb, mb = load_checkpoint(dirs("nan")[2] / "checkpoints" / name)
        assert ma == mb and ma["diverged"] == "true" and ma["step"] == "9"
        for k in ta:
            assert float((ta[k] - tb[k]).abs().max()) <= 1e-4 * (float(ta[k].abs().max()) or 1.0), k


@pytest.mark.slow
def test_a_diverged_run_is_saved_with_its_batch_norm_statistics_from_before_that_step(tmp_path, store, monkeypatch):
    """With batch norm, the forward pass that turns a run non-finite also updates its running
    statistics; the run is saved with those of before that step (finite, 9 batches tracked
    for a divergence at step 9), in a stack and alone, and the other runs train as without the
    NaN, byte for byte."""
    runs, settings = _group(tmp_path, seeds=(0,), model={"norm": "batch"}, check_every=4)
    dirs, out = _clean_and_poisoned(tmp_path, store, monkeypatch, runs, settings, "xavier_uniform", 9, threads=2)
    assert [o["status"] for o in out] == ["completed", "diverged", "completed"] and out[1]["diverged_step"] == 9
    for i in (0, 2):
        assert _ckpts(dirs("nan")[i]) == _ckpts(dirs("clean")[i])
    tensors, meta = load_checkpoint(dirs("nan")[1] / "checkpoints" / "epoch_0002.safetensors")
    assert meta["diverged"] == "true" and meta["step"] == "9"
    stats = {k: v for k, v in tensors.items() if "running" in k or "num_batches" in k}
    assert stats and all(torch.isfinite(v.double()).all() for v in stats.values())
    assert all(int(v) == 9 for k, v in stats.items() if k.endswith("num_batches_tracked"))
    alone = train.train_run(settings[1], store, tmp_path / "alone", threads=2, progress=False)  # a stack of one
    assert alone["diverged_step"] == 9
    own, _ = load_checkpoint(tmp_path / "alone" / "checkpoints" / "epoch_0002.safetensors")
    # not compared with the stack's: a conv bias before a batch norm has a gradient of rounding
    # size only, which Adam turns into steps of about lr, so stacked and per-run running means part
    for k in stats:
        assert torch.isfinite(own[k].double()).all() and (not k.endswith("tracked") or int(own[k]) == 9), k


def test_per_run_gradient_finiteness_finds_the_run_of_a_single_bad_value(tmp_path, store):
    """One NaN, +inf or -inf anywhere in a run's block of any stacked gradient (channels_last
    conv weights included) marks that run alone; huge finite values do not."""
    _, settings = _group(tmp_path, seeds=(0,))
    ds = data.make_splits(data.open_store(store), **settings[0].split.kwargs())
    t = train.Trainer(settings, ds, torch.device("cpu"))
    t.epoch(0, lambda n: None)  # gradients of the last step
    params = list(t.stack.parameters())
    assert params[0].grad.is_contiguous(memory_format=torch.channels_last) and not params[0].grad.is_contiguous()
    for p in params:
        p.grad.fill_(3e38)
    assert t._grads_finite().tolist() == [True] * 3
    for p, bad in zip(params, [float("nan"), float("inf"), float("-inf")] * len(params)):
        for run in range(3):
            at = ((run + 1) * (p.shape[0] // 3) - 1, *[-1] * (p.dim() - 1))  # the last value of the run's block
            p.grad[at] = bad
            assert t._grads_finite().tolist() == [r != run for r in range(3)], (tuple(p.shape), bad, run)
            p.grad[at] = 3e38


@pytest.mark.slow
def test_a_run_whose_gradients_overflow_under_a_finite_loss_stops_before_that_update(tmp_path, store, monkeypatch):
    """Run 1's loss stays finite at step 7 (epoch 2 has steps 5-9) but its gradients are
    infinite: it is marked diverged at step 7 and saved with the finite weights it had before
    that update. Looking at the loss alone let the NaN update through: the run stopped a step
    later with NaN weights saved, or, at an epoch's last step, 'completed' with NaN weights.
    The other runs are byte-identical to the stack without it."""
    runs, settings = _group(tmp_path, seeds=(0,), check_every=4)
    dirs, out = _clean_and_poisoned(
        tmp_path, store, monkeypatch, runs, settings, "xavier_uniform", 7, poison=_overflow_step, threads=2
    )
    assert [o["status"] for o in out] == ["completed", "diverged", "completed"] and out[1]["diverged_step"] == 7
    for i in (0, 2):
        assert _ckpts(dirs("nan")[i]) == _ckpts(dirs("clean")[i])
    tensors, meta = load_checkpoint(dirs("nan")[1] / "checkpoints" / "epoch_0002.safetensors")
    assert meta["diverged"] == "true" and meta["step"] == "7"
    assert all(torch.isfinite(v).all() for v in tensors.values())
    clean, _ = load_checkpoint(dirs("clean")[1] / "checkpoints" / "epoch_0001.safetensors")  # after steps 0-4
    assert any(not torch.equal(tensors[k], clean[k]) for k in clean)  # steps 5 and 6 were taken


@pytest.mark.slow
@pytest.mark.parametrize("every", [1, 3])
def test_periodic_look_equals_looking_every_step(tmp_path, store, monkeypatch, every):
    """The graph path's bookkeeping on the CPU: looking at finiteness every N steps (snapshot,
    rollback, replay) gives the same bytes as looking at every step, with a divergence."""
    _poison_step(monkeypatch, "xavier_uniform", at_step=5)
    outs = {}
    for n in (every, 100):
        runs, settings = _group(tmp_path / str(n), seeds=(0,), check_every=n)
        train.train_stack(settings, store, [tmp_path / f"look{n}" / r.init for r in runs], threads=2, progress=False)
        outs[n] = [
            (_tensors(tmp_path / f"look{n}" / r.init), (tmp_path / f"look{n}" / r.init / "metrics.csv").read_bytes())
            for r in runs
        ]
    assert outs[every] == outs[100]  # (check_every is part of the settings hash in the metadata)


def _tensors(d):
    """Every checkpoint's tensors as bytes, and its metadata but the config hash."""
    out = {}
    for p in sorted((d / "checkpoints").glob("epoch_*")):
        tensors, meta = load_checkpoint(p)
        meta.pop("config_hash")
        out[p.name] = ({k: v.numpy().tobytes() for k, v in tensors.items()}, meta)
    return out


def test_a_resumed_optimiser_keeps_the_flags_built_for_its_device(tmp_path, store):
    """A resume state saved by another device's optimiser (a CPU's Adam: capturable False) keeps
    the flags this device's optimiser was built with (a captured CUDA step needs capturable
    Adam); its learning rate and moments are the saved ones."""
    _, settings = _group(tmp_path, seeds=(0,))
    ds = data.make_splits(data.open_store(store), **settings[0].split.kwargs())
    saved = train.Trainer(settings, ds, torch.device("cpu"))
    saved.epoch(0, lambda n: None)
    state = torch.load(io.BytesIO(saved.state(1)), weights_only=True)
    assert state["optimizer"]["param_groups"][0]["capturable"] is False
    t = train.Trainer(settings, ds, torch.device("cpu"))
    for group in t.opt.param_groups:  # as if built on CUDA for the graph
        group["capturable"], group["foreach"] = True, None
    t.load_state(state)
    assert all(g["capturable"] is True and g["foreach"] is None and g["fused"] is True for g in t.opt.param_groups)
    assert t.opt.param_groups[0]["lr"] == saved.opt.param_groups[0]["lr"]
    p = next(t.stack.parameters())
    assert torch.equal(t.opt.state[p]["exp_avg"], saved.opt.state[next(saved.stack.parameters())]["exp_avg"])


def test_a_stacks_resume_state_restores_every_runs_data_order(tmp_path, store):
    """A stack of three runs saved after epoch 1 and loaded into a fresh trainer continues with
    the same epoch 2 as the uninterrupted stack: each run's shuffle generator (a row of the
    saved states; torch's set_state misread such a view: 'Invalid mt19937 state' or a crash),
    weights and optimiser state."""
    _, settings = _group(tmp_path, seeds=(0,))
    ds = data.make_splits(data.open_store(store), **settings[0].split.kwargs())
    cpu = torch.device("cpu")
    first = train.Trainer(settings, ds, cpu)
    first.epoch(0, lambda n: None)
    state = torch.load(io.BytesIO(first.state(1)), weights_only=True)
    resumed = train.Trainer(settings, ds, cpu)
    assert resumed.load_state(state) == 1
    a, b = first.epoch(first.steps, lambda n: None), resumed.epoch(resumed.steps, lambda n: None)
    assert np.array_equal(a.losses, b.losses) and np.array_equal(a.correct, b.correct)
    assert all(torch.equal(p, q) for p, q in zip(first.stack.parameters(), resumed.stack.parameters()))


CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA graphs need a CUDA device; the bookkeeping around them is tested on the CPU above",
)


@CUDA
def test_cuda_graph_one_diverging_run_is_rolled_back_alone(tmp_path, store, monkeypatch):
    """On CUDA, the captured step: run 2 of three turns NaN at step 7 (poisoned on the device,
    inside the graph: a full batch; the epoch's last, partial batch runs eagerly) within a look
    window (check_every 4). It is rolled back, saved before that step and marked diverged at
    step 7; the other runs train as in the same stack without the NaN, to float tolerance
    (CUDA kernels need not repeat bit for bit)."""
    runs, settings = _group(tmp_path, seeds=(0,), check_every=4, device="cuda")
    dirs, out = _clean_and_poisoned(tmp_path, store, monkeypatch, runs, settings, "zeros", 7)
    assert [o["status"] for o in out] == ["completed", "completed", "diverged"] and out[2]["diverged_step"] == 7
    for i in (0, 1):
        a, b = pd.read_csv(dirs("nan")[i] / "metrics.csv"), pd.read_csv(dirs("clean")[i] / "metrics.csv")
        assert len(a) == len(b) and (a["value"] - b["value"]).abs().max() <= 1e-4
        for name in _ckpts(dirs("clean")[i]):
            ta, _ = load_checkpoint(dirs("nan")[i] / "checkpoints" / name)
            tb, _ = load_checkpoint(dirs("clean")[i] / "checkpoints" / name)
            assert all(torch.isfinite(ta[k]).all() and (ta[k] - tb[k]).abs().max() <= 1e-4 for k in tb), name
    _, meta = load_checkpoint(dirs("nan")[2] / "checkpoints" / "epoch_0002.safetensors")
    assert meta["diverged"] == "true" and meta["step"] == "7"


@CUDA
def test_cuda_graph_step_matches_eager(tmp_path, store):
    """On CUDA: the captured step trains like the eager one (float tolerance); divergence: above."""
    runs, settings = _group(tmp_path, seeds=(0, 1), device="cuda")
    eager = [dataclasses.replace(s, train=dataclasses.replace(s.train, cuda_graphs=False)) for s in settings]
    train.train_stack(settings, store, [tmp_path / "graph" / r.init / str(r.seed) for r in runs], progress=False)
    train.train_stack(eager, store, [tmp_path / "eager" / r.init / str(r.seed) for r in runs], progress=False)
    for r in runs:
        a, b = tmp_path / "graph" / r.init / str(r.seed), tmp_path / "eager" / r.init / str(r.seed)
        pa, pb = pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv")
        assert (pa["value"] - pb["value"]).abs().max() <= 1e-4


def test_b1_times_one_stacked_paper_epoch_on_a_dataset_store(store, capsys):
    """``benchmarks.train_stacked --epoch-on``: one epoch of the 7 inits as one stack and its
    evaluation, and the 50-epoch time at that rate."""
    from benchmarks import train_stacked

    n = len(data.open_store(store).labels["train"]) - 60  # the train split left by 60 validation images
    out = train_stacked.paper_epoch(str(store), torch.device("cpu"), valid_size=60)
    assert out["train_s"] > 0 and out["eval_s"] > 0
    assert out["rate"] == pytest.approx(7 * n / out["train_s"])
    assert out["minutes_50"] == pytest.approx(50 * (out["train_s"] + out["eval_s"]) / 60)
    assert f"7 x {n:,} images" in capsys.readouterr().out


@pytest.mark.slow
def test_a_finite_blow_up_above_the_ceiling_is_a_divergence(tmp_path, store):
    """Adam at lr 0.5 makes the losses leap while they stay finite. Trained with no ceiling
    (``diverge_above: null``) every run completes; with a ceiling between the runs' largest step
    losses, each run whose loss passes it stops at the first step whose loss did so in the clean
    run, flagged diverged, keeping the clean run's rows before that step; the others are untouched
    (their metrics byte-identical)."""
    runs, clean = _group(tmp_path, seeds=(0,), lr=0.5, diverge_above=None)
    dirs = {tag: [tmp_path / tag / r.init for r in runs] for tag in ("clean", "ceiling")}
    assert all(o["status"] == "completed" for o in train.train_stack(clean, store, dirs["clean"], progress=False))
    steps = []
    for d in dirs["clean"]:
        m = pd.read_csv(d / "metrics.csv")
        steps.append(m.query("split == 'train' and metric == 'loss' and step == step").set_index("step")["value"])
    peaks = sorted(s.max() for s in steps)
    assert peaks[-1] > 100 * math.log(10)  # a blow-up to catch, well above the first losses
    ceiling = math.sqrt(peaks[-2] * peaks[-1]) if peaks[-2] > 3 else 10 * math.log(10)
    capped = [
        dataclasses.replace(s, train=dataclasses.replace(s.train, diverge_above=ceiling / math.log(10))) for s in clean
    ]
    assert train.diverge_ceiling(capped[0].train, 10) == pytest.approx(ceiling)
    out = train.train_stack(capped, store, dirs["ceiling"], progress=False)
    flagged = 0
    for s, o, a, b in zip(steps, out, dirs["clean"], dirs["ceiling"]):
        over = s[s > ceiling]
        if over.empty:
            assert o["status"] == "completed"
            assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
            continue
        flagged += 1
        first = int(over.index[0])
        assert o["status"] == "diverged" and o["diverged_step"] == first
        got = pd.read_csv(b / "metrics.csv").query("split == 'train' and metric == 'loss' and step == step")
        assert got["step"].max() == first - 1 and np.allclose(got["value"], s.loc[: first - 1], rtol=0, atol=0)
        _, meta = load_checkpoint(b / "checkpoints" / "epoch_0002.safetensors")
        assert meta["diverged"] == "true" and meta["step"] == str(first)
    assert flagged >= 1
