"""`make bench`: B1-B6 (and B4b, the plan's growth) in one go, each printing its table (ratios measured side by side).

    python -m benchmarks            # full (~10 min on this 2-core machine)
    python -m benchmarks --quick    # smaller sizes (< 2 min)

B5 (the paper workload on a GPU) runs only where CUDA is available; elsewhere it says so.
Results, with the machine they were measured on, belong in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from benchmarks import (
    emission_absorption,
    extraction,
    plan_scaling,
    recorder_overhead,
    train_stacked,
    workflow_overhead,
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}\n"
    )
    train_stacked.main(["--steps", "20" if args.quick else "150", *([] if args.quick else ["--vmap"])])
    print()
    emission_absorption.main(["--quick", "--repeat", "1"] if args.quick else [])
    print()
    extraction.main(["--sizes", "2000,10000"] if args.quick else ["--sizes", "10000,50000"])
    print()
    workflow_overhead.main(["--quick"] if args.quick else [])
    print()
    plan_scaling.main(["--seeds", "50,100" if args.quick else "100,1000"])
    print()
    recorder_overhead.main(["--images", "5000", "--repeat", "1"] if args.quick else [])
    print()
    if torch.cuda.is_available():
        from benchmarks import gpu_paper

        gpu_paper.main(["--quick"] if args.quick else [])
    else:
        print("B5 GPU: no CUDA device on this machine; skipped (see BENCHMARKS.md for the numbers measured on one).")
    print(f"\nbenchmarks done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
