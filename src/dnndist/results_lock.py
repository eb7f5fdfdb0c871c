"""One writer per results folder.

Snakemake's own lock covers its working directory's ``.snakemake``, not a results folder that
two working directories (two clones, two terminals in other folders) can name alike; two
workflows writing one folder corrupted it silently (each other's checkpoints, resume state and
tables). The Snakefile's ``onstart`` takes this lock before the first job: an exclusive
``flock`` on ``<results>/.dnndist-lock``, held by the Snakemake process until it exits. The
kernel drops it when the process ends, however it ends (kill -9 too), so it never goes stale;
jobs started by Snakemake do not inherit it (Python opens files close-on-exec), and Snakemake
runs ``onstart`` in its main process only (cluster jobs get ``--no-hooks``).

Every stage command checks it before it writes (``check_writer``, from ``dnndist.cli``): where the
folder's lock is held, only the holder's own jobs may write there; a stage command typed in another
terminal stops with one line. The holder's jobs are known by a token: the lock file holds a random
one and the holder puts it in its environment (``DNNDIST_RESULTS_TOKEN``), which local jobs inherit
and SLURM jobs receive (the executor submits with ``--export=ALL``). Without the token, a process
the holder started on its host (an ancestor, from /proc) passes too, and so does a process on
another host (a cluster node, which cannot see the holder's processes): the second workflow that
could collide with it is refused at its own start.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import IO

from dnndist import DnndistError

LOCK_FILE = ".dnndist-lock"
TOKEN_ENV = "DNNDIST_RESULTS_TOKEN"  # the holder's token, in its jobs' environment

_held: dict[str, IO[str]] = {}  # results folder -> its open lock file, for the life of the process


class ResultsInUse(DnndistError):
    """Another process writes this results folder."""


def lock_results_dir(results: str | Path) -> None:
    """Hold the results folder's writer lock until this process exits, or raise ResultsInUse
    (one line naming the holder) at once if another process holds it. Taking it again in the
    process that holds it does nothing."""
    path = Path(results).resolve()
    if str(path) in _held:
        return
    path.mkdir(parents=True, exist_ok=True)
    fh = open(path / LOCK_FILE, "a+")  # noqa: SIM115 - held open on purpose, until exit
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = _describe(fh.read())
        fh.close()
        raise ResultsInUse(
            f"results folder {results} is in use by another workflow ({holder}): "
            "wait for it to end, or give this one another `results:`"
        ) from None
    token = secrets.token_hex(16)
    fh.seek(0)
    fh.truncate()
    fh.write(
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "token": token,
            }
        )
    )
    fh.flush()
    _held[str(path)] = fh
    tokens = [t for t in os.environ.get(TOKEN_ENV, "").split(",") if t]
    os.environ[TOKEN_ENV] = ",".join([*tokens, token])  # the jobs started from here on inherit it


def check_writer(out: str | Path) -> None:
    """Raise ResultsInUse if ``out`` lies in a results folder whose writer lock another workflow
    holds (not this process, nor one of its ancestors on this host). Paths outside any dnndist
    results folder, and folders nobody holds, pass."""
    folder = _results_folder(Path(out).absolute())
    if folder is None or str(folder.resolve()) in _held:
        return
    with open(folder / LOCK_FILE) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return  # nobody holds it (released when fh closes)
        except BlockingIOError:
            text = fh.read()
    try:
        info = json.loads(text)
        pid, host, token = int(info["pid"]), str(info["host"]), str(info.get("token", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        pid, host, token = -1, socket.gethostname(), ""
    if token and token in os.environ.get(TOKEN_ENV, "").split(","):
        return  # a job of the holding workflow (local or on a cluster node)
    if host != socket.gethostname() or pid in _ancestors():
        return
    raise ResultsInUse(
        f"results folder {folder} is being written by a workflow ({_describe(text)}): "
        "only its own jobs may write there; wait for it to end"
    )


def _results_folder(path: Path) -> Path | None:
    """The nearest folder at or above ``path`` that holds a writer lock file."""
    for folder in (path, *path.parents):
        if (folder / LOCK_FILE).is_file():
            return folder
    return None


def _ancestors() -> set[int]:
    """This process and its ancestors (from /proc; where there is none, this process and its parent)."""
    pids, pid = {os.getpid()}, os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
