"""The stage CLI as a user meets it first: --help of the top level and of every sub-command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dnndist import cli

SUBCOMMANDS = sorted(next(a for a in cli.parser()._actions if a.dest == "command").choices)


@pytest.mark.parametrize("argv", [[], *([c] for c in SUBCOMMANDS)], ids=["top", *SUBCOMMANDS])
def test_help_prints_and_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dnndist") and len(out.splitlines()) > 2


def test_every_option_has_help():
    missing = []
    for name, sub in next(a for a in cli.parser()._actions if a.dest == "command").choices.items():
        missing += [f"{name} {a.option_strings[0]}" for a in sub._actions if a.option_strings and not a.help]
    assert missing == [], f"options without help text: {missing}"


def test_help_from_a_fresh_interpreter():
    out = subprocess.run([sys.executable, "-m", "dnndist", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "stats-combine" in out.stdout, out.stderr


@pytest.mark.slow
def test_preflight_stops_before_any_job_when_python_cannot_import_dnndist(tmp_path):
    """`.venv/bin/snakemake` without the venv on PATH: jobs would run a `python` that lacks
    dnndist. The workflow stops before the first job with one line saying what to do."""
    import os
    import shutil

    from .conftest import BIN, REPO, tiny_config, write_yaml

    bare = tmp_path / "bin"
    bare.mkdir()
    os.symlink(
        shutil.which("python3", path="/usr/bin:/bin") or sys.executable, bare / "python"
    )  # a python without dnndist
    write_yaml(tmp_path / "tiny.yaml", tiny_config(tmp_path / "results"))
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bare}:/usr/bin:/bin"
    proc = subprocess.run(
        [
            str(BIN / "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "--cores",
            "1",
            "--configfile",
            str(tmp_path / "tiny.yaml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "cannot import dnndist" in out and "export PATH=$PWD/.venv/bin:$PATH" in out
    assert not (tmp_path / "results" / "data").exists()  # no job ran
    assert "Traceback" not in out


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_stats_runs_refuses_fewer_than_one_worker(workers, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["stats-runs", "--settings", "{}", "--run-dirs", "r", "--workers", workers])
    assert exc.value.code == 2 and f"--workers: '{workers}' is not a positive integer" in capsys.readouterr().err
