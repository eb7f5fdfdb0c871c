"""B3: feature extraction vs a plain forward pass over the same inputs; peak RSS vs split size.

    python -m benchmarks.extraction [--sizes 10000,50000] [--repeat 1]

Each size runs in a fresh process (peak RSS is per process). The plain forward pass is
the same model over the same 'random' inputs, batch for batch, with no hooks, in the memory
format extraction runs it in (training's: channels_last by default); the column 'contiguous'
is the plain pass of the model in the default contiguous format, the baseline of B3 before
extraction ran channels_last. With
``--repeat N`` the process times plain pass and extraction N times, alternately, and
reports the best of each (a shared machine's noise only ever slows a run down) and the
median ratio of the pairs run side by side; the first extraction of a process also pays
one-time costs (imports, the statistics kernel's build when not cached), which the best of
N > 1 leaves out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time, torch
from pathlib import Path
from dnndist import data, extract, train, config as c
from dnndist.settings import DataSettings, ExtractSettings, RunSettings
n, work = int(sys.argv[1]), Path(sys.argv[2])
torch.set_num_threads(2)
store = data.build_store(DataSettings.from_dict({"source": "synthetic", "synthetic": {"train_size": 600, "test_size": 100, "image_size": 32, "seed": 0}}), work / f"d{n}.zarr")
cfg = c.validate({"results": str(work / f"results{n}"), "data": {"source": "synthetic", "valid_size": 100, "random_size": n,
                  "synthetic": {"train_size": 600, "test_size": 100}},
                  "inits": ["kaiming_normal"], "train": {"epochs": 1, "checkpoints": [1]},
                  "extract": {"splits": ["random"], "batch_size": 500, "sample_size": 128}})
s = ExtractSettings.from_dict({**c.extract_settings(cfg, c.Run("base", "kaiming_normal", 0)), "checkpoint_epochs": [1]})
run = work / f"run{n}"
train.train_run(RunSettings.from_dict(c.run_settings(cfg, c.Run("base", "kaiming_normal", 0))), store, run, threads=2)
inputs = extract.load_inputs(s, store, torch.device("cpu"))
model = extract.build_model(s, data.store_info(store)).eval()
extract.load_weights(model, run / "checkpoints" / "epoch_0001.safetensors")
fmt = train.memory_format(s.train)
plain, ext, contiguous = [], [], []

def forward(m):
    t0 = time.perf_counter()
    with torch.no_grad():
        for idx in torch.arange(n).split(500):
            m(inputs.batch("random", idx)[0])
    return n / (time.perf_counter() - t0)

for r in range(int(sys.argv[3])):
    contiguous.append(forward(model.to(memory_format=torch.contiguous_format)))
    plain.append(forward(model.to(memory_format=fmt)))
    t0 = time.perf_counter()
    extract.extract_features(s, run / "checkpoints", store, work / f"f{n}-{r}.zarr")
    ext.append(n / (time.perf_counter() - t0))
# VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak over fork + exec into ru_maxrss
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"n": n, "plain": plain, "extract": ext, "contiguous": contiguous, "rss_mb": hwm / 1024, "layout": str(fmt)}))
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="10000,50000")
    p.add_argument("--repeat", type=int, default=1, help="best of N alternating runs per size (default 1)")
    args = p.parse_args(argv)
    if args.repeat > 1:
        print(f"best of {args.repeat} alternating runs; 'pairs': median ratio of the runs side by side")
    print(
        f"{'inputs':>8} {'plain img/s':>12} {'extract img/s':>14} {'ratio':>6}"
        + (f" {'pairs':>6}" if args.repeat > 1 else "")
        + f" {'contiguous img/s':>17} {'ratio':>6} {'peak RSS':>10}"
    )
    with tempfile.TemporaryDirectory() as work:
        for n in map(int, args.sizes.split(",")):
            cmd = [sys.executable, "-c", CHILD, str(n), work, str(args.repeat)]
            out = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"B3 child for {n} inputs failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            plain, ext, contiguous = max(r["plain"]), max(r["extract"]), max(r["contiguous"])
            pairs = (
                f" {statistics.median(e / p for p, e in zip(r['plain'], r['extract'])):>6.2f}"
                if args.repeat > 1
                else ""
            )
            print(
                f"{n:>8} {plain:>12.0f} {ext:>14.0f} {ext / plain:>6.2f}{pairs}"
                f" {contiguous:>17.0f} {ext / contiguous:>6.2f} {r['rss_mb']:>8.0f} MB  ({r['layout']})"
            )


if __name__ == "__main__":
    main()
