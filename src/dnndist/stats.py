"""Statistics stage: distribution statistics of weights (and, from the streaming moments,
features) as tidy long tables, aggregated over seeds with t confidence intervals.

Tidy tables have one row per (variant, init, seed, epoch, layer, param, statistic) and a
``value``; seed aggregates have ``mean``, ``ci_low``, ``ci_high`` (the 95 % t-interval of
the mean over seeds: true to its n, none for one seed) and ``n_seeds`` (the seeds with a
finite value). Statistics come from numpy/scipy; the one estimator written here is the Hill
tail index (documented below; spectral metrics are in ``dnndist.spectral``). Shape
statistics come with a size-calibrated reference (``gaussian_reference``): what a Gaussian
(or, for the tail index, a uniform) sample of the same size gives.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.special
import scipy.stats

from dnndist import best, dims, spectral
from dnndist.moments import DERIVED_MOMENTS, derived_moments  # noqa: F401  (re-exported)
from dnndist.references import (  # noqa: F401  (re-exported: the tables read the bands here)
    HILL_FRAC,
    HILL_MIN_K,
    REFERENCE_STATS,
    gaussian_reference,
    hill_k,
    hill_reference,
    hill_rows,
    ks_sorted,
)
from dnndist.settings import StatsSettings
from dnndist.verdicts import t_interval

log = logging.getLogger(__name__)
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
RUN_KEYS = [dims.VARIANT, dims.INIT, dims.SEED, dims.EPOCH]
RUN_DIMS = list(dims.RUN_DIMS)  # variant, init, seed: length 1 in a run's store


def hill_tail_index(a: np.ndarray, frac: float = HILL_FRAC, min_k: int = HILL_MIN_K) -> float:
    """Hill estimator of the tail index alpha of |a| from its k = max(min_k, frac*n) largest values:
    alpha = 1 / mean(log(a_(i) / a_(k+1))), i = 1..k (a_(1) the largest). Smaller alpha = heavier tail.
    It has no absolute scale: a Gaussian sample scores a finite alpha that depends on n and k (see
    ``gaussian_reference``, which gives the Gaussian's and the uniform's value at the same size)."""
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(hill_rows(a[None], hill_k(a.size, frac, min_k))[0])


def distribution_stats(
    x: np.ndarray,
    *,
    thresholds: Sequence[float] = (1e-3, 1e-2),
    rel_thresholds: Sequence[float] = (0.1,),
    fan_in: int | None = None,
    init_std: float | None = None,
    reference: bool = True,
) -> dict[str, float]:
    """Moments, quantiles, near-zero mass, range fractions, KS distance to the fitted normal, tail
    index, and (``reference``) the size-calibrated reference of the shape statistics
    (``gaussian_reference``: the KS and kurtosis null band, the Hill index of a Gaussian and of a
    uniform sample of this size, Hill's k). ``ndim`` is the tensor's rank (4 conv, 2 linear, 1 bias).
    One tensor of ``distribution_stats_many``: every statistic has one kernel (``_varying_columns``)."""
    opts = {"thresholds": thresholds, "rel_thresholds": rel_thresholds, "reference": reference}
    return distribution_stats_many([x], fan_in=[fan_in], init_std=[init_std], **opts)[0]


def _irregular_stats(
    x: np.ndarray,
    thresholds: Sequence[float],
    rel_thresholds: Sequence[float],
    fan_in: int | None,
    init_std: float | None,
    reference: bool,
) -> dict[str, float]:
    """``distribution_stats`` of a tensor with non-finite values or without spread: the statistics of
    its finite values (by the row kernel where they vary), the shape statistics NaN where they do not."""
    ndim = float(np.ndim(x))
    flat = np.asarray(x).ravel()
    finite = flat[np.isfinite(flat)]
    out: dict[str, float] = {"count": float(finite.size), "nonfinite": float(flat.size - finite.size), "ndim": ndim}
    if finite.size == 0:
        return out
    f64 = finite.astype(np.float64)
    mean, std = f64.mean(), f64.std()
    if std > 0:  # finite values with spread: the row kernel, with this tensor's counts
        cols = _varying_columns(
            f64[None], _sorted_rows(finite[None]), mean[None], std[None], ndim, thresholds, rel_thresholds
        )
        out.update({k: float(v[0]) for k, v in cols.items() if k not in out})
        return _finish_row(out, f64, fan_in, init_std, gaussian_reference(int(f64.size)) if reference else {})
    # constant: its value everywhere; no shape
    out.update(mean=float(mean), std=float(std), min=float(f64.min()) + 0.0, max=float(f64.max()) + 0.0)
    out["skewness"] = out["kurtosis"] = math.nan
    for q, v in zip(QUANTILES, np.quantile(f64, QUANTILES)):
        out[f"q{round(q * 100):02d}"] = float(v) + 0.0
    ax = np.abs(f64)
    for t in thresholds:
        out[f"near_zero_abs_{t:g}"] = float((ax < t).mean())
    for r in rel_thresholds:
        out[f"near_zero_rel_{r:g}"] = math.nan
    out["within_unit"] = float((ax <= 1.0).mean())
    out["ks_normal"] = out["tail_index"] = math.nan
    return _finish_row(out, f64, fan_in, init_std, {})


def _finish_row(
    out: dict[str, float], x: np.ndarray, fan_in: int | None, init_std: float | None, ref: Mapping[str, float]
) -> dict[str, float]:
    """A tensor's row completed: the fraction inside the default-init bound (after within_unit, in
    the key order of the table), the reference band, the ratio to the init's std."""
    if fan_in:
        bound = float((np.abs(x) <= 1.0 / math.sqrt(fan_in)).mean())
        out = _insert_after(out, "within_unit", "within_default_bound", bound)
    out.update(ref)
    if init_std is not None and init_std > 0:
        out["std_ratio_to_init"] = out["std"] / init_std
    return out


def distribution_stats_many(
    tensors: Sequence[np.ndarray],
    *,
    thresholds: Sequence[float] = (1e-3, 1e-2),
    rel_thresholds: Sequence[float] = (0.1,),
    fan_in: Sequence[int | None] | None = None,
    init_std: Sequence[float | None] | None = None,
    reference: bool = True,
) -> list[dict[str, float]]:
    """``distribution_stats`` of several tensors of one shape (a layer's weight across epochs and
    runs), vectorised: the tensors are the rows of one array and each statistic is one numpy
    call over the rows, the same operations on the same values as tensor by tensor, so the
    results are identical. ``fan_in`` and ``init_std`` are per tensor; a tensor with a
    non-finite value or no spread (constant) is computed on its own (``_irregular_stats``)."""
    count = len(tensors)
    fan_in = list(fan_in) if fan_in is not None else [None] * count
    init_std = list(init_std) if init_std is not None else [None] * count
    native = np.stack([np.asarray(t).ravel() for t in tensors])
    x = native.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # rows with inf/NaN: computed on their own below
        mean, std = x.mean(-1), x.std(-1)
    plain = np.isfinite(x).all(-1) & (std > 0)
    out = [
        _irregular_stats(t, thresholds, rel_thresholds, f, i, reference) if not ok else {}
        for t, f, i, ok in zip(tensors, fan_in, init_std, plain)
    ]
    rows = np.flatnonzero(plain)
    if rows.size:
        ndim = float(np.ndim(tensors[0]))
        cols = _varying_columns(
            x[rows], _sorted_rows(native[rows]), mean[rows], std[rows], ndim, thresholds, rel_thresholds
        )
        ref = gaussian_reference(x.shape[-1]) if reference else {}
        for k, r in enumerate(rows):
            out[r] = _finish_row({name: float(col[k]) for name, col in cols.items()}, x[r], fan_in[r], init_std[r], ref)
    return out


def _sorted_rows(x: np.ndarray) -> np.ndarray:
    """Each row sorted ascending, as float64. Rows of a narrower float (weights are float32) are
    sorted in their own dtype, in about 60 % of the time: converting to float64 is exact and
    keeps the order, so the values are the same as sorting the float64 rows (only where -0.0 and
    0.0 both occur may they change places, which no statistic here sees)."""
    if x.dtype.kind == "f" and x.dtype.itemsize < 8:
        return np.sort(x, axis=-1).astype(np.float64)
    return np.sort(np.asarray(x, dtype=np.float64), axis=-1)


def _varying_columns(
    x: np.ndarray,
    xs: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    ndim: float,
    thresholds: Sequence[float],
    rel_thresholds: Sequence[float],
) -> dict[str, np.ndarray]:
    """``distribution_stats`` of finite rows with spread (all but the within-default-bound fraction,
    the reference and the ratio to the init std), one array per statistic, in its key order. ``xs``:
    the rows sorted (``_sorted_rows``), for the extremes, quantiles, KS distance and Hill tail."""
    n = x.shape[-1]
    cols: dict[str, np.ndarray] = {"count": np.full(len(x), float(n)), "nonfinite": np.zeros(len(x))}
    cols.update(ndim=np.full(len(x), ndim), mean=mean, std=std, min=xs[:, 0] + 0.0, max=xs[:, -1] + 0.0)
    # row by row: over rows, scipy takes m2**1.5 with numpy's vectorised power, which can differ from
    # the scalar power of one tensor's skew by an ulp (the kurtosis squares: exact either way)
    cols["skewness"] = np.array([scipy.stats.skew(row) for row in x])
    cols["kurtosis"] = scipy.stats.kurtosis(x, axis=-1, fisher=True)
    for q, v in zip(QUANTILES, np.quantile(xs, QUANTILES, axis=-1)):  # the same order statistics as of x
        cols[f"q{round(q * 100):02d}"] = v + 0.0  # (as distribution_stats: no -0.0)
    ax = np.abs(x)
    for t in thresholds:
        cols[f"near_zero_abs_{t:g}"] = (ax < t).mean(-1)
    for r in rel_thresholds:
        cols[f"near_zero_rel_{r:g}"] = (ax < r * std[:, None]).mean(-1)
    cols["within_unit"] = (ax <= 1.0).mean(-1)
    # standardising is monotone in every rounding, so the standardised sorted values are sorted
    cols["ks_normal"] = ks_sorted((xs - mean[:, None]) / std[:, None])
    cols["tail_index"] = _hill_sorted(xs, hill_k(n))
    return cols


def _hill_sorted(xs: np.ndarray, k: int) -> np.ndarray:
    """``hill_rows`` of rows sorted ascending: the k+1 largest |x| of a row are among its k+1
    smallest and k+1 largest values, so only those 2(k+1) are partitioned (the same values, the
    same result)."""
    n = xs.shape[-1]
    if n <= 2 * (k + 1):
        return hill_rows(xs, k)
    return hill_rows(np.concatenate([xs[..., : k + 1], xs[..., n - k - 1 :]], axis=-1), k)


def _insert_after(d: dict[str, float], after: str, key: str, value: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        out[k] = v
        if k == after:
            out[key] = value
    return out


def spectral_stats(w: np.ndarray) -> dict[str, float]:
    """WeightWatcher's spectral metrics of a Linear or Conv2d weight (power-law alpha of the
    eigenvalue spectrum with the KS-optimal xmin, lambda_max, stable rank, ...) plus the
    spectral norm and stable rank of the flat C_out x C_in*kh*kw reshape: see ``dnndist.spectral``."""
    return spectral.spectral_stats(w)


def seed_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) of the mean over seeds: the t-interval mean +- t(n-1) * sd / sqrt(n)
    over the finite values. A single seed has no interval (NaN); identical values a zero-width one.
    (With 2 seeds it is mean +- 12.7 * sd / sqrt(2): wide, as it should be; a percentile
    bootstrap of 2 values would return their range.)"""
    return t_interval(np.asarray(values, dtype=np.float64), confidence)


def aggregate_seeds(df: pd.DataFrame, keys: Iterable[str] | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Collapse the seed dimension of a tidy table: per group the mean, the t-interval over seeds
    (``seed_ci``) and ``n_seeds``, the number of finite values it rests on."""
    keys = list(keys) if keys is not None else [c for c in df.columns if c not in (dims.SEED, "value")]
    value = pd.to_numeric(df["value"], errors="coerce")
    value = value.where(np.isfinite(value))
    g = df.assign(value=value).groupby(keys, sort=True, dropna=False)["value"]
    agg = g.agg(["mean", "std", "count"]).reset_index()
    n = agg["count"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        q = scipy.stats.t.ppf(0.5 + confidence / 2, np.where(n >= 2, n - 1, np.nan))
        half = np.where(agg["std"].to_numpy() == 0, 0.0, q * agg["std"].to_numpy() / np.sqrt(n))
    mean = agg["mean"].to_numpy()
    agg["ci_low"], agg["ci_high"] = mean - half, mean + half
    agg["n_seeds"] = n.astype(int)
    return agg[[*keys, "mean", "ci_low", "ci_high", "n_seeds"]]


# --------------------------------------------------------------------------- dimension-named access
# The statistics are numpy kernels (above: distribution_stats, spectral_stats, the row kernels);
# the table builders below reach their inputs by dimension name (dnndist.dims) through these.
def check_one_run(ds: Any, where: str) -> None:
    """Raise unless ``ds`` holds one run (length 1 along each run dimension)."""
    for dim in dims.RUN_DIMS:
        if ds.sizes[dim] != 1:
            raise ValueError(f"{where} expects one run per store, got {ds.sizes[dim]} {dim}s")


def run_of(ds: Any) -> dict[str, Any]:
    """The run (variant, init, seed) of a one-run dataset, by dimension name, as Python scalars."""
    return {dim: _scalar(ds[dim].values[0]) for dim in dims.RUN_DIMS}


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # numpy scalars; a StringDType element is a str


def tensor_at(da: Any, epoch: Any) -> np.ndarray:
    """One run's tensor at ``epoch`` as the numpy array a kernel takes: the epoch selected and the
    run dimensions squeezed by name, the tensor's own dimensions left in their order."""
    return da.sel({dims.EPOCH: epoch}).squeeze(dim=RUN_DIMS).values


# --------------------------------------------------------------------------- per-run tables
BATCH_VALUES = 1 << 16  # values per vectorised batch (512 KiB as float64: in cache); a larger tensor is a batch alone
PARAMS = ("weight", "bias")


def weight_table(weights: Mapping[str, Any], settings: StatsSettings | None = None) -> pd.DataFrame:
    """Tidy statistics of every weight and bias of one run's weights store (root + layer groups).

    ``weights`` maps layer name -> xarray Dataset of that layer group (dims run + epoch + tensor).
    """
    return weight_tables([weights], settings)[0]


def weight_tables(
    runs: Sequence[Mapping[str, Any]], settings: StatsSettings | None = None, batch_values: int = BATCH_VALUES
) -> list[pd.DataFrame]:
    """``weight_table`` of several runs (a variant's) at once: the distribution statistics of each
    layer's weight (and bias) over every run and epoch are computed together, in batches of up to
    ``batch_values`` values (``distribution_stats_many``); the tables are the same as run by run."""
    return [weights for weights, _ in weight_and_spectrum_tables(runs, settings, batch_values)]


def weight_and_spectrum_tables(
    runs: Sequence[Mapping[str, Any]], settings: StatsSettings | None = None, batch_values: int = BATCH_VALUES
) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """(``weight_table``, ``spectrum_table``) of each of several runs: the weights' spectra are
    computed once, for both (each weight's ``spectral.flat_esd``)."""
    settings = settings if settings is not None else StatsSettings()
    layers = list(dict.fromkeys(layer for weights in runs for layer in weights))
    values: dict[tuple[int, str, int, str], dict[str, float]] = {}
    spectra: dict[tuple[int, str, int, str], np.ndarray] = {}
    for layer in layers:
        for param in PARAMS:
            batch: list[tuple[tuple[int, str, int, str], np.ndarray, Mapping[str, Any]]] = []
            for item in _tensors(runs, layer, param):
                if batch and (item[1].shape != batch[0][1].shape or (len(batch) + 1) * item[1].size > batch_values):
                    values.update(_tensor_values(batch, settings, spectra))
                    batch = []
                batch.append(item)
            values.update(_tensor_values(batch, settings, spectra) if batch else {})
    return [(_weight_rows(i, weights, values), _spectrum_rows(i, weights, spectra)) for i, weights in enumerate(runs)]


def _tensors(
    runs: Sequence[Mapping[str, Any]], layer: str, param: str
) -> Iterable[tuple[tuple[int, str, int, str], np.ndarray, Mapping[str, Any]]]:
    """((run index, layer, epoch, param), tensor, the weight's attrs) of one layer's param in every
    run and epoch; a run's tensors are read at once (all epochs), not epoch by epoch."""
    for i, weights in enumerate(runs):
        ds = weights.get(layer)
        if ds is None or param not in ds:  # convs without bias (ResNets)
            continue
        check_one_run(ds, "weight_table")
        every = ds[param].squeeze(dim=RUN_DIMS).transpose(dims.EPOCH, ...).values
        for epoch, x in zip(ds[dims.EPOCH].values, every):
            yield (i, layer, int(epoch), param), x, ds["weight"].attrs


def _tensor_values(
    batch: Sequence[tuple[tuple[int, str, int, str], np.ndarray, Mapping[str, Any]]],
    settings: StatsSettings,
    spectra: dict[tuple[int, str, int, str], np.ndarray],
) -> dict[tuple[int, str, int, str], dict[str, float]]:
    """Every statistic of a batch of same-shape tensors of one param: distribution statistics,
    for a weight its spectral metrics, and the init's settings (from the weight's attrs). A finite
    weight's ``spectral.flat_esd`` goes into ``spectra`` under its key (for ``spectrum_table``)."""
    param = batch[0][0][3]
    std_key, bound_key = ("init_std", "init_bound") if param == "weight" else ("bias_init_std", "bias_init_bound")
    many = distribution_stats_many(
        [x for _, x, _ in batch],
        thresholds=settings.near_zero,
        rel_thresholds=settings.near_zero_rel,
        fan_in=[int(a["fan_in"]) for _, _, a in batch],
        init_std=[a[std_key] for _, _, a in batch],
    )
    out = {}
    for (key, x, a), values in zip(batch, many):
        if param == "weight":
            flat = _flat_esd(x)
            values.update(spectral.spectral_stats(x, flat))
            if flat is not None:
                spectra[key] = flat
            values.update(fan_in=float(a["fan_in"]), fan_out=float(a["fan_out"]))
        values.update(init_std=float(a[std_key]), init_bound=float(a[bound_key]))
        if param == "weight":
            values["gain"] = float(a["gain"])
        out[key] = values
    return out


def _weight_rows(
    i: int, weights: Mapping[str, Any], values: Mapping[tuple[int, str, int, str], dict[str, float]]
) -> pd.DataFrame:
    """Run ``i``'s weights table: its tensors' statistics as tidy rows, layer by layer and epoch by epoch."""
    rows = []
    for layer, ds in weights.items():
        run, depth = run_of(ds), int(ds["weight"].attrs["depth"])
        for epoch in ds[dims.EPOCH].values:
            for param in [p for p in PARAMS if p in ds]:
                base = {**run, dims.EPOCH: int(epoch), dims.LAYER: layer, "depth": depth, dims.PARAM: param}
                stats_ = values[(i, layer, int(epoch), param)]
                rows.extend({**base, "statistic": k, "value": v} for k, v in stats_.items())
    return pd.DataFrame(rows)


def open_layer_groups(path: str | Path) -> dict[str, Any]:
    """The layer groups of a weights store, in depth order."""
    from dnndist.io import layer_groups, open_store_lazily

    return {name: open_store_lazily(path, name, dask=False) for name in layer_groups(path)}  # without dask


def weight_stats_of_store(path: str | Path, settings: StatsSettings | None = None) -> pd.DataFrame:
    return weight_table(open_layer_groups(path), settings)


def feature_table(features: Any) -> pd.DataFrame:
    """Per (run, epoch, layer, kind, split): count, mean, std, skewness, excess kurtosis, min, max
    from the exact streaming moments of a features store's root dataset, with each layer's
    ``depth`` (its position among the weight layers, so tables order conv10 after conv2)."""
    ds = features.load()
    moments = derived_moments(ds["n"], ds["m2"], ds["m3"], ds["m4"])
    derived = {
        "count": ds["n"],
        "mean": ds["mu"],
        "std": moments["stdev"],
        "skewness": moments["skewness"],
        "kurtosis": moments["kurtosis"],
        "min": ds["vmin"],
        "max": ds["vmax"],
        "nonfinite": ds["nonfinite"],
    }
    frames = []
    for name, arr in derived.items():
        df = arr.rename("value").to_dataframe().reset_index()
        df["statistic"] = name
        depth = ["depth"] if "depth" in df else []
        frames.append(df[[*RUN_KEYS, dims.LAYER, *depth, dims.KIND, dims.SPLIT, "statistic", "value"]])
    out = pd.concat(frames, ignore_index=True)
    return out


def training_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Epoch-level rows of training metrics (train/valid/test loss and accuracy, diverged flags)."""
    ep = metrics[metrics["step"].isna() | (metrics["metric"] == "diverged")].drop(columns="step")
    return ep.rename(columns={"metric": "statistic"})[[*RUN_KEYS, dims.SPLIT, "statistic", "value"]]


def diverged_runs(training: pd.DataFrame) -> dict[tuple[str, str], int]:
    """(variant, init) -> number of seeds whose training diverged (a NaN/inf loss or one above the
    blow-up ceiling, dnndist.train), from the training table or its seed summary; such runs stop
    at the divergence."""
    rows = training[training["statistic"] == "diverged"]
    if rows.empty:
        return {}
    col = "n_seeds" if "n_seeds" in rows else None
    if col:
        counts = rows.groupby([dims.VARIANT, dims.INIT])[col].max()
    else:
        counts = rows.groupby([dims.VARIANT, dims.INIT])[dims.SEED].nunique()
    return {k: int(v) for k, v in counts.items()}


def shared_epochs(df: pd.DataFrame) -> pd.DataFrame:
    """The rows at epochs that every seed of their (variant, init) has: a run's best-validation
    epoch (train.checkpoints: best) is a checkpoint of that run alone, and a mean over seeds there
    would be a mean over some of them."""
    if dims.EPOCH not in df or not len(df):
        return df
    group = [dims.VARIANT, dims.INIT]
    seeds = df.groupby(group)[dims.SEED].transform("nunique")
    have = df.groupby([*group, dims.EPOCH])[dims.SEED].transform("nunique")
    return df[have == seeds]


NAME_COLUMNS = (dims.VARIANT, dims.INIT, dims.LAYER, dims.PARAM, dims.SPLIT, dims.KIND, "statistic", "metric")


def read_table(path: str | Path) -> pd.DataFrame:
    """A tidy table written by the statistics stage, its name columns read as strings: a layer
    named "0.0" or "4" (an nn.Sequential's) or a recorded group named "1" stays a name."""
    return pd.read_csv(path, dtype=dict.fromkeys(NAME_COLUMNS, str))


def combine(tables: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate per-run tidy tables (sorted, so the result does not depend on input order)."""
    frames = [read_table(p) for p in tables]
    df = pd.concat(frames, ignore_index=True)
    keys = [c for c in df.columns if c != "value"]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def weight_histograms(weights: dict, epochs: Sequence[int], max_bins: int = 100) -> pd.DataFrame:
    """Tidy density histograms of one run's weights/biases at the given epochs: sqrt(n) equal bins
    (10 to ``max_bins``) over the full min..max range of each tensor, so the tails (the largest
    weights) are in the table. Rows also carry the tensor's count, mean, std, min and max; a
    constant tensor (min == max) gets one row at its value with NaN density."""
    rows = []
    for layer, ds in weights.items():
        run = run_of(ds)
        for epoch in epochs:
            for param in ("weight", "bias"):
                if param not in ds:
                    continue
                x = tensor_at(ds[param], epoch).ravel().astype(np.float64)
                x = x[np.isfinite(x)]
                if x.size == 0:
                    continue
                lo, hi = float(x.min()), float(x.max())
                base = {
                    **run,
                    dims.EPOCH: epoch,
                    dims.LAYER: layer,
                    dims.PARAM: param,
                    "count": int(x.size),
                    "mean": float(x.mean()),
                    "std": float(x.std()),
                    "min": lo,
                    "max": hi,
                }
                if hi <= lo:
                    rows.append({**base, "x": lo, "density": np.nan})
                    continue
                bins = int(np.clip(np.sqrt(x.size), 10, max_bins))
                dens, edges = np.histogram(x, bins=bins, range=(lo, hi), density=True)
                centres = 0.5 * (edges[1:] + edges[:-1])
                rows.extend({**base, "x": float(c), "density": float(d)} for c, d in zip(centres, dens))
    return pd.DataFrame(rows)


def feature_histograms(features: Any, epochs: Sequence[int], kind: str = "pre") -> pd.DataFrame:
    """Tidy densities of the streaming feature histograms (all inputs of each split) of one run.
    Rows also carry the exact mean, std, min and max of the split and ``outside``, the fraction of
    values beyond the fixed histogram range (counted, but not in any bin)."""
    ds = features.sel({dims.KIND: kind}).load()
    rows = []
    bins = ds.sizes[dims.BIN]
    for epoch in epochs:
        for layer in ds[dims.LAYER].values:
            for split in ds[dims.SPLIT].values:
                d = ds.sel({dims.EPOCH: epoch, dims.LAYER: layer, dims.SPLIT: split}).squeeze(dim=RUN_DIMS)
                lo, hi, counts = float(d["hist_lo"]), float(d["hist_hi"]), d["hist"].values
                width = (hi - lo) / bins
                total = float(d["n"])
                if not np.isfinite(width) or width <= 0 or total <= 0:
                    continue
                centres = lo + width * (np.arange(bins) + 0.5)
                run = {dim: d[dim].item() for dim in dims.RUN_DIMS}
                outside = sum(float(d[k]) for k in ("underflow", "overflow") if k in d and np.isfinite(float(d[k])))
                extra = {
                    "mean": float(d["mu"]),
                    "std": float(np.sqrt(d["m2"] / total)),
                    "min": float(d["vmin"]) if "vmin" in d else np.nan,
                    "max": float(d["vmax"]) if "vmax" in d else np.nan,
                    "outside": outside / total,
                }
                rows.extend(
                    {
                        **run,
                        dims.EPOCH: int(epoch),
                        dims.LAYER: str(layer),
                        dims.KIND: kind,
                        dims.SPLIT: str(split),
                        "x": float(c),
                        "density": float(n / total / width),
                        **extra,
                    }
                    for c, n in zip(centres, counts)
                )
    return pd.DataFrame(rows)


def stage_epochs(epochs: Sequence[int], claims_at: Sequence[int | str], best_epoch: int | None) -> list[int]:
    """The epochs whose per-input emission/absorption is tabled: the first (C6 is decided before
    training too: "holds, already at initialisation"), the last, and those of the stages the claims
    are also decided at (``stats.claims_at``: checkpoint epochs; 'best', the store's ``best_epoch``),
    where the store has them."""
    wanted = {epochs[0], epochs[-1]} | {e for e in claims_at if not isinstance(e, str)}
    if best.BEST in claims_at and best_epoch is not None:
        wanted.add(int(best_epoch))
    return sorted(e for e in wanted if e in epochs)


EMISSION, ABSORPTION = "em", "ab"  # a gradients store's conv layer arrays


EM_AB_CHANNELS = 16  # all of the paper CNN's; the first 16 of a wider layer (the paper's Fig 4 shows 15)


def em_ab_table(groups: dict, epoch: int | Sequence[int], channels: int = EM_AB_CHANNELS) -> pd.DataFrame:
    """Tidy per-input emission and absorption of the first ``channels`` channels of every conv layer,
    at one checkpoint epoch or several; ``layer_channels`` is how many the layer has."""
    epoch = [epoch] if isinstance(epoch, (int, np.integer)) else list(epoch)
    frames = []
    for layer, ds in groups.items():
        if EMISSION not in ds:
            continue
        for measure, name, dim in (
            ("emission", EMISSION, dims.OUT_CHANNEL),
            ("absorption", ABSORPTION, dims.IN_CHANNEL),
        ):
            da = ds[name].sel({dims.EPOCH: epoch}).isel({dim: slice(0, channels)})
            df = da.load().rename("value").to_dataframe().reset_index().rename(columns={dim: dims.CHANNEL})
            df[dims.LAYER], df["measure"], df["layer_channels"] = layer, measure, ds.sizes[dim]
            frames.append(df[[*RUN_KEYS, dims.LAYER, "measure", dims.CHANNEL, "layer_channels", dims.SAMPLE, "value"]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _flat_esd(w: np.ndarray) -> np.ndarray | None:
    """The weight's ``spectral.flat_esd``, None when it has a non-finite value."""
    w = np.asarray(w, dtype=np.float64)
    return spectral.flat_esd(w) if np.isfinite(w).all() else None


def spectrum_table(weights: Mapping[str, Any]) -> pd.DataFrame:
    """Singular values of every weight matrix (conv reshaped to C_out x C_in*kh*kw), per epoch,
    largest first: the square roots of the eigenvalues of W W^T (``spectral.flat_esd``, from which
    the weights table's spectral metrics are computed too). They agree with an SVD's to ~1e-14
    of the largest. An eigenvalue at or below the round-off level lambda_max * m * eps64 (m the
    smaller dimension; ``spectral.roundoff_level``, what the weights table's ``matrix_rank``
    leaves out) gives 0: a rank-deficient matrix's (the 'ones' init) zero singular values are 0,
    where an SVD gives round-off. A weight with a non-finite value has no rows."""
    spectra = {}
    for layer, ds in weights.items():
        for epoch in ds[dims.EPOCH].values:
            flat = _flat_esd(tensor_at(ds["weight"], epoch))
            if flat is not None:
                spectra[(0, layer, int(epoch), "weight")] = flat
    return _spectrum_rows(0, weights, spectra)


def _spectrum_rows(
    i: int, weights: Mapping[str, Any], spectra: Mapping[tuple[int, str, int, str], np.ndarray]
) -> pd.DataFrame:
    """Run ``i``'s spectrum table from its weights' ``flat_esd`` (largest singular value first)."""
    rows = []
    for layer, ds in weights.items():
        run = run_of(ds)
        for epoch in ds[dims.EPOCH].values:
            flat = spectra.get((i, layer, int(epoch), "weight"))
            if flat is None:
                continue
            flat = np.where(flat > spectral.roundoff_level(flat, flat.size), flat, 0.0)  # as matrix_rank counts
            rows.extend(
                {**run, dims.EPOCH: int(epoch), dims.LAYER: layer, "index": k, "singular_value": float(v)}
                for k, v in enumerate(np.sqrt(flat[::-1]))
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- per-run tables
@dataclasses.dataclass(frozen=True)
class RunStores:
    """One run's opened stores, what each per-run table of ``dnndist.outputs.STATS`` is computed
    from (``StatsTable.compute`` names a function of one ``RunStores``)."""

    weights: Mapping[str, Any]  # layer -> its group of the weights store (read)
    features: Any  # the features store's root (lazily read)
    gradients: Mapping[str, Any]  # conv layer -> its group of the gradients store (emission, absorption)
    epochs: list[int]
    settings: StatsSettings

    @property
    def first_last(self) -> list[int]:
        return [self.epochs[0], self.epochs[-1]]


def run_weights(run: RunStores) -> pd.DataFrame:
    return weight_table(run.weights, run.settings)


def run_features(run: RunStores) -> pd.DataFrame:
    return feature_table(run.features)


def run_weight_hist(run: RunStores) -> pd.DataFrame:
    return weight_histograms(run.weights, run.first_last)


def run_feature_hist(run: RunStores) -> pd.DataFrame:
    return feature_histograms(run.features, run.first_last)


def run_em_ab(run: RunStores) -> pd.DataFrame:
    best_epoch = run.features.attrs.get("best_epoch") if run.features is not None else None
    return em_ab_table(run.gradients, stage_epochs(run.epochs, run.settings.claims_at, best_epoch))


def run_spectrum(run: RunStores) -> pd.DataFrame:
    return spectrum_table(run.weights)
