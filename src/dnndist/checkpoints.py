"""Checkpoints (safetensors: tensors + one JSON metadata entry, no pickle) and the device.

Shared by training (which writes them) and extraction (which reads them), so that
extraction needs nothing from the training loop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from dnndist import DnndistError, integrity
from dnndist.settings import RunSettings, TrainSettings

FORMAT = "dnndist-checkpoint-1"


def resolve_device(name: str) -> torch.device:
    """``auto`` = CUDA when present, else the CPU; a clear error for a device that is absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DnndistError(f"train.device is {name!r} but CUDA is not available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DnndistError("train.device is 'mps' but MPS is not available on this machine")
    return torch.device(name)


def state_dict_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


BEST_FILE = "best.json"  # beside the checkpoints: the best-validation epoch (train.checkpoints: best)


def memory_format(train: TrainSettings) -> torch.memory_format:
    """The memory format the model runs in (train.channels_last), in training and extraction alike."""
    return torch.channels_last if train.channels_last else torch.contiguous_format


def checkpoint_bytes(model: torch.nn.Module, settings: RunSettings, epoch: int, diverged: bool, step: int) -> bytes:
    run = settings.run
    meta = {
        "format": FORMAT,
        "variant": run.variant,
        "init": run.init_name,
        "seed": str(run.seed),
        "epoch": str(epoch),
        "step": str(step),
        "diverged": str(diverged).lower(),
        "config_hash": settings.config_hash,
        "model": json.dumps(settings.model.to_dict(), sort_keys=True),
    }
    if getattr(model, "input_shape", None):  # channels, height, width (models.build)
        meta["input"] = json.dumps(list(model.input_shape))
    if settings.given_weights:
        meta["weights_sha256"] = integrity.sha256(settings.given_weights)
    return st_bytes(state_dict_cpu(model), meta)


def st_bytes(tensors: dict[str, torch.Tensor], meta: Mapping[str, str]) -> bytes:
    # one metadata key holding sorted JSON: safetensors writes several keys in hash order,
    # which would make otherwise identical checkpoints differ in their bytes
    return st_save(tensors, metadata={"dnndist": json.dumps(dict(meta), sort_keys=True)})


def _stored_meta(fh: Any) -> dict[str, str]:
    """The dnndist metadata of an open safetensors file (one key of sorted JSON, ``st_bytes``)."""
    meta = json.loads((fh.metadata() or {}).get("dnndist", "{}"))
    return meta if isinstance(meta, dict) else {}


def checkpoint_meta(path: str | Path) -> dict[str, str]:
    """The training stage's metadata of a checkpoint (variant, init, seed, epoch, model, ...), or
    {} for a file that is not a dnndist checkpoint (another safetensors file, a torch file)."""
    from safetensors import safe_open

    if Path(path).suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = _stored_meta(fh)
    except Exception:  # noqa: BLE001 - unreadable: read_weights names the problem when the tensors are read
        return {}
    return meta if meta.get("format") == FORMAT else {}


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a checkpoint written by the training stage (tensors + metadata; no pickle)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = _stored_meta(fh)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for a damaged header
        raise DnndistError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != FORMAT:
        raise DnndistError(f"{path}: not a dnndist checkpoint (format {meta.get('format')!r})")
    return tensors, meta
