"""Command line: what a user runs, and one sub-command per stage of the workflow.

What a user runs:
    python -m dnndist analyze --model torchvision:resnet18 [--weights FILE.pth] [--inputs IMAGES] [--out DIR]
    python -m dnndist workflow (--path | --init DIR [--force])
    python -m dnndist report RECORDED_RUNS... --out DIR   # runs of dnndist.Recorder: stats, figures, report.html
    python -m dnndist tensorboard --run RUN_DIR... --out LOGDIR [--kinds weights features gradients]
    python -m dnndist power --config config.yaml [presets/demo.yaml]
    python -m dnndist runs  --config config.yaml [--config presets/demo.yaml]
    python -m dnndist outputs     # the statistics, figures and tables (declared in dnndist.outputs)

The stages (what the workflow's rules call; each runs without Snakemake too): download-cifar10,
data, train, train-stacked, restore, extract, stats-run(s), stats-combine, plot, table, docs;
`dnndist COMMAND --help` gives each one's options.

Errors in user input (config, files) are reported in one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from dnndist import DnndistError, commands, outputs, results_lock


def _settings_arg(p: argparse.ArgumentParser, with_run: bool) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--settings", help="resolved settings as JSON (what the Snakemake rules pass)")
    g.add_argument("--config", action="append", help="config file(s), later ones overlay earlier ones")
    if with_run:
        p.add_argument("--run", help="VARIANT/INIT/seedN (with --config)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnndist", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # what a user runs first; then the stages the workflow's rules call
    for add in (
        _analyze_command,
        _report_command,
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
    s.set_defaults(fn=commands.cmd_runs)


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
    s.set_defaults(fn=commands.cmd_power)


def _download_cifar10_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``download-cifar10`` sub-command (download the CIFAR-10 archive)."""
    s = sub.add_parser("download-cifar10", help="download and checksum the CIFAR-10 binary archive")
    s.add_argument("--url", required=True, help="URL of cifar-10-binary.tar.gz")
    s.add_argument("--md5", default=None, help="expected MD5 of the archive (checked after download)")
    s.add_argument("--out", required=True, help="where the archive is written")
    s.set_defaults(fn=commands.cmd_download)


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
    s.set_defaults(fn=commands.cmd_data)


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
    s.set_defaults(fn=commands.cmd_train)


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
    s.set_defaults(fn=commands.cmd_train_stacked)


def _restore_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``restore`` sub-command (a run's folder from its training cache entry)."""
    s = sub.add_parser(
        "restore", help="restore a run's checkpoints, metrics and summary from its training cache entry (stacked: true)"
    )
    s.add_argument("entry", help="the run's cache entry (<results>/cache/train/<key>)")
    s.add_argument("--out", required=True, help="the run's folder")
    s.set_defaults(fn=commands.cmd_restore)


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
    s.set_defaults(fn=commands.cmd_extract)


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
    s.set_defaults(fn=commands.cmd_stats_run)


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
    s.set_defaults(fn=commands.cmd_stats_runs)


def _stats_combine_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``stats-combine`` sub-command (combine per-run tables)."""
    s = sub.add_parser("stats-combine", help="combine per-run tables; their mean and 95 %% CI over seeds")
    s.add_argument("kind", choices=[t.name for t in outputs.STATS])
    s.add_argument("--inputs", nargs="+", required=True, help="per-run tables (CSV) to combine")
    s.add_argument("--out", required=True, help="combined table (CSV)")
    s.add_argument("--summary", help="also write the seed aggregate (mean and 95 %% CI over seeds)")
    s.set_defaults(fn=commands.cmd_stats_combine)


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
    s.set_defaults(fn=commands.cmd_plot)


def _outputs_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``outputs`` sub-command (list the outputs)."""
    s = sub.add_parser("outputs", help="list every statistics table, figure and table (Markdown; dnndist.outputs)")
    s.set_defaults(fn=commands.cmd_outputs)


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
    s.set_defaults(fn=commands.cmd_docs)


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
    s.set_defaults(fn=commands.cmd_table)


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
    s.set_defaults(fn=commands.cmd_analyze)


ANALYZE_SIZES = (  # analyze's positive-integer options: flag, default, help
    (
        "--image-size",
        None,
        "side of the centre crop of --inputs images (default: a dnndist checkpoint's own input "
        "size, else 224 for torchvision models and 32 for others)",
    ),
    ("--resize", None, "resize the shorter image side to this before the crop (default: --image-size)"),
    ("--per-class", None, "at most this many images per class (the first by name)"),
    ("--max-inputs", None, "at most this many inputs per split for the feature statistics"),
    ("--batch-size", 256, "inputs per forward pass (default 256)"),
    ("--sample-size", 16, "inputs whose raw features features.zarr keeps (default 16)"),
    ("--bins", 100, "bins of each feature histogram (default 100)"),
    ("--gradient-inputs", 64, "inputs of the emission/absorption pass (default 64)"),
    (
        "--gradient-batch-size",
        32,
        "inputs per backward pass of the emission/absorption pass (default 32; more on a GPU)",
    ),
)


ANALYZE_SWITCHES = (  # analyze's on/off options (default on): flag, help
    ("--emission", "emission/absorption of conv layers over the first --gradient-inputs inputs (with --inputs)"),
    ("--figures", "with --out: weights.png, features.png and one ESD plot per layer (esd/<layer>.png)"),
    ("--channels-last", "features and gradients on a channels_last copy of the model (as the workflow)"),
)


def _analyze_input_args(s: argparse.ArgumentParser) -> None:
    """``analyze``'s options for the inputs, the feature and gradient passes, the figures and the device."""
    for flag, default, text in ANALYZE_SIZES:
        s.add_argument(flag, type=_positive_int, default=default, help=text)
    s.add_argument(
        "--normalize",
        choices=["dataset", "imagenet", "none"],
        default="dataset",
        help="input normalisation: the images' own per-channel mean/std (default), ImageNet's, or none (x/255)",
    )
    for flag, text in ANALYZE_SWITCHES:
        s.add_argument(flag, action=argparse.BooleanOptionalAction, default=True, help=text)
    s.add_argument(
        "--gradient-split",
        default=None,
        help="the split (sub-folder of --inputs) whose first inputs the emission/absorption pass takes (default: the first)",
    )
    s.add_argument("--device", help="cpu, cuda, mps or auto (default: cpu)")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


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
    s.set_defaults(fn=commands.cmd_workflow)


def _report_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``report`` sub-command (statistics, figures, tables and report.html of recorded runs)."""
    s = sub.add_parser("report", help="statistics, figures, tables and report.html of dnndist.Recorder's runs")
    s.add_argument("runs", nargs="+", help="recorded run folders, or folders to search for them")
    s.add_argument("--out", required=True, help="the report's folder (a results folder: dnndist.open_results reads it)")
    s.add_argument("--base", help="the group the others are compared with (default: the first by name)")
    s.add_argument("--workers", type=_positive_int, default=1, help="processes for the per-run statistics (default 1)")
    s.set_defaults(fn=commands.cmd_report)


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
    s.set_defaults(fn=commands.cmd_tensorboard)


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
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # STIX/cm* glyphs fall back to DejaVu
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
