"""Every output of the workflow's statistics, figures and tables, declared once.

The Snakemake rules (``workflow/rules/common.smk``), the command line (``dnndist plot`` and
``dnndist table``: their choices and dispatch), the report (labels and captions, through the
``dnndist-caption`` directive of ``dnndist.reporting``) and the reproduction document
(``dnndist.docs``: titles and order) read these declarations. Adding a figure is its drawing
function in ``dnndist.plots`` and one ``Figure`` here; adding a table, its function in
``dnndist.tables`` and one ``Table`` here.

Torch-free and light: the drawing and table functions are named, and imported only when
called (``Figure.function``, ``Table.function``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Condition = Literal["always", "trained", "variants", "stages"]
CONDITIONS: dict[str, str] = {
    "always": "always",
    "trained": "only when some run is trained (curves over epochs; none for given weights)",
    "variants": "only with more than one variant",
    "stages": "only with stages to decide the claims at (stats.claims_at)",
}


@dataclass(frozen=True)
class StatsTable:
    """A tidy table of the statistics stage, ``stats/<name>.csv``: per run (``stats-run`` writes
    ``runs/.../stats/<name>.csv``) or, for ``training``, read from each run's metrics, then all
    runs combined; with ``summary`` also aggregated over seeds (``stats/<name>_summary.csv``)."""

    name: str
    shows: str
    per_run: bool = True
    summary: bool = False
    compute: str = ""  # per run: the function of ``dnndist.stats`` that computes it from one ``stats.RunStores``

    def function(self) -> Callable[[Any], Any]:
        return getattr(importlib.import_module("dnndist.stats"), self.compute)


@dataclass(frozen=True)
class Figure:
    """A figure, ``figures/<name>.{pdf,png}``, drawn by ``plots.<draw>(table, pdf, png,
    **kwargs)`` from one stats table (a ``StatsTable`` name, or ``<name>_summary``). ``options``
    names the ``dnndist plot`` options passed on to it (its own config settings, a rule of its
    own); ``caption`` is the report's caption, a Jinja template over ``config`` and ``given``
    (model.weights set: one checkpoint, nothing trained)."""

    name: str
    number: str
    shows: str
    title: str
    table: str
    draw: str
    caption: str
    kwargs: tuple[tuple[str, str], ...] = ()
    options: tuple[str, ...] = ()
    when: Condition = "always"

    def function(self) -> Callable[..., None]:
        return getattr(importlib.import_module("dnndist.plots"), self.draw)


@dataclass(frozen=True)
class Table:
    """A table, ``tables/<name>.{csv,md,tex,html}``: ``tables.<compute>(*inputs, **extra)``, the
    inputs being stats tables read in the order given and ``extra`` JSON options of ``dnndist
    table``; ``caption`` goes with the table into every format, ``report`` (Jinja over
    ``config``) above it in the report."""

    name: str
    shows: str
    title: str
    inputs: tuple[str, ...]
    compute: str
    caption: str
    report: str
    extra: tuple[str, ...] = ()
    when: Condition = "always"

    def function(self) -> Callable[..., Any]:
        return getattr(importlib.import_module("dnndist.tables"), self.compute)


STATS: tuple[StatsTable, ...] = (
    StatsTable("training", "loss and accuracy per epoch and split", per_run=False, summary=True),
    StatsTable("weights", "weight statistics per layer and epoch", summary=True, compute="run_weights"),
    StatsTable("features", "feature statistics per layer, split and epoch", summary=True, compute="run_features"),
    StatsTable("weight_hist", "weight and bias histograms at the first and last checkpoint", compute="run_weight_hist"),
    StatsTable(
        "feature_hist", "pre-activation histograms at the first and last checkpoint", compute="run_feature_hist"
    ),
    StatsTable("em_ab", "emission and absorption per channel and input", compute="run_em_ab"),
    StatsTable("spectrum", "singular values of every weight matrix per epoch", compute="run_spectrum"),
)

FIGURES: tuple[Figure, ...] = (
    Figure(
        "fig0_glance",
        "Fig 0",
        "each init's weight distribution per layer, before and after: the report's headline",
        "Figure 0: weight distributions at a glance",
        table="weight_hist",
        draw="fig_glance",
        caption="""
The weight distribution of each initialisation (rows) in each layer (columns, in depth order; at
most 6, evenly spaced in depth when there are more, as the title then says), seed 0 of the first
variant, drawn as a ridgeline: {% if given %}the given weights' one checkpoint (filled){% else %}the
outline is the first checkpoint (the initialisation at epoch 0), the filled curve the last{% endif %}.
Density histograms with equal bins over each tensor's full range; each row is scaled to its own
peak, so shapes compare across rows and heights do not. The x axis of a panel spans every value of
the non-constant initialisations; a constant tensor (ones, zeros before training) is a vertical
spike at its value, and a distribution that lies wholly outside the axis (ones after training) is
an arrow at the edge with its mean. Triangles mark the minimum and maximum at the last checkpoint;
grey dotted lines mark -1 and +1 where they fall inside the axis. Biases, log densities and both
checkpoints side by side: Figure 2.
""",
    ),
    Figure(
        "fig1_training",
        "Fig 1",
        "training: loss and accuracy over epochs",
        "Figure 1: training and test loss and accuracy",
        table="training_summary",
        draw="fig_training",
        when="trained",
        caption="""
Training per initialisation over epochs, for one variant (``base``, or the first; named above the
panels when there are several), three panels stacked top to bottom: cross-entropy loss on a linear
axis, the same loss on a log axis (so that small loss differences between initialisations show
beside runs far above the rest, e.g. ones), and accuracy. Line style gives the split: train solid,
validation dotted, test dashed; the loss panels show train and test loss, the accuracy panel
validation and test accuracy (test only, said in its title, when the validation split is the test
split). Epoch 0 is before training (no train metrics). Lines are the mean over seeds; the band is
the 95 % t-interval over seeds, and the legend title gives the number of seeds (with one seed no
band is drawn). On both loss panels, runs whose final loss is more than 20 times the median run's
are named with their final value ("off scale") instead of stretching the axis. A cross marks the
last epoch of a run that diverged, and the legend counts its seeds. Optimiser
{{ config["train"]["optimizer"] }}, learning rate {{ config["train"]["lr"] }},
batch {{ config["train"]["batch_size"] }}.
{%- if config["train"].get("schedule") == "onecycle" %} The learning rate is the peak of a one-cycle
schedule (train.schedule).{% endif %}
{%- if config["train"].get("augment", "none") != "none" %} Training batches are augmented
({{ config["train"]["augment"] }}); evaluation never is.{% endif %}
{%- if config["train"].get("label_smoothing") %} The train loss is the training objective, cross-entropy
with label smoothing {{ config["train"]["label_smoothing"] }}; validation and test losses are the plain
cross-entropy.{% endif %}
""",
    ),
    Figure(
        "fig2_weights",
        "Fig 2",
        "weight and bias distributions per layer",
        "Figure 2: weight and bias distributions before and after training",
        table="weight_hist",
        draw="fig_weight_distributions",
        caption="""
{% if given %}
Weight and bias distributions of the given weights (``model.weights``, analysed at one checkpoint,
"epoch 0"): one panel per tensor, the weight of each layer and its bias where it has one, in depth
order, four panels to a row (at most 24 panels; beyond that, evenly spaced tensors, and the legend
title says how many of how many). Density histograms with equal bins over each tensor's full range,
minimum to maximum, on a log density axis: nothing is clipped, so a few large weights show as low
bars far from the bulk. Triangles at the foot of a panel mark the minimum and maximum; grey dotted
lines mark -1 and +1 where they fall inside the axis.
{% else %}
Weight and bias distributions of each layer (rows, in depth order; at most 6, evenly spaced in depth
when there are more, and the legend title then says how many of how many): weights at the first and
at the last checkpoint (first two columns, the first marked "(init)" when it is epoch 0), biases
likewise (last two columns; "no bias" where a layer has none), one line per initialisation (seed 0
of the first variant). Density histograms with equal bins over each tensor's full range, minimum to
maximum, on a log density axis: nothing is clipped, so a few large weights show as low bars far
from the bulk. Triangles at the foot of a panel mark each initialisation's minimum and maximum; grey
dotted lines mark -1 and +1 where they fall inside the axis (when they are absent, every value lies
inside (-1, 1)). The axes of a panel are set by the non-constant initialisations, so that ones and
zeros cannot squeeze the others: a constant tensor inside the axis (zeros) is a solid vertical line
in its initialisation's colour with a downward triangle at the top ("all = 0: zeros" in the title),
and a tensor wholly outside the x axis (ones, before and after training) is an arrow at the panel's
edge, its mean in the title ("ones at 0.938 →"). Initialisations whose tensors are identical, such as
PyTorch's default bias that every init leaving biases alone draws from the same seed, are one grey
line, and the title says how many ("grey: 5 inits, identical values").
{% endif %}
""",
    ),
    Figure(
        "fig3_features",
        "Fig 3",
        "pre-activation distributions per layer and input split",
        "Figure 3: feature distributions",
        table="feature_hist",
        draw="fig_features",
        caption="""
Pre-activation feature distributions of the analysed layers (rows, in depth order; at most 6, evenly
spaced in depth when there are more, and the legend title then says how many of how many) for each
input split (columns: train, validation, random Gaussian-noise inputs, test, those extracted),
{% if given %}
for the given weights (one checkpoint, epoch 0; one line per initialisation, seed 0).
{% else %}
at the first (dashed) and last (solid) checkpoint, one colour per initialisation (seed 0).
{% endif %}
Densities from exact fixed-bin histograms over all inputs of each split (up to extract.max_inputs =
{{ config["extract"]["max_inputs"] }}); log density axis. Each panel lists, top right in
each initialisation's colour, its standard deviation{% if not given %} at the first and last checkpoint{% endif %},
with the share of values beyond the histogram's range where that exceeds 0.1 %. Constant
initialisations (ones, zeros) are not drawn, their activations being orders of magnitude larger:
their standard deviations are listed top left under "not drawn".
""",
    ),
    Figure(
        "fig4_emission",
        "Fig 4",
        "emission and absorption per channel",
        "Figure 4: emission and absorption per channel",
        table="em_ab",
        draw="fig_emission",
        options=("init", "layers"),
        caption="""
Emission (left column, output channels) and absorption (right column, input channels) of the first
16 channels of each conv layer, all of the paper CNN's (each panel's title says how many of how
many; the paper's Fig 4 shows 15) (rows: plots.emission_layers, or every conv layer in depth order, at
most 6, evenly spaced in depth, as the title then says) at the last checkpoint, for
{{ config["plots"]["emission_init"] }} (seed 0 of the first variant), over
{{ config["extract"]["gradient_batches"] * config["extract"]["gradient_batch_size"] }}
labelled inputs: box from the first to the third quartile with the median, whiskers from the 5th to
the 95th percentile, dots the inputs beyond the whiskers. Every panel has its own y axis (layers
differ by orders of magnitude). Emission of channel c1 is the sum over input channels of the L2
norms of its local-gradient maps; absorption of c2 the sum over output channels.
""",
    ),
    Figure(
        "fig5_trajectories",
        "Fig 5",
        "weight std, kurtosis, near-zero mass over epochs",
        "Figure 5: weight statistics over epochs",
        table="weights_summary",
        draw="fig_trajectories",
        kwargs=(("x", "epoch"),),
        when="trained",
        caption="""
Weight std (top row; log axis when it spans more than a factor 10), excess kurtosis (middle row) and
near-zero mass (bottom row; fraction of weights with absolute value below 0.1 std) of each layer
(columns, in depth order; at most 6, evenly spaced in depth when there are more, as the legend title
then says) over the checkpoint epochs, one line per initialisation, for the first variant: mean over
seeds with the 95 % t-interval over seeds as a band (the legend title gives the number of seeds; no
band with one seed). Constant initialisations (ones, zeros: zero std, undefined kurtosis) are not
drawn, and the legend title names them; the tables report them.
""",
    ),
    Figure(
        "fig6_depth",
        "Fig 6",
        "the same statistics against depth",
        "Figure 6: weight statistics against depth",
        table="weights_summary",
        draw="fig_trajectories",
        kwargs=(("x", "depth"),),
        caption="""
The same weight statistics at the last checkpoint{% if given %} (the given weights, epoch 0){% endif %}
against the layers (the "are deeper layers sparser or heavier-tailed?" question), one panel per
statistic (std, log axis when it spans more than a factor 10; excess kurtosis; near-zero mass), for
the first variant. The layers are named on the axis in depth order: across the x axis, or, with more
than 12 layers, down the y axis with the first layer at the top. Mean over seeds with the 95 %
t-interval over seeds as a band (the legend title gives the number of seeds; no band with one seed).
Constant initialisations (ones, zeros) are not drawn, and the legend title names them.
""",
    ),
    Figure(
        "fig7_variants",
        "Fig 7",
        "weight statistics against depth per variant",
        "Figure 7: experiment variants",
        table="weights_summary",
        draw="fig_variants",
        when="variants",
        caption="""
The experiment's variants ({{ config["variants"]|list|join(", ") }}{% if config.get("grid") %}, and
the grid's combinations{% endif %}): near-zero mass, excess kurtosis, Hill tail index and largest weight (columns) of each layer against
its depth (1 = first weight layer) at the last checkpoint, for the first non-constant
initialisation. With up to six variants, one line per variant: mean over seeds with the 95 %
t-interval over seeds as a band (the legend title gives the number of seeds; no band with one
seed). With more variants, one row per factor level: thin coloured lines are the variants with that
level, thin grey lines the others, and the two thick lines the averages (of the seed means) over
each group; no bands are drawn there.{% if config["variants"]|length > 1 or config.get("grid") %} The
``factors`` table gives each factor's effect with its interval.{% endif %}
""",
    ),
    Figure(
        "fig8_esd",
        "Fig 8",
        "empirical spectral density per weight matrix, power-law fit",
        "Figure 8: empirical spectral densities of the weight matrices",
        table="spectrum",
        draw="fig_esd",
        caption="""
Empirical spectral density (ESD) of each weight matrix, WeightWatcher style, for the first
initialisation that is neither constant nor orthogonal (whose spectrum before training is a single
point; seed 0 of the first variant): rows are the layers in depth order (at
most 6, evenly spaced in depth when there are more, as the title then says){% if given %}, for the
given weights (one checkpoint, epoch 0){% else %}, columns the first and the last checkpoint{% endif %}.
The eigenvalues of W^T W (the squared singular values of the ``spectrum`` table; a conv weight as
its C_out x C_in*kh*kw reshape) are drawn as a density over log-spaced bins on log-log axes; the
orange line is the power law p(x) = (alpha - 1) / xmin (x / xmin)^-alpha fitted the way
WeightWatcher fits it (continuous maximum likelihood from the xmin, dashed, that minimises the
Kolmogorov-Smirnov distance, over the eigenvalues above 1e-5), scaled by the tail's share of the
eigenvalues; each panel's title gives alpha. WeightWatcher reads alpha in [2, 6] as heavy-tailed
(well trained) and above 6 as random-like; matrices with fewer than 8 eigenvalues get no fit. For
conv layers the reshape is not WeightWatcher's per-kernel-position matrices, so their alpha differs
from the ``alpha`` of the weights table.
""",
    ),
)

TABLES: tuple[Table, ...] = (  # in the reproduction document's order
    Table(
        "glance",
        "the findings in plain words: accuracy, range, std change, shape, constant inits",
        "At a glance",
        inputs=("training", "weights"),
        compute="at_a_glance",
        caption="What the tables say, in plain words, for the first variant: test accuracy per initialisation, whether weights stay inside [-1, 1], how much the weight std changed in training, the shape (excess kurtosis) and the near-zero mass, and what became of constant initialisations; means over seeds, ranges over layers and initialisations, runs that diverged left out. Descriptive: the verdicts are the claims table's. 'source' names the table or statistic each line comes from.",
        report="""
What the tables say, in plain words (first variant; means over seeds). Descriptive: the verdicts
are in the claims table below.
""",
    ),
    Table(
        "claims",
        "the paper's claims C1-C6 and their verdicts",
        "The paper's claims, decided",
        inputs=("training", "weights", "features", "em_ab"),  # per seed: the claims pair runs by seed
        compute="claims",
        caption="The paper's claims tested on the per-seed tables: the statistic, the deciding comparison (the weakest for the claim, or the one that refutes it) with its effect, interval and p-value, the number of seeds and comparisons, and the verdict of the stated rule (docs/statistics.md). Fewer than 5 seeds: descriptive only; a rule that cannot reach one of its outcomes at this many seeds: undecidable at n seeds (needs N); a claim that holds before training too: holds, already at initialisation.",
        report="""
The paper's claims C1-C6, each decided from the per-seed tables by the rule quoted in its ``rule``
column (docs/statistics.md); the verdict column follows the statement and is coloured: holds (green),
does not hold (red), inconclusive (amber), descriptive only (grey: fewer than 5 seeds),
undecidable at n seeds (needs N) (grey, italic: an outcome out of reach at this many seeds,
whatever the data), flagged (orange: a fault such as a diverged run, not a claim). "holds, already
at initialisation": C2, C6 and C6b hold before training too (the value gives the epoch-0 decision).
""",
    ),
    Table(
        "claims_stages",
        "the claims decided at each training stage (stats.claims_at) and at the last epoch",
        "The paper's claims through training",
        inputs=("training", "weights", "features", "em_ab"),
        compute="claims_stages",
        caption="The paper's claims decided with the same rules at each stage of training: at the checkpoint epochs of stats.claims_at, at each run's best-validation epoch where it names 'best' (the epoch of lowest validation loss, the first of ties; 'ends' gives the range over runs), and at the last epoch. Runs that diverged are left out at every stage. 'changes' marks a claim whose verdict is not the same at every stage, e.g. where overfitting turns it. 'role': the last epoch is primary (the claims table's verdict); the other stages are exploratory, not corrected for being several looks at one experiment.",
        report="""
The claims C1-C6 decided at several stages of training with the rules of the claims table: at
fixed epochs, at each run's best-validation epoch and at the end. A claim marked in ``changes``
has a verdict that depends on when training is stopped. The last epoch is the primary stage;
the others are exploratory: quoting whichever stage agrees would be a multiple comparison.
""",
        extra=("stages",),
        when="stages",
    ),
    Table(
        "range_stages",
        "do weights stay inside [-1, 1]? at each training stage (stats.claims_at) and at the last epoch",
        "Do weights stay inside [-1, 1]? Through training",
        inputs=("training", "weights"),
        compute="range_stages",
        caption="The range table with 'after' read at each stage of training: at the checkpoint epochs of stats.claims_at, at each run's best-validation epoch where it names 'best' ('ends': the range over runs) and at the last epoch. Largest |w| over seeds and per seed, seeds with any weight outside [-1, 1], the number of such weights, and the mean fraction within PyTorch's default-init bound.",
        report="""
Whether weights stay inside [-1, 1] at several stages of training (fixed epochs, each run's
best-validation epoch, the end), per initialisation, layer and parameter.
""",
        extra=("stages",),
        when="stages",
    ),
    Table(
        "depth_trend_stages",
        "are deeper layers sparser or heavier-tailed? at each training stage and at the last epoch",
        "Are deeper layers sparser or heavier-tailed? Through training",
        inputs=("training", "weights"),
        compute="depth_trend_stages",
        caption="The depth-trend table at each stage of training (stats.claims_at: checkpoint epochs and, where it names 'best', each run's best-validation epoch, 'ends' the range over runs; and the last epoch): Spearman's rho between depth and the weight statistic per seed, its mean and 95 % t-interval, the sign-flip test with Holm's correction, and the verdict.",
        report="""
Whether near-zero mass, kurtosis and tail index rise or fall with depth, at several stages of
training (fixed epochs, each run's best-validation epoch, the end).
""",
        extra=("stages",),
        when="stages",
    ),
    Table(
        "range",
        "do weights stay inside [-1, 1]?",
        "Do weights stay inside [-1, 1]?",
        inputs=("weights",),
        compute="range_table",
        caption="Do weights stay inside [-1, 1]? Largest |w| over seeds and per seed, seeds with any weight outside [-1, 1], the number of such weights (all seeds), and the mean fraction within PyTorch's default-init bound [-k, k], k = 1/sqrt(fan_in), before (first checkpoint) and after training (last); weights and biases.",
        report="""
Whether weights stay inside [-1, 1], before and after training, per initialisation, layer and
parameter.
""",
    ),
    Table(
        "init_check",
        "theoretical vs empirical std of fresh weights",
        "Init formulas: theory vs measurement",
        inputs=("weights_summary",),
        compute="init_check",
        caption="Theoretical vs empirical weight std and bound at epoch 0 with the gain g each init used (fan_in = C_in*kh*kw for conv layers); mean over seeds.",
        report="""
Theoretical against empirical standard deviation and bound of the weights before training, per
initialisation and layer.
""",
    ),
    Table(
        "depth_trend",
        "does a weight statistic rise or fall with depth?",
        "Depth trends",
        inputs=("weights",),
        compute="depth_trend",
        caption="Spearman rank correlation of near-zero mass, excess kurtosis and Hill tail index with layer depth at the last epoch, per variant, init and layer kind (conv and linear apart); computed per seed, mean and 95 % t-interval over seeds. Verdict increases/decreases if the sign-flip test over seeds rejects rho = 0 after Holm's correction over the statistics of the row's (variant, init, kind); undecidable at n seeds (needs N) while Holm puts every call out of reach (2 m 2^-n >= 5 %).",
        report="""
Whether near-zero mass, excess kurtosis and tail index rise or fall with depth (Spearman's rho per
seed), per variant, initialisation and layer kind.
""",
    ),
    Table(
        "emission",
        "emission vs absorption per conv layer",
        "Emission and absorption",
        inputs=("em_ab",),
        compute="emission_summary",
        caption="Emission and absorption per conv layer at the last epoch, per run, over the first 16 output and input channels of each layer ('channels': how many of how many, all of the paper CNN's): per-channel median and variance over inputs (mean over channels), the coefficient of variation over inputs per channel (mean over channels; scale-free, unlike the variance, which follows C_out / C_in) and whether emission's is larger, and the spread of the per-channel medians across channels (CV) with whether emission's is larger.",
        report="""
Emission against absorption per conv layer and run (claim C6 in the ``claims`` table).
""",
    ),
    Table(
        "factors",
        "each experiment factor's effect",
        "Experiment factors",
        inputs=("weights",),
        compute="factor_effects",
        caption="Effect of each experiment factor on the trained weights (last epoch, weight layers averaged): level minus base level, paired by init and seed over variant pairs that differ only in that factor, averaged per seed; mean and 95 % t-interval over seeds. Verdict increases/decreases if the t-test rejects 0 after Holm's correction over the statistics of the factor level; descriptive only with fewer than 5 seeds.",
        report="""
The effect of each experiment factor (variant level against its base level) on the trained weights.
""",
        extra=("variants",),
        when="variants",
    ),
)

FIGURE: dict[str, Figure] = {f.name: f for f in FIGURES}
TABLE: dict[str, Table] = {t.name: t for t in TABLES}
STAT: dict[str, StatsTable] = {s.name: s for s in STATS}


def wanted(when: Condition, trained: bool, variants: int, stages: bool = False) -> bool:
    """Whether an output with this condition is made for an experiment (``trained``: some run
    is trained rather than given weights; ``variants``: how many variants it has; ``stages``:
    whether stats.claims_at names stages)."""
    return (
        when == "always"
        or (when == "trained" and trained)
        or (when == "variants" and variants > 1)
        or (when == "stages" and stages and trained)
    )


def figures(trained: bool = True, variants: int = 1, stages: bool = False) -> list[Figure]:
    return [f for f in FIGURES if wanted(f.when, trained, variants, stages)]


def tables(trained: bool = True, variants: int = 1, stages: bool = False) -> list[Table]:
    return [t for t in TABLES if wanted(t.when, trained, variants, stages)]


def run_tables() -> list[str]:
    """The tables ``stats-run`` writes for every run."""
    return [s.name for s in STATS if s.per_run]


def summary_tables() -> list[str]:
    """The combined tables that are also aggregated over seeds (``<name>_summary.csv``)."""
    return [s.name for s in STATS if s.summary]


def concat_tables() -> list[str]:
    """The combined tables without a seed aggregate (runs concatenated)."""
    return [s.name for s in STATS if not s.summary]


def stats_files() -> list[str]:
    """The stem of every file of ``stats/``: what a figure or a table may be drawn from."""
    return [stem for s in STATS for stem in (s.name, f"{s.name}_summary")[: 1 + s.summary]]


def markdown() -> str:
    """Every statistics table, figure and table as Markdown tables (``dnndist outputs``)."""
    lines = ["| statistics table | shows | per run | seed summary |", "|---|---|---|---|"]
    lines += [
        f"| `stats/{s.name}.csv` | {s.shows} | {'yes' if s.per_run else 'no'} | {'yes' if s.summary else 'no'} |"
        for s in STATS
    ]
    lines += ["", "| figure | shows | drawn from | by | made |", "|---|---|---|---|---|"]
    lines += [
        f"| `{f.name}` ({f.number}) | {f.shows} | `stats/{f.table}.csv` | `plots.{f.draw}` | {CONDITIONS[f.when]} |"
        for f in FIGURES
    ]
    lines += ["", "| table | shows | computed from | by | made |", "|---|---|---|---|---|"]
    lines += [
        f"| `{t.name}` | {t.shows} | {', '.join(f'`stats/{i}.csv`' for i in t.inputs)} | `tables.{t.compute}` | {CONDITIONS[t.when]} |"
        for t in TABLES
    ]
    return "\n".join(lines)
