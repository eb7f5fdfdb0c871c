"""Reference bands of the weight statistics: what a Gaussian (or uniform) sample of the same size
gives for the KS distance, the excess kurtosis and the Hill tail index, simulated once per size
and cached, so that a layer's statistic is read against its own size."""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.special
import scipy.stats

NULL_MAX_N = 10_000  # reference bands are simulated up to this size, and scaled by 1/sqrt(n) beyond

HILL_FRAC, HILL_MIN_K = 0.05, 10


def hill_k(n: int, frac: float = HILL_FRAC, min_k: int = HILL_MIN_K) -> int:
    """The number of largest values the Hill estimator uses for a sample of size n."""
    return max(min_k, int(frac * n))


NULL_VALUES = 1_000_000  # values simulated per size (at least NULL_MIN_REPS samples, at most 2000)


NULL_MIN_REPS = 1000  # each 2.5 % bound of a band rests on 25 samples (200 left it on 5)


NULL_MIN_N = 8  # below this size no reference band


def ks_rows(x: np.ndarray) -> np.ndarray:
    """KS distance of each row to the normal fitted to it (mean, population std): the Lilliefors statistic."""
    return ks_sorted(np.sort((x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True), axis=-1))


def ks_sorted(z: np.ndarray) -> np.ndarray:
    """KS distance of each row of sorted values z to N(0, 1): scipy.stats.kstest(z, "norm")'s statistic."""
    cdf = scipy.special.ndtr(z)
    above, below = _ecdf_steps(z.shape[-1])
    return np.maximum((above - cdf).max(-1), (cdf - below).max(-1))


@functools.lru_cache(maxsize=8)
def _ecdf_steps(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The empirical CDF of n sorted values just after and just before each: i/n and (i-1)/n."""
    i = np.arange(1, n + 1)
    above, below = i / n, (i - 1) / n
    above.flags.writeable = below.flags.writeable = False
    return above, below


def kurtosis_rows(x: np.ndarray) -> np.ndarray:
    d = x - x.mean(-1, keepdims=True)
    return (d**4).mean(-1) / (d**2).mean(-1) ** 2 - 3.0


def hill_rows(x: np.ndarray, k: int) -> np.ndarray:
    """The Hill tail index of |x| per row from its k largest values (NaN when a row has at most k
    values or its (k+1)-th largest |x| is 0)."""
    n = x.shape[-1]
    if n <= k:
        return np.full(x.shape[:-1], np.nan)
    top = -np.sort(
        -np.partition(np.abs(x), n - k - 1, axis=-1)[..., n - k - 1 :], axis=-1
    )  # the k+1 largest, descending
    ref = top[..., k : k + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(top[..., :k] / ref).mean(-1)
    return np.where((ref[..., 0] > 0) & (logs > 0), 1.0 / logs, np.nan)


REFERENCE_STATS = (
    "ks_normal_null95",
    "kurtosis_null_lo",
    "kurtosis_null_hi",
    "tail_index_gaussian",
    "tail_index_uniform",
    "tail_k",
)


@functools.lru_cache(maxsize=256)
def gaussian_reference(n: int) -> dict[str, float]:
    """What an i.i.d. sample of n values gives for the shape statistics, simulated (seeded by n) and
    cached per n: the null band a layer of that size is read against.

    - ``ks_normal_null95``: the 95th percentile of the KS distance of a Gaussian sample to its own
      fitted normal (the Lilliefors null; 0.044 at n = 432, 0.00125 at n = 524,288).
    - ``kurtosis_null_lo`` / ``kurtosis_null_hi``: the 2.5 % and 97.5 % points of a Gaussian
      sample's excess kurtosis.
    - ``tail_index_gaussian`` / ``tail_index_uniform``: the median Hill tail index of a Gaussian /
      a uniform sample (the estimator's value for a light / a bounded tail at this n and k).
    - ``tail_k``: the k the Hill estimator uses at this n.

    Sizes above NULL_MAX_N are simulated at NULL_MAX_N and the bands scaled by sqrt(NULL_MAX_N / n)
    (both statistics are asymptotically normal at rate 1/sqrt(n)). The Hill medians are exact at
    every n: ``hill_reference`` draws only the k + 1 largest values of a sample of n."""
    k = hill_k(n)
    out = dict.fromkeys(REFERENCE_STATS, math.nan)
    out["tail_k"] = float(k) if n > k else math.nan
    if n < NULL_MIN_N:
        return out
    m = min(n, NULL_MAX_N)
    reps = int(np.clip(NULL_VALUES // m, NULL_MIN_REPS, 2000))
    rng = np.random.default_rng([1_000_003, m])
    ks, kurt = [], []
    chunk = max(1, 250_000 // m)
    for start in range(0, reps, chunk):
        g = rng.standard_normal((min(chunk, reps - start), m))
        ks.append(ks_rows(g))
        kurt.append(kurtosis_rows(g))
    scale = math.sqrt(m / n)
    ks_, kurt_ = np.concatenate(ks), np.concatenate(kurt)
    out["ks_normal_null95"] = float(np.quantile(ks_, 0.95)) * scale
    lo, hi = np.quantile(kurt_, [0.025, 0.975])
    out["kurtosis_null_lo"], out["kurtosis_null_hi"] = float(lo) * scale, float(hi) * scale
    if n > k:
        out["tail_index_gaussian"] = hill_reference(n, k, "gaussian")
        out["tail_index_uniform"] = hill_reference(n, k, "uniform")
    return out


def hill_reference(n: int, k: int, dist: str, reps: int | None = None) -> float:
    """The median Hill tail index of |x| from the k largest of n i.i.d. values of a standard
    Gaussian or a uniform(-1, 1), simulated exactly at any n from the order statistics alone:
    with V = P(|X| > |x|) uniform, the (k+1)-th smallest of n V's is Beta(k + 1, n - k) and, given
    it, the k smaller ones are uniform below it (Renyi). O(reps k) work instead of O(reps n);
    ``tests/test_stats.py`` checks it against sorting whole samples. Seeded by (n, k)."""
    reps = reps or int(np.clip(2_000_000 // max(k, 1), 200, 2000))
    rng = np.random.default_rng([1_000_003, n, k, dist == "uniform"])
    v = rng.beta(k + 1, n - k, size=(reps, 1))
    w = v * rng.uniform(size=(reps, k))
    if dist == "gaussian":  # |x| = Phi^-1(1 - V / 2), from the upper tail for precision
        ref, top = -scipy.special.ndtri(v / 2), -scipy.special.ndtri(w / 2)
    elif dist == "uniform":
        ref, top = 1.0 - v, 1.0 - w
    else:
        raise ValueError(f"hill_reference: dist must be gaussian or uniform, not {dist!r}")
    return float(np.median(1.0 / np.log(top / ref).mean(-1)))
