"""B3: feature extraction vs a plain forward pass over the same inputs; peak RSS vs split size.

    python -m benchmarks.extraction [--sizes 10000,50000]

Each size runs in a fresh process (peak RSS is per process). The plain forward pass is
the same model over the same 'random' inputs, batch for batch, with no hooks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile


CHILD = r"""
import json, sys, time, torch
from pathlib import Path
from dnndist import data, extract, train, config as c
n, work = int(sys.argv[1]), Path(sys.argv[2])
torch.set_num_threads(2)
store = data.build_store({"source": "synthetic", "synthetic": {"train_size": 600, "test_size": 100, "image_size": 32, "seed": 0}}, work / f"d{n}.zarr")
cfg = c.validate({"results": str(work), "data": {"source": "synthetic", "valid_size": 100, "random_size": n,
                  "synthetic": {"train_size": 600, "test_size": 100}},
                  "inits": ["kaiming_normal"], "train": {"epochs": 1, "checkpoints": [1]},
                  "extract": {"splits": ["random"], "batch_size": 500, "sample_size": 128}})
s = c.extract_settings(cfg, c.Run("base", "kaiming_normal", 0))
s["checkpoint_epochs"] = [1]
run = work / f"run{n}"
train.train_run(c.run_settings(cfg, c.Run("base", "kaiming_normal", 0)), store, run, threads=2)
inputs = extract.load_inputs(s, store, torch.device("cpu"))
model = extract.build_model(s, data.store_info(store)).eval()
extract.load_weights(model, run / "checkpoints" / "epoch_0001.safetensors")
t0 = time.perf_counter()
with torch.no_grad():
    for idx in torch.arange(n).split(500):
        model(inputs.batch("random", idx)[0])
plain = n / (time.perf_counter() - t0)
t0 = time.perf_counter()
extract.extract_features(s, run / "checkpoints", store, work / f"f{n}.zarr")
ext = n / (time.perf_counter() - t0)
# VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak over fork + exec into ru_maxrss
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"n": n, "plain": plain, "extract": ext, "rss_mb": hwm / 1024}))
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="10000,50000")
    args = p.parse_args(argv)
    print(f"{'inputs':>8} {'plain img/s':>12} {'extract img/s':>14} {'ratio':>6} {'peak RSS':>10}")
    with tempfile.TemporaryDirectory() as work:
        for n in map(int, args.sizes.split(",")):
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), work], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{n:>8} {r['plain']:>12.0f} {r['extract']:>14.0f} {r['extract'] / r['plain']:>6.2f} {r['rss_mb']:>8.0f} MB")


if __name__ == "__main__":
    main()
