"""Benchmarks (make bench). Each prints a table of rates measured side by side in one run."""

from __future__ import annotations

import platform

import torch


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
