"""One writer per results folder (dnndist.results_lock): the lock is held while its process
lives, refused to others with the holder named, and free again once the holder dies, however."""

from __future__ import annotations

import fcntl
import json
import signal
import socket
import subprocess
import sys

import pytest

from dnndist.results_lock import LOCK_FILE, TOKEN_ENV, ResultsInUse, check_writer, lock_results_dir

from .conftest import env, hold_results_lock


@pytest.mark.slow
def test_the_lock_is_refused_while_held_and_free_after_a_kill_9(tmp_path):
    results = tmp_path / "results"
    holder = hold_results_lock(results)
    try:
        with pytest.raises(
            ResultsInUse, match=rf"results folder .* is in use by another workflow \(pid {holder.pid} on "
        ):
            lock_results_dir(results)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock_results_dir(results)  # the kernel released it with the process: nothing stale
    lock_results_dir(results / "x" / "..")  # the same folder again, in the process that holds it: no-op
    assert (results / LOCK_FILE).is_file()


def test_a_stage_writes_only_from_the_holders_own_processes_on_its_host(tmp_path):
    """check_writer: a folder nobody holds, or no dnndist results folder at all, passes; a holder
    on this host that is not an ancestor is refused by name; a holder on another host (a cluster
    node's job cannot see the head node's processes) passes."""
    results = tmp_path / "results"
    check_writer(results / "runs" / "a")  # no lock file anywhere above: not a results folder
    results.mkdir()
    (results / LOCK_FILE).write_text("")
    check_writer(results / "runs" / "a")  # a lock file nobody holds
    with open(results / LOCK_FILE, "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: a holder as far as flock goes
        for host, refused in (("node-7.cluster", False), (socket.gethostname(), True)):
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"pid": 1, "host": host, "since": "2026-12-06 09:00:00"}))
            fh.flush()
            if refused:  # pid 1 is nobody's job
                with pytest.raises(
                    ResultsInUse, match=r"is being written by a workflow \(pid 1 on .*only its own jobs"
                ):
                    check_writer(results / "runs" / "a")
            else:
                check_writer(results / "runs" / "a")


@pytest.mark.slow
def test_the_holders_child_processes_may_write(tmp_path):
    """A job Snakemake starts (a grandchild of the holder, through a shell) passes the check."""
    results = tmp_path / "results"
    code = (
        "import subprocess, sys; from dnndist.results_lock import lock_results_dir; lock_results_dir(sys.argv[1]); "
        "sys.exit(subprocess.run(['sh', '-c', sys.executable + ' -m dnndist runs --help > /dev/null && ' + "
        "sys.executable + ' -c \"import sys; from dnndist.results_lock import check_writer; "
        "check_writer(sys.argv[1])\" ' + sys.argv[1] + '/runs']).returncode)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(results)], capture_output=True, text=True, env=env())
    assert done.returncode == 0, done.stderr
    holder = hold_results_lock(results)  # while another process holds it, this test's process is refused
    try:
        with pytest.raises(ResultsInUse, match=rf"pid {holder.pid} on"):
            check_writer(results / "runs")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_job_with_the_holders_token_may_write_from_anywhere(tmp_path):
    """A SLURM job is no descendant of the Snakemake that holds the lock, but gets its environment
    (--export=ALL): the token there lets it write; the same process without it is refused."""
    results = tmp_path / "results"
    holder = hold_results_lock(results)
    try:
        token = json.loads((results / LOCK_FILE).read_text())["token"]
        code = "import sys; from dnndist.results_lock import check_writer; check_writer(sys.argv[1])"
        argv = [sys.executable, "-c", code, str(results / "runs")]
        with_token = subprocess.run(argv, capture_output=True, text=True, env={**env(), TOKEN_ENV: token})
        without = subprocess.run(argv, capture_output=True, text=True, env={**env(), TOKEN_ENV: "someone-else"})
    finally:
        holder.kill()
        holder.wait()
    assert with_token.returncode == 0, with_token.stderr
    assert without.returncode != 0 and "is being written by a workflow" in without.stderr
