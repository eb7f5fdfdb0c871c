"""Calibrated verdicts: the decision rules behind every claim, depth trend and factor effect.

The unit of evidence is the seed: a run's statistic (or the difference between two runs of the
same seed, which share the data order) is one observation, and every interval is a t-interval
over seeds. Four rule families, each a function over arrays whose last axis is the seeds and,
where a claim makes several comparisons, whose second-to-last axis is the comparisons:

- ``directional``: a claim that a (paired) effect is > 0 (or < 0) in every comparison.
  holds if every comparison's 95 % t-interval lies on the claimed side (an intersection-union
  test: every comparison must pass at 5 %, so no correction is needed for "all of them");
  does not hold if some comparison lies significantly on the other side after Holm's
  correction over the comparisons (a "some of them" statement, which needs it).
- ``interval``: a claim that an effect lies inside (low, high) -- "no difference" (a TOST
  equivalence test with a stated margin), "grows slightly" (ratio in (1, 1.5)), "within what
  a Gaussian sample of this size gives" (a size-calibrated null band). holds if every
  comparison's 90 % t-interval lies inside (two one-sided tests at 5 %); does not hold if some
  comparison's mean lies significantly outside (one-sided, Holm over the comparisons).
- ``effects``: no claimed direction (factor effects, depth trends): each comparison
  "increases" / "decreases" when its two-sided t-test rejects 0 after Holm's correction over
  the comparisons of the family, else "inconclusive".
- ``spearman_per_seed``: a trend over an ordered axis (depth): Spearman's rho per seed, then
  ``directional`` or ``effects`` over the seeds' rhos with ``test="sign"``: the p-value of the
  mean rho comes from flipping the signs of the seeds' rhos (exact when there is no trend, since
  rho is then symmetric about 0). A t-test is too liberal here: rho over 3-6 layers takes a few
  discrete values, and the t-test's false-verdict rate is 5.9 % (3 layers) to 5.2 % (6 layers).
  The sign-flip test cannot reject with fewer than 6 seeds (its smallest p-value is 2^-n), and
  with Holm over m comparisons it cannot refute (or, for ``effects``, say anything) while
  2 m 2^-n >= 5 %: below ``seeds_needed`` seeds such a rule is *undecidable at n seeds (needs
  N)*, not "inconclusive": one of its outcomes is out of reach whatever the data.

With fewer than ``MIN_SEEDS`` seeds a rule reports its value and interval but the verdict is
"descriptive only": a t-interval from 2-4 values is valid but so wide (t = 12.7 for 2 seeds)
that its verdicts carry almost no power, and their error rates cannot be checked.

Everything is vectorised over leading axes so that the Monte-Carlo calibration in
tests/test_verdicts.py runs these very functions on many simulated experiments at once;
docs/statistics.md gives the rules in words and the measured error rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

ALPHA = 0.05
MIN_SEEDS = 5
MIN_SEEDS_TREND = 6  # the sign-flip test's smallest two-sided p-value is 2 * 2^-n: below 0.05 from n = 6
SIGN_FLIP_EXACT = 12  # up to this many seeds every sign pattern is enumerated; beyond, SIGN_FLIP_DRAWS random ones
SIGN_FLIP_DRAWS = 4095
HOLDS, FAILS, UNSURE, DESCRIPTIVE = "holds", "does not hold", "inconclusive", "descriptive only"
UNDECIDABLE = "undecidable"  # the verdict reads "undecidable at n seeds (needs N)" (``undecidable``)
EQUIVALENT = "equivalent"  # a directional claim with a practical margin, every comparison inside it
INCREASES, DECREASES = "increases", "decreases"
OUTCOMES = (HOLDS, FAILS, UNSURE, DESCRIPTIVE)  # and EQUIVALENT (margin rules), "undecidable at ..." (sign-flip)


def seeds_needed(m: int, test: str = "t", alpha: float = ALPHA) -> int:
    """The fewest seeds with which every outcome of a rule over ``m`` comparisons can be reached.
    t-tests: ``MIN_SEEDS`` (a policy: with fewer the verdict is "descriptive only"). Sign-flip:
    the smallest two-sided p-value is 2 / 2^n (2 / (SIGN_FLIP_DRAWS + 1) beyond SIGN_FLIP_EXACT
    seeds), and Holm multiplies the smallest by m, so "does not hold" (and any effect) needs
    2 m / 2^n < alpha; "holds" (no Holm) needs the m = 1 case. -1 where no number of seeds will do."""
    if test != "sign":
        return MIN_SEEDS
    m = max(int(m), 1)
    n = max(MIN_SEEDS_TREND, math.floor(math.log2(2 * m / alpha)) + 1)
    if n <= SIGN_FLIP_EXACT:
        return n
    return SIGN_FLIP_EXACT + 1 if 2 * m / (SIGN_FLIP_DRAWS + 1) < alpha else -1


def undecidable(n: int, needed: int) -> str:
    """The verdict of a rule that cannot reach one of its outcomes with ``n`` seeds."""
    return f"{UNDECIDABLE} at {n} seeds (needs {needed})" if needed > 0 else f"{UNDECIDABLE} (too many comparisons)"


# --------------------------------------------------------------------------- t machinery
def t_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, standard error, n) over the last axis, ignoring NaN/inf. se is NaN for n < 2."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    n = finite.sum(axis=-1)
    xs = np.where(finite, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = xs.sum(axis=-1) / n
        dev = np.where(finite, x - mean[..., None], 0.0)
        sd = np.sqrt((dev**2).sum(axis=-1) / (n - 1))
        se = sd / np.sqrt(n)
    se = np.where(n >= 2, se, np.nan)
    return mean, se, n


def _t_of(mean: np.ndarray, se: np.ndarray, ref: np.ndarray | float) -> np.ndarray:
    """(mean - ref) / se, with a zero-width interval (identical seeds) read as +-inf (or 0 at ref)."""
    diff = mean - ref
    with np.errstate(invalid="ignore", divide="ignore"):
        t = diff / se
    signed_inf = np.where(diff > 0, np.inf, np.where(diff < 0, -np.inf, 0.0))
    return np.where(se == 0, signed_inf, t)


def p_greater(mean: np.ndarray, se: np.ndarray, n: np.ndarray, ref: np.ndarray | float = 0.0) -> np.ndarray:
    """One-sided p-value of H0: mu <= ref against mu > ref (t-test over seeds)."""
    df = np.where(n >= 2, n - 1, np.nan)
    return np.asarray(scipy.stats.t.sf(_t_of(mean, se, ref), df))


def p_less(mean: np.ndarray, se: np.ndarray, n: np.ndarray, ref: np.ndarray | float = 0.0) -> np.ndarray:
    """One-sided p-value of H0: mu >= ref against mu < ref."""
    df = np.where(n >= 2, n - 1, np.nan)
    return np.asarray(scipy.stats.t.cdf(_t_of(mean, se, ref), df))


def sign_flip_p(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided p-values (mean > 0, mean < 0) of the sign-flip test over the last axis: the share
    of the 2^n sign patterns (or of SIGN_FLIP_DRAWS seeded random ones, plus the observed one)
    whose sum is at least (at most) the observed sum. Exact for a per-seed statistic that is
    symmetric about 0 under the null. NaN entries count as absent (0); rows with < 2 values: NaN."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    v = np.where(finite, x, 0.0)
    n = x.shape[-1]
    if n == 0:  # no seeds at all (e.g. given weights: one checkpoint, nothing to compare)
        nan = np.full(x.shape[:-1], np.nan)
        return nan, nan
    if n <= SIGN_FLIP_EXACT:
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2.0 - 1.0
    else:
        draws = np.random.default_rng(0).choice([-1.0, 1.0], (SIGN_FLIP_DRAWS, n))
        signs = np.vstack([np.ones((1, n)), draws])
    obs = v.sum(-1)
    tol = 1e-9 * np.maximum(1.0, np.abs(v).sum(-1))
    flat, lead = v.reshape(-1, n), v.shape[:-1]
    ge = np.empty(flat.shape[0])
    le = np.empty(flat.shape[0])
    step = max(1, 2_000_000 // len(signs))
    for i in range(0, flat.shape[0], step):
        perm = flat[i : i + step] @ signs.T
        o, t = obs.reshape(-1)[i : i + step, None], tol.reshape(-1)[i : i + step, None]
        ge[i : i + step] = (perm >= o - t).mean(-1)
        le[i : i + step] = (perm <= o + t).mean(-1)
    few = finite.sum(-1) < 2
    return np.where(few, np.nan, ge.reshape(lead)), np.where(few, np.nan, le.reshape(lead))


def half_width(se: np.ndarray, n: np.ndarray, confidence: float) -> np.ndarray:
    df = np.where(n >= 2, n - 1, np.nan)
    q = scipy.stats.t.ppf(0.5 + confidence / 2, df)
    return np.where(se == 0, 0.0, q * se)


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t-interval of the mean over seeds. One value: no interval (NaN);
    identical values: a zero-width interval."""
    mean, se, n = t_moments(np.asarray(values, dtype=np.float64).ravel())
    if n == 0:
        return math.nan, math.nan, math.nan
    if n == 1:
        return float(mean), math.nan, math.nan
    h = float(half_width(se, n, confidence))
    return float(mean), float(mean) - h, float(mean) + h


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values over the last axis (NaN entries are not counted)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 0 or p.shape[-1] == 0:
        return p.copy()
    finite = np.isfinite(p)
    m = finite.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(finite, p, np.inf), axis=-1, kind="stable")
    ps = np.take_along_axis(p, order, axis=-1)
    rank = np.arange(p.shape[-1])
    adj = np.minimum(1.0, (m - rank) * ps)
    adj = np.where(np.isnan(ps), np.nan, np.fmax.accumulate(np.where(np.isnan(adj), -np.inf, adj), axis=-1))
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=-1)
    return out


# --------------------------------------------------------------------------- decisions
@dataclass
class Decision:
    """A rule's result. ``outcome`` has the leading shape; the other fields have the leading
    shape plus the comparison axis. ``worst`` indexes the comparison that decides the verdict
    (the least favourable to the claim, or the one that refutes it)."""

    outcome: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p: np.ndarray  # per comparison: the p-value for the claim (or two-sided, for effects)
    p_adj: np.ndarray  # Holm-adjusted p-value of the refuting test (effects: of the two-sided test)
    n: np.ndarray
    worst: np.ndarray
    confidence: float  # of the reported interval: 95 % (directional, effects) or 90 % (interval / TOST)


def _as_comparisons(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[None, :] if x.ndim == 1 else x


def _finish(hold: np.ndarray, fail: np.ndarray, n: np.ndarray, min_seeds: int, needed: int | None = None) -> np.ndarray:
    """The outcome per leading index: does not hold / holds / inconclusive; "descriptive only"
    below ``min_seeds`` (t rules), "undecidable at n seeds (needs N)" below ``needed`` (sign-flip
    rules, whose outcomes are out of reach with few seeds). The thinnest comparison decides."""
    out = np.where(fail, FAILS, np.where(hold, HOLDS, UNSURE)).astype(object)
    thinnest = n.min(axis=-1) if n.shape[-1] else np.zeros(n.shape[:-1], int)
    out = np.where(thinnest < min_seeds, DESCRIPTIVE, out).astype(object)
    if needed is not None:
        short = np.vectorize(lambda k: undecidable(int(k), needed), otypes=[object])(thinnest)
        out = np.where((thinnest >= 2) & ((thinnest < needed) | (needed < 0)), short, out).astype(object)
    none = np.asarray(n.shape[-1] == 0) | (n.max(axis=-1, initial=0) == 0)
    return np.where(none, UNSURE, out).astype(object)


def _one_sided(
    x: np.ndarray, mean: np.ndarray, se: np.ndarray, n: np.ndarray, test: str
) -> tuple[np.ndarray, np.ndarray]:
    """(p for mean > 0, p for mean < 0): the t-test, or the sign-flip test (``test="sign"``)."""
    if test == "sign":
        return sign_flip_p(x)
    if test != "t":
        raise ValueError(f"test must be 't' or 'sign', not {test!r}")
    return p_greater(mean, se, n), p_less(mean, se, n)


def directional(
    x: np.ndarray, direction: int = 1, alpha: float = ALPHA, min_seeds: int | None = None, test: str = "t"
) -> Decision:
    """Claim: the mean of ``x`` (per-seed effects, e.g. paired differences) is > 0 (direction +1)
    or < 0 (-1) in every comparison. x: (..., m, seeds) or (seeds,). ``test``: "t" (t-test), or
    "sign" (sign-flip test, for per-seed trends)."""
    x = _as_comparisons(x)
    mean, se, n = t_moments(x)
    min_seeds = min_seeds or (MIN_SEEDS_TREND if test == "sign" else MIN_SEEDS)
    s = float(direction)
    p_gt, p_lt = _one_sided(x, mean, se, n, test)
    p_for, p_against = (p_gt, p_lt) if s > 0 else (p_lt, p_gt)  # evidence for / against the claim (one-sided)
    p_two_for, p_two_against = (
        np.minimum(1, 2 * p_for),
        np.minimum(1, 2 * p_against),
    )  # the two-sided test, split by side
    p_adj = holm(p_two_against)
    hold = np.all(p_two_for < alpha, axis=-1)
    fail = np.any(p_adj < alpha, axis=-1)
    h = half_width(se, n, 1 - alpha)
    t = s * _t_of(mean, se, 0.0)
    t = np.where(np.isnan(t), s * mean, t)  # one seed: no t, rank by the effect itself
    t = np.nan_to_num(t, nan=np.inf)
    worst = np.where(
        fail,
        np.nanargmin(np.where(np.isnan(p_adj), np.inf, p_adj), axis=-1) if x.shape[-2] else 0,
        np.argmin(t, axis=-1) if x.shape[-2] else 0,
    )
    needed = seeds_needed(x.shape[-2], test, alpha) if test == "sign" else None
    return Decision(
        _finish(hold, fail, n, min_seeds, needed), mean, mean - h, mean + h, p_two_for, p_adj, n, worst, 1 - alpha
    )


def directional_with_margin(
    x: np.ndarray, direction: int, margin: float, alpha: float = ALPHA, min_seeds: int | None = None
) -> Decision:
    """A directional claim whose effects must be practically relevant: ``margin`` (> 0, in x's
    units) on either side of 0 is "no practical difference". holds if every comparison's 95 %
    t-interval lies beyond the margin on the claimed side; does not hold if some comparison lies
    significantly beyond the margin on the other side (Holm); *equivalent* if every comparison's
    90 % interval lies inside (-margin, margin) (TOST); else inconclusive. A difference of a
    fraction of the margin is then "equivalent" (with enough seeds), never "does not hold"."""
    x = _as_comparisons(x)
    s = float(direction)
    beyond = directional(x - s * margin, direction, alpha, min_seeds)  # holds: past the margin, claimed side
    against = directional(x + s * margin, direction, alpha, min_seeds)  # does not hold: past it, other side
    inside = interval(x, -margin, margin, alpha, min_seeds or MIN_SEEDS)
    out = np.where(
        against.outcome == FAILS,
        FAILS,
        np.where(beyond.outcome == HOLDS, HOLDS, np.where(inside.outcome == HOLDS, EQUIVALENT, UNSURE)),
    ).astype(object)
    out = np.where(beyond.outcome == DESCRIPTIVE, DESCRIPTIVE, out).astype(object)  # too few seeds: as directional
    worst = np.where(out == FAILS, against.worst, beyond.worst)
    p = np.where((out == EQUIVALENT)[..., None], inside.p, beyond.p)
    shift = s * margin  # the effect and its 95 % interval are beyond's, moved back by the margin
    mean, low, high = beyond.mean + shift, beyond.low + shift, beyond.high + shift
    return Decision(out, mean, low, high, p, against.p_adj, beyond.n, worst, 1 - alpha)


def interval(
    x: np.ndarray, low: np.ndarray | float, high: np.ndarray | float, alpha: float = ALPHA, min_seeds: int = MIN_SEEDS
) -> Decision:
    """Claim: the mean of ``x`` lies in (low, high) in every comparison (TOST; a bound may be
    infinite for a one-sided claim). low/high broadcast against x's comparisons."""
    x = _as_comparisons(x)
    mean, se, n = t_moments(x)
    low = np.broadcast_to(np.asarray(low, dtype=np.float64), mean.shape)
    high = np.broadcast_to(np.asarray(high, dtype=np.float64), mean.shape)
    p_in = np.fmax(
        np.where(np.isfinite(low), p_greater(mean, se, n, low), 0.0),
        np.where(np.isfinite(high), p_less(mean, se, n, high), 0.0),
    )
    p_in = np.where(n >= 2, p_in, np.nan)
    p_out = np.fmin(
        np.where(np.isfinite(low), p_less(mean, se, n, low), 1.0),
        np.where(np.isfinite(high), p_greater(mean, se, n, high), 1.0),
    )
    p_out = np.where(n >= 2, p_out, np.nan)
    p_adj = holm(p_out)
    hold = np.all(p_in < alpha, axis=-1)
    fail = np.any(p_adj < alpha, axis=-1)
    h = half_width(se, n, 1 - 2 * alpha)
    with np.errstate(invalid="ignore"):
        outside = np.fmax(low - mean, mean - high)  # one seed: no p, rank by the distance beyond the band
    # a comparison without a p-value (one seed) is weaker than any with one: key in (1.5, 2.5) vs p in [0, 1]
    key = np.where(np.isnan(p_in), 2.0 + np.arctan(np.nan_to_num(outside, nan=-np.inf)) / np.pi, p_in)
    worst = np.where(
        fail,
        np.argmin(np.where(np.isnan(p_adj), np.inf, p_adj), axis=-1) if x.shape[-2] else 0,
        np.argmax(key, axis=-1) if x.shape[-2] else 0,
    )
    return Decision(_finish(hold, fail, n, min_seeds), mean, mean - h, mean + h, p_in, p_adj, n, worst, 1 - 2 * alpha)


def effects(x: np.ndarray, alpha: float = ALPHA, min_seeds: int | None = None, test: str = "t") -> Decision:
    """No claimed direction: per comparison "increases" / "decreases" / "inconclusive" (or
    "descriptive only") from the two-sided test over seeds (t, or sign-flip for per-seed
    trends), Holm over the comparisons. ``outcome`` has the shape of the comparisons here."""
    x = _as_comparisons(x)
    mean, se, n = t_moments(x)
    min_seeds = min_seeds or (MIN_SEEDS_TREND if test == "sign" else MIN_SEEDS)
    p = np.minimum(1, 2 * np.fmin(*_one_sided(x, mean, se, n, test)))
    p = np.where(n >= 2, p, np.nan)
    p_adj = holm(p)
    out = np.where(p_adj < alpha, np.where(mean > 0, INCREASES, DECREASES), UNSURE).astype(object)
    out = np.where(n < min_seeds, DESCRIPTIVE, out).astype(object)
    if test == "sign":  # Holm over the family: below seeds_needed no comparison can be called
        needed = seeds_needed(x.shape[-2], test, alpha)
        short = np.vectorize(lambda k: undecidable(int(k), needed), otypes=[object])(n)
        out = np.where((n >= 2) & ((n < needed) | (needed < 0)), short, out).astype(object)
    h = half_width(se, n, 1 - alpha)
    worst = np.zeros(mean.shape[:-1], dtype=int)
    return Decision(out, mean, mean - h, mean + h, p, p_adj, n, worst, 1 - alpha)


def spearman_per_seed(values: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Spearman's rho between ``position`` (last axis, e.g. depth) and ``values`` for every
    leading index (e.g. each seed). NaN where fewer than 3 finite points or a constant row."""
    v = np.asarray(values, dtype=np.float64)
    pos = np.broadcast_to(np.asarray(position, dtype=np.float64), v.shape)
    ok = np.isfinite(v) & np.isfinite(pos)
    # rank only the finite points of each row: NaN gets the largest ranks, then is masked out
    rv = scipy.stats.rankdata(np.where(ok, v, np.inf), axis=-1)
    rp = scipy.stats.rankdata(np.where(ok, pos, np.inf), axis=-1)
    k = ok.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rv = np.where(ok, rv - (k + 1) / 2, 0.0)
        rp = np.where(ok, rp - (k + 1) / 2, 0.0)
        rho = (rv * rp).sum(-1) / np.sqrt((rv**2).sum(-1) * (rp**2).sum(-1))
    return np.where((k[..., 0] >= 3) & np.isfinite(rho), rho, np.nan)


def pad(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """Ragged per-comparison seed values as an (m, max seeds) array padded with NaN."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = np.asarray(r, dtype=np.float64)
    return out
