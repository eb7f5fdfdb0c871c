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
