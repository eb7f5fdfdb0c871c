"""What the Snakefile checks before the first job: the results folder is dnndist's (marked on
first use), the jobs' python imports dnndist, a setting set but idle is named, and a report asked
for where there are no results says what to do."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dnndist.config import RESULTS_MARKER, ConfigError


def claim_results_dir(results: str | Path) -> None:
    """Mark the results folder as dnndist's (on first use; later runs may then reuse it)."""
    path = Path(results)
    path.mkdir(parents=True, exist_ok=True)
    marker = path / RESULTS_MARKER
    if not marker.exists():
        marker.write_text(
            "This folder holds the outputs of a dnndist workflow; dnndist may overwrite and delete files here.\n"
        )


def check_job_python(path: str | None = None) -> None:
    """Pre-flight: the ``python`` that the rules run (first on PATH) must import dnndist, or
    every job would fail with "No module named dnndist". One line telling what to do."""
    import shutil
    import subprocess

    exe = shutil.which("python", path=path if path is not None else os.environ.get("PATH"))
    if exe is None:
        raise ConfigError(
            "no 'python' on PATH for the workflow's jobs: put the venv first "
            "(export PATH=$PWD/.venv/bin:$PATH, or source .venv/bin/activate), or run make demo"
        )
    proc = subprocess.run(
        [exe, "-c", "import dnndist"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path or os.environ.get("PATH", "")},
    )
    if proc.returncode != 0:
        raise ConfigError(
            f"the jobs' python ({exe}) cannot import dnndist: put the venv first on PATH "
            "(export PATH=$PWD/.venv/bin:$PATH, or source .venv/bin/activate; make demo does it), "
            "or pip install dnndist into that python"
        )


def _unused_rules(cfg: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """(key path, why it is not used) for every setting the config's other settings make idle."""
    data, train = cfg["data"], cfg["train"]
    rules: list[tuple[tuple[str, ...], str]] = []
    if data["valid_split"] == "test":
        rules.append((("data", "valid_size"), "data.valid_split is test: the test set is the valid split"))
    for source in ("cifar10", "imagefolder", "synthetic"):
        if data["source"] != source:
            rules.append((("data", source), f"data.source is {data['source']}"))
    if train["optimizer"] != "sgd":
        rules += [
            (("train", k), f"train.optimizer is {train['optimizer']} (sgd only)") for k in ("momentum", "nesterov")
        ]
    if train["schedule"] != "onecycle":
        rules += [
            (("train", k), f"train.schedule is {train['schedule']} (onecycle only)") for k in ("warmup", "warmup_div")
        ]
    return rules


def unused_settings(cfg: Mapping[str, Any]) -> list[str]:
    """One line per setting of a validated config that differs from its default but is not used
    (``data.valid_size`` with ``valid_split: test``, another source's settings, sgd's momentum
    with adam, ...): a value the user set to no effect, named so that it is not believed."""
    from dnndist.config import validate  # config validates; this module only reads what it made

    default = validate({}, check_paths=False)
    lines = []
    for path, why in _unused_rules(cfg):
        value, base = cfg, default
        for key in path:
            value, base = value.get(key), base.get(key)
        pairs = (
            [((*path, k), v) for k, v in value.items() if v != base.get(k)]
            if isinstance(value, Mapping) and isinstance(base, Mapping)
            else [(path, value)] * (value != base)
        )
        lines += [f"config key '{'.'.join(p)}' ({v!r}) is not used: {why}" for p, v in pairs]
    return lines


def report_without_results(argv: Sequence[str], results: str | Path) -> str | None:
    """The one-line error for ``snakemake --report`` on a config whose results are not there
    (``--report`` without the ``--configfile`` the workflow ran with reads config.yaml's
    results/paper), or None. Snakemake's own error names one missing figure."""
    asked = any(a == "--report" or a.startswith("--report=") for a in argv)
    if not asked or (Path(results) / "figures").is_dir():
        return None
    return (
        f"--report: no results in {results} (its figures/ does not exist): run the workflow first, or give "
        "the --configfile it ran with (the demo: --configfile presets/demo.yaml)"
    )
