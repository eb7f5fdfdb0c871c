"""The report's front page directive: figures embedded in the page itself, not linked by path.
(The report built by the workflow is checked in test_workflow.py, on its tiny run.)"""

from __future__ import annotations

import base64
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from docutils.core import publish_parts  # noqa: E402
from PIL import Image  # noqa: E402

from dnndist import reporting  # noqa: E402


def test_inline_figure_embeds_the_png_at_half_its_pixel_size(tmp_path):
    png = tmp_path / "fig.png"
    fig = plt.figure(figsize=(2, 1))
    fig.savefig(png, dpi=100)
    plt.close(fig)
    reporting.register()
    body = publish_parts(f".. inline-figure:: {png}\n   :figclass: front\n\n   The caption.\n", writer="html")["body"]
    src = re.search(r'<img [^>]*src="([^"]+)"', body)[1]
    assert src.startswith("data:image/png;base64,") and str(tmp_path) not in body  # nothing points at this machine
    assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
    width, height = reporting.png_size(png)
    assert (width, height) == Image.open(png).size
    assert 'alt="fig.png"' in body and f"width: {width // 2}px" in body and "The caption." in body
    (tmp_path / "table.html").write_text("<table></table>")
    assert reporting.png_size(tmp_path / "table.html") is None
