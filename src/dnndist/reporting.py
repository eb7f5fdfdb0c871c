"""The Snakemake report's front page: an rst directive that embeds a figure in the report itself.

Snakemake's own ``embeddedfigure`` directive leaves the file path in the page (9.27: its data URI
is set after the image node is built), so a report moved to another machine shows broken images.
``inline-figure`` builds the node from a ``data:`` URI instead. The Snakefile registers it
(``register``) before the report's rst is rendered.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path

from docutils.parsers.rst import directives
from docutils.parsers.rst.directives.images import Figure

DIRECTIVE = "inline-figure"


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


def register() -> None:
    directives.register_directive(DIRECTIVE, InlineFigure)
