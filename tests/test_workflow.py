"""The Snakemake workflow end to end on a tiny config: outputs, rerun-on-change, lint, plans."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pandas as pd
import pytest

from dnndist import outputs

from .conftest import REPO, hold_results_lock, snakemake, tiny_config, write_yaml

pytestmark = pytest.mark.slow


FIGURES = [f.name for f in outputs.figures()]  # one variant, trained: every figure
# one variant: no (empty) factors table; the claims through training (the tiny run and the demo set stats.claims_at)
TABLES = [t.name for t in outputs.tables(stages=True)]


def plan(skip_training: bool = False, stages: bool = True, **jobs: int) -> dict[str, int]:
    """A dry run's job counts: ``jobs`` plus every combined table, table and figure of one trained
    variant (Fig 4 has a rule of its own), from the registry; ``skip_training`` leaves out what
    is computed from the training metrics only (nothing there changes when extraction does);
    ``stages``: stats.claims_at is set (the claims_stages table)."""
    figures = [f for f in outputs.figures() if not (skip_training and f.table.startswith("training"))]
    counts = {
        "all": 1,
        **jobs,
        "stats_combine": sum(s.summary and (s.per_run or not skip_training) for s in outputs.STATS),
        "stats_concat": len(outputs.concat_tables()),
        "table": len(outputs.tables(stages=stages)),
        "figure": sum(not f.options for f in figures),
        "figure_emission": sum(bool(f.options) for f in figures),
    }
    return {**counts, "total": sum(counts.values())}


# what one run's change replans besides its training/extraction: its variant's stats (one job for the
# variant's runs), every combined table, table and figure
DOWNSTREAM = plan(train=1, extract=1, stats_runs_base=1)


def planned_jobs(proc) -> dict[str, int]:
    """Job counts of a dry run, from its 'Job stats' table."""
    out = proc.stdout + proc.stderr
    counts = {}
    if "Nothing to be done" in out:
        return counts
    table = out.split("Job stats:")[1]
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m[1]] = int(m[2])
    return counts


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A completed tiny workflow run (3 inits; kaiming_normal made to diverge with SGD at lr 1e4)."""
    work = tmp_path_factory.mktemp("wf")
    cfg = tiny_config(
        work / "results",
        inits=["kaiming_normal", "xavier_uniform", "ones"],
        overrides={"kaiming_normal": {"train": {"optimizer": "sgd", "lr": 1.0e4}}},
        train={"epochs": 2, "lr": 1.0e-3, "checkpoints": [0, 1, "best"], "eval_batch_size": 500},
        stats={"claims_at": [1, "best"]},
    )
    write_yaml(work / "tiny.yaml", cfg)
    t0 = time.time()
    snakemake(work, "--cores", "2", "--configfile", str(work / "tiny.yaml"))
    return work, cfg, time.time() - t0


def test_docs_target_renders_the_reproduction_document_from_the_tables(done, tmp_path):
    """`snakemake docs`: every table of the tables stage appears verbatim (caption included),
    every figure's PNG is linked and exists, and the run is stamped (command, config, commit,
    machine, wall time); only the docs job runs on a completed tree."""
    work, cfg, _ = done
    proc = snakemake(work, "docs", "--cores", "1", "--configfile", str(work / "tiny.yaml"))
    assert "docs" in proc.stdout + proc.stderr
    res = work / "results"
    doc = (res / "docs" / "reproduction.md").read_text()
    tables = sorted((res / "tables").glob("*.md"))
    assert {t.stem for t in tables} == set(TABLES)
    for t in tables:
        assert t.read_text().rstrip() in doc, t.name  # verbatim: numbers come from the tables stage only
    stages = pd.read_csv(res / "tables" / "claims_stages.csv")
    assert "Where the answer depends on when training stops" in doc
    reading = doc.split("Where the answer depends on when training stops")[1].split("###")[0]
    for r in stages[stages["changes"]].itertuples():  # the prose quotes the table's own verdicts and values
        assert f"{r.stage}" in reading and f"**{r.verdict}**, {r.value}" in reading
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc)
    assert len(links) == len(list((res / "figures").glob("*.png"))) > 0
    assert all((res / "docs" / link).resolve().is_file() for link in links)
    assert (
        "`snakemake docs --cores all --configfile tiny.yaml`" in doc  # the target first; relative to the working folder
        and "git commit" in doc
        and "wall time:" in doc
        and "machine: cpu" in doc
    )


def test_end_to_end_outputs(done):
    work, cfg, _ = done
    results = work / "results"
    assert (results / "data" / "dataset.zarr" / "zarr.json").is_file()
    assert (results / ".dnndist-results").is_file()  # marked as dnndist's on first use (config.check_results_dir)
    for init in cfg["inits"]:
        run = results / "runs" / "base" / init / "seed0"
        assert sorted(p.name for p in (run / "checkpoints").glob("epoch_*")) == [
            "epoch_0000.safetensors",
            "epoch_0001.safetensors",
            "epoch_0002.safetensors",
        ]
        assert (run / "checkpoints" / "best.json").is_file()  # train.checkpoints keeps 'best'
        m = pd.read_csv(run / "metrics.csv")
        assert set(m["init"]) == {init}
        assert (results / "logs" / "train" / "base" / init / "seed0.log").is_file()
        for kind in ("weights", "features", "gradients"):
            assert (run / f"{kind}.zarr" / "zarr.json").is_file()
    ok = json.loads((results / "runs/base/xavier_uniform/seed0/summary.json").read_text())
    div = json.loads((results / "runs/base/kaiming_normal/seed0/summary.json").read_text())
    for table in ("training", "weights", "features"):
        tidy = pd.read_csv(results / "stats" / f"{table}.csv")
        assert set(tidy["init"]) == set(cfg["inits"]) and "value" in tidy
        summary = pd.read_csv(results / "stats" / f"{table}_summary.csv")
        assert {"mean", "ci_low", "ci_high", "n_seeds"} <= set(summary.columns)
    for fig in sorted((results / "figures").iterdir()):
        data = fig.read_bytes()
        assert len(data) > 5000, fig
        assert data.startswith(b"%PDF-") if fig.suffix == ".pdf" else data.startswith(b"\x89PNG\r\n\x1a\n"), fig
    assert {p.name for p in (results / "figures").iterdir()} == {f"{f}.{e}" for f in FIGURES for e in ("pdf", "png")}
    assert {p.name for p in (results / "tables").iterdir()} == {
        f"{t}.{e}" for t in TABLES for e in ("csv", "md", "tex", "html")
    }
    stages = pd.read_csv(results / "tables" / "claims_stages.csv")
    assert list(dict.fromkeys(stages["stage"])) == ["epoch 1", "best validation", "last epoch"]
    assert set(stages["claim"]) == set(pd.read_csv(results / "tables" / "claims.csv")["claim"]) - {"D"}
    claims = pd.read_csv(results / "tables" / "claims.csv")
    assert (
        set(claims["verdict"]) <= {"holds", "does not hold", "inconclusive", "descriptive only", "flagged"}
        and len(claims) >= 6
    )
    assert "descriptive only" in set(claims["verdict"])  # one seed: no verdict is decided
    assert not {"holds", "does not hold"} & set(claims["verdict"])
    flagged = claims[claims["verdict"] == "flagged"]  # the diverged run is named in the claims table
    assert list(flagged["claim"]) == ["D"] and flagged["value"].iloc[0] == "kaiming_normal (1 seed)"
    assert (results / "tables" / "claims.tex").read_text().startswith("\\begin{table}")
    assert ok["status"] == "completed" and 0 <= ok["final"]["valid_accuracy"] <= 1  # learning: test_train.py
    assert div["status"] == "diverged"  # recorded; the workflow still completed


def report_var(page: str, name: str):
    """A JSON value the Snakemake report page assigns to a script variable (results, workflow_desc, ...)."""
    start = re.search(rf"\bvar {name} = (?=[{{\"])", page).end()  # not the JS libraries' own variables
    return json.JSONDecoder().raw_decode(page[start:])[0]


def test_report_is_shareable(done):
    """The report opens on the verdicts (the claims table's rows, as HTML) and two headline figures
    embedded in the page; every figure is a PNG (no PDF embedded), every table is shown as HTML;
    no empty factors table (one variant); no stray parameter in a caption."""
    import html

    work, _, _ = done
    results = work / "results"
    snakemake(work, "--configfile", str(work / "tiny.yaml"), "--report", str(results / "report.html"))
    page = (results / "report.html").read_text()
    entries = {p.rsplit("/", 1)[-1]: e for p, e in report_var(page, "results").items()}
    figures = {n: e for n, e in entries.items() if n.startswith("fig")}
    assert set(figures) == {f"{f}.png" for f in FIGURES}
    assert all(e["mime_type"] == "image/png" and e["data_uri"].startswith("data:image/png") for e in figures.values())
    assert "data:application/pdf" not in page and not any(n.endswith(".pdf") for n in entries)
    assert all(f"{n[:-4]}.pdf" in e["caption"] for n, e in figures.items())  # the PDF is named beside the PNG
    tables = {n: e for n, e in entries.items() if not n.startswith("fig")}
    assert set(tables) == {f"{t}.html" for t in TABLES}
    assert all(e["mime_type"] == "text/html" for e in tables.values())
    assert report_var(page, "categories").keys() == {"Figures", "Tables"}
    assert all(e["labels"] for e in entries.values())  # listed by number and content, one click from the menu
    for e in entries.values():  # no stray (empty) parameter such as "fig4=" beside a caption
        assert "fig4=" not in e["caption"] and not re.search(r"\w=(,|$)", e["job_properties"]["params"])
    assert "options=--init " in entries["fig4_emission.png"]["job_properties"]["params"]
    front = report_var(page, "workflow_desc")
    claims = pd.read_csv(results / "tables" / "claims.csv")
    for claim, verdict in zip(claims["claim"], claims["verdict"]):
        row = re.search(rf'<td class="col-claim">{re.escape(html.escape(claim))}</td>.*?</tr>', front, re.DOTALL)
        assert row and f">{html.escape(verdict)}</td>" in row[0], claim
    glance = pd.read_csv(results / "tables" / "glance.csv")  # the plain-words summary, before the verdicts
    assert len(glance) >= 4 and all(html.escape(f) in front for f in glance["finding"])
    assert front.index(html.escape(glance["finding"].iloc[0])) < front.index('<td class="col-claim">')
    images = re.findall(r'<img alt="([^"]+)" src="([^"]{0,30})', front)
    assert [alt for alt, _ in images] == ["fig0_glance.png", "fig1_training.png", "fig5_trajectories.png"]
    assert all(src.startswith("data:image/png;base64,") for _, src in images)  # in the page, not a path on this machine


def test_statistics_are_one_job_per_variant_with_the_profiles_resources(tmp_path):
    """One stats_runs_<variant> job per variant, over all its runs; `set-resources: stats_runs:`
    (the SLURM profile's entry) reaches every one, since Snakemake matches set-resources by rule name."""
    cfg = tiny_config(tmp_path / "results", seeds=[0, 1], variants={"base": {}, "slow": {"train": {"lr": 5.0e-4}}})
    write_yaml(tmp_path / "tiny.yaml", cfg)
    args = ["-n", "--configfile", str(tmp_path / "tiny.yaml")]
    out = snakemake(tmp_path, *args, "--set-resources", "stats_runs:mem_mb=9000").stdout
    jobs = planned_jobs(snakemake(tmp_path, *args))
    assert jobs["stats_runs_base"] == jobs["stats_runs_slow"] == 1 and jobs["extract"] == 8, jobs
    for variant in ("base", "slow"):
        block = out.split(f"rule stats_runs_{variant}:")[1].split("\n\n")[0]
        assert "mem_mb=9000" in re.search(r"resources: (.*)", block)[1] and f"logs/stats/runs_{variant}.log" in block
        outputs_ = re.search(r"output: (.*)", block)[1].split(", ")
        assert len(outputs_) == 4 * len(outputs.run_tables()) and all(f"runs/{variant}/" in o for o in outputs_)


def test_a_variant_of_more_than_70_runs_has_statistics_jobs_of_70(tmp_path):
    """stats_jobs caps a job at 70 runs, so that the plan grows linearly with the runs (each job's
    outputs are matched against every requested per-run table): 2 inits x 36 seeds = 72 runs are
    two jobs of 70 and 2, each with its runs' tables, every run in exactly one."""
    cfg = tiny_config(tmp_path / "results", seeds=list(range(36)))
    write_yaml(tmp_path / "tiny.yaml", cfg)
    proc = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "tiny.yaml"))
    out, jobs = proc.stdout, planned_jobs(proc)
    assert jobs["stats_runs_base_1"] == jobs["stats_runs_base_2"] == 1 and "stats_runs_base" not in jobs, jobs
    runs = []
    for name, n in (("base_1", 70), ("base_2", 2)):
        block = out.split(f"rule stats_runs_{name}:")[1].split("\n\n")[0]
        tables = re.search(r"output: (.*)", block)[1].split(", ")
        assert len(tables) == n * len(outputs.run_tables())
        runs += sorted({t.rsplit("/stats/", 1)[0] for t in tables})
    assert len(runs) == len(set(runs)) == 72


def test_given_weights_plan_no_training_figures(tmp_path):
    """model.weights (experiment 2: analysed at one checkpoint, nothing trained): no training
    curves (Figs 1 and 5) are planned, and with one variant no factors table."""
    import torch

    from dnndist import models
    from dnndist.settings import ModelSettings

    weights = tmp_path / "cnn.pth"
    paper = ModelSettings(name="paper_cnn", depth=3, width=16, hidden=512, norm="none", activation="relu")
    torch.save(models.build(paper).state_dict(), weights)
    write_yaml(
        tmp_path / "given.yaml", tiny_config(tmp_path / "results", model={"name": "paper_cnn", "weights": str(weights)})
    )
    proc = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "given.yaml"))
    jobs = planned_jobs(proc)
    given = outputs.figures(trained=False)
    assert jobs["figure"] == sum(not f.options for f in given) and jobs["figure_emission"] == 1, jobs
    assert jobs["table"] == len(outputs.tables(trained=False)), jobs
    out = proc.stdout + proc.stderr
    assert "fig1_training" not in out and "fig5_trajectories" not in out and "factors" not in out
    assert "fig2_weights" in out and "fig6_depth" in out


def test_nothing_to_do_after_a_run(done):
    work, _, _ = done
    proc = snakemake(work, "-n", "--configfile", str(work / "tiny.yaml"))
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # its time (target < 3 s) is measured by benchmarks/workflow_overhead.py (B4), not here


def test_changing_one_init_reruns_only_its_chain(done, tmp_path):
    work, cfg, _ = done
    changed = {**cfg, "overrides": {**cfg["overrides"], "xavier_uniform": {"train": {"lr": 5.0e-4}}}}
    write_yaml(tmp_path / "changed.yaml", changed)
    proc = snakemake(work, "-n", "--configfile", str(tmp_path / "changed.yaml"))
    assert planned_jobs(proc) == DOWNSTREAM
    assert "runs/base/xavier_uniform/seed0" in proc.stdout
    # the reason names the changed setting in one short line, not the settings' JSON twice
    reason = next(line for line in proc.stdout.splitlines() if "Params have changed" in line)
    assert "train.lr=0.001" in reason and "train.lr=0.0005" in reason and len(reason) < 1500, reason
    # adding a seed to one init plans exactly that run
    more = {
        **cfg,
        "overrides": {**cfg["overrides"], "kaiming_normal": {**cfg["overrides"]["kaiming_normal"], "seeds": [0, 1]}},
    }
    write_yaml(tmp_path / "more.yaml", more)
    proc = snakemake(work, "-n", "--configfile", str(tmp_path / "more.yaml"))
    assert planned_jobs(proc) == DOWNSTREAM
    assert "runs/base/kaiming_normal/seed1" in proc.stdout
    # a data setting changes everything downstream of the data
    data = {**cfg, "data": {**cfg["data"], "synthetic": {**cfg["data"]["synthetic"], "seed": 7}}}
    write_yaml(tmp_path / "data.yaml", data)
    assert planned_jobs(snakemake(work, "-n", "--configfile", str(tmp_path / "data.yaml"))) == plan(
        dataset=1, train=3, extract=3, stats_runs_base=1
    )
    # an extraction setting reruns extraction only
    ex = {**cfg, "extract": {**cfg.get("extract", {}), "histogram_bins": 17}}
    write_yaml(tmp_path / "ex.yaml", ex)
    assert planned_jobs(snakemake(work, "-n", "--configfile", str(tmp_path / "ex.yaml"))) == plan(
        skip_training=True, extract=3, stats_runs_base=1
    )


def test_another_spelling_of_the_results_folder_sees_a_changed_setting(done, tmp_path):
    """`results: <folder>/` and `<folder>/x/..` are the same folder: with an xavier_uniform lr
    change, each spelling plans that run's chain, as the canonical one does (it planned
    nothing before, and kept the old lr's outputs)."""
    work, cfg, _ = done
    over = {**cfg["overrides"], "xavier_uniform": {"train": {"lr": 5.0e-4}}}
    for spelling in (f"{cfg['results']}/", f"{cfg['results']}/runs/.."):
        write_yaml(tmp_path / "spelled.yaml", {**cfg, "results": spelling, "overrides": over})
        proc = snakemake(work, "-n", "--configfile", str(tmp_path / "spelled.yaml"))
        assert planned_jobs(proc) == DOWNSTREAM, spelling


def test_a_second_workflow_on_a_results_folder_in_use_stops_at_once(done, tmp_path):
    """While a process holds the results folder's writer lock (as a running workflow's
    Snakemake does), another workflow on that folder, from another working directory, exits
    non-zero before any job with one line naming the holder; the folder is left as it was."""
    work, cfg, _ = done
    other = tmp_path / "clone"  # another working directory: Snakemake's own lock does not see the first
    other.mkdir()
    write_yaml(other / "tiny.yaml", cfg)
    holder = hold_results_lock(cfg["results"])
    try:
        before = {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*") if p.is_file()}
        t0 = time.time()
        proc = snakemake(other, "--cores", "1", "--forceall", "--configfile", str(other / "tiny.yaml"), check=False)
        assert proc.returncode != 0 and time.time() - t0 < 60
        message = [line for line in (proc.stdout + proc.stderr).splitlines() if "is in use by another workflow" in line]
        assert len(message) == 1 and f"pid {holder.pid} on" in message[0], proc.stdout + proc.stderr
    finally:
        holder.kill()
        holder.wait()
    after = {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*") if p.is_file()}
    assert after == before  # no job ran
    assert not (other / "results").exists()


def test_a_lost_per_run_statistics_table_is_rebuilt(done, tmp_path):
    """Per-run statistics tables are targets too: one lost (a kill -9 while their job ran, after
    Snakemake removed the outputs) is planned again, not 'Nothing to be done' for ever."""
    work, cfg, _ = done
    lost = work / "results" / "runs" / "base" / "ones" / "seed0" / "stats" / "weights.csv"
    kept = tmp_path / "weights.csv"
    shutil.copy2(lost, kept)
    lost.unlink()
    try:
        proc = snakemake(work, "-n", "--configfile", str(work / "tiny.yaml"))
        assert planned_jobs(proc).get("stats_runs_base") == 1, proc.stdout
    finally:
        shutil.copy2(kept, lost)


def test_a_duplicate_key_in_a_configfile_is_refused_by_snakemake(done, tmp_path):
    work, cfg, _ = done
    text = (work / "tiny.yaml").read_text() + "train:\n  epochs: 3\n"  # a second `train:`
    (tmp_path / "dup.yaml").write_text(text)
    proc = snakemake(work, "-n", "--configfile", str(tmp_path / "dup.yaml"), check=False)
    assert proc.returncode != 0
    assert f"config file {tmp_path / 'dup.yaml'}: config key 'train': given twice" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "module,expected",
    [
        ("plots/weights", {k: v for k, v in plan().items() if k in ("all", "figure", "figure_emission")}),
        ("tables/claims", {"all": 1, "table": len(TABLES)}),  # a module of a subpackage: every table
        ("outputs", {k: v for k, v in plan().items() if k in ("all", "table", "figure", "figure_emission")}),
        ("stats", plan(stats_runs_base=1)),
        ("stacked", plan(train=3, extract=3, stats_runs_base=1)),  # training's code: new checkpoints, re-extracted
    ],
)
def test_code_changes_rerun_only_what_depends_on_them(done, module, expected):
    """A module's content, not its modification time, decides: touched (or an edit reverted), it
    plans nothing; edited, it plans exactly the jobs that depend on it."""
    work, _, _ = done
    path = REPO / "src" / "dnndist" / f"{module}.py"
    before, text = path.stat(), path.read_bytes()
    try:
        if module == "plots/weights":  # touched: the same content (once: what is compared is the same for every module)
            os.utime(path, (time.time() + 5, time.time() + 5))
            touched = snakemake(work, "-n", "--configfile", str(work / "tiny.yaml"))
            assert "Nothing to be done" in touched.stdout + touched.stderr, planned_jobs(touched)
        path.write_bytes(text + b"\n# an edit\n")
        edited = snakemake(work, "-n", "--configfile", str(work / "tiny.yaml"))
    finally:
        path.write_bytes(text)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    expected = {**expected, "total": sum(v for k, v in expected.items() if k != "total")}
    assert planned_jobs(edited) == expected


def test_tensorboard_switch_adds_only_the_export(done):
    """tensorboard: true plans one export per run and nothing else; an export reads back."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, cfg, _ = done
    write_yaml(work / "tb.yaml", {"tensorboard": True})
    configs = ("--configfile", str(work / "tiny.yaml"), str(work / "tb.yaml"))
    proc = snakemake(work, "-n", *configs)
    assert planned_jobs(proc) == {"all": 1, "tensorboard": 3, "total": 4}
    target = f"{cfg['results']}/tensorboard/base/ones/seed0"
    snakemake(work, target, "--cores", "1", *configs)  # the target first: --configfile takes several
    acc = EventAccumulator(target, size_guidance={"histograms": 0})
    acc.Reload()
    assert [e.step for e in acc.Histograms("weights/conv1")] == [0, 1, 2]  # 'best' is one of them
    assert "features/valid/conv2/pre" in acc.Tags()["histograms"]


def test_killed_workflow_reruns_incomplete_jobs(done, tmp_path):
    """Deleting a run's outputs (as a crash mid-job would leave them) plans only that run."""
    work, cfg, _ = done
    copy = tmp_path / "copy"
    shutil.copytree(work, copy, symlinks=True)
    cfg2 = {**cfg, "results": str(copy / "results"), "resources": str(copy / "results" / "resources")}
    write_yaml(copy / "tiny.yaml", cfg2)
    snakemake(copy, "--cores", "1", "--configfile", str(copy / "tiny.yaml"), "--touch")
    (copy / "results/runs/base/kaiming_normal/seed0/summary.json").unlink()
    proc = snakemake(copy, "-n", "--configfile", str(copy / "tiny.yaml"))
    assert planned_jobs(proc) == DOWNSTREAM


def test_default_config_plans_seven_trainings_and_the_data():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        proc = snakemake(Path(d), "-n")
    assert planned_jobs(proc) == plan(
        dataset=1, download_cifar10=1, train=7, extract=7, stats_runs_base=1, stages=False
    )


def test_demo_preset_plans(tmp_path):
    (tmp_path / "presets").mkdir()
    shutil.copy(REPO / "presets" / "demo.yaml", tmp_path / "presets" / "demo.yaml")
    proc = snakemake(tmp_path, "-n", "--configfile", "presets/demo.yaml")
    # the default profile (rerun-incomplete, keep-going) is found through the top-level profiles link
    assert f"Using workflow specific profile {REPO}/profiles/default" in proc.stdout + proc.stderr
    # the demo is stacked: one training job for its 25 runs (5 inits x 5 seeds: its claims get verdicts),
    # each restored from the training cache and extracted; no stats.claims_at stages
    assert planned_jobs(proc) == plan(
        stages=False, dataset=1, train_stacked_base_1=1, restore=25, extract=25, stats_runs_base=1
    )


@pytest.mark.parametrize("stacked", [False, True], ids=["per_run", "stacked"])
def test_lint_is_clean(tmp_path, stacked):
    write_yaml(tmp_path / "over.yaml", {"stacked": stacked})  # the stacked rules are defined only then
    proc = snakemake(tmp_path, "--lint", "--configfile", str(tmp_path / "over.yaml"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations, your workflow is in a good condition!" in out, out


def test_same_bytes_with_cores_2_and_cores_4(done, tmp_path):
    """Training and extraction pin torch's thread count, so --cores does not change the bits: with
    --cores 2 Snakemake counts an extract job as 1 core (two side by side), with 4 as 2, and
    torch runs 1 thread in both (with 1 and 2, the features' last bits differed)."""
    work, cfg, _ = done  # --cores 2
    other = tmp_path / "cores4"
    other.mkdir()
    cfg4 = {**cfg, "results": str(other / "results"), "resources": str(other / "results" / "resources")}
    write_yaml(other / "tiny.yaml", cfg4)
    run = "runs/base/xavier_uniform/seed0"
    targets = [f"{other}/results/{run}/{kind}.zarr" for kind in ("weights", "features", "gradients")]
    # targets first: --configfile takes several values
    snakemake(other, *targets, "--cores", "4", "--configfile", str(other / "tiny.yaml"))
    for rel in ("checkpoints/epoch_0001.safetensors", "metrics.csv"):
        assert (other / "results" / run / rel).read_bytes() == (work / "results" / run / rel).read_bytes(), rel
    for store in ("weights.zarr", "features.zarr", "gradients.zarr"):
        a, b = other / "results" / run / store, work / "results" / run / store
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "zarr.json")
        assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files), store


def _files(root):
    """Every file under ``root`` except what is allowed to differ between identical runs:
    the extracted stores' root zarr.json (its `created` attribute) and Snakemake's own markers."""
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file()
        and not (p.name == "zarr.json" and p.parent.suffix == ".zarr")
        and p.name != ".snakemake_timestamp"
    )


def test_kill_9_of_training_extraction_and_stats_then_rerun_gives_the_same_bytes(done, tmp_path):
    """The whole Snakemake process group is killed with SIGKILL while a training job, then an
    extraction job, then a statistics job of one run is running (at a seeded random moment);
    a rerun (after `snakemake --unlock`) completes and reproduces the uninterrupted results,
    and a second workflow started on the same directory during that rerun is refused."""
    import os
    import random
    import signal
    import subprocess

    from .conftest import BIN, env

    work, cfg, _ = done
    copy = tmp_path / "copy"
    shutil.copytree(work, copy, symlinks=True)
    res = copy / "results"
    cfg2 = {**cfg, "results": str(res), "resources": str(res / "resources")}
    write_yaml(copy / "tiny.yaml", cfg2)
    snakemake(copy, "--cores", "1", "--configfile", str(copy / "tiny.yaml"), "--touch")
    run = "runs/base/xavier_uniform/seed0"
    shutil.rmtree(res / run)
    shutil.rmtree(res / "logs")
    rng = random.Random(1234)
    cmd = [
        str(BIN / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(copy),
        "--cores",
        "2",
        "--configfile",
        str(copy / "tiny.yaml"),
    ]
    for log in (
        "train/base/xavier_uniform/seed0.log",
        "extract/base/xavier_uniform/seed0.log",
        "stats/runs_base.log",  # the variant's statistics job
    ):
        proc = subprocess.Popen(
            cmd, cwd=copy, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.time() + 300
        while not (res / "logs" / log).exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"workflow ended before {log} started"
        time.sleep(rng.uniform(0.2, 2.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        snakemake(copy, "--unlock", "--configfile", str(copy / "tiny.yaml"))
    # the completing rerun; a second workflow started on the same directory meanwhile is refused
    out = open(
        tmp_path / "rerun.log", "w+"
    )  # a file, not a pipe: Snakemake's 64 KB of output would block on a full pipe
    # up to the combined statistics: the tables and figures are drawn from them alone (their bytes
    # from the same tables: tests/test_plots.py)
    until = [*cmd, "--until", "stats_combine", "stats_concat"]
    first = subprocess.Popen(until, cwd=copy, env=env(), stdout=out, stderr=subprocess.STDOUT, text=True)
    locks = copy / ".snakemake" / "locks"
    while first.poll() is None and not (locks.is_dir() and any(locks.iterdir())):
        time.sleep(0.05)
    second = snakemake(copy, "--cores", "1", "--configfile", str(copy / "tiny.yaml"), check=False)
    assert first.wait(timeout=600) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    out.close()
    assert second.returncode != 0 and "LockException" in second.stdout + second.stderr, second.stderr
    for sub in (run, "stats"):
        a, b = res / sub, work / "results" / sub
        files = _files(b)
        assert files == _files(a), sub
        differ = [f for f in files if (a / f).read_bytes() != (b / f).read_bytes()]
        assert not differ, (sub, differ)


@pytest.mark.parametrize(
    "preset,jobs",
    [
        ("resnet-cifar-full", {"train": 10}),  # 2 inits x 5 seeds, one job each
        ("ablations-full", {"train_stacked": 17}),  # one stacked job per variant
        ("depth-full", {"train_stacked": 4}),
    ],
)
def test_full_presets_plan(tmp_path, shared_jpeg, preset, jobs):
    """The GPU presets plan from a checkout (their data path made absolute for the temporary directory)."""
    text = (REPO / "presets" / f"{preset}.yaml").read_text()
    assert "../shared/data/cifar10-jpeg.tar.gz" in text
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / f"{preset}.yaml").write_text(
        text.replace("../shared/data/cifar10-jpeg.tar.gz", str(shared_jpeg))
    )
    counts = planned_jobs(snakemake(tmp_path, "-n", "--configfile", f"presets/{preset}.yaml"))
    trains = {k: v for k, v in counts.items() if k.startswith("train")}
    if "train_stacked" in jobs:
        assert len(trains) == jobs["train_stacked"] and set(trains.values()) == {1}
    else:
        assert trains == jobs
    runs = counts.get("restore", jobs.get("train"))  # stacked: each run restored from the training cache
    assert counts["extract"] == runs  # one extraction job per run
    stats_jobs = {k: v for k, v in counts.items() if k.startswith("stats_runs_")}
    assert counts["dataset"] == 1 and set(stats_jobs.values()) == {1}  # one statistics job per variant
    assert len(stats_jobs) == (len(trains) if "train_stacked" in jobs else 1)


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "per_run"])
def test_b5_stages_run_until_rules_the_workflow_has(tmp_path, stacked):
    """B5 (benchmarks/gpu_workflow.py, for a lent GPU machine) runs the workflow stage by stage
    with --until: each stage names rules that exist under its own config (stacked: one training
    and one extraction rule per stack group) and per run alike."""
    from benchmarks import gpu_workflow

    over = gpu_workflow.overlay(str(tmp_path), 2, 3, tmp_path / "results") | {"stacked": stacked}
    write_yaml(tmp_path / "b5.yaml", over)
    rules = gpu_workflow.workflow_rules(dict(os.environ), [str(tmp_path / "b5.yaml")])
    staged = {stage: gpu_workflow.stage_rules(rules, prefixes) for stage, prefixes in gpu_workflow.STAGES}
    assert staged["data"] == ["dataset"]
    for stage in ("train", "extract"):
        names = staged[stage]
        assert names and set(names) <= set(rules)
    if stacked:  # a training rule per stack group of the runs to train, then each run restored from the cache
        stacks = [n for n in staged["train"] if n.startswith("train_stacked_")]
        assert stacks and sorted(staged["train"]) == sorted([*stacks, "restore"])
    else:
        assert staged["train"] == ["train"]
    assert staged["extract"] == ["extract"]
    assert {"stats_combine", "stats_concat", "table"} < set(staged["statistics + tables"])
    assert any(n.startswith("stats_runs_") for n in staged["statistics + tables"])
    assert staged["figures + rest"] == []  # the rest: everything
    with pytest.raises(RuntimeError, match="no rule starts with"):
        gpu_workflow.stage_rules(rules, ("no_such_rule",))


def test_b4_completed_tree_is_a_dnndist_results_folder(tmp_path):
    """B4 (benchmarks/workflow_overhead.py) fakes a completed 21-run tree and times `snakemake -n`
    on it: the faked folder is claimed as dnndist's (the results-folder check refused it, and
    `make bench` stopped there), and the dry run finds nothing to do."""
    from benchmarks import workflow_overhead

    cfg = workflow_overhead.completed_tree(tmp_path)
    assert (tmp_path / "results" / ".dnndist-results").is_file()
    proc = workflow_overhead.snakemake(tmp_path, "-n", "--configfile", str(cfg))
    assert "Nothing to be done" in proc.stdout + proc.stderr
