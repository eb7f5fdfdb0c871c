"""Figs 3 and 4: pre-activation distributions per layer and split, and emission and absorption per channel."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from dnndist import DnndistError
from dnndist.conventions import (  # torch-free (figures need no torch)
    CONSTANT_INITS,
)
from dnndist.plots.common import (
    INIT_COLORS,
    INIT_LABELS,
    MAX_ROWS,
    SPLIT_ORDER,
    _inits,
    evenly,
    layer_order,
    save,
    subset_note,
)
from dnndist.plots.training import _first_run


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
