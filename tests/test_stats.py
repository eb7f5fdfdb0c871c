"""Statistics: against numpy/scipy and known cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from dnndist import stats


def test_distribution_stats_match_numpy_scipy():
    rng = np.random.default_rng(0)
    x = rng.standard_t(5, 20_000) * 0.05
    s = stats.distribution_stats(x, thresholds=(0.01,), rel_thresholds=(0.5,), fan_in=144, init_std=0.05)
    assert s["mean"] == pytest.approx(x.mean()) and s["std"] == pytest.approx(x.std())
    assert s["skewness"] == pytest.approx(scipy.stats.skew(x)) and s["kurtosis"] == pytest.approx(scipy.stats.kurtosis(x))
    assert s["q01"] == pytest.approx(np.quantile(x, 0.01)) and s["q50"] == pytest.approx(np.median(x))
    assert s["near_zero_abs_0.01"] == pytest.approx((np.abs(x) < 0.01).mean())
    assert s["near_zero_rel_0.5"] == pytest.approx((np.abs(x) < 0.5 * x.std()).mean())
    assert s["within_default_bound"] == pytest.approx((np.abs(x) <= 1 / 12).mean())
    assert s["within_unit"] == 1.0
    assert s["ks_normal"] == pytest.approx(scipy.stats.kstest(x, "norm", args=(x.mean(), x.std())).statistic)
    assert s["std_ratio_to_init"] == pytest.approx(x.std() / 0.05)


def test_ks_distance_separates_uniform_from_normal():
    rng = np.random.default_rng(1)
    assert stats.distribution_stats(rng.normal(size=50_000))["ks_normal"] < 0.01
    assert stats.distribution_stats(rng.uniform(-1, 1, 50_000))["ks_normal"] > 0.05


def test_constant_and_nonfinite_inputs():
    s = stats.distribution_stats(np.array([1.0, 1.0, np.nan, np.inf]))
    assert s["count"] == 2 and s["nonfinite"] == 2 and s["std"] == 0 and math.isnan(s["kurtosis"])


@pytest.mark.parametrize("alpha", [1.5, 3.0])
def test_hill_recovers_pareto_tail_index(alpha):
    rng = np.random.default_rng(2)
    x = rng.pareto(alpha, 200_000) + 1.0  # P(X > x) = x^-alpha
    assert stats.hill_tail_index(x, frac=0.02) == pytest.approx(alpha, rel=0.08)


def test_spectral_stats_known_matrices():
    eye = np.eye(8)
    s = stats.spectral_stats(eye)
    assert s["stable_rank"] == pytest.approx(8.0) and s["spectral_norm"] == pytest.approx(1.0)
    assert s["powerlaw_fitted"] == 0.0 and math.isnan(s["powerlaw_alpha"])  # 8 eigenvalues: too few
    rank1 = np.outer(np.arange(1, 6), np.arange(1, 4)).astype(float)
    assert stats.spectral_stats(rank1)["stable_rank"] == pytest.approx(1.0)
    conv = np.random.default_rng(3).normal(size=(64, 16, 3, 3))
    sc = stats.spectral_stats(conv)  # reshaped to 64 x 144
    assert sc["spectral_norm"] == pytest.approx(np.linalg.norm(conv.reshape(64, -1), 2))
    assert sc["powerlaw_fitted"] == 1.0 and np.isfinite(sc["powerlaw_alpha"])


def test_bootstrap_ci_on_a_known_case():
    rng = np.random.default_rng(4)
    v = rng.normal(10.0, 2.0, 400)
    mean, lo, hi = stats.bootstrap_ci(v)
    se = 2.0 / 20
    assert lo < 10.0 < hi and mean == pytest.approx(v.mean())
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)  # the normal-theory width
    assert stats.bootstrap_ci([3.0])[0] == 3.0 and math.isnan(stats.bootstrap_ci([3.0])[1])
    assert stats.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_aggregate_seeds():
    df = pd.DataFrame({"init": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2, "statistic": "std",
                       "value": [1.0, 2.0, 3.0, 5.0, 5.0, 5.0]})
    agg = stats.aggregate_seeds(df).set_index("init")
    assert agg.loc["a", "mean"] == 2.0 and agg.loc["a", "n_seeds"] == 3 and agg.loc["a", "ci_low"] < 2.0 < agg.loc["a", "ci_high"]
    assert agg.loc["b", "ci_low"] == agg.loc["b", "ci_high"] == 5.0


def test_spectrum_table_matches_svd():
    import xarray as xr

    w = np.random.default_rng(5).normal(size=(1, 1, 1, 2, 8, 3, 3, 3))
    ds = xr.Dataset({"weight": (("variant", "init", "seed", "epoch", "out_channel", "in_channel", "kernel_y", "kernel_x"), w)},
                    coords={"variant": ["base"], "init": ["kaiming_normal"], "seed": [0], "epoch": [0, 1]})
    t = stats.spectrum_table({"conv1": ds})
    s1 = t[(t["epoch"] == 1)]["singular_value"].to_numpy()
    assert np.allclose(s1, np.linalg.svd(w[0, 0, 0, 1].reshape(8, -1), compute_uv=False))
    assert len(t) == 2 * 8


def test_diverged_runs_are_counted_from_tables_and_summaries():
    import pandas as pd

    from dnndist.stats import aggregate_seeds, diverged_runs

    rows = [("base", "ones", s, 1, "train", "loss", 2.3) for s in (0, 1, 2)]
    rows += [("base", "ones", 1, 1, "train", "diverged", 1.0), ("base", "ones", 2, 1, "train", "diverged", 1.0),
             ("bn", "zeros", 0, 0, "train", "diverged", 1.0)]
    df = pd.DataFrame(rows, columns=["variant", "init", "seed", "epoch", "split", "statistic", "value"])
    assert diverged_runs(df) == {("base", "ones"): 2, ("bn", "zeros"): 1}
    assert diverged_runs(aggregate_seeds(df)) == {("base", "ones"): 2, ("bn", "zeros"): 1}
    assert diverged_runs(df[df["statistic"] == "loss"]) == {}
