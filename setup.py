"""Build hook: the wheel carries the workflow as package data (dnndist/_workflow).

The repository keeps Snakefile, config.yaml, workflow/ and presets/ at its root (the layout of a
Snakemake workflow); build_py copies them into the built package, so an installed dnndist finds
them through dnndist.resources and `dnndist workflow --init DIR` deploys them. An editable install
reads them from the repository root instead and copies nothing. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# the same names as dnndist.resources.DEPLOYMENT; profiles (a link to workflow/profiles) is copied as a folder
WORKFLOW_FILES = ("Snakefile", "config.yaml", "environment.yml", "workflow", "presets", "profiles")
PACKAGED = Path("dnndist") / "_workflow"


class BuildPyWithWorkflow(build_py):
    """build_py, then a copy of the workflow into <build_lib>/dnndist/_workflow (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / PACKAGED
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in WORKFLOW_FILES:
            src = ROOT / name
            if not src.exists():
                raise FileNotFoundError(f"{src} is missing: the sdist or checkout is incomplete (see MANIFEST.in)")
            if src.is_dir():
                shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copyfile(src, dest / name)


setup(cmdclass={"build_py": BuildPyWithWorkflow})
