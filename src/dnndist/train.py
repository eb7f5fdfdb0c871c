"""Training stage: one run = (variant, init, seed), deterministic given its settings.

Layout of a run directory (``<results>/runs/<variant>/<init>/seed<seed>/``):

- ``checkpoints/epoch_NNNN.safetensors``: weights at each configured epoch (tensors only,
  metadata: run keys, epoch, config hash, diverged flag);
- ``metrics.csv``: tidy table (epoch, step, split, metric, value) of per-step and
  per-epoch train loss/accuracy and per-epoch validation/test loss/accuracy;
- ``summary.json``: status (completed | diverged), epochs trained, final metrics.

While running, everything lives in ``.resume/<config-hash>/``: per-epoch metrics,
checkpoints and the resume state (model, optimiser, shuffling RNG) written atomically
at the end of every epoch. A killed job resumes from the last completed epoch and ends
with the same bytes as an uninterrupted run; the outputs appear only at the end.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import save as st_save

from dnndist import DnndistError, data, inits, integrity, models
from dnndist.io import atomic_path, write_bytes, write_json, write_text
from dnndist.provenance import config_hash

log = logging.getLogger(__name__)
METRIC_COLUMNS = ["variant", "init", "seed", "epoch", "step", "split", "metric", "value"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DnndistError(f"train.device is {name!r} but CUDA is not available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DnndistError("train.device is 'mps' but MPS is not available on this machine")
    return torch.device(name)


def set_determinism(enabled: bool, device: torch.device) -> None:
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only on CUDA: a few backward kernels (e.g. max-pool) have no deterministic
    # implementation there; CPU training is bitwise reproducible.
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    torch.backends.cudnn.benchmark = False


def build_model(settings: Mapping[str, Any], ds: data.Dataset, device: torch.device) -> models.Net:
    run = settings["run"]
    in_channels, image_size = ds.images["train"].shape[1], ds.images["train"].shape[-1]
    torch.manual_seed(run["seed"])  # for anything that draws from the global RNG
    model = models.build(settings["model"], in_channels, len(ds.classes), image_size)
    models.check_head(model, len(ds.classes), settings["model"].get("weights") or "model")
    if settings["model"].get("weights"):  # given weights replace the init (experiment 2)
        models.load_pretrained(model, models.read_weights(settings["model"]["weights"]), settings["model"]["weights"])
    else:
        gain = inits.gain_for(run["init_name"], settings["init"]["gain"], settings["model"])
        inits.apply(model, run["init_name"], gain, settings["init"]["bias"], run["seed"])
    fmt = torch.channels_last if settings["train"]["channels_last"] else torch.contiguous_format
    return model.to(device=device, memory_format=fmt)


def build_optimizer(model: torch.nn.Module, train: Mapping[str, Any], device: torch.device) -> torch.optim.Optimizer:
    fused = device.type in ("cpu", "cuda")
    if train["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"], fused=fused)
    return torch.optim.SGD(
        model.parameters(), lr=train["lr"], momentum=train["momentum"], weight_decay=train["weight_decay"], fused=fused
    )


def l1_penalty(model: torch.nn.Module) -> torch.Tensor:
    return sum(m.weight.abs().sum() for _, m in inits.weight_modules(model))  # type: ignore[return-value]


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, ds: data.Dataset, settings: Mapping[str, Any]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a split."""
    model.eval()
    inp, bs = settings["input"], settings["train"]["eval_batch_size"]
    fmt = torch.channels_last if settings["train"]["channels_last"] else torch.contiguous_format
    loss = torch.zeros((), device=images.device, dtype=torch.float64)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    for start in range(0, len(labels), bs):
        x = data.prepare(images[start : start + bs], ds.mean, ds.std, inp["transform"], inp["threshold"])
        out = model(x.contiguous(memory_format=fmt))
        y = labels[start : start + bs]
        loss += F.cross_entropy(out, y, reduction="sum").double()
        correct += (out.argmax(1) == y).sum()
    model.train()
    n = max(len(labels), 1)
    return float(loss) / n, float(correct) / n


def state_dict_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def checkpoint_bytes(model: torch.nn.Module, settings: Mapping[str, Any], epoch: int, diverged: bool, step: int) -> bytes:
    run = settings["run"]
    meta = {
        "format": "dnndist-checkpoint-1",
        "variant": run["variant"], "init": run["init_name"], "seed": str(run["seed"]),
        "epoch": str(epoch), "step": str(step), "diverged": str(diverged).lower(),
        "config_hash": config_hash(settings), "model": json.dumps(settings["model"], sort_keys=True),
    }
    if settings["model"].get("weights"):
        meta["weights_sha256"] = settings["model"].get("weights_sha256") or integrity.sha256(settings["model"]["weights"])
    return _st_bytes(state_dict_cpu(model), meta)


def _st_bytes(tensors: dict[str, torch.Tensor], meta: Mapping[str, str]) -> bytes:
    # one metadata key holding sorted JSON: safetensors writes several keys in hash order,
    # which would make otherwise identical checkpoints differ in their bytes
    return st_save(tensors, metadata={"dnndist": json.dumps(dict(meta), sort_keys=True)})


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a checkpoint written by this stage (tensors + metadata; no pickle)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("dnndist", "{}"))
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for a damaged header
        raise DnndistError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != "dnndist-checkpoint-1":
        raise DnndistError(f"{path}: not a dnndist checkpoint (format {meta.get('format')!r})")
    return tensors, meta


class Progress:
    """tqdm bar on a terminal, plain log lines otherwise (e.g. in Snakemake logs)."""

    def __init__(self, total_steps: int, done_steps: int = 0, enabled: bool | None = None):
        self.bar = None
        if enabled if enabled is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=done_steps, unit="step", dynamic_ncols=True)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def epoch(self, line: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(line)
        else:
            log.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def eval_rows(model: torch.nn.Module, ds: data.Dataset, settings: Mapping[str, Any], epoch: int) -> list[dict[str, Any]]:
    """Epoch rows of loss and accuracy on the valid and test splits; a split that is the same
    images as the one before it (data.valid_split test) is evaluated once."""
    rows, done = [], {}
    for split in ("valid", "test"):
        if split in ds.labels:
            key = id(ds.images[split])
            if key not in done:
                done[key] = evaluate(model, ds.images[split], ds.labels[split], ds, settings)
            loss, acc = done[key]
            rows += [_row(epoch, math.nan, split, "loss", loss), _row(epoch, math.nan, split, "accuracy", acc)]
    return rows


def _row(epoch: int, step: float, split: str, metric: str, value: float) -> dict[str, Any]:
    return {"epoch": epoch, "step": step, "split": split, "metric": metric, "value": value}


@dataclass
class EpochResult:
    losses: torch.Tensor  # (steps,) float64, on the CPU
    correct: torch.Tensor  # (steps,) int64
    sizes: torch.Tensor  # (steps,) int64
    diverged_at: int  # step within the epoch whose loss was not finite, or -1


def train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, ds: data.Dataset, settings: Mapping[str, Any],
                shuffle: torch.Generator, on_step: Callable[[int], None] | None = None) -> EpochResult:
    """One pass over the train split in a seeded order, data already on the device.

    Stops at the first non-finite loss (before applying its update), so a diverged
    model keeps its last finite weights.
    """
    tr, inp = settings["train"], settings["input"]
    device = ds.images["train"].device
    fmt = torch.channels_last if tr["channels_last"] else torch.contiguous_format
    n_train, bs = len(ds.labels["train"]), tr["batch_size"]
    steps = math.ceil(n_train / bs)
    perm = torch.randperm(n_train, generator=shuffle, device=device)
    losses = torch.empty(steps, dtype=torch.float64, device=device)
    correct = torch.empty(steps, dtype=torch.int64, device=device)
    sizes = torch.empty(steps, dtype=torch.int64, device=device)
    model.train()
    for i in range(steps):
        idx = perm[i * bs : (i + 1) * bs]
        x = data.prepare(ds.images["train"][idx], ds.mean, ds.std, inp["transform"], inp["threshold"])
        y = ds.labels["train"][idx]
        out = model(x.contiguous(memory_format=fmt))
        loss = F.cross_entropy(out, y)
        total = loss + tr["l1"] * l1_penalty(model) if tr["l1"] else loss
        if not bool(torch.isfinite(total)):  # the one host sync per step
            return EpochResult(losses[:i].cpu(), correct[:i].cpu(), sizes[:i].cpu(), i)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses[i], correct[i], sizes[i] = loss.detach(), (out.argmax(1) == y).sum(), len(y)
        if on_step is not None:
            on_step(1)
    return EpochResult(losses.cpu(), correct.cpu(), sizes.cpu(), -1)


def train_run(settings: Mapping[str, Any], store: str | Path, run_dir: str | Path, threads: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Train one run to completion (resuming if a previous attempt was killed)."""
    run_dir = Path(run_dir)
    run, tr = settings["run"], settings["train"]
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(tr["device"])
    set_determinism(tr["deterministic"], device)
    # inputs first: a bad store or bad weights fail before anything is written
    ds = data.make_splits(data.open_store(store), **settings["split"]).to(device)
    model = build_model(settings, ds, device)
    h = config_hash(settings)
    state_dir = run_dir / ".resume" / h
    (state_dir / "metrics").mkdir(parents=True, exist_ok=True)
    (state_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    for stale in (run_dir / ".resume").iterdir():
        if stale.name != h:  # resume state of other settings is useless now
            shutil.rmtree(stale, ignore_errors=True)

    opt = build_optimizer(model, tr, device)
    shuffle = torch.Generator(device=device).manual_seed(10_000_019 * (run["seed"] + 1))
    n_train, bs = len(ds.labels["train"]), tr["batch_size"]
    steps_per_epoch = math.ceil(n_train / bs)
    ckpt_epochs = set(settings["checkpoint_epochs"])
    epochs = 0 if settings["model"].get("weights") else tr["epochs"]  # given weights are analysed, not trained

    start_epoch, diverged = _resume(state_dir, model, opt, shuffle)
    step = start_epoch * steps_per_epoch
    bar = Progress(epochs * steps_per_epoch, step, progress)
    log.info("run %s on %s: %d train / %d valid images, %d epochs, resuming at epoch %d",
             f"{run['variant']}/{run['init_name']}/seed{run['seed']}", device, n_train, len(ds.labels["valid"]), epochs, start_epoch)

    def end_epoch(epoch: int, rows: list[dict[str, Any]], is_diverged: bool, at_step: int) -> None:
        rows += eval_rows(model, ds, settings, epoch)
        if is_diverged:
            rows.append(_row(epoch, at_step, "train", "diverged", 1.0))
        frame = pd.DataFrame(rows, columns=["epoch", "step", "split", "metric", "value"])
        write_text(state_dir / "metrics" / f"epoch_{epoch:04d}.csv", frame.to_csv(index=False))
        if epoch in ckpt_epochs or is_diverged:
            write_bytes(state_dir / "checkpoints" / f"epoch_{epoch:04d}.safetensors",
                        checkpoint_bytes(model, settings, epoch, is_diverged, at_step))
        buf = BytesIO()
        torch.save({"epoch": epoch, "diverged": is_diverged, "model": state_dict_cpu(model), "optimizer": opt.state_dict(),
                    "shuffle": shuffle.get_state().cpu()}, buf)
        write_bytes(state_dir / f"state_{epoch:04d}.pt", buf.getvalue())
        for old in state_dir.glob("state_*.pt"):
            if old.name != f"state_{epoch:04d}.pt":
                old.unlink()
        vals = {f"{r['split']} {r['metric']}": r["value"] for r in rows if math.isnan(r["step"]) or r["metric"] == "diverged"}
        bar.epoch(f"epoch {epoch}/{epochs} " + " ".join(f"{k} {v:.4g}" for k, v in vals.items()))

    if start_epoch == 0 and not diverged and not (state_dir / "state_0000.pt").exists():
        end_epoch(0, [], False, 0)
    epoch = start_epoch
    while not diverged and epoch < epochs:
        epoch += 1
        t0 = time.perf_counter()
        res = train_epoch(model, opt, ds, settings, shuffle, on_step=bar.advance)
        div_step = step + res.diverged_at if res.diverged_at >= 0 else -1
        losses, correct, sizes = res.losses, res.correct, res.sizes
        n_done = len(losses)
        step_idx = np.arange(step, step + n_done, dtype=np.float64)
        acc = (correct.double() / sizes.clamp(min=1).double()).numpy()
        rows = [_row(epoch, s, "train", "loss", v) for s, v in zip(step_idx, losses.numpy())]
        rows += [_row(epoch, s, "train", "accuracy", v) for s, v in zip(step_idx, acc)]
        if n_done:
            w = sizes.double()
            rows.append(_row(epoch, math.nan, "train", "loss", float((losses * w).sum() / w.sum())))
            rows.append(_row(epoch, math.nan, "train", "accuracy", float(correct.sum()) / float(w.sum())))
        step += n_done
        diverged = div_step >= 0
        end_epoch(epoch, rows, diverged, div_step if diverged else step)
        log.info("epoch %d: %.0f images/s", epoch, sizes.sum().item() / (time.perf_counter() - t0))
    bar.close()
    return _finish(settings, state_dir, run_dir, epoch, diverged)


def _resume(state_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, shuffle: torch.Generator) -> tuple[int, bool]:
    states = sorted(state_dir.glob("state_*.pt"))
    if not states:
        return 0, False
    try:
        state = torch.load(states[-1], map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt resume state: start over rather than fail
        log.warning("ignoring unreadable resume state %s (%s); starting from scratch", states[-1], exc)
        shutil.rmtree(state_dir)
        (state_dir / "metrics").mkdir(parents=True)
        (state_dir / "checkpoints").mkdir(parents=True)
        return 0, False
    epoch = int(state["epoch"])
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    shuffle.set_state(state["shuffle"])
    for sub in ("metrics", "checkpoints"):  # work of an epoch that did not complete
        for f in (state_dir / sub).glob("epoch_*"):
            if int(f.stem.split("_")[1]) > epoch:
                f.unlink()
    log.info("resuming from %s (epoch %d)", states[-1], epoch)
    return epoch, bool(state["diverged"])


def _finish(settings: Mapping[str, Any], state_dir: Path, run_dir: Path, last_epoch: int, diverged: bool) -> dict[str, Any]:
    run = settings["run"]
    frames = [pd.read_csv(f) for f in sorted((state_dir / "metrics").glob("epoch_*.csv"))]
    metrics = pd.concat(frames, ignore_index=True)
    metrics.insert(0, "seed", run["seed"])
    metrics.insert(0, "init", run["init_name"])
    metrics.insert(0, "variant", run["variant"])
    metrics = metrics[METRIC_COLUMNS]
    ckpts = {int(f.stem.split("_")[1]): f for f in (state_dir / "checkpoints").glob("epoch_*.safetensors")}
    with atomic_path(run_dir / "checkpoints") as tmp:
        tmp.mkdir()
        last = max(ckpts)
        for epoch in settings["checkpoint_epochs"]:
            # a diverged run has no later checkpoints: its last state stands in, flagged diverged
            src = ckpts[epoch] if epoch in ckpts else ckpts[last]
            if epoch not in ckpts:
                tensors, meta = load_checkpoint(src)
                meta.update({"epoch": str(epoch), "diverged": "true", "trained_epochs": str(last)})
                (tmp / f"epoch_{epoch:04d}.safetensors").write_bytes(_st_bytes(tensors, meta))
            else:
                shutil.copyfile(src, tmp / f"epoch_{epoch:04d}.safetensors")
        (tmp / integrity.SUMS).write_text(integrity.checksums_text(list(tmp.glob("epoch_*.safetensors"))))
    write_text(run_dir / "metrics.csv", metrics.to_csv(index=False))
    epoch_rows = metrics[metrics["step"].isna()]
    final = {f"{r.split}_{r.metric}": float(r.value) for r in epoch_rows[epoch_rows["epoch"] == last_epoch].itertuples()}
    summary = {
        "run": run, "status": "diverged" if diverged else "completed", "epochs_trained": last_epoch,
        "epochs": last_epoch if settings["model"].get("weights") else settings["train"]["epochs"],
        "checkpoint_epochs": settings["checkpoint_epochs"],
        "config_hash": config_hash(settings), "final": final,
    }
    if settings["model"].get("weights"):
        summary["weights"] = settings["model"]["weights"]
        summary["weights_sha256"] = integrity.sha256(settings["model"]["weights"])
    if diverged:
        div = metrics[metrics["metric"] == "diverged"]
        summary["diverged_step"] = int(div["step"].iloc[0])
    write_json(run_dir / "summary.json", summary)
    shutil.rmtree(run_dir / ".resume", ignore_errors=True)
    return summary
