"""``dnndist report``: the workflow's statistics, figures, tables and an HTML report of recorded runs
(``dnndist.Recorder``, the Lightning callback). Torch-free, but for finishing a run whose loop
ended without ``close`` (``recorder.finish_run``).

The report folder is laid out as a results folder of the workflow, so ``dnndist.open_results``
opens it in a notebook:

    OUT/runs/recorded/<group>/seed<k>/   links to the run's stores, its metrics.csv, stats/<table>.csv
    OUT/stats/<table>.csv                every run combined; <table>_summary.csv over seeds
    OUT/tables/<name>.{csv,md,tex,html}  glance, groups (the comparison), range, depth_trend, emission
    OUT/figures/<name>.{pdf,png}         the workflow's figures that apply
    OUT/report.html                      one self-contained page: runs, findings, comparison, figures

Several runs with the same group are seeds of one condition; the ``groups`` table compares each
group with the base group (default: the first by name), paired by seed (``tables.group_effects``).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dnndist import DnndistError, dims, outputs
from dnndist.io import KINDS, write_text

log = logging.getLogger("dnndist.report")

RECORD_FILE = "dnndist-record.json"  # a recorded run's manifest (dnndist.recorder writes it): runs are found by it
REPORT_FILE = "dnndist-report.json"  # marks a report folder: a later report may replace what it holds
DERIVED = ("runs", "stats", "tables", "figures")  # what a report writes, all of it from the runs
VARIANT = "recorded"  # the variant of every recorded run
# the tables of dnndist.outputs that describe any runs (the claims need the paper's inits), and the comparison
TABLES = ("glance", "range", "depth_trend", "emission")


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """The recorded runs given: run folders, or folders searched for them (``dnndist-record.json``)."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / RECORD_FILE).is_file():
            runs.append(p)
        elif p.is_dir():
            runs += sorted(f.parent for f in p.rglob(RECORD_FILE))
        else:
            raise DnndistError(f"{p}: no such folder")
    if not runs:
        raise DnndistError(f"no recorded runs (folders with {RECORD_FILE}) under {', '.join(map(str, paths))}")
    return sorted(set(runs))


def read_info(run: str | Path) -> dict[str, Any]:
    """A recorded run's manifest (group as a string, seed as an integer); DnndistError, in one line,
    if it is missing or unreadable."""
    path = Path(run) / RECORD_FILE
    try:
        info = json.loads(path.read_text())
        return {**info, "group": str(info["group"]), "seed": int(info["seed"])}
    except FileNotFoundError:
        raise DnndistError(f"{run} is not a recorded run (no {RECORD_FILE})") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DnndistError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None


def _ready(run: Path, info: dict[str, Any]) -> None:
    """A run's stores, combined from its record points where its loop ended without ``close``."""
    if (run / "records").is_dir():
        from dnndist.recorder import finish_run

        log.warning("%s: the run was not closed (%s); combining its record points", run, info.get("status"))
        finish_run(run)
    if not (run / "weights.zarr").is_dir():
        raise DnndistError(f"{run}: no stores recorded (weights.zarr is missing)")


def layout(runs: list[Path], out: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """The report's run folders (links to each run's stores, its metrics) and the runs' provenance."""
    infos = [read_info(r) for r in runs]
    seen: dict[tuple[str, int], Path] = {}
    for run, info in zip(runs, infos, strict=True):
        key = (info["group"], info["seed"])
        if key in seen:
            raise DnndistError(f"{run} and {seen[key]} are both group {key[0]!r} seed {key[1]}; give each seed once")
        seen[key] = run
    dirs = []
    for run, info in zip(runs, infos, strict=True):
        _ready(run, info)
        d = out / "runs" / VARIANT / info["group"] / f"seed{info['seed']}"
        d.mkdir(parents=True, exist_ok=True)
        for kind in KINDS:
            link, target = d / f"{kind}.zarr", (run / f"{kind}.zarr").resolve()
            if link.is_symlink() or link.exists():
                link.unlink()
            if target.is_dir():
                link.symlink_to(target, target_is_directory=True)
        if (run / "metrics.csv").is_file():
            write_text(d / "metrics.csv", (run / "metrics.csv").read_text())
        dirs.append(d)
        info["folder"] = str(run)
    return dirs, infos


def run_stats(dirs: list[Path], out: Path, workers: int) -> dict[str, pd.DataFrame]:
    """Every run's tables (``runtables``; runs without features or gradients: the weight tables),
    combined into ``OUT/stats`` with the seed summaries; the combined tables by name."""
    from dnndist import runtables, stats
    from dnndist.settings import StatsSettings

    settings = StatsSettings()
    full = [d for d in dirs if all((d / f"{k}.zarr").exists() for k in KINDS)]
    if full:
        runtables.write_runs(full, settings, workers)
    for d in (d for d in dirs if d not in full):
        _weight_tables(d, settings)
    combined = {}
    for table in outputs.STATS:
        if table.name == "training":
            frames = [stats.read_table(d / "metrics.csv") for d in dirs if (d / "metrics.csv").is_file()]
            if not frames:
                continue
            df = stats.training_table(pd.concat(frames, ignore_index=True))
        else:
            paths = [d / "stats" / f"{table.name}.csv" for d in dirs if (d / "stats" / f"{table.name}.csv").is_file()]
            if not paths:
                continue
            df = stats.combine(paths)
        write_text(out / "stats" / f"{table.name}.csv", df.to_csv(index=False))
        combined[table.name] = df
        if table.summary:
            shared = df if table.name == "training" else stats.shared_epochs(df)
            combined[f"{table.name}_summary"] = stats.aggregate_seeds(shared)
            write_text(
                out / "stats" / f"{table.name}_summary.csv", combined[f"{table.name}_summary"].to_csv(index=False)
            )
    return combined


def _weight_tables(d: Path, settings: Any) -> None:
    """The weight tables of a run recorded without probe inputs (no features, no gradients)."""
    from dnndist import integrity, stats

    integrity.verify_store(d / "weights.zarr")
    groups = {k: v.compute() for k, v in stats.open_layer_groups(d / "weights.zarr").items()}
    epochs = [int(e) for e in next(iter(groups.values()))[dims.EPOCH].values]
    run = stats.RunStores(groups, None, {}, epochs, settings)
    for name in ("weights", "spectrum", "weight_hist"):  # the registry's per-run tables of the weights alone
        write_text(d / "stats" / f"{name}.csv", outputs.STAT[name].function()(run).to_csv(index=False))


def draw(combined: dict[str, pd.DataFrame], out: Path, groups: list[str]) -> tuple[list[str], dict[str, str]]:
    """The workflow's figures whose table the runs have (PDF + PNG in ``OUT/figures``); the names
    drawn, and for each figure not drawn, why."""
    from dnndist import plots, resources

    plots.use_style(resources.style_path())
    plots.name_groups(groups)
    drawn, skipped = [], {}
    for fig in outputs.figures(trained=True, variants=1):
        table = combined.get(fig.table)
        if table is None or table.empty:
            skipped[fig.name] = f"no {fig.table} table (runs recorded without probe inputs?)"
            continue
        options = {"init": groups[0]} if "init" in fig.options else {}
        stem = out / "figures" / fig.name
        try:
            fig.function()(table, f"{stem}.pdf", f"{stem}.png", **dict(fig.kwargs), **options)
        except Exception as exc:  # noqa: BLE001 - one figure a model's layers defeat: named, the rest drawn
            why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            log.warning("%s not drawn: %s", fig.name, why)
            skipped[fig.name] = f"failed ({why})"
            continue
        drawn.append(fig.name)
    return drawn, skipped


def tabulate(combined: dict[str, pd.DataFrame], out: Path, base: str | None) -> dict[str, pd.DataFrame]:
    """The tables of ``TABLES`` whose inputs the runs have, and ``groups`` (the comparison)."""
    from dnndist import tables

    made = {}
    training = combined.get("training")
    made["groups"] = tables.group_effects(training, combined["weights"], base)
    tables.write_table(made["groups"], out / "tables" / "groups", GROUPS_CAPTION)
    for name in TABLES:
        table = outputs.TABLE[name]
        if any(i not in combined for i in table.inputs if i != "training"):
            continue
        df = table.function()(*(combined.get(i) for i in table.inputs))
        tables.write_table(df, out / "tables" / name, table.caption)
        made[name] = df
    return made


GROUPS_CAPTION = (
    "Each recorded group against the base group, paired by seed, at each run's last record point: "
    "the final accuracy and loss, and weight statistics averaged over the weight layers. effect = "
    "group minus base, mean over the common seeds with its 95 % t-interval; verdict: two-sided t-test "
    "over the seeds, Holm over the statistics of a group (descriptive only below 5 seeds)."
)


def _claim(out: Path) -> None:
    """OUT new, empty or an earlier report's (whose derived folders are removed: a run left out
    now must not linger in OUT/runs); anything else is refused. Holds OUT's writer lock
    (``results_lock``): a second report into OUT stops at once."""
    from dnndist import results_lock

    if out.exists() and any(p.name != results_lock.LOCK_FILE for p in out.iterdir()):
        if not (out / REPORT_FILE).is_file():
            raise DnndistError(f"{out} is not empty and holds no dnndist report; give a new folder")
    results_lock.lock_results_dir(out)
    for name in DERIVED:
        shutil.rmtree(out / name, ignore_errors=True)
    write_text(out / REPORT_FILE, json.dumps({"format": 1, "kind": "dnndist report of recorded runs"}) + "\n")


def report(paths: Sequence[str | Path], out: str | Path, *, base: str | None = None, workers: int = 1) -> Path:
    """Statistics, figures, tables and ``report.html`` of the recorded runs under ``paths`` in ``out``."""
    out = Path(out)
    runs = find_runs(paths)
    _claim(out)
    dirs, infos = layout(runs, out)
    combined = run_stats(dirs, out, workers)
    groups = sorted({i["group"] for i in infos})
    if base is not None and base not in groups:
        raise DnndistError(f"--base {base!r} is not a recorded group ({', '.join(groups)})")
    made = tabulate(combined, out, base)
    drawn, skipped = draw(combined, out, groups)
    page = out / "report.html"
    write_text(page, _html(infos, made, drawn, skipped, out))
    log.info("report of %d runs (%d groups) in %s", len(runs), len(groups), out)
    return page


def _html(
    infos: list[dict[str, Any]], made: dict[str, pd.DataFrame], drawn: list[str], skipped: dict[str, str], out: Path
) -> str:
    """One self-contained page: the runs, the findings, the comparison, the tables and the figures."""
    runs = pd.DataFrame(
        [
            {
                "group": i["group"],
                "seed": i["seed"],
                "model": i.get("model"),
                "record points": len(i.get("records", [])) or "?",
                "every": i.get("every"),
                "probe inputs": i.get("probe_inputs"),
                "recording (s)": i.get("record_seconds"),
                "status": i.get("status"),
                "folder": os.path.relpath(i["folder"], out),
            }
            for i in infos
        ]
    ).sort_values(["group", "seed"])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>dnndist report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>",
        f"<h1>dnndist report: {len(infos)} recorded runs, {runs['group'].nunique()} groups</h1>",
        "<p>Runs of one group are seeds of one condition. A group takes the place of the workflow's init: "
        "where the tables and figures say init, read group. The paper's claims (C1-C6) compare the paper's "
        "inits and are not decided here.</p>",
    ]
    if "glance" in made:
        parts.append("<h2>At a glance</h2><ul>")
        parts += [f"<li>{html.escape(str(r['finding']))}</li>" for _, r in made["glance"].iterrows() if "finding" in r]
        parts.append("</ul>")
    table_html = lambda name: (out / "tables" / f"{name}.html").read_text()  # noqa: E731 - write_table's, caption included
    parts += ["<h2>Groups compared</h2>", table_html("groups")]
    for name in drawn:
        data = base64.b64encode((out / "figures" / f"{name}.png").read_bytes()).decode()
        title = outputs.FIGURE[name].title
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{name}' src='data:image/png;base64,{data}'>")
    for name in TABLES:
        if name in made and name != "glance":  # the glance is the list at the top
            parts += [f"<h2>{html.escape(outputs.TABLE[name].title)}</h2>", table_html(name)]
    if skipped:
        parts.append("<h2>Not drawn</h2><ul>")
        parts += [f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in skipped.items()]
        parts.append("</ul>")
    parts += ["<h2>Runs</h2>", runs.to_html(index=False, escape=True), "</body></html>"]
    return "\n".join(parts)
