"""Fig 8 and analyze's ESD plots: the empirical spectral density of each weight matrix, with WeightWatcher's power-law fit."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dnndist import spectral
from dnndist.conventions import (  # torch-free (figures need no torch)
    CONSTANT_INITS,
    family,
)
from dnndist.plots.common import INIT_LABELS, MAX_ROWS, _inits, evenly, layer_order, note_figure, save, subset_note
from dnndist.plots.training import _first_run, _plain_log_labels

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
