"""Statistics stage: distribution statistics of weights (and, from the streaming moments,
features) as tidy long tables, aggregated over seeds with bootstrap confidence intervals.

Tidy tables have one row per (variant, init, seed, epoch, layer, param, statistic) and a
``value``; seed aggregates have ``mean``, ``ci_low``, ``ci_high`` (percentile bootstrap,
95 %) and ``n_seeds``. Statistics come from numpy/scipy; the only estimators written here
are the Hill tail index and the stable rank, each a one-line formula (documented below).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from dnndist import dims

log = logging.getLogger(__name__)
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
MIN_EIGENVALUES = 50  # below this many eigenvalues no power-law exponent is fitted
RUN_KEYS = [dims.VARIANT, dims.INIT, dims.SEED, dims.EPOCH]


def hill_tail_index(a: np.ndarray, frac: float = 0.05, min_k: int = 10) -> float:
    """Hill estimator of the tail index alpha of |a| from its k = max(min_k, frac*n) largest values:
    alpha = 1 / mean(log(a_(i) / a_(k+1))), i = 1..k (a_(1) the largest). Smaller alpha = heavier tail."""
    a = np.sort(np.abs(a[np.isfinite(a)]))[::-1]
    k = max(min_k, int(frac * a.size))
    if a.size <= k or a[k] <= 0:
        return math.nan
    logs = np.log(a[:k] / a[k])
    return float(1.0 / logs.mean()) if logs.mean() > 0 else math.nan


def distribution_stats(x: np.ndarray, *, thresholds: Sequence[float] = (1e-3, 1e-2), rel_thresholds: Sequence[float] = (0.1,),
                       fan_in: int | None = None, init_std: float | None = None) -> dict[str, float]:
    """Moments, quantiles, near-zero mass, range fractions, KS distance to the fitted normal, tail index."""
    x = np.asarray(x, dtype=np.float64).ravel()
    nonfinite = int((~np.isfinite(x)).sum())
    x = x[np.isfinite(x)]
    out: dict[str, float] = {"count": float(x.size), "nonfinite": float(nonfinite)}
    if x.size == 0:
        return out
    mean, std = float(x.mean()), float(x.std())
    out.update(mean=mean, std=std, min=float(x.min()), max=float(x.max()))
    varies = std > 0
    out["skewness"] = float(scipy.stats.skew(x)) if varies else math.nan
    out["kurtosis"] = float(scipy.stats.kurtosis(x, fisher=True)) if varies else math.nan  # excess
    for q, v in zip(QUANTILES, np.quantile(x, QUANTILES)):
        out[f"q{round(q * 100):02d}"] = float(v)
    ax = np.abs(x)
    for t in thresholds:
        out[f"near_zero_abs_{t:g}"] = float((ax < t).mean())
    for r in rel_thresholds:
        out[f"near_zero_rel_{r:g}"] = float((ax < r * std).mean()) if varies else math.nan
    out["within_unit"] = float((ax <= 1.0).mean())
    if fan_in:
        out["within_default_bound"] = float((ax <= 1.0 / math.sqrt(fan_in)).mean())
    out["ks_normal"] = float(scipy.stats.kstest(x, "norm", args=(mean, std)).statistic) if varies else math.nan
    out["tail_index"] = hill_tail_index(x) if varies else math.nan
    if init_std is not None and init_std > 0:
        out["std_ratio_to_init"] = std / init_std
    return out


def spectral_stats(w: np.ndarray) -> dict[str, float]:
    """Spectrum of a weight matrix (conv weights reshaped to C_out x C_in*kh*kw).

    stable rank = ||W||_F^2 / ||W||_2^2. The power-law exponent of the eigenvalues
    (lambda = s^2) is 1 + the Hill tail index of their upper half, fitted only when there
    are at least MIN_EIGENVALUES of them (otherwise NaN, flagged by ``powerlaw_fitted`` = 0).
    """
    mat = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1)
    if not np.isfinite(mat).all():
        return {"stable_rank": math.nan, "spectral_norm": math.nan, "powerlaw_alpha": math.nan, "powerlaw_fitted": 0.0}
    s = np.linalg.svd(mat, compute_uv=False)
    top = float(s[0]) if s.size else 0.0
    out = {"spectral_norm": top, "stable_rank": float((s**2).sum() / top**2) if top > 0 else math.nan}
    eig = s**2
    if eig.size >= MIN_EIGENVALUES and top > 0:
        out["powerlaw_alpha"] = 1.0 + hill_tail_index(eig, frac=0.5, min_k=MIN_EIGENVALUES // 2)
        out["powerlaw_fitted"] = 1.0
    else:
        out["powerlaw_alpha"], out["powerlaw_fitted"] = math.nan, 0.0
    return out


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) of the mean over seeds: percentile bootstrap (scipy.stats.bootstrap).

    One value or identical values give a zero-width interval only when there is more than
    one; a single seed has no interval (NaN)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size == 1:
        return mean, math.nan, math.nan
    if np.all(v == v[0]):
        return mean, mean, mean
    res = scipy.stats.bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                                method="percentile", rng=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def aggregate_seeds(df: pd.DataFrame, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """Collapse the seed dimension of a tidy table: mean and bootstrap 95 % CI per group."""
    keys = list(keys) if keys is not None else [c for c in df.columns if c not in (dims.SEED, "value")]
    rows = []
    for group, sub in df.groupby(keys, sort=True, dropna=False):
        mean, lo, hi = bootstrap_ci(sub["value"].to_numpy())
        rows.append((*((group,) if len(keys) == 1 else group), mean, lo, hi, int(sub[dims.SEED].nunique())))
    return pd.DataFrame(rows, columns=[*keys, "mean", "ci_low", "ci_high", "n_seeds"])


def weight_table(weights: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Tidy statistics of every weight and bias of one run's weights store (root + layer groups).

    ``weights`` maps layer name -> xarray Dataset of that layer group (dims run + epoch + tensor).
    """
    stats_cfg = (settings or {}).get("stats", {})
    thresholds = stats_cfg.get("near_zero", (1e-3, 1e-2))
    rel = stats_cfg.get("near_zero_rel", (0.1,))
    rows = []
    for layer, ds in weights.items():
        w_attrs = ds["weight"].attrs
        for key in ("variant", "init", "seed"):
            if ds.sizes[key] != 1:
                raise ValueError(f"weight_table expects one run per store, got {ds.sizes[key]} {key}s")
        run = {k: ds[k].values[0].item() if hasattr(ds[k].values[0], "item") else ds[k].values[0] for k in ("variant", "init", "seed")}
        for epoch in ds[dims.EPOCH].values:
            for param in ("weight", "bias"):
                if param not in ds:  # convs without bias (ResNets)
                    continue
                x = ds[param].sel(epoch=epoch).values.squeeze(axis=(0, 1, 2))
                init_std = w_attrs["init_std"] if param == "weight" else w_attrs["bias_init_std"]
                values = distribution_stats(x, thresholds=thresholds, rel_thresholds=rel, fan_in=int(w_attrs["fan_in"]), init_std=init_std)
                if param == "weight":
                    values.update(spectral_stats(x))
                    values.update(fan_in=float(w_attrs["fan_in"]), fan_out=float(w_attrs["fan_out"]),
                                  init_std=float(w_attrs["init_std"]), init_bound=float(w_attrs["init_bound"]))
                else:
                    values.update(init_std=float(w_attrs["bias_init_std"]), init_bound=float(w_attrs["bias_init_bound"]))
                base = {**run, dims.EPOCH: int(epoch), dims.LAYER: layer, "depth": int(w_attrs["depth"]), dims.PARAM: param}
                rows.extend({**base, "statistic": k, "value": v} for k, v in values.items())
    return pd.DataFrame(rows)


def open_layer_groups(path: str | Path) -> dict[str, Any]:
    """The layer groups of a weights store, in depth order."""
    import xarray as xr

    root = xr.open_zarr(path, consolidated=False)
    return {str(v): xr.open_zarr(path, group=str(v), consolidated=False) for v in root[dims.LAYER].values}


def weight_stats_of_store(path: str | Path, settings: Mapping[str, Any] | None = None) -> pd.DataFrame:
    return weight_table(open_layer_groups(path), settings)


def feature_table(features: Any) -> pd.DataFrame:
    """Per (run, epoch, layer, kind, split): count, mean, std, skewness, excess kurtosis, min, max
    from the exact streaming moments of a features store's root dataset."""
    ds = features.load()
    n, m2, m3, m4 = ds["count"], ds["m2"], ds["m3"], ds["m4"]
    var = m2 / n
    derived = {
        "count": n, "mean": ds["mean"], "std": np.sqrt(var), "skewness": (m3 / n) / var**1.5,
        "kurtosis": (m4 / n) / var**2 - 3.0, "min": ds["min"], "max": ds["max"], "nonfinite": ds["nonfinite"],
    }
    frames = []
    for name, arr in derived.items():
        df = arr.rename("value").to_dataframe().reset_index()
        df["statistic"] = name
        frames.append(df[[*RUN_KEYS, dims.LAYER, dims.KIND, dims.SPLIT, "statistic", "value"]])
    out = pd.concat(frames, ignore_index=True)
    return out


def training_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Epoch-level rows of training metrics (train/valid/test loss and accuracy, diverged flags)."""
    ep = metrics[metrics["step"].isna() | (metrics["metric"] == "diverged")].drop(columns="step")
    return ep.rename(columns={"metric": "statistic"})[[*RUN_KEYS, dims.SPLIT, "statistic", "value"]]


def diverged_runs(training: pd.DataFrame) -> dict[tuple[str, str], int]:
    """(variant, init) -> number of seeds whose training diverged (NaN/inf loss), from the
    training table or its seed summary; such runs stop at the divergence."""
    rows = training[training["statistic"] == "diverged"]
    if rows.empty:
        return {}
    col = "n_seeds" if "n_seeds" in rows else None
    if col:
        counts = rows.groupby(["variant", "init"])[col].max()
    else:
        counts = rows.groupby(["variant", "init"])["seed"].nunique()
    return {k: int(v) for k, v in counts.items()}


def combine(tables: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate per-run tidy tables (sorted, so the result does not depend on input order)."""
    frames = [pd.read_csv(p) for p in tables]
    df = pd.concat(frames, ignore_index=True)
    keys = [c for c in df.columns if c != "value"]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def weight_histograms(weights: dict, epochs: Sequence[int], max_bins: int = 60) -> pd.DataFrame:
    """Tidy density histograms of one run's weights/biases at the given epochs: sqrt(n) bins
    (10 to ``max_bins``) over the 0.5-99.5 % quantile range of each tensor. Rows also carry the
    tensor's mean and std; a constant tensor gets one row with NaN density."""
    rows = []
    for layer, ds in weights.items():
        run = {k: ds[k].values[0] for k in ("variant", "init", "seed")}
        for epoch in epochs:
            for param in ("weight", "bias"):
                if param not in ds:
                    continue
                x = ds[param].sel(epoch=epoch).values.ravel().astype(np.float64)
                x = x[np.isfinite(x)]
                if x.size == 0:
                    continue
                lo, hi = np.quantile(x, [0.005, 0.995])
                base = {**run, "epoch": epoch, "layer": layer, "param": param, "mean": float(x.mean()), "std": float(x.std())}
                if hi <= lo:
                    rows.append({**base, "x": float(lo), "density": np.nan})
                    continue
                bins = int(np.clip(np.sqrt(x.size), 10, max_bins))
                dens, edges = np.histogram(x, bins=bins, range=(lo, hi), density=True)
                centres = 0.5 * (edges[1:] + edges[:-1])
                rows.extend({**base, "x": float(c), "density": float(d)} for c, d in zip(centres, dens))
    return pd.DataFrame(rows)


def feature_histograms(features: Any, epochs: Sequence[int], kind: str = "pre") -> pd.DataFrame:
    """Tidy densities of the streaming feature histograms (all inputs of each split) of one run."""
    ds = features.sel(kind=kind).load()
    rows = []
    bins = ds.sizes["bin"]
    for epoch in epochs:
        for layer in ds["layer"].values:
            for split in ds["split"].values:
                d = ds.sel(epoch=epoch, layer=layer, split=split).squeeze()
                lo, hi, counts = float(d["hist_lo"]), float(d["hist_hi"]), d["hist"].values
                width = (hi - lo) / bins
                total = float(d["count"])
                if not np.isfinite(width) or width <= 0 or total <= 0:
                    continue
                centres = lo + width * (np.arange(bins) + 0.5)
                run = {k: d[k].item() for k in ("variant", "init", "seed")}
                rows.extend({**run, "epoch": int(epoch), "layer": str(layer), "kind": kind, "split": str(split), "x": float(c),
                             "density": float(n / total / width), "mean": float(d["mean"]), "std": float(np.sqrt(d["m2"] / total))}
                            for c, n in zip(centres, counts))
    return pd.DataFrame(rows)


def em_ab_table(groups: dict, epoch: int, channels: int = 15) -> pd.DataFrame:
    """Tidy per-input emission and absorption of the first ``channels`` channels of every conv layer."""
    frames = []
    for layer, ds in groups.items():
        if "em" not in ds:
            continue
        for measure, dim in (("emission", "out_channel"), ("absorption", "in_channel")):
            da = ds["em" if measure == "emission" else "ab"].sel(epoch=epoch).isel({dim: slice(0, channels)}).load()
            df = da.rename("value").to_dataframe().reset_index().rename(columns={dim: "channel"})
            df["layer"], df["measure"] = layer, measure
            frames.append(df[["variant", "init", "seed", "epoch", "layer", "measure", "channel", "sample", "value"]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def spectrum_table(weights: Mapping[str, Any]) -> pd.DataFrame:
    """Singular values of every weight matrix (conv reshaped to C_out x C_in*kh*kw), per epoch, largest first."""
    rows = []
    for layer, ds in weights.items():
        run = {k: ds[k].values[0] for k in ("variant", "init", "seed")}
        for epoch in ds[dims.EPOCH].values:
            w = ds["weight"].sel(epoch=epoch).values.squeeze(axis=(0, 1, 2)).astype(np.float64)
            mat = w.reshape(w.shape[0], -1)
            if not np.isfinite(mat).all():
                continue
            s = np.linalg.svd(mat, compute_uv=False)
            rows.extend({**run, dims.EPOCH: int(epoch), dims.LAYER: layer, "index": i, "singular_value": float(v)}
                        for i, v in enumerate(s))
    return pd.DataFrame(rows)
