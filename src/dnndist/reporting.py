"""The Snakemake report's rst directives: a figure embedded in the report itself (the front
page), and the captions of the figures and tables declared in ``dnndist.outputs``.

Snakemake's own ``embeddedfigure`` directive leaves the file path in the page (9.27: its data URI
is set after the image node is built), so a report moved to another machine shows broken images.
``inline-figure`` builds the node from a ``data:`` URI instead. The Snakefile registers it
(``register``) before the report's rst is rendered.

``dnndist-caption`` renders an output's report caption: a caption file cannot call Python, so
``workflow/report/figures.rst`` passes the figure's name and the config (as JSON, the directive's
content), and the directive renders ``Figure.caption`` (``Table.report`` for a table) with them.
"""

from __future__ import annotations

import base64
import json
import mimetypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.parsers.rst.directives.images import Figure
from docutils.statemachine import StringList

from dnndist import outputs

DIRECTIVE = "inline-figure"
CAPTION_DIRECTIVE = "dnndist-caption"


def data_uri(path: str | Path) -> str:
    """The file as a base64 ``data:`` URI (its type from its suffix)."""
    mime = mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def png_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG's header; None for anything else."""
    head = Path(path).read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


class InlineFigure(Figure):
    """``.. inline-figure:: path``: a docutils figure whose image is the file's data URI (alt
    text: the file name). Without a width, a PNG is shown at half its pixel size: the figures
    are drawn at 300 dpi, so that is 150 dpi on screen, sharp on high-density displays."""

    def run(self):
        path = Path(self.arguments[0])
        self.options.setdefault("alt", path.name)
        size = png_size(path)
        if size and "width" not in self.options:
            self.options["width"] = f"{size[0] // 2}px"
            self.options.setdefault("figwidth", f"{size[0] // 2}px")
        self.arguments[0] = data_uri(path)
        return super().run()


def caption_text(kind: str, name: str, config: Mapping[str, Any]) -> str:
    """The report caption (rst) of a figure or table of ``dnndist.outputs``, its Jinja rendered
    with ``config`` and ``given`` (model.weights set) the way Snakemake renders caption files."""
    import jinja2

    template = outputs.FIGURE[name].caption if kind == "figure" else outputs.TABLE[name].report
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(config=config, given=bool(config["model"]["weights"]))


class OutputCaption(Directive):
    """``.. dnndist-caption:: figure NAME`` (or ``table NAME``) with the config as JSON for its
    content: the output's caption from ``dnndist.outputs``, parsed as rst in place."""

    required_arguments = 2
    has_content = True

    def run(self):
        kind, name = self.arguments
        if kind not in ("figure", "table"):
            raise self.error(f"{CAPTION_DIRECTIVE}: the first argument is figure or table, not {kind!r}")
        text = caption_text(kind, name, json.loads("\n".join(self.content)))
        holder = nodes.Element()
        self.state.nested_parse(StringList(text.splitlines(), source=f"dnndist.outputs:{name}"), 0, holder)
        return holder.children


def register() -> None:
    directives.register_directive(DIRECTIVE, InlineFigure)
    directives.register_directive(CAPTION_DIRECTIVE, OutputCaption)
