"""Figures: one plotting function per figure, each drawn from one tidy table.

Each figure has a ``draw_*`` function that returns the matplotlib Figure (so tests can inspect
it) and a thin ``fig_*`` wrapper that saves it as PDF and PNG. Colours are fixed per init
(``conventions.INITS``) so an init looks the same in every figure; the shared style file
(workflow/style/dnndist.mplstyle) sets sizes for single-column paper width. The rooms:
``common`` (colours, style, layers per page, seed bands), ``training`` (Fig 1), ``weights``
(Figs 0, 2), ``features`` (Figs 3, 4), ``trajectories`` (Figs 5-7), ``esd`` (Fig 8).

Seed summaries (``*_summary.csv``) carry ``mean``, ``ci_low``, ``ci_high`` and ``n_seeds``; the
interval is a 95 % t-interval over seeds. Bands are drawn only where ``n_seeds`` > 1 and every
band label names the actual number of seeds (``band_label``)."""

from dnndist.conventions import CONSTANT_INITS
from dnndist.plots.common import (
    INIT_COLORS,
    INIT_LABELS,
    MAX_COLUMNS,
    MAX_LAYER_TICKS,
    MAX_ROWS,
    SPLIT_ORDER,
    SPLIT_STYLES,
    STAT_LABELS,
    _inits,
    band_label,
    evenly,
    layer_order,
    name_groups,
    note_figure,
    plt,
    save,
    seed_counts,
    subset_note,
    use_style,
)
from dnndist.plots.esd import (
    ESD_FLOOR,
    FLAT_SPECTRUM_INITS,
    draw_esd,
    draw_esd_layers,
    esd_fit,
    fig_esd,
)
from dnndist.plots.features import (
    WHISKERS,
    draw_emission,
    draw_features,
    fig_emission,
    fig_features,
)
from dnndist.plots.training import (
    TRAINING_PANELS,
    _first_run,
    draw_training,
    fig_training,
)
from dnndist.plots.trajectories import (
    MAX_VARIANT_LINES,
    TRAJECTORY_STATS,
    VARIANT_STATS,
    draw_trajectories,
    draw_variants,
    fig_trajectories,
    fig_variants,
    variant_factors,
)
from dnndist.plots.weights import (
    GRID_COLUMNS,
    SAME_COLOR,
    draw_glance,
    draw_weight_distributions,
    fig_glance,
    fig_weight_distributions,
)

__all__ = [
    "CONSTANT_INITS",
    "ESD_FLOOR",
    "FLAT_SPECTRUM_INITS",
    "GRID_COLUMNS",
    "INIT_COLORS",
    "INIT_LABELS",
    "MAX_COLUMNS",
    "MAX_LAYER_TICKS",
    "MAX_ROWS",
    "MAX_VARIANT_LINES",
    "SAME_COLOR",
    "SPLIT_ORDER",
    "SPLIT_STYLES",
    "STAT_LABELS",
    "TRAINING_PANELS",
    "TRAJECTORY_STATS",
    "VARIANT_STATS",
    "WHISKERS",
    "_first_run",
    "_inits",
    "band_label",
    "draw_emission",
    "draw_esd",
    "draw_esd_layers",
    "draw_features",
    "draw_glance",
    "draw_training",
    "draw_trajectories",
    "draw_variants",
    "draw_weight_distributions",
    "esd_fit",
    "evenly",
    "fig_emission",
    "fig_esd",
    "fig_features",
    "fig_glance",
    "fig_training",
    "fig_trajectories",
    "fig_variants",
    "fig_weight_distributions",
    "layer_order",
    "name_groups",
    "note_figure",
    "plt",
    "save",
    "seed_counts",
    "subset_note",
    "use_style",
    "variant_factors",
]
