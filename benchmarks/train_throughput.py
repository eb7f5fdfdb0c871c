"""B1 (per-run part): training throughput of the paper CNN, data resident on the device.

    python -m benchmarks.train_throughput [--device cuda] [--images 50000] [--epochs 2]

Prints images/s, GFLOP/s (9.37 MFLOP per image and training step, ../shared/perf-notes.md)
and the projected wall time of the paper workload (7 inits x 50 epochs x 50,000 images).
Needs only torch (no zarr/snakemake), so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks import device_name
from benchmarks.train_stacked import dataset, run_settings, trainer_epochs
from dnndist import train

FLOP_PER_IMAGE_STEP = 9.37e6
PAPER_IMAGES = 7 * 50 * 50_000


def measure(device: torch.device, n: int, epochs: int, batch_size: int, channels_last: bool) -> float:
    ds = dataset(n, device)
    s = run_settings("kaiming_normal", device.type, channels_last, batch_size)
    return trainer_epochs([s], ds, device, epochs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="auto")
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-sizes", default="64,256")
    args = p.parse_args(argv)
    device = train.resolve_device(args.device)
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    print(f"{'batch':>6} {'layout':>14} {'images/s':>10} {'GFLOP/s':>8} {'paper workload (7x50 epochs)':>30}")
    for bs in map(int, args.batch_sizes.split(",")):
        for cl in (False, True):
            rate = measure(device, args.images, args.epochs, bs, cl)
            print(
                f"{bs:>6} {'channels_last' if cl else 'contiguous':>14} {rate:>10.0f} {rate * FLOP_PER_IMAGE_STEP / 1e9:>8.1f} "
                f"{PAPER_IMAGES / rate / 60:>27.1f} min"
            )


if __name__ == "__main__":
    main()
