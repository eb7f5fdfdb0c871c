"""Provenance attributes recorded on every artefact (no timestamps where bytes must repeat)."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import dnndist

PACKAGES = ("torch", "torchvision", "numpy", "xarray", "zarr", "snakemake")


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-serialisable object (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@functools.cache
def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def attrs(cfg_hash: str, **extra: Any) -> dict[str, str]:
    """Global attributes for a stored artefact."""
    out = {
        "dnndist_version": dnndist.__version__,
        "git_commit": git_commit(),
        "config_hash": cfg_hash,
        "python": platform.python_version(),
    }
    out.update({f"{k}_version": v for k, v in package_versions().items()})
    out.update({k: str(v) for k, v in extra.items()})
    return out
