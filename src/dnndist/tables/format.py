"""A table in every format from one tidy DataFrame: CSV, Markdown, LaTeX and an HTML fragment
(the report shows it; the verdict column coloured)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from dnndist.io import write_text

FLAGGED = "flagged"  # a row that reports a fault (divergence), not a claim


def write_table(df: pd.DataFrame, stem: str | Path, caption: str) -> None:
    """stem.csv, stem.md (with the caption), stem.tex (a table environment) and stem.html (the
    table with its caption, shown inside the Snakemake report)."""
    stem = str(stem)
    fmt = df.copy()
    for col in fmt.select_dtypes("number").columns:
        fmt[col] = fmt[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    write_text(stem + ".csv", df.to_csv(index=False))
    write_text(stem + ".md", f"{caption}\n\n" + fmt.to_markdown(index=False) + "\n")
    latex = fmt.to_latex(index=False, escape=True)
    write_text(
        stem + ".tex",
        "\\begin{table}\n\\centering\n\\caption{" + caption.replace("%", "\\%") + "}\n" + latex + "\\end{table}\n",
    )
    write_text(stem + ".html", to_html(fmt, caption, numeric=list(df.select_dtypes("number").columns)))


HTML_STYLE = """.dnndist-table table{border-collapse:collapse;font:12px/1.35 system-ui,sans-serif;margin:0}
.dnndist-table th,.dnndist-table td{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top;max-width:36em}
.dnndist-table th{background:#f3f4f6;position:sticky;top:0}
.dnndist-table td.num{text-align:right;white-space:nowrap}
.dnndist-table td.verdict{font-weight:600;white-space:nowrap}
.dnndist-table .v-holds{background:#d1fae5}.dnndist-table .v-does-not-hold{background:#fee2e2}
.dnndist-table .v-inconclusive{background:#fef3c7}.dnndist-table .v-descriptive-only{background:#f3f4f6}
.dnndist-table .v-undecidable{background:#e5e7eb;font-style:italic}
.dnndist-table .v-flagged{background:#fed7aa}.dnndist-table .v-increases,.dnndist-table .v-decreases{background:#dbeafe}
.dnndist-table p.caption{font:12px/1.4 system-ui,sans-serif;color:#374151;max-width:60em}"""


def to_html(fmt: pd.DataFrame, caption: str, numeric: list[str] = ()) -> str:
    """A formatted table as an HTML page that also works as a fragment (the report's front page
    includes the claims table): the verdict column, where there is one, follows the statement it
    decides and is coloured by verdict; the caption below the table; no rows says so."""
    import html

    cols = list(fmt.columns)
    if "verdict" in cols and "statement" in cols:
        cols.remove("verdict")
        cols.insert(cols.index("statement") + 1, "verdict")

    def slug(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

    head = "".join(f'<th class="col-{slug(str(c))}">{html.escape(str(c))}</th>' for c in cols)

    def cell(col: str, value: Any) -> str:  # classes: col-<column> (the front page hides some), verdict, num
        text = "" if pd.isna(value) else str(value)
        kind = (
            f" verdict v-{slug(text.split(',')[0].split(' at ')[0])}"
            if col == "verdict"
            else " num"
            if col in numeric
            else ""
        )
        return f'<td class="col-{slug(col)}{kind}">{html.escape(text)}</td>'

    rows = "\n".join(
        "<tr>" + "".join(cell(c, v) for c, v in zip(cols, rec)) + "</tr>" for rec in fmt[cols].itertuples(index=False)
    )
    body = rows or f'<tr><td colspan="{max(len(cols), 1)}">no rows</td></tr>'
    return (
        f'<!DOCTYPE html>\n<meta charset="utf-8">\n<style>\n{HTML_STYLE}\n</style>\n<div class="dnndist-table">\n'
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"
        f'<p class="caption">{html.escape(caption)}</p>\n</div>\n'
    )
