"""What ``analyze`` returns: the stores, tables and figures of one model (``Analysis``), and their files."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from dnndist import dims, extract, models
from dnndist.io import atomic_path, write_text


# --------------------------------------------------------------------------- the result
@dataclasses.dataclass
class Analysis:
    """What ``analyze`` measured. ``table`` and ``dataset`` hold the per-layer numbers; the other
    members are the workflow's stores (root + groups, in memory) and tidy tables."""

    name: str
    layers: list[models.LayerSpec]
    settings: dict[str, Any]
    table: pd.DataFrame  # one row per layer
    dataset: xr.Dataset  # statistics over (layer, param) [+ feature statistics over (layer, kind, split)]
    weights: xr.Dataset  # the weights store's root
    weight_groups: dict[str, xr.Dataset]
    weight_stats: pd.DataFrame  # tidy, the workflow's stats/weights.csv
    weight_hist: pd.DataFrame
    spectrum: pd.DataFrame  # singular values of the flat reshape (stats/spectrum.csv)
    eigenvalues: dict[str, np.ndarray]  # the ESD of each layer (eigenvalues of W^T W, WeightWatcher's matrices)
    features: xr.Dataset | None = None
    feature_groups: dict[str, xr.Dataset] | None = None
    feature_stats: pd.DataFrame | None = None
    feature_hist: pd.DataFrame | None = None
    gradients: xr.Dataset | None = None
    gradient_groups: dict[str, xr.Dataset] | None = None
    em_ab: pd.DataFrame | None = None
    epoch: int = 0  # the checkpoint's epoch (a dnndist checkpoint's metadata), else 0
    reference_init: str = "torch_default"  # the init init_std and std_ratio_to_init are those of

    SUMMARY = (
        "layer",
        "shape",
        "mean",
        "std",
        "kurtosis",
        "within_unit",
        "within_default_bound",
        "tail_index",
        "alpha",
        "pre_std",
        "post_std",
        "median_emission",
        "median_absorption",
    )

    def __repr__(self) -> str:
        extra = ""
        if self.features is not None:
            extra = f", features over inputs ({self.features.attrs.get('inputs_per_split', '?')})"
        if self.gradients is not None:
            extra += f", emission/absorption of {self.gradients.sizes[dims.SAMPLE]} inputs"
        return (
            f"<Analysis of {self.name}: {len(self.layers)} Conv2d/Linear layers{extra}; .table, .dataset, .write(out)>"
        )

    def summary(self, columns: Sequence[str] = SUMMARY) -> str:
        """A short text table of the per-layer numbers (the CLI prints it); feature columns of
        several splits as ``<split>_pre_std``."""
        cols = [
            c for col in columns for c in self.table if c == col or (col.endswith("_std") and c.endswith(f"_{col}"))
        ]
        return self.table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")

    def write(self, out: str | Path, figures: bool = True) -> list[Path]:
        """The stores the workflow writes (weights.zarr; features.zarr and gradients.zarr with
        inputs), the per-layer table (layers.csv), the tidy tables (weights.csv, spectrum.csv,
        weight_hist.csv, features.csv, feature_hist.csv, em_ab.csv) and, with ``figures``,
        weights.png, features.png and esd/<layer>.png. Returns the paths written."""
        out = Path(out)
        written = [extract.write_store(out / "weights.zarr", self.weights, self.weight_groups, self.weights.attrs)]
        if self.features is not None:
            written.append(
                extract.write_store(out / "features.zarr", self.features, self.feature_groups, self.features.attrs)
            )
        if self.gradients is not None:
            written.append(
                extract.write_store(out / "gradients.zarr", self.gradients, self.gradient_groups, self.gradients.attrs)
            )
        for name, df in (
            ("layers", self.table),
            ("weights", self.weight_stats),
            ("spectrum", self.spectrum),
            ("weight_hist", self.weight_hist),
            ("features", self.feature_stats),
            ("feature_hist", self.feature_hist),
            ("em_ab", self.em_ab),
        ):
            if df is not None:
                write_text(out / f"{name}.csv", df.to_csv(index=False))
                written.append(out / f"{name}.csv")
        if figures:
            written += self.write_figures(out)
        return written

    def write_figures(self, out: str | Path) -> list[Path]:
        from dnndist import plots, resources

        out = Path(out)
        plots.use_style(resources.style_path())  # the workflow's figures' sizes: tick labels that fit
        figs = [("weights.png", lambda: plots.draw_weight_distributions(self.weight_hist))]
        if self.feature_hist is not None and not self.feature_hist.empty:
            figs.append(("features.png", lambda: plots.draw_features(self.feature_hist)))
        w = self.table.set_index("layer")
        for layer, ev in self.eigenvalues.items():
            figs.append(
                (
                    f"esd/{layer}.png",
                    lambda ev=ev, layer=layer: plots.draw_esd(
                        ev, float(w.at[layer, "alpha"]), float(w.at[layer, "alpha_xmin"]), layer
                    ),
                )
            )
        written = []
        for name, draw in figs:
            fig = draw()
            with atomic_path(out / name) as tmp:
                fig.savefig(tmp, format="png", dpi=150)
            plots.plt.close(fig)
            written.append(out / name)
        return written
