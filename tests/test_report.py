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


def test_caption_files_render_the_registry_captions():
    """figures.rst and tables.rst, rendered the way Snakemake renders a caption file (Jinja, then
    rst): the dnndist-caption directive puts the output's caption from dnndist.outputs in place,
    filled in from the config, beside the file's own text."""
    from types import SimpleNamespace

    import jinja2

    from dnndist import config as dcfg
    from dnndist import outputs

    from .conftest import REPO

    reporting.register()
    cfg = dcfg.load([REPO / "config.yaml", REPO / "presets" / "demo.yaml"])
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)

    def rendered(kind: str, **wildcards: str) -> str:
        source = (REPO / "workflow" / "report" / f"{kind}.rst").read_text()
        job = SimpleNamespace(
            config=cfg, wildcards=SimpleNamespace(**wildcards), output=SimpleNamespace(pdf="f.pdf", csv="t.csv")
        )
        html = publish_parts(env.from_string(source).render(snakemake=job), writer="html")["body"]
        return " ".join(re.sub(r"<[^>]+>", " ", html).split())

    fig1 = rendered("figures", figure="fig1_training")
    assert f"Optimiser {cfg['train']['optimizer']}, learning rate {cfg['train']['lr']}" in fig1
    assert "f.pdf" in fig1 and "System Message" not in fig1
    first_words = " ".join(outputs.TABLE["claims"].report.split()[:6])
    claims = rendered("tables", name="claims")
    assert claims.startswith(first_words) and "t.csv" in claims and "System Message" not in claims
