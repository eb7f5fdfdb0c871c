"""B5 (training part): the paper workload, K runs x 50 epochs x 50,000 images, batch 64,
Adam, in dnndist's training loop (train.Trainer) with device-resident data, on a GPU.
Targets on one H100: 21 runs (7 inits x 3 seeds) x 50 epochs < 60 s.

    python -m benchmarks.gpu_paper [--runs 21] [--epochs 50] [--quick] [--device cuda] [--no-graphs]

Needs only torch (no zarr/snakemake), so it runs on a bare GPU machine. Synthetic images
of CIFAR-10's size stand in for the data (the cost does not depend on the pixels).
--quick times 2 epochs and extrapolates to 50 (said so in the output). The whole workflow
(data -> figures, per stage) is benchmarks/gpu_workflow.py.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks import device_name
from benchmarks.train_stacked import dataset, stack_settings, trainer_epochs
from dnndist import train


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", type=int, default=21, help="runs in the stack (the seven inits x seeds)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-graphs", dest="graphs", action="store_false", help="eager steps (no CUDA graph)")
    args = p.parse_args(argv)
    device = train.resolve_device(args.device)
    epochs = 2 if args.quick else args.epochs
    ds = dataset(args.images, device)
    rate = trainer_epochs(
        stack_settings(args.runs, device.type, fast=device.type == "cpu", graphs=args.graphs), ds, device, epochs
    )
    wall = args.runs * args.images * epochs / rate
    full = args.runs * 50 * 50_000 / rate
    print(
        f"B5 training on {device_name(device)}, torch {torch.__version__}: {args.runs} runs x {epochs} epochs x "
        f"{args.images} images in {wall:.1f} s ({rate:,.0f} images x runs/s, {'CUDA graph' if args.graphs and device.type == 'cuda' else 'eager'}); "
        f"{args.runs} x 50 epochs x 50,000 images: {full:.0f} s"
        + (" (extrapolated)" if epochs != 50 or args.images != 50_000 else "")
    )
    return {"wall_s": wall, "paper_s": full}


if __name__ == "__main__":
    main()
