"""What every figure shares: the init colours and labels, the style and the writer, layers per page and the seed-interval bands."""

from __future__ import annotations

import re
import textwrap
import zlib
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.transforms  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dnndist.conventions import (  # noqa: E402 - torch-free (figures need no torch)
    INIT_NAMES,
    INITS,
    UNKNOWN_INIT,
)
from dnndist.io import atomic_path  # noqa: E402

GROUP_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#17becf")


class _PerName(dict):
    """A colour or label per init (its ``InitSpec``'s, also for an init added to the registry later),
    and for any other name (a recorded run's group, which takes the place of the init in its
    stores): the colour of its place among the groups ``name_groups`` was given (else of a stable
    hash of the name), the name itself as its label."""

    def __init__(self, known: dict[str, str], colours: bool) -> None:
        super().__init__(known)
        self.colours = colours

    def __missing__(self, name: str) -> str:
        spec = INITS.get(name)  # an init declared after this module was imported
        if not self.colours:
            return spec.label if spec else str(name)
        return spec.colour if spec else GROUP_COLORS[zlib.crc32(str(name).encode()) % len(GROUP_COLORS)]


INIT_COLORS = _PerName({**{n: s.colour for n, s in INITS.items()}, UNKNOWN_INIT: "#666666"}, colours=True)
INIT_LABELS = _PerName({**{n: s.label for n, s in INITS.items()}, UNKNOWN_INIT: "init unknown"}, colours=False)
_GROUPS: list[str] = []  # names beyond the registry, in the order the figures show them


def name_groups(names: Sequence[str]) -> None:
    """The names beyond the init registry that the next figures show (recorded groups), in order:
    each gets its own colour (the first len(GROUP_COLORS)) and its place after the inits."""
    _GROUPS[:] = [str(n) for n in names if n not in INITS and n != UNKNOWN_INIT]
    for k, name in enumerate(_GROUPS[: len(GROUP_COLORS)]):
        dict.__setitem__(INIT_COLORS, name, GROUP_COLORS[k])


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
    """The inits (or recorded groups) in ``df``: the registry's order, then the groups' (``name_groups``), then by name."""
    present = set(df["init"])
    known = [i for i in (*INIT_NAMES, UNKNOWN_INIT, *_GROUPS) if i in present]
    return known + sorted(str(i) for i in present - set(known))


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
