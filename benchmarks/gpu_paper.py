"""B5: the paper workload (7 inits x 50 epochs x 50,000 images, batch 64, Adam) with stacked
training and device-resident data, on a GPU. Target: under 2 minutes on an H100.

    python -m benchmarks.gpu_paper [--epochs 50] [--quick] [--device cuda]

Needs only torch (no zarr/snakemake), so it runs on a bare GPU machine. Synthetic images
of CIFAR-10's size stand in for the data (the cost does not depend on the pixels).
--quick times 2 epochs and extrapolates to 50.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks import device_name
from benchmarks.train_stacked import INITS, _stacked_epoch, _sync, dataset, run_settings
from dnndist import stacked, train


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    device = train.resolve_device(args.device)
    epochs = 2 if args.quick else args.epochs
    ds, warm = dataset(args.images, device), dataset(640, device)
    sets = [run_settings(i, device.type, fast=device.type == "cpu") for i in INITS]
    nets = [train.build_model(s, ds, device) for s in sets]
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model = stacked.StackedCNN(nets).to(device=device, memory_format=fmt)
    opt = train.build_optimizer(model, sets[0]["train"], device)
    g = torch.Generator(device=device).manual_seed(0)
    _stacked_epoch(model, opt, warm, sets[0], g)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        _stacked_epoch(model, opt, ds, sets[0], g)
    _sync(device)
    wall = time.perf_counter() - t0
    full = wall / epochs * 50 * 50_000 / args.images
    name = device_name(device)
    print(f"B5 paper workload, stacked, device-resident data on {name}: {epochs} epochs x {args.images} images x 7 runs "
          f"in {wall:.1f} s; 7 x 50 epochs x 50,000 images: {full / 60:.2f} min (target < 2 min)"
          + (" (extrapolated)" if epochs != 50 or args.images != 50_000 else ""))
    return {"wall_s": wall, "paper_min": full / 60}


if __name__ == "__main__":
    main()
