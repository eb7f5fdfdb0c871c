"""Training stage: the one training loop. It trains a stack of runs (``dnndist.stacked``):
the runs of one stack group side by side, or a single run as a stack of one. A run =
(variant, init, seed) is deterministic given its settings.

Layout of a run directory (``<results>/runs/<variant>/<init>/seed<seed>/``):

- ``checkpoints/epoch_NNNN.safetensors``: weights at each configured epoch (tensors only,
  metadata: run keys, epoch, config hash, diverged flag), and ``SHA256SUMS``;
- ``metrics.csv``: tidy table (epoch, step, split, metric, value) of per-step and
  per-epoch train loss/accuracy and per-epoch validation/test loss/accuracy;
- ``summary.json``: status (completed | diverged), epochs trained, final metrics.

While running, everything lives in ``.resume/<config-hash>/`` of each run: per-epoch
metrics and checkpoints, and (in the first run's) the stack's resume state (model,
optimiser, shuffling RNGs, which runs are alive) written atomically at the end of every
epoch. A killed job resumes from the last completed epoch and ends with the same bytes as
an uninterrupted run; the outputs appear only at the end.

Divergence: the health of every run's loss is kept on the device and looked at on the
host every ``train.check_every`` steps. A run whose loss became non-finite, or rose above
``train.diverge_above`` x ln(classes) nats (a finite blow-up), stops at that step with its
last weights before it (the state before that step's update, recovered by
replaying the window from a snapshot taken at its start) and drops out alone; the others
train on unchanged. On CUDA (``train.cuda_graphs``) every full-batch step is one captured
CUDA graph; elsewhere the same step runs eagerly.

The recipe options (``dnndist.recipe``) live inside that step and carry no state: the
augmentation of each run's batch (``train.augment``) is drawn from a hash of (run seed, global
step, position in the batch), and the one-cycle learning rate (``train.schedule``) is computed
from the step number into a device tensor the optimiser reads, so stacked, resumed, replayed
and captured steps all see the same batches and rates. ``train.label_smoothing`` enters the
training objective only: the recorded train loss is that objective, valid and test losses are
the plain cross-entropy. With the defaults (none, constant, 0) the step is the one it always was.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dnndist import DnndistError, best, data, inits, models, recipe, stacked
from dnndist.checkpoints import (  # noqa: F401  (BEST_FILE: train.BEST_FILE, where the tests read it)
    BEST_FILE,
    checkpoint_bytes,
    load_checkpoint,
    memory_format,
    resolve_device,
    st_bytes,
    state_dict_cpu,
)
from dnndist.io import write_bytes, write_text
from dnndist.progress import Progress, log_beside
from dnndist.provenance import config_hash
from dnndist.rundir import (  # noqa: F401  (METRIC_COLUMNS: train.METRIC_COLUMNS)
    METRIC_COLUMNS,
    Member,
    drop_epochs_after,
    finish_run,
    make_members,
    save_checkpoints,
    valid_loss,
)
from dnndist.settings import InputSettings, RunSettings, TrainSettings

log = logging.getLogger(__name__)
ROW_COLUMNS = ["epoch", "step", "split", "metric", "value"]
GRAPH_WARMUP = 3  # eager steps on a side stream before capture (lazy state, kernel selection)

__all__ = [
    "METRIC_COLUMNS",
    "Progress",
    "Trainer",
    "build_model",
    "build_optimizer",
    "eval_rows",
    "evaluate",
    "load_checkpoint",
    "resolve_device",
    "set_determinism",
    "state_dict_cpu",
    "train_run",
    "train_stack",
]


def set_determinism(enabled: bool, device: torch.device) -> None:
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only on CUDA: a few backward kernels (e.g. max-pool) have no deterministic
    # implementation there; CPU training is bitwise reproducible.
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    torch.backends.cudnn.benchmark = False
    # cuDNN convolutions default to TF32 on Ampere and later (10-bit mantissa products): off, so
    # that a GPU run stays within float32 rounding of the CPU's (the legacy flag: torch 2.11-2.14)
    torch.backends.cudnn.allow_tf32 = False


def build_model(settings: RunSettings, ds: data.Dataset, device: torch.device) -> nn.Module:
    run, given = settings.run, settings.given_weights
    in_channels, image_size = ds.images["train"].shape[1], ds.images["train"].shape[-1]
    torch.manual_seed(run.seed)  # for anything that draws from the global RNG
    model = models.build(settings.model, in_channels, len(ds.classes), image_size)
    models.check_head(model, len(ds.classes), given or "model")
    if given:  # given weights replace the init (experiment 2)
        models.load_pretrained(model, models.read_weights(given), given)
    else:
        scheme = settings.init_scheme
        gain = inits.gain_for(run.init_name, scheme.gain, settings.model)
        inits.apply(model, run.init_name, gain, scheme.bias, run.seed)
    return model.to(device=device, memory_format=memory_format(settings.train))


def diverge_ceiling(train: TrainSettings, n_classes: int) -> float:
    """The training loss (nats) above which a run has diverged although finite:
    ``train.diverge_above`` x ln(classes), the loss of a uniform guess (inf where it is null)."""
    if train.diverge_above is None:
        return math.inf
    return train.diverge_above * math.log(max(n_classes, 2))


def build_optimizer(
    model: nn.Module,
    train: TrainSettings,
    device: torch.device,
    capturable: bool = False,
    lr: torch.Tensor | None = None,
) -> torch.optim.Optimizer:
    """Fused Adam or SGD at ``train.lr``, or at the device tensor ``lr`` (a schedule writes it in
    place every step). SGD has no ``capturable`` flag: its fused step is graph-safe once its
    momentum buffers exist, which the eager warm-up steps before capture create."""
    fused = device.type in ("cpu", "cuda")
    rate = train.lr if lr is None else lr
    if train.optimizer == "adam":
        extra = {"capturable": True} if capturable else {}
        return torch.optim.Adam(model.parameters(), lr=rate, weight_decay=train.weight_decay, fused=fused, **extra)
    return torch.optim.SGD(
        model.parameters(),
        lr=rate,
        momentum=train.momentum,
        weight_decay=train.weight_decay,
        nesterov=train.nesterov,
        fused=fused,
    )


def _row(epoch: int, step: float, split: str, metric: str, value: float) -> dict[str, Any]:
    return {"epoch": epoch, "step": step, "split": split, "metric": metric, "value": value}


@torch.no_grad()
def evaluate(
    stack: stacked.Stack,
    images: torch.Tensor,
    labels: torch.Tensor,
    ds: data.Dataset,
    inp: InputSettings,
    batch_size: int,
    fmt: torch.memory_format,
) -> tuple[list[float], list[float]]:
    """Per-run mean cross-entropy and accuracy over a split; one host sync at the end."""
    stack.eval()
    k = stack.k
    bs = max(1, batch_size // k)  # the stack holds k copies of each batch
    loss = torch.zeros(k, device=images.device, dtype=torch.float64)
    correct = torch.zeros(k, device=images.device, dtype=torch.int64)
    for start in range(0, len(labels), bs):
        x = data.prepare(images[start : start + bs], ds.mean, ds.std, inp.transform, inp.threshold)
        part_loss, part_correct = stack.eval_sums(x, labels[start : start + bs], fmt)
        loss += part_loss
        correct += part_correct
    stack.train()
    n = max(len(labels), 1)
    return (loss / n).tolist(), (correct.double() / n).tolist()


def eval_rows(
    stack: stacked.Stack, ds: data.Dataset, train: TrainSettings, inp: InputSettings, epoch: int
) -> list[list[dict[str, Any]]]:
    """Per run: epoch rows of loss and accuracy on the valid and test splits; a split that is
    the same images as the one before it (data.valid_split test) is evaluated once."""
    rows: list[list[dict[str, Any]]] = [[] for _ in range(stack.k)]
    done: dict[int, tuple[list[float], list[float]]] = {}
    for split in ("valid", "test"):
        if split in ds.labels:
            key = id(ds.images[split])
            if key not in done:
                done[key] = evaluate(
                    stack, ds.images[split], ds.labels[split], ds, inp, train.eval_batch_size, memory_format(train)
                )
            for i, (loss, acc) in enumerate(zip(*done[key])):
                rows[i] += [_row(epoch, math.nan, split, "loss", loss), _row(epoch, math.nan, split, "accuracy", acc)]
    return rows


@dataclass
class EpochOut:
    """What one epoch left on the host: per-step losses and correct counts of every run
    (steps x K), the batch sizes, and the runs that diverged in it (their final weights)."""

    losses: np.ndarray
    correct: np.ndarray
    sizes: np.ndarray
    diverged: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


Look = Callable[[torch.Tensor, "int | torch.Tensor", list[torch.Tensor]], None]  # finiteness, step, buffers before it
DEVICE_FLAGS = ("capturable", "fused", "foreach")  # optimiser flags that follow the device, not the run


class Trainer:
    """The device side of the loop: K runs of one stack, their optimiser, data orders and
    divergence bookkeeping (``alive`` and ``first_bad`` stay on the device)."""

    def __init__(self, settings_list: Sequence[RunSettings], ds: data.Dataset, device: torch.device):
        ref = settings_list[0]
        self.tr, self.inp, self.ds, self.device = ref.train, ref.input, ds, device
        self.fmt = memory_format(self.tr)
        self.nets = [build_model(s, ds, device) for s in settings_list]  # each initialised as it would be alone
        self.stack = stacked.make_stack(self.nets).to(device=device, memory_format=self.fmt)
        self.k = len(self.nets)
        self.runs = [s.run for s in settings_list]
        self.graphs = device.type == "cuda" and bool(self.tr.cuda_graphs)
        if self.graphs:  # streams and the capture are made on the current device: ours (cuda:N)
            torch.cuda.set_device(device)
        # a schedule's lr is a device tensor the step writes (constant: the plain float, as always)
        onecycle = self.tr.schedule == "onecycle"
        self.lr = torch.full((), self.tr.lr, dtype=torch.float32, device=device) if onecycle else None
        self.opt = build_optimizer(self.stack, self.tr, device, capturable=self.graphs, lr=self.lr)
        self.seeds = torch.tensor([s.run.seed for s in settings_list], dtype=torch.int64, device=device)
        self.shuffles = [
            torch.Generator(device=device).manual_seed(10_000_019 * (s.run.seed + 1)) for s in settings_list
        ]
        self.n_train, self.bs = len(ds.labels["train"]), self.tr.batch_size
        self.steps = math.ceil(self.n_train / self.bs)
        self.total_steps = self.tr.epochs * self.steps
        self.ceiling = diverge_ceiling(self.tr, len(ds.classes))
        self.alive = torch.ones(self.k, dtype=torch.bool, device=device)
        self.first_bad = torch.full((self.k,), -1, dtype=torch.int64, device=device)
        self.div_step = [-1] * self.k  # host copy, for the runs already recorded as diverged
        # persistent buffers: a captured graph reads and writes these addresses
        self.perms = torch.empty(self.k, self.n_train, dtype=torch.int64, device=device)
        self.loss_buf = torch.zeros(self.steps, self.k, dtype=torch.float64, device=device)
        self.corr_buf = torch.zeros(self.steps, self.k, dtype=torch.int64, device=device)
        self.pos = torch.zeros((), dtype=torch.int64, device=device)
        self.step_no = torch.zeros((), dtype=torch.int64, device=device)
        self.arange = torch.arange(self.bs, device=device)
        self.graph: Any = None
        self.warm = 0
        self._snap: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._snap_had_state = False

    # ---------------------------------------------------------------- one step
    def batch(self, idx: torch.Tensor, step_no: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run-specific batches: indices (K, B) -> inputs (K, B, C, H, W), labels (K, B); augmented
        (``train.augment``) by each run's draws for (its seed, ``step_no``, position in the batch)."""
        images = self.ds.images["train"][idx.reshape(-1)]
        if self.tr.augment != "none":
            words = recipe.draws(self.seeds, step_no, idx.shape[1]).reshape(-1)
            images = recipe.augment(images, words, self.tr.augment)
        x = data.prepare(images, self.ds.mean, self.ds.std, self.inp.transform, self.inp.threshold)
        return x.view(*idx.shape, *x.shape[1:]), self.ds.labels["train"][idx]

    def train_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        step_no: int | torch.Tensor,
        pos: int | torch.Tensor,
        look: Look | None = None,
    ) -> None:
        """Forward, backward, divergence bookkeeping and update of every run. A run is healthy
        ("finite") at this step if its loss and its gradients are finite (a finite loss can still
        overflow in the backward pass) and its loss is at most the blow-up ceiling. ``look``
        (eager only) sees the finiteness before the update, and the buffers as they were before
        this step's forward pass (batch norm's running statistics, which that pass updates)."""
        before = [b.detach().clone() for b in self.stack.buffers()] if look is not None else []
        losses, correct = self.stack.losses(x, y, self.fmt, self.tr.label_smoothing)
        total = losses + self.tr.l1 * self.stack.l1_penalty() if self.tr.l1 else losses
        finite = torch.isfinite(total) & (losses <= self.ceiling)
        self.opt.zero_grad(set_to_none=True)
        torch.where(self.alive & finite, total, torch.zeros_like(total)).sum().backward()
        finite = finite & self._grads_finite()
        if look is not None:
            look(finite, step_no, before)
        self.first_bad.copy_(torch.where(self.alive & ~finite, step_no, self.first_bad))
        self.alive.logical_and_(finite)
        if self.lr is not None:  # onecycle: this step's lr, computed on the device from the step number
            t = torch.as_tensor(step_no, device=self.lr.device)  # one path, eager or captured: the same bits
            lr = recipe.onecycle_lr(t, self.tr.lr, self.total_steps, self.tr.warmup, self.tr.warmup_div)
            self.lr.copy_(lr)
        self.opt.step()
        if isinstance(pos, int):
            self.loss_buf[pos], self.corr_buf[pos] = losses.detach(), correct
        else:  # a device index: no host sync inside a graph
            self.loss_buf.index_copy_(0, pos.view(1), losses.detach().double().unsqueeze(0))
            self.corr_buf.index_copy_(0, pos.view(1), correct.unsqueeze(0))

    def _grads_finite(self) -> torch.Tensor:
        """(K,) whether each run's gradients are all finite: every stacked parameter holds the runs
        in K equal blocks along its first dimension (grouped convs, batch norms, (K, ...) linears)."""
        ok = torch.ones(self.k, dtype=torch.bool, device=self.device)
        for p in self.stack.parameters():
            if p.grad is None:
                continue
            rest = tuple(range(1, p.grad.dim()))  # reduced in place, whatever the memory format
            for extreme in (torch.amax, torch.amin):  # NaN propagates; +-inf is the max or min
                e = extreme(p.grad, dim=rest) if rest else p.grad
                ok &= torch.isfinite(extreme(e.view(self.k, -1), dim=1))
        return ok

    def step(self, j: int, step0: int, look: Look | None = None) -> None:
        """Step ``j`` of the epoch: a CUDA graph for a full batch on CUDA (unless someone looks), else eager."""
        if self.graphs and look is None and (j + 1) * self.bs <= self.n_train:
            self._cuda_step(j, step0)
            return
        x, y = self.batch(self.perms[:, j * self.bs : (j + 1) * self.bs], step0 + j)
        self.train_step(x, y, step0 + j, j, look)

    def _static_step(self) -> None:
        idx = self.perms.index_select(1, self.arange + self.pos * self.bs)
        x, y = self.batch(idx, self.step_no)
        self.train_step(x, y, self.step_no, self.pos)

    def _cuda_step(self, j: int, step0: int) -> None:
        """The step as one CUDA graph (captured after a few eager warm-up steps)."""
        self.pos.fill_(j)
        self.step_no.fill_(step0 + j)
        if self.graph is None:
            if self.warm < GRAPH_WARMUP:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self._static_step()
                torch.cuda.current_stream().wait_stream(side)
                self.warm += 1
                return
            self.opt.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self._static_step()
            except RuntimeError as exc:  # the step still runs, eagerly, from here on
                msg = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                log.warning("CUDA graph capture failed (%s): training on eagerly", msg)
                self.graphs = False
                torch.cuda.synchronize()
                self._static_step()
                return
            self.graph = graph
        self.graph.replay()

    # ---------------------------------------------------------------- snapshots
    def _state_tensors(self) -> list[torch.Tensor]:
        ts = [*self.stack.parameters(), *self.stack.buffers()]
        for p in self.stack.parameters():
            ts += [v for _, v in sorted(self.opt.state.get(p, {}).items()) if torch.is_tensor(v)]
        return [*ts, self.alive, self.first_bad]

    @torch.no_grad()
    def save_snapshot(self) -> None:
        ts = self._state_tensors()
        if len(ts) == len(self._snap) and all(a is b for (a, _), b in zip(self._snap, ts)):
            for t, saved in self._snap:
                saved.copy_(t)
        else:
            self._snap = [(t, t.detach().clone()) for t in ts]
        self._snap_had_state = bool(self.opt.state)

    @torch.no_grad()
    def restore_snapshot(self) -> None:
        for t, saved in self._snap:
            t.copy_(saved)
        if not self._snap_had_state:
            self.opt.state.clear()
        self.graph, self.warm = None, 0  # recapture against the restored state

    # ---------------------------------------------------------------- one epoch
    def epoch(self, step0: int, on_step: Callable[[int], None]) -> EpochOut:
        """One pass over the train split, each run in its own seeded order."""
        with torch.no_grad():
            self.perms.copy_(
                torch.stack([torch.randperm(self.n_train, generator=g, device=self.device) for g in self.shuffles])
            )
            self.loss_buf.zero_()
            self.corr_buf.zero_()
        self.stack.train()
        diverged: dict[int, dict[str, torch.Tensor]] = {}
        start = 0
        while start < self.steps:
            end = min(start + self.tr.check_every, self.steps)
            self.save_snapshot()
            for j in range(start, end):
                self.step(j, step0)
                on_step(1)
            bad = self.first_bad.tolist()  # the periodic host look
            if any(b >= 0 and d < 0 for b, d in zip(bad, self.div_step)):
                self.restore_snapshot()
                self._replay(start, end, step0, diverged)
            start = end
            if all(d >= 0 for d in self.div_step):
                break
        sizes = np.minimum(self.bs, self.n_train - self.bs * np.arange(start))
        return EpochOut(self.loss_buf[:start].cpu().numpy(), self.corr_buf[:start].cpu().numpy(), sizes, diverged)

    def _replay(self, start: int, end: int, step0: int, diverged: dict[int, dict[str, torch.Tensor]]) -> None:
        """Rerun steps [start, end) eagerly, looking at every step: a run whose loss or gradients
        turn non-finite is saved before that step's update (with its buffers from before that
        step's forward pass). The other runs replay bit for bit."""

        def look(finite: torch.Tensor, step_no: int | torch.Tensor, before: list[torch.Tensor]) -> None:
            for r in torch.nonzero(~finite & self.alive).flatten().tolist():
                source, net = self.stack, self.nets[r]
                if before:  # buffers from before this step's forward pass, on copies (autograd saved the live ones)
                    source, net = copy.deepcopy(self.stack), copy.deepcopy(net)
                    with torch.no_grad():
                        for b, v in zip(source.buffers(), before):
                            b.copy_(v)
                source.unstack_into(r, net)
                diverged[r] = {n: v.detach().clone() for n, v in net.state_dict().items()}
                self.div_step[r] = int(step_no)

        for j in range(start, end):
            self.step(j, step0, look)

    # ---------------------------------------------------------------- resume state
    def state(self, epoch: int) -> bytes:
        buf = BytesIO()
        torch.save(
            {
                "epoch": epoch,
                "div_step": torch.tensor(self.div_step),
                "model": {n: v.detach().cpu() for n, v in self.stack.state_dict().items()},
                "optimizer": self.opt.state_dict(),
                "shuffles": torch.stack([g.get_state().cpu() for g in self.shuffles]),
            },
            buf,
        )
        return buf.getvalue()

    def load_state(self, state: Mapping[str, Any]) -> int:
        self.stack.load_state_dict(state["model"])
        # loading replaces each param group whole: keep the flags built for this device (a run
        # begun on a CPU and resumed on a GPU needs capturable Adam for the captured step)
        built = [{k: g[k] for k in DEVICE_FLAGS if k in g} for g in self.opt.param_groups]
        self.opt.load_state_dict(state["optimizer"])
        for group, flags in zip(self.opt.param_groups, built):
            group.update(flags)
        if self.lr is not None:  # the loaded groups hold a copy of the saved lr tensor: point them back at ours
            for group in self.opt.param_groups:
                group["lr"] = self.lr
        for g, s in zip(self.shuffles, state["shuffles"]):
            g.set_state(s.clone())  # a row of its own: set_state misreads a view into the stacked states
        self.div_step = [int(s) for s in state["div_step"].tolist()]
        with torch.no_grad():
            self.alive.copy_(torch.tensor([d < 0 for d in self.div_step], device=self.device))
            self.first_bad.copy_(torch.tensor(self.div_step, device=self.device))
        return int(state["epoch"])


def train_run(
    settings: RunSettings,
    store: str | Path,
    run_dir: str | Path,
    threads: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train one run to completion (resuming if a previous attempt was killed): a stack of one."""
    return train_stack([settings], store, [run_dir], threads=threads, progress=progress)[0]


def train_stack(
    settings_list: Sequence[RunSettings],
    store: str | Path,
    run_dirs: Sequence[str | Path],
    threads: int | None = None,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Train the runs of one stack group together; write each run's outputs."""
    if len(settings_list) != len(run_dirs) or not settings_list:
        raise DnndistError("training needs one output directory per run")
    if len({s.stack_key for s in settings_list}) != 1:
        raise DnndistError(
            "stacked runs must share every setting but the init and the seed (same variant, model, training)"
        )
    ref = settings_list[0]
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(ref.train.device)
    set_determinism(ref.train.deterministic, device)
    # inputs first: a bad store or bad weights fail before anything is written
    ds = data.make_splits(data.open_store(store), **ref.split.kwargs()).to(device)
    trainer = Trainer(settings_list, ds, device)
    members = make_members(settings_list, run_dirs)
    group_state = members[0].state_dir / ("stack-" + config_hash({"runs": [m.state_dir.name for m in members]}))
    group_state.mkdir(parents=True, exist_ok=True)
    epochs = 0 if ref.given_weights else ref.train.epochs  # given weights are analysed, not trained
    start_epoch = _resume(group_state, trainer, members)
    bar = Progress(
        epochs * trainer.steps, start_epoch * trainer.steps, progress, images_per_step=trainer.bs * trainer.k
    )
    log.info(
        "stack of %d run(s) (%s) on %s: %d train / %d valid images, %d epochs, resuming at epoch %d",
        trainer.k,
        ", ".join(f"{s.run.init_name}/seed{s.run.seed}" for s in settings_list),
        device,
        trainer.n_train,
        len(ds.labels["valid"]),
        epochs,
        start_epoch,
    )
    if start_epoch == 0 and not (group_state / "state_0000.pt").exists():
        _end_epoch(trainer, members, group_state, 0, [[] for _ in members], {}, bar)
    with log_beside(bar):
        _train_epochs(trainer, members, group_state, start_epoch, epochs, bar)
    bar.close()
    return [finish_run(m, trainer.div_step[i] >= 0) for i, m in enumerate(members)]


def _train_epochs(
    trainer: Trainer, members: Sequence[Member], group_state: Path, start_epoch: int, epochs: int, bar: Progress
) -> int:
    epoch = start_epoch
    while any(d < 0 for d in trainer.div_step) and epoch < epochs:
        epoch += 1
        t0 = time.perf_counter()
        step0 = (epoch - 1) * trainer.steps
        alive_before = [d < 0 for d in trainer.div_step]
        out = trainer.epoch(step0, bar.advance)
        rows = [
            _train_rows(epoch, step0, out, i, trainer.div_step[i]) if alive_before[i] else [] for i in range(trainer.k)
        ]
        _end_epoch(trainer, members, group_state, epoch, rows, out.diverged, bar)
        for i in out.diverged:
            log.warning(
                "%s/seed%d diverged at step %d: training loss %.4g (the rule: non-finite loss or gradients, "
                "or a loss above %.4g nats = train.diverge_above x ln(classes)); it stops there, flagged",
                trainer.runs[i].init_name,
                trainer.runs[i].seed,
                trainer.div_step[i],
                out.losses[trainer.div_step[i] - step0, i],
                trainer.ceiling,
            )
        log.info(
            "epoch %d: %.0f images x runs/s", epoch, out.sizes.sum() * sum(alive_before) / (time.perf_counter() - t0)
        )
    return epoch


def _train_rows(epoch: int, step0: int, out: EpochOut, i: int, div_step: int) -> list[dict[str, Any]]:
    """Per-step and epoch rows of train loss and accuracy of run ``i`` (up to its divergence)."""
    n_done = div_step - step0 if div_step >= step0 else len(out.sizes)
    losses, correct = out.losses[:n_done, i], out.correct[:n_done, i].astype(np.float64)
    sizes = out.sizes[:n_done].astype(np.float64)
    steps = np.arange(step0, step0 + n_done, dtype=np.float64)
    rows = [_row(epoch, s, "train", "loss", v) for s, v in zip(steps, losses)]
    rows += [_row(epoch, s, "train", "accuracy", v) for s, v in zip(steps, correct / np.maximum(sizes, 1))]
    if n_done:
        rows.append(_row(epoch, math.nan, "train", "loss", float((losses * sizes).sum() / sizes.sum())))
        rows.append(_row(epoch, math.nan, "train", "accuracy", float(correct.sum() / sizes.sum())))
    return rows


def _end_epoch(
    trainer: Trainer,
    members: Sequence[Member],
    group_state: Path,
    epoch: int,
    rows: list[list[dict[str, Any]]],
    diverged: Mapping[int, dict[str, torch.Tensor]],
    bar: Progress,
) -> None:
    """Evaluate, write each run's metrics and checkpoints of the epoch, then the resume state."""
    evals = eval_rows(trainer.stack, trainer.ds, trainer.tr, trainer.inp, epoch)
    for i, m in enumerate(members):
        if i in diverged:  # its last finite weights, evaluated alone
            trainer.nets[i].load_state_dict(diverged[i])
            evals[i] = eval_rows(stacked.Single(trainer.nets[i]), trainer.ds, trainer.tr, trainer.inp, epoch)[0]
            rows[i] = rows[i] + evals[i] + [_row(epoch, trainer.div_step[i], "train", "diverged", 1.0)]
        elif trainer.div_step[i] >= 0:
            continue  # stopped in an earlier epoch
        else:
            trainer.stack.unstack_into(i, trainer.nets[i])
            rows[i] = rows[i] + evals[i]
        frame = pd.DataFrame(rows[i], columns=ROW_COLUMNS)
        write_text(m.state_dir / "metrics" / f"epoch_{epoch:04d}.csv", frame.to_csv(index=False))
        step = trainer.div_step[i] if i in diverged else epoch * trainer.steps
        save_checkpoints(m, trainer.nets[i], epoch, frame, i in diverged, step)
    write_bytes(group_state / f"state_{epoch:04d}.pt", trainer.state(epoch))
    for old in group_state.glob("state_*.pt"):
        if old.name != f"state_{epoch:04d}.pt":
            old.unlink()
    for m in members:  # the best checkpoint before this epoch's is not needed once the epoch is resumable
        for old in sorted((m.state_dir / "checkpoints").glob("best_*.safetensors"))[:-1]:
            old.unlink()
    alive = sum(d < 0 for d in trainer.div_step)
    if trainer.k == 1:
        vals = {
            f"{r['split']} {r['metric']}": r["value"]
            for r in rows[0]
            if math.isnan(r["step"]) or r["metric"] == "diverged"
        }
        bar.epoch(f"epoch {epoch} " + " ".join(f"{k} {v:.4g}" for k, v in vals.items()))
    else:
        bar.epoch(f"epoch {epoch}: {alive} of {trainer.k} runs training")


def _resume(group_state: Path, trainer: Trainer, members: Sequence[Member]) -> int:
    found = sorted(group_state.glob("state_*.pt"))
    if not found:
        return 0
    try:
        state = torch.load(found[-1], map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt resume state: start over rather than fail
        log.warning("ignoring unreadable resume state %s (%s); starting from scratch", found[-1], exc)
        for f in group_state.glob("state_*.pt"):
            f.unlink()
        for m in members:  # the epochs of the attempt it belonged to are not resumable either
            drop_epochs_after(m, -1)
            m.best_loss = None
        return 0
    epoch = trainer.load_state(state)
    for m in members:  # work of an epoch that did not complete
        drop_epochs_after(m, epoch)
        frames = [pd.read_csv(f) for f in sorted((m.state_dir / "metrics").glob("epoch_*.csv"))]
        kept = best.best_epoch((int(f["epoch"].iloc[0]), valid_loss(f)) for f in frames if valid_loss(f) is not None)
        m.best_loss = kept[1] if kept else None
    log.info("resuming from %s (epoch %d)", found[-1], epoch)
    return epoch
