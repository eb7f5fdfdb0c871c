"""Streaming statistics of feature maps: exact moments up to the fourth and fixed-bin histograms.

A feature map of one batch is folded into running statistics in **one pass over its values**
(after the first batch, which also fixes the shift and the histogram range):

- power sums of ``x - shift`` (``shift``: the first batch's mean) in float64, accumulated in
  16 fixed lanes over fixed chunks of ``CHUNK`` values; the chunk sums are added in chunk order
  (so the sums do not depend on the thread count, and repeat bit for bit). A batch whose mean
  lies far from the shift is summed again around its own mean (:data:`DRIFT64`).
  The batch's central moment sums follow from them, and are merged into the running ones with
  the pairwise formulas of Pebay (2008), in float64;
- min and max;
- a histogram with ``bins`` equal bins between ``lo`` and ``hi``: a value ``v`` is counted in bin
  ``k`` iff ``edges[k] <= v < edges[k + 1]`` (the last bin also holds ``v == hi``), with
  ``edges = np.linspace(lo, hi, bins + 1)`` in float64, i.e. exactly ``np.histogram(v, edges)``;
  values below ``lo`` / above ``hi`` are counted as underflow / overflow.

Two implementations compute one batch (:func:`batch_sums`):

- ``native``: a small C kernel (below), compiled on first use with the system C compiler
  (``$CC``, else ``cc``; about a second, once per machine kind) and cached (:func:`cache_dirs`),
  run on CPU float32 tensors by ``torch.get_num_threads()`` threads over fixed chunks. Chunk
  boundaries do not depend on the thread count, so neither do the results (bit for bit).
- ``torch``: torch operations on any device (CUDA, or a CPU without a C compiler; set
  ``DNNDIST_NATIVE=0`` to force it): float32 power sums of the differences (scaled by a power
  of two, so that no power over- or underflows) over rows of ``ROW`` values, added in float64.
  Relative errors of a few 1e-8 in mean (of ``x - shift``), variance and kurtosis, about 1e-7
  of the standard deviation's cube in the third moment (so skewness is exact to ~1e-7 absolute).
  The same exact histogram binning (a float32 estimate of the bin, corrected by exact
  comparisons with the edges).

Bin assignment: the edges are compared exactly. For float32 values, ``v >= edge`` (float64)
iff ``v >= ceil32(edge)`` (the smallest float32 not below the edge); both kernels use those
float32 thresholds. The bin is first estimated as ``floor((v - lo) * bins / (hi - lo))`` in
float32 (in float64 where a narrow range lies far from zero); values whose estimate lies
within ``delta`` (twice a bound on that estimate's rounding error, :class:`Binning`) of an
integer are binned by comparisons with the thresholds instead. This is bin for bin what
``np.histogram`` gives; ``torch.histc`` (used before) bins by float32 division alone and so
puts values within a float32 rounding of an edge (a few in 10^6 typically; 0.3 % for a range
of width 1e-5 at 1000) on either side.

Non-finite values are counted and left out (an extra pass, only for batches that have them).
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import logging
import math
import os
import platform
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

CHUNK = 1 << 14  # values per native partial sum (fixed: results do not depend on the thread count)
ROW = 1 << 10  # values per float32 partial sum of the torch kernel
MIN_PARALLEL = 1 << 17  # maps smaller than this run on the calling thread only
BLOCKS_PER_THREAD = 4  # native work is handed out in blocks of chunks, about this many per thread
PRECISE = 0.01  # native bin estimates in float64 where the float32 one leaves more than ~2 % to the exact path
# a batch whose mean lies far from the shift loses precision to cancellation (relative error about
# eps * (1 + (mean - shift)^2 / variance)): it is recomputed around its own mean beyond these ratios
DRIFT32, DRIFT64 = 1.0, 1e4  # float32 (torch kernel) and float64 power sums

# --------------------------------------------------------------------------- the C kernel
C_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <math.h>

#ifdef __FMA__
#define FMA(a, b, c) fma(a, b, c)
#else
#define FMA(a, b, c) ((a) * (b) + (c))
#endif
#define LANES 16  /* fixed accumulator lanes: the summation order does not depend on the vector width */
#define COPIES 8  /* interleaved histogram copies */
#define BLOCK 64  /* estimates scanned per block for values left to the exact path */
#define SUB 2048  /* values estimated, then counted, at a time (a multiple of LANES) */

/* Bins: B equal bins; thr[k] (k < B) is the smallest float not below the lower edge of bin k, hi the
   largest float not above the upper edge of the last bin: for a float v, "v >= edge k" is exactly
   "v >= thr[k]".  Slots: 0..B-1 the bins, B below the range (and NaN), B + 1 above it.

   The exact slot of v: the largest k < B with thr[k] <= v (binary search). */
static int32_t exact_slot(float v, int32_t B, const float *thr, float hi) {
    if (!(v >= thr[0])) return B;
    if (v > hi) return B + 1;
    int32_t a = 0, b = B - 1;
    while (a < b) {
        int32_t mid = a + (b - a + 1) / 2;
        if (v >= thr[mid]) a = mid; else b = mid - 1;
    }
    return a;
}

#define DECLARE \
    double a1[LANES] = {0}, a2[LANES] = {0}, a3[LANES] = {0}, a4[LANES] = {0}; \
    float mn[LANES], mx[LANES]; \
    for (int j = 0; j < LANES; j++) { mn[j] = *mn_io; mx[j] = *mx_io; }

/* power sums of d = v - shift (double) and min/max, in lane j */
#define MOMENTS(v, j) \
    double d = (double)(v) - shift, d2 = d * d; \
    a1[j] += d; a2[j] += d2; a3[j] = FMA(d2, d, a3[j]); a4[j] = FMA(d2, d2, a4[j]); \
    mn[j] = (v) < mn[j] ? (v) : mn[j]; \
    mx[j] = (v) > mx[j] ? (v) : mx[j];

/* Slot estimate from t, the position of v in bins (within delta / 2 of the exact position, see
   Binning): trusted unless within delta of an interior edge (|frac - 1/2| > 1/2 - delta), when the
   slot is -1, left to the exact path.  Clamping t to [1/2, B - 1/2] is safe, as the range itself is
   tested exactly. */
#define ESTIMATE(T, ABS, t_expr, v, out, j) { \
    T t = t_expr; \
    t = t > (T)0.5 ? t : (T)0.5; \
    t = t < top ? t : top; \
    int32_t k = (int32_t)t; \
    T f = ABS(t - (T)k - (T)0.5); \
    int32_t s = f <= half ? k : -1; \
    s = (v) >= lo ? s : B; \
    s = (v) > hi ? B + 1 : s; \
    out = s; }

#define REDUCE_STORE \
    for (int w = LANES / 2; w > 0; w /= 2) \
        for (int j = 0; j < w; j++) { \
            a1[j] += a1[j + w]; a2[j] += a2[j + w]; a3[j] += a3[j + w]; a4[j] += a4[j + w]; \
            mn[j] = mn[j + w] < mn[j] ? mn[j + w] : mn[j]; \
            mx[j] = mx[j + w] > mx[j] ? mx[j + w] : mx[j]; \
        } \
    out[0] = a1[0]; out[1] = a2[0]; out[2] = a3[0]; out[3] = a4[0]; \
    *mn_io = mn[0]; *mx_io = mx[0];

static void moments(const float *x, int64_t m, double shift, double *out, float *mn_io, float *mx_io) {
    DECLARE
    int64_t i = 0;
    for (; i + LANES <= m; i += LANES)
        for (int j = 0; j < LANES; j++) { float v = x[i + j]; MOMENTS(v, j) }
    for (int j = 0; i < m; i++, j++) { float v = x[i]; MOMENTS(v, j) }
    REDUCE_STORE
}

/* Exact slots for the values left to the exact path. */
static void resolve(const float *x, int32_t *idx, int64_t m, int32_t B, const float *thr, float hi) {
    for (int64_t i = 0; i < m; i += BLOCK) {
        int64_t e = i + BLOCK < m ? i + BLOCK : m;
        int32_t any = 0;
        for (int64_t j = i; j < e; j++) any |= idx[j];
        if (any < 0)
            for (int64_t j = i; j < e; j++)
                if (idx[j] < 0) idx[j] = exact_slot(x[j], B, thr, hi);
    }
}

/* Count slots in COPIES interleaved copies of the histogram (no store-to-load stall when many
   values fall in one bin, e.g. the zeros after a ReLU). */
static void count(const int32_t *idx, int64_t m, int64_t stride, uint32_t *h) {
    uint32_t *h0 = h, *h1 = h + stride, *h2 = h + 2 * stride, *h3 = h + 3 * stride;
    uint32_t *h4 = h + 4 * stride, *h5 = h + 5 * stride, *h6 = h + 6 * stride, *h7 = h + 7 * stride;
    int64_t i = 0;
    for (; i + 8 <= m; i += 8) {
        h0[idx[i]]++; h1[idx[i + 1]]++; h2[idx[i + 2]]++; h3[idx[i + 3]]++;
        h4[idx[i + 4]]++; h5[idx[i + 5]]++; h6[idx[i + 6]]++; h7[idx[i + 7]]++;
    }
    for (; i < m; i++) h0[idx[i]]++;
}

/* Moments, slot estimates and counts of a chunk in one pass, SUB values at a time (their slots
   stay in the first-level cache between the estimate and the count; the lanes run on across the
   blocks, so the sums are those of one loop over the chunk).
   Estimate in float: t = (v - lo) * scale; in double: t = (d + (shift - lo)) * scale. */
#define MOMENTS_ESTIMATE(NAME, T, ABS, T_EXPR) \
static void NAME(const float *x, int64_t m, double shift, double *out, float *mn_io, float *mx_io, int32_t B, \
                 const float *thr, float hi, double lo64, double scale64, double delta, int32_t *idx, \
                 int64_t stride, uint32_t *h) { \
    DECLARE \
    const float lo = thr[0]; \
    const T top = (T)B - (T)0.5, half = (T)(0.5 - delta), lo_t = (T)lo64, scale = (T)scale64; \
    const double c = shift - lo64; \
    (void)lo_t; (void)c; \
    int64_t i = 0; \
    while (i < m) { \
        const int64_t b = i, e = i + SUB < m ? i + SUB : m; \
        for (; i + LANES <= e; i += LANES) \
            for (int j = 0; j < LANES; j++) { float v = x[i + j]; MOMENTS(v, j) ESTIMATE(T, ABS, T_EXPR, v, idx[i - b + j], j) } \
        for (int j = 0; i < e; i++, j++) { float v = x[i]; MOMENTS(v, j) ESTIMATE(T, ABS, T_EXPR, v, idx[i - b], j) } \
        resolve(x + b, idx, e - b, B, thr, hi); \
        count(idx, e - b, stride, h); \
    } \
    REDUCE_STORE \
}
MOMENTS_ESTIMATE(moments_estimate32, float, fabsf, (v - lo_t) * scale)
MOMENTS_ESTIMATE(moments_estimate64, double, fabs, (d + c) * scale)

/* Chunks [c0, c1) of x[0:n) (chunk c: values [c * chunk, min((c + 1) * chunk, n))):
   part[4 * (c - c0) + p] = sum over chunk c of (x - shift)^(p + 1);  mnmx[0], mnmx[1]: min, max (updated);
   if bins > 0: counts[0:bins + 2] += the slot counts, the bin of a value estimated in float
   (precise == 0) or double (precise == 1) arithmetic.  Returns 0, or 1 when out of memory. */
int dnndist_stats(const float *x, int64_t n, int64_t chunk, int64_t c0, int64_t c1, double shift, double *part,
                  float *mnmx, int64_t bins, const float *thr, float hi, double lo64, double scale64, double delta,
                  int32_t precise, int64_t *counts) {
    int32_t *idx = NULL;
    uint32_t *h = NULL;
    const int64_t stride = bins + 2;
    const int32_t B = (int32_t)bins;
    if (bins > 0) {
        idx = (int32_t *)malloc(sizeof(int32_t) * SUB);
        h = (uint32_t *)calloc((size_t)(COPIES * stride), sizeof(uint32_t));
        if (!idx || !h) { free(idx); free(h); return 1; }
    }
    int64_t since_flush = 0;
    for (int64_t c = c0; c < c1; c++) {
        int64_t b = c * chunk, e = b + chunk < n ? b + chunk : n;
        double *out = part + 4 * (c - c0);
        if (bins == 0) { moments(x + b, e - b, shift, out, &mnmx[0], &mnmx[1]); continue; }
        if (precise)
            moments_estimate64(x + b, e - b, shift, out, &mnmx[0], &mnmx[1], B, thr, hi, lo64, scale64, delta, idx, stride, h);
        else
            moments_estimate32(x + b, e - b, shift, out, &mnmx[0], &mnmx[1], B, thr, hi, lo64, scale64, delta, idx, stride, h);
        since_flush += e - b;
        if (since_flush > ((int64_t)1 << 31) || c == c1 - 1) {  /* 32-bit counters: flushed long before overflow */
            for (int r = 0; r < COPIES; r++)
                for (int64_t k = 0; k < stride; k++) { counts[k] += h[r * stride + k]; h[r * stride + k] = 0; }
            since_flush = 0;
        }
    }
    free(idx);
    free(h);
    return 0;
}
"""
# no FMA contraction: the bin estimate's error bound assumes separately rounded operations
C_FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math")

_lib_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_lib_tried = False


def cache_dirs() -> list[Path]:
    """Where the compiled kernel is kept: ``$DNNDIST_CACHE_DIR``, else the user's cache folder,
    then a per-user temporary folder (for a read-only home)."""
    if os.environ.get("DNNDIST_CACHE_DIR"):
        return [Path(os.environ["DNNDIST_CACHE_DIR"])]
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return [Path(base) / "dnndist", Path(tempfile.gettempdir()) / f"dnndist-{uid}"]


def _check_private(path: Path) -> None:
    """Refuse a cache folder or library not owned by this user or writable by others."""
    st = path.stat()
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        raise OSError(f"{path} is not private to this user (owner uid {st.st_uid}, mode {oct(st.st_mode & 0o777)})")


def _cpu_id() -> str:
    """The machine and its instruction-set flags: -march=native builds are kept per CPU kind."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()} {flags}"


def _compile(target: Path) -> None:
    cc = os.environ.get("CC", "cc")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src, out = Path(tmp) / "streaming.c", Path(tmp) / target.name
        src.write_text(C_SOURCE)
        errors = []
        for arch in (["-march=native"], []):  # the native ISA where the compiler knows it
            proc = subprocess.run(
                [cc, *C_FLAGS, *arch, "-o", str(out), str(src)],
                check=False,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if proc.returncode == 0:
                os.replace(out, target)  # atomic: concurrent jobs each install a complete file
                return
            errors.append(proc.stderr.strip())
        raise RuntimeError(f"{cc} failed: {errors[-1][:500]}")


def native_library() -> ctypes.CDLL | None:
    """The compiled kernel (compiled and cached on first use), or None where there is no C
    compiler or ``DNNDIST_NATIVE=0``."""
    global _lib, _lib_tried
    if os.environ.get("DNNDIST_NATIVE", "1") == "0":
        return None
    with _lib_lock:
        if _lib_tried:
            return _lib
        _lib_tried = True
        key = hashlib.sha256(
            "\0".join([C_SOURCE, *C_FLAGS, os.environ.get("CC", "cc"), _cpu_id()]).encode()
        ).hexdigest()[:20]
        lib, errors = None, []
        for folder in cache_dirs():
            target = folder / f"streaming-{key}.so"
            try:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                _check_private(folder)
                if not target.is_file():
                    _compile(target)
                _check_private(target)  # a library someone else could have planted is never loaded
                lib = ctypes.CDLL(str(target))
                break
            except (
                OSError,
                RuntimeError,
                subprocess.SubprocessError,
            ) as exc:  # no compiler, read-only or noexec folder
                errors.append(f"{folder}: {exc}")
        if lib is None:
            log.warning(
                "streaming statistics: no native kernel (%s); using torch operations (slower on a CPU)",
                "; ".join(errors),
            )
            return None
        fn = lib.dnndist_stats
        fn.restype = ctypes.c_int
        fn.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_double,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_void_p,
            ctypes.c_float,
            ctypes.c_double,
            ctypes.c_double,
            ctypes.c_double,
            ctypes.c_int32,
            ctypes.c_void_p,
        ]
        _lib = lib
        return _lib


_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] = (0, 0)


def _executor(workers: int) -> ThreadPoolExecutor:
    """Worker threads for the native kernel (a new pool in a forked child: the parent's threads are not there)."""
    global _pool, _pool_key
    with _lib_lock:
        if _pool is None or _pool_key != (workers, os.getpid()):
            if _pool is not None and _pool_key[1] == os.getpid():
                _pool.shutdown(wait=False)
            _pool, _pool_key = ThreadPoolExecutor(workers, thread_name_prefix="dnndist-stats"), (workers, os.getpid())
        return _pool


# --------------------------------------------------------------------------- binning
def ceil32(v: np.ndarray | float) -> np.ndarray:
    """The smallest float32 not below each float64 value (so ``x >= v`` iff ``x >= ceil32(v)`` for float32 x)."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(over="ignore"):
        f = v.astype(np.float32)
    return np.where(f.astype(np.float64) < v, np.nextafter(f, np.float32(np.inf)), f).astype(np.float32)


def floor32(v: np.ndarray | float) -> np.ndarray:
    """The largest float32 not above each float64 value (so ``x <= v`` iff ``x <= floor32(v)``)."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(over="ignore"):
        f = v.astype(np.float32)
    return np.where(f.astype(np.float64) > v, np.nextafter(f, np.float32(-np.inf)), f).astype(np.float32)


@dataclass(frozen=True)
class Binning:
    """Equal bins from ``lo`` to ``hi`` (float64) and what the kernels need to bin float32 values exactly.

    A value's bin is first estimated from its position ``t = (v - lo) * bins / (hi - lo)``,
    computed in float32 (``lo32``, ``scale32``) or float64; ``delta32`` and :meth:`delta64`
    bound twice the error of that estimate (rounding of the operations, and of the float64
    edges), in bins. Estimates within delta of an interior edge are replaced by comparisons
    with ``thr``.
    """

    lo: float
    hi: float
    bins: int
    edges: np.ndarray = field(init=False, repr=False, compare=False)
    thr: np.ndarray = field(init=False, repr=False, compare=False)  # ceil32 of the lower edges, then +inf
    hi32: np.float32 = field(init=False, repr=False, compare=False)  # floor32(hi): v <= hi iff v <= hi32
    scale64: float = field(init=False, repr=False, compare=False)  # bins / (hi - lo)
    lo32: np.float32 = field(init=False, repr=False, compare=False)  # nearest float32 of lo (the estimate only)
    scale32: np.float32 = field(init=False, repr=False, compare=False)  # nearest float32 of scale64
    delta32: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.hi > self.lo):
            raise ValueError(f"histogram range must be finite and increasing, got [{self.lo}, {self.hi}]")
        if not 1 <= self.bins < 2**30:
            raise ValueError(f"histogram bins must be in [1, 2^30), got {self.bins}")
        edges = np.linspace(self.lo, self.hi, self.bins + 1)  # what np.histogram(v, bins=edges) compares with
        width = self.hi - self.lo

        def put(k: str, v: object) -> None:  # frozen dataclass
            object.__setattr__(self, k, v)

        put("edges", edges)
        put("thr", np.append(ceil32(edges[:-1]), np.float32(np.inf)).astype(np.float32))
        put("hi32", np.float32(floor32(edges[-1])))
        put("scale64", self.bins / width)
        with np.errstate(over="ignore"):
            put("lo32", np.float32(self.lo))
            put("scale32", np.float32(self.scale64))
        # float32: fl(fl(v - lo32) * scale32) is within 2^-24 * bins * (3 + |lo| / width) of the exact
        # position (plus the edges' float64 rounding); where v - lo32 could overflow, no estimate
        delta = 2.0 * 2.0**-24 * self.bins * (4.0 + 2.0 * (abs(self.lo) + abs(self.hi)) / width)
        if not (abs(self.lo) + abs(self.hi) < 1e38 and math.isfinite(self.scale32) and self.scale32 > 0):
            delta = math.inf
        put("delta32", float(delta))

    def delta64(self, shift: float) -> float:
        """The float64 estimate ``fl(fl(fl(v - shift) + fl(shift - lo)) * scale64)`` is within
        2^-53 * bins * (7 + 7 (|lo| + |hi| + |shift|) / width) of the exact position, the edges' rounding included."""
        return 2.0**-49 * self.bins * (1.0 + (abs(self.lo) + abs(self.hi) + abs(shift)) / (self.hi - self.lo))

    @classmethod
    def from_range(cls, lo0: float, hi0: float, bins: int) -> Binning:
        """The range of a map's first batch (min, max), widened by 10 % (by 10 % of |lo0|, at least
        1e-6, when the batch is constant)."""
        pad = 0.1 * (hi0 - lo0) if hi0 > lo0 else max(abs(lo0) * 0.1, 1e-6)
        return cls(lo0 - pad, hi0 + pad, bins)


# --------------------------------------------------------------------------- one batch
@dataclass
class BatchSums:
    """One batch of finite values: count, power sums ``s[p - 1] = sum (x - shift)^p`` (p = 1..4),
    min and max; bin counts, underflow and overflow where a binning was given; and the number
    of non-finite values that were left out."""

    n: int
    shift: float
    s: np.ndarray
    min: float
    max: float
    nonfinite: int = 0
    counts: np.ndarray | None = None
    under: int = 0
    over: int = 0


def flat_values(x: torch.Tensor) -> torch.Tensor:
    """All values of ``x`` as one dense vector, without a copy where the memory is dense
    (channels_last included: the statistics do not depend on the order of the values)."""
    if x.is_contiguous():
        return x.reshape(-1)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(-1)
    return x.reshape(-1)


def batch_sums(
    x: torch.Tensor, shift: float, binning: Binning | None = None, backend: str = "auto", threads: int | None = None
) -> BatchSums:
    """Power sums around ``shift``, min, max and (if ``binning``) the histogram of the finite values of ``x``.

    ``backend``: "native" (the C kernel; CPU), "torch", or "auto" (native for CPU tensors where
    it is available). ``threads``: native threads (default ``torch.get_num_threads()``).
    """
    x = flat_values(x.detach())
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    lib = (
        native_library()
        if backend in ("auto", "native") and x.device.type == "cpu" and x.dtype == torch.float32
        else None
    )
    if backend == "native" and lib is None:
        raise RuntimeError("the native streaming kernel is not available (CPU float32 tensors, a C compiler)")
    compute = (lambda v, s, b: _native(lib, v, s, b, threads)) if lib is not None else _torch
    out = compute(x, shift, binning)
    if not all(math.isfinite(float(v)) for v in out.s):  # non-finite values (or float32 overflow in the torch kernel)
        keep = torch.isfinite(x)
        nonfinite = int(x.numel() - int(keep.sum()))
        if nonfinite:
            x = x[keep]
            out = compute(x, shift, binning)
        if not all(math.isfinite(float(v)) for v in out.s):  # finite, but beyond float32 powers: float64
            out = _torch(x.double(), shift, binning)
        out.nonfinite = nonfinite
    if out.n:
        mu, var = out.s[0] / out.n, out.s[1] / out.n - (out.s[0] / out.n) ** 2
        drift = DRIFT32 if lib is None and x.dtype == torch.float32 else DRIFT64
        if mu * mu > drift * max(var, 0.0):  # far from the shift: recompute around this batch's mean (moments only)
            again = compute(x, shift + mu, None)
            if all(math.isfinite(float(v)) for v in again.s):
                out.shift, out.s = again.shift, again.s
    return out


def _native(lib: ctypes.CDLL, x: torch.Tensor, shift: float, binning: Binning | None, threads: int | None) -> BatchSums:
    """The C kernel over fixed chunks of CHUNK values, in blocks of chunks that the calling thread
    and the pool's threads take in turn (a thread slowed by other work on the machine takes
    fewer). Per-chunk partial sums, exact min/max and integer counts: the result does not depend
    on which thread did what."""
    x = x.contiguous()
    n = x.numel()
    chunks = -(-n // CHUNK)
    part = np.zeros((max(chunks, 1), 4))
    bins = binning.bins if binning is not None else 0
    thr = binning.thr if binning is not None else np.zeros(1, np.float32)
    args: tuple[float, ...] = (0.0, 0.0, 1.0, 0.0, 0)
    if binning is not None:  # the float32 estimate unless more than a few % of the values would need the exact path
        precise = binning.delta32 > PRECISE
        delta = binning.delta64(shift) if precise else binning.delta32
        args = (float(binning.hi32), binning.lo, binning.scale64, delta, int(precise))
    workers = max(1, min(threads or torch.get_num_threads(), chunks)) if n >= MIN_PARALLEL else 1
    per_block = max(1, -(-chunks // (BLOCKS_PER_THREAD * workers)))
    blocks = [(c, min(c + per_block, chunks)) for c in range(0, chunks, per_block)]
    taken = itertools.count()  # next(): atomic under the GIL

    def run() -> tuple[np.ndarray, np.ndarray]:
        mnmx = np.array([np.inf, -np.inf], dtype=np.float32)
        counts = np.zeros(bins + 2, dtype=np.int64)
        while (i := next(taken)) < len(blocks):
            c0, c1 = blocks[i]
            if lib.dnndist_stats(
                x.data_ptr(),
                n,
                CHUNK,
                c0,
                c1,
                float(shift),
                part[c0:].ctypes.data,
                mnmx.ctypes.data,
                bins,
                thr.ctypes.data,
                *args,
                counts.ctypes.data,
            ):
                raise MemoryError("streaming statistics kernel: out of memory")
        return mnmx, counts

    if workers == 1:
        results = [run()]
    else:
        futures = [_executor(workers - 1).submit(run) for _ in range(1, workers)]
        results = [run()] + [f.result() for f in futures]
    s = part.sum(axis=0)  # chunk order: the same whatever the threads
    counts = np.sum([c for _, c in results], axis=0)
    out = BatchSums(n, float(shift), s, float(min(r[0][0] for r in results)), float(max(r[0][1] for r in results)))
    if binning is not None:
        out.counts, out.under, out.over = counts[:bins], int(counts[bins]), int(counts[bins + 1])
    return out


def _torch(x: torch.Tensor, shift: float, binning: Binning | None) -> BatchSums:
    """Device-agnostic: power sums in float32 over rows of ROW values, added in float64 (float64
    throughout for float64 input). The float32 differences are scaled by a power of two to at
    most 1 in magnitude, so their powers neither overflow nor underflow (tiny activations)."""
    n = x.numel()
    if n == 0:
        out = BatchSums(0, float(shift), np.zeros(4), math.inf, -math.inf)
        if binning is not None:
            out.counts = np.zeros(binning.bins, dtype=np.int64)
        return out
    lo, hi = (float(v) for v in torch.aminmax(x))
    if x.dtype == torch.float64:
        used, scale = float(shift), 1.0
        y = x - used
    else:
        used = float(np.float32(shift))  # the shift the float32 differences are taken from
        span = max(abs(lo - used), abs(hi - used))
        scale = 2.0 ** min(max(-math.frexp(span)[1], -126), 126) if 0 < span < math.inf else 1.0
        y = (x - used).mul_(scale)  # exact but for rounding in the difference
    y2 = y * y
    rows = n // ROW * ROW

    def total(v: torch.Tensor) -> torch.Tensor:
        head = v[:rows].view(-1, ROW).sum(1).double().sum() if rows else v.new_zeros((), dtype=torch.float64)
        return head + v[rows:].double().sum()

    sums = torch.stack([total(y), total(y2), total(y2 * y), total(y2 * y2)]).cpu().numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        s = sums / scale ** np.arange(1, 5)
    out = BatchSums(n, used, s, lo, hi)
    if binning is not None and all(math.isfinite(float(v)) for v in s):
        out.counts, out.under, out.over = torch_histogram(x, binning)
    return out


def torch_histogram(x: torch.Tensor, binning: Binning) -> tuple[np.ndarray, int, int]:
    """Exact bin counts (as np.histogram with ``binning.edges``), underflow and overflow of finite ``x``."""
    b = binning.bins
    if x.dtype == torch.float64:  # compared with the float64 edges themselves
        edges = torch.from_numpy(binning.edges).to(x.device)
        k = torch.bucketize(x, edges[1:b], right=True)
        slot = torch.where(x < edges[0], b, torch.where(x > edges[-1], b + 1, k))
    else:
        x = x.float()
        thr = torch.from_numpy(binning.thr).to(x.device)
        if binning.delta32 < 0.25:  # the float32 estimate is off by at most one bin: one exact correction step
            k = ((x - float(binning.lo32)) * float(binning.scale32)).clamp_(0, b - 1).to(torch.int64)
            k.sub_((x < thr.take(k)).to(torch.int64)).clamp_(min=0)
            k.add_((x >= thr.take(k + 1)).to(torch.int64)).clamp_(max=b - 1)
        else:
            k = torch.bucketize(x, thr[1:b], right=True)
        slot = torch.where(x < thr[0], b, torch.where(x > float(binning.hi32), b + 1, k))
    counts = torch.bincount(slot, minlength=b + 2).cpu().numpy().astype(np.int64)
    return counts[:b], int(counts[b]), int(counts[b + 1])


# --------------------------------------------------------------------------- running statistics
class FeatureStats:
    """Running count, mean, central moment sums m2..m4, min, max and fixed-bin histogram of the
    values of one feature map over batches (float64 state on the host).

    The first batch fixes the shift of the power sums (its mean) and the histogram range (its
    range widened by 10 %, see :meth:`Binning.from_range`).
    """

    def __init__(self, bins: int, backend: str = "auto", threads: int | None = None):
        self.bins, self.backend, self.threads = bins, backend, threads
        self.n = 0
        self.mean = self.m2 = self.m3 = self.m4 = 0.0
        self.min, self.max = math.inf, -math.inf
        self.nonfinite = 0
        self.shift: float | None = None
        self.binning: Binning | None = None
        self.counts = np.zeros(bins, dtype=np.int64)
        self.under = self.over = 0

    @property
    def lo(self) -> float | None:
        return self.binning.lo if self.binning else None

    @property
    def hi(self) -> float | None:
        return self.binning.hi if self.binning else None

    def update(self, x: torch.Tensor) -> None:
        if self.binning is None:  # first batch: its mean and range
            first = batch_sums(x, 0.0, None, self.backend, self.threads)
            self.shift = first.shift + first.s[0] / first.n if first.n else 0.0
            lo0, hi0 = (first.min, first.max) if first.n else (0.0, 1.0)
            self.binning = Binning.from_range(lo0, hi0, self.bins)
        b = batch_sums(x, self.shift, self.binning, self.backend, self.threads)
        self.nonfinite += b.nonfinite
        if b.counts is not None:
            self.counts += b.counts
            self.under += b.under
            self.over += b.over
        if b.n:
            self._merge(b)

    def _merge(self, b: BatchSums) -> None:
        nb = float(b.n)
        s1, s2, s3, s4 = (float(v) for v in b.s)
        mu = s1 / nb  # central moment sums of the batch from its shifted power sums
        m2b = s2 - nb * mu**2
        m3b = s3 - 3 * mu * s2 + 2 * nb * mu**3
        m4b = s4 - 4 * mu * s3 + 6 * mu**2 * s2 - 3 * nb * mu**4
        mb = mu + b.shift
        na = float(self.n)
        n = na + nb
        delta = mb - self.mean
        self.m4 = (
            self.m4
            + m4b
            + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
            + 6 * delta**2 * (na * na * m2b + nb * nb * self.m2) / n**2
            + 4 * delta * (na * m3b - nb * self.m3) / n
        )
        self.m3 = self.m3 + m3b + delta**3 * na * nb * (na - nb) / n**2 + 3 * delta * (na * m2b - nb * self.m2) / n
        self.m2 = self.m2 + m2b + delta**2 * na * nb / n
        self.mean = self.mean + delta * nb / n
        self.n += b.n
        self.min = min(self.min, b.min)
        self.max = max(self.max, b.max)

    def values(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in ("n", "mean", "m2", "m3", "m4", "min", "max", "nonfinite")}
