"""The output registry (dnndist.outputs): every entry resolves, and the CLI offers exactly it."""

from __future__ import annotations

import copy
import inspect
import subprocess
import sys

import pytest

from dnndist import cli, outputs, reporting, runtables
from dnndist import config as dcfg
from dnndist.settings import StatsSettings

from .conftest import REPO

DEMO = dcfg.load([REPO / "config.yaml", REPO / "presets" / "demo.yaml"])
GIVEN = copy.deepcopy(DEMO)
GIVEN["model"]["weights"] = "given.pth"


def subparser(name: str):
    return next(a for a in cli.parser()._actions if a.dest == "command").choices[name]


def choices(command: str, dest: str) -> list[str]:
    return list(next(a for a in subparser(command)._actions if a.dest == dest).choices)


def test_names_are_unique_and_file_safe():
    for entries in (outputs.STATS, outputs.FIGURES, outputs.TABLES):
        names = [e.name for e in entries]
        assert len(names) == len(set(names)) and all(n.isidentifier() and n.islower() for n in names), names
    assert len({f.number for f in outputs.FIGURES}) == len(outputs.FIGURES)
    assert set(outputs.stats_files()).isdisjoint(outputs.TABLE)  # stats/<x>.csv and tables/<x>.csv never mix up


@pytest.mark.parametrize("figure", outputs.FIGURES, ids=lambda f: f.name)
def test_figure_resolves(figure):
    """Drawn from a table the statistics stage writes, by a plotting function that takes the
    registry's keyword arguments and options; labelled, titled and captioned for any config."""
    assert figure.table in outputs.stats_files()
    fn = figure.function()
    assert callable(fn) and fn.__module__.startswith("dnndist.plots.")
    inspect.signature(fn).bind("table", "f.pdf", "f.png", **dict(figure.kwargs), **dict.fromkeys(figure.options))
    assert figure.when in outputs.CONDITIONS
    assert figure.number.startswith("Fig ") and figure.shows and figure.title
    for cfg in (DEMO, GIVEN):
        text = reporting.caption_text("figure", figure.name, cfg)
        assert len(text.split()) > 20 and "{" not in text, text


@pytest.mark.parametrize("table", outputs.TABLES, ids=lambda t: t.name)
def test_table_resolves(table):
    """Computed from tables the statistics stage writes, by a function dnndist.tables offers (its
    own, or the plain-words summary's of dnndist.glance) that takes them (and its extra options)
    in the registry's order; captioned for files and report."""
    assert set(table.inputs) <= set(outputs.stats_files())
    fn = table.function()
    assert callable(fn) and fn.__module__.startswith(("dnndist.tables.", "dnndist.glance"))
    inspect.signature(fn).bind(*table.inputs, **dict.fromkeys(table.extra))
    assert table.when in outputs.CONDITIONS and table.shows and table.title
    assert table.caption.strip() and table.caption.endswith(".")
    assert reporting.caption_text("table", table.name, DEMO).strip()


def test_conditions_select_outputs():
    everything = outputs.figures(trained=True, variants=3)
    assert everything == list(outputs.FIGURES)
    given = outputs.figures(trained=False)
    assert given and all(f.when != "trained" for f in given) and len(given) < len(everything)
    assert [t.name for t in outputs.tables(variants=1)] == [
        t.name for t in outputs.TABLES if t.when not in ("variants", "stages")
    ]
    assert outputs.tables(variants=2, stages=True) == list(outputs.TABLES)
    assert "claims_stages" in [t.name for t in outputs.tables(stages=True)]
    assert "claims_stages" not in [t.name for t in outputs.tables(trained=False, stages=True)]  # nothing trained


def test_stats_tables_partition():
    assert set(outputs.summary_tables()) | set(outputs.concat_tables()) == {s.name for s in outputs.STATS}
    assert not set(outputs.summary_tables()) & set(outputs.concat_tables())
    assert set(outputs.run_tables()) <= {s.name for s in outputs.STATS}
    assert {f"{s}_summary" for s in outputs.summary_tables()} <= set(outputs.stats_files())


def test_cli_offers_exactly_the_registry():
    assert choices("plot", "figure") == list(outputs.FIGURE)
    assert choices("table", "name") == list(outputs.TABLE)
    assert choices("stats-combine", "kind") == [s.name for s in outputs.STATS]
    table_options = {a.dest for a in subparser("table")._actions}
    for table in outputs.TABLES:
        assert set(table.inputs) | set(table.extra) <= table_options, table.name
    for figure in outputs.FIGURES:
        assert set(figure.options) <= {a.dest for a in subparser("plot")._actions}, figure.name
    run = runtables.run_table_functions({}, None, {}, [0, 1], StatsSettings())
    assert set(run) == set(outputs.run_tables())  # stats-run computes every per-run table, nothing else
    for table in outputs.STATS:  # a per-run table names its function of a run's stores (StatsTable.compute)
        assert bool(table.compute) == table.per_run and (not table.per_run or callable(table.function()))


def test_table_command_without_its_extra_option_says_so(tmp_path, capsys):
    needs = next(t for t in outputs.TABLES if t.extra)
    assert cli.main(["table", needs.name, "--out-stem", str(tmp_path / "t")]) == 2
    assert f"needs --{needs.extra[0]}" in capsys.readouterr().err


@pytest.mark.slow
def test_registry_and_output_modules_import_without_torch():
    code = (
        "import sys, dnndist.outputs, dnndist.plots, dnndist.stats, dnndist.tables, dnndist.reporting; "
        "sys.exit('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr or "torch was imported"


def test_outputs_command_lists_every_entry(capsys):
    assert cli.main(["outputs"]) == 0
    out = capsys.readouterr().out
    for name in [*outputs.STAT, *outputs.FIGURE, *outputs.TABLE]:
        assert f"`{name}`" in out or f"`stats/{name}.csv`" in out, name
