"""Command line: one sub-command per stage, so the workflow runs without Snakemake too.

What a user runs:
    python -m dnndist analyze --model torchvision:resnet18 [--weights FILE.pth] [--inputs IMAGES] [--out DIR]
    python -m dnndist workflow (--path | --init DIR [--force])
    python -m dnndist tensorboard --run RUN_DIR... --out LOGDIR [--kinds weights features gradients]
    python -m dnndist power --config config.yaml [presets/demo.yaml]
    python -m dnndist runs  --config config.yaml [--config presets/demo.yaml]
    python -m dnndist outputs     # the statistics, figures and tables (declared in dnndist.outputs)

The stages (what the workflow's rules call):
    python -m dnndist download-cifar10 --url URL --md5 MD5 --out FILE
    python -m dnndist data  (--settings JSON | --config FILE...) --out STORE [--archive FILE] [--workers N]
    python -m dnndist train (--settings JSON | --config FILE... --run VARIANT/INIT/seedN) --data STORE --out RUN_DIR
    python -m dnndist extract {weights,features,gradients} (--settings JSON | --config ... --run ...) \
        --checkpoints RUN_DIR/checkpoints --data STORE --out RUN_DIR/features.zarr
    python -m dnndist stats-run --settings JSON --weights W --features F --gradients G --out-dir RUN_DIR/stats
    python -m dnndist stats-runs --settings JSON --run-dirs RUN_DIR...   # several runs in one process
    python -m dnndist stats-combine {training,weights,features,...} --inputs CSV... --out CSV [--summary CSV]
    python -m dnndist plot {fig1_training,...} --table CSV --style FILE --pdf PDF --png PNG
    python -m dnndist table {claims,range,...} --weights-summary CSV ... --out-stem PATH

Errors in user input (config, files) are reported in one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dnndist import DnndistError, conventions, integrity, outputs, results_lock
from dnndist import config as cfgmod
from dnndist.settings import DataSettings, ExtractSettings, RunSettings, StatsSettings


def _settings_arg(p: argparse.ArgumentParser, with_run: bool) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--settings", help="resolved settings as JSON (what the Snakemake rules pass)")
    g.add_argument("--config", action="append", help="config file(s), later ones overlay earlier ones")
    if with_run:
        p.add_argument("--run", help="VARIANT/INIT/seedN (with --config)")


def _load_config(args: argparse.Namespace) -> dict[str, Any]:
    return cfgmod.load(args.config)


def _config_and_run(args: argparse.Namespace) -> tuple[dict[str, Any], cfgmod.Run]:
    cfg = _load_config(args)
    m = re.fullmatch(r"([^/]+)/([^/]+)/seed(\d+)", args.run or "")
    if not m:
        raise DnndistError("--run VARIANT/INIT/seedN is required with --config (see 'dnndist runs')")
    run = cfgmod.Run(m[1], m[2], int(m[3]))
    if run not in cfgmod.runs(cfg):
        raise DnndistError(f"run {run.name} is not part of this config (see 'dnndist runs')")
    return cfg, run


def _settings(args: argparse.Namespace, kind: str) -> Any:
    """The --settings JSON, checked against the config schema (one line naming a bad key)."""
    return cfgmod.check_settings(json.loads(args.settings), kind)


def _run_settings(args: argparse.Namespace) -> RunSettings:
    if args.settings:
        return RunSettings.from_dict(_settings(args, "run"))
    return RunSettings.from_dict(cfgmod.run_settings(*_config_and_run(args)))


def _data_settings(args: argparse.Namespace) -> DataSettings:
    if args.settings:
        return DataSettings.from_dict(_settings(args, "data"))
    return DataSettings.from_dict(cfgmod.data_settings(_load_config(args)))


def _extract_settings(args: argparse.Namespace) -> ExtractSettings:
    if args.settings:
        return ExtractSettings.from_dict(_settings(args, "extract"))
    return ExtractSettings.from_dict(cfgmod.extract_settings(*_config_and_run(args)))


def cmd_runs(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    if cfg["stacked"]:
        for group in cfgmod.stack_groups(cfg):
            print(f"{group.name}: " + " ".join(r.name for r in group.runs))
    else:
        for run in cfgmod.runs(cfg):
            print(run.name)
    return 0


def cmd_power(args: argparse.Namespace) -> int:
    """The power of every claim row's rule at the config's seeds, and the seeds each needs."""
    from dnndist import models, power, tables
    from dnndist.settings import ModelSettings

    cfg = cfgmod.load(args.config, check_paths=False)  # a plan of seeds and layers: no data needed
    claimed = tables.claims_variant(r.variant for r in cfgmod.runs(cfg))  # the variant the claims table decides
    runs = [r for r in cfgmod.runs(cfg) if r.variant == claimed]
    seeds_per_init: dict[str, set[int]] = {}
    for r in runs:
        seeds_per_init.setdefault(r.init, set()).add(r.seed)
    n_seeds = min(len(s) for s in seeds_per_init.values())
    net = models.build(ModelSettings.from_dict(cfgmod.run_settings(cfg, runs[0])["model"]))
    specs = [sp for sp in net.layer_specs if sp.analysed]  # features and gradients: the analysed layers
    rules = power.claim_rules(
        sorted(seeds_per_init),
        [sp.name for sp in net.layer_specs],  # the weights table has every weight layer
        [sp.name for sp in specs if sp.kind == "conv"],
        [sp.name for sp in specs if sp.post],
        [sp.name for sp in specs],
    )
    table = power.power_table(rules, n_seeds, args.effect, args.experiments)
    if args.csv:
        print(table[power.COLUMNS].to_csv(index=False), end="")
    else:
        print(
            f"power of each claim's rule at {n_seeds} seeds ({args.effect:g} seed-SDs from the claim's boundary, "
            f"{args.experiments} simulated experiments per world; dnndist.power):"
        )
        print(table.to_string(index=False))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from dnndist.data import download_cifar10

    download_cifar10(args.url, args.md5 or None, args.out)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def cmd_data(args: argparse.Namespace) -> int:
    from dnndist.data import build_store

    build_store(_data_settings(args), args.out, archive=args.archive, workers=args.workers)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dnndist.train import train_run

    summary = train_run(_run_settings(args), args.data, args.out, threads=args.threads, progress=args.progress)
    print(json.dumps({"status": summary["status"], **summary["final"]}))
    return 0


def _torch_threads(threads: int | None) -> None:
    """torch's intra-op threads, where the command was given --threads."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _group_settings(args: argparse.Namespace, kind: str, of_run: Callable[[Any, cfgmod.Run], Any]) -> list[Any]:
    """A stack group's settings, one per run: the --settings JSON list (checked as ``kind``), or
    ``of_run(config, run)`` for each run of --group of the --config files."""
    if args.settings:
        return list(_settings(args, kind))
    cfg = _load_config(args)
    groups = {g.name: g for g in cfgmod.stack_groups(cfg)}
    if args.group not in groups:
        raise DnndistError(f"--group must be one of {sorted(groups)}")
    return [of_run(cfg, r) for r in groups[args.group].runs]


def cmd_train_stacked(args: argparse.Namespace) -> int:
    from dnndist.train import train_stack

    settings = [RunSettings.from_dict(s) for s in _group_settings(args, "stacked", cfgmod.run_settings)]
    if len(args.out) != len(settings):
        raise DnndistError(f"--out needs one run directory per run ({len(settings)}), got {len(args.out)}")
    for summary in train_stack(settings, args.data, args.out, threads=args.threads, progress=args.progress):
        print(json.dumps({"run": summary["run"], "status": summary["status"], **summary["final"]}))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from dnndist.runcache import restore

    restore(args.entry, args.out)
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from dnndist.docs import render
    from dnndist.io import write_text

    write_text(args.out, render(args.results, args.tables, args.figures, args.configfiles or [], args.out))
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from dnndist.extract import EXTRACTORS, extract_run

    _torch_threads(args.threads)
    settings = _extract_settings(args)
    if args.kind != "all":
        EXTRACTORS[args.kind](settings, args.checkpoints, args.data, args.out)
        return 0
    extract_run(settings, args.checkpoints, args.data, args.out)  # one process: the interpreter and torch once
    return 0


def run_table_functions(
    groups: dict[str, Any],
    features: Any,
    grad_groups: dict[str, Any],
    epochs: list[int],
    settings: StatsSettings,
    *,
    computed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """How each per-run table of ``dnndist.outputs`` (``run_tables()``) is computed from a run's
    opened stores: name -> a function of no arguments returning the table. ``computed``: tables
    already computed, by name (the weights and spectrum tables, with the variant's other runs':
    ``stats.weight_and_spectrum_tables``)."""
    from dnndist import stats

    first_last = [epochs[0], epochs[-1]]
    functions = {
        "weights": lambda: stats.weight_table(groups, settings),
        "features": lambda: stats.feature_table(features),
        "weight_hist": lambda: stats.weight_histograms(groups, first_last),
        "feature_hist": lambda: stats.feature_histograms(features, first_last),
        "em_ab": lambda: stats.em_ab_table(
            grad_groups, stats.stage_epochs(epochs, settings.claims_at, features.attrs.get("best_epoch"))
        ),
        "spectrum": lambda: stats.spectrum_table(groups),
    }
    return {**functions, **{name: (lambda table=table: table) for name, table in (computed or {}).items()}}


def open_run_stores(weights: Path, features: Path, gradients: Path) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """A run's three stores, verified (every chunk read once) and opened lazily: the weights'
    layer groups, the features' root, the gradients' conv layer groups (emission, absorption)."""
    from dnndist import stats
    from dnndist.io import layer_groups, open_store_lazily

    for store in (weights, features, gradients):
        integrity.verify_store(store)
    # old-layout stores (features named count/mean/min/max) open under the current names; of the
    # gradients, the tables read the conv layers' emission and absorption
    grad_groups = {
        layer: open_store_lazily(gradients, layer, dask=False) for layer in layer_groups(gradients, stats.EMISSION)
    }
    return stats.open_layer_groups(weights), open_store_lazily(features, dask=False), grad_groups


def write_run_tables(stores: list[tuple[Path, Path, Path]], out_dirs: list[Path], settings: StatsSettings) -> None:
    """Every per-run table of several runs (weights, features, gradients stores each) into each
    run's ``out_dir``/<table>.csv, in one process: the imports, the reference bands of
    ``stats.gaussian_reference`` (cached per size) and the weight statistics and spectra (vectorised
    over the runs' tensors) are shared; each table is what ``stats-run`` writes for the run alone."""
    from dnndist import stats
    from dnndist.io import write_text

    opened = [open_run_stores(*paths) for paths in stores]
    weight_tables = stats.weight_and_spectrum_tables([groups for groups, _, _ in opened], settings)
    for (lazy, features, grad_groups), (weights, spectrum), out in zip(opened, weight_tables, out_dirs):
        groups = {layer: ds.compute() for layer, ds in lazy.items()}  # read once (a run's, then freed), not per epoch
        epochs = [int(e) for e in next(iter(groups.values()))["epoch"].values]
        computed = {"weights": weights, "spectrum": spectrum}
        compute = run_table_functions(groups, features, grad_groups, epochs, settings, computed=computed)
        for name in outputs.run_tables():  # what the workflow expects of every run
            write_text(Path(out) / f"{name}.csv", compute[name]().to_csv(index=False))


def cmd_stats_run(args: argparse.Namespace) -> int:
    settings = StatsSettings.from_dict(_settings(args, "stats"))
    write_run_tables([(args.weights, args.features, args.gradients)], [args.out_dir], settings)
    return 0


def cmd_stats_runs(args: argparse.Namespace) -> int:
    settings = StatsSettings.from_dict(_settings(args, "stats"))
    dirs = [Path(d) for d in args.run_dirs]
    stores = [(d / "weights.zarr", d / "features.zarr", d / "gradients.zarr") for d in dirs]
    parts = _balanced(list(range(len(dirs))), min(args.workers, len(dirs)))
    jobs = [([stores[i] for i in part], [dirs[i] / "stats" for i in part]) for part in parts]
    if len(jobs) == 1:
        write_run_tables(*jobs[0], settings)
        return 0
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # the other parts in fresh processes (spawn: nothing of this one's threads or state), the first
    # here; each run's tables do not depend on which process computes them (one BLAS thread each)
    pool = ProcessPoolExecutor(len(jobs) - 1, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(write_run_tables, *job, settings) for job in jobs[1:]]
        write_run_tables(*jobs[0], settings)
        for future in futures:
            future.result()
    except BrokenProcessPool:
        raise DnndistError("a statistics worker process died (out of memory?); rerun with --workers 1") from None
    finally:
        pool.shutdown(cancel_futures=True)  # on an error here, without waiting for the other parts
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _balanced(items: list[int], parts: int) -> list[list[int]]:
    """``items`` in ``parts`` contiguous pieces whose sizes differ by at most one."""
    size, extra = divmod(len(items), parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def cmd_stats_combine(args: argparse.Namespace) -> int:
    import pandas as pd

    from dnndist import stats
    from dnndist.io import write_text

    if args.kind == "training":
        df = stats.training_table(pd.concat([pd.read_csv(p) for p in args.inputs], ignore_index=True))
        df = df.sort_values([c for c in df.columns if c != "value"], kind="stable").reset_index(drop=True)
    else:
        df = stats.combine(args.inputs)
    write_text(args.out, df.to_csv(index=False))
    if args.summary:
        shared = df if args.kind == "training" else stats.shared_epochs(df)  # a diverged run's metrics stop early
        write_text(args.summary, stats.aggregate_seeds(shared).to_csv(index=False))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import pandas as pd

    from dnndist import plots

    figure = outputs.FIGURE[args.figure]
    plots.use_style(args.style)
    options = {name: getattr(args, name) for name in figure.options}  # e.g. Fig 4's --init and --layers
    figure.function()(pd.read_csv(args.table), args.pdf, args.png, **dict(figure.kwargs), **options)
    return 0


def cmd_outputs(args: argparse.Namespace) -> int:
    print(outputs.markdown())
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    import pandas as pd

    from dnndist import tables

    table = outputs.TABLE[args.name]
    read = lambda name: pd.read_csv(getattr(args, name)) if getattr(args, name) else None  # noqa: E731
    for name in table.extra:
        if not getattr(args, name):
            raise DnndistError(f"table {args.name} needs --{name} (JSON; see dnndist table --help)")
    extra = {name: json.loads(getattr(args, name)) for name in table.extra}
    df = table.function()(*(read(name) for name in table.inputs), **extra)
    caption = f"{table.caption} {conventions.note(json.loads(args.gain_conventions or '{}'))}".strip()
    tables.write_table(df, args.out_stem, caption)
    return 0


def _gain(text: str) -> str | float:
    if text in ("torch", "relu"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not torch, relu or a positive number")
    return value


def cmd_analyze(args: argparse.Namespace) -> int:
    from dnndist.analysis import analyze

    _torch_threads(args.threads)
    result = analyze(
        args.model,
        args.inputs,
        weights=args.weights,
        init=args.init,
        gain=args.gain,
        num_classes=args.num_classes,
        image_size=args.image_size,
        resize=args.resize,
        normalize=args.normalize,
        per_class=args.per_class,
        max_inputs=args.max_inputs,
        batch_size=args.batch_size,
        sample_size=args.sample_size,
        histogram_bins=args.bins,
        emission=args.emission,
        gradient_inputs=args.gradient_inputs,
        gradient_batch_size=args.gradient_batch_size,
        gradient_split=args.gradient_split,
        device=args.device,
        model_options=json.loads(args.model_options) if args.model_options else None,
        channels_last=args.channels_last,
    )
    init = result.weights.attrs["init"]
    compared = f" (compared with {result.reference_init})" if init != result.reference_init else ""
    print(
        f"{result.name}: {len(result.layers)} Conv2d/Linear layers, {int(result.table['params'].sum()):,} weights and biases"
        f"; init {init}{compared}, epoch {result.epoch}"
        + (f"; inputs {result.features.attrs['inputs_per_split']}" if result.features is not None else "")
    )
    print(result.summary())
    if args.out:
        written = result.write(args.out, figures=args.figures)
        names = sorted({p.relative_to(args.out).parts[0] for p in written})
        print(f"wrote {args.out}/: {', '.join(names)}")
    return 0


def cmd_workflow(args: argparse.Namespace) -> int:
    from dnndist import resources

    if args.path:
        print(resources.workflow_root())
        return 0
    dest = Path(args.init)
    written = resources.init_deployment(dest, force=args.force)
    print(f"wrote {dest}/: {', '.join(p.name for p in written)}")
    print(f"run it: cd {dest} && snakemake --cores all --configfile presets/demo.yaml")
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    from dnndist import tensorboard

    for run in args.run:
        out = tensorboard.write_events(run, args.out, args.kinds, args.max_bins)
        print(f"wrote {out}")
    print(f"browse with: tensorboard --logdir {args.out}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnndist", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # what a user runs first; then the stages the workflow's rules call
    for add in (
        _analyze_command,
        _workflow_command,
        _tensorboard_command,
        _power_command,
        _runs_command,
        _outputs_command,
    ):
        add(sub)
    for add in (
        _download_cifar10_command,
        _data_command,
        _train_command,
        _train_stacked_command,
        _restore_command,
        _extract_command,
        _stats_run_command,
        _stats_runs_command,
        _stats_combine_command,
        _plot_command,
        _docs_command,
        _table_command,
    ):
        add(sub)
    return p


def _runs_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``runs`` sub-command (list the runs of a config)."""

    s = sub.add_parser("runs", help="list the runs of a config")
    s.add_argument("--config", action="append", required=True, help="config file(s), later ones overlay earlier ones")
    s.set_defaults(fn=cmd_runs)


def _power_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``power`` sub-command (seeds needed per claim)."""
    s = sub.add_parser(
        "power",
        help="the power of every claim's rule at the config's seeds, and the seeds each needs",
        description="For each row of the claims table the config would produce, simulate a world where the claim "
        "is true by --effect seed-SDs and one where it is false by as much in one comparison, decide both with the "
        "table's own rules, and print power_holds, power_does_not_hold and seeds_needed (both >= 0.8); "
        "docs/statistics.md, Power.",
    )
    s.add_argument("--config", nargs="+", required=True, help="config file(s), later ones overlay earlier ones")
    s.add_argument(
        "--effect",
        type=float,
        default=2.0,
        help="distance of each world from the claim's boundary, in seed-SDs (default 2)",
    )
    s.add_argument(
        "--experiments", type=_positive_int, default=2000, help="simulated experiments per world (default 2000)"
    )
    s.add_argument(
        "--csv",
        action="store_true",
        help="print only the CSV (claim, n_seeds, power_holds, power_does_not_hold, seeds_needed)",
    )
    s.set_defaults(fn=cmd_power)


def _download_cifar10_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``download-cifar10`` sub-command (download the CIFAR-10 archive)."""
    s = sub.add_parser("download-cifar10", help="download and checksum the CIFAR-10 binary archive")
    s.add_argument("--url", required=True, help="URL of cifar-10-binary.tar.gz")
    s.add_argument("--md5", default=None, help="expected MD5 of the archive (checked after download)")
    s.add_argument("--out", required=True, help="where the archive is written")
    s.set_defaults(fn=cmd_download)


def _data_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``data`` sub-command (build the dataset store)."""
    s = sub.add_parser("data", help="convert the configured source into the canonical zarr store")
    _settings_arg(s, with_run=False)
    s.add_argument("--archive", help="downloaded archive (cifar10 source)")
    s.add_argument("--out", required=True, help="dataset store to write (dataset.zarr)")
    s.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="processes decoding an image folder (default: the CPUs this process may use); the store does not depend on it",
    )
    s.set_defaults(fn=cmd_data)


def _train_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``train`` sub-command (train one run)."""
    s = sub.add_parser("train", help="train one run (resumes a killed one)")
    _settings_arg(s, with_run=True)
    s.add_argument("--data", required=True, help="dataset store (dataset.zarr)")
    s.add_argument("--out", required=True, help="run directory")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    s.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    s.set_defaults(fn=cmd_train)


def _train_stacked_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``train-stacked`` sub-command (train one stack group)."""
    s = sub.add_parser("train-stacked", help="train the runs of one stack group together (stacked: true)")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--settings", help="JSON list of the runs' resolved settings (what the Snakemake rules pass)")
    g.add_argument("--config", action="append", help="config file(s), later ones overlay earlier ones")
    s.add_argument("--group", help="stack group name, e.g. base-1 (with --config; see 'dnndist runs')")
    s.add_argument("--data", required=True, help="dataset store (dataset.zarr)")
    s.add_argument("--out", required=True, nargs="+", help="one run directory per run, in the group's order")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    s.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    s.set_defaults(fn=cmd_train_stacked)


def _restore_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``restore`` sub-command (a run's folder from its training cache entry)."""
    s = sub.add_parser(
        "restore", help="restore a run's checkpoints, metrics and summary from its training cache entry (stacked: true)"
    )
    s.add_argument("entry", help="the run's cache entry (<results>/cache/train/<key>)")
    s.add_argument("--out", required=True, help="the run's folder")
    s.set_defaults(fn=cmd_restore)


def _extract_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``extract`` sub-command (extract a run's stores)."""
    s = sub.add_parser(
        "extract", help="extract weights, features or gradients (or all three) of a run's checkpoints into zarr"
    )
    s.add_argument("kind", choices=["weights", "features", "gradients", "all"])
    _settings_arg(s, with_run=True)
    s.add_argument("--checkpoints", required=True, help="the run's checkpoints directory")
    s.add_argument("--data", required=True, help="dataset store (dataset.zarr)")
    s.add_argument(
        "--out",
        required=True,
        help="output store (.zarr); with 'all', the folder that receives weights.zarr, "
        "features.zarr and gradients.zarr",
    )
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    s.set_defaults(fn=cmd_extract)


def _stats_run_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``stats-run`` sub-command (one run's statistics tables)."""
    s = sub.add_parser("stats-run", help="tidy statistics tables of one run's extracted stores")
    s.add_argument("--settings", required=True, help="settings JSON (the stats section is used)")
    s.add_argument("--weights", required=True, help="the run's weights store (weights.zarr)")
    s.add_argument("--features", required=True, help="the run's features store (features.zarr)")
    s.add_argument("--gradients", required=True, help="the run's gradients store (gradients.zarr)")
    s.add_argument(
        "--out-dir",
        required=True,
        help=f"receives {', '.join(outputs.run_tables())} (.csv)",
    )
    s.set_defaults(fn=cmd_stats_run)


def _stats_runs_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``stats-runs`` sub-command (several runs' statistics tables in one process)."""
    s = sub.add_parser(
        "stats-runs",
        help="tidy statistics tables of several runs in one process (the workflow's job per variant)",
    )
    s.add_argument("--settings", required=True, help="settings JSON (the stats section is used)")
    s.add_argument(
        "--run-dirs",
        nargs="+",
        required=True,
        help="run directories, each with weights.zarr, features.zarr and gradients.zarr; each receives "
        f"stats/{{{','.join(outputs.run_tables())}}}.csv, the tables stats-run writes for it",
    )
    s.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="processes that share the runs (default 1); the tables do not depend on it where each "
        "process has one BLAS thread (OMP_NUM_THREADS=1, as the workflow sets)",
    )
    s.set_defaults(fn=cmd_stats_runs)


def _stats_combine_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``stats-combine`` sub-command (combine per-run tables)."""
    s = sub.add_parser(
        "stats-combine", help="combine per-run tables; aggregate over seeds (mean and 95 %% CI over seeds)"
    )
    s.add_argument("kind", choices=[t.name for t in outputs.STATS])
    s.add_argument("--inputs", nargs="+", required=True, help="per-run tables (CSV) to combine")
    s.add_argument("--out", required=True, help="combined table (CSV)")
    s.add_argument("--summary", help="also write the seed aggregate (mean and 95 %% CI over seeds)")
    s.set_defaults(fn=cmd_stats_combine)


def _plot_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``plot`` sub-command (draw one figure)."""
    s = sub.add_parser("plot", help="draw one figure (PDF and PNG) from its tidy table")
    s.add_argument("figure", choices=list(outputs.FIGURE))
    s.add_argument("--table", required=True, help="the tidy table the figure is drawn from (CSV)")
    s.add_argument("--style", help="matplotlib style file")
    s.add_argument("--init", help="init shown in Fig 4")
    s.add_argument("--layers", nargs="*", default=[], help="conv layers shown in Fig 4 (default: all)")
    s.add_argument("--pdf", required=True, help="PDF to write")
    s.add_argument("--png", required=True, help="PNG to write")
    s.set_defaults(fn=cmd_plot)


def _outputs_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``outputs`` sub-command (list the outputs)."""
    s = sub.add_parser("outputs", help="list every statistics table, figure and table (Markdown; dnndist.outputs)")
    s.set_defaults(fn=cmd_outputs)


def _docs_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``docs`` sub-command (write the reproduction document)."""
    s = sub.add_parser("docs", help="write the reproduction document (Markdown) from the tables and figures")
    s.add_argument("--results", required=True, help="the results folder (for the run's provenance and logs)")
    s.add_argument("--tables", nargs="*", default=[], help="the tables stage's Markdown files, in document order")
    s.add_argument("--figures", nargs="*", default=[], help="the figures' PNG files, in document order")
    s.add_argument(
        "--configfiles", nargs="*", help="the config files the workflow was run with (stamped in the document)"
    )
    s.add_argument("--out", required=True, help="Markdown file to write")
    s.set_defaults(fn=cmd_docs)


def _table_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``table`` sub-command (write one table)."""
    s = sub.add_parser("table", help="write one table as CSV, Markdown and LaTeX")
    s.add_argument("name", choices=list(outputs.TABLE))
    s.add_argument("--variants", help="factors: JSON mapping each variant to its model/train/input settings")
    s.add_argument("--stages", help='claims_stages: JSON list of the stages (stats.claims_at), e.g. [10, "best"]')
    s.add_argument(
        "--gain-conventions", help="JSON mapping each variant to its init.gain convention (named in the caption)"
    )
    for name in [n for n in outputs.stats_files() if any(n in t.inputs for t in outputs.TABLES)]:
        s.add_argument(
            f"--{name.replace('_', '-')}",
            help=f"{name}.csv (the per-seed table)" if "summary" not in name else f"{name}.csv",
        )
    s.add_argument("--out-stem", required=True, help="path without extension")
    s.set_defaults(fn=cmd_table)


def _analyze_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``analyze`` sub-command (the statistics of one model)."""
    s = sub.add_parser(
        "analyze",
        help="the workflow's statistics of one model (a registry or torchvision model, given weights)",
        description="Weights statistics (moments, ranges, tail index, WeightWatcher spectral metrics) of every "
        "Conv2d/Linear layer of one model; with --inputs also feature statistics and emission/absorption. "
        "Prints a per-layer summary; --out writes the stores, CSVs and figures.",
    )
    s.add_argument(
        "--model",
        required=True,
        help="a registry model (paper_cnn, resnet18_cifar, ...) or torchvision:<name> (built with weights=None: no download)",
    )
    s.add_argument(
        "--weights",
        help="local state dict (.pth/.pt read with weights_only=True, or .safetensors) loaded into the model",
    )
    s.add_argument(
        "--inputs", help="image folder or .tar.gz (<class>/<image> or <split>/<class>/<image>) for feature statistics"
    )
    s.add_argument(
        "--out",
        help="folder that receives weights.zarr (+ features.zarr, gradients.zarr), layers.csv and the tidy CSVs, figures",
    )
    s.add_argument(
        "--init",
        help="init the weights are compared with (init_std, std_ratio_to_init) and labelled with (default: a dnndist "
        "checkpoint's own; other weights are labelled 'unknown' and compared with torch_default)",
    )
    s.add_argument(
        "--gain", type=_gain, default="torch", help="gain convention of --init: torch, relu or a number (default torch)"
    )
    s.add_argument("--num-classes", type=_positive_int, help="classifier outputs of a model built without --weights")
    s.add_argument("--model-options", help='JSON registry model settings, e.g. \'{"depth": 6, "norm": "batch"}\'')
    _analyze_input_args(s)
    s.set_defaults(fn=cmd_analyze)


def _analyze_input_args(s: argparse.ArgumentParser) -> None:
    """``analyze``'s options for the inputs, the feature and gradient passes, the figures and the device."""
    s.add_argument(
        "--image-size",
        type=_positive_int,
        help="side of the centre crop of --inputs images (default 224 for torchvision models, else 32)",
    )
    s.add_argument(
        "--resize",
        type=_positive_int,
        help="resize the shorter image side to this before the crop (default: --image-size)",
    )
    s.add_argument(
        "--normalize",
        choices=["dataset", "imagenet", "none"],
        default="dataset",
        help="input normalisation: the images' own per-channel mean/std (default), ImageNet's, or none (x/255)",
    )
    s.add_argument("--per-class", type=_positive_int, help="at most this many images per class (the first by name)")
    s.add_argument(
        "--max-inputs", type=_positive_int, help="at most this many inputs per split for the feature statistics"
    )
    s.add_argument("--batch-size", type=_positive_int, default=256, help="inputs per forward pass (default 256)")
    s.add_argument(
        "--sample-size",
        type=_positive_int,
        default=16,
        help="inputs whose raw features features.zarr keeps (default 16)",
    )
    s.add_argument("--bins", type=_positive_int, default=100, help="bins of each feature histogram (default 100)")
    _analyze_emission_args(s)
    s.add_argument(
        "--figures",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --out: weights.png, features.png and one ESD plot per layer (esd/<layer>.png)",
    )
    s.add_argument("--device", help="cpu, cuda, mps or auto (default: cpu)")
    s.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute features and gradients on a channels_last copy of the model (default: on, as the workflow)",
    )
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def _analyze_emission_args(s: argparse.ArgumentParser) -> None:
    """``analyze``'s options for the emission/absorption pass."""
    s.add_argument(
        "--emission",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="emission/absorption of conv layers over the first --gradient-inputs inputs (default: on with --inputs)",
    )
    s.add_argument(
        "--gradient-inputs", type=_positive_int, default=64, help="inputs of the emission/absorption pass (default 64)"
    )
    s.add_argument(
        "--gradient-split",
        default=None,
        help="the split (sub-folder of --inputs) whose first inputs the emission/absorption pass takes (default: the first)",
    )
    s.add_argument(
        "--gradient-batch-size",
        type=_positive_int,
        default=32,
        help="inputs per backward pass of the emission/absorption pass (default 32; more on a GPU)",
    )


def _workflow_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``workflow`` sub-command (deploy the workflow)."""
    s = sub.add_parser(
        "workflow",
        help="deploy the Snakemake workflow this dnndist carries, or print where it is",
        description="The workflow (Snakefile, config.yaml, environment.yml, workflow/, presets/, profiles/) of this dnndist: "
        "--init DIR copies a runnable deployment into DIR; --path prints its folder, e.g. "
        "snakemake --snakefile $(dnndist workflow --path)/Snakefile --cores all --configfile my.yaml",
    )
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--init",
        metavar="DIR",
        help="copy Snakefile, config.yaml, environment.yml, workflow/, presets/ and profiles/ into DIR (created if needed)",
    )
    g.add_argument("--path", action="store_true", help="print the folder holding the packaged Snakefile")
    s.add_argument("--force", action="store_true", help="with --init: overwrite files that already exist in DIR")
    s.set_defaults(fn=cmd_workflow)


def _tensorboard_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``tensorboard`` sub-command (TensorBoard events of a run)."""
    s = sub.add_parser(
        "tensorboard",
        help="a run's weight, feature and gradient histograms as TensorBoard events (one step per checkpoint)",
    )
    s.add_argument(
        "--run",
        required=True,
        nargs="+",
        help="run directories holding weights.zarr, features.zarr, gradients.zarr (several: e.g. results/demo/runs/*/*/*)",
    )
    s.add_argument(
        "--out", required=True, help="TensorBoard log directory; each run is written to OUT/<variant>/<init>/seed<seed>"
    )
    s.add_argument(
        "--kinds",
        nargs="+",
        choices=["weights", "features", "gradients"],
        default=["weights", "features", "gradients"],
        help="stores to export (default: all three; each must exist)",
    )
    s.add_argument(
        "--max-bins",
        type=_positive_int,
        default=100,
        help="most bins of a weight or gradient histogram (sqrt(n) bins, at least 10; default 100)",
    )
    s.set_defaults(fn=cmd_tensorboard)


def _check_writers(args: argparse.Namespace) -> None:
    """Refuse to write into a results folder another workflow holds (dnndist.results_lock)."""
    for name in ("out", "out_dir", "out_stem"):
        value = getattr(args, name, None)
        for out in value if isinstance(value, list) else [value] if value else []:
            results_lock.check_writer(out)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("fontTools", "matplotlib", "PIL"):  # e.g. 110 lines of font subsetting per PDF
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # a glyph looked up in math fonts the machine lacks (STIX, cm*) falls back to DejaVu Sans, which
    # has it: 21 warnings a figure, about nothing that shows
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    try:
        _check_writers(args)
        return args.fn(args)
    except DnndistError as exc:  # one line, whatever the message a library gave (torch's span several)
        print(f"dnndist {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"dnndist {args.command}: error: --settings is not valid JSON ({exc})", file=sys.stderr)
        return 2
    except OSError as exc:  # missing input, read-only or full disk: the path and the reason, no traceback
        print(
            f"dnndist {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        print(f"dnndist {args.command}: interrupted", file=sys.stderr)
        return 130
