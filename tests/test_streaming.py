"""Streaming feature statistics (dnndist.streaming) against float64 numpy/scipy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from dnndist import streaming as st

NATIVE = st.native_library() is not None
BACKENDS = [pytest.param("native", marks=pytest.mark.skipif(not NATIVE, reason="no C compiler")), "torch"]


def reference(x: np.ndarray) -> dict[str, float]:
    r = np.asarray(x, dtype=np.float64)
    return {
        "n": r.size,
        "mean": r.mean(),
        "var": r.var(),
        "skew": scipy.stats.skew(r),
        "kurt": scipy.stats.kurtosis(r),
        "min": r.min(),
        "max": r.max(),
    }


def streamed(
    x: np.ndarray,
    bins: int = 100,
    first: int = 128,
    batch: int = 5000,
    backend: str = "auto",
    threads: int | None = None,
) -> st.FeatureStats:
    """Stream x as the extraction does: a first (sample) batch, then equal batches."""
    f = st.FeatureStats(bins, backend=backend, threads=threads)
    t = torch.from_numpy(np.ascontiguousarray(x))
    f.update(t[:first])
    for part in t[first:].split(batch):
        f.update(part)
    return f


def derived(f: st.FeatureStats) -> dict[str, float]:
    v = f.values()
    n = v["n"]
    var = v["m2"] / n
    return {
        "n": n,
        "mean": v["mean"],
        "var": var,
        "skew": v["m3"] / n / var**1.5,
        "kurt": v["m4"] / n / var**2 - 3,
        "min": v["min"],
        "max": v["max"],
    }


def heavy(seed: int = 0, n: int = 400_000) -> dict[str, np.ndarray]:
    """float32 data with a large mean offset and heavy tails (and a ReLU-like map)."""
    rng = np.random.default_rng(seed)
    t3 = rng.standard_t(3, n)
    return {
        "skewed_t3_offset_1000": (1000.0 + 2.0 * (t3 + 0.5 * np.abs(t3))).astype(np.float32),
        "lognormal_offset_50": (50.0 + rng.lognormal(0.0, 1.0, n)).astype(np.float32),
        "pareto_negative_offset": (-3e4 + rng.pareto(2.5, n) * 10.0).astype(np.float32),
        "relu": np.maximum(rng.normal(0.1, 1.0, n), 0.0).astype(np.float32),
    }


# --------------------------------------------------------------------------- moments
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(heavy()))
def test_moments_match_a_float64_reference(backend, name):
    x = heavy()[name]
    f = streamed(x, batch=7919, backend=backend)
    assert f.shift == pytest.approx(x[:128].astype(np.float64).mean(), rel=1e-9)  # the first batch's mean
    ref, got = reference(x), derived(f)
    assert got["n"] == ref["n"] and got["min"] == ref["min"] and got["max"] == ref["max"]  # exact
    assert got["mean"] == pytest.approx(ref["mean"], rel=1e-6)
    assert got["var"] == pytest.approx(ref["var"], rel=1e-6)
    assert got["skew"] == pytest.approx(ref["skew"], rel=1e-5)
    assert got["kurt"] == pytest.approx(ref["kurt"], rel=1e-5)
    if backend == "native":  # float64 power sums: rounding-level agreement
        for k in ("mean", "var", "skew", "kurt"):
            assert got[k] == pytest.approx(ref[k], rel=1e-10), k


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("offset", [1e-4, 1000.0])
def test_near_symmetric_data_skewness_is_accurate_in_absolute_terms(backend, offset):
    rng = np.random.default_rng(1)
    x = (offset + rng.standard_t(3, 300_000)).astype(np.float32)  # skewness ~ 0 (and the mean too, for the first)
    ref, got = reference(x), derived(streamed(x, backend=backend))
    assert got["mean"] == pytest.approx(ref["mean"], rel=1e-6 if backend == "native" else 1e-3, abs=1e-7)
    assert got["var"] == pytest.approx(ref["var"], rel=1e-6)
    assert got["skew"] == pytest.approx(ref["skew"], abs=1e-6)  # float32 torch kernel: ~1e-7
    assert got["kurt"] == pytest.approx(ref["kurt"], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_do_not_depend_on_the_batch_size(backend):
    x = heavy(2)["lognormal_offset_50"]
    runs = [streamed(x, batch=b, backend=backend) for b in (1000, 7919, 400_000)]
    for f in runs[1:]:
        a, b = derived(runs[0]), derived(f)
        for k in ("mean", "var", "skew", "kurt"):
            assert b[k] == pytest.approx(a[k], rel=1e-12 if backend == "native" else 1e-6), k
        assert (b["n"], b["min"], b["max"]) == (a["n"], a["min"], a["max"])
        assert np.array_equal(f.counts, runs[0].counts) and (f.under, f.over) == (runs[0].under, runs[0].over)


@pytest.mark.skipif(not NATIVE, reason="no C compiler")
def test_native_results_do_not_depend_on_the_thread_count_and_repeat_bit_for_bit():
    x = torch.from_numpy(heavy(3)["skewed_t3_offset_1000"])
    binning = st.Binning.from_range(990.0, 1010.0, 100)
    outs = [st.batch_sums(x, 1000.0, binning, "native", threads=t) for t in (1, 2, 3, 5, 1)]
    for o in outs[1:]:
        assert o.s.tobytes() == outs[0].s.tobytes()
        assert (o.min, o.max, o.under, o.over) == (outs[0].min, outs[0].max, outs[0].under, outs[0].over)
        assert np.array_equal(o.counts, outs[0].counts)
    fs = [streamed(x.numpy(), threads=t) for t in (1, 2)]
    assert fs[0].values() == fs[1].values() and np.array_equal(fs[0].counts, fs[1].counts)


@pytest.mark.skipif(not NATIVE, reason="no C compiler")
def test_native_and_torch_kernels_agree():
    x = heavy(4)["relu"]
    a, b = streamed(x, backend="native"), streamed(x, backend="torch")
    assert np.array_equal(a.counts, b.counts) and (a.under, a.over, a.lo, a.hi) == (b.under, b.over, b.lo, b.hi)
    for k, v in derived(a).items():
        assert derived(b)[k] == pytest.approx(v, rel=1e-6), k


@pytest.mark.parametrize("backend", BACKENDS)
def test_nonfinite_values_are_counted_and_left_out(backend):
    x = heavy(5)["skewed_t3_offset_1000"].copy()
    x[[3, 500, 200_000]] = [np.nan, np.inf, -np.inf]
    f = streamed(x, backend=backend)
    finite = x[np.isfinite(x)]
    ref, got = reference(finite), derived(f)
    assert f.nonfinite == 3 and got["n"] == finite.size
    assert (got["min"], got["max"]) == (ref["min"], ref["max"])
    assert got["var"] == pytest.approx(ref["var"], rel=1e-6) and got["kurt"] == pytest.approx(ref["kurt"], rel=1e-5)
    assert f.counts.sum() + f.under + f.over == finite.size


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_first_batch_without_finite_values(backend):
    f = st.FeatureStats(10, backend=backend)
    f.update(torch.full((50,), float("nan")))
    assert (f.lo, f.hi) == (-0.1, 1.1) and f.n == 0 and f.nonfinite == 50  # the (0, 1) default range, widened
    f.update(torch.tensor([0.5, 0.25]))
    assert f.n == 2 and f.mean == 0.375 and f.counts.sum() == 2


def test_huge_values_fall_back_to_float64_in_the_torch_kernel():
    x = np.random.default_rng(6).normal(0.0, 1e11, 100_000).astype(np.float32)  # (x - mean)^4 overflows float32
    ref, got = reference(x), derived(streamed(x, backend="torch"))
    assert got["var"] == pytest.approx(ref["var"], rel=1e-6) and got["kurt"] == pytest.approx(ref["kurt"], rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_drifting_mean_keeps_its_precision(backend):
    # the shift is the first batch's mean (0); later batches lie 3000 standard deviations away
    x = np.concatenate([[0.0], np.random.default_rng(7).normal(3e3, 1.0, 200_000)]).astype(np.float32)
    ref, got = reference(x), derived(streamed(x, first=1, batch=20_000, backend=backend))
    for k in ("mean", "var", "skew", "kurt"):
        assert got[k] == pytest.approx(ref[k], rel=1e-6), k


def test_memory_layouts_give_the_same_statistics():
    x = torch.randn(8, 5, 6, 7)
    for y in (x.contiguous(memory_format=torch.channels_last), x.transpose(1, 3), x[:, :, ::2]):
        ref = reference(y.numpy().ravel())
        b = st.batch_sums(y, 0.0)
        assert b.n == ref["n"] and b.shift + b.s[0] / b.n == pytest.approx(ref["mean"], abs=1e-7)  # sd 1
        assert (b.min, b.max) == (ref["min"], ref["max"])


# --------------------------------------------------------------------------- histogram
def adversarial(edges: np.ndarray, rng: np.random.Generator, n_random: int = 20_000) -> np.ndarray:
    """float32 values at, just below and just above every edge (as float64 and as float32), plus random ones."""
    f = edges.astype(np.float32)
    near = [
        f,
        np.nextafter(f, np.float32(-np.inf)),
        np.nextafter(f, np.float32(np.inf)),
        st.ceil32(edges),
        st.floor32(edges),
    ]
    lo, hi = edges[0], edges[-1]
    big = float(np.finfo(np.float32).max)
    spread = np.clip(rng.uniform(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo), n_random), -big, big).astype(np.float32)
    return rng.permutation(np.concatenate([*near, spread]).astype(np.float32))


RANGES = [
    (-0.5, 4.5, 100),
    (-1.3, 2.7, 7),
    (0.0, 1.0, 1),
    (1000.0, 1000.01, 20),  # large offset, narrow
    (-3e4, -2.9e4, 1000),
    (-1e-3, 3e-3, 64),
    (-3e38, 3.2e38, 10),
]  # the last: beyond the fast path


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lo,hi,bins", RANGES)
def test_histogram_counts_equal_numpy_exactly(backend, lo, hi, bins):
    binning = st.Binning(lo, hi, bins)
    x = adversarial(binning.edges, np.random.default_rng(bins))
    b = st.batch_sums(torch.from_numpy(x), 0.0, binning, backend)
    x64 = x.astype(np.float64)  # (comparing float32 arrays with a Python float would round the float to float32)
    ref, _ = np.histogram(x64, bins=binning.edges)
    assert np.array_equal(b.counts, ref)
    assert b.under == int((x64 < lo).sum()) and b.over == int((x64 > hi).sum())
    assert b.counts.sum() + b.under + b.over == x.size


def test_binning_thresholds_compare_exactly():
    v = np.random.default_rng(8).normal(0, 1, 10_000) * 10.0 ** np.random.default_rng(9).integers(-30, 30, 10_000)
    c, fl = st.ceil32(v), st.floor32(v)
    assert np.all(c.astype(np.float64) >= v) and np.all(np.nextafter(c, np.float32(-np.inf)).astype(np.float64) < v)
    assert np.all(fl.astype(np.float64) <= v) and np.all(np.nextafter(fl, np.float32(np.inf)).astype(np.float64) > v)
    b = st.Binning(-0.1, 2.1, 100)
    assert b.delta32 < 1e-4 and b.delta64(1.0) < 1e-12  # the fast path covers all but a few values in 10^4
    narrow = st.Binning(1000.0, 1000.01, 20)  # far from zero: the float32 estimate is too coarse, float64 is not
    assert narrow.delta32 > st.PRECISE and narrow.delta64(1000.0) < 1e-6
    assert math.isinf(st.Binning(-3e38, 3.2e38, 10).delta32)  # float32 overflow possible


def test_histogram_range_comes_from_the_first_batch():
    for (lo0, hi0), (lo, hi) in {(1.0, 3.0): (0.8, 3.2), (5.0, 5.0): (4.5, 5.5), (0.0, 0.0): (-1e-6, 1e-6)}.items():
        b = st.Binning.from_range(lo0, hi0, 10)
        assert (b.lo, b.hi, b.bins) == (pytest.approx(lo), pytest.approx(hi), 10)
    f = st.FeatureStats(10)
    f.update(torch.tensor([1.0, 2.0, 3.0]))
    f.update(torch.tensor([0.0, 100.0, 1.5]))
    assert (f.lo, f.hi) == pytest.approx((0.8, 3.2)) and (f.under, f.over) == (1, 1) and f.counts.sum() == 4


# --------------------------------------------------------------------------- the native library
def test_the_kernel_is_compiled_into_the_cache_and_can_be_switched_off(tmp_path, monkeypatch):
    if not NATIVE:
        pytest.skip("no C compiler")
    target = tmp_path / "k.so"
    st._compile(target)
    assert target.is_file() and not [p for p in tmp_path.iterdir() if p != target]  # no temporary left behind
    monkeypatch.setenv("DNNDIST_NATIVE", "0")
    assert st.native_library() is None
    with pytest.raises(RuntimeError, match="not available"):
        st.batch_sums(torch.ones(3), 0.0, backend="native")
    b = st.batch_sums(torch.ones(3), 0.0)  # auto: the torch kernel
    assert b.n == 3 and b.shift + b.s[0] / b.n == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e-30, 1e-12, 1e12])
def test_tiny_and_huge_activations(backend, scale):
    """float32 fourth powers of 1e-12-sized values would underflow, of 1e12-sized ones overflow."""
    x = (scale * (3.0 + np.random.default_rng(10).lognormal(0.0, 0.5, 100_000))).astype(np.float32)
    ref, got = reference(x), derived(streamed(x, backend=backend))
    for k in ("mean", "var", "skew", "kurt"):
        assert got[k] == pytest.approx(ref[k], rel=1e-5), k
    assert (got["min"], got["max"]) == (ref["min"], ref["max"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_pass_per_batch_after_the_first(backend, monkeypatch):
    """The shift is the first batch's mean, so later batches (same distribution) need no second pass."""
    name = "_native" if backend == "native" else "_torch"
    calls = []
    kernel = getattr(st, name)
    monkeypatch.setattr(st, name, lambda *a: calls.append(a[-3] if backend == "native" else a[1]) or kernel(*a))
    x = heavy(11)["skewed_t3_offset_1000"]
    streamed(x, first=1000, batch=20_000, backend=backend)
    batches = 1 + -(-(x.size - 1000) // 20_000)
    assert len(calls) <= batches + 2  # the first batch: its mean (maybe summed again around it), then one pass each


def test_a_cache_folder_others_can_write_is_refused(tmp_path):
    """The compiled kernel is loaded only from a folder and file private to this user: a
    world-writable cache (e.g. a shared temporary folder) could hold a planted library."""
    from dnndist import streaming

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(OSError, match="not private"):
        streaming._check_private(shared)
    shared.chmod(0o700)
    streaming._check_private(shared)  # private: accepted
