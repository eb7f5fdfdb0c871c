"""The GPU lease (dnndist.lease): its rehearsal on the CPU end to end, its budget, its carry."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import pytest

from dnndist import lease

from .conftest import env, write_yaml


def run_lease(tmp_path, *args: str, **config) -> tuple[subprocess.CompletedProcess, dict]:
    over = tmp_path / "over.yaml"
    write_yaml(over, {"results": str(tmp_path / "results"), **config})
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "dnndist.lease", "--out", str(out), "--config", str(over), *args],
        cwd=lease.REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads((out / "lease.json").read_text()) if (out / "lease.json").exists() else {}
    return proc, report


@pytest.mark.slow
def test_rehearsal_writes_the_lease_files_within_its_limits(tmp_path):
    """`make lease-rehearsal`: every stage on the CPU, at most 8 files of at most 16 MiB back, the
    generated document among them, and lease.json saying what ran, how long, on what."""
    # the ReLU stage skipped, 3 of the 7 inits (a uniform, a normal, a constant one), 16 x 16 images and
    # one checkpoint fewer than the preset, to save time (79 s instead of 92 s on 2 cores)
    proc, report = run_lease(
        tmp_path,
        "--rehearsal",
        "--skip",
        "relu",
        inits=["kaiming_normal", "xavier_uniform", "ones"],
        train={"checkpoints": [0, 2, "best"]},
        stats={"claims_at": ["best"]},
        data={"synthetic": {"image_size": 16}},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = tmp_path / "out"
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= lease.MAX_FILES and all((out / f).stat().st_size <= lease.MAX_FILE_BYTES for f in files)
    assert {"lease.json", "reproduction.md", "tables.tar.gz", "figures.tar.gz", "logs.tar.gz"} <= set(files)
    assert set(report["files"]) == set(files)
    doc = (out / "reproduction.md").read_text()
    assert "C1a" in doc and "C6" in doc  # the claims table
    with tarfile.open(out / "tables.tar.gz") as tar:
        assert {"tables/claims.csv", "tables/claims.md"} <= set(tar.getnames())
    with tarfile.open(out / "figures.tar.gz") as tar:
        assert sum(n.endswith(".png") for n in tar.getnames()) >= 8
    stages = {s["name"]: s for s in report["stages"]}
    for name in ("setup", "data", "train", "extract", "stats", "docs"):
        assert stages[name]["status"] == "done", stages[name]
        assert stages[name]["seconds"] > 0 or name == "setup"
    assert stages["train"]["note"] == "eager (no CUDA)" and report["device"] == "cpu"
    assert stages["exp2"]["status"] == "done" and "emission/absorption: 64 / 64 inputs" in stages["exp2"]["note"]
    assert stages["relu"]["status"] == "skipped" and stages["relu"]["reason"] == "not asked for (--skip)"
    assert report["versions"]["torch"] and report["versions"]["snakemake"] and report["commit"]
    assert report["wall_s"] < 540


def test_a_budget_too_small_runs_nothing_and_says_why(tmp_path):
    proc, report = run_lease(tmp_path, "--rehearsal", "--budget", "25")
    assert proc.returncode == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["lease.json"]
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["setup"]["status"] == "done"
    assert stages["data"]["status"] == "skipped" and "would pass the budget: estimated" in stages["data"]["reason"]
    assert stages["train"]["reason"] == "needs data" and stages["relu"]["reason"] == "needs docs"
    assert len(report["skipped"]) == len(report["stages"]) - 1


def test_the_lease_preset_fits_its_budget_with_time_for_a_rerun():
    """The cost model (COSTS, docs/lease.md) puts the lease preset's stages up to the document
    inside the budget on an H100, and the budget plus a machine start leaves ~3 min of the 15."""
    job = lease.Lease(lease.LEASE, lease.REPO / "unused", 540.0, 16, lease.LEASE.configs)
    job.device = "cuda"
    planned = {s: lease.estimate(job, s) for s in ("setup", "data", "train", "extract", "stats", "docs")}
    assert sum(planned.values()) <= job.budget - lease.PACK_S, planned
    assert 90 + job.budget + 180 <= 15 * 60  # start, the run, a rerun's three minutes
    cfg = job.config()
    assert len(cfg["seeds"]) >= 10 and cfg["train"]["epochs"] == 50 and 50 in cfg["train"]["checkpoints"]


def test_prepare_carries_only_what_the_box_lacks(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("snakemake-9.27.1-py3-none-any.whl", "numpy-2.5.5-cp312-cp312-manylinux_2_28_x86_64.whl"):
        (wheels / name).write_bytes(b"x")
    (wheels / "zarr-3.1.6-py3-none-any.whl").write_bytes(b"x")
    data = tmp_path / "cifar.tar.gz"
    data.write_bytes(b"y" * 100)
    msg = lease.prepare(data, wheels, root=tmp_path)
    assert sorted(p.name for p in (tmp_path / "lease-wheels").iterdir()) == [
        "snakemake-9.27.1-py3-none-any.whl",
        "zarr-3.1.6-py3-none-any.whl",
    ]  # numpy: the box's own
    assert (tmp_path / "lease-data" / "cifar10-jpeg.tar.gz").read_bytes() == b"y" * 100
    assert len((tmp_path / "lease-data" / "commit.txt").read_text().strip()) == 40
    assert "MiB travel" in msg and "python3 -m dnndist.lease --out $OUT" in msg
    with pytest.raises(RuntimeError, match="no such file"):
        lease.prepare(tmp_path / "missing.tar.gz", wheels, root=tmp_path)
