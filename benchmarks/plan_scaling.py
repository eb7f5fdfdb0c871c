"""B4b: how the plan grows with the experiment: `snakemake -n` for 7 inits x N seeds, stacked.

    python -m benchmarks.plan_scaling [--seeds 100,1000] [--per-run]

For each N, a config overlay (synthetic data, 1 epoch, stacked unless --per-run) in a fresh
temporary results folder, and one dry run: its wall time, its peak memory (the maximum resident
set, where /usr/bin/time can tell) and the jobs it plans. A plan that grows linearly keeps the time per run flat.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def plan(seeds: int, stacked: bool, work: Path) -> tuple[float, float, int]:
    """(seconds, peak MB, planned jobs) of one dry run."""
    config = work / f"plan-{seeds}.yaml"
    overlay = {
        "results": str(work / f"results-{seeds}"),
        "stacked": stacked,
        "seeds": list(range(seeds)),
        "data": {"source": "synthetic", "synthetic": {"train_size": 1000, "test_size": 200}},
        "train": {"epochs": 1, "checkpoints": [0, 1]},
    }
    config.write_text(yaml.safe_dump(overlay))
    cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--configfile", str(config)]
    timer = ["/usr/bin/time", "-f", "peak-kb %M"] if Path("/usr/bin/time").exists() else []
    t0 = time.perf_counter()
    out = subprocess.run([*timer, *cmd], cwd=REPO, capture_output=True, text=True, check=True)
    took = time.perf_counter() - t0
    peak = re.search(r"^peak-kb (\d+)$", out.stderr, re.M)
    total = re.search(r"^total\s+(\d+)$", out.stdout, re.M)
    return took, int(peak[1]) / 1024 if peak else float("nan"), int(total[1]) if total else 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="100,1000", help="comma-separated seed counts (7 inits each)")
    p.add_argument("--per-run", action="store_true", help="one training job per run instead of stack groups")
    args = p.parse_args(argv)
    print(f"B4b plan of 7 inits x N seeds ({'per run' if args.per_run else 'stacked'}), snakemake -n")
    print(f"{'seeds':>7} {'runs':>7} {'jobs':>7} {'seconds':>8} {'ms per run':>11} {'peak MB':>8}")
    with tempfile.TemporaryDirectory(prefix="dnndist-b4b-") as tmp:
        for n in (int(s) for s in args.seeds.split(",")):
            took, peak, jobs = plan(n, not args.per_run, Path(tmp))
            print(f"{n:>7} {7 * n:>7} {jobs:>7} {took:>8.1f} {1000 * took / (7 * n):>11.2f} {peak:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
