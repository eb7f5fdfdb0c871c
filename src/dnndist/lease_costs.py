"""The lease's cost model: seconds each stage should take on the device (``COSTS``, from
measurements where there are any: docs/lease.md, Sizing), for a profile's config."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dnndist.lease import Lease


# Seconds, for the estimates (docs/lease.md, Sizing, says where each comes from). A stack group
# of k runs trains at step_base + step_per_run * k per step plus eval per (run, epoch) (after a
# fixed start: the job, CUDA, the graph's capture), and
# extracts a run in a job of its own, extract_process (the imports, the device) + per checkpoint
# extract_fixed + extract_per_1k * inputs / 1,000, as many jobs side by side as half the cores
# (Snakemake counts each as 2; B5's rate was measured with jobs side by side); groups train
# side by side, each extra group adding ``contention`` of one; statistics
# per (run, checkpoint); experiment 2 = exp2_fixed + exp2_per_input * inputs.
COSTS: dict[str, dict[str, float]] = {
    "cuda": {  # H100: the issue's measurements at 1943868 (B5) and B1's CUDA-graph probe
        "setup": 15,
        "data": 46,
        "train_fixed": 20,
        "step_base": 0.45e-3,
        "step_per_run": 0.064e-3,
        "eval_per_run_epoch": 0.02,
        "extract_process": 4.0,
        "extract_fixed": 1.0,
        "extract_per_1k": 0.036,
        "contention": 0.25,
        "stats": 0.51,
        "docs": 40,
        "exp2_fixed": 90,
        "exp2_per_input": 0.002,
    },
    "cpu": {  # 2 cores of this project's CPUs: the rehearsal's own stages (docs/lease.md)
        "setup": 5,
        "data": 15,
        "train_fixed": 30,
        "step_base": 2e-3,
        "step_per_run": 7.9e-3,
        "eval_per_run_epoch": 0.3,
        "extract_process": 2.0,
        "extract_fixed": 0.4,
        "extract_per_1k": 1.0,
        "contention": 1.0,
        "stats": 0.25,
        "docs": 30,
        "exp2_fixed": 40,
        "exp2_per_input": 0.2,
    },
}


def estimate(lease: Lease, stage: str) -> float:
    """Seconds the stage should take on this device (``COSTS``) for the profile's config."""
    c = COSTS["cuda" if lease.device == "cuda" else "cpu"]
    cfg = lease.config()
    tr = cfg["train"]
    runs = len(cfg["seeds"]) * len(cfg["inits"])
    n_train = _train_size(cfg)
    steps = math.ceil(n_train / tr["batch_size"]) * tr["epochs"]
    checkpoints = len(tr["checkpoints"])
    inputs = cfg.get("extract", {}).get("max_inputs") or 60_000  # null: every input of the splits
    if stage == "setup":
        return c["setup"]
    if stage == "data":
        return c["data"]
    k = min(runs, cfg.get("stack_max", 70)) if cfg.get("stacked") else 1
    groups = math.ceil(runs / k)
    side_by_side = 1 + c["contention"] * (groups - 1)  # all groups at once, sharing the device
    if stage == "train":
        per_group = steps * (c["step_base"] + c["step_per_run"] * k) + c["eval_per_run_epoch"] * tr["epochs"] * k
        return c["train_fixed"] + per_group * side_by_side
    if stage == "extract":
        per_run = c["extract_process"] + checkpoints * (c["extract_fixed"] + c["extract_per_1k"] * inputs / 1000)
        return math.ceil(runs / max(1, lease.cores // 2)) * per_run
    if stage == "stats":
        return c["stats"] * runs * checkpoints
    if stage == "docs":
        return c["docs"]
    if stage == "exp2":
        return c["exp2_fixed"] + c["exp2_per_input"] * lease.profile.exp2_inputs
    if stage == "relu":  # the workflow again for as many runs
        return sum(s.seconds for s in lease.stages if s.name in ("train", "extract", "stats", "docs"))
    raise ValueError(stage)


def _train_size(cfg: dict[str, Any]) -> int:
    data = cfg["data"]
    if data["source"] == "synthetic":
        n = data["synthetic"]["train_size"]
    else:
        n = 50_000  # CIFAR-10's training split
    return max(1, n - (data.get("valid_size", 0) if data.get("valid_split") == "train" else 0))
