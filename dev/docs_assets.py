"""The README's sample `dnndist analyze` output and docs/report-screenshot.png, made from the demo's
results by the commands they show (`make docs-assets`, after `make demo`), so that they cannot go
stale: tests/test_docs.py checks the sample against what the command prints.

    python dev/docs_assets.py [--results results/demo] [--no-screenshot]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SCREENSHOT = REPO / "docs" / "report-screenshot.png"
SCREEN = (1400, 900)  # what a laptop shows of the report before any scrolling
SAMPLE_RUN = "runs/base/kaiming_normal/seed0/checkpoints/epoch_0002.safetensors"
# the README block between these markers is the sample; its command is the line that precedes it
START, END = "<!-- analyze-sample: start -->", "<!-- analyze-sample: end -->"
CHROMIUM_FLAGS = (  # headless, offline: no background connections the closed network would refuse
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def sample_command(results: str = "results/demo") -> list[str]:
    """The README's analyze command (what the quickstart's third line runs)."""
    return [
        "dnndist",
        "analyze",
        "--model",
        "paper_cnn",
        "--weights",
        f"{results}/{SAMPLE_RUN}",
        "--out",
        f"{results}/analyze",
    ]


def readme_sample(text: str) -> str:
    """The sample output in the README (the text of its fenced block between the markers)."""
    block = text.split(START, 1)[1].split(END, 1)[0]
    return re.search(r"```text\n(.*?)```", block, re.S).group(1)


def with_sample(text: str, output: str) -> str:
    """The README with ``output`` as its sample."""
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    return f"{head}{START}\n```text\n{output.rstrip()}\n```\n{END}{tail}"


def run_sample(results: str) -> str:
    dnndist = Path(sys.executable).parent / "dnndist"
    cmd = [str(dnndist), *sample_command(results)[1:]]
    return subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout


def screenshot(report: Path, out: Path) -> None:
    """The report's first screen (SCREEN) in headless Chromium, Debian's package."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("docs-assets: no chromium on PATH (apt-get install chromium), or pass --no-screenshot")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={SCREEN[0]},{SCREEN[1]}",
                "--virtual-time-budget=5000",
                f"--screenshot={out}",
                report.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results/demo", help="the demo's results folder (default results/demo)")
    p.add_argument("--no-screenshot", action="store_true", help="only the README sample")
    args = p.parse_args(argv)
    output = run_sample(args.results)
    README.write_text(with_sample(README.read_text(), output))
    print(f"wrote the sample output into {README.name}")
    if not args.no_screenshot:
        screenshot(REPO / args.results / "report.html", SCREENSHOT)
        print(f"wrote {SCREENSHOT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
