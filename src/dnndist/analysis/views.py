"""Per-layer views of an analysis: the table ``analyze`` prints and the per-layer dataset."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from dnndist import dims, tables
from dnndist.analysis.result import Analysis
from dnndist.io import DATASET_NAMES

# --------------------------------------------------------------------------- per-layer views
LONG_NAMES = {
    "count": "number of finite values",
    "nonfinite": "number of non-finite values",
    "ndim": "tensor rank",
    "mean": "mean",
    "std": "standard deviation",
    "min": "minimum",
    "max": "maximum",
    "skewness": "skewness",
    "kurtosis": "excess kurtosis",
    "within_unit": "fraction of values in [-1, 1]",
    "within_default_bound": "fraction of values inside PyTorch's default-init bound 1/sqrt(fan_in)",
    "ks_normal": "Kolmogorov-Smirnov distance to the fitted normal",
    "tail_index": "Hill tail index of |w|",
    "ks_normal_null95": "95th percentile of ks_normal for a Gaussian sample of this size",
    "kurtosis_null_lo": "2.5 % point of the excess kurtosis of a Gaussian sample of this size",
    "kurtosis_null_hi": "97.5 % point of the excess kurtosis of a Gaussian sample of this size",
    "tail_index_gaussian": "median Hill tail index of a Gaussian sample of this size",
    "tail_index_uniform": "median Hill tail index of a uniform sample of this size",
    "tail_k": "values the Hill estimator uses",
    "std_ratio_to_init": "std / the reference init's std",
    "fan_in": "fan-in",
    "fan_out": "fan-out",
    "init_std": "std of the reference init",
    "init_bound": "bound of the reference init",
    "gain": "gain of the reference init",
    "alpha": "power-law exponent of the ESD tail (WeightWatcher)",
    "alpha_fitted": "1 when alpha was fitted",
    "alpha_flat_esd": "1 when the fitted ESD spans less than a factor 2 (flat: alpha not a tail exponent)",
    "alpha_few_evals": "1 when fewer than 50 eigenvalues were fitted (alpha uncertain)",
    "alpha_xmin": "lower end of the fitted ESD tail",
    "alpha_ks_distance": "KS distance of the ESD tail to the power law",
    "alpha_sigma": "standard error of alpha",
    "num_pl_spikes": "eigenvalues in the fitted tail",
    "alpha_weighted": "alpha * log10(lambda_max)",
    "log_alpha_norm": "log10 of the sum of eigenvalues ** alpha",
    "lambda_max": "largest eigenvalue of W^T W",
    "log_spectral_norm": "log10(lambda_max)",
    "log_norm": "log10 of the sum of eigenvalues",
    "stable_rank": "sum of eigenvalues / lambda_max",
    "mp_softrank": "Marchenko-Pastur bulk edge / lambda_max",
    "num_evals": "number of eigenvalues",
    "matrix_rank": "eigenvalues above round-off",
    "flat_spectral_norm": "largest singular value of the C_out x fan_in reshape",
    "flat_stable_rank": "stable rank of the C_out x fan_in reshape",
    "default_bound": "PyTorch's default-init bound 1/sqrt(fan_in)",
    "max_abs": "largest |value|",
    "params": "number of parameters",
}


def _long_name(stat: str) -> str:
    if stat in LONG_NAMES:
        return LONG_NAMES[stat]
    m = re.fullmatch(r"q(\d\d)", stat)
    if m:
        return f"{int(m[1])} % quantile"
    m = re.fullmatch(r"near_zero_(abs|rel)_(.+)", stat)
    if m:
        return f"fraction of values with |x| < {m[2]}" + (" std" if m[1] == "rel" else "")
    return stat.replace("_", " ")


def per_layer_table(result: Analysis) -> pd.DataFrame:
    """One row per layer (depth order): shape and size, every weight statistic of the tidy table,
    the bias statistics prefixed ``bias_``, and with inputs the feature moments (``pre_std``, ...;
    ``<split>_pre_std`` for several splits) and the emission summary of conv layers."""
    ws = result.weight_stats
    wide = ws.pivot_table(index=[dims.LAYER, dims.PARAM], columns="statistic", values="value", sort=False, dropna=False)
    stat_order = list(dict.fromkeys(ws["statistic"]))
    rows = []
    for s in result.layers:
        g = result.weight_groups[s.name]
        shape = tuple(g["weight"].shape[4:])
        row: dict[str, Any] = {
            "layer": s.name,
            "depth": s.depth,
            "layer_kind": s.kind,
            "shape": "x".join(map(str, shape)),
            "params": int(np.prod(shape)) + (int(g["bias"].shape[-1]) if "bias" in g else 0),
        }
        w = wide.loc[(s.name, "weight")]
        row.update({k: w[k] for k in stat_order if k in w.index and pd.notna(w[k])})
        row["default_bound"] = 1.0 / math.sqrt(row["fan_in"])
        row["max_abs"] = max(abs(row["min"]), abs(row["max"]))
        if (s.name, "bias") in wide.index:
            b = wide.loc[(s.name, "bias")]
            row.update({f"bias_{k}": b[k] for k in stat_order if k in b.index and pd.notna(b[k])})
        rows.append(row)
    table = pd.DataFrame(rows)
    front = [
        "layer",
        "depth",
        "layer_kind",
        "shape",
        "params",
        "fan_in",
        "fan_out",
        "default_bound",
        "mean",
        "std",
        "min",
        "max",
        "max_abs",
    ]
    table = table[[c for c in front if c in table] + [c for c in table if c not in front]]
    if result.feature_stats is not None:
        table = table.merge(_feature_columns(result.feature_stats), left_on="layer", right_index=True, how="left")
    if result.em_ab is not None and not result.em_ab.empty:
        em = tables.emission_summary(result.em_ab).drop(columns=["variant", "init", "seed"]).set_index("layer")
        table = table.merge(em, left_on="layer", right_index=True, how="left")
    return table


def _feature_columns(fs: pd.DataFrame) -> pd.DataFrame:
    """The feature statistics one column per (split, kind, statistic) -- ``pre_std``, or
    ``<split>_pre_std`` for several splits --, one row per layer, in the table's order."""
    multi = fs[dims.SPLIT].nunique() > 1
    fs = fs.assign(
        column=[
            (f"{sp}_" if multi else "") + f"{k}_{st}"
            for sp, k, st in zip(fs[dims.SPLIT], fs[dims.KIND], fs["statistic"])
        ]
    )
    feat = fs.pivot_table(index=dims.LAYER, columns="column", values="value", sort=False)
    rank = {k: [*dict.fromkeys(fs[k])] for k in (dims.SPLIT, dims.KIND, "statistic")}
    cols = sorted(
        dict.fromkeys(zip(fs[dims.SPLIT], fs[dims.KIND], fs["statistic"], fs["column"])),  # split, kind, statistic
        key=lambda c: (rank[dims.SPLIT].index(c[0]), rank[dims.KIND].index(c[1]), rank["statistic"].index(c[2])),
    )
    return feat[[c[3] for c in cols if c[3] in feat]]


def per_layer_dataset(result: Analysis) -> xr.Dataset:
    """``table``'s numbers with named dims: weight statistics over (layer, param), feature
    statistics over (layer, kind, split) as ``feature_<statistic>``; layer coordinates depth and
    layer_kind; long_name/units on every variable; the weights store's provenance as attrs."""
    layers = [s.name for s in result.layers]
    ws = result.weight_stats.set_index([dims.LAYER, dims.PARAM, "statistic"])["value"]
    ws = ws[~ws.index.duplicated()].unstack("statistic")
    ds = xr.Dataset.from_dataframe(ws[list(dict.fromkeys(result.weight_stats["statistic"]))])
    ds = ds.reindex({dims.LAYER: layers, dims.PARAM: [p for p in ("weight", "bias") if p in ds[dims.PARAM].values]})
    for name in ds.data_vars:
        ds[name].attrs = {"long_name": _long_name(name), "units": "1"}
    ds = ds.rename({k: v for k, v in DATASET_NAMES.items() if k in ds.data_vars})  # not Dataset methods
    if result.feature_stats is not None:
        fs = result.feature_stats.set_index([dims.LAYER, dims.KIND, dims.SPLIT, "statistic"])["value"].unstack(
            "statistic"
        )
        f = xr.Dataset.from_dataframe(fs).reindex({dims.LAYER: layers})
        for name in list(f.data_vars):
            f[name].attrs = {"long_name": f"feature {_long_name(name)}", "units": "1"}
        ds = ds.merge(f.rename({n: f"feature_{n}" for n in f.data_vars}))
    ds = ds.assign_coords(
        depth=(dims.LAYER, [s.depth for s in result.layers]), layer_kind=(dims.LAYER, [s.kind for s in result.layers])
    )
    dims.check(ds.dims, "analysis dataset")
    return ds.assign_attrs(**{k: v for k, v in result.weights.attrs.items()}, model=result.name)
