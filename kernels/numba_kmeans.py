"""numba CPU kernels for Lloyd's K-means: certified bf16 assignment and deterministic update.

Assignment (:func:`kmeans_assign_numba`) scores one block of rows at a time with a oneDNN
matmul (``torch.mm``) and reduces each row of the block with a parallel numba scan, so the
``(n, n_clusters)`` score matrix never exists at once. With ``candidates="bfloat16"`` the
matmul runs on bf16 copies of the rows and centroids (about 2.5x the fp32 rate on a CPU with
AVX512-BF16, more with AMX) and every row carries a rigorous error bound: a row whose
approximate winner beats every other centroid by more than the bound is *certified* to have
the label the exact path gives; the other rows are recomputed by the exact path. The labels
therefore do not depend on ``candidates``; only the time does.

Update (:func:`kmeans_update_numba`) splits the rows into a fixed number of parts (from the
shapes, never from the thread count); each part adds its rows in row order into its own float64
block in parallel, and the blocks are then added in part order: the result does not depend on
the number of threads or their scheduling.

This module imports numba at import time; :mod:`interestflow.kernels` imports it only when
the numba backend runs.

The certificate
---------------
Notation: ``u = 2**-8`` (bf16 unit roundoff, round to nearest even), ``v = 2**-24`` (fp32),
``gamma_m(w) = m w / (1 - m w)``, ``d = dim``, ``tau = 2**-126`` (smallest normal fp32/bf16).
Per row ``x`` and centroid ``c``:

- ``x~ = bf16(x)`` is rounded here (to nearest even, through fp32 for float64 input), with
  bf16 subnormals flushed to zero so that ``x~`` is exactly what oneDNN reads (its bf16 dot
  instructions may treat subnormals as zero); the same for the centroids. The residual
  ``x_r = x - x~`` is kept through its norm; the norms are summed in ``x``'s dtype and
  turned into upper bounds (times ``1 / (1 - gamma_{2d+2})``, plus an underflow floor).
  The identity ``x.c = x~.c~ + x~.c_r + x_r.c`` and Cauchy-Schwarz give
  ``|x.c - x~.c~| <= ||x~|| ||c_r|| + ||x_r|| ||c||``: rigorous, and about half of the
  textbook ``2 u ||x|| ||c||`` because actual residuals are used.
- oneDNN multiplies bf16 pairs exactly in fp32 and accumulates in fp32 in an order we do not
  know: for any order the error is at most ``gamma_d(v) sum |p_i| <= gamma_d(v) ||x~|| ||c~||``,
  plus ``tau`` per product or addition that underflows (flush-to-zero).
- torch returns a bf16 matmul's result in bf16 (it has no fp32-output bf16 matmul on the CPU):
  ``|out - pre| <= u |pre| <= u / (1 - u) |out|`` (+ ``tau``).
  (``tests/test_numba_kmeans.py`` checks this error model against the installed oneDNN.)

So ``E = ||x~|| ||c_r|| + ||x_r|| ||c|| + gamma_d(v) ||x~|| ||c~|| + u/(1-u) |out| +
(2d + 1) tau`` bounds ``|out - x.c|``, and the bf16 score ``s~_j = ||c_j||^2 - 2 out_j`` is
within ``B_j = 2 E(x, c_j) + 2**-53 (||c_j||^2 + 2 |out_j|)`` of ``r_j = ||c_j||^2 - 2 x.c_j``
in exact arithmetic, where ``||c_j||^2`` is one float64 number shared by both paths (its own
rounding cancels out of every comparison). The exact path's score
``f_j = ||c_j||^2 - 2 fl(x.c_j)``, from an fp32 (float64 for float64 input) matmul summed in
any order, is within

    F_j = 2 gamma_d(v') ||x|| ||c_j|| + 4 d tau + 2**-53 (||c_j||^2 + 2.01 ||x|| ||c_j||)

of ``r_j`` (``v' = 2**-24``, or ``2**-53`` for float64). Let ``M_j = (B_j + F_j + A_j)
(1 + 2**-16)``. The level-1 scan runs in float32 (twice the SIMD width): ``A_j`` covers
rounding ``||c_j||^2`` to float32 and the float32 rounding of ``s~_j``, ``s~_j - M_j`` and
``s~_b + M_b``, at most ``2**-22 (||c_j||^2 + 2 |out_j|)`` per side (``2**-21`` is used); the
slack covers the float32 rounding of ``M`` itself and the float64 rounding of the norms.

**Level 1.** With ``b`` the lowest ``s~`` (ties to the lower index), the row is certified when
``s~_j - M_j > s~_b + M_b`` for every ``j != b``. Then
``f_j >= r_j - F_j >= s~_j - M_j > s~_b + M_b >= r_b + F_b >= f_b``: the exact path's score
of ``b`` is strictly the lowest, so the exact path picks ``b`` too, whatever order its BLAS
summed in. For centred unit-norm embeddings ``M_j`` is about ``0.005``, so rows closer than
that to a Voronoi boundary (a quarter of them on sentence-embedding-like data) go on to:

**Level 2.** The candidates ``C = {j : s~_j - M_j <= s~_b + M_b}`` (at most
``_MAX_CANDIDATES``) are rescored by direct float64 distances ``D_j = ||x - c_j||^2``, which
differ from ``r_j + ||x||^2`` by at most ``gamma_{d+6}(2**-53) D_j + gamma_d(2**-53)
||c_j||^2`` (the second term: ``||c_j||^2`` here is itself a float64 sum). With ``G_j`` that
plus ``F_j`` (times the slack), the row is certified with label ``w = argmin_C D`` when
``D_j - G_j > D_w + G_w`` for every other ``j`` in ``C``: then ``f_j > f_w`` for ``j`` in
``C``, and ``f_j > f_b >= f_w`` for ``j`` outside ``C`` by level 1's inequality.

Rows that pass neither level (exact or fp32-level ties, more than ``_MAX_CANDIDATES``
overlapping centroids, NaN/inf, overflow) are recomputed on the exact path.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import torch

from interestflow._utils import check_int
from interestflow.kernels._common import (
    CANDIDATE_OPTIONS,
    EPS32,
    EPS64,
    TAU,
    U_BF16,
    KernelWorkers,
    check_candidates,
    gamma,
)
from interestflow.kernels.reference import chunk_rows_for

__all__ = ["kmeans_assign_numba", "kmeans_update_numba", "assign_with_stats",
           "prepare_bf16_rows", "BF16Rows", "CANDIDATE_OPTIONS", "AUTO_BF16_MIN_WORK"]

#: ``candidates="auto"`` uses bf16 only from this many multiply-adds per call
#: (n * n_clusters * dim), with n_clusters >= 64, dim >= 64 and n_clusters * dim >= 16384.
#: Below that the bf16 rounding of the rows and the certificate scan cost as much as the
#: faster matmul saves. Measured on the 2-core Zen 4 dev machine (AVX512-BF16, no AMX; busy,
#: so indicative): bf16 over exact was 1.35-1.55x at (n, K, dim) = (2048..200000, 256, 384),
#: (50000, 128, 128), (50000, 256, 64), (50000, 64, 384), and 0.94-1.03x at (50000, 32, 384),
#: (50000, 16, 384), (50000, 64, 64).
AUTO_BF16_MIN_WORK = 1 << 27
_AUTO_BF16_MIN_CLUSTERS = 64
_AUTO_BF16_MIN_DIM = 64
_AUTO_BF16_MIN_CLUSTERS_X_DIM = 1 << 14
#: "auto" gives up on bf16 for the rest of a call when more than this fraction of the rows
#: seen so far passed neither level of the certificate (each such row costs a full exact row
#: on top of its bf16 row: at ~0.4 the bf16 pass no longer saves time). The switch depends
#: only on the data, so results stay deterministic; labels are the same either way.
_AUTO_MAX_FAIL_FRACTION = 0.4
_AUTO_MIN_ROWS_BEFORE_SWITCH = 4096

#: Budget of one task's block of scores (rows x n_clusters) and of rows (rows x dim): each
#: worker thread rounds its rows to bf16, multiplies and scans them while they are still in
#: its cache (1365 rows at K=256, dim=384). At 200,000 x 384, K=256 on the busy 2-core Zen 4
#: (1 MiB L2 per core, 32 MiB L3) 0.5 to 4 MiB were within the noise of one another and 8 MiB
#: slower.
TASK_BLOCK_BYTES = 2 * 2**20
#: Tasks per group: "auto" decides whether to stay on bf16 between groups of this fixed size.
_TASKS_PER_GROUP = 16

#: A row whose bf16 interval overlaps more than this many centroids goes straight to the exact
#: path (rescoring the overlapping centroids one by one would cost more than its matmul row).
_MAX_CANDIDATES = 16

#: kmeans_update: number of row parts (fixed, independent of the thread count) and the
#: memory budget of their float64 partial sums.
_UPDATE_PARTS = 8
_UPDATE_BUDGET_BYTES = 128 * 2**20

#: bf16 is refused above this dim: gamma_d needs d * 2**-24 well below 1.
_MAX_BF16_DIM = 1 << 20

_SLACK = 1.0 + 2.0 ** -16


# --------------------------------------------------------------------------- numba kernels

#: fastmath flags that keep NaN/inf semantics (isfinite checks stay valid) but let LLVM
#: vectorise the float64 sums. The summation order is then fixed by the compiled code, not by
#: threads, so results stay deterministic.
_FM = {"reassoc", "contract"}

_MASK63 = np.int64(0x7FFFFFFFFFFFFFFF)



@nb.njit(fastmath=_FM, cache=True)
def _sqdist(x, row, c, j):
    """||x[row] - c[j]||^2 summed in float64."""
    acc = 0.0
    for q in range(x.shape[1]):
        diff = np.float64(x[row, q]) - np.float64(c[j, q])
        acc += diff * diff
    return acc


@nb.njit(fastmath=_FM, cache=True)
def _argmin_lowest(si, k):
    """Index of the smallest of ``k`` float64 values given as their int64 bits ``si``.

    Lowest index among equal values. Two vectorised integer passes (a float min reduction
    does not vectorise here): the bits are mapped to integers of the same order (flip the
    magnitude bits of negatives), then the first index holding the minimum key is found.
    NaN sorts beyond +-inf; callers check finiteness separately.
    """
    kmin = _MASK63
    for j in range(k):
        v = si[j]
        key = v ^ ((v >> 63) & _MASK63)
        kmin = key if key < kmin else kmin
    best = k
    for j in range(k):
        v = si[j]
        key = v ^ ((v >> 63) & _MASK63)
        c = j if key == kmin else k
        best = c if c < best else best
    return best


@nb.njit(nogil=True, fastmath=_FM, cache=True)
def _scan_exact(dots, x, rows, c, c_sq, labels, min_sq, bad):
    """Exact path: label of ``x[rows[i]]`` from ``dots[i] = x[rows[i]] @ c.T`` + its distance.

    Scores ``c_sq[j] - 2 dots[i, j]`` in float64; ties keep the lower index. ``bad[i]`` is
    set when the row's scores or distance are not finite.
    """
    m, k = dots.shape
    s = np.empty(k, np.float64)
    si = s.view(np.int64)
    for i in range(m):
        row = rows[i]
        n_bad = 0
        for j in range(k):
            sj = c_sq[j] - 2.0 * np.float64(dots[i, j])
            s[j] = sj
            n_bad += not (abs(sj) < np.inf)
        best = _argmin_lowest(si, k)
        acc = _sqdist(x, row, c, best)
        labels[row] = best
        min_sq[row] = acc
        bad[i] = n_bad > 0 or not np.isfinite(acc)


@nb.njit(nogil=True, fastmath=_FM, cache=True)
def _bf16_rows(x, lo, hi, bits, sq_x, sq_t, sq_r):
    """Round rows ``x[lo:hi]`` to bf16 and measure what the rounding did.

    ``bits[i]`` gets the bf16 bits of row ``lo + i`` (round to nearest even, through fp32 for
    float64 input; subnormal results flushed to signed zero, so that the values oneDNN reads
    are exactly these). ``sq_x``, ``sq_t``, ``sq_r`` get ``||x||^2``, ``||x~||^2`` and
    ``||x - x~||^2`` summed in ``x``'s dtype (turned into upper bounds by the scan). A NaN/inf
    row gives non-finite sums.
    """
    d = x.shape[1]
    f32 = np.empty(d, np.float32)
    b32 = f32.view(np.uint32)
    t32 = np.empty(d, np.uint32)
    tf = t32.view(np.float32)
    for i in range(hi - lo):
        row = lo + i
        for q in range(d):
            f32[q] = np.float32(x[row, q])
        for q in range(d):
            b = b32[q]
            r = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
            r = r & np.uint32(0x8000) if (r & np.uint32(0x7F80)) == 0 else r
            bits[i, q] = np.uint16(r)
            t32[q] = r << np.uint32(16)
        s0 = x[row, 0] - x[row, 0]  # a zero of x's dtype (NaN for a non-finite row)
        s1 = s0
        s2 = s0
        for q in range(d):
            xv = x[row, q]
            tv = tf[q]
            rv = xv - tv  # exact for float32 input
            s0 += xv * xv
            s1 += tv * tv
            s2 += rv * rv
        sq_x[i] = s0
        sq_t[i] = s1
        sq_r[i] = s2


@nb.njit(nogil=True, fastmath=_FM, cache=True, inline="always")
def _widen_scores(sc_bits, i, ubs):
    """Widen row ``i`` of the bf16 score bits into the float32 bits ``ubs``; False when a
    score is inf/NaN (bf16 exponent all ones: overflow)."""
    n_nonfinite = 0
    for j in range(sc_bits.shape[1]):
        bb = np.uint32(np.uint16(sc_bits[i, j]))
        n_nonfinite += (bb & np.uint32(0x7F80)) == np.uint32(0x7F80)
        ubs[j] = bb << np.uint32(16)
    return n_nonfinite == 0


@nb.njit(nogil=True, fastmath=_FM, cache=True)
def _level2(x, row, c, t, thr_t, cand_j, cand_d, col_p, col_f, coef_xn, xn, gamma_hi, slack):
    """Level 2: rescore the candidates (``t[j] <= thr_t``) by float64 distances; returns
    ``(w, D_w)``, ``w = -1`` when the nearest is not certified against every other."""
    nc = 0
    w = -1
    dw = np.inf
    for j in range(t.shape[0]):
        if t[j] <= thr_t:
            dj = _sqdist(x, row, c, j)
            cand_j[nc] = j
            cand_d[nc] = dj
            nc += 1
            if dj < dw:  # ascending j, strict: ties keep the lower index
                dw = dj
                w = j
    if w < 0 or not np.isfinite(dw):
        return -1, dw
    gw = slack * (coef_xn * xn * col_p[w] + col_f[w] + gamma_hi * dw)
    ok = True
    for q in range(nc):
        j = cand_j[q]
        if j != w:
            gj = slack * (coef_xn * xn * col_p[j] + col_f[j] + gamma_hi * cand_d[q])
            if not (cand_d[q] - gj > dw + gw):
                ok = False
    return (w if ok else -1), dw


@nb.njit(nogil=True, fastmath=_FM, cache=True)
def _scan_bf16(sc_bits, x, lo, c, c_sq32, p32, q32, r32, sq_x, sq_t, sq_r, inflate, floor,
               beta32, col_p, col_f, coef_xn, gamma_hi, max_cand, labels, min_sq, status):
    """Certify the bf16 scores of rows ``lo + i``; see the module docstring.

    ``sc_bits`` (m, K): the bf16 scores as int16 bits; ``sq_*`` the sums of
    :func:`_bf16_rows`, made upper bounds here (``* inflate + floor``). Level 1 runs in float32
    (its rounding is part of the bound: ``p32``, ``q32``, ``r32``, ``beta32`` include the
    float32 allowances, ``r32`` and ``beta32`` the slack). Level 2 (at most ``max_cand``
    overlapping candidates) rescores in float64 against the exact path's bound ``G``.
    ``status[i]``: 0 certified at level 1, 1 at level 2, 2 not certified (the caller
    recomputes the row on the exact path).
    """
    # the row's bounds and level 1 stay in this loop: as helpers (inlined by numba or by
    # LLVM) the kernel measured 1-13% slower
    m, k = sc_bits.shape
    slack = 1.0 + 2.0 ** -16
    ubs = np.empty(k, np.uint32)
    fbs = ubs.view(np.float32)
    s = np.empty(k, np.float32)
    si = s.view(np.int32)
    t = np.empty(k, np.float32)
    cand_j = np.empty(max_cand, np.int64)
    cand_d = np.empty(max_cand, np.float64)
    for i in range(m):
        row = lo + i
        status[i] = 2
        xn = math.sqrt(np.float64(sq_x[i]) * inflate + floor)
        a64 = slack * (2.0 * math.sqrt(np.float64(sq_r[i]) * inflate + floor) + coef_xn * xn)
        bq64 = slack * 2.0 * math.sqrt(np.float64(sq_t[i]) * inflate + floor)
        if not (np.isfinite(a64) and np.isfinite(bq64) and a64 < 1e30 and bq64 < 1e30):
            continue
        if not _widen_scores(sc_bits, i, ubs):  # a score is inf/NaN
            continue
        a = np.float32(a64)
        bq = np.float32(bq64)
        for j in range(k):
            o = fbs[j]
            sj = c_sq32[j] - np.float32(2.0) * o
            s[j] = sj
            t[j] = sj - (a * p32[j] + bq * q32[j] + beta32 * abs(o) + r32[j])
        # lowest score, lowest index among equal scores: one integer min over keys that
        # order like the floats, with the index in the low 32 bits
        kmin = np.int64(0x7FFFFFFFFFFFFFFF)
        for j in range(k):
            v = si[j]
            key = (np.int64(v ^ ((v >> 31) & np.int32(0x7FFFFFFF))) << 32) | j
            kmin = key if key < kmin else kmin
        best = kmin & np.int64(0xFFFFFFFF)
        ob = fbs[best]
        thr = s[best] + (a * p32[best] + bq * q32[best] + beta32 * abs(ob) + r32[best])
        if not np.isfinite(thr):
            continue
        n_over = 0
        for j in range(k):
            n_over += t[j] <= thr
        if n_over == 1:
            labels[row] = best
            min_sq[row] = _sqdist(x, row, c, best)
            status[i] = 0
        elif n_over <= max_cand:
            w, dw = _level2(x, row, c, t, thr, cand_j, cand_d, col_p, col_f, coef_xn, xn,
                            gamma_hi, slack)
            if w >= 0:
                labels[row] = w
                min_sq[row] = dw
                status[i] = 1


@nb.njit(nogil=True, fastmath=_FM, cache=True)
def _partial_sums(x, labels, w, weighted, lo, hi, acc, cnt):
    """Add rows ``lo:hi`` (times their weights) in row order into ``acc`` / ``cnt`` (float64).

    Returns the first row whose label is out of range, else -1.
    """
    n_clusters, d = acc.shape
    for i in range(lo, hi):
        lab = labels[i]
        if lab < 0 or lab >= n_clusters:
            return i
        if weighted:
            wi = w[i]
            for j in range(d):
                acc[lab, j] += wi * np.float64(x[i, j])
            cnt[lab] += wi
        else:
            for j in range(d):
                acc[lab, j] += np.float64(x[i, j])
            cnt[lab] += 1.0
    return -1


@nb.njit(nogil=True, cache=True)
def _reduce_parts(parts, part_counts, lo, hi, sums, counts):
    """sums[k] = parts[0, k] + parts[1, k] + ... in that order, for clusters lo:hi."""
    n_parts, _, d = parts.shape
    for k in range(lo, hi):
        for j in range(d):
            acc = 0.0
            for p in range(n_parts):
                acc += parts[p, k, j]
            sums[k, j] = acc
        cnt = 0.0
        for p in range(n_parts):
            cnt += part_counts[p, k]
        counts[k] = cnt


# --------------------------------------------------------------------------- validation


def _check_cpu_float_matrix(name: str, t) -> None:
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64 for the numba backend, got "
                        f"{t.dtype}; convert it first (e.g. {name}.float())")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device} but the numba kernels run on the CPU; "
                         "pass a CPU tensor or use backend='triton'/'torch'")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _resolve_candidates(candidates, n: int, k: int, d: int) -> str:
    check_candidates(candidates)
    if candidates == "bfloat16" and d > _MAX_BF16_DIM:
        raise ValueError(f"candidates='bfloat16' supports dim <= {_MAX_BF16_DIM} (the error "
                         f"bound needs dim * 2**-24 << 1), got dim={d}; pass "
                         "candidates='float32'")
    if candidates != "auto":
        return candidates
    from interestflow.resolve import cpu_has_fast_bf16

    big = (float(n) * k * d >= AUTO_BF16_MIN_WORK and k >= _AUTO_BF16_MIN_CLUSTERS
           and _AUTO_BF16_MIN_DIM <= d <= _MAX_BF16_DIM
           and k * d >= _AUTO_BF16_MIN_CLUSTERS_X_DIM)
    return "bfloat16" if big and cpu_has_fast_bf16() else "float32"


class BF16Rows:
    """The rows of one ``x`` rounded to bf16, with the sums the certificate needs.

    Made by :func:`prepare_bf16_rows` and passed as ``rows=`` to every assignment of the same
    ``x`` (the iterations of a Lloyd loop), so that the rounding is done once instead of once
    per call (a quarter of a bf16 assignment's time at 200,000 x 384, K = 256). Holds
    ``2 * n * dim`` bytes of bf16 bits plus three norms per row. ``x`` must not change while
    it is in use: the assignment checks that it gets the same tensor (storage, shape, strides,
    dtype) with an unchanged version counter (torch bumps it on every in-place write; writes
    through a numpy array sharing the memory are not seen, so do not make them).
    """

    __slots__ = ("bits", "sq_x", "sq_t", "sq_r", "_key")

    def __init__(self, x: torch.Tensor, bits, sq_x, sq_t, sq_r):
        self.bits, self.sq_x, self.sq_t, self.sq_r = bits, sq_x, sq_t, sq_r
        self._key = _tensor_key(x)

    def check(self, x: torch.Tensor) -> None:
        if _tensor_key(x) != self._key:
            raise ValueError("rows= was prepared by prepare_bf16_rows for another x (or x was "
                             "modified in place since); prepare it again for this x")


def _tensor_key(x: torch.Tensor):
    return (x.data_ptr(), tuple(x.shape), tuple(x.stride()), x.dtype, x._version)


def prepare_bf16_rows(x: torch.Tensor, n_clusters: int, *, candidates: str = "auto"):
    """Round the rows of ``x`` to bf16 once for many assignments (see :class:`BF16Rows`).

    Parameters
    ----------
    x : torch.Tensor of shape (n, dim)
        CPU, float32 or float64, C-contiguous; must stay unchanged while the result is used.
    n_clusters : int
        The number of centroids the assignments will use: with ``candidates="auto"`` it
        decides, as in :func:`kmeans_assign_numba`, whether they run in bf16 at all.
    candidates : {"auto", "bfloat16", "float32"}, default="auto"

    Returns
    -------
    BF16Rows or None
        None when the assignments would not use bf16 (nothing to prepare).
    """
    _check_cpu_float_matrix("x", x)
    if not x.is_contiguous():
        raise ValueError("x must be C-contiguous to prepare its bf16 rows; pass x.contiguous()")
    n, d = x.shape
    if n == 0 or _resolve_candidates(candidates, n, int(n_clusters), d) != "bfloat16":
        return None
    np_dtype = np.float32 if x.dtype == torch.float32 else np.float64
    x_np = x.numpy()
    bits = np.empty((n, d), np.uint16)
    sq = [np.empty(n, np_dtype) for _ in range(3)]
    step = min(n, chunk_rows_for(d * 4, block_bytes=TASK_BLOCK_BYTES))
    with KernelWorkers() as workers:
        workers.map(lambda lo: _bf16_rows(x_np, lo, min(n, lo + step), bits[lo:lo + step],
                                          sq[0][lo:lo + step], sq[1][lo:lo + step],
                                          sq[2][lo:lo + step]), range(0, n, step))
    return BF16Rows(x, bits, *sq)


# --------------------------------------------------------------------------- public API


def kmeans_assign_numba(x: torch.Tensor, centroids: torch.Tensor, *, x_sq_norms=None,
                        candidates: str = "auto", rows=None):
    """Nearest centroid of every row of ``x`` and the exact squared distance to it.

    Rows are processed in blocks of at most ``TASK_BLOCK_BYTES`` of scores, one block per task
    on ``torch.get_num_threads()`` worker threads: a single-threaded ``torch.mm`` (oneDNN) and
    serial numba passes per block (see :class:`interestflow.kernels._common.KernelWorkers`
    for why not ``prange``). Ties go to the lower centroid index.

    Parameters
    ----------
    x : torch.Tensor of shape (n, dim)
        CPU, float32 or float64.
    centroids : torch.Tensor of shape (n_clusters, dim)
        CPU, same dtype as ``x``.
    x_sq_norms : torch.Tensor of shape (n,), optional
        ``(x * x).sum(1)``, accepted for the common assign signature of every backend (the
        Lloyd loop passes it). Checked for shape only and not used: the distance to the chosen
        centroid is computed directly, and the bf16 certificate computes its own norms while
        rounding the rows, so that a stale value could never invalidate it.
    candidates : {"auto", "bfloat16", "float32"}, default="auto"
        ``"float32"``: the exact path, scores from a matmul in ``x``'s dtype (float32 or
        float64). ``"bfloat16"``: scores from a bf16 matmul, each row certified by a rigorous
        error bound (module docstring) and recomputed on the exact path when the bound does
        not separate its winner; the labels equal the exact path's on any data.
        ``"auto"``: ``"bfloat16"`` when the CPU has native bf16
        (:func:`interestflow.resolve.cpu_has_fast_bf16`) and the problem is large enough for
        the faster matmul to pay for the rounding and the certificate (``n_clusters >= 64``,
        ``dim >= 64``, ``n_clusters * dim >= 16384``, ``n * n_clusters * dim >=
        AUTO_BF16_MIN_WORK``; measurements beside that constant); it also switches to the
        exact path for the rest of the call once over 40% of the rows have needed the exact
        path (data the bf16 pass cannot resolve).
    rows : BF16Rows, optional
        ``prepare_bf16_rows(x, n_clusters)``: the bf16 rounding of these same rows, made once
        for many calls (a Lloyd loop) instead of in every call. Results are identical either
        way.

    Returns
    -------
    labels : torch.Tensor of shape (n,), int64
    min_sq_dist : torch.Tensor of shape (n,)
        ``||x_i - c_{labels_i}||^2`` summed directly in float64, returned in ``x``'s dtype
        (hence never negative).

    Raises
    ------
    ValueError
        For bad shapes, a non-CPU tensor, an unknown ``candidates``, or a row whose distances
        are not finite (NaN/inf in ``x`` or ``centroids``, or overflow); the message names the row.
    TypeError
        For non-tensors or dtypes other than float32/float64, or mismatched dtypes.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0, 0.0], [0.9, 1.0], [5.0, 5.0]])
    >>> c = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    >>> kmeans_assign_numba(x, c)[0].tolist()
    [0, 0, 1]
    """
    labels, min_sq, _ = assign_with_stats(x, centroids, x_sq_norms=x_sq_norms,
                                          candidates=candidates, rows=rows)
    return labels, min_sq


def assign_with_stats(x: torch.Tensor, centroids: torch.Tensor, *, x_sq_norms=None,
                      candidates: str = "auto", rows=None):
    """:func:`kmeans_assign_numba` plus a dict saying how the rows were resolved.

    Returns
    -------
    labels, min_sq_dist : as :func:`kmeans_assign_numba`
    stats : dict
        ``mode`` (the path chosen for the first block: "bfloat16" or "float32"),
        ``rows_bf16`` (rows scored by the bf16 pass), ``rows_failed`` (of those, rows that
        failed the certificate and were recomputed exactly) and ``switched_to_exact``
        ("auto" gave up on bf16 part-way).
    """
    mode = _check_assign_inputs(x, centroids, x_sq_norms, candidates, rows)
    np_dtype = np.float32 if x.dtype == torch.float32 else np.float64
    stats = {"mode": mode, "rows_bf16": 0, "rows_rescored": 0, "rows_exact_fallback": 0,
             "switched_to_exact": False}
    if x.shape[0] == 0:
        return (torch.from_numpy(np.empty(0, np.int64)),
                torch.from_numpy(np.empty(0, np_dtype)), stats)
    with KernelWorkers() as workers:
        job = _Assignment(workers, x, centroids, rows)
        if mode == "bfloat16" and not job.start_bf16():
            # centroids beyond float32 range: the float32 scan cannot hold them
            mode = stats["mode"] = "float32"
        job.run(mode, candidates, stats)
    return (torch.from_numpy(job.labels),
            torch.from_numpy(job.min_sq.astype(np_dtype, copy=False)), stats)


def _check_assign_inputs(x, centroids, x_sq_norms, candidates, rows) -> str:
    """Check the arguments of :func:`assign_with_stats`; returns the resolved ``candidates``
    mode ("bfloat16" or "float32")."""
    _check_cpu_float_matrix("x", x)
    _check_cpu_float_matrix("centroids", centroids)
    if x.dtype != centroids.dtype:
        raise TypeError(f"x has dtype {x.dtype} but centroids has dtype {centroids.dtype}; "
                        "they must match")
    n, d = x.shape
    k = centroids.shape[0]
    if centroids.shape[1] != d:
        raise ValueError(f"x has dim {d} but centroids has dim {centroids.shape[1]}; they "
                         "must match")
    if k < 1:
        raise ValueError("centroids must have at least one row (n_clusters >= 1), got 0")
    if x_sq_norms is not None:
        if not torch.is_tensor(x_sq_norms) or tuple(x_sq_norms.shape) != (n,):
            shape = tuple(x_sq_norms.shape) if torch.is_tensor(x_sq_norms) else None
            raise ValueError(f"x_sq_norms must be a tensor of shape ({n},), got "
                             f"{type(x_sq_norms).__name__} of shape {shape}")
    mode = _resolve_candidates(candidates, n, k, d)
    if rows is not None:
        if not isinstance(rows, BF16Rows):
            raise TypeError(f"rows must be a BF16Rows from prepare_bf16_rows, got "
                            f"{type(rows).__name__}")
        rows.check(x)
    return mode


class _Assignment:
    """One :func:`assign_with_stats` call: its inputs as numpy, its outputs, and the two
    paths (exact and certified bf16) run as tasks of ``workers`` on blocks of rows.

    ``labels`` (int64) and ``min_sq`` (float64) are filled row by row; every task writes
    only its own rows.
    """

    def __init__(self, workers: KernelWorkers, x: torch.Tensor, centroids: torch.Tensor,
                 rows):
        self.workers, self.rows, self.dtype = workers, rows, x.dtype
        self.np_dtype = np.float32 if x.dtype == torch.float32 else np.float64
        self.n, self.d = x.shape
        self.k = centroids.shape[0]
        self.x_np = _np(x)
        self.c_np = _np(centroids)
        self.ct_exact = torch.from_numpy(self.c_np).T  # (d, K) view: BLAS transposes for free
        c64 = self.c_np.astype(np.float64)
        self.c_sq = np.einsum("ij,ij->i", c64, c64)
        bad_c = np.flatnonzero(~np.isfinite(self.c_sq))
        if bad_c.size:
            raise ValueError(f"centroids row {int(bad_c[0])} is not finite (NaN/inf, or its "
                             "squared norm overflows float64); centroids must be finite")
        self.labels = np.empty(self.n, np.int64)
        self.min_sq = np.empty(self.n, np.float64)
        # one task: a block of rows whose scores (rows, K) and rows (rows, dim) fit
        # TASK_BLOCK_BYTES
        self.task_rows = min(self.n, chunk_rows_for(max(self.k, self.d) * 4,
                                                    block_bytes=TASK_BLOCK_BYTES))
        self.prep = None

    def exact_task(self, idx: np.ndarray) -> int:
        """Exact path for the rows ``idx`` (ascending); returns a non-finite row or -1."""
        m = idx.shape[0]
        dots = self.workers.scratch("dots", (m, self.k), self.np_dtype)
        first = int(idx[0])
        x_np = self.x_np
        x_rows = x_np[first:first + m] if int(idx[-1]) - first + 1 == m else x_np[idx]
        torch.mm(torch.from_numpy(x_rows), self.ct_exact, out=torch.from_numpy(dots))
        bad = self.workers.scratch("bad", (m,), np.bool_)
        _scan_exact(dots, x_np, idx, self.c_np, self.c_sq, self.labels, self.min_sq, bad)
        return int(idx[np.argmax(bad)]) if bad.any() else -1

    def exact(self, idx: np.ndarray) -> None:
        """The exact path for the rows ``idx``, in tasks of ``task_rows``; raises naming the
        first row whose distances are not finite."""
        tr = self.task_rows
        tasks = [idx[s0:s0 + tr] for s0 in range(0, idx.shape[0], tr)]
        bad = [r for r in self.workers.map(self.exact_task, tasks) if r >= 0]
        if bad:
            raise ValueError(
                f"x row {min(bad)}: its squared distances to the centroids are not finite; x "
                f"must be finite and small enough for its distances not to overflow "
                f"{self.dtype}")

    def start_bf16(self) -> bool:
        """Prepare the bf16 path (centroids and the norms' bounds); False when the centroids
        do not fit its float32 scan."""
        self.prep = _bf16_centroids(self.c_np, self.c_sq, self.d, self.np_dtype)
        if self.prep is None:
            return False
        # upper bounds of the norms from their sums in x's dtype (any order, gradual underflow)
        f32 = self.np_dtype == np.float32
        self.inflate = 1.0 / (1.0 - gamma(2 * self.d + 2, EPS32 if f32 else EPS64))
        self.floor = 2.0 * self.d * (TAU if f32 else 2.0 ** -1000)
        return True

    def _bf16_inputs(self, lo: int, hi: int):
        """bf16 bits and the norms' sums ``(bits, sq_x, sq_t, sq_r)`` of rows ``lo:hi``:
        slices of ``rows`` when prepared, else rounded now into scratch buffers."""
        rows, m = self.rows, hi - lo
        if rows is not None:
            return rows.bits[lo:hi], rows.sq_x[lo:hi], rows.sq_t[lo:hi], rows.sq_r[lo:hi]
        scratch, d, np_dtype = self.workers.scratch, self.d, self.np_dtype
        bits = scratch("bits", (m, d), np.uint16)
        sq_x = scratch("sq_x", (m,), np_dtype)
        sq_t = scratch("sq_t", (m,), np_dtype)
        sq_r = scratch("sq_r", (m,), np_dtype)
        _bf16_rows(self.x_np, lo, hi, bits, sq_x, sq_t, sq_r)
        return bits, sq_x, sq_t, sq_r

    def bf16_task(self, lo: int):
        """bf16 path for rows ``lo:lo + task_rows``: ``(rows left uncertified, count of rows
        certified at level 2)``."""
        hi = min(self.n, lo + self.task_rows)
        m, prep = hi - lo, self.prep
        bits, sq_x, sq_t, sq_r = self._bf16_inputs(lo, hi)
        scores = self.workers.scratch("scores", (m, self.k), np.int16)
        torch.mm(torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16), prep["cb_t"],
                 out=torch.from_numpy(scores).view(torch.bfloat16))
        status = self.workers.scratch("status", (m,), np.uint8)
        _scan_bf16(scores, self.x_np, lo, self.c_np, prep["c_sq32"], prep["p32"], prep["q32"],
                   prep["r32"], sq_x, sq_t, sq_r, self.inflate, self.floor, prep["beta32"],
                   prep["p"], prep["f"], prep["coef_xn"], prep["gamma_hi"], _MAX_CANDIDATES,
                   self.labels, self.min_sq, status)
        return lo + np.flatnonzero(status == 2), int(np.count_nonzero(status == 1))

    def run(self, mode: str, candidates: str, stats: dict) -> None:
        """Every row, group by group (``_TASKS_PER_GROUP`` tasks), on ``mode``'s path; rows
        the bf16 path leaves uncertified go to the exact path at the end. With
        ``candidates="auto"`` the switch to exact is decided between groups of a fixed size,
        so it depends on the data only. Fills ``stats``."""
        n = self.n
        n_fallback = n_rescored = seen = 0
        redo_rows = []
        group = self.task_rows * _TASKS_PER_GROUP
        for start in range(0, n, group):
            stop = min(n, start + group)
            if (mode == "bfloat16" and candidates == "auto"
                    and seen >= _AUTO_MIN_ROWS_BEFORE_SWITCH
                    and n_fallback > _AUTO_MAX_FAIL_FRACTION * seen):
                mode = "float32"
                stats["switched_to_exact"] = True
            if mode != "bfloat16":
                self.exact(np.arange(start, stop, dtype=np.int64))
                continue
            for redo, rescored in self.workers.map(self.bf16_task,
                                                   range(start, stop, self.task_rows)):
                if redo.size:
                    redo_rows.append(redo)
                n_fallback += redo.size
                n_rescored += rescored
            seen += stop - start
        if redo_rows:
            self.exact(np.concatenate(redo_rows))
        if stats["mode"] == "bfloat16":
            stats.update(rows_bf16=seen, rows_exact_fallback=int(n_fallback),
                         rows_rescored=n_rescored)


def _bf16_centroids(c_np: np.ndarray, c_sq: np.ndarray, d: int, np_dtype):
    """bf16 centroids (subnormals flushed) and the per-column terms of the bounds.

    None when the centroids' squared norms do not fit the float32 level-1 scan.
    """
    if not bool((c_sq < 2.0 ** 100).all()):
        return None
    bits = torch.from_numpy(c_np).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    bits = bits.copy()
    sub = (bits & 0x7F80) == 0
    bits[sub] &= 0x8000  # flush subnormals ourselves: c~ is then what oneDNN reads
    c_t = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    c64 = c_np.astype(np.float64)
    p = np.sqrt(c_sq)
    q = (np.sqrt(np.einsum("ij,ij->i", c64 - c_t, c64 - c_t))
         + gamma(d, EPS32) * np.sqrt(np.einsum("ij,ij->i", c_t, c_t)))
    gamma_ex = gamma(d, EPS32 if np_dtype == np.float32 else EPS64)
    # underflow of both paths, float64 rounding of both scores and of a float64 comparison
    r = (8 * d + 2) * TAU + 4.0 * EPS64 * c_sq
    beta = 2.0 * U_BF16 / (1.0 - U_BF16) + 8.0 * EPS64
    # level 1 runs in float32: ||c||^2 rounded to float32, the rounding of s~ = ||c||^2 - 2 out,
    # of s~ - M and of s~ + M add at most 2**-22 (||c||^2 + 2 |out|) per side (2**-21 here);
    # the slack (>> 8 * 2**-24) covers the float32 rounding of M itself
    return {
        "cb_t": torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).T,
        "p": p,
        "c_sq32": c_sq.astype(np.float32),
        "p32": p.astype(np.float32),
        "q32": q.astype(np.float32),
        "r32": (_SLACK * (r + 2.0 ** -21 * c_sq)).astype(np.float32),
        "beta32": np.float32(_SLACK * (beta + 2.0 ** -20)),
        # exact path's bound (level 2), plus |c_sq - ||c||^2| from its float64 sum
        "f": 4 * d * TAU + (d + 4) * EPS64 * c_sq,
        "coef_xn": 2.0 * gamma_ex + 2.01 * EPS64,
        # float64 direct distances (d + 3 roundings) and the comparison's rounding
        "gamma_hi": gamma(d + 6, EPS64),
    }


def kmeans_update_numba(x: torch.Tensor, labels: torch.Tensor, n_clusters: int,
                        sample_weight=None):
    """Per-cluster (weighted) sums of rows and total weights, deterministically.

    The rows are split into at most 8 parts fixed by the shapes; worker threads (as in
    :func:`kmeans_assign_numba`) each add a part's rows (times their weights) in row order into
    the part's own float64 block, and the blocks are then added in part order. The result is
    bit-identical whatever the thread count or scheduling.

    Parameters
    ----------
    x : torch.Tensor of shape (n, dim)
        CPU, float32 or float64.
    labels : torch.Tensor of shape (n,), int64
        Values in ``[0, n_clusters)``.
    n_clusters : int
        At least 1.
    sample_weight : torch.Tensor of shape (n,), optional
        Finite, non-negative; ``None`` means all ones.

    Returns
    -------
    sums : torch.Tensor of shape (n_clusters, dim)
        ``sum_i w_i x_i`` per cluster, in ``x``'s dtype (0 for an empty cluster).
    counts : torch.Tensor of shape (n_clusters,)
        ``sum_i w_i`` per cluster, in ``x``'s dtype.

    Raises
    ------
    ValueError
        Shape mismatches, a label outside ``[0, n_clusters)`` (naming the row), or a negative
        or non-finite weight (naming the row).
    TypeError
        Non-tensors, a non-integer ``n_clusters``, labels not int64, unsupported dtypes.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    >>> sums, counts = kmeans_update_numba(x, torch.tensor([1, 0, 1]), 2)
    >>> sums.tolist(), counts.tolist()
    ([[3.0, 4.0], [6.0, 8.0]], [1.0, 2.0])
    """
    n_clusters, w = _check_update_inputs(x, labels, n_clusters, sample_weight)
    n, d = x.shape
    if n == 0:
        return (torch.zeros((n_clusters, d), dtype=x.dtype),
                torch.zeros(n_clusters, dtype=x.dtype))
    sums, counts = _partitioned_sums(_np(x), _np(labels), w, n_clusters)
    dtype = x.dtype
    return torch.from_numpy(sums).to(dtype), torch.from_numpy(counts).to(dtype)


def _check_update_inputs(x, labels, n_clusters, sample_weight):
    """Check the arguments of :func:`kmeans_update_numba`; returns ``(n_clusters, w)``:
    the cluster count as an int and the weights as float64 numpy (None: unweighted)."""
    _check_cpu_float_matrix("x", x)
    n_clusters = check_int("n_clusters", n_clusters, 1)
    n = x.shape[0]
    if not torch.is_tensor(labels):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"labels must have shape ({n},) to match x, got {tuple(labels.shape)}")
    if labels.dtype != torch.int64:
        raise TypeError(f"labels must be int64, got {labels.dtype}")
    if labels.device.type != "cpu":
        raise ValueError(f"labels is on {labels.device}; the numba kernels run on the CPU")
    if sample_weight is None:
        return n_clusters, None
    if not torch.is_tensor(sample_weight):
        raise TypeError(f"sample_weight must be a torch.Tensor, got "
                        f"{type(sample_weight).__name__}")
    if tuple(sample_weight.shape) != (n,):
        raise ValueError(f"sample_weight must have shape ({n},) to match x, got "
                         f"{tuple(sample_weight.shape)}")
    if not sample_weight.is_floating_point():
        raise TypeError(f"sample_weight must be floating point, got {sample_weight.dtype}")
    w = sample_weight.detach().cpu().to(torch.float64).contiguous().numpy()
    bad = np.flatnonzero(~(w >= 0) | ~np.isfinite(w))
    if bad.size:
        r = int(bad[0])
        raise ValueError(f"sample_weight must be finite and >= 0; row {r} has {w[r]!r}")
    return n_clusters, w


def _partitioned_sums(x_np, lab_np, w, n_clusters: int):
    """float64 ``(sums, counts)`` of the rows of ``x_np`` (n >= 1) by label, times ``w``
    (None: ones), deterministically.

    A fixed split of the rows (from the shapes only, never from the thread count) into at
    most 8 parts, each summed in row order into its own float64 block, then the blocks added
    in part order: deterministic, and the blocks stay within a 128 MiB budget.
    """
    n, d = x_np.shape
    weighted = w is not None
    if not weighted:
        w = np.empty(0, np.float64)
    n_parts = max(1, min(_UPDATE_PARTS, -(-n // 2048),
                         _UPDATE_BUDGET_BYTES // max(1, n_clusters * d * 8)))
    parts = np.zeros((n_parts, n_clusters, d), np.float64)
    part_counts = np.zeros((n_parts, n_clusters), np.float64)
    step = -(-n // n_parts)
    sums = np.empty((n_clusters, d), np.float64)
    counts = np.empty(n_clusters, np.float64)
    with KernelWorkers() as workers:
        bad = workers.map(
            lambda p: _partial_sums(x_np, lab_np, w, weighted, p * step,
                                    min(n, (p + 1) * step), parts[p], part_counts[p]),
            range(n_parts))
        bad = [r for r in bad if r >= 0]
        if bad:
            r = min(bad)
            raise ValueError(f"labels[{r}]={int(lab_np[r])} is outside "
                             f"[0, n_clusters={n_clusters})")
        k_step = max(1, -(-n_clusters // (4 * workers.n)))
        workers.map(lambda lo: _reduce_parts(parts, part_counts, lo,
                                             min(n_clusters, lo + k_step), sums, counts),
                    range(0, n_clusters, k_step))
    return sums, counts
