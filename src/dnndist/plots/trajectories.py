"""Figs 5, 6 and 7: weight statistics over epochs, against depth, and per experiment variant."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import matplotlib.transforms
import pandas as pd

from dnndist.conventions import (  # torch-free (figures need no torch)
    CONSTANT_INITS,
)
from dnndist.plots.common import (
    INIT_COLORS,
    INIT_LABELS,
    MAX_COLUMNS,
    MAX_LAYER_TICKS,
    _band,
    _inits,
    band_label,
    evenly,
    layer_order,
    save,
    subset_note,
)

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
