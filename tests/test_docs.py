"""Docs that cannot go stale: the README's sample `dnndist analyze` output is what the command
prints on the demo's checkpoint (dev/docs_assets.py writes it, `make docs-assets`)."""

from __future__ import annotations

import importlib.util
import re
import subprocess

import pytest

from .conftest import BIN, REPO, env

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("docs_assets", REPO / "dev" / "docs_assets.py")
docs_assets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(docs_assets)

NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$")
# Printed to 4 significant digits: the demo's training is stacked, this test's is one run (equal
# to float tolerance, README, Stacked training) and another CPU's kernels round differently;
# 1 % of a value, or 1e-4 of the layer's std for a mean near 0, is far below what a change of
# data, model or statistic moves (the sample went stale by 10-100 %). The WeightWatcher alpha of
# a 16-eigenvalue ESD rests on the choice of xmin: 10 %.
RTOL, ALPHA_RTOL = 0.01, 0.10


def _dnndist(*args: str, cwd=REPO) -> str:
    proc = subprocess.run([str(BIN / "dnndist"), *args], cwd=cwd, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _tokens(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_the_readme_sample_is_what_analyze_prints_on_the_demo_checkpoint(tmp_path):
    """Train the sample's run (kaiming_normal seed 0 of presets/demo.yaml) as the demo does, run
    the README's command on its epoch-2 checkpoint, and compare with the README's sample: the same
    lines, words and layer shapes, every number within the tolerance above."""
    readme = (REPO / "README.md").read_text()
    assert " ".join(docs_assets.sample_command()) in readme  # the quickstart's command is the sample's
    configs = ["--config", str(REPO / "config.yaml"), "--config", str(REPO / "presets" / "demo.yaml")]
    store, run_dir = tmp_path / "dataset.zarr", tmp_path / "run"
    _dnndist("data", *configs, "--out", str(store))
    _dnndist("train", *configs, "--run", "base/kaiming_normal/seed0", "--data", str(store), "--out", str(run_dir))
    weights = run_dir / "checkpoints" / "epoch_0002.safetensors"
    printed = _dnndist("analyze", "--model", "paper_cnn", "--weights", str(weights), "--out", str(tmp_path / "a"))
    want, got = _tokens(docs_assets.readme_sample(readme)), _tokens(printed)
    assert len(want) == len(got) and want[0] == got[0], f"README:\n{want}\nprinted:\n{printed}"
    header = want[1]
    assert got[1] == header
    for w_row, g_row in zip(want[2:-1], got[2:-1]):
        assert len(w_row) == len(g_row) and w_row[:2] == g_row[:2], (w_row, g_row)  # layer and shape
        std = float(g_row[header.index("std")])
        for column, w, g in zip(header[2:], w_row[2:], g_row[2:]):
            assert NUMBER.match(w) and NUMBER.match(g), (column, w, g)
            tol = ALPHA_RTOL if column == "alpha" else RTOL
            slack = 1e-4 * std if column == "mean" else 0.0
            assert abs(float(w) - float(g)) <= tol * abs(float(g)) + slack, (
                f"{w_row[0]} {column}: README {w}, printed {g}"
            )
    assert want[-1][2:] == got[-1][2:]  # "wrote DIR/: the files"


def test_the_sample_block_is_rewritten_in_place():
    text = f"before\n{docs_assets.START}\n```text\nold\n```\n{docs_assets.END}\nafter\n"
    new = docs_assets.with_sample(text, "new output\nline 2\n")
    assert docs_assets.readme_sample(new) == "new output\nline 2\n"
    assert new.startswith("before\n") and new.endswith(f"{docs_assets.END}\nafter\n")
