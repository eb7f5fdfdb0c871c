"""A run's three stores in one process (the imports and the data once)."""

from __future__ import annotations

from pathlib import Path

from dnndist.extract.features import extract_features
from dnndist.extract.gradients import extract_gradients
from dnndist.extract.weights import extract_weights
from dnndist.settings import ExtractSettings

EXTRACTORS = {"weights": extract_weights, "features": extract_features, "gradients": extract_gradients}


def extract_run(settings: ExtractSettings, ckpt_dir: str | Path, store: str | Path, out_dir: str | Path) -> None:
    """The three stores of one run (``out_dir``/weights.zarr, features.zarr, gradients.zarr)."""
    for kind, extractor in EXTRACTORS.items():
        extractor(settings, ckpt_dir, store, Path(out_dir) / f"{kind}.zarr")
