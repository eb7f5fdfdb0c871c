"""B6: what recording costs a training loop. The paper CNN, Adam 1e-4, batch 64, a plain loop
over in-memory CIFAR-sized inputs, trained bare and with ``dnndist.Recorder`` (every epoch, 512
probe inputs with labels, emission/absorption of 64), side by side, alternating which goes first.
Target: the recorded loop within 10 % of the bare one at a per-epoch cadence.

    python -m benchmarks.recorder_overhead [--images 50000] [--epochs 2] [--repeat 2]

The ratio is the recorded loop's time (its record points included: the start and each epoch)
over the bare loop's; ``close`` (the record points combined into the zarr stores, once a run) is
printed apart, with its share of the whole run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import dnndist
from dnndist import models
from dnndist.settings import ModelSettings


def loop(images: int, epochs: int, out: Path | None, seed: int = 0) -> tuple[float, float]:
    """(seconds of the loop, seconds of close): one run, bare (``out`` None) or recorded into ``out``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(images, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (images,), generator=g)
    torch.manual_seed(seed)
    model = models.paper_cnn(ModelSettings())
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    t0 = time.perf_counter()
    rec = None
    if out is not None:
        probe = (x[:512], y[:512])
        rec = dnndist.Recorder(model, out, group="bench", seed=seed, inputs=probe, optimizer=opt, gradient_inputs=64)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(images, generator=g)
        for idx in order.split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if rec is not None:
                rec.step(loss=loss)
        if rec is not None:
            rec.epoch()
    took = time.perf_counter() - t0
    if rec is None:
        return took, 0.0
    t1 = time.perf_counter()
    rec.close()
    return took, time.perf_counter() - t1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--images", type=int, default=50_000, help="inputs per epoch (default 50,000: CIFAR-10's train split)"
    )
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2, help="bare/recorded pairs, alternating which runs first")
    args = p.parse_args(argv)
    print(
        f"B6 recorder overhead: paper CNN, batch 64, Adam, {args.images:,} inputs x {args.epochs} epochs, "
        f"{torch.get_num_threads()} threads; every epoch, 512 probe inputs, 64 for emission/absorption"
    )
    bare, recorded, closing = [], [], []
    work = Path(tempfile.mkdtemp(prefix="dnndist-b6-"))
    try:
        for r in range(args.repeat):
            for kind in ("bare", "recorded") if r % 2 == 0 else ("recorded", "bare"):
                out = work / f"run{r}" if kind == "recorded" else None
                took, close = loop(args.images, args.epochs, out)
                (recorded if out else bare).append(took)
                if out:
                    closing.append(close)
                print(f"  {kind:8s} {took:7.2f} s" + (f"  (close {close:.2f} s)" if out else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    b, rec, c = statistics.median(bare), statistics.median(recorded), statistics.median(closing)
    print(f"median: bare {b:.2f} s, recorded {rec:.2f} s: ratio {rec / b:.3f} (target <= 1.10)")
    print(f"close (once a run): {c:.2f} s, {c / (rec + c):.1%} of the recorded run")


if __name__ == "__main__":
    main()
