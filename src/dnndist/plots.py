"""Figures: one plotting function per figure, each drawn from one tidy table.

Colours are fixed per init (``INIT_COLORS``) so an init looks the same in every figure;
the shared style file (workflow/style/dnndist.mplstyle) sets sizes for single-column
paper width. Each figure is saved as PDF and PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dnndist import DnndistError  # noqa: E402
from dnndist.inits import INIT_NAMES  # noqa: E402
from dnndist.io import atomic_path  # noqa: E402
from dnndist.stats import diverged_runs  # noqa: E402

_PALETTE = ["#0072B2", "#D55E00", "#E69F00", "#009E73", "#56B4E9", "#CC79A7", "#000000", "#999999"]  # Okabe-Ito
INIT_COLORS = dict(zip(INIT_NAMES, _PALETTE))
INIT_LABELS = {n: n.replace("_", " ") for n in INIT_NAMES}
STAT_LABELS = {"loss": "cross-entropy loss (nat)", "accuracy": "accuracy (fraction)"}


def use_style(style: str | Path | None) -> None:
    plt.style.use("default")
    if style:
        plt.style.use(str(style))


def save(fig: plt.Figure, pdf: str | Path, png: str | Path) -> None:
    """Write both files atomically, without creation dates, so that the same table gives
    the same bytes."""
    for path, fmt, meta in ((pdf, "pdf", {"CreationDate": None}), (png, "png", {})):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, metadata=meta)
    plt.close(fig)


SPLIT_ORDER = ("train", "valid", "random", "test")
CONSTANT_INITS = ("ones", "zeros")  # every weight the same: their scales would squash every other curve


def _inits(df: pd.DataFrame) -> list[str]:
    present = set(df["init"])
    return [i for i in INIT_NAMES if i in present]


def fig_training(summary: pd.DataFrame, pdf: str | Path, png: str | Path, variant: str | None = None) -> None:
    """Fig 1: training loss and validation accuracy per init over epochs, mean and 95 % CI over seeds."""
    df = summary if variant is None else summary[summary["variant"] == variant]
    diverged = {init: n for (_, init), n in diverged_runs(df).items()}
    panels = [("train", "loss", "training loss"), ("valid", "accuracy", "validation accuracy")]
    fig, axes = plt.subplots(2, 1, figsize=(3.3, 4.2), sharex=True)  # single-column width
    for ax, (split, stat, title) in zip(axes, panels):
        sub = df[(df["split"] == split) & (df["statistic"] == stat)]
        for init in _inits(sub):
            d = sub[sub["init"] == init].sort_values("epoch")
            for vname, dv in d.groupby("variant"):
                style = "-" if vname == (variant or d["variant"].iloc[0]) else "--"
                label = INIT_LABELS[init] + (f" (diverged: {diverged[init]} seed{'s' * (diverged[init] != 1)})" if init in diverged else "")
                ax.plot(dv["epoch"], dv["mean"], style, color=INIT_COLORS[init], label=label if style == "-" else None,
                        marker="x" if init in diverged else None, markevery=[-1] if init in diverged else None)
                if dv["ci_low"].notna().any():
                    ax.fill_between(dv["epoch"], dv["ci_low"], dv["ci_high"], color=INIT_COLORS[init], alpha=0.2, linewidth=0)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(STAT_LABELS[stat])
        ax.set_title(title)
        if stat == "loss":
            _clip_off_scale(ax, sub)
    axes[-1].set_xlabel("epoch")
    n_seeds = int(df["n_seeds"].max()) if len(df) else 0
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, bbox_to_anchor=(0.5, 0.0),
               title=f"mean and 95 % CI over {n_seeds} seed{'s' * (n_seeds != 1)}")
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    save(fig, pdf, png)


def _clip_off_scale(ax: plt.Axes, sub: pd.DataFrame, factor: float = 20.0) -> None:
    """Keep the axis on the bulk of the runs: inits whose values exceed ``factor`` times the
    median run's are named with their last value instead of stretching the axis."""
    last = sub.sort_values("epoch").groupby("init")["mean"].last()
    typical = last.median()
    off = last[last > factor * typical]
    if off.empty or not np.isfinite(typical):
        return
    top = sub[~sub["init"].isin(off.index)]["mean"].max() * 1.15
    ax.set_ylim(0, top)
    note = "\n".join(f"{INIT_LABELS[i]}: {v:.3g} (off scale)" for i, v in off.items())
    ax.text(0.98, 0.95, note, transform=ax.transAxes, ha="right", va="top", fontsize=5, color="0.3")


def _first_run(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["seed"] == df["seed"].min()) & (df["variant"] == df["variant"].iloc[0])]


def fig_features(hist: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    """Fig 3: pre-activation feature distributions per layer (rows) and input split (columns), before
    (dashed) and after (solid) training, one colour per init (seed 0); over all inputs of each split.
    Constant inits (ones, zeros) are left out: their activations span orders of magnitude more."""
    df = _first_run(hist)
    layers = list(dict.fromkeys(df["layer"]))
    splits = [s for s in SPLIT_ORDER if s in set(df["split"])]
    first, last = df["epoch"].min(), df["epoch"].max()
    constant = set(CONSTANT_INITS)
    fig, axes = plt.subplots(len(layers), len(splits), figsize=(6.8, 1.35 * len(layers) + 0.5), squeeze=False)
    for r, layer in enumerate(layers):
        for c, split in enumerate(splits):
            ax = axes[r, c]
            sub = df[(df["layer"] == layer) & (df["split"] == split)]
            for init in _inits(sub):
                if init in constant:
                    continue
                for epoch, style in ((first, "--"), (last, "-")):
                    d = sub[(sub["init"] == init) & (sub["epoch"] == epoch)]
                    ax.plot(d["x"], d["density"], style, color=INIT_COLORS[init], linewidth=0.8 if style == "-" else 0.6)
            ax.set_yscale("log")
            ax.set_title(f"{layer}, {split} inputs")
            if c == 0:
                ax.set_ylabel("density")
            if r == len(layers) - 1:
                ax.set_xlabel("pre-activation value")
    handles = [plt.Line2D([], [], color=INIT_COLORS[i], label=INIT_LABELS[i]) for i in _inits(df) if i not in constant]
    handles += [plt.Line2D([], [], color="0.3", linestyle="--", label=f"epoch {first}"),
                plt.Line2D([], [], color="0.3", label=f"epoch {last}")]
    fig.legend(handles=handles, loc="upper center", ncol=min(7, len(handles)), bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (1.35 * len(layers) + 0.5)))
    save(fig, pdf, png)


def fig_emission(table: pd.DataFrame, pdf: str | Path, png: str | Path, init: str | None = None,
                 layers: Sequence[str] = ()) -> None:
    """Fig 4: emission and absorption per channel (first 15 of each conv layer, or of ``layers``),
    box plots over inputs, for one init (seed 0, last checkpoint)."""
    import seaborn as sns

    df = _first_run(table)
    init = init if init in set(df["init"]) else _inits(df)[0]
    df = df[df["init"] == init]
    present = list(dict.fromkeys(df["layer"]))
    missing = [name for name in layers if name not in present]
    if missing:
        raise DnndistError(f"plots.emission_layers: {missing} not among the analysed conv layers {present}")
    layers = list(layers) or present
    fig, axes = plt.subplots(len(layers), 2, figsize=(6.8, 1.5 * len(layers) + 0.3), squeeze=False, sharey="row")
    for r, layer in enumerate(layers):
        for c, measure in enumerate(("emission", "absorption")):
            ax = axes[r, c]
            d = df[(df["layer"] == layer) & (df["measure"] == measure)]
            sns.boxplot(data=d, x="channel", y="value", ax=ax, color=INIT_COLORS[init], fliersize=0.8, linewidth=0.5, whis=(5, 95))
            ax.set_title(f"{layer} {measure} ({'output' if measure == 'emission' else 'input'} channels)")
            ax.set_xlabel("channel" if r == len(layers) - 1 else "")
            ax.set_ylabel("sum of local-gradient norms" if c == 0 else "")
    fig.suptitle(f"{INIT_LABELS[init]}, epoch {int(df['epoch'].max())}", y=1.0)
    fig.tight_layout()
    save(fig, pdf, png)


TRAJECTORY_STATS = {"std": "std", "kurtosis": "excess kurtosis", "near_zero_rel_0.1": "near-zero mass (|w| < 0.1 std)"}


def fig_trajectories(summary: pd.DataFrame, pdf: str | Path, png: str | Path, x: str = "epoch") -> None:
    """Trajectories (x = epoch) or depth profile (x = depth, at the last epoch) of weight std, kurtosis
    and near-zero mass per layer and init: mean and 95 % CI over seeds. Constant inits (ones, zeros)
    are left out (zero std, undefined kurtosis); the tables report them."""
    df = summary[(summary["param"] == "weight") & (summary["statistic"].isin(TRAJECTORY_STATS))]
    df = df[(df["variant"] == df["variant"].iloc[0]) & ~df["init"].isin(CONSTANT_INITS)]
    if x == "depth":
        df = df[df["epoch"] == df["epoch"].max()]
        panels = [(None, stat) for stat in TRAJECTORY_STATS]
        fig, axes = plt.subplots(1, len(panels), figsize=(6.8, 2.2), squeeze=False)
    else:
        layers = list(dict.fromkeys(df.sort_values("depth")["layer"]))
        panels = [(layer, stat) for stat in TRAJECTORY_STATS for layer in layers]
        fig, axes = plt.subplots(len(TRAJECTORY_STATS), len(layers), figsize=(6.8, 4.6), squeeze=False, sharex=True)
    for ax, (layer, stat) in zip(axes.ravel(), panels):
        sub = df[df["statistic"] == stat] if layer is None else df[(df["statistic"] == stat) & (df["layer"] == layer)]
        for init in _inits(sub):
            d = sub[sub["init"] == init].sort_values(x)
            if d["mean"].isna().all():
                continue
            ax.plot(d[x], d["mean"], "-o", markersize=1.5, color=INIT_COLORS[init], label=INIT_LABELS[init])
            if d["ci_low"].notna().any():
                ax.fill_between(d[x], d["ci_low"], d["ci_high"], color=INIT_COLORS[init], alpha=0.2, linewidth=0)
        ax.set_title(TRAJECTORY_STATS[stat] if layer is None else f"{layer}", fontsize=6)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if stat == "std" and (sub["mean"] > 0).all() and sub["mean"].max() > 10 * sub["mean"].min():
            ax.set_yscale("log")
    if x == "depth":
        for ax in axes.ravel():
            ax.set_xlabel("layer depth")
    else:
        for r, stat in enumerate(TRAJECTORY_STATS):
            axes[r, 0].set_ylabel(TRAJECTORY_STATS[stat])
        for ax in axes[-1]:
            ax.set_xlabel("epoch")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(7, len(handles)), bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.93 if x == "depth" else 0.95))
    save(fig, pdf, png)


def fig_weight_distributions(hist: pd.DataFrame, pdf: str | Path, png: str | Path, param: str = "weight") -> None:
    """Fig 2: weight distributions per layer (rows), before vs after training (columns), one line per
    init (seed 0 of the first variant). Runs whose initial weights are constant (ones, zeros) would
    squash every axis, so they are listed in the panel as mean +- std instead of drawn."""
    df = hist[(hist["param"] == param) & (hist["seed"] == hist["seed"].min()) & (hist["variant"] == hist["variant"].iloc[0])]
    layers = list(dict.fromkeys(df["layer"]))
    epochs = sorted(df["epoch"].unique())
    first, last = epochs[0], epochs[-1]
    start = df[df["epoch"] == first].groupby("init")["std"].max()
    constant = set(start[start == 0].index)
    fig, axes = plt.subplots(len(layers), 2, figsize=(6.8, 1.45 * len(layers) + 0.4), squeeze=False)
    for r, layer in enumerate(layers):
        for c, epoch in enumerate((first, last)):
            ax = axes[r, c]
            sub = df[(df["layer"] == layer) & (df["epoch"] == epoch)]
            notes = []
            for init in _inits(sub):
                d = sub[sub["init"] == init]
                if init in constant or d["density"].isna().all():
                    notes.append(f"{INIT_LABELS[init]}: {d['mean'].iloc[0]:.3g} $\\pm$ {d['std'].iloc[0]:.2g}")
                    continue
                ax.plot(d["x"], d["density"], color=INIT_COLORS[init], label=INIT_LABELS[init])
            if notes:
                ax.text(0.99, 0.97, "\n".join(notes), transform=ax.transAxes, ha="right", va="top", fontsize=5, color="0.3")
            ax.set_title(f"{layer} {param}, epoch {epoch}" + (" (before training)" if epoch == 0 else ""))
            ax.set_ylabel("density")
            if r == len(layers) - 1:
                ax.set_xlabel(f"{param} value")
    handles = [plt.Line2D([], [], color=INIT_COLORS[i], label=INIT_LABELS[i]) for i in _inits(df) if i not in constant]
    fig.legend(handles=handles, loc="upper center", ncol=min(5, len(handles)), bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (1.45 * len(layers) + 0.4)))
    save(fig, pdf, png)


VARIANT_STATS = {"near_zero_rel_0.1": "near-zero mass (|w| < 0.1 std)", "kurtosis": "excess kurtosis",
                 "tail_index": "Hill tail index", "max": "largest weight"}


def fig_variants(summary: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    """Fig 7: weight near-zero mass, kurtosis, tail index and largest weight per layer against
    depth at the last epoch, one line per variant (experiment factors: BN, leaky ReLU, L1/L2,
    binary inputs, depth), for the first non-constant init; mean and 95 % CI over seeds."""
    df = summary[(summary["param"] == "weight") & summary["statistic"].isin(VARIANT_STATS)]
    inits = [i for i in _inits(df) if i not in CONSTANT_INITS] or _inits(df)
    df = df[df["init"] == inits[0]]
    last = df.groupby("variant")["epoch"].transform("max")
    df = df[df["epoch"] == last]
    variants = list(dict.fromkeys(df["variant"]))
    colors = plt.get_cmap("tab20" if len(variants) > 10 else "tab10")
    fig, axes = plt.subplots(1, len(VARIANT_STATS), figsize=(6.8, 2.6), squeeze=False)
    for ax, (stat, title) in zip(axes.ravel(), VARIANT_STATS.items()):
        sub = df[df["statistic"] == stat]
        for i, v in enumerate(variants):
            d = sub[sub["variant"] == v].sort_values("depth")
            if d.empty or d["mean"].isna().all():
                continue
            style = "-o" if v == variants[0] else "-"
            ax.plot(d["depth"], d["mean"], style, markersize=2, linewidth=0.9, color=colors(i % colors.N), label=v)
            if d["ci_low"].notna().any():
                ax.fill_between(d["depth"], d["ci_low"], d["ci_high"], color=colors(i % colors.N), alpha=0.15, linewidth=0)
        ax.set_title(title, fontsize=6)
        ax.set_xlabel("layer depth")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, max(1, len(labels))), fontsize=5,
               title=f"variant ({INIT_LABELS[inits[0]]} init, last epoch)", bbox_to_anchor=(0.5, 0.0))
    rows = math.ceil(len(labels) / 6) if labels else 1
    fig.tight_layout(rect=(0, min(0.45, 0.1 + 0.06 * rows), 1, 1))
    save(fig, pdf, png)
