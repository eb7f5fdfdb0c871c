"""Spectral (heavy-tailed self-regularisation) metrics of a weight tensor, computed the way
WeightWatcher 0.7.7 does with ``WeightWatcher(model).analyze()`` at its default settings
(numpy/scipy only; no torch import).

WeightWatcher's recipe, reproduced here:

* matrices: a Linear weight (out, in) is one matrix. A Conv2d weight (C_out, C_in, kh, kw)
  gives one C_out x C_in matrix per kernel position (kh*kw of them), each multiplied by
  sqrt(1/2) (``conv2d_norm=True`` with ``conv2d_count=1`` when pooling, the default).
* ESD: the nonzero eigenvalues of W^T W of every matrix (min(N, M) per matrix), pooled
  into one sorted array of num_evals = M * kh*kw values (N >= M the matrix dimensions).
* power-law fit: eigenvalues <= 1e-5 are dropped; every remaining eigenvalue but the
  largest is tried as xmin, alpha is the continuous maximum-likelihood exponent of the
  tail >= xmin, and the xmin with the smallest Kolmogorov-Smirnov distance D wins
  (Clauset et al. 2009). This is WeightWatcher's own fitter (``pl_package='ww'``, its
  default); with fewer than 20 eigenvalues it uses the bias-corrected MLE
  (n - 1 instead of n) and only tails of >= 8 values. WeightWatcher's other fitter,
  ``pl_package='powerlaw'``, does not run with powerlaw 2.x (it passes an argument
  powerlaw 2 removed, and every fit fails), so the ``powerlaw`` library is not used.
* layers with fewer than 8 or more than 15000 eigenvalues, or a dimension above 50000,
  are skipped by WeightWatcher (``min_evals``, ``max_evals``, ``max_N``): here they get
  no alpha (NaN, ``alpha_fitted`` = 0) but the norm metrics.
* mp_softrank is WeightWatcher's Marchenko-Pastur fit (``analyze(mp_fit=True)``).

WeightWatcher reads alpha in [2, 6] as well trained (heavy-tailed), < 2 as over-trained and
> 6 as under-trained (``OVER_TRAINED_THRESH``, ``UNDER_TRAINED_THRESH``).

Deliberate differences from WeightWatcher (none of them affects ordinary layers):

* eigenvalues come from ``eigvalsh`` of the Gram matrix (3x faster than the SVD
  WeightWatcher runs on one core, more on shared cores; they agree to ~1e-13 of
  lambda_max). Eigenvalues below the round-off level lambda_max * M * eps64 (above
  1e-5 only when lambda_max > 4.5e10 / M) are also dropped from the fit, and
  ``matrix_rank`` counts the eigenvalues above it.
* a fit that WeightWatcher "succeeds" on with a meaningless exponent (alpha <= 1 or
  KS distance 1, degenerate spectra) or fails on (WeightWatcher's alpha = -1, e.g. a rank-1
  matrix with one eigenvalue > 1e-5) gives alpha = NaN and ``alpha_fitted`` = 0; so do
  ``alpha_weighted`` and ``log_alpha_norm``, which WeightWatcher computes from alpha = -1.
* a Conv2d with C_out + C_in < kh + kw is still cut per kernel position (WeightWatcher
  then guesses channels-first and cuts per channel pair), and N, M are max/min of
  (C_out, C_in) (WeightWatcher swaps them when kh*kw is even and C_in > C_out).
* on a CUDA machine WeightWatcher rounds the weights to float16 first; on CPU (the
  reference used in tests/test_spectral.py) it uses them as they are, like here.

Keys of :func:`spectral_stats` (all floats; WeightWatcher's column name in brackets):

* ``alpha`` [alpha]: power-law exponent of the ESD tail, NaN when not fitted
* ``alpha_fitted``: 1 when alpha was fitted, 0 when not (layer skipped, < 2 eigenvalues > 1e-5, degenerate fit, non-finite weights)
* ``alpha_flat_esd``: 1 when the fitted eigenvalues span less than a factor FLAT_SPREAD (2): a flat
  spectrum (orthogonal weights: every eigenvalue equal) has no power-law tail, and the MLE returns
  any exponent (3.8e6 for orthogonal fc1); 0 otherwise, NaN without a fit
* ``alpha_few_evals``: 1 when fewer than FEW_EVALS (50) eigenvalues were fitted (conv1 of the paper
  CNN has 27, its fc2 10): alpha's standard error (alpha - 1) / sqrt(tail) is then large and the
  KS choice of xmin unstable; 0 otherwise, NaN without a fit. WeightWatcher fits these too (from 8
  eigenvalues) and warns only by alpha's range (< 2 over-trained, > 6 under-trained); these two
  flags say when the number itself is not to be read
* ``alpha_xmin`` [xmin]: the KS-optimal lower end of the fitted tail (an eigenvalue)
* ``alpha_ks_distance`` [D]: Kolmogorov-Smirnov distance of the tail to the fitted power law
* ``alpha_sigma`` [sigma]: (alpha - 1) / sqrt(n_tail), the standard error of alpha
* ``num_pl_spikes`` [num_pl_spikes]: number of eigenvalues >= alpha_xmin (the tail length)
* ``alpha_weighted`` [alpha_weighted]: alpha * log10(lambda_max)
* ``log_alpha_norm`` [log_alpha_norm]: log10(sum of eigenvalues ** alpha)
* ``lambda_max`` [lambda_max, = its spectral_norm]: largest eigenvalue (a squared singular value; x 1/2 for convs);
  0 for an all-zero weight, as WeightWatcher gives (its logs and ratios are then NaN here)
* ``log_spectral_norm`` [log_spectral_norm]: log10(lambda_max)
* ``log_norm`` [log_norm]: log10(sum of eigenvalues), the squared Frobenius norm of the matrices
* ``stable_rank`` [stable_rank]: sum of eigenvalues / lambda_max
* ``mp_softrank`` [mp_softrank]: Marchenko-Pastur bulk edge / lambda_max after scaling the ESD to mean 1
* ``num_evals`` [num_evals]: number of eigenvalues (M * kh*kw)
* ``matrix_rank`` [matrix_rank]: number of eigenvalues above round-off (lambda_max * M * eps64)
* ``flat_spectral_norm``: largest singular value of the C_out x (C_in*kh*kw) reshape (dnndist's former ``spectral_norm``)
* ``flat_stable_rank``: ||W||_F^2 / flat_spectral_norm^2 of that reshape (dnndist's former ``stable_rank``)

For a Linear layer ``flat_stable_rank`` equals ``stable_rank`` and ``flat_spectral_norm`` is
sqrt(``lambda_max``). There is deliberately no ``spectral_norm`` key: WeightWatcher's is
lambda_max (squared), dnndist's former one was the singular value (``flat_spectral_norm``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.optimize

EVALS_THRESH = 1e-5  # eigenvalues <= this are not fitted (weightwatcher.constants.EVALS_THRESH)
MIN_EVALS = 8  # analyze(min_evals=8): layers with fewer eigenvalues are skipped
MAX_EVALS = 15000  # analyze(max_evals=15000)
MAX_N = 50000  # analyze(max_N=50000)
CONV2D_NORM = math.sqrt(1 / 2)  # apply_normalize_Wmats: sqrt(conv2d_count / 2), conv2d_count = 1
SMALL_N = 20  # WW_powerlaw.SMALL_N_CUTOFF: below, the small-sample fit
SMALL_N_MIN_TAIL = 8  # WWFit.fit_powerlaw_smallN(k_min=8)
OVER_TRAINED_ALPHA, UNDER_TRAINED_ALPHA = 2.0, 6.0  # WeightWatcher's heavy-tailed range
FLAT_SPREAD = 2.0  # fitted eigenvalues within this factor of each other: a flat ESD, alpha flagged
FEW_EVALS = 50  # fewer fitted eigenvalues: alpha flagged (its standard error is large)
KDE_BANDWIDTH = 0.1  # mp_fit: bandwidth of the linear-kernel density of the rescaled ESD
KDE_POINTS = 1000
KDE_THRESH = 0.01  # resid_mp: grid points where the density is below this are ignored


class PowerLawFit(NamedTuple):
    alpha: float
    xmin: float
    ks_distance: float
    sigma: float
    fitted: bool


NOT_FITTED = PowerLawFit(math.nan, math.nan, math.nan, math.nan, False)


def weight_matrices(w: np.ndarray) -> tuple[np.ndarray, int, int]:
    """WeightWatcher's matrices of a layer weight, as a float64 stack (k, rows, cols) with N, M.

    Linear (out, in): one matrix. Conv2d (C_out, C_in, kh, kw): the kh*kw matrices
    W[:, :, i, j] (C_out x C_in), scaled by sqrt(1/2). N >= M are the matrix dimensions."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 2:
        mats = w[None]
    elif w.ndim == 4:
        c_out, c_in, kh, kw = w.shape
        mats = w.transpose(2, 3, 0, 1).reshape(kh * kw, c_out, c_in) * CONV2D_NORM
    else:
        raise ValueError(f"spectral metrics need a Linear (2-d) or Conv2d (4-d) weight, got shape {w.shape}")
    n, m = max(mats.shape[1:]), min(mats.shape[1:])
    return mats, n, m


def esd(mats: np.ndarray) -> np.ndarray:
    """Sorted pooled eigenvalues of W^T W (the min(N, M) of each matrix; squared singular values).

    Computed with eigvalsh of the smaller Gram matrix; round-off below zero is clipped to 0."""
    gram = mats @ mats.transpose(0, 2, 1) if mats.shape[1] <= mats.shape[2] else mats.transpose(0, 2, 1) @ mats
    return np.sort(np.clip(np.linalg.eigvalsh(gram).ravel(), 0.0, None))


def roundoff_level(evals: np.ndarray, m: int) -> float:
    """Eigenvalues at or below this are round-off of a rank-deficient matrix: lambda_max * M * eps64."""
    return float(evals[-1]) * m * np.finfo(np.float64).eps if evals.size else 0.0


def fit_evals(evals: np.ndarray, m: int) -> np.ndarray:
    """The eigenvalues that are fitted: above WeightWatcher's 1e-5 and above round-off."""
    return evals[evals > max(EVALS_THRESH, roundoff_level(evals, m))]


def fit_power_law(evals: np.ndarray) -> PowerLawFit:
    """WeightWatcher's power-law fit (WW_powerlaw.WWFit, its default): the xmin among the
    data (all but the largest value) minimising the KS distance D between the tail >= xmin
    and the continuous power law with the MLE exponent alpha = 1 + n / sum(log(x / xmin)).

    Below 20 values alpha = 1 + (n - 1) / sum(log(x / xmin)) and tails shorter than 8 are
    not considered. sigma = (alpha - 1) / sqrt(n). The loop mirrors WeightWatcher's so that
    the result is the same to round-off. Not fitted (NaN) with fewer than 2 values or when the
    best fit is degenerate (alpha <= 1 or D = 1)."""
    data = np.sort(np.asarray(evals, dtype=np.float64))
    size = data.size
    if size < 2:
        return NOT_FITTED
    log_data = np.log(data)
    alphas = np.zeros(size - 1)
    ds = np.ones(size - 1)
    small = size < SMALL_N
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i in range(size - 1):
            n_int = size - i
            n = float(n_int)
            s = np.sum(log_data[i:]) - n * log_data[i]
            if small:
                if n_int < SMALL_N_MIN_TAIL or s <= 1e-12:
                    continue
                alpha = 1.0 + (n - 1.0) / s
            else:
                alpha = 1 + n / s
            alphas[i] = alpha
            if alpha > 1:
                ds[i] = np.max(np.abs(1 - (data[i:] / data[i]) ** (-alpha + 1) - np.arange(n) / n))
        if small and np.all(ds == 1.0):  # no tail of >= 8 values: WeightWatcher fits all the data
            n = float(size)
            s = np.sum(log_data) - n * log_data[0]
            if s > 1e-12:
                alphas[0] = 1.0 + (n - 1.0) / s
                ds[0] = np.max(np.abs(1 - (data / data[0]) ** (1.0 - alphas[0]) - np.arange(size) / n))
        sigmas = (alphas - 1) / np.sqrt(size - np.arange(size - 1))
    best = int(np.argmin(ds))
    alpha, d = float(alphas[best]), float(ds[best])
    if not (math.isfinite(alpha) and alpha > 1 and d < 1):
        return NOT_FITTED
    return PowerLawFit(alpha, float(data[best]), d, float(sigmas[best]), True)


def _linear_kde(samples: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """Density of ``samples`` at ``grid`` with the linear (triangular) kernel, as
    sklearn.neighbors.KernelDensity(kernel='linear') computes it."""
    out = np.empty(grid.size)
    step = max(1, 2_000_000 // max(samples.size, 1))
    for lo in range(0, grid.size, step):
        u = np.abs(grid[lo : lo + step, None] - samples[None, :]) / bandwidth
        out[lo : lo + step] = np.clip(1.0 - u, 0.0, None).sum(axis=1)
    return out / (samples.size * bandwidth)


def mp_softrank(evals: np.ndarray, n: int, m: int) -> float:
    """WeightWatcher's MP soft rank (WeightWatcher.mp_fit): scale the ESD to mean 1, fit the
    Marchenko-Pastur scale sigma (quarter-circle law on the singular values when N = M) to
    its linear-kernel density by grid search + Nelder-Mead, then bulk edge / lambda_max with
    bulk edge = (sigma * (1 + 1/sqrt(Q)))^2, Q = N / M. NaN when the fit fails."""
    q = n / m
    to_fit = evals * (evals.size / np.sum(evals))  # (sqrt(len) / ||W||_F)^2 * evals
    lambda_max = np.max(to_fit)
    sigma_scale = math.sqrt(lambda_max / (1 + 1 / math.sqrt(q)) ** 2)  # RMT_Util.calc_sigma
    x = to_fit if q != 1 else np.sqrt(to_fit)
    xde = np.linspace(0, np.max(x) + 0.5, KDE_POINTS)
    yde = _linear_kde(x, xde, KDE_BANDWIDTH)
    n_bad = int(np.sum(yde < KDE_THRESH))
    good = yde > KDE_THRESH
    xde, yde = xde[good], yde[good]
    if xde.size == 0:
        return math.nan
    peak_x, xde_max = xde[np.where(yde == max(yde))][0], xde.max()
    pad = np.zeros(n_bad)

    def resid(sigma: np.ndarray) -> np.ndarray:
        """RMT_Util.resid_mp(allresid=False) for a column of sigmas: sum of squared residuals."""
        sigma = np.asarray(sigma, dtype=np.float64).reshape(-1, 1)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if q == 1:
                r = np.nan_to_num((1 / (np.pi * sigma * sigma)) * np.sqrt(4 - xde**2)) - yde
            else:
                b = np.power(sigma * (1 + np.sqrt(1 / q)), 2)
                a = np.power(sigma * (1 - np.sqrt(1 / q)), 2)
                ymp = np.nan_to_num((1 / (2 * np.pi * sigma * sigma * xde * (1 / q))) * np.sqrt((b - xde) * (xde - a)))
                bad = ((b < peak_x) | (b > xde_max) | (a > peak_x)).ravel()
                r = ymp - yde
                r[bad] = 1000.0
        return np.sum(np.concatenate((r, np.broadcast_to(pad, (r.shape[0], n_bad))), axis=1) ** 2, axis=1)

    # scipy.optimize.brute(resid, (slice(...),), full_output=True) as WeightWatcher calls it, with the
    # grid evaluated in one go: the best grid point, then Nelder-Mead (brute's default finish)
    grid = np.mgrid[slice(0.05 * sigma_scale, 2.0 * sigma_scale, 0.01 * sigma_scale)]
    try:
        start = grid[int(np.argmin(resid(grid)))]
        sigma = float(scipy.optimize.fmin(lambda s: float(resid(s)[0]), start, full_output=1, disp=False)[0][0])
    except (ValueError, RuntimeError, FloatingPointError):
        return math.nan
    bulk_max = (sigma * (1 + 1 / math.sqrt(q))) ** 2
    return float(bulk_max / lambda_max)


def ww_skips(num_evals: int, n: int) -> bool:
    """Whether WeightWatcher's analyze() leaves the layer out (min_evals, max_evals, max_N)."""
    return num_evals < MIN_EVALS or num_evals > MAX_EVALS or n > MAX_N


def flat_esd(w: np.ndarray) -> np.ndarray:
    """Sorted eigenvalues of W^T W for the C_out x (C_in*kh*kw) reshape of a weight (a Linear's
    own matrix): its squared singular values, ``esd`` of the one flat matrix. For a Linear weight
    these are the very eigenvalues ``spectral_stats`` fits (the same array, the same operations)."""
    w = np.asarray(w, dtype=np.float64)
    return esd(w.reshape(w.shape[0], -1)[None])


def flat_metrics(w: np.ndarray, flat: np.ndarray | None = None) -> dict[str, float]:
    """``flat_spectral_norm`` and ``flat_stable_rank`` of the C_out x (C_in*kh*kw) reshape
    (``flat``: its ``flat_esd`` when already computed)."""
    mat = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1)
    if not mat.size:
        top = 0.0
    else:
        top = float((flat if flat is not None else esd(mat[None]))[-1])
    return {
        "flat_spectral_norm": math.sqrt(top),
        "flat_stable_rank": float(np.sum(mat**2)) / top if top > 0 else math.nan,
    }


SPECTRAL_KEYS = (  # spectral_stats' keys, in its order
    "alpha",
    "alpha_fitted",
    "alpha_flat_esd",
    "alpha_few_evals",
    "alpha_xmin",
    "alpha_ks_distance",
    "alpha_sigma",
    "num_pl_spikes",
    "alpha_weighted",
    "log_alpha_norm",
    "lambda_max",
    "log_spectral_norm",
    "log_norm",
    "stable_rank",
    "mp_softrank",
    "num_evals",
    "matrix_rank",
    "flat_spectral_norm",
    "flat_stable_rank",
)


def spectral_stats(w: np.ndarray, flat: np.ndarray | None = None) -> dict[str, float]:
    """WeightWatcher's spectral metrics of one layer weight (Linear or Conv2d) plus the flat
    reshape's spectral norm and stable rank; the keys are listed in the module docstring.
    ``flat``: the weight's ``flat_esd`` when the caller has it (finite weights only); the
    results are the same with or without it."""
    w = np.asarray(w)
    mats, n, m = weight_matrices(w)
    num_evals = m * mats.shape[0]
    out: dict[str, float] = dict.fromkeys(SPECTRAL_KEYS, math.nan)
    out.update(alpha_fitted=0.0, num_evals=float(num_evals))
    if not np.isfinite(mats).all():
        return out
    evals = flat if flat is not None and w.ndim == 2 else esd(mats)  # a Linear's matrix is its flat reshape
    lambda_max, norm = float(evals[-1]), float(np.sum(evals))
    out["matrix_rank"] = float(np.sum(evals > roundoff_level(evals, m)))
    if w.ndim == 4:
        out.update(flat_metrics(w, flat))
    if lambda_max <= 0:  # an all-zero weight: WeightWatcher's lambda_max is 0 too
        out["lambda_max"] = 0.0
        return out
    out.update(
        lambda_max=lambda_max,
        log_spectral_norm=math.log10(lambda_max),
        log_norm=math.log10(norm),
        stable_rank=norm / lambda_max,
    )
    if w.ndim == 2:  # the flat reshape is the matrix itself
        out.update(flat_spectral_norm=math.sqrt(lambda_max), flat_stable_rank=norm / lambda_max)
    if ww_skips(num_evals, n):
        return out
    out.update(_power_law_metrics(evals, m, lambda_max))
    out["mp_softrank"] = mp_softrank(evals, n, m)
    return out


def _power_law_metrics(evals: np.ndarray, m: int, lambda_max: float) -> dict[str, float]:
    """The power-law tail's metrics (alpha and those derived from it) of the sorted eigenvalues
    ``evals`` of m x m matrices; none when the tail is not fitted."""
    fitted = fit_evals(evals, m)
    fit = fit_power_law(fitted)
    if not fit.fitted:
        return {}
    return dict(
        alpha=fit.alpha,
        alpha_fitted=1.0,
        alpha_flat_esd=float(fitted[-1] < FLAT_SPREAD * fitted[0]),
        alpha_few_evals=float(fitted.size < FEW_EVALS),
        alpha_xmin=fit.xmin,
        alpha_ks_distance=fit.ks_distance,
        alpha_sigma=fit.sigma,
        num_pl_spikes=float(np.sum(evals >= fit.xmin)),
        alpha_weighted=fit.alpha * math.log10(lambda_max),
        log_alpha_norm=_log10_sum_of_powers(evals, fit.alpha),
    )


def _log10_sum_of_powers(evals: np.ndarray, alpha: float) -> float:
    """log10(sum(evals ** alpha)), WeightWatcher's log alpha-norm, summed in log space:
    eigenvalues of weights scaled by 1e30 overflowed evals ** alpha to inf (with a warning)."""
    import scipy.special

    positive = evals[evals > 0]  # zero eigenvalues add nothing to the sum
    if positive.size == 0:
        return -math.inf
    return float(scipy.special.logsumexp(alpha * np.log(positive)) / math.log(10))
