"""Tables (CSV + Markdown + LaTeX + HTML from the same tidy data): one function per table of
``dnndist.outputs.TABLES``, in rooms by concern: ``format`` (writing every format), ``describe``
(init check, range, depth trend, emission), ``claims`` (the paper's claims C1-C6 and their
verdicts), ``stages`` (the same through training), ``factors`` (experiment factors, recorded groups), and the
plain-words summary (``dnndist.glance``). Torch-free."""

from dnndist.glance import at_a_glance
from dnndist.tables.claims import claims, claims_variant, depth_sorted
from dnndist.tables.describe import depth_trend, emission_summary, init_check, range_table
from dnndist.tables.factors import factor_effects, group_effects, variant_factors
from dnndist.tables.format import FLAGGED, to_html, write_table
from dnndist.tables.stages import claims_stages, depth_trend_stages, range_stages
from dnndist.verdicts import DESCRIPTIVE, FAILS, HOLDS, UNSURE  # the verdict vocabulary

__all__ = [
    "DESCRIPTIVE",
    "FAILS",
    "FLAGGED",
    "HOLDS",
    "UNSURE",
    "at_a_glance",
    "claims",
    "claims_stages",
    "claims_variant",
    "depth_sorted",
    "depth_trend",
    "depth_trend_stages",
    "emission_summary",
    "factor_effects",
    "group_effects",
    "init_check",
    "range_stages",
    "range_table",
    "to_html",
    "variant_factors",
    "write_table",
]
