"""Figs 0 and 2: the weight distributions, at a glance (a ridgeline per init) and per tensor (log densities, biases too)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import matplotlib.transforms
import numpy as np
import pandas as pd

from dnndist.conventions import (  # torch-free (figures need no torch)
    CONSTANT_INITS,
)
from dnndist.plots.common import (
    INIT_COLORS,
    INIT_LABELS,
    MAX_COLUMNS,
    MAX_ROWS,
    _inits,
    evenly,
    layer_order,
    save,
    subset_note,
)
from dnndist.plots.training import _first_run, _plain_log_labels


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
