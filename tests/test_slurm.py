"""The workflow on a real single-node SLURM cluster (tests/slurm_cluster.sh), through the
cluster profile workflow/profiles/slurm: a preempted job is resubmitted (--retries) and
resumes; a failing job fails the workflow with its SLURM log path in the message."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import BIN, REPO, env, snakemake, tiny_config, write_yaml

# Opt-in: the cluster's set-up installs packages (apt-get) and starts daemons as root, which a
# user's test command must not do unasked. make test-cluster and .ci/run ask.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("DNNDIST_TEST_CLUSTER") != "1",
        reason="SLURM cluster tests install and start daemons: run make test-cluster (DNNDIST_TEST_CLUSTER=1)",
    ),
]

# The CI node has no GPU and no accounting database (so no sacct): status by squeue,
# short status-check intervals, no account. Everything else comes from the profile.
SLURM_ARGS = [
    "--max-threads",  # the test cluster's node has this machine's cores; the statistics job asks for a CPU per run
    "2",
    "--profile",
    str(REPO / "workflow" / "profiles" / "slurm"),
    "--set-resources",
    "train:gpu=0",
    "extract:gpu=0",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-no-account",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    script = REPO / "tests" / "slurm_cluster.sh"
    proc = subprocess.run(["bash", str(script), "up", str(state)], capture_output=True, text=True, timeout=1200)
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip())  # not root, or SLURM missing and apt-get unavailable
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield state
    finally:
        subprocess.run(["bash", str(script), "down", str(state)], capture_output=True, timeout=60)


def squeue() -> list[tuple[str, str, str]]:
    """(job id, state, comment) of the queued and running jobs."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%k"], capture_output=True, text=True).stdout
    return [tuple(line.split("|", 2)) for line in out.splitlines() if line.count("|") == 2]


def preempt_first(rule: str, wildcard: str, stop: threading.Event, cancelled: list[str]) -> None:
    """scancel the first job of ``rule`` (for ``wildcard``) once it has run for a second,
    as a preemption or node failure would."""
    while not stop.is_set():
        for jobid, state, comment in squeue():
            if state == "RUNNING" and comment.startswith(f"rule_{rule}") and wildcard in comment:
                time.sleep(1.0)
                subprocess.run(["scancel", jobid], check=True)
                cancelled.append(jobid)
                return
        time.sleep(0.2)


def test_demo_on_slurm_survives_a_preempted_training_job(cluster, tmp_path):
    """The demo (restricted to 3 inits and one seed) through the SLURM profile, end to end; its first
    training job is cancelled mid-run and resubmitted by --retries (the profile's 1)."""
    work = tmp_path / "demo"
    (work / "presets").mkdir(parents=True)
    (work / "presets" / "demo.yaml").write_text((REPO / "presets" / "demo.yaml").read_text())
    # one job per run (the demo stacks its runs): a preempted run is resubmitted alone
    write_yaml(
        work / "three.yaml", {"inits": ["kaiming_normal", "xavier_uniform", "ones"], "seeds": [0], "stacked": False}
    )
    stop, cancelled = threading.Event(), []
    watcher = threading.Thread(target=preempt_first, args=("train", "kaiming_normal", stop, cancelled), daemon=True)
    watcher.start()
    try:
        proc = snakemake(work, *SLURM_ARGS, "--configfile", "presets/demo.yaml", "three.yaml", timeout=1500)
    finally:
        stop.set()
        watcher.join()
    out = proc.stdout + proc.stderr
    assert cancelled, "no training job was seen running under SLURM"
    assert f"SLURM-job '{cancelled[0]}' failed" in out and "CANCELLED" in out, out[-3000:]
    assert "Trying to restart job" in out, out[-3000:]
    results = work / "results" / "demo"
    assert (
        len(re.findall(r"Job \d+ has been submitted with SLURM jobid", out)) >= 2 * 3 + 3
    )  # train and extract at least
    assert "Finished jobid: 0 (Rule: all)" in out
    for name in ("fig1_training.pdf", "fig4_emission.png"):
        assert (results / "figures" / name).stat().st_size > 5000
    # the resubmitted run equals the same run trained outside SLURM, byte for byte
    run = "base/kaiming_normal/seed0"
    local = tmp_path / "local"
    subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "dnndist",
            "train",
            "--config",
            str(REPO / "config.yaml"),
            "--config",
            str(work / "presets" / "demo.yaml"),
            "--config",
            str(work / "three.yaml"),
            "--run",
            run,
            "--data",
            str(results / "data" / "dataset.zarr"),
            "--out",
            str(local),
            "--threads",
            "2",
            "--no-progress",
        ],
        check=True,
        env=env(),
        cwd=work,
        capture_output=True,
    )
    for ckpt in sorted((results / "runs" / run / "checkpoints").glob("epoch_*.safetensors")):
        assert ckpt.read_bytes() == (local / "checkpoints" / ckpt.name).read_bytes(), ckpt.name
    assert (results / "runs" / run / "metrics.csv").read_bytes() == (local / "metrics.csv").read_bytes()


def test_failed_slurm_job_fails_the_workflow_with_its_log(cluster, tmp_path):
    """A job that fails on the cluster (here: training asks for CUDA on a CPU node) fails
    the workflow; the message names the SLURM log, which holds the job's one-line error."""
    cfg = tiny_config(
        tmp_path / "results", inits=["xavier_uniform"], overrides={"xavier_uniform": {"train": {"device": "cuda"}}}
    )
    write_yaml(tmp_path / "tiny.yaml", cfg)
    target = str(tmp_path / "results" / "runs" / "base" / "xavier_uniform" / "seed0" / "summary.json")
    proc = snakemake(
        tmp_path,
        target,
        *SLURM_ARGS,
        "--retries",
        "0",
        "--configfile",
        str(tmp_path / "tiny.yaml"),
        check=False,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error in rule train" in out, out[-3000:]
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", out), out[-3000:]
    logs = {Path(p) for p in re.findall(r"(/\S+/slurm_logs/rule_train/\S+\.log)", out)}
    assert len(logs) == 1 and all(p.is_file() for p in logs), out[-3000:]  # kept: the job failed
    assert "returned non-zero exit status 2" in logs.pop().read_text()
    rule_log = tmp_path / "results" / "logs" / "train" / "base" / "xavier_uniform" / "seed0.log"
    assert "train.device is 'cuda' but CUDA is not available" in rule_log.read_text()
    assert not Path(target).exists()
