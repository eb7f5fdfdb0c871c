"""Shared fixtures: tiny synthetic configs, a real-format CIFAR-10 archive, a local HTTP server."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_JPEG = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
BIN = Path(sys.executable).parent


def pytest_configure(config) -> None:
    """Under pytest-xdist (make test), the cores shared between the workers: each worker's torch
    runs cores / workers threads in its own process (two workers' OpenMP pools of 2 threads each,
    spinning on 2 cores, slowed the suite). Subprocesses set their own threads, as the workflow does."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


def env() -> dict[str, str]:
    """Environment for subprocesses: this venv first on PATH (rules call `python -m dnndist`)."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


def cli_run(*argv: object) -> tuple[int, str]:
    """The stage CLI in this process (``dnndist ARGV``): (exit status, stderr). A subprocess
    proves nothing more for a message or an exit status, and costs a torch import (~3 s)."""
    from dnndist import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, err.getvalue()


def hold_results_lock(results: str | Path) -> subprocess.Popen:
    """Another process that holds ``results``' writer lock (as a running workflow's Snakemake
    does) until it is killed; returned once it holds it."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from dnndist.results_lock import lock_results_dir; lock_results_dir(sys.argv[1]); "
            "print('held', flush=True); time.sleep(600)",
            str(results),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env(),
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def tiny_config(results: Path, **sections) -> dict:
    """A config that trains in seconds: synthetic data, 2 inits, 1 epoch."""
    cfg = {
        "results": str(results),
        "resources": str(results / "resources"),
        "data": {
            "source": "synthetic",
            "valid_size": 100,
            "random_size": 32,
            "synthetic": {"train_size": 400, "test_size": 100},
        },
        "inits": ["kaiming_normal", "xavier_uniform"],
        "seeds": [0],
        "train": {"epochs": 1, "lr": 1.0e-3, "checkpoints": [0, 1], "eval_batch_size": 500},
        "extract": {"sample_size": 16, "histogram_bins": 20, "gradient_batches": 2, "gradient_batch_size": 16},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


EX = {"sample_size": 16, "batch_size": 70, "histogram_bins": 20, "gradient_batches": 2, "gradient_batch_size": 8}


def settings_for(root: Path, init: str = "kaiming_normal", **sections):
    """The extract settings of ``init``'s seed-0 run of a tiny two-init config under ``root``."""
    from dnndist import config as dcfg
    from dnndist.settings import ExtractSettings

    cfg = dcfg.validate(
        tiny_config(root, inits=["kaiming_normal", "xavier_uniform"], extract=EX, **sections), check_paths=False
    )
    return ExtractSettings.from_dict(dcfg.extract_settings(cfg, dcfg.Run("base", init, 0)))


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Trained once for the whole suite: two tiny runs (kaiming_normal and xavier_uniform, seed
    0, checkpoints 0 and 1) on a synthetic store, with their weights, features and gradients
    stores. (root, store, {init: (extract settings, run folder)}); tests must not change them."""
    from dnndist import data, extract, train
    from dnndist.settings import DataSettings

    root = tmp_path_factory.mktemp("tiny-runs")
    synthetic = {"train_size": 400, "test_size": 100, "image_size": 32, "seed": 0}
    store = data.build_store(
        DataSettings.from_dict({"source": "synthetic", "synthetic": synthetic}), root / "data.zarr"
    )
    out = {}
    for init in ("kaiming_normal", "xavier_uniform"):
        s = settings_for(root, init)
        run_dir = root / "runs" / "base" / init / "seed0"
        train.train_run(s, store, run_dir, threads=1)
        for kind, fn in extract.EXTRACTORS.items():
            fn(s, run_dir / "checkpoints", store, run_dir / f"{kind}.zarr")
        out[init] = (s, run_dir)
    return root, store, out


def write_yaml(path: Path, obj: dict) -> Path:
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the workflow of this repo in ``workdir`` (with config.yaml copied there)."""
    cfg = workdir / "config.yaml"
    if not cfg.exists():
        cfg.write_text((REPO / "config.yaml").read_text())
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def cifar_binary_archive(path: Path, n_per_batch: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write a small archive in the real CIFAR-10 binary format; return (train images, labels)."""
    rng = np.random.default_rng(seed)
    train_imgs, train_labels = [], []
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            labels = rng.integers(0, 10, n_per_batch, dtype=np.uint8)
            images = rng.integers(0, 256, (n_per_batch, 3, 32, 32), dtype=np.uint8)
            records = np.concatenate([labels[:, None], images.reshape(n_per_batch, -1)], axis=1)
            add(name, records.tobytes())
            if name.startswith("data"):
                train_imgs.append(images)
                train_labels.append(labels)
        add("batches.meta.txt", b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n")
    return np.concatenate(train_imgs), np.concatenate(train_labels).astype(np.int64)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def http_root(tmp_path):
    """Serve a directory on 127.0.0.1 (an ephemeral port); yields (directory, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def shared_jpeg():
    if not SHARED_JPEG.is_file():
        pytest.skip(f"shared CIFAR-10 JPEG copy not found at {SHARED_JPEG}")
    return SHARED_JPEG
