"""B4: workflow overhead. `snakemake -n` on a completed results tree of 7 inits x 3 seeds x
6 checkpoints (target < 3 s), and (without --quick) the demo's wall time end to end and the
3-seed tree's statistics job (the demo's 7 inits x 3 seeds x 6 checkpoints, 5 epochs, trained
and extracted once; its one `stats_runs_base` job then forced 3 times; target < 20 s).

    python -m benchmarks.workflow_overhead [--quick]

The completed tree is made without training: every output of the plan is created empty
and marked complete with `snakemake --touch`, so the dry run sees what it would see after
a real run (the same DAG, parameters and code inputs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dnndist.preflight import claim_results_dir

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, check=True)


def completed_tree(work: Path) -> Path:
    cfg = {
        "results": str(work / "results"),
        "resources": str(work / "results" / "resources"),
        "data": {"source": "synthetic", "valid_size": 500},
        "seeds": [0, 1, 2],
        "train": {"epochs": 20, "checkpoints": [0, 1, 2, 5, 10, 20]},
    }
    cfg_path = work / "big.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    (work / "config.yaml").write_text((REPO / "config.yaml").read_text())
    claim_results_dir(work / "results")  # dnndist's folder: the outputs faked below may fill it
    summary = snakemake(work, "--summary", "--configfile", str(cfg_path)).stdout
    outputs = [line.split("\t")[0] for line in summary.splitlines()[1:] if line.strip()]
    for out in outputs:
        path = Path(out) if os.path.isabs(out) else work / out
        if path.suffix == ".zarr" or path.name == "checkpoints":
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    snakemake(work, "--touch", "--cores", "1", "--configfile", str(cfg_path))
    return cfg_path


TREE3 = {"seeds": [0, 1, 2], "train": {"epochs": 5, "checkpoints": [0, 1, 2, 3, 4, 5]}, "stats": {"claims_at": [1]}}


def job_seconds(log: str, rule: str) -> float:
    """How long the (one) job of ``rule`` ran, from Snakemake's log: its start and finish stamps (1 s)."""
    stamp, started, jobid = None, None, None
    for line in log.splitlines():
        if m := re.match(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line):
            stamp = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif re.match(rf"(local)?rule {rule}:", line):
            started = stamp
        elif started and jobid is None and (m := re.match(r"\s+jobid: (\d+)", line)):
            jobid = m.group(1)
        elif jobid and line.startswith(f"Finished jobid: {jobid} "):
            return (stamp - started).total_seconds()
    raise ValueError(f"no finished {rule} job in the log")


def tree_statistics(work: Path, repeat: int = 3) -> list[float]:
    """The 3-seed tree's statistics job, ``repeat`` times (seconds each)."""
    (work / "config.yaml").write_text((REPO / "config.yaml").read_text())
    shutil.copytree(REPO / "presets", work / "presets")
    (work / "tree3.yaml").write_text(yaml.safe_dump(TREE3))
    args = ("--cores", "2", "--configfile", "presets/demo.yaml", "tree3.yaml", "--until", "stats_runs_base")
    snakemake(work, *args)  # train, extract and the statistics once
    times = []
    for _ in range(repeat):
        out = snakemake(work, *args, "--forcerun", "stats_runs_base")
        times.append(job_seconds(out.stderr + out.stdout, "stats_runs_base"))
    return times


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="dry run only, no demo run")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        cfg = completed_tree(work)
        runs = len(list((work / "results" / "runs" / "base").glob("*/seed*")))
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = snakemake(work, "-n", "--configfile", str(cfg))
            times.append(time.perf_counter() - t0)
        assert "Nothing to be done" in out.stdout + out.stderr, out.stdout[-2000:]
        rows.append(
            {
                "what": f"snakemake -n, completed tree of {runs} runs x 6 checkpoints",
                "seconds": min(times),
                "target": 3.0,
            }
        )
    if not args.quick:
        with tempfile.TemporaryDirectory() as d:
            work = Path(d)
            (work / "config.yaml").write_text((REPO / "config.yaml").read_text())
            shutil.copytree(REPO / "presets", work / "presets")
            t0 = time.perf_counter()
            out = snakemake(work, "--cores", "2", "--configfile", "presets/demo.yaml")
            jobs = re.findall(r"(\d+) of (\d+) steps \(100%\) done", out.stdout + out.stderr)
            rows.append(
                {
                    "what": f"demo workflow end to end ({jobs[-1][1] if jobs else '?'} jobs, --cores 2)",
                    "seconds": time.perf_counter() - t0,
                    "target": None,
                }
            )
        with tempfile.TemporaryDirectory() as d:
            times = tree_statistics(Path(d))
            rows.append(
                {
                    "what": f"3-seed tree statistics job (median of {len(times)}: {', '.join(f'{t:.0f}' for t in times)})",
                    "seconds": sorted(times)[len(times) // 2],
                    "target": 20.0,
                }
            )
    print("B4 workflow overhead")
    print(f"{'what':<62} {'seconds':>8} {'target':>8}")
    for r in rows:
        target = f"< {r['target']:.0f} s" if r["target"] else "-"
        print(f"{r['what']:<62} {r['seconds']:>8.2f} {target:>8}")
    return rows


if __name__ == "__main__":
    main()
