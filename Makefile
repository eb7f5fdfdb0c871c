# Quickstart:  make demo   (set up .venv, run the workflow on the embedded demo data)
#              make test   (set up .venv, run the test suite)
#              make check  (lint and the fast tests: the edit-test loop)
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

.PHONY: setup venv-python demo docs-assets test check test-cluster lint format bench gpu-wheels lease-prep lease lease-rehearsal upgrade-lock check-lock clean distclean

# The locked environment: requirements.lock is uv's universal lock (`uv pip compile --universal`,
# exact versions and sha256 hashes for CPython 3.11-3.13 on Linux, macOS and Windows). uv comes
# first (pip, at the lock's version and hashes), then `uv pip sync` installs exactly the lock,
# then dnndist itself (editable). --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE
# is set, every process would otherwise compile torch anew (~1 s a subprocess, 1.5x the suite).
# LOCKED=0 installs the newest releases that pyproject.toml's floor pins allow instead.
LOCKED ?= 1
UV := $(BIN)/uv
UV_REQUIREMENT = awk '/^uv==/{p=1} p{print} p&&!/\\$$/{exit}' requirements.lock
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(BIN)/python -m pip install -q --no-deps --require-hashes -r <($(UV_REQUIREMENT))
	if [ "$(LOCKED)" = 1 ]; then $(UV) pip sync -q --compile-bytecode --python $(BIN)/python --require-hashes requirements.lock; \
		else $(UV) pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev]'; fi
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	@touch $@

# PYTHON given on the command line or in the environment must be the venv's: otherwise the venv
# is rebuilt (one line says so). With PYTHON unset, whatever Python the venv has is kept.
venv-python:
ifneq ($(origin PYTHON),file)
	@if [ -e $(VENV) ]; then \
		want=$$($(PYTHON) -c 'import sys; print(sys.version.split()[0])') || exit 1; \
		have=$$($(BIN)/python -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo none); \
		if [ "$$want" != "$$have" ]; then \
			echo "make setup: $(VENV) has Python $$have, PYTHON=$(PYTHON) is $$want: rebuilding $(VENV)"; rm -rf $(VENV); fi; fi
endif

setup: venv-python
	@$(MAKE) --no-print-directory $(STAMP)

demo: setup
	$(BIN)/snakemake --cores $(CORES) --configfile presets/demo.yaml
	$(BIN)/snakemake --configfile presets/demo.yaml --report results/demo/report.html

# the README's sample analyze output and docs/report-screenshot.png, from the demo's results by the
# commands they show (tests/test_docs.py checks the sample against what analyze prints); the
# screenshot needs Debian's chromium (apt-get install chromium)
docs-assets: demo
	$(BIN)/python dev/docs_assets.py

# make test: the whole suite but the SLURM cluster tests (they skip, saying why), < 10 min on 2
# cores; make check: lint and the tests not marked slow, < 2 min, for the edit-test loop;
# make test-cluster: the SLURM tests, which install (apt-get) and start daemons, so need root.
# Tests run on every core (pytest-xdist), a test file's tests in one process (their module
# fixtures once); TEST_WORKERS=0 runs them in this process, one after another.
TEST_WORKERS ?= auto
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: setup
	$(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS)

check: lint
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow" $(PYTEST_ARGS)

test-cluster: setup
	DNNDIST_TEST_CLUSTER=1 $(BIN)/python -m pytest -q tests/test_slurm.py $(PYTEST_ARGS)

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

# requirements.lock: uv's universal resolution of pyproject.toml (+ [dev]) for every Python from
# 3.11 on. upgrade-lock: the newest versions, and environment.yml pinned to them. check-lock: the
# lock is what uv makes of pyproject.toml now (the lock's versions kept), and agrees with
# environment.yml (dev/lock.py check, also a test).
LOCK_COMPILE = $(UV) pip compile -q pyproject.toml --extra dev --universal --generate-hashes \
	--python-version 3.11 --custom-compile-command "make upgrade-lock"
upgrade-lock: setup
	$(LOCK_COMPILE) --upgrade -o requirements.lock
	$(BIN)/python dev/lock.py pin-environment

check-lock: setup
	cp requirements.lock $(VENV)/lock-check.txt && $(LOCK_COMPILE) -o $(VENV)/lock-check.txt
	@cmp -s requirements.lock $(VENV)/lock-check.txt || { diff requirements.lock $(VENV)/lock-check.txt | head -20; \
		echo "make check-lock: requirements.lock is not what uv makes of pyproject.toml: run make upgrade-lock"; exit 1; }
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

# the paper at full scale in one GPU lease (docs/lease.md): lease-prep here (wheels the box lacks
# and the data, into ignored folders the device tool carries), lease on the bare GPU box (its own
# python3, no venv), lease-rehearsal here: the same stages on a tiny CPU config, < 10 min
lease-prep: gpu-wheels
	$(BIN)/python -m dnndist.lease --prepare

lease:
	$(if $(OUT),,$(error make lease OUT=DIR))
	PYTHONPATH=src python3 -m dnndist.lease --out $(OUT)

lease-rehearsal: setup
	$(if $(OUT),,$(error make lease-rehearsal OUT=DIR))
	$(BIN)/python -m dnndist.lease --rehearsal --out $(OUT)

# clean keeps the venv; distclean removes it too
clean:
	rm -rf results/demo .snakemake

distclean: clean
	rm -rf $(VENV)
