#!/usr/bin/env bash
# B5 on a bare, offline GPU machine (its own Python and torch; no snakemake, zarr, ...).
#
# 1. Where the package registries are reachable, fetch the missing wheels once
#    (make gpu-wheels; or: python -m pip download --only-binary=:all: --python-version 3.12
#     --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d gpu-wheels \
#     -r benchmarks/gpu-requirements.txt), and copy the repository with gpu-wheels/ to the box.
# 2. On the box, from the repository root:
#      bash benchmarks/gpu-box.sh --data /path/to/cifar10-jpeg.tar.gz [--seeds 3] [--epochs 50]
#    It installs the wheels into .gpu-site (no index, no dependencies resolved online, the
#    box's own torch kept), then runs the CUDA tests, B1's CUDA graph table, B5's training and
#    the whole workflow per stage.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -d .gpu-site ]; then
    "$PY" -m pip install -q --no-index --no-deps --target .gpu-site gpu-wheels/*.whl
fi
export PYTHONPATH="$PWD/src:$PWD/.gpu-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$PWD/.gpu-site/bin:$PATH"
# the CUDA-only tests first (skipped on a CPU): the captured step against eager, one run
# diverging inside the graph; the benchmarks run whatever they report
"$PY" -m pytest -q -p no:cacheprovider tests/test_stacked.py -k cuda -rs || echo "gpu-box: CUDA tests FAILED (above)"
"$PY" -m benchmarks.train_stacked --steps 300
"$PY" -m benchmarks.gpu_paper --runs 21
"$PY" -m benchmarks.gpu_paper --runs 70
"$PY" -m benchmarks.gpu_workflow "$@"
