"""B5: the whole paper workflow on one machine (data -> figures), timed per stage.

    python -m benchmarks.gpu_workflow --data ../shared/data/cifar10-jpeg.tar.gz [--seeds 3] [--epochs 50] [--cores 16]

Writes a config overlay (7 inits x N seeds x E epochs on the JPEG copy of CIFAR-10,
stacked training, the paper's split) into a fresh results directory and runs Snakemake
stage by stage (`--until`): the dataset, training, extraction, statistics and tables, then
the figures and the rest. Prints each stage's wall time and the total. Runs where
`python -m snakemake` and `python -m dnndist` import (on a bare, offline GPU machine see
benchmarks/gpu-box.sh, which installs the missing wheels from a local folder).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dnndist.lease import stage_rules, workflow_rules

REPO = Path(__file__).resolve().parents[1]
STAGES = [  # (stage, the prefixes of the rules it runs until; [] = everything left)
    ("data", ("dataset",)),
    ("train", ("train", "restore")),  # train, or train_stacked_<group> and restore with `stacked: true`
    ("extract", ("extract",)),
    ("statistics + tables", ("stats_", "table")),  # stats_runs_<variant>, stats_combine, stats_concat, table
    ("figures + rest", ()),
]


def overlay(data: str, seeds: int, epochs: int, results: Path) -> dict:
    return {
        "results": str(results),
        "data": {
            "source": "imagefolder",
            "imagefolder": {"path": str(Path(data).resolve()), "train": "train", "test": "test", "image_size": 32},
        },
        "seeds": list(range(seeds)),
        "stacked": True,
        "train": {"epochs": epochs, "checkpoints": sorted({0, 1, 2, 5, 10, 20, epochs} & set(range(epochs + 1)))},
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="CIFAR-10 as JPEGs in image-folder layout (a folder or .tar.gz)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--cores", default=str(len(os.sched_getaffinity(0))))
    p.add_argument("--results", default=None, help="results directory (default: a fresh temporary one)")
    args = p.parse_args(argv)
    results = Path(args.results or tempfile.mkdtemp(prefix="dnndist-b5-"))
    configfile = results.parent / f"{results.name}.yaml"
    configfile.write_text(yaml.safe_dump(overlay(args.data, args.seeds, args.epochs, results)))
    base = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        args.cores,
        "--set-threads",
        f"dataset={args.cores}",
        "--configfile",
        str(configfile),
        "--quiet",
        "rules",
    ]
    rules = workflow_rules(dict(os.environ), [str(configfile)])
    times: dict[str, float] = {}
    for stage, prefixes in STAGES:
        until = stage_rules(rules, prefixes)
        t0 = time.perf_counter()
        subprocess.run(base + (["--until", *until] if until else []), cwd=REPO, check=True)
        times[stage] = time.perf_counter() - t0
        print(f"B5 {stage:<22} {times[stage]:8.1f} s", flush=True)
    total = sum(times.values())
    print(
        f"B5 whole workflow, 7 inits x {args.seeds} seeds x {args.epochs} epochs: {total:.1f} s ({total / 60:.2f} min); "
        f"results in {results}"
    )
    return times


if __name__ == "__main__":
    main()
