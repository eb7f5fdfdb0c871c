"""Figures: one plotting function per figure, each drawn from one tidy table.

Each figure has a ``draw_*`` function that returns the matplotlib Figure (so tests can inspect
it) and a thin ``fig_*`` wrapper that saves it as PDF and PNG. Colours are fixed per init
(``INIT_COLORS``) so an init looks the same in every figure; the shared style file
(workflow/style/dnndist.mplstyle) sets sizes for single-column paper width.

Seed summaries (``*_summary.csv``) carry ``mean``, ``ci_low``, ``ci_high`` and ``n_seeds``; the
interval is a 95 % t-interval over seeds. Bands are drawn only where ``n_seeds`` > 1 and every
band label names the actual number of seeds (``band_label``).
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.transforms  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dnndist import DnndistError, spectral  # noqa: E402
from dnndist.conventions import (  # noqa: E402 - torch-free (figures need no torch)
    CONSTANT_INITS,
    INIT_NAMES,
    INITS,
    UNKNOWN_INIT,
    family,
)
from dnndist.io import atomic_path  # noqa: E402
from dnndist.stats import diverged_runs  # noqa: E402

INIT_COLORS = {**{n: s.colour for n, s in INITS.items()}, UNKNOWN_INIT: "#666666"}  # an unknown init: grey
INIT_LABELS = {**{n: s.label for n, s in INITS.items()}, UNKNOWN_INIT: "init unknown"}
STAT_LABELS = {"loss": "cross-entropy loss (nat)", "accuracy": "accuracy (fraction)"}
SPLIT_STYLES = {"train": "-", "valid": ":", "test": "--"}  # Fig 1: one line style per split


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


def _inits(df: pd.DataFrame) -> list[str]:
    present = set(df["init"])
    return [i for i in (*INIT_NAMES, UNKNOWN_INIT) if i in present]


# --------------------------------------------------------------------------- layers and page size
MAX_ROWS = 6  # rows of layer panels in one figure: 6 x 1.5 in and a legend fit a page
MAX_COLUMNS = 6  # columns of layer panels (Fig 5)
MAX_LAYER_TICKS = 12  # Fig 6: more layers than this are listed down the y axis, not across
_CLASSIFIER = re.compile(r"(?:^|\.)(?:fc|linear|classifier|head)")


def _name_key(name: str) -> tuple:
    """Depth order from a layer name alone: numbers compared as numbers (conv10 after conv9,
    layer2.0.conv1 before layer2.0.downsample.0), classifier layers (fc*, classifier*, head*) last."""
    return bool(_CLASSIFIER.search(name)), [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def layer_order(df: pd.DataFrame) -> list[str]:
    """The layers of a tidy table in depth order: by its ``depth`` column where it has one, else by
    name (``_name_key``); never alphabetical (which puts ``fc`` between ``conv1`` and ``layer1``)."""
    if "depth" in df:
        return list(dict.fromkeys(df.sort_values("depth", kind="stable")["layer"]))
    return sorted(dict.fromkeys(df["layer"]), key=_name_key)


def evenly(items: Sequence, k: int) -> list:
    """At most ``k`` of ``items``, evenly spaced, the first and the last always among them."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))]


def subset_note(shown: int, total: int, what: str = "layers") -> str:
    """What a figure that shows only some layers says about the rest ('' when it shows all)."""
    return "" if shown >= total else f"{shown} of {total} {what}, evenly spaced in depth (all in the tables)"


def note_figure(text: str) -> plt.Figure:
    """A figure with nothing to draw says so, in words, instead of showing empty axes."""
    fig = plt.figure(figsize=(3.3, 1.0))
    fig.text(0.5, 0.5, "\n".join(textwrap.wrap(text, 60)), ha="center", va="center", color="0.3", gid="note")
    return fig


# --------------------------------------------------------------------------- seed intervals
def seed_counts(df: pd.DataFrame) -> tuple[int, int]:
    """(smallest, largest) ``n_seeds`` of the rows of a seed summary that have a mean."""
    n = df.loc[df["mean"].notna(), "n_seeds"] if "n_seeds" in df else pd.Series(dtype=float)
    n = n.dropna()
    return (int(n.min()), int(n.max())) if len(n) else (0, 0)


def band_label(df: pd.DataFrame) -> str:
    """What the lines and bands drawn from seed summary rows are, true to their number of seeds."""
    lo, hi = seed_counts(df)
    if hi <= 1:
        return "one seed: no interval"
    n = str(hi) if lo == hi else f"{max(lo, 2)}-{hi}"
    note = " (1 where no band)" if lo < 2 else ""
    return f"mean and 95 % t-interval over {n} seeds{note}"


def _band(ax: plt.Axes, d: pd.DataFrame, x: str, color, alpha: float = 0.2) -> None:
    """Fill the t-interval where there is one (more than one seed and finite bounds)."""
    ok = d["ci_low"].notna() & d["ci_high"].notna()
    if "n_seeds" in d:
        ok &= d["n_seeds"] > 1
    if ok.any():
        ax.fill_between(d[x], d["ci_low"].where(ok), d["ci_high"].where(ok), color=color, alpha=alpha, linewidth=0)


# --------------------------------------------------------------------------- Fig 1
def _one_variant(df: pd.DataFrame, variant: str | None) -> tuple[pd.DataFrame, str, int]:
    variants = list(dict.fromkeys(df["variant"]))
    if variant is None:
        variant = "base" if "base" in variants else variants[0]
    return df[df["variant"] == variant], variant, len(variants)


TRAINING_PANELS = (  # (splits, statistic, title, y scale)
    (("train", "test"), "loss", "loss", "linear"),
    (("train", "test"), "loss", "loss, log scale", "log"),
    (("valid", "test"), "accuracy", "accuracy", "linear"),
)


def _same_split(df: pd.DataFrame, a: str, b: str) -> bool:
    """Whether splits ``a`` and ``b`` have identical metrics (the same images: data.valid_split test)."""
    keys = ["init", "epoch", "statistic"]
    da, db = (df[df["split"] == s].set_index(keys)["mean"].sort_index() for s in (a, b))
    return len(da) > 0 and da.index.equals(db.index) and np.allclose(da.to_numpy(), db.to_numpy(), equal_nan=True)


def draw_training(summary: pd.DataFrame, variant: str | None = None) -> plt.Figure:
    """Fig 1: train and test loss (linear and log axis) and validation and test accuracy per init
    over epochs, for one variant (``base`` or the first): mean over seeds and, with more than one
    seed, the 95 % t-interval. When the validation split is the test split (identical metrics),
    only test is drawn and the panel says so."""
    df, variant, n_variants = _one_variant(summary, variant)
    if df["epoch"].nunique() < 2:  # given weights (model.weights): evaluated, not trained
        return note_figure(
            f"Nothing was trained (variant {variant}: epoch {df['epoch'].min()} only), so there are no "
            "training curves; the loss and accuracy of the weights are in the training table."
        )
    diverged = {init: n for (_, init), n in diverged_runs(df).items()}
    valid_is_test = _same_split(df, "valid", "test")
    fig, axes = plt.subplots(len(TRAINING_PANELS), 1, figsize=(3.3, 5.6), sharex=True)  # single-column width
    for ax, panel in zip(axes, TRAINING_PANELS):
        _training_panel(ax, df, panel, diverged, valid_is_test)
    axes[-1].set_xlabel("epoch")
    if n_variants > 1:
        fig.suptitle(f"variant {variant} (of {n_variants})")
    _training_legend(fig, df, diverged)
    return fig


def _training_panel(
    ax: plt.Axes,
    df: pd.DataFrame,
    panel: tuple[tuple[str, ...], str, str, str],
    diverged: dict[str, int],
    valid_is_test: bool,
) -> None:
    """One panel of Fig 1 (a ``TRAINING_PANELS`` entry): the mean curve and band per init and split."""
    splits, stat, title, scale = panel
    if valid_is_test:
        splits = tuple(s for s in splits if s != "valid")
    sub = df[df["split"].isin(splits) & (df["statistic"] == stat)]
    for init in _inits(sub):
        for split in splits:
            d = sub[(sub["init"] == init) & (sub["split"] == split)].sort_values("epoch")
            if d.empty or d["mean"].isna().all():
                continue
            ax.plot(
                d["epoch"],
                d["mean"],
                SPLIT_STYLES[split],
                color=INIT_COLORS[init],
                linewidth=0.9,
                gid=f"{init}|{split}|{stat}",
                marker="x" if init in diverged else None,
                markevery=[-1] if init in diverged else None,
            )
            _band(ax, d, "epoch", INIT_COLORS[init], alpha=0.15)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(STAT_LABELS[stat].replace(" (", ", log axis (") if scale == "log" else STAT_LABELS[stat])
    names = ", ".join(f"{s} {_style_name(s)}" for s in splits)
    ax.set_title(f"{title}: {names}" + (" (valid = test: same images)" if valid_is_test and stat == "accuracy" else ""))
    if scale == "log":
        ax.set_yscale("log")
        _plain_log_labels(ax)
    if stat == "loss":
        _clip_off_scale(ax, sub, log=scale == "log")


def _training_legend(fig: plt.Figure, df: pd.DataFrame, diverged: dict[str, int]) -> None:
    """Fig 1's legend of inits (diverged ones marked and counted) under the panels, and the layout."""
    handles = [
        plt.Line2D(
            [],
            [],
            color=INIT_COLORS[i],
            marker="x" if i in diverged else None,
            label=INIT_LABELS[i]
            + (f" (diverged: {diverged[i]} seed{'s' * (diverged[i] != 1)})" if i in diverged else ""),
        )
        for i in _inits(df)
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=2 if len(handles) > 3 else 1,
        bbox_to_anchor=(0.5, 0.0),
        title=band_label(df[df["statistic"].isin(("loss", "accuracy"))]),
    )
    rows = math.ceil(len(handles) / 2) if len(handles) > 3 else len(handles)
    fig.tight_layout(rect=(0, min(0.35, (0.3 + 0.13 * rows) / 5.6), 1, 1))


def _plain_log_labels(ax: plt.Axes, axis: str = "y") -> None:
    """Label a log y (or x) axis with plain numbers (0.01, 0.6, 1, 2); when it spans less than two
    decades, label 2, 3 and 5 times each power of ten too, and every minor tick when it spans less
    than a factor of 4, so that a short range still reads."""

    def label(v: float, _pos: int, minor: bool = False) -> str:
        if v <= 0:
            return ""
        lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6)
        lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
        if minor and hi / lo <= 4:  # less than a decade on the axis: label every minor tick
            return f"{v:g}"
        if minor and (lead not in (2, 3, 5) or hi / lo > 100):
            return ""
        return f"{v:g}"

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(matplotlib.ticker.FuncFormatter(label))
    target.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, pos: label(v, pos, minor=True)))


def _style_name(split: str) -> str:
    return {"-": "solid", ":": "dotted", "--": "dashed"}[SPLIT_STYLES[split]]


def fig_training(summary: pd.DataFrame, pdf: str | Path, png: str | Path, variant: str | None = None) -> None:
    save(draw_training(summary, variant), pdf, png)


def _clip_off_scale(ax: plt.Axes, sub: pd.DataFrame, factor: float = 20.0, log: bool = False) -> None:
    """Keep the axis on the bulk of the runs: inits whose values exceed ``factor`` times the
    median run's are named with their last value instead of stretching the axis (on a log axis
    too: there the point is to resolve the small differences between the other runs)."""
    last = sub.sort_values("epoch").groupby(["init", "split"])["mean"].last().groupby(level="init").max()
    typical = last.median()
    off = last[last > factor * typical]
    if off.empty or not np.isfinite(typical):
        return
    kept = sub[~sub["init"].isin(off.index)]
    if log:
        low = pd.concat([kept["mean"], kept.get("ci_low", kept["mean"])]).where(lambda v: v > 0).min()
        high = pd.concat([kept["mean"], kept.get("ci_high", kept["mean"])]).max()
        ax.set_ylim(low / 1.1, high * 1.25)
    else:
        ax.set_ylim(0, kept["mean"].max() * 1.15)
    note = "\n".join(f"{INIT_LABELS[i]}: {v:.3g} (off scale)" for i, v in off.items())
    ax.text(0.98, 0.95, note, transform=ax.transAxes, ha="right", va="top", fontsize=5, color="0.3")


def _first_run(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["seed"] == df["seed"].min()) & (df["variant"] == df["variant"].iloc[0])]


# --------------------------------------------------------------------------- Fig 0
def _x_range(df: pd.DataFrame) -> tuple[float, float]:
    """The x range of a panel: every value of the non-constant inits, and of a constant init's
    tensor that overlaps them (one wholly outside, a point far away, would squeeze the rest: it
    gets an arrow at the edge instead)."""
    random = df[~df["init"].isin(CONSTANT_INITS)]
    d = random if len(random) else df
    lo, hi = float(d["min"].min()), float(d["max"].max())
    for _, t in df[df["init"].isin(CONSTANT_INITS)].groupby(["init", "epoch"]):
        tlo, thi = float(t["min"].min()), float(t["max"].max())
        if tlo <= hi and thi >= lo:
            lo, hi = min(lo, tlo), max(hi, thi)
    pad = 0.04 * (hi - lo) if hi > lo else max(0.1 * abs(lo), 0.05)
    return lo - pad, hi + pad


def draw_glance(hist: pd.DataFrame) -> plt.Figure:
    """Fig 0, the report's headline: each init's weight distribution in each layer (columns, in
    depth order; at most MAX_COLUMNS, evenly spaced) as a ridgeline, one row per init: the outline
    at the first checkpoint, filled at the last (seed 0 of the first variant). Each row is scaled
    to its own peak (shapes, not heights, compare); the x axis is set by the non-constant inits,
    and a distribution outside it is an arrow at the edge with its value. Triangles mark the min
    and max at the last checkpoint; dotted lines mark -1 and +1 where they fall inside."""
    df = _first_run(hist)
    df = df[df["param"] == "weight"]
    epochs = sorted(df["epoch"].unique())
    ends = [epochs[0], epochs[-1]] if len(epochs) > 1 else epochs
    inits = _inits(df)
    every = layer_order(df)
    layers = evenly(every, MAX_COLUMNS)
    fig, axes = plt.subplots(1, len(layers), figsize=(6.8, 0.32 * len(inits) + 0.95), squeeze=False, sharey=True)
    for ax, layer in zip(axes[0], layers):
        sub = df[(df["layer"] == layer) & df["epoch"].isin(ends)]
        lo, hi = _x_range(sub)
        for k, init in enumerate(inits):
            _ridge(ax, sub[sub["init"] == init], len(inits) - 1 - k, INIT_COLORS[init], ends, (lo, hi))
        ax.set_xlim(lo, hi)
        for v in (-1.0, 1.0):
            if lo <= v <= hi:
                ax.axvline(v, color="0.45", linestyle=":", linewidth=0.6)
        ax.set_title(layer, fontsize=7)
        ax.set_xlabel("weight value", fontsize=6)
        ax.tick_params(axis="x", labelsize=5.5)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)
    axes[0, 0].set_yticks(range(len(inits)), [INIT_LABELS[i] for i in reversed(inits)], fontsize=6)
    axes[0, 0].set_ylim(-0.15, len(inits) - 0.05)
    when = (
        f"outline: epoch {ends[0]}{' (initialisation)' if ends[0] == 0 else ''}; filled: epoch {ends[-1]}"
        if len(ends) > 1
        else f"epoch {ends[0]}, the only checkpoint"
    )
    note = subset_note(len(layers), len(every))
    fig.suptitle(
        f"Weight distributions per init, seed {df['seed'].min()}: {when}; each row scaled to its own peak"
        + (f"; {note}" if note else ""),
        fontsize=6.5,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.22 / (0.32 * len(inits) + 0.95)))
    return fig


def _ridge(ax: plt.Axes, d: pd.DataFrame, row: int, color: str, ends: Sequence[int], xlim: tuple[float, float]) -> None:
    """One init's row of a Fig 0 panel: a curve per checkpoint (outline first, filled last), or a
    spike for a constant tensor, or an arrow at the panel's edge when it lies outside ``xlim``."""
    lo, hi = xlim
    peaks = [float(d[d["epoch"] == e]["density"].max()) for e in ends]
    scale = 0.85 / max([p for p in peaks if np.isfinite(p) and p > 0] or [1.0])
    for e in ends:
        t = d[d["epoch"] == e].sort_values("x")
        if t.empty:
            continue
        last = e == ends[-1]
        vmin, vmax = float(t["min"].iloc[0]), float(t["max"].iloc[0])
        if vmin > hi or vmax < lo:  # all of it beyond the axis: an arrow at the edge with its value
            if last:
                right = vmin > hi
                text = f"{float(t['mean'].iloc[0]):.3g} →" if right else f"← {float(t['mean'].iloc[0]):.3g}"
                ax.annotate(
                    text,
                    (1.0 if right else 0.0, row + 0.3),
                    xycoords=("axes fraction", "data"),
                    ha="right" if right else "left",
                    va="center",
                    fontsize=5.5,
                    color=color,
                )
            continue
        if t["density"].isna().all():  # constant tensor: a spike at its value
            ax.vlines(
                vmin,
                row,
                row + 0.85,
                color=color,
                linewidth=1.4 if last else 0.8,
                linestyle="-" if last else "--",
                gid="point",
            )
            continue
        y = row + np.clip(t["density"].fillna(0).to_numpy(), 0, None) * scale
        edges = _hist_edges(t)
        if last:
            ax.stairs(y, edges, baseline=row, fill=True, color=color, alpha=0.45, linewidth=0)
            ax.stairs(y, edges, baseline=row, color=color, linewidth=0.6)
            ax.plot([max(vmin, lo), min(vmax, hi)], [row, row], "^", color=color, markersize=2.2, clip_on=False)
        else:
            ax.stairs(y, edges, baseline=None, color=color, linewidth=0.6, linestyle="--", alpha=0.9)


def fig_glance(hist: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    save(draw_glance(hist), pdf, png)


# --------------------------------------------------------------------------- Fig 2
def _hist_edges(d: pd.DataFrame) -> np.ndarray:
    """Bin edges of one tensor's equal-width histogram rows (sorted by ``x``)."""
    x = d["x"].to_numpy()
    if {"min", "max"} <= set(d) and np.isfinite(d["min"].iloc[0]) and np.isfinite(d["max"].iloc[0]):
        return np.linspace(d["min"].iloc[0], d["max"].iloc[0], len(x) + 1)
    w = (x[-1] - x[0]) / (len(x) - 1) if len(x) > 1 else 1.0
    return np.concatenate([x - w / 2, [x[-1] + w / 2]])


def draw_weight_distributions(hist: pd.DataFrame, params: Sequence[str] = ("weight", "bias")) -> plt.Figure:
    """Fig 2: weight and bias distributions per layer (rows, in depth order), before and after
    training (columns), one line per init (seed 0 of the first variant): density histograms over
    each tensor's full min..max range on a log density axis, so single large values show.
    Triangles at the foot of a panel mark each init's min and max; dotted lines mark -1 and +1
    where they are in range. A constant tensor (ones, zeros before training) is a point mass: a
    vertical line with a triangle at its value, named in the panel's title ("all = 1: ones").
    At most MAX_ROWS layers (evenly spaced in depth, the legend says so). With one checkpoint
    (given weights) there is no before/after: ``_draw_checkpoint_weights``."""
    df = _first_run(hist)
    params = [p for p in params if p in set(df["param"])]
    epochs = sorted(df["epoch"].unique())
    if len(epochs) == 1:
        return _draw_checkpoint_weights(df, params)
    every = layer_order(df)
    layers = evenly(every, MAX_ROWS)
    cols = [(p, e) for p in params for e in (epochs[0], epochs[-1])]
    height = 1.45 * len(layers) + 0.55
    fig, axes = plt.subplots(len(layers), len(cols), figsize=(6.8, height), squeeze=False)
    for r, layer in enumerate(layers):
        for c, (param, epoch) in enumerate(cols):
            ax = axes[r, c]
            ax.set_title(f"{layer} {param}, epoch {epoch}" + (" (init)" if epoch == 0 else ""), fontsize=6)
            sub = df[(df["layer"] == layer) & (df["param"] == param) & (df["epoch"] == epoch)]
            if sub.empty:
                ax.text(0.5, 0.5, f"no {param}", transform=ax.transAxes, ha="center", va="center", color="0.4")
                ax.set_axis_off()
                continue
            _draw_tensor_panel(ax, sub)
            if c == 0:
                ax.set_ylabel("density (log)")
            if r == len(layers) - 1:
                ax.set_xlabel(f"{param} value")
    _weights_legend(fig, df, subset_note(len(layers), len(every)), height)
    return fig


GRID_COLUMNS = 4  # Fig 2 with one checkpoint: panels per row


def _draw_checkpoint_weights(df: pd.DataFrame, params: Sequence[str]) -> plt.Figure:
    """Fig 2 with one checkpoint (given weights, model.weights): one panel per tensor that exists
    (a layer without bias has no bias panel), in depth order, GRID_COLUMNS to a row; at most
    MAX_ROWS rows (evenly spaced tensors beyond that, the legend says so)."""
    present = set(zip(df["layer"], df["param"]))
    tensors = [(layer, p) for layer in layer_order(df) for p in params if (layer, p) in present]
    shown = evenly(tensors, MAX_ROWS * GRID_COLUMNS)
    rows = math.ceil(len(shown) / GRID_COLUMNS)
    height = 1.3 * rows + 0.55
    fig, axes = plt.subplots(rows, GRID_COLUMNS, figsize=(6.8, height), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(shown):
            fig.delaxes(ax)
            continue
        layer, param = shown[k]
        ax.set_title(f"{layer} {param}", fontsize=6)
        _draw_tensor_panel(ax, df[(df["layer"] == layer) & (df["param"] == param)])
        if k % GRID_COLUMNS == 0:
            ax.set_ylabel("density (log)")
        if k + GRID_COLUMNS >= len(shown):
            ax.set_xlabel("value")
    note = subset_note(len(shown), len(tensors), "tensors")
    _weights_legend(
        fig, df, f"epoch {df['epoch'].iloc[0]}, the only checkpoint" + (f"; {note}" if note else ""), height
    )
    return fig


def _weights_legend(fig: plt.Figure, df: pd.DataFrame, note: str, height: float) -> None:
    handles = [plt.Line2D([], [], color=INIT_COLORS[i], label=INIT_LABELS[i]) for i in _inits(df)]
    title = f"seed {df['seed'].min()}, variant {df['variant'].iloc[0]}" + (f"; {note}" if note else "")
    fig.legend(handles=handles, loc="upper center", ncol=min(8, len(handles)), bbox_to_anchor=(0.5, 1.0), title=title)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))


SAME_COLOR = "0.3"  # Fig 2: one curve for several inits whose tensors are identical (the same draw)


def _same_draws(sub: pd.DataFrame) -> list[list[str]]:
    """The inits of a panel grouped by identical tensors (same range and histogram): PyTorch's
    default bias, drawn from the same seed, is the same for every init that leaves biases alone."""
    groups: dict[tuple, list[str]] = {}
    for init in _inits(sub):
        d = sub[sub["init"] == init].sort_values("x")
        key = (
            round(float(d["min"].iloc[0]), 12) if "min" in d else None,
            round(float(d["max"].iloc[0]), 12) if "max" in d else None,
            tuple(np.round(d["density"].fillna(-1).to_numpy(), 9)),
        )
        groups.setdefault(key, []).append(init)
    return list(groups.values())


def _draw_tensor_panel(ax: plt.Axes, sub: pd.DataFrame) -> None:
    """One tensor's panel of Fig 2: a density line per init (one grey line for inits whose tensors
    are identical), the axes set by the non-constant inits; a constant init outside them is an arrow
    at the edge with its value, one inside is a vertical line (a point mass) or its histogram."""
    random = sub[~sub["init"].isin(CONSTANT_INITS)]
    scale = random if len(random) else sub
    positive = scale["density"][scale["density"] > 0]
    top = float(positive.max()) if len(positive) else 1.0
    floor = min(float(positive.min()) / 3, top / 30) if len(positive) else 1e-3  # >= 1.5 decades: labelled log ticks
    xlim = _x_range(sub) if {"min", "max"} <= set(sub) else (float(sub["x"].min()), float(sub["x"].max()))
    notes = [note for inits in _same_draws(sub) for note in _draw_tensor(ax, sub, inits, xlim, (floor, top))]
    ax.set_yscale("log")
    ax.set_ylim(floor, top * 2)
    _plain_log_labels(ax)
    ax.set_xlim(*xlim)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
    for v in (-1.0, 1.0):
        if xlim[0] <= v <= xlim[1]:
            ax.axvline(v, color="0.45", linestyle=":", linewidth=0.6)
    if notes:
        ax.set_title(f"{ax.get_title()}\n{_note_lines(list(dict.fromkeys(notes)))}", fontsize=5.5)


def _draw_tensor(
    ax: plt.Axes, sub: pd.DataFrame, inits: list[str], xlim: tuple[float, float], ylim: tuple[float, float]
) -> list[str]:
    """One tensor of ``inits`` (identical when several) in a Fig 2 panel; the title notes it needs."""
    (lo, hi), (floor, top) = xlim, ylim
    init = inits[0]
    d = sub[sub["init"] == init].sort_values("x")
    vmin = float(d["min"].iloc[0]) if "min" in d else float(d["x"].min())
    vmax = float(d["max"].iloc[0]) if "max" in d else float(d["x"].max())
    color = INIT_COLORS[init] if len(inits) == 1 else SAME_COLOR
    names = ", ".join(INIT_LABELS[i] for i in inits)
    notes = [f"grey: {len(inits)} inits, identical values"] if len(inits) > 1 else []
    if vmin > hi or vmax < lo:  # wholly outside the axis (a constant init): an arrow at the edge
        right = vmin > hi
        value = float(d["mean"].iloc[0]) if "mean" in d else vmin
        ax.plot(
            [1.0 if right else 0.0],
            [0.93],
            ">" if right else "<",
            color=color,
            markersize=3.5,
            transform=ax.transAxes,
            clip_on=False,
            gid=f"{init}|off",
        )
        return [*notes, f"{names} at {value:.3g} {'→' if right else '←'}"]
    foot = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
    if d["density"].isna().all():  # constant tensor: a point mass at its value
        ax.axvline(vmin, color=color, linewidth=1.0, alpha=0.8, zorder=1, gid=f"{init}|point")
        ax.plot([vmin], [0.97], "v", color=color, markersize=3.5, transform=foot, clip_on=False)
        return [*notes, f"all = {vmin:.3g}: {names}"]
    ax.stairs(
        np.clip(d["density"].fillna(0).to_numpy(), floor, top * 2),
        _hist_edges(d),
        baseline=floor,
        color=color,
        linewidth=0.7,
        gid=f"{init}|hist" if len(inits) == 1 else "same|hist",
    )
    ax.plot(
        [max(vmin, lo), min(vmax, hi)], [0.015, 0.015], "^", color=color, markersize=2.5, transform=foot, clip_on=False
    )
    return notes


def _note_lines(notes: list[str], width: int = 50, most: int = 2) -> str:
    """Notes joined by '; ' into at most ``most`` lines of about ``width`` characters, never
    breaking a note; '...' where some are left out."""
    lines: list[str] = []
    for note in notes:
        if lines and len(lines[-1]) + 2 + len(note) <= width:
            lines[-1] += f"; {note}"
        else:
            lines.append(note)
    return "\n".join(lines[:most]) + (" ..." if len(lines) > most else "")


def fig_weight_distributions(hist: pd.DataFrame, pdf: str | Path, png: str | Path, param: str | None = None) -> None:
    save(draw_weight_distributions(hist, (param,) if param else ("weight", "bias")), pdf, png)


# --------------------------------------------------------------------------- Fig 3
def draw_features(hist: pd.DataFrame) -> plt.Figure:
    """Fig 3: pre-activation feature distributions per layer (rows, in depth order; at most MAX_ROWS,
    evenly spaced) and input split (columns), before (dashed) and after (solid) training, one colour
    per init (seed 0); over all inputs of each split. Each panel lists every init's std before ->
    after, right of the panel. Constant inits (ones, zeros) are not drawn (their activations span
    orders of magnitude more) but their std is listed. With one checkpoint (given weights): one solid line, one std."""
    df = _first_run(hist)
    every = layer_order(df)
    layers = evenly(every, MAX_ROWS)
    splits = [s for s in SPLIT_ORDER if s in set(df["split"])] + sorted(
        set(df["split"]) - set(SPLIT_ORDER)
    )  # + dnndist analyze's
    epochs = sorted({df["epoch"].min(), df["epoch"].max()})
    styles = dict(zip(epochs, ("--", "-"))) if len(epochs) == 2 else {epochs[0]: "-"}
    height = 1.5 * len(layers) + 0.5
    fig, axes = plt.subplots(len(layers), len(splits), figsize=(6.8, height), squeeze=False)
    for r, layer in enumerate(layers):
        for c, split in enumerate(splits):
            ax = axes[r, c]
            _feature_panel(ax, df[(df["layer"] == layer) & (df["split"] == split)], styles)
            ax.set_title(
                f"{layer}, {split}" + ("" if split == "inputs" else " inputs"), fontsize=6
            )  # analyze: "inputs"
            if c == 0:
                ax.set_ylabel("density (log)")
            if r == len(layers) - 1:
                ax.set_xlabel("pre-activation value")
    handles = [
        plt.Line2D([], [], color=INIT_COLORS[i], label=INIT_LABELS[i]) for i in _inits(df) if i not in CONSTANT_INITS
    ]
    handles += [plt.Line2D([], [], color="0.3", linestyle=style, label=f"epoch {e}") for e, style in styles.items()]
    note = subset_note(len(layers), len(every))
    fig.legend(
        handles=handles, loc="upper center", ncol=min(7, len(handles)), bbox_to_anchor=(0.5, 1.0), title=note or None
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.55 if note else 0.4) / height))
    return fig


def _feature_panel(ax: plt.Axes, sub: pd.DataFrame, styles: dict[int, str]) -> None:
    """One layer and split of Fig 3: a density line per drawn init and epoch, and the std list."""
    notes, hidden = [], []  # (text, colour) of drawn inits (right) and of constant ones (left)
    for init in _inits(sub):
        stds = [sub.loc[(sub["init"] == init) & (sub["epoch"] == e), "std"] for e in styles]
        std_text = " \u2192 ".join(f"{s.iloc[0]:.3g}" if len(s) else "-" for s in stds)
        outside = sub.loc[sub["init"] == init, "outside"].max() if "outside" in sub else 0.0
        if init in CONSTANT_INITS:
            hidden.append((f"{INIT_LABELS[init]}: {std_text}", INIT_COLORS[init]))
            continue
        if outside > 1e-3:  # values beyond the histogram's range: in the std, not in the curve
            std_text += f" ({100 * outside:.1f} % off range)"
        notes.append((std_text, INIT_COLORS[init]))
        for epoch, style in styles.items():
            d = sub[(sub["init"] == init) & (sub["epoch"] == epoch)]
            ax.plot(
                d["x"],
                d["density"],
                style,
                color=INIT_COLORS[init],
                linewidth=0.8 if style == "-" else 0.6,
                gid=f"{init}|{epoch}",
            )
    ax.set_yscale("log")
    step = 0.075  # the std list stands right of the panel, so that the y axis fits the densities
    header = "std, epoch " + " \u2192 ".join(str(e) for e in styles) + ":"
    rows = [(header, "0.2", "std-header"), *((t, c, "std") for t, c in notes)]
    if hidden:
        rows += [("not drawn, std:", "0.2", "std-header"), *((t, c, "std") for t, c in hidden)]
    for k, (text, color, gid) in enumerate(rows):
        ax.text(
            1.03, 1.0 - step * k, text, transform=ax.transAxes, ha="left", va="top", fontsize=4.6, color=color, gid=gid
        )


def fig_features(hist: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    save(draw_features(hist), pdf, png)


# --------------------------------------------------------------------------- Fig 4
WHISKERS = (5, 95)


def draw_emission(table: pd.DataFrame, init: str | None = None, layers: Sequence[str] = ()) -> plt.Figure:
    """Fig 4: emission and absorption per channel (the table's, the first 16, of each conv layer, or of ``layers``),
    box plots over inputs, for one init (seed 0, last checkpoint). Every panel has its own y axis.
    Without ``layers``, every conv layer in depth order, at most MAX_ROWS (evenly spaced, said above)."""
    import seaborn as sns

    df = _first_run(table)
    df = df[df["epoch"] == df["epoch"].max()]
    init = init if init in set(df["init"]) else _inits(df)[0]
    df = df[df["init"] == init]
    present = layer_order(df)
    missing = [name for name in layers if name not in present]
    if missing:
        raise DnndistError(f"plots.emission_layers: {missing} not among the analysed conv layers {present}")
    chosen = list(layers) or evenly(present, MAX_ROWS)
    how = "plots.emission_layers" if layers else "evenly spaced in depth; all in the tables"
    note = f"\n{len(chosen)} of {len(present)} conv layers ({how})" if len(chosen) < len(present) else ""
    layers = chosen
    fig, axes = plt.subplots(len(layers), 2, figsize=(6.8, 1.5 * len(layers) + 0.5), squeeze=False)
    for r, layer in enumerate(layers):
        for c, measure in enumerate(("emission", "absorption")):
            ax = axes[r, c]
            d = df[(df["layer"] == layer) & (df["measure"] == measure)]
            sns.boxplot(
                data=d,
                x="channel",
                y="value",
                ax=ax,
                color=INIT_COLORS[init],
                fliersize=0.8,
                linewidth=0.5,
                whis=WHISKERS,
            )
            ax.set_title(f"{layer} {measure} ({_channels_text(d, measure)})", fontsize=6)
            ax.set_xlabel("channel" if r == len(layers) - 1 else "")
            ax.set_ylabel("sum of local-gradient norms" if c == 0 else "")
    n_inputs = (
        int(df.groupby(["layer", "measure", "channel"])["sample"].nunique().max()) if "sample" in df and len(df) else 0
    )
    fig.suptitle(
        f"{INIT_LABELS[init]}, epoch {int(df['epoch'].max())}: box = quartiles and median over {n_inputs} inputs, "
        f"whiskers = {WHISKERS[0]}th-{WHISKERS[1]}th percentile, dots = beyond; each panel its own y axis{note}",
        y=1.0,
        fontsize=6,
    )
    fig.tight_layout()
    return fig


def _channels_text(d: pd.DataFrame, measure: str) -> str:
    """'16 output channels', or 'first 16 of 64 input channels' where the table holds only some."""
    kind = "output" if measure == "emission" else "input"
    used = int(d["channel"].nunique())
    total = int(d["layer_channels"].max()) if "layer_channels" in d and len(d) else used
    return f"{used} {kind} channels" if used >= total else f"first {used} of {total} {kind} channels"


def fig_emission(
    table: pd.DataFrame, pdf: str | Path, png: str | Path, init: str | None = None, layers: Sequence[str] = ()
) -> None:
    save(draw_emission(table, init, layers), pdf, png)


# --------------------------------------------------------------------------- Figs 5, 6
TRAJECTORY_STATS = {"std": "std", "kurtosis": "excess kurtosis", "near_zero_rel_0.1": "near-zero mass (|w| < 0.1 std)"}


def draw_trajectories(summary: pd.DataFrame, x: str = "epoch") -> plt.Figure:
    """Fig 5 (x = epoch: trajectories) or Fig 6 (x = depth: the profile at the last epoch) of weight
    std, kurtosis and near-zero mass per layer and init, for the first variant: mean over seeds and,
    with more than one seed, the 95 % t-interval. Constant inits (ones, zeros) are left out (zero
    std, undefined kurtosis) and the legend names them; the tables report them."""
    df = summary[(summary["param"] == "weight") & (summary["statistic"].isin(TRAJECTORY_STATS))]
    df = df[df["variant"] == df["variant"].iloc[0]]
    left_out = [INIT_LABELS[i] for i in _inits(df) if i in CONSTANT_INITS]
    df = df[~df["init"].isin(CONSTANT_INITS)]
    title = band_label(df) + (f"; {' and '.join(left_out)} not drawn (constant weights)" if left_out else "")
    return _draw_depth_profile(df, title) if x == "depth" else _draw_epoch_trajectories(df, title)


def _draw_epoch_trajectories(df: pd.DataFrame, title: str) -> plt.Figure:
    """Fig 5: one column per layer (depth order; at most MAX_COLUMNS, evenly spaced), one row per statistic."""
    every = layer_order(df)
    layers = evenly(every, MAX_COLUMNS)
    fig, axes = plt.subplots(len(TRAJECTORY_STATS), len(layers), figsize=(6.8, 4.6), squeeze=False, sharex=True)
    for r, stat in enumerate(TRAJECTORY_STATS):
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            sub = df[(df["statistic"] == stat) & (df["layer"] == layer)]
            _stat_lines(ax, sub, "epoch")
            ax.set_title(layer, fontsize=6)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            if stat == "std" and _spans_decade(sub):
                ax.set_yscale("log")
        axes[r, 0].set_ylabel(TRAJECTORY_STATS[stat])
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    note = subset_note(len(layers), len(every))
    _stat_legend(fig, df, title + (f"\n{note}" if note else ""), 1 - (0.5 if note else 0.35) / 4.6)
    return fig


def _draw_depth_profile(df: pd.DataFrame, title: str) -> plt.Figure:
    """Fig 6: one panel per statistic against the layers in depth order, named on the axis: across
    (x) for up to MAX_LAYER_TICKS layers, else down the y axis, first layer at the top."""
    df = df[df["epoch"] == df["epoch"].max()]
    layers = layer_order(df)
    depth = df.groupby("layer")["depth"].first().astype(int)
    ticks = [int(depth[name]) for name in layers]
    down = len(layers) > MAX_LAYER_TICKS
    height = min(9.5, 1.2 + 0.15 * len(layers)) if down else (2.2 if len(layers) <= 6 else 2.6)
    fig, axes = plt.subplots(1, len(TRAJECTORY_STATS), figsize=(6.8, height), squeeze=False, sharey=down)
    for ax, (stat, label) in zip(axes.ravel(), TRAJECTORY_STATS.items()):
        sub = df[df["statistic"] == stat]
        _stat_lines(ax, sub, "depth", across=not down)
        ax.set_title(label, fontsize=6)
        if down:
            if ax is axes[0, 0]:
                ax.set_yticks(ticks, layers, fontsize=5)
            else:
                ax.tick_params(labelleft=False)
            ax.set_xscale("log" if stat == "std" and _spans_decade(sub) else "linear")
        else:
            ax.set_xticks(
                ticks, layers, rotation=0 if len(layers) <= 6 else 45, ha="center" if len(layers) <= 6 else "right"
            )
            ax.set_yscale("log" if stat == "std" and _spans_decade(sub) else "linear")
    if down:
        axes[0, 0].invert_yaxis()  # shared: the first layer on top in every panel
        axes[0, 0].set_ylabel("layer (depth order)")
    else:
        for ax in axes.ravel():
            ax.set_xlabel("layer (depth order)")
    _stat_legend(fig, df, title, 1 - 0.5 / height)
    return fig


def _stat_lines(ax: plt.Axes, sub: pd.DataFrame, x: str, across: bool = True) -> None:
    """One line per init (mean over seeds) with its t-interval band, ``x`` across or (across=False) down."""
    for init in _inits(sub):
        d = sub[sub["init"] == init].sort_values(x)
        if d["mean"].isna().all():
            continue
        color = INIT_COLORS[init]
        if across:
            ax.plot(d[x], d["mean"], "-o", markersize=1.5, color=color, label=INIT_LABELS[init])
            _band(ax, d, x, color)
        else:
            ax.plot(d["mean"], d[x], "-o", markersize=1.5, color=color, label=INIT_LABELS[init])
            ok = d["ci_low"].notna() & d["ci_high"].notna() & (d["n_seeds"] > 1 if "n_seeds" in d else True)
            if ok.any():
                ax.fill_betweenx(
                    d[x], d["ci_low"].where(ok), d["ci_high"].where(ok), color=color, alpha=0.2, linewidth=0
                )


def _spans_decade(sub: pd.DataFrame) -> bool:
    m = sub["mean"].dropna()
    return len(m) > 0 and bool((m > 0).all()) and m.max() > 10 * m.min()


def _stat_legend(fig: plt.Figure, df: pd.DataFrame, title: str, top: float) -> None:
    handles = [
        plt.Line2D([], [], color=INIT_COLORS[i], marker="o", markersize=1.5, label=INIT_LABELS[i]) for i in _inits(df)
    ]
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=min(7, len(handles)),
        bbox_to_anchor=(0.5, 1.0),
        title=title,
        title_fontsize=6,
    )
    fig.tight_layout(rect=(0, 0, 1, top))


def fig_trajectories(summary: pd.DataFrame, pdf: str | Path, png: str | Path, x: str = "epoch") -> None:
    save(draw_trajectories(summary, x), pdf, png)


# --------------------------------------------------------------------------- Fig 7
VARIANT_STATS = {
    "near_zero_rel_0.1": "near-zero mass (|w| < 0.1 std)",
    "kurtosis": "excess kurtosis",
    "tail_index": "Hill tail index",
    "max": "largest weight",
}
MAX_VARIANT_LINES = 6  # above this many variants, Fig 7 highlights one factor (or group) per row


def variant_factors(name: str) -> list[str]:
    """The factor levels in a grid variant's name (``bn-leaky-l1_1e-05`` -> bn, leaky, l1_1e-05);
    ``base`` has none. A hyphen starts a new level only when a letter follows it."""
    return [] if name == "base" else [t for t in re.split(r"-(?=[A-Za-z])", name) if t]


def _variant_groups(variants: list[str]) -> list[tuple[str, list[str]]]:
    """Rows of the many-variant layout: one per factor level (the variants that have it), or,
    when names do not split into a few factors, consecutive groups of MAX_VARIANT_LINES variants."""
    by_size = sorted(variants, key=lambda v: len(variant_factors(v)))  # single-factor variants name the order
    factors = list(dict.fromkeys(t for v in by_size for t in variant_factors(v)))
    if 1 < len(factors) <= 8 and all(
        len([v for v in variants if f in variant_factors(v)]) < len(variants) for f in factors
    ):
        return [(f, [v for v in variants if f in variant_factors(v)]) for f in factors]
    return [
        (f"variants {k + 1}-{min(k + MAX_VARIANT_LINES, len(variants))}", variants[k : k + MAX_VARIANT_LINES])
        for k in range(0, len(variants), MAX_VARIANT_LINES)
    ]


def draw_variants(summary: pd.DataFrame) -> plt.Figure:
    """Fig 7: weight near-zero mass, kurtosis, tail index and largest weight per layer against
    depth at the last epoch, per variant (experiment factors: BN, leaky ReLU, L1/L2, binary inputs,
    depth), for the first non-constant init.

    Up to MAX_VARIANT_LINES variants: one line per variant (mean over seeds, 95 % t-interval band
    with more than one seed). More: one row per factor level; the variants with that level are
    drawn in colour, the others in grey, and the thick lines are the averages of each group."""
    df = summary[(summary["param"] == "weight") & summary["statistic"].isin(VARIANT_STATS)]
    inits = [i for i in _inits(df) if i not in CONSTANT_INITS] or _inits(df)
    df = df[df["init"] == inits[0]]
    last = df.groupby("variant")["epoch"].transform("max")
    df = df[df["epoch"] == last]
    variants = list(dict.fromkeys(df["variant"]))
    title = f"{INIT_LABELS[inits[0]]} init, last epoch"
    if len(variants) <= MAX_VARIANT_LINES:
        return _draw_variant_lines(df, variants, title)
    return _draw_variant_groups(df, variants, title)


def _variant_panel_style(ax: plt.Axes, title: str | None, xlabel: bool) -> None:
    if title:
        ax.set_title(title, fontsize=6)
    if xlabel:
        ax.set_xlabel("layer depth")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def _draw_variant_lines(df: pd.DataFrame, variants: list[str], title: str) -> plt.Figure:
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(VARIANT_STATS), figsize=(6.8, 2.4), squeeze=False)
    for ax, (stat, stat_title) in zip(axes.ravel(), VARIANT_STATS.items()):
        sub = df[df["statistic"] == stat]
        for i, v in enumerate(variants):
            d = sub[sub["variant"] == v].sort_values("depth")
            if d.empty or d["mean"].isna().all():
                continue
            ax.plot(d["depth"], d["mean"], "-o", markersize=2, linewidth=0.9, color=colors(i), label=v)
            _band(ax, d, "depth", colors(i), alpha=0.15)
        _variant_panel_style(ax, stat_title, True)
    handles = [plt.Line2D([], [], color=colors(i), marker="o", markersize=2, label=v) for i, v in enumerate(variants)]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(6, len(handles)),
        fontsize=5,
        title=f"variant ({title}; {band_label(df)})",
        title_fontsize=5,
        bbox_to_anchor=(0.5, 0.0),
    )
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    return fig


def _draw_variant_groups(df: pd.DataFrame, variants: list[str], title: str) -> plt.Figure:
    groups = _variant_groups(variants)
    by_factor = all(not label.startswith("variants ") for label, _ in groups)
    colors = plt.get_cmap("tab10")
    height = 1.15 * len(groups) + 0.7
    fig, axes = plt.subplots(len(groups), len(VARIANT_STATS), figsize=(6.8, height), squeeze=False, sharex=True)
    for r, (label, members) in enumerate(groups):
        others = [v for v in variants if v not in members]
        for c, (stat, stat_title) in enumerate(VARIANT_STATS.items()):
            ax = axes[r, c]
            sub = df[df["statistic"] == stat]
            for v in others:
                d = sub[sub["variant"] == v].sort_values("depth")
                ax.plot(d["depth"], d["mean"], "-", color="0.75", linewidth=0.5, zorder=1)
            for k, v in enumerate(members):
                d = sub[sub["variant"] == v].sort_values("depth")
                color = colors(r % 10) if by_factor else colors(k)
                ax.plot(
                    d["depth"], d["mean"], "-", color=color, linewidth=0.6, alpha=0.7 if by_factor else 1.0, zorder=2
                )
            if by_factor:
                for group, color in ((members, colors(r % 10)), (others, "0.35")):
                    avg = sub[sub["variant"].isin(group)].groupby("depth")["mean"].mean()
                    ax.plot(avg.index, avg.to_numpy(), "-o", color=color, markersize=2, linewidth=1.6, zorder=3)
            _variant_panel_style(ax, stat_title if r == 0 else None, r == len(groups) - 1)
        if by_factor:
            handles = [
                plt.Line2D([], [], color=colors(r % 10), linewidth=1.6, label=f"with {label} ({len(members)})"),
                plt.Line2D([], [], color="0.35", linewidth=1.6, label=f"without ({len(others)})"),
            ]
        else:
            handles = [plt.Line2D([], [], color=colors(k), label=v) for k, v in enumerate(members)]
            handles.append(plt.Line2D([], [], color="0.75", label="other variants"))
        axes[r, -1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=5)
        axes[r, 0].set_ylabel(label, fontsize=6)
    how = (
        "thin: each variant; thick: average over the variants with / without the factor"
        if by_factor
        else "one colour per variant of the row; grey: the other variants"
    )
    fig.suptitle(f"{len(variants)} variants ({title}; means over seeds): {how}", fontsize=6, y=1.0)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.1 / height))
    return fig


def fig_variants(summary: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    save(draw_variants(summary), pdf, png)


# --------------------------------------------------------------------------- ESD (dnndist analyze)
ESD_FLOOR = spectral.EVALS_THRESH  # WeightWatcher's: smaller eigenvalues are not fitted


def draw_esd(
    evals: np.ndarray,
    alpha: float = math.nan,
    xmin: float = math.nan,
    title: str = "",
    ax: plt.Axes | None = None,
    bins: int = 60,
    floor: float = ESD_FLOOR,
) -> plt.Figure:
    """Empirical spectral density of one weight matrix, WeightWatcher style: the eigenvalues of
    W^T W (``evals``, numpy; a conv weight's kh*kw matrices pooled, ``dnndist.spectral.esd``) as a
    density histogram over log-spaced bins on log-log axes, the fitted power law
    p(x) = (alpha - 1) / xmin * (x / xmin)^-alpha from ``xmin`` on, scaled by the tail's share of
    the eigenvalues (so it lies on the histogram), and ``xmin`` as a vertical line. Eigenvalues
    at or below ``floor`` (those WeightWatcher does not fit) are not drawn; the legend counts them.
    Without a fit (alpha NaN) only the histogram. Numpy in, no torch: ``dnndist analyze`` draws
    one per layer (esd/<layer>.png)."""
    alone = ax is None  # a figure of its own is laid out here; a panel by the caller, once for all panels
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.4, 2.6))
    else:
        fig = ax.figure
    x = np.asarray(evals, dtype=np.float64)
    x = x[np.isfinite(x)]
    below = int(np.sum(x <= floor))
    x = np.sort(x[x > floor])
    if x.size == 0:
        ax.text(
            0.5, 0.5, f"no eigenvalues above {floor:g}", transform=ax.transAxes, ha="center", va="center", color="0.4"
        )
        ax.set_title(title, fontsize=7)
        return fig
    _esd_histogram(ax, x, bins, f"ESD, {x.size} eigenvalues" + (f" (+{below} <= {floor:g})" if below else ""))
    fitted = math.isfinite(alpha) and math.isfinite(xmin) and xmin > 0
    if fitted:
        _esd_power_law(ax, x, alpha, xmin)
    ax.legend(fontsize=5.5, loc="best")
    _plain_log_labels(ax, "y")
    ax.set_xlabel("eigenvalue of W$^T$W")
    ax.set_ylabel("density")
    fit_note = f"alpha = {alpha:.2f}{_alpha_warning(x)}" if fitted else "no power-law fit"
    ax.set_title(f"{title}: {fit_note}" if title else fit_note, fontsize=7)
    if alone:
        fig.tight_layout()
    return fig


def _alpha_warning(x: np.ndarray) -> str:
    """Where alpha is not to be read (the weights table's alpha_flat_esd, alpha_few_evals): a flat
    spectrum, or few eigenvalues. ``x``: the sorted eigenvalues above the fit's floor."""
    if x[-1] < spectral.FLAT_SPREAD * x[0]:
        return " [flat ESD: no tail exponent]"
    if x.size < spectral.FEW_EVALS:
        return f" [{x.size} eigenvalues: uncertain]"
    return ""


def _esd_histogram(ax: plt.Axes, x: np.ndarray, bins: int, label: str) -> None:
    """The density histogram of the sorted eigenvalues ``x`` over log-spaced bins, on log-log axes."""
    lo, hi = float(x[0]), float(x[-1])
    edges = np.geomspace(lo, hi, bins + 1) if hi > lo else np.array([lo / 1.1, hi * 1.1])
    counts, edges = np.histogram(x, bins=edges)
    dens = counts / (x.size * np.diff(edges))
    ax.stairs(np.where(dens > 0, dens, np.nan), edges, color="#0072B2", linewidth=0.8, gid="esd", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_labels(ax, "x")


def _esd_power_law(ax: plt.Axes, x: np.ndarray, alpha: float, xmin: float) -> None:
    """The fitted power law from ``xmin`` to the largest of the sorted eigenvalues ``x``, scaled by
    the tail's share of them, and ``xmin`` as a vertical line."""
    share = float(np.sum(x >= xmin)) / x.size
    grid = np.geomspace(xmin, float(x[-1]), 50)
    ax.plot(
        grid,
        share * (alpha - 1) / xmin * (grid / xmin) ** -alpha,
        color="#D55E00",
        linewidth=1.2,
        label=f"power law, alpha = {alpha:.2f}",
        gid="fit",
    )
    ax.axvline(xmin, color="#D55E00", linestyle="--", linewidth=0.8, label=f"xmin = {xmin:.3g}", gid="xmin")


FLAT_SPECTRUM_INITS = family("orthogonal")  # every singular value 1 before training: a point, not a density


def esd_fit(evals: np.ndarray) -> spectral.PowerLawFit:
    """WeightWatcher's power-law fit of one ESD (sorted eigenvalues of W^T W): the eigenvalues
    above 1e-5 and round-off (``spectral.fit_evals``), none where WeightWatcher skips the matrix
    (fewer than 8 or more than 15000 eigenvalues)."""
    if spectral.ww_skips(evals.size, 0):
        return spectral.NOT_FITTED
    return spectral.fit_power_law(spectral.fit_evals(evals, evals.size))


def draw_esd_layers(spectrum: pd.DataFrame) -> plt.Figure:
    """Fig 8: the ESD of each weight matrix (rows: layers in depth order, at most MAX_ROWS evenly
    spaced) at the first and the last checkpoint (columns; one with one checkpoint), for the
    first init that is neither constant nor orthogonal (seed 0 of the first variant; the first
    init when there is none), from the ``spectrum`` table: the
    eigenvalues of W^T W are its squared singular values (a conv weight as its C_out x
    C_in*kh*kw reshape). Each panel is ``draw_esd`` with the fit of ``esd_fit``."""
    if spectrum.empty:
        return note_figure("no spectrum: no weight matrix with finite weights")
    df = _first_run(spectrum)
    inits = [i for i in _inits(df) if i not in (*CONSTANT_INITS, *FLAT_SPECTRUM_INITS)] or _inits(df)
    df = df[df["init"] == inits[0]]
    every = sorted(set(df["epoch"]))
    epochs = [every[0], every[-1]] if len(every) > 1 else every
    layers = layer_order(df)
    shown = evenly(layers, MAX_ROWS)
    height = 2.3 * len(shown) + 0.3
    fig, axes = plt.subplots(len(shown), len(epochs), figsize=(3.4 * len(epochs), height), squeeze=False)
    for row, layer in zip(axes, shown):
        for ax, epoch in zip(row, epochs):
            sv = df.loc[(df["layer"] == layer) & (df["epoch"] == epoch), "singular_value"].to_numpy(dtype=np.float64)
            evals = np.sort(sv**2)
            fit = esd_fit(evals)
            bins = int(np.clip(2 * np.sqrt(evals.size), 8, 40))  # 16 eigenvalues: 8 bins; 400 and more: 40
            draw_esd(evals, fit.alpha, fit.xmin, title=f"{layer}, epoch {epoch}", ax=ax, bins=bins)
    note = subset_note(len(shown), len(layers))
    run = f"{INIT_LABELS[inits[0]]} init, seed {int(df['seed'].iloc[0])}, {df['variant'].iloc[0]}"
    fig.suptitle(f"ESD of W$^T$W per layer ({run}; conv: C_out x C_in·kh·kw){'; ' + note if note else ''}", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / height))
    return fig


def fig_esd(spectrum: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    save(draw_esd_layers(spectrum), pdf, png)
