"""The sub-commands of ``dnndist`` (``dnndist.cli`` builds the parser and reports errors): each
reads its arguments, calls one stage function, and prints what it made."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnndist import DnndistError, conventions, outputs, runtables
from dnndist import config as cfgmod
from dnndist.settings import DataSettings, ExtractSettings, RunSettings, StatsSettings


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


def cmd_stats_run(args: argparse.Namespace) -> int:
    settings = StatsSettings.from_dict(_settings(args, "stats"))
    runtables.write_run_tables([(args.weights, args.features, args.gradients)], [args.out_dir], settings)
    return 0


def cmd_stats_runs(args: argparse.Namespace) -> int:
    settings = StatsSettings.from_dict(_settings(args, "stats"))
    runtables.write_runs([Path(d) for d in args.run_dirs], settings, args.workers)
    return 0


def cmd_stats_combine(args: argparse.Namespace) -> int:
    import pandas as pd

    from dnndist import stats
    from dnndist.io import write_text

    if args.kind == "training":
        df = stats.training_table(pd.concat([stats.read_table(p) for p in args.inputs], ignore_index=True))
        df = df.sort_values([c for c in df.columns if c != "value"], kind="stable").reset_index(drop=True)
    else:
        df = stats.combine(args.inputs)
    write_text(args.out, df.to_csv(index=False))
    if args.summary:
        shared = df if args.kind == "training" else stats.shared_epochs(df)  # a diverged run's metrics stop early
        write_text(args.summary, stats.aggregate_seeds(shared).to_csv(index=False))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from dnndist import plots, stats

    figure = outputs.FIGURE[args.figure]
    plots.use_style(args.style)
    options = {name: getattr(args, name) for name in figure.options}  # e.g. Fig 4's --init and --layers
    figure.function()(stats.read_table(args.table), args.pdf, args.png, **dict(figure.kwargs), **options)
    return 0


def cmd_outputs(args: argparse.Namespace) -> int:
    print(outputs.markdown())
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from dnndist import stats, tables

    table = outputs.TABLE[args.name]
    read = lambda name: stats.read_table(getattr(args, name)) if getattr(args, name) else None  # noqa: E731
    for name in table.extra:
        if not getattr(args, name):
            raise DnndistError(f"table {args.name} needs --{name} (JSON; see dnndist table --help)")
    extra = {name: json.loads(getattr(args, name)) for name in table.extra}
    df = table.function()(*(read(name) for name in table.inputs), **extra)
    caption = f"{table.caption} {conventions.note(json.loads(args.gain_conventions or '{}'))}".strip()
    tables.write_table(df, args.out_stem, caption)
    return 0


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


def cmd_report(args: argparse.Namespace) -> int:
    from dnndist.recorded import report

    print(f"wrote {report(args.runs, args.out, base=args.base, workers=args.workers)}")
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    from dnndist import tensorboard

    for run in args.run:
        out = tensorboard.write_events(run, args.out, args.kinds, args.max_bins)
        print(f"wrote {out}")
    print(f"browse with: tensorboard --logdir {args.out}")
    return 0
