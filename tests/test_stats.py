"""Statistics: against numpy/scipy and known cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from dnndist import references, stats


def test_distribution_stats_match_numpy_scipy():
    rng = np.random.default_rng(0)
    x = rng.standard_t(5, 20_000) * 0.05
    s = stats.distribution_stats(x, thresholds=(0.01,), rel_thresholds=(0.5,), fan_in=144, init_std=0.05)
    assert s["mean"] == pytest.approx(x.mean()) and s["std"] == pytest.approx(x.std())
    assert s["skewness"] == pytest.approx(scipy.stats.skew(x)) and s["kurtosis"] == pytest.approx(
        scipy.stats.kurtosis(x)
    )
    assert s["q01"] == pytest.approx(np.quantile(x, 0.01)) and s["q50"] == pytest.approx(np.median(x))
    assert s["near_zero_abs_0.01"] == pytest.approx((np.abs(x) < 0.01).mean())
    assert s["near_zero_rel_0.5"] == pytest.approx((np.abs(x) < 0.5 * x.std()).mean())
    assert s["within_default_bound"] == pytest.approx((np.abs(x) <= 1 / 12).mean())
    assert s["within_unit"] == 1.0
    assert s["ks_normal"] == pytest.approx(scipy.stats.kstest((x - x.mean()) / x.std(), "norm").statistic)
    assert s["std_ratio_to_init"] == pytest.approx(x.std() / 0.05)


def test_ks_distance_is_scipys_statistic_exactly():
    x = np.random.default_rng(4).standard_t(4, 5000).astype(np.float32)
    z = (x.astype(np.float64) - x.mean(dtype=np.float64)) / x.astype(np.float64).std()
    assert stats.distribution_stats(x)["ks_normal"] == scipy.stats.kstest(z, "norm").statistic


def test_distribution_stats_many_is_tensor_by_tensor_exactly():
    """The vectorised statistics of same-shape tensors are distribution_stats' of each, bit for bit
    and key for key, including constant and non-finite tensors (computed one by one) and signed zeros."""
    rng = np.random.default_rng(5)
    shape = (8, 3, 3, 3)
    signed_zeros = rng.normal(size=shape)
    signed_zeros.flat[:40] = 0.0
    signed_zeros.flat[40:80] = -0.0
    with_nan = rng.normal(size=shape)
    with_nan.flat[3] = np.nan
    tensors = [
        rng.normal(0, 0.1, shape).astype(np.float32),
        rng.standard_t(3, shape),
        rng.uniform(-1, 1, shape) + 5.0,
        signed_zeros,
        np.zeros(shape),
        np.ones(shape),
        with_nan,
        np.full(shape, np.inf),
    ]
    fan_in = [27, 27, 0, 27, 27, None, 27, 27]
    init_std = [0.1, None, 0.0, float("nan"), 0.2, 0.2, 0.1, 0.1]
    opts = {"thresholds": (1e-3, 1e-2), "rel_thresholds": (0.1, 0.5)}
    many = stats.distribution_stats_many(tensors, fan_in=fan_in, init_std=init_std, **opts)
    for x, f, s, got in zip(tensors, fan_in, init_std, many):
        want = stats.distribution_stats(x, fan_in=f, init_std=s, **opts)
        assert list(got) == list(want)  # the same statistics in the same order (the table's row order)
        assert [repr(float(v)) for v in got.values()] == [repr(float(v)) for v in want.values()]


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
    assert s["stable_rank"] == pytest.approx(8.0) and s["lambda_max"] == pytest.approx(1.0)
    assert s["flat_stable_rank"] == pytest.approx(8.0) and s["flat_spectral_norm"] == pytest.approx(1.0)
    assert s["alpha_fitted"] == 0.0 and math.isnan(s["alpha"])  # 8 equal eigenvalues: no power law
    rank1 = stats.spectral_stats(np.outer(np.arange(1, 65), np.arange(1, 33)).astype(float))
    assert rank1["stable_rank"] == pytest.approx(1.0) and rank1["alpha_fitted"] == 0.0 and math.isnan(rank1["alpha"])
    conv = np.random.default_rng(3).normal(size=(64, 16, 3, 3))
    sc = stats.spectral_stats(conv)  # WeightWatcher-style: 9 kernel positions of 64 x 16; flat: 64 x 144
    assert sc["num_evals"] == 16 * 9 and sc["alpha_fitted"] == 1.0 and np.isfinite(sc["alpha"])
    assert sc["flat_spectral_norm"] == pytest.approx(np.linalg.norm(conv.reshape(64, -1), 2))
    assert sc["flat_stable_rank"] == pytest.approx((conv**2).sum() / np.linalg.norm(conv.reshape(64, -1), 2) ** 2)


def test_seed_ci_is_the_t_interval():
    rng = np.random.default_rng(4)
    v = rng.normal(10.0, 2.0, 400)
    mean, lo, hi = stats.seed_ci(v)
    assert lo < 10.0 < hi and mean == pytest.approx(v.mean())
    assert (lo, hi) == pytest.approx(scipy.stats.t.interval(0.95, 399, loc=v.mean(), scale=scipy.stats.sem(v)))
    # 2 seeds: t(1) = 12.7 standard errors each side, not the range of the two values (a percentile bootstrap's answer)
    assert stats.seed_ci([1.0, 3.0]) == pytest.approx((2.0, 2.0 - 12.706, 2.0 + 12.706), rel=1e-4)
    assert stats.seed_ci([3.0])[0] == 3.0 and math.isnan(stats.seed_ci([3.0])[1])
    assert stats.seed_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_aggregate_seeds():
    df = pd.DataFrame(
        {
            "init": ["a"] * 3 + ["b"] * 3 + ["c"] * 2,
            "seed": [0, 1, 2] * 2 + [0, 1],
            "statistic": "std",
            "value": [1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 4.0, np.nan],
        }
    )
    agg = stats.aggregate_seeds(df).set_index("init")
    assert agg.loc["a", "mean"] == 2.0 and agg.loc["a", "n_seeds"] == 3
    assert (agg.loc["a", "ci_low"], agg.loc["a", "ci_high"]) == pytest.approx(stats.seed_ci([1.0, 2.0, 3.0])[1:])
    assert agg.loc["b", "ci_low"] == agg.loc["b", "ci_high"] == 5.0
    assert (
        agg.loc["c", "n_seeds"] == 1 and agg.loc["c", "mean"] == 4.0 and math.isnan(agg.loc["c", "ci_low"])
    )  # n: finite values


@pytest.mark.parametrize("n", [432, 4608])
@pytest.mark.parametrize("dist", ["gaussian", "uniform"])
def test_hill_reference_equals_sorting_whole_samples(n, dist):
    """The order-statistics shortcut gives the median Hill index that sorting 600 whole samples
    gives (the Hill SD is alpha / sqrt(k); the two medians agree to a few of its SEs)."""
    rng = np.random.default_rng(7)
    k = stats.hill_k(n)
    x = rng.standard_normal((600, n)) if dist == "gaussian" else rng.uniform(-1, 1, (600, n))
    brute = float(np.median(references.hill_rows(x, k)))
    se = 1.25 * brute / math.sqrt(k) / math.sqrt(600)
    assert stats.hill_reference(n, k, dist) == pytest.approx(brute, abs=4 * se + 0.01 * brute)


def test_hill_k_keeps_the_gaussian_reference_size_free():
    """Why k is a fixed 5 % of n: a Gaussian layer then scores Hill ~6.0 at every size, so layers of
    different sizes (a depth trend) compare; with k = sqrt(n) it would score 6.0 at conv1's 432 weights
    and ~12.8 at fc1's 524,288, a trend built in by size alone."""
    ref = [stats.gaussian_reference(n)["tail_index_gaussian"] for n in (432, 18_432, 524_288)]
    assert max(ref) - min(ref) < 0.1 and ref[0] == pytest.approx(6.0, abs=0.1)
    assert stats.gaussian_reference(524_288)["tail_k"] == 26_214
    sqrt_k = [stats.hill_reference(n, math.ceil(math.sqrt(n)), "gaussian") for n in (432, 524_288)]
    assert sqrt_k[1] - sqrt_k[0] > 5


def test_gaussian_reference_is_size_calibrated():
    """A Gaussian layer of 432 weights scores KS ~0.03 and Hill 4-9; the reference says what a
    Gaussian sample of that size gives, and shrinks as 1/sqrt(n) for the KS and kurtosis bands."""
    small, big = stats.gaussian_reference(432), stats.gaussian_reference(524_288)
    assert 0.040 < small["ks_normal_null95"] < 0.048  # Lilliefors: 0.886 / sqrt(n) = 0.0426
    assert big["ks_normal_null95"] == pytest.approx(0.886 / math.sqrt(524_288), rel=0.1)
    assert small["kurtosis_null_lo"] < -0.3 and small["kurtosis_null_hi"] > 0.3
    assert big["kurtosis_null_hi"] == pytest.approx(1.96 * math.sqrt(24 / 524_288), rel=0.15)
    assert 4.0 < small["tail_index_gaussian"] < 9.0 and small["tail_index_uniform"] > 20 and small["tail_k"] == 21
    assert stats.gaussian_reference(432) is small  # cached per n
    s = stats.distribution_stats(np.random.default_rng(5).normal(size=(16, 3, 3, 3)))
    assert s["ks_normal_null95"] == small["ks_normal_null95"] and s["tail_k"] == 21 and s["ndim"] == 4
    assert s["ks_normal"] < s["ks_normal_null95"]


def test_spectrum_table_matches_svd():
    import xarray as xr

    w = np.random.default_rng(5).normal(size=(1, 1, 1, 2, 8, 3, 3, 3))
    ds = xr.Dataset(
        {"weight": (("variant", "init", "seed", "epoch", "out_channel", "in_channel", "kernel_y", "kernel_x"), w)},
        coords={"variant": ["base"], "init": ["kaiming_normal"], "seed": [0], "epoch": [0, 1]},
    )
    t = stats.spectrum_table({"conv1": ds})
    s1 = t[(t["epoch"] == 1)]["singular_value"].to_numpy()
    svd = np.linalg.svd(w[0, 0, 0, 1].reshape(8, -1), compute_uv=False)
    np.testing.assert_allclose(s1, svd, rtol=1e-12)  # largest first, from the eigenvalues of W W^T
    assert len(t) == 2 * 8
    # a rank-deficient weight (the 'ones' init): its zero singular values are 0 (an SVD's are round-off)
    ones = ds.copy(data={"weight": np.ones_like(w)})
    t = stats.spectrum_table({"conv1": ones})
    s1 = t[(t["epoch"] == 1)]["singular_value"].to_numpy()
    svd = np.linalg.svd(np.ones((8, 27)), compute_uv=False)
    assert abs(s1[0] - svd[0]) < 1e-12 * svd[0] and np.all(s1[1:] == 0.0) and np.all(svd[1:] < 1e-12 * svd[0])
    # a weight of rank 3 of 8: as many nonzero singular values as the weights table's matrix_rank
    rank3 = np.random.default_rng(6).normal(size=(8, 3)) @ np.random.default_rng(7).normal(size=(3, 27))
    t = stats.spectrum_table({"conv1": ds.copy(data={"weight": np.broadcast_to(rank3.reshape(w.shape[4:]), w.shape)})})
    s1 = t[(t["epoch"] == 1)]["singular_value"].to_numpy()
    flat = stats.spectral_stats(rank3.reshape(8, 27))
    assert np.count_nonzero(s1) == 3 == flat["matrix_rank"]
    np.testing.assert_allclose(s1[:3], np.linalg.svd(rank3, compute_uv=False)[:3], rtol=1e-12)


def test_diverged_runs_are_counted_from_tables_and_summaries():
    import pandas as pd

    from dnndist.stats import aggregate_seeds, diverged_runs

    rows = [("base", "ones", s, 1, "train", "loss", 2.3) for s in (0, 1, 2)]
    rows += [
        ("base", "ones", 1, 1, "train", "diverged", 1.0),
        ("base", "ones", 2, 1, "train", "diverged", 1.0),
        ("bn", "zeros", 0, 0, "train", "diverged", 1.0),
    ]
    df = pd.DataFrame(rows, columns=["variant", "init", "seed", "epoch", "split", "statistic", "value"])
    assert diverged_runs(df) == {("base", "ones"): 2, ("bn", "zeros"): 1}
    assert diverged_runs(aggregate_seeds(df)) == {("base", "ones"): 2, ("bn", "zeros"): 1}
    assert diverged_runs(df[df["statistic"] == "loss"]) == {}


def test_seed_summary_leaves_out_an_epoch_that_only_some_seeds_have():
    """A run's best-validation checkpoint is its own: the mean over seeds is taken only at epochs
    every seed of the init has (stats.shared_epochs), the per-seed rows stay in the combined table."""
    import pandas as pd

    from dnndist import stats

    rows = [
        {"variant": "base", "init": i, "seed": s, "epoch": e, "statistic": "std", "value": 1.0 + s + e}
        for i in ("a", "b")
        for s in (0, 1)
        for e in (0, 5, *((3,) if (i, s) == ("a", 1) else ()))
    ]
    df = pd.DataFrame(rows)
    shared = stats.shared_epochs(df)
    assert len(shared) == len(df) - 1 and not ((shared["init"] == "a") & (shared["epoch"] == 3)).any()
    summary = stats.aggregate_seeds(shared)
    assert sorted(set(summary["epoch"])) == [0, 5] and set(summary["n_seeds"]) == {2}
