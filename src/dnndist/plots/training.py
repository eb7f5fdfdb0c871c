"""Fig 1: loss and accuracy over epochs; and the first run of a table, which most figures draw."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import matplotlib.transforms
import numpy as np
import pandas as pd

from dnndist.plots.common import (
    INIT_COLORS,
    INIT_LABELS,
    SPLIT_STYLES,
    STAT_LABELS,
    _band,
    _inits,
    band_label,
    note_figure,
    save,
)
from dnndist.stats import diverged_runs


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
