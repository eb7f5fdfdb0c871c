# Quickstart:  make demo   (set up .venv, run the workflow on the embedded demo data)
#              make test   (set up .venv, run the test suite)
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.dnndist-installed
CORES ?= all
# glibc malloc returns memory to the OS on every large free, which costs 35-60 % of
# training throughput on CPU (../shared/perf-notes.md); these keep it.
export MALLOC_MMAP_THRESHOLD_ ?= 1073741824
export MALLOC_TRIM_THRESHOLD_ ?= 4294967296
export PATH := $(BIN):$(PATH)

.PHONY: setup demo test lint format bench gpu-wheels upgrade-lock check-lock clean

# the locked environment (requirements.lock: exact versions + hashes), then dnndist itself;
# LOCKED=0 installs from pyproject.toml's floor pins instead
LOCKED ?= 1
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if [ "$(LOCKED)" = 1 ]; then $(BIN)/python -m pip install -q -r requirements.lock && \
		$(BIN)/python -m pip install -q --no-deps -e .; else $(BIN)/python -m pip install -q -e '.[dev]'; fi
	@touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/snakemake --cores $(CORES) --configfile presets/demo.yaml
	$(BIN)/snakemake --configfile presets/demo.yaml --report results/demo/report.html

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# ruff (lint + format check) for Python, snakefmt for the workflow, snakemake --lint for rules
LINT_PY := src tests benchmarks dev setup.py
LINT_SMK := Snakefile workflow/rules/*.smk
lint: setup
	$(BIN)/ruff check $(LINT_PY)
	$(BIN)/ruff format --check $(LINT_PY)
	$(BIN)/snakefmt --check $(LINT_SMK)
	$(BIN)/snakemake --lint --configfile presets/demo.yaml

format: setup
	$(BIN)/ruff check --fix $(LINT_PY)
	$(BIN)/ruff format $(LINT_PY)
	$(BIN)/snakefmt $(LINT_SMK)

bench: setup
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# refresh requirements.lock (newest versions pip resolves for pyproject.toml) and pin
# environment.yml to them; check-lock: the three agree (also a test)
upgrade-lock: setup
	$(BIN)/python -m pip install -q --dry-run --ignore-installed --upgrade --report $(VENV)/lock-report.json -e '.[dev]'
	$(BIN)/python dev/lock.py write $(VENV)/lock-report.json

check-lock: setup
	$(BIN)/python dev/lock.py check

# wheels for benchmarks/gpu-box.sh: what a bare, offline GPU machine (Python 3.12) lacks.
# Pure-Python packages published only as sdists are built into wheels here first
# (GPU_SDISTS), then everything else is fetched as cp312 manylinux wheels.
GPU_SDISTS ?= connection_pool
gpu-wheels: setup
	mkdir -p gpu-wheels
	$(BIN)/python -m pip wheel -q --no-deps -w gpu-wheels $(GPU_SDISTS)
	$(BIN)/python -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
		--find-links gpu-wheels -d gpu-wheels -r benchmarks/gpu-requirements.txt

clean:
	rm -rf results/demo .snakemake
