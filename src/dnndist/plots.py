"""Figures: one plotting function per figure, each drawn from one tidy table.

Colours are fixed per init (``INIT_COLORS``) so an init looks the same in every figure;
the shared style file (workflow/style/dnndist.mplstyle) sets sizes for single-column
paper width. Each figure is saved as PDF and PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dnndist.inits import INIT_NAMES  # noqa: E402

_PALETTE = ["#0072B2", "#D55E00", "#E69F00", "#009E73", "#56B4E9", "#CC79A7", "#000000", "#999999"]  # Okabe-Ito
INIT_COLORS = dict(zip(INIT_NAMES, _PALETTE))
INIT_LABELS = {n: n.replace("_", " ") for n in INIT_NAMES}
STAT_LABELS = {"loss": "cross-entropy loss (nat)", "accuracy": "accuracy (fraction)"}


def use_style(style: str | Path | None) -> None:
    plt.style.use("default")
    if style:
        plt.style.use(str(style))


def save(fig: plt.Figure, pdf: str | Path, png: str | Path) -> None:
    for path in (pdf, png):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(pdf)
    fig.savefig(png)
    plt.close(fig)


def _inits(df: pd.DataFrame) -> list[str]:
    present = set(df["init"])
    return [i for i in INIT_NAMES if i in present]


def fig_training(summary: pd.DataFrame, pdf: str | Path, png: str | Path, variant: str | None = None) -> None:
    """Fig 1: training loss and validation accuracy per init over epochs, mean and 95 % CI over seeds."""
    df = summary if variant is None else summary[summary["variant"] == variant]
    panels = [("train", "loss", "training loss"), ("valid", "accuracy", "validation accuracy")]
    fig, axes = plt.subplots(1, 2, figsize=(6.8, 2.4), sharex=True)
    for ax, (split, stat, title) in zip(axes, panels):
        sub = df[(df["split"] == split) & (df["statistic"] == stat)]
        for init in _inits(sub):
            d = sub[sub["init"] == init].sort_values("epoch")
            for vname, dv in d.groupby("variant"):
                style = "-" if vname == (variant or d["variant"].iloc[0]) else "--"
                ax.plot(dv["epoch"], dv["mean"], style, color=INIT_COLORS[init], label=INIT_LABELS[init] if style == "-" else None)
                if dv["ci_low"].notna().any():
                    ax.fill_between(dv["epoch"], dv["ci_low"], dv["ci_high"], color=INIT_COLORS[init], alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(STAT_LABELS[stat])
        ax.set_title(title)
        if stat == "loss" and (sub["mean"] > 0).all() and sub["mean"].max() / max(sub["mean"].min(), 1e-12) > 50:
            ax.set_yscale("log")
    n_seeds = int(df["n_seeds"].max()) if len(df) else 0
    axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), title=f"init (mean, 95 % CI, {n_seeds} seed{'s' * (n_seeds != 1)})")
    fig.tight_layout()
    save(fig, pdf, png)


def weight_histograms(weights: dict, epochs: Sequence[int], max_bins: int = 60) -> pd.DataFrame:
    """Tidy density histograms of one run's weights/biases at the given epochs: sqrt(n) bins
    (10 to ``max_bins``) over the 0.5-99.5 % quantile range of each tensor. Rows also carry the
    tensor's mean and std; a constant tensor gets one row with NaN density."""
    rows = []
    for layer, ds in weights.items():
        run = {k: ds[k].values[0] for k in ("variant", "init", "seed")}
        for epoch in epochs:
            for param in ("weight", "bias"):
                x = ds[param].sel(epoch=epoch).values.ravel().astype(np.float64)
                x = x[np.isfinite(x)]
                if x.size == 0:
                    continue
                lo, hi = np.quantile(x, [0.005, 0.995])
                base = {**run, "epoch": epoch, "layer": layer, "param": param, "mean": float(x.mean()), "std": float(x.std())}
                if hi <= lo:
                    rows.append({**base, "x": float(lo), "density": np.nan})
                    continue
                bins = int(np.clip(np.sqrt(x.size), 10, max_bins))
                dens, edges = np.histogram(x, bins=bins, range=(lo, hi), density=True)
                centres = 0.5 * (edges[1:] + edges[:-1])
                rows.extend({**base, "x": float(c), "density": float(d)} for c, d in zip(centres, dens))
    return pd.DataFrame(rows)


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
