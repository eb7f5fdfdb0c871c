"""The paper at full scale in one GPU lease, and its rehearsal on a CPU.

    python -m dnndist.lease --out DIR [--budget 540]        # make lease OUT=DIR, on the GPU box
    python -m dnndist.lease --rehearsal --out DIR            # make lease-rehearsal OUT=DIR, here

One command does the whole reproduction on a bare, offline GPU machine inside a wall-clock
budget, stage by stage, and writes at most 8 files to ``DIR`` (``OUTPUTS``): the generated
``reproduction.md``, the tables (CSV + MD) and every figure (PNG) as tarballs, three key figures,
the stages' logs, and ``lease.json`` (per-stage times, device, versions, what was skipped and why).

Stages (``plan``): set-up (the carried wheels installed where the box lacks them) -> data ->
training -> extraction -> statistics and tables -> figures and the document; then, while time
is left, experiment 2 (emission/absorption of a ResNet-18 on the paper's 50,000 inputs) and the
ReLU-gain convention. A stage runs only if its estimate fits the time left (the estimate comes
from the config and the costs in ``COSTS``, measured on an H100 and on this project's CPUs:
docs/lease.md), and is stopped at the deadline; a stage that fails or is cut leaves the others'
outputs, and ``lease.json`` gives its one-line reason. The outputs are packed after the
document's stage and again at the end, so an optional stage cut short loses nothing.

The rehearsal runs the same stages with ``presets/lease-rehearsal.yaml`` (synthetic data, tiny)
and a small experiment 2 on images exported from it; ``tests/test_lease.py`` runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dnndist.lease_costs import COSTS, estimate  # noqa: E402,F401  (lease.COSTS, lease.estimate)

REPO = Path(__file__).resolve().parents[2]
MAX_FILES, MAX_FILE_BYTES = 8, 16 << 20  # what comes back from a lease
KEY_FIGURES = ("fig1_training.png", "fig2_weights.png", "fig4_emission.png")
OUTPUTS = ("lease.json", "reproduction.md", "tables.tar.gz", "figures.tar.gz", "logs.tar.gz", *KEY_FIGURES)
BOX_LACKS = ("snakemake", "zarr", "dask", "jsonschema")  # what a bare GPU box cannot import
PACK_S = 20.0  # kept back from the budget for packing the outputs


@dataclasses.dataclass(frozen=True)
class Profile:
    """What a lease (or its rehearsal) runs."""

    name: str
    configs: tuple[str, ...]  # config overlays, after config.yaml
    exp2_inputs: int  # experiment 2's emission/absorption inputs (0: none)
    exp2_model: str
    relu: bool  # the ReLU-gain convention, if time is left
    wheels: str  # carried wheels for the set-up (a folder; absent: nothing to install)


LEASE = Profile("lease", ("presets/lease.yaml",), 50_000, "torchvision:resnet18", True, "lease-wheels")
REHEARSAL = Profile("rehearsal", ("presets/lease-rehearsal.yaml",), 64, "paper_cnn", True, "lease-wheels")


# stage -> the prefixes of the rules it runs until ([]: everything the document needs)
WORKFLOW_STAGES: dict[str, tuple[str, ...]] = {
    "data": ("dataset",),
    "train": ("train", "restore"),  # train, or train_stacked_<group> and restore with `stacked: true`
    "extract": ("extract",),
    "stats": ("stats_", "table"),
    "docs": ("docs",),
}


@dataclasses.dataclass
class StageResult:
    name: str
    status: str  # done | failed | cut | skipped
    seconds: float = 0.0
    estimate_s: float | None = None
    reason: str = ""
    note: str = ""


@dataclasses.dataclass
class Lease:
    """One lease in progress: the profile, the deadline, the environment of its commands."""

    profile: Profile
    out: Path
    budget: float
    cores: int
    configs: tuple[str, ...] = ()  # the profile's overlays, and any given after them
    skip: frozenset[str] = frozenset()  # optional stages not to run (exp2, relu)
    t0: float = dataclasses.field(default_factory=time.monotonic)
    env: dict[str, str] = dataclasses.field(default_factory=lambda: dict(os.environ))
    logs: Path = dataclasses.field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dnndist-lease-logs-")))
    stages: list[StageResult] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str = "cpu"
    rules: list[str] | None = None  # the workflow's rule names under the configs

    @property
    def left(self) -> float:
        return self.budget - PACK_S - (time.monotonic() - self.t0)

    def __post_init__(self) -> None:
        self._config = read_config(self.configs)

    def config(self) -> dict[str, Any]:
        """config.yaml with the overlays merged (the keys the estimates read), read once."""
        return self._config

    @property
    def results(self) -> Path:
        return REPO / self.config()["results"]

    def done(self, name: str) -> bool:
        return any(s.name == name and s.status == "done" for s in self.stages)


def read_config(configs: Sequence[str]) -> dict[str, Any]:
    import yaml

    from dnndist.config import deep_merge

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    for c in configs:
        cfg = deep_merge(cfg, yaml.safe_load((REPO / c).read_text()) or {})
    return cfg


# ------------------------------------------------------------------------------------ commands
def run(lease: Lease, name: str, cmd: Sequence[str], timeout: float) -> tuple[int | None, str]:
    """Run ``cmd`` in its own process group with its output in the stage's log; at ``timeout``
    the group is stopped (SIGTERM, then SIGKILL). (returncode or None when cut, the log's last
    line that says something)."""
    log = lease.logs / f"{name}.log"
    with log.open("ab") as fh:
        fh.write(f"$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(
            list(cmd), cwd=REPO, env=lease.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc: int | None = proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            _stop(proc)
            rc = None
    return rc, last_line(log)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def last_line(log: Path, pattern: str | None = None) -> str:
    """The last line of a log that is not blank (matching ``pattern`` if given), at most 300 characters."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    if pattern:
        lines = [ln for ln in lines if re.search(pattern, ln)]
    return lines[-1][:300] if lines else ""


def snakemake(lease: Lease, extra: Sequence[str] = ()) -> list[str]:
    """The workflow's command: ``extra`` (targets, --until) first, as --quiet and --configfile
    take every word after them."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        *extra,
        "--cores",
        str(lease.cores),
        "--set-threads",
        f"dataset={lease.cores}",
        "--quiet",
        "rules",
        "--configfile",
        *lease.configs,
    ]


def workflow_rules(env: dict[str, str], configs: Sequence[str]) -> list[str]:
    """The workflow's rule names under these configs (Snakemake's own list: with ``stacked: true``
    training is one rule per stack group of the runs to train, named after it)."""
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules", "--configfile", *configs],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def stage_rules(rules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """The rules a stage runs until: those named with one of its prefixes (an error if none is)."""
    chosen = [r for r in rules if r.startswith(prefixes)]
    if prefixes and not chosen:
        raise RuntimeError(f"no rule starts with {prefixes} (rules: {', '.join(rules)})")
    return chosen


# ------------------------------------------------------------------------------------ stages
def setup(lease: Lease) -> str:
    """Make snakemake, zarr, dask and jsonschema importable: from the carried wheels (installed with
    no index and no dependencies into .lease-site, the box's own torch and numpy kept) where the
    Python lacks them. The jobs' ``python`` is this interpreter (a shim first on PATH)."""
    shim = lease.logs / "bin"
    shim.mkdir(exist_ok=True)
    script = shim / "python"  # a script, not a link: a venv's python finds its venv by its own path
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    script.chmod(0o755)
    site = REPO / ".lease-site"
    paths = [str(REPO / "src"), str(site)]
    lease.env["PYTHONPATH"] = os.pathsep.join([*paths, lease.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    lease.env["PATH"] = os.pathsep.join([str(shim), str(site / "bin"), lease.env.get("PATH", "")])
    lease.env["PYTHONUNBUFFERED"] = "1"
    if str(site) not in sys.path:  # this process too (the rehearsal's image export reads zarr)
        sys.path.append(str(site))
    missing = _missing(lease.env)
    if not missing:
        return "nothing to install: " + ", ".join(BOX_LACKS) + " import"
    wheels = sorted((REPO / lease.profile.wheels).glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"cannot import {', '.join(missing)} and no wheels in {lease.profile.wheels}/")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade"]
    rc, line = run(lease, "setup", [*cmd, "--target", str(site), *map(str, wheels)], lease.left)
    if rc != 0 or _missing(lease.env):
        raise RuntimeError(f"installing {len(wheels)} wheels failed: {line}")
    return f"installed {len(wheels)} wheels into .lease-site ({', '.join(missing)} were missing)"


def _missing(env: dict[str, str]) -> list[str]:
    code = "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))"
    out = subprocess.run([sys.executable, "-c", code, *BOX_LACKS], env=env, capture_output=True, text=True)
    return out.stdout.split()


def probe(lease: Lease) -> None:
    """The device and the versions into ``lease.info`` (read by a child: the set-up's paths)."""
    code = (
        "import json, platform, torch, numpy, sys\n"
        "v = {'python': platform.python_version(), 'torch': torch.__version__, 'numpy': numpy.__version__,\n"
        "     'cuda': torch.version.cuda, 'device': 'cuda' if torch.cuda.is_available() else 'cpu',\n"
        "     'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}\n"
        "for m in ('snakemake', 'zarr', 'xarray', 'scipy', 'pandas', 'dask'):\n"
        "    try:\n"
        "        v[m] = __import__(m).__version__\n"
        "    except Exception as exc:\n"
        "        v[m] = f'unavailable ({type(exc).__name__})'\n"
        "print(json.dumps(v))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=lease.env, capture_output=True, text=True, cwd=REPO)
    versions = json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr.strip()[-300:]}
    lease.device = versions.get("device", "cpu")
    lease.info["versions"] = versions
    lease.info["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    lease.info["commit"] = _commit()


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        stamp = REPO / "lease-data" / "commit.txt"  # written by make lease-prep: no .git travels
        return stamp.read_text().strip() if stamp.exists() else "unknown"


def workflow_stage(stage: str) -> Callable[[Lease], str]:
    def go(lease: Lease) -> str:
        if lease.rules is None:  # Snakemake's rule list, once (after the set-up: it needs snakemake)
            lease.rules = workflow_rules(lease.env, lease.configs)
        until = stage_rules(lease.rules, WORKFLOW_STAGES[stage])
        target = ["docs"] if stage == "docs" else ["--until", *until]
        rc, line = run(lease, stage, snakemake(lease, target), lease.left)
        if rc is None:
            raise TimeoutError(f"cut at the deadline: {line}")
        if rc != 0:
            raise RuntimeError(f"snakemake exited {rc}: {_job_error(lease, stage) or line}")
        if stage == "train":
            fallback = _grep_logs(lease.results / "logs", "CUDA graph capture failed")
            return fallback or ("CUDA graphs" if lease.device == "cuda" else "eager (no CUDA)")
        return ""

    return go


def _job_error(lease: Lease, stage: str) -> str:
    """The last error line a failed job printed (Snakemake shows failed jobs' logs in the stage's)."""
    return last_line(lease.logs / f"{stage}.log", r"^(\w+Error|Error|dnndist[^:]*: )")


def _grep_logs(folder: Path, needle: str) -> str:
    for log in sorted(folder.rglob("*.log")) if folder.exists() else []:
        for line in log.read_text(errors="replace").splitlines():
            if needle in line:
                return f"{log.name}: {line.strip()[:250]}"
    return ""


@dataclasses.dataclass
class Background:
    """Experiment 2, running beside the workflow's stages (the paper CNN's training is launch-bound:
    the GPU has room): its process, start time, estimate and log."""

    proc: subprocess.Popen
    t0: float
    estimate_s: float
    log: Path


def start_experiment2(lease: Lease) -> Background | StageResult:
    """Emission/absorption of a ResNet-18 over the profile's inputs (``dnndist analyze``), started in
    the background at low CPU priority; a StageResult instead when it cannot start."""
    n = lease.profile.exp2_inputs
    est = estimate(lease, "exp2")
    if est > lease.left:
        reason = f"would pass the budget: estimated {est:.0f} s, {max(lease.left, 0):.0f} s left"
        return StageResult("exp2", "skipped", estimate_s=round(est, 1), reason=reason)
    try:
        images, split = _exp2_images(lease)
    except (OSError, KeyError, ValueError) as exc:
        return StageResult("exp2", "failed", reason=f"no inputs: {_one_line(exc)}")
    cmd = [sys.executable, "-m", "dnndist", "analyze", "--model", lease.profile.exp2_model, "--num-classes", "10"]
    cmd += ["--inputs", str(images), "--per-class", str(math.ceil(n / 10)), "--max-inputs", str(n)]
    cmd += ["--gradient-inputs", str(n), "--gradient-batch-size", "256" if lease.device == "cuda" else "32"]
    cmd += ["--gradient-split", split, "--device", lease.device, "--no-figures"]
    log = lease.logs / "exp2.log"
    lease.info["exp2"] = {"inputs": n, "model": lease.profile.exp2_model, "images": str(images)}
    with log.open("ab") as fh:
        fh.write(f"$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(
            ["nice", "-n", "10", *cmd],
            cwd=REPO,
            env=lease.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Background(proc, time.monotonic(), est, log)


def finish_experiment2(lease: Lease, bg: Background) -> StageResult:
    """Wait for experiment 2 until the deadline (then stop it); its last progress line is the note."""
    try:
        rc: int | None = bg.proc.wait(timeout=max(lease.left, 1.0))
    except subprocess.TimeoutExpired:
        _stop(bg.proc)
        rc = None
    took, est = round(time.monotonic() - bg.t0, 1), round(bg.estimate_s, 1)
    progress = last_line(bg.log, r"emission/absorption: \d+ / \d+ inputs")
    lease.info["exp2"]["progress"] = progress
    if rc is None:
        return StageResult("exp2", "cut", took, est, f"cut at the deadline; {progress or 'no progress line yet'}")
    if rc != 0:
        return StageResult("exp2", "failed", took, est, f"dnndist analyze exited {rc}: {last_line(bg.log)}")
    return StageResult("exp2", "done", took, est, note=progress)


def _exp2_images(lease: Lease) -> tuple[Path, str]:
    """The images of experiment 2 and the split its gradient pass takes: the config's image folder
    and its training split (the paper's 50,000 inputs), else the test images of the workflow's
    synthetic data store exported as PNGs (the rehearsal)."""
    cfg = lease.config()
    if cfg["data"]["source"] == "imagefolder":
        return REPO / cfg["data"]["imagefolder"]["path"], cfg["data"]["imagefolder"]["train"]
    return export_images(lease.results / "data" / "dataset.zarr", lease.logs / "exp2-images", "test", 20), "test"


def export_images(store: Path, folder: Path, split: str, per_class: int) -> Path:
    """The first ``per_class`` images per class of a data store's split as PNGs, ``<split>/<class>/<i>.png``."""
    import numpy as np
    import zarr
    from PIL import Image

    root = zarr.open_group(str(store), mode="r")
    images, labels = root[split]["images"], np.asarray(root[split]["labels"][:])
    for cls in np.unique(labels):
        dest = folder / split / f"class{int(cls)}"
        dest.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == cls)[:per_class]:
            Image.fromarray(np.asarray(images[int(i)]).transpose(1, 2, 0).squeeze()).save(dest / f"{i}.png")
    return folder


def relu_gain(lease: Lease) -> str:
    """The ReLU-gain convention beside PyTorch's: the same workflow with ``grid: init.gain: [torch,
    relu]`` (the torch variant is the runs already made), up to the document."""
    overlay = lease.logs / "relu.yaml"
    overlay.write_text("grid:\n  init.gain: [torch, relu]\n")
    cmd = snakemake(lease, ["docs"]) + [str(overlay)]
    rc, line = run(lease, "relu", cmd, lease.left)
    if rc is None:
        raise TimeoutError(f"cut at the deadline: {line}")
    if rc != 0:
        raise RuntimeError(f"snakemake exited {rc}: {line}")
    return "reproduction.md and the tables now hold both gain conventions"


# ------------------------------------------------------------------------------------ estimates


# ------------------------------------------------------------------------------------ outputs
def pack(lease: Lease) -> list[str]:
    """Write the outputs there are (at most ``MAX_FILES``, each under ``MAX_FILE_BYTES``) to ``out``."""
    out, results = lease.out, lease.results
    out.mkdir(parents=True, exist_ok=True)
    written = []
    doc = results / "docs" / "reproduction.md"
    if doc.exists():
        shutil.copyfile(doc, out / "reproduction.md")
        written.append("reproduction.md")
    tables = sorted((results / "tables").glob("*.csv")) + sorted((results / "tables").glob("*.md"))
    if tables:
        _tar(out / "tables.tar.gz", tables, results)
        written.append("tables.tar.gz")
    figures = sorted((results / "figures").glob("*.png"))
    if figures:
        _tar(out / "figures.tar.gz", figures, results)
        written.append("figures.tar.gz")
    for name in KEY_FIGURES:
        if (results / "figures" / name).exists():
            shutil.copyfile(results / "figures" / name, out / name)
            written.append(name)
    logs = sorted(lease.logs.glob("*.log")) + sorted((results / "logs").rglob("*.log"))
    if logs:
        _tar(out / "logs.tar.gz", logs, None)
        written.append("logs.tar.gz")
    for name in written:
        if (out / name).stat().st_size > MAX_FILE_BYTES:
            (out / name).unlink()
            lease.info.setdefault("dropped", []).append(f"{name}: over {MAX_FILE_BYTES >> 20} MiB")
    return [n for n in written if (out / n).exists()]


def _tar(path: Path, files: list[Path], root: Path | None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for f in files:
            tar.add(f, arcname=str(f.relative_to(root)) if root else f"{f.parent.name}/{f.name}")
    tmp.replace(path)


def write_report(lease: Lease, written: list[str]) -> None:
    report = {
        "profile": lease.profile.name,
        "budget_s": lease.budget,
        "wall_s": round(time.monotonic() - lease.t0, 1),
        "device": lease.device,
        **lease.info,
        "stages": [dataclasses.asdict(s) for s in lease.stages],
        "skipped": [f"{s.name}: {s.reason}" for s in lease.stages if s.status != "done"],
        "files": sorted({*written, "lease.json"}),
    }
    tmp = lease.out / "lease.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(lease.out / "lease.json")


# ------------------------------------------------------------------------------------ the plan
def plan(profile: Profile) -> list[tuple[str, Callable[[Lease], str], tuple[str, ...]]]:
    """(stage, what it runs, the stages it needs), in order."""
    stages: list[tuple[str, Callable[[Lease], str], tuple[str, ...]]] = [("setup", setup, ())]
    needs: tuple[str, ...] = ("setup",)
    for stage in WORKFLOW_STAGES:
        stages.append((stage, workflow_stage(stage), needs))
        needs = (stage,)
    if profile.relu:
        stages.append(("relu", relu_gain, ("docs",)))
    return stages


def execute(lease: Lease) -> None:
    """The plan's stages in order, experiment 2 beside them from the data stage on; the outputs
    packed after the document and at the end, whatever happened."""
    written: list[str] = []
    bg: Background | None = None
    try:
        for name, go, needs in plan(lease.profile):
            if name == "data":
                probe(lease)
            result = _stage(lease, name, go, needs)
            lease.stages.append(result)
            print(
                f"lease: {name:<7} {result.status:<7} {result.seconds:7.1f} s  {result.reason or result.note}",
                flush=True,
            )
            if name == "data" and result.status == "done" and lease.profile.exp2_inputs and "exp2" not in lease.skip:
                started = start_experiment2(lease)
                if isinstance(started, StageResult):
                    lease.stages.append(started)
                else:
                    bg = started
            if name == "docs":
                written = pack(lease)
                write_report(lease, written)
        if bg is not None:
            result = finish_experiment2(lease, bg)
            lease.stages.append(result)
            bg = None
            print(
                f"lease: exp2    {result.status:<7} {result.seconds:7.1f} s  {result.reason or result.note}", flush=True
            )
    finally:
        if bg is not None:  # interrupted: stop it
            _stop(bg.proc)
        written = pack(lease)
        write_report(lease, written)


def _stage(lease: Lease, name: str, go: Callable[[Lease], str], needs: tuple[str, ...]) -> StageResult:
    if name in lease.skip:
        return StageResult(name, "skipped", reason="not asked for (--skip)")
    missing = [n for n in needs if not lease.done(n)]
    if missing:
        return StageResult(name, "skipped", reason=f"needs {', '.join(missing)}")
    est = None if name == "setup" else estimate(lease, name)
    if est is not None and est > lease.left:
        reason = f"would pass the budget: estimated {est:.0f} s, {max(lease.left, 0):.0f} s left"
        return StageResult(name, "skipped", estimate_s=round(est, 1), reason=reason)
    t = time.monotonic()
    try:
        note, status, reason = go(lease), "done", ""
    except TimeoutError as exc:
        note, status, reason = "", "cut", str(exc)
    except (RuntimeError, OSError, ValueError, KeyError, subprocess.CalledProcessError) as exc:
        note, status, reason = "", "failed", _one_line(exc)
    took = round(time.monotonic() - t, 1)
    return StageResult(name, status, took, None if est is None else round(est, 1), reason, note)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# ------------------------------------------------------------------------------------ preparing
CARRY_LIMIT = 64 << 20  # the working tree that travels, carried folders included


def prepare(data: Path, wheels_from: Path, profile: Profile = LEASE, root: Path = REPO) -> str:
    """Here, before a lease: the wheels the box lacks (``wheels_from``, made by ``make gpu-wheels``,
    less what ``benchmarks/gpu-box-packages.txt`` says the box holds) into ``lease-wheels/``, the
    data into ``lease-data/``, the commit into ``lease-data/commit.txt`` (no .git travels); returns
    the carry's size and the device command. RuntimeError if it would not travel."""
    box = {
        ln.strip().lower()
        for ln in (REPO / "benchmarks" / "gpu-box-packages.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    wheels = root / profile.wheels
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir()
    kept = []
    for whl in sorted(wheels_from.glob("*.whl")):
        name = re.split(r"-\d", whl.name, maxsplit=1)[0].lower().replace("_", "-")
        if name not in box:
            shutil.copyfile(whl, wheels / whl.name)
            kept.append(name)
    if not kept:
        raise RuntimeError(f"no wheels in {wheels_from}/ (make gpu-wheels makes them)")
    dest = root / "lease-data"
    dest.mkdir(exist_ok=True)
    if not data.is_file():
        raise RuntimeError(f"{data}: no such file (CIFAR-10 as JPEGs, an image-folder .tar.gz)")
    shutil.copyfile(data, dest / "cifar10-jpeg.tar.gz")
    (dest / "commit.txt").write_text(_commit() + "\n")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    size = sum((REPO / f).stat().st_size for f in tracked.decode().split("\0") if f and (REPO / f).is_file())
    size += sum(f.stat().st_size for d in (wheels, dest) for f in d.rglob("*") if f.is_file())
    if size > CARRY_LIMIT:
        raise RuntimeError(f"the lease would carry {size / 2**20:.1f} MiB, over {CARRY_LIMIT >> 20} MiB")
    return (
        f"{len(kept)} wheels in {profile.wheels}/, {data.name} in lease-data/: {size / 2**20:.1f} MiB travel "
        f"(limit {CARRY_LIMIT >> 20}). On the GPU box: `PYTHONPATH=src python3 -m dnndist.lease --out $OUT` "
        f"with carry [{profile.wheels}, lease-data], timeout 600 s"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dnndist.lease", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="folder for the (at most 8) output files")
    p.add_argument("--prepare", action="store_true", help="here, before a lease: lease-wheels/ and lease-data/")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
    p.add_argument("--wheels-from", type=Path, default=REPO / "gpu-wheels")
    p.add_argument("--rehearsal", action="store_true", help="the CPU rehearsal (presets/lease-rehearsal.yaml)")
    p.add_argument("--budget", type=float, default=540.0, help="wall-clock seconds for everything (default 540)")
    p.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--config", nargs="*", default=[], help="config overlays after the profile's (e.g. results: DIR)")
    p.add_argument("--skip", nargs="*", default=[], choices=["exp2", "relu"], help="optional stages not to run")
    args = p.parse_args(argv)
    if args.prepare:
        try:
            print(prepare(args.data, args.wheels_from))
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            print(f"lease --prepare: {_one_line(exc)}", file=sys.stderr)
            return 1
        return 0
    if args.out is None:
        p.error("--out is required")
    profile = REHEARSAL if args.rehearsal else LEASE
    configs = (*profile.configs, *(str(Path(c).resolve()) for c in args.config))
    try:
        lease = Lease(profile, args.out.resolve(), args.budget, args.cores, configs, frozenset(args.skip))
    except (OSError, ValueError) as exc:
        print(f"lease: a config cannot be read: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(f"lease: {profile.name}, budget {args.budget:.0f} s, {args.cores} cores, out {lease.out}", flush=True)
    execute(lease)
    failed = [s for s in lease.stages if s.status == "failed"]
    print(
        f"lease: {len(lease.stages) - len(failed)} of {len(lease.stages)} stages without failure; {lease.out}/lease.json"
    )
    return 1 if any(s.name in WORKFLOW_STAGES and s.status != "done" for s in lease.stages) else 0


if __name__ == "__main__":
    raise SystemExit(main())
