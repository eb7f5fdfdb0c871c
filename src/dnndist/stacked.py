"""Stacked training: the runs of one group (the inits of one variant and seed whose other
settings are identical) trained together as one wide model on identical batches.

The plain CNN family is stacked with grouped convolutions (conv1: one convolution with
K x width output channels over the shared input; later convs: groups=K) and the linear
layers as batched matrix products, so K small models cost a few large kernels instead of
K x as many small ones. The models never mix: every output channel block, batch-norm
channel and linear slice belongs to one run, so gradients, Adam moments (element-wise)
and even NaNs stay within their run. Each run's outputs (checkpoints, metrics.csv,
summary.json) are the same files as per-run training writes, equal to them to float
tolerance (tests/test_stacked.py states it).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from dnndist import DnndistError, data, models
from dnndist.config import stack_key
from dnndist.io import write_bytes, write_text
from dnndist.provenance import config_hash
from dnndist.train import (
    Progress, _finish, _row, build_model, build_optimizer, checkpoint_bytes, eval_rows, resolve_device,
    set_determinism,
)

log = logging.getLogger(__name__)

STACKABLE = ("paper_cnn", "plain_cnn")


class StackedCNN(nn.Module):
    """K plain CNNs (same architecture, different weights) as one module; forward gives
    logits of shape (K, batch, classes)."""

    def __init__(self, nets: Sequence[models.Net]):
        super().__init__()
        self.k = k = len(nets)
        ref = nets[0]
        if ref.settings["name"] not in STACKABLE:
            raise DnndistError(f"stacked training supports {STACKABLE}, not {ref.settings['name']!r}")
        self.names = [name for name, _ in ref.named_children()]
        self.linears = {name for name, mod in ref.named_children() if isinstance(mod, nn.Linear)}
        self.stack = nn.ModuleDict()
        for name, mod in ref.named_children():
            mods = [dict(n.named_children())[name] for n in nets]
            if isinstance(mod, nn.Conv2d):
                groups = 1 if name == "conv1" else k  # conv1 reads the shared input
                cin = mod.in_channels * (1 if groups == 1 else k)
                conv = nn.Conv2d(cin, mod.out_channels * k, mod.kernel_size, mod.stride, mod.padding, groups=groups,
                                 dtype=mod.weight.dtype, device=mod.weight.device)
                with torch.no_grad():
                    conv.weight.copy_(torch.cat([m.weight for m in mods]))
                    conv.bias.copy_(torch.cat([m.bias for m in mods]))
                self.stack[name] = conv
            elif isinstance(mod, nn.BatchNorm2d):
                bn = nn.BatchNorm2d(mod.num_features * k, mod.eps, mod.momentum, dtype=mod.weight.dtype, device=mod.weight.device)
                with torch.no_grad():
                    for attr in ("weight", "bias", "running_mean", "running_var"):
                        getattr(bn, attr).copy_(torch.cat([getattr(m, attr) for m in mods]))
                    bn.num_batches_tracked.copy_(mod.num_batches_tracked)
                self.stack[name] = bn
            elif isinstance(mod, nn.Linear):
                lin = nn.Module()
                lin.weight = nn.Parameter(torch.stack([m.weight.detach() for m in mods]).clone())  # (K, out, in)
                lin.bias = nn.Parameter(torch.stack([m.bias.detach() for m in mods]).clone())  # (K, out)
                self.stack[name] = lin
            elif isinstance(mod, (nn.ReLU, nn.LeakyReLU, nn.MaxPool2d, nn.Flatten)):
                self.stack[name] = mod
            else:
                raise DnndistError(f"cannot stack module {name} ({type(mod).__name__})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k
        for name in self.names:
            mod = self.stack[name]
            if isinstance(mod, nn.Flatten):
                x = x.reshape(x.shape[0], k, -1).transpose(0, 1)  # (K, B, C*h*w): each run's features in its own order
            elif name in self.linears:
                x = torch.baddbmm(mod.bias.unsqueeze(1), x, mod.weight.transpose(1, 2))  # (K, B, out)
            else:
                x = mod(x)
        return x

    @torch.no_grad()
    def unstack_into(self, i: int, net: models.Net) -> None:
        """Copy run ``i``'s weights (and batch-norm buffers) into a per-run model."""
        for name, mod in net.named_children():
            src = self.stack[name]
            if isinstance(mod, nn.Conv2d):
                n = mod.out_channels
                mod.weight.copy_(src.weight[i * n : (i + 1) * n])
                mod.bias.copy_(src.bias[i * n : (i + 1) * n])
            elif isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    getattr(mod, attr).copy_(getattr(src, attr)[i * n : (i + 1) * n])
                mod.num_batches_tracked.copy_(src.num_batches_tracked)
            elif isinstance(mod, nn.Linear):
                mod.weight.copy_(src.weight[i])
                mod.bias.copy_(src.bias[i])


def l1_penalty(model: StackedCNN) -> torch.Tensor:
    """Per-run L1 norm of the conv and linear weights, shape (K,)."""
    k = model.k
    total = torch.zeros(k, device=next(model.parameters()).device)
    for mod in model.stack.values():
        if isinstance(mod, nn.BatchNorm2d) or not hasattr(mod, "weight"):
            continue
        total = total + mod.weight.abs().reshape(k, -1).sum(1)
    return total


def stacked_step_losses(model: StackedCNN, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-run mean cross-entropy (K,) and per-run number of correct predictions (K,)."""
    out = model(x)  # (K, B, classes)
    k, b = out.shape[:2]
    losses = F.cross_entropy(out.reshape(k * b, -1), y.repeat(k), reduction="none").view(k, b).mean(1)
    correct = (out.argmax(2) == y).sum(1)
    return losses, correct


def train_group(settings_list: Sequence[Mapping[str, Any]], store: str | Path, run_dirs: Sequence[str | Path],
                threads: int | None = None, progress: bool | None = None) -> list[dict[str, Any]]:
    """Train the runs of one group together; write each run's outputs as ``train_run`` does."""
    if len(settings_list) != len(run_dirs) or not settings_list:
        raise DnndistError("train_group needs one output directory per run")
    keys = {stack_key(s) for s in settings_list}
    if len(keys) != 1:
        raise DnndistError("stacked runs must share every setting but the init (same variant, seed, model, training)")
    ref = settings_list[0]
    tr, run0 = ref["train"], ref["run"]
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(tr["device"])
    set_determinism(tr["deterministic"], device)
    # inputs first: a bad store fails before anything is written
    ds = data.make_splits(data.open_store(store), **ref["split"]).to(device)
    nets = [build_model(s, ds, device) for s in settings_list]  # each initialised exactly as per-run training does
    run_dirs = [Path(d) for d in run_dirs]
    hashes = [config_hash(s) for s in settings_list]
    states = [d / ".resume" / h for d, h in zip(run_dirs, hashes)]
    group_state = states[0] / ("stack-" + config_hash({"runs": hashes}))
    for d, st in zip(run_dirs, states):
        (st / "metrics").mkdir(parents=True, exist_ok=True)
        (st / "checkpoints").mkdir(parents=True, exist_ok=True)
        for stale in (d / ".resume").iterdir():
            if stale != st:
                shutil.rmtree(stale, ignore_errors=True)
    group_state.mkdir(parents=True, exist_ok=True)

    fmt = torch.channels_last if tr["channels_last"] else torch.contiguous_format
    model = StackedCNN(nets).to(device=device, memory_format=fmt)
    opt = build_optimizer(model, tr, device)
    shuffle = torch.Generator(device=device).manual_seed(10_000_019 * (run0["seed"] + 1))
    k = len(nets)
    alive = [True] * k
    div_step = [-1] * k
    n_train, bs = len(ds.labels["train"]), tr["batch_size"]
    steps_per_epoch = math.ceil(n_train / bs)
    ckpt_epochs = set(ref["checkpoint_epochs"])
    epochs = tr["epochs"]

    start_epoch = _resume(group_state, model, opt, shuffle, alive, div_step, states)
    step = start_epoch * steps_per_epoch
    bar = Progress(epochs * steps_per_epoch, step, progress)
    log.info("stacked group of %d runs (%s) on %s, resuming at epoch %d",
             k, ", ".join(s["run"]["init_name"] for s in settings_list), device, start_epoch)

    def end_epoch(epoch: int, rows: list[list[dict[str, Any]]], snapshots: dict[int, dict[str, torch.Tensor]]) -> None:
        for i, (s, net, st) in enumerate(zip(settings_list, nets, states)):
            newly = i in snapshots
            if not alive[i] and not newly:
                continue
            if newly:
                net.load_state_dict(snapshots[i])
            else:
                model.unstack_into(i, net)
            rows[i] += eval_rows(net, ds, s, epoch)
            if newly:
                rows[i].append(_row(epoch, div_step[i], "train", "diverged", 1.0))
            frame = pd.DataFrame(rows[i], columns=["epoch", "step", "split", "metric", "value"])
            write_text(st / "metrics" / f"epoch_{epoch:04d}.csv", frame.to_csv(index=False))
            if epoch in ckpt_epochs or newly:
                write_bytes(st / "checkpoints" / f"epoch_{epoch:04d}.safetensors",
                            checkpoint_bytes(net, s, epoch, newly, div_step[i] if newly else step))
            if newly:
                alive[i] = False
        buf = BytesIO()
        torch.save({"epoch": epoch, "alive": torch.tensor(alive), "div_step": torch.tensor(div_step),
                    "model": {n: v.detach().cpu() for n, v in model.state_dict().items()},
                    "optimizer": opt.state_dict(), "shuffle": shuffle.get_state().cpu()}, buf)
        write_bytes(group_state / f"state_{epoch:04d}.pt", buf.getvalue())
        for old in group_state.glob("state_*.pt"):
            if old.name != f"state_{epoch:04d}.pt":
                old.unlink()
        bar.epoch(f"epoch {epoch}/{epochs}: {sum(alive)} of {k} runs training")

    if start_epoch == 0 and not (group_state / "state_0000.pt").exists():
        end_epoch(0, [[] for _ in range(k)], {})
    epoch = start_epoch
    while any(alive) and epoch < epochs:
        epoch += 1
        t0 = time.perf_counter()
        losses, correct, sizes, snapshots = _epoch(model, opt, ds, ref, shuffle, alive, div_step, step, nets, bar)
        rows: list[list[dict[str, Any]]] = []
        for i in range(k):
            n_done = len(losses[i])
            if not alive[i] and i not in snapshots:
                rows.append([])
                continue
            step_idx = np.arange(step, step + n_done, dtype=np.float64)
            li, ci, si = np.asarray(losses[i]), np.asarray(correct[i], dtype=np.float64), np.asarray(sizes[:n_done], dtype=np.float64)
            r = [_row(epoch, s_, "train", "loss", v) for s_, v in zip(step_idx, li)]
            r += [_row(epoch, s_, "train", "accuracy", v) for s_, v in zip(step_idx, ci / np.maximum(si, 1))]
            if n_done:
                r.append(_row(epoch, math.nan, "train", "loss", float((li * si).sum() / si.sum())))
                r.append(_row(epoch, math.nan, "train", "accuracy", float(ci.sum() / si.sum())))
            rows.append(r)
        step += len(sizes)
        end_epoch(epoch, rows, snapshots)
        log.info("epoch %d: %.0f images x runs/s", epoch, k * sum(sizes) / (time.perf_counter() - t0))
    bar.close()
    out = []
    for i, (s, st, d) in enumerate(zip(settings_list, states, run_dirs)):
        last = max(int(f.stem.split("_")[1]) for f in (st / "metrics").glob("epoch_*.csv"))
        out.append(_finish(s, st, d, last, div_step[i] >= 0))
    return out


def _epoch(model: StackedCNN, opt: torch.optim.Optimizer, ds: data.Dataset, settings: Mapping[str, Any],
           shuffle: torch.Generator, alive: list[bool], div_step: list[int], step0: int, nets: Sequence[models.Net],
           bar: Progress) -> tuple[list[list[float]], list[list[int]], list[int], dict[int, dict[str, torch.Tensor]]]:
    """One epoch of the group. A run whose loss becomes non-finite is snapshotted before the
    update (its last finite weights, as per-run training keeps them) and drops out."""
    tr, inp = settings["train"], settings["input"]
    device = ds.images["train"].device
    fmt = torch.channels_last if tr["channels_last"] else torch.contiguous_format
    n_train, bs = len(ds.labels["train"]), tr["batch_size"]
    steps = math.ceil(n_train / bs)
    k = model.k
    perm = torch.randperm(n_train, generator=shuffle, device=device)
    loss_buf = torch.empty(steps, k, dtype=torch.float64, device=device)
    corr_buf = torch.empty(steps, k, dtype=torch.int64, device=device)
    sizes: list[int] = []
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    stop_at = [steps] * k  # steps each run completed this epoch
    mask = torch.tensor(alive, device=device)
    model.train()
    for i in range(steps):
        idx = perm[i * bs : (i + 1) * bs]
        x = data.prepare(ds.images["train"][idx], ds.mean, ds.std, inp["transform"], inp["threshold"])
        y = ds.labels["train"][idx]
        losses, correct = stacked_step_losses(model, x.contiguous(memory_format=fmt), y)
        total = losses + tr["l1"] * l1_penalty(model) if tr["l1"] else losses
        finite = torch.isfinite(total) | ~mask
        if not bool(finite.all()):  # the one host sync per step, as in per-run training
            for j in torch.nonzero(~finite).flatten().tolist():
                model.unstack_into(j, nets[j])
                snapshots[j] = {n: v.detach().clone() for n, v in nets[j].state_dict().items()}
                div_step[j] = step0 + i
                stop_at[j] = i
            mask = mask & finite
            if not bool(mask.any()):
                break
        opt.zero_grad(set_to_none=True)
        torch.where(mask, total, torch.zeros_like(total)).sum().backward()
        opt.step()
        loss_buf[i], corr_buf[i] = losses.detach(), correct
        sizes.append(len(y))
        bar.advance(1)
    lb, cb = loss_buf[: len(sizes)].cpu(), corr_buf[: len(sizes)].cpu()
    losses_out = [lb[: stop_at[j], j].tolist() for j in range(k)]
    correct_out = [cb[: stop_at[j], j].tolist() for j in range(k)]
    return losses_out, correct_out, sizes, snapshots


def _resume(group_state: Path, model: StackedCNN, opt: torch.optim.Optimizer, shuffle: torch.Generator,
            alive: list[bool], div_step: list[int], states: Sequence[Path]) -> int:
    found = sorted(group_state.glob("state_*.pt"))
    if not found:
        return 0
    try:
        state = torch.load(found[-1], map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt resume state: start over rather than fail
        log.warning("ignoring unreadable resume state %s (%s); starting from scratch", found[-1], exc)
        for f in group_state.glob("state_*.pt"):
            f.unlink()
        return 0
    epoch = int(state["epoch"])
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    shuffle.set_state(state["shuffle"])
    alive[:] = [bool(a) for a in state["alive"].tolist()]
    div_step[:] = [int(s) for s in state["div_step"].tolist()]
    for st in states:  # work of an epoch that did not complete
        for sub in ("metrics", "checkpoints"):
            for f in (st / sub).glob("epoch_*"):
                if int(f.stem.split("_")[1]) > epoch:
                    f.unlink()
    log.info("resuming group from %s (epoch %d)", found[-1], epoch)
    return epoch
