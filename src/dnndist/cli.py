"""Command line: one sub-command per stage, so the workflow runs without Snakemake too.

    python -m dnndist runs  --config config.yaml [--config presets/demo.yaml]
    python -m dnndist download-cifar10 --url URL --md5 MD5 --out FILE
    python -m dnndist data  (--settings JSON | --config FILE...) --out STORE [--archive FILE]
    python -m dnndist train (--settings JSON | --config FILE... --run VARIANT/INIT/seedN) --data STORE --out RUN_DIR
    python -m dnndist extract {weights,features,gradients} (--settings JSON | --config ... --run ...) \
        --checkpoints RUN_DIR/checkpoints --data STORE --out RUN_DIR/features.zarr

Errors in user input (config, files) are reported in one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from typing import Any

from dnndist import DnndistError
from dnndist import config as cfgmod


def _settings_arg(p: argparse.ArgumentParser, with_run: bool) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--settings", help="resolved settings as JSON (what the Snakemake rules pass)")
    g.add_argument("--config", action="append", help="config file(s), later ones overlay earlier ones")
    if with_run:
        p.add_argument("--run", help="VARIANT/INIT/seedN (with --config)")


def _load_config(args: argparse.Namespace) -> dict[str, Any]:
    return cfgmod.load(args.config)


def _run_settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.settings:
        return json.loads(args.settings)
    cfg = _load_config(args)
    m = re.fullmatch(r"([^/]+)/([^/]+)/seed(\d+)", args.run or "")
    if not m:
        raise DnndistError("--run VARIANT/INIT/seedN is required with --config (see 'dnndist runs')")
    run = cfgmod.Run(m[1], m[2], int(m[3]))
    if run not in cfgmod.runs(cfg):
        raise DnndistError(f"run {run.name} is not part of this config (see 'dnndist runs')")
    return cfgmod.run_settings(cfg, run)


def _data_settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.settings:
        return json.loads(args.settings)
    return cfgmod.data_settings(_load_config(args))


def _extract_settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.settings:
        return json.loads(args.settings)
    cfg = _load_config(args)
    settings = _run_settings(args)
    r = settings["run"]
    return cfgmod.extract_settings(cfg, cfgmod.Run(r["variant"], r["init_name"], r["seed"]))


def cmd_runs(args: argparse.Namespace) -> int:
    for run in cfgmod.runs(_load_config(args)):
        print(run.name)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from dnndist.data import download_cifar10

    download_cifar10(args.url, args.md5 or None, args.out)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from dnndist.data import build_store

    build_store(_data_settings(args), args.out, archive=args.archive)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dnndist.train import train_run

    summary = train_run(_run_settings(args), args.data, args.out, threads=args.threads, progress=args.progress)
    print(json.dumps({"status": summary["status"], **summary["final"]}))
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from dnndist.extract import EXTRACTORS

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    EXTRACTORS[args.kind](_extract_settings(args), args.checkpoints, args.data, args.out)
    return 0


def cmd_stats_run(args: argparse.Namespace) -> int:
    import xarray as xr

    from dnndist import stats
    from dnndist.io import write_text

    settings = json.loads(args.settings)
    write_text(args.weights_out, stats.weight_stats_of_store(args.weights, settings).to_csv(index=False))
    features = xr.open_zarr(args.features, consolidated=False)
    write_text(args.features_out, stats.feature_table(features).to_csv(index=False))
    if args.hist_out:
        from dnndist import plots

        groups = stats.open_layer_groups(args.weights)
        epochs = [int(e) for e in next(iter(groups.values()))["epoch"].values]
        write_text(args.hist_out, plots.weight_histograms(groups, [epochs[0], epochs[-1]]).to_csv(index=False))
    return 0


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
        write_text(args.summary, stats.aggregate_seeds(df).to_csv(index=False))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import pandas as pd

    from dnndist import plots

    plots.use_style(args.style)
    table = pd.read_csv(args.table)
    if args.figure == "training":
        plots.fig_training(table, args.pdf, args.png)
    elif args.figure == "weights":
        plots.fig_weight_distributions(table, args.pdf, args.png)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dnndist", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("runs", help="list the runs of a config")
    s.add_argument("--config", action="append", required=True)
    s.set_defaults(fn=cmd_runs)

    s = sub.add_parser("download-cifar10", help="download and checksum the CIFAR-10 binary archive")
    s.add_argument("--url", required=True)
    s.add_argument("--md5", default=None)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_download)

    s = sub.add_parser("data", help="convert the configured source into the canonical zarr store")
    _settings_arg(s, with_run=False)
    s.add_argument("--archive", help="downloaded archive (cifar10 source)")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_data)

    s = sub.add_parser("train", help="train one run (resumes a killed one)")
    _settings_arg(s, with_run=True)
    s.add_argument("--data", required=True, help="dataset store (dataset.zarr)")
    s.add_argument("--out", required=True, help="run directory")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("extract", help="extract weights, features or gradients of a run's checkpoints into zarr")
    s.add_argument("kind", choices=["weights", "features", "gradients"])
    _settings_arg(s, with_run=True)
    s.add_argument("--checkpoints", required=True, help="the run's checkpoints directory")
    s.add_argument("--data", required=True, help="dataset store (dataset.zarr)")
    s.add_argument("--out", required=True, help="output store (.zarr)")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(fn=cmd_extract)

    s = sub.add_parser("stats-run", help="tidy statistics tables of one run's weights and features")
    s.add_argument("--settings", required=True, help="settings JSON (the stats section is used)")
    s.add_argument("--weights", required=True)
    s.add_argument("--features", required=True)
    s.add_argument("--weights-out", required=True)
    s.add_argument("--features-out", required=True)
    s.add_argument("--hist-out", help="tidy weight histograms (first and last checkpoint)")
    s.set_defaults(fn=cmd_stats_run)

    s = sub.add_parser("stats-combine", help="combine per-run tables; aggregate over seeds (mean, bootstrap 95 % CI)")
    s.add_argument("kind", choices=["weights", "features", "training", "weight_hist"])
    s.add_argument("--inputs", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--summary", help="also write the seed aggregate (mean, bootstrap 95 %% CI)")
    s.set_defaults(fn=cmd_stats_combine)

    s = sub.add_parser("plot", help="draw one figure (PDF and PNG) from its tidy table")
    s.add_argument("figure", choices=["training", "weights"])
    s.add_argument("--table", required=True)
    s.add_argument("--style", help="matplotlib style file")
    s.add_argument("--pdf", required=True)
    s.add_argument("--png", required=True)
    s.set_defaults(fn=cmd_plot)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.fn(args)
    except DnndistError as exc:
        print(f"dnndist {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"dnndist {args.command}: error: --settings is not valid JSON ({exc})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dnndist {args.command}: interrupted", file=sys.stderr)
        return 130
