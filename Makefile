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

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/snakemake --cores $(CORES) --configfile presets/demo.yaml
	$(BIN)/snakemake --configfile presets/demo.yaml --report results/demo/report.html

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf results/demo .snakemake
