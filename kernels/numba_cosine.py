"""numba CPU cosine top-k: blocked oneDNN matmuls, a running selection, certified bf16.

:func:`cosine_topk_numba` never holds the ``(n_queries, n_keys)`` score matrix. The keys are
normalised once into the matmul's precision (bf16 or fp32; one super-block of at most
``_KEY_REP_BYTES`` at a time), then worker threads each take a block of query rows and walk the
keys: a single-threaded ``torch.mm`` (oneDNN) scores ``_BLOCK_KEYS`` keys at a time and a
serial numba scan merges the score block into every row's running top-``C`` (a small
min-heap). A score row is split into chunks of ``_CHUNK`` scores whose maximum is tested
against the row's threshold (the heap minimum) with one vectorised compare; only the rare
chunks holding a score above it are looked at more closely. Threads rather than numba
``prange``: see :class:`interestflow.kernels._common.KernelWorkers`.

Exactness
---------
The matmul only *proposes* ``C = k + m`` candidates per query (those whose bounds show they
cannot reach the top-k are dropped unscored). The returned scores are the
**canonical** scores of the candidates: ``dot(q, key)`` of the original rows (upcast to the
working dtype, float32 or float64), with products and sums in float64 in one fixed order
(:func:`_cdot`), times both rows' inverse norms ``1 / max(||row||, 1e-12)`` (the epsilon of
``torch.nn.functional.normalize``; 1 when ``normalized=True``), rounded once to the working
dtype. The top-``k`` is the ``k`` best canonical scores, ties to the lower key index. A query's
candidate list is accepted only with a certificate (below). A query that fails it is redone by
one *collection* pass in the same precision (reusing the keys' copy): its k-th canonical score
among the candidates is a lower bound of the true k-th score, so every key whose matmul output
can come from a score reaching that bound (the same error bounds, run backwards) is collected
and re-scored canonically, which is exact by construction.
So the result does not depend on ``candidates``, on block sizes or on thread counts:
``candidates="bfloat16"`` returns exactly what ``candidates="float32"`` returns, on any data;
only the time differs.

The certificate
---------------
Notation: ``x* = x * inv_x`` (the exactly normalised row, real arithmetic), ``x~`` its
representation in the matmul (bf16 or fp32, computed here with bf16 subnormals flushed to zero
as oneDNN's bf16 dot instructions read them), ``e_x = x~ - x*`` (kept through its norm, measured
in float64), ``u = 2**-8`` (bf16 unit roundoff), ``gamma_d = d 2**-24 / (1 - d 2**-24)``,
``tau = 2**-126``. For a query ``q`` and a key ``y``:

- ``q~.y~ - q*.y* = q*.e_y + e_q.y* + e_q.e_y``, so by Cauchy-Schwarz
  ``|q~.y~ - q*.y*| <= ||q*|| E + ||e_q|| Y* + ||e_q|| E`` with ``E = max ||e_y||`` and
  ``Y* = max ||y*||`` over all keys. (The measured residual norms are about half of the
  worst case ``2u``.)
- The matmul multiplies pairs exactly in fp32 and accumulates in fp32 in an unknown order:
  ``|acc - q~.y~| <= gamma_d ||q~|| Y~ + (2d + 1) tau`` (``Y~ = max ||y~||``; ``tau`` per
  product or addition that underflows).
- A bf16 matmul writes bf16 on the CPU (torch has no fp32-output bf16 matmul there): a key
  whose output is ``<= c`` had ``acc <= hi(c)``, the midpoint between ``c`` and the next bf16
  number above it. For fp32 output ``hi(c) = c``.
- The canonical score is within ``gamma'_{d+2} ||q*|| Y*`` (float64 ``gamma'``) of ``q*.y*``
  before its final rounding to the working dtype, which is monotone.

Every key that is not a candidate has a matmul output ``<= c``, the C-th candidate's output
(the heap keeps strictly greater scores), hence its canonical score is at most ``U`` (the sum
of the terms above, widened by a relative ``2**-23`` for the final float32 rounding and a
``1e-12`` slack for the float64 arithmetic of the bound itself). If the k-th canonical score
among the candidates is strictly greater than ``U``, no other key can enter the top-``k`` or
tie with its last member, and the candidates' top-``k`` is the exact one. Symmetrically, a
candidate whose upper bound is below the k-th largest lower bound of the candidates (bf16
outputs round to nearest, so each also bounds its score from below) cannot be in the top-k and
is not re-scored. For unit vectors the bf16 margin is about ``0.005``; the fp32 margin about
``3e-5``. Non-finite values fail the
certificate (inputs are rejected when they hold NaN or infinity).

This module imports numba at import time; :mod:`interestflow.kernels` imports it only when the
numba backend runs.
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
    NORM_EPS,
    TAU,
    KernelWorkers,
    check_candidates,
    gamma,
)
from interestflow.kernels.numba_prefetch import prefetch_row
from interestflow.resolve import cpu_has_fast_bf16

__all__ = ["cosine_topk_numba", "CANDIDATE_OPTIONS", "AUTO_BF16_MIN_WORK"]

#: ``candidates="auto"`` uses the bf16 pass at or above this many multiply-adds
#: (n_queries * n_keys * dim), for dim >= 64 and k + m < n_keys, on CPUs with native bf16 dot
#: instructions. Below that the fp32 matmul takes ~10 ms, and the bf16 pass's fixed costs
#: (rounding every key row, measuring its residual, re-scoring more candidates) eat most of
#: what its 2.5x faster matmul saves; at small dim the matmul is not compute-bound at all.
AUTO_BF16_MIN_WORK = 1 << 31
_AUTO_BF16_MIN_DIM = 64

#: Extra candidates beyond k. bf16 outputs have 8 significant bits and the bf16 margin is
#: ~0.005-0.007 for unit vectors, so on embedding-like data the k-th and the (k+m)-th scores
#: must be that far apart. Each uncertified query costs a full fp32 pass (~2x its bf16 pass);
#: a longer candidate list costs selection time (more heap insertions: ~0.23 / 0.41 ns per
#: score at k + m = 32 / 74 on one Zen 4 core, against ~4 ns per score for the bf16 matmul)
#: while re-scoring stays cheap (candidates that cannot reach the top-k are pruned by their
#: bounds). On clustered 384-d data with 100,000 keys m = 22 / 40 / 64 / 90 left 6.4% / 1.0% /
#: 0.15% / 0.05% of the queries uncertified; m = 64 keeps the fallback rare at ~10% selection
#: overhead. The margin needed grows with k (the scores near the k-th best are denser the
#: deeper the list): on the batch benchmark's 100,000 x 384 catalogue with 8,192 user-mean
#: queries, k = 120 with m = 64 left 41% uncertified (a second pass: 4.1 s against 2.8 s), m =
#: 128 none; k = 60 with m = 64 1.5%, m = 96 none. Hence m = 64 + k // 2 (see
#: :func:`_extra_bf16`). The fp32 margin is ~3e-5: a few extra suffice.
_EXTRA_BF16 = 64
_EXTRA_FP32 = 6


def _extra_bf16(k: int) -> int:
    """Extra candidates of the bf16 candidate pass for a top-``k`` search."""
    return _EXTRA_BF16 + int(k) // 2

#: Scores per chunk tested with one vectorised max against the row threshold.
_CHUNK = 64
_QUARTER = _CHUNK // 4
#: Key rows per matmul (a multiple of _CHUNK) and at most this many query rows per matmul.
_BLOCK_KEYS = 4096
_BLOCK_QUERIES = 1024
#: Budget for the running candidate lists of one group of queries (heap keys + int64 indices).
_STATE_BYTES = 64 * 2**20
#: Budget for the matmul copy of the keys (bf16 or fp32), prepared once per super-block.
_KEY_REP_BYTES = 256 * 2**20

_INSERTION_SORT_MAX = 64
#: Candidate rows prefetched ahead of the one being re-scored (see numba_prefetch).
_AHEAD = 4

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------- numba kernels


@nb.njit(cache=True)
def _cdot(a, b):
    """Canonical dot product: float64 products, eight partial sums combined in a fixed order.

    No fastmath: the order is fixed by the code, so every caller gets the same bits.
    """
    d = a.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    i = 0
    while i + 8 <= d:
        s0 += np.float64(a[i]) * np.float64(b[i])
        s1 += np.float64(a[i + 1]) * np.float64(b[i + 1])
        s2 += np.float64(a[i + 2]) * np.float64(b[i + 2])
        s3 += np.float64(a[i + 3]) * np.float64(b[i + 3])
        s4 += np.float64(a[i + 4]) * np.float64(b[i + 4])
        s5 += np.float64(a[i + 5]) * np.float64(b[i + 5])
        s6 += np.float64(a[i + 6]) * np.float64(b[i + 6])
        s7 += np.float64(a[i + 7]) * np.float64(b[i + 7])
        i += 8
    while i < d:
        s0 += np.float64(a[i]) * np.float64(b[i])
        i += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@nb.njit(nogil=True, cache=True)
def _inverse_norms(x, normalized, inv, norm, bad, lo, hi):
    """Rows ``lo:hi``: ``inv[i] = 1 / max(||x_i||, eps)`` (1 when ``normalized``) and
    ``norm[i] = ||x_i||``, in float64; ``bad[i]`` flags rows holding NaN or infinity."""
    d = x.shape[1]
    for i in range(lo, hi):
        row = x[i]
        ok = True
        for j in range(d):
            if not np.isfinite(row[j]):
                ok = False
        bad[i] = not ok
        nrm = math.sqrt(_cdot(row, row))
        norm[i] = nrm
        inv[i] = 1.0 if normalized else 1.0 / max(nrm, NORM_EPS)


@nb.njit(nogil=True, cache=True)
def _prepare_rows(x, inv, rows, row0, rep32, rep16, to_bf16, stats, lo, hi):
    """Matmul representation of rows ``x[rows[row0 + i]]``, ``lo <= i < hi``, and its residual.

    ``rep32[i] = fl32(x * inv)``, or with ``to_bf16`` that value rounded to bf16 (round to
    nearest even, subnormals flushed to zero) written as bits to ``rep16[i]`` (``rep32`` is
    then not used). ``stats[i] = (||rep - x*||, ||x*||, ||rep||)`` in float64.
    """
    d = x.shape[1]
    scratch = np.empty(d, np.float32)
    for i in range(lo, hi):
        src = x[rows[row0 + i]]
        s = inv[rows[row0 + i]]
        out = scratch if to_bf16 else rep32[i]
        for j in range(d):
            out[j] = np.float32(np.float64(src[j]) * s)
        if to_bf16:
            bits = out.view(np.uint32)
            for j in range(d):
                b = bits[j]
                if (b & np.uint32(0x7F800000)) == 0:
                    b = b & np.uint32(0x80000000)  # zero or subnormal: flush to signed zero
                else:
                    b = b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))
                hi16 = b >> np.uint32(16)
                if (hi16 & np.uint32(0x7F80)) == 0:
                    hi16 = hi16 & np.uint32(0x8000)  # rounded down to a bf16 subnormal
                rep16[i, j] = np.uint16(hi16)
                bits[j] = hi16 << np.uint32(16)
        e2 = 0.0
        n2 = 0.0
        r2 = 0.0
        for j in range(d):
            xs = np.float64(src[j]) * s
            r = np.float64(out[j])
            e2 += (r - xs) * (r - xs)
            n2 += xs * xs
            r2 += r * r
        stats[i, 0] = math.sqrt(e2)
        stats[i, 1] = math.sqrt(n2)
        stats[i, 2] = math.sqrt(r2)


@nb.njit(cache=True)
def _heap_replace(hv, hi, v, idx):
    """Replace the minimum of the min-heap ``hv`` (payload ``hi``) by ``v``/``idx``."""
    c_len = hv.shape[0]
    p = 0
    while True:
        c = 2 * p + 1
        if c >= c_len:
            break
        if c + 1 < c_len and hv[c + 1] < hv[c]:
            c += 1
        if hv[c] >= v:
            break
        hv[p] = hv[c]
        hi[p] = hi[c]
        p = c
    hv[p] = v
    hi[p] = idx


@nb.njit(cache=True)
def _scan(ch, col0, limit, mask, hv, hi):
    """Offer every score of ``ch`` (columns ``col0 + t < limit``) to the heap.

    Scores arrive as the bits of a float (int16 for bf16, int32 for fp32); ``bits ^ mask`` for
    negative bits makes them order like the floats. Strict ``>``: a later (higher-index) key
    never displaces an equal one.
    """
    n = min(ch.shape[0], limit - col0)
    thr = hv[0]
    if thr >= 0:
        # raw bits above a non-negative threshold are non-negative: they are their own key
        for t in range(n):
            s = ch[t]
            if s > thr:
                _heap_replace(hv, hi, s, col0 + t)
                thr = hv[0]
        return
    for t in range(n):
        s = ch[t]
        v = (s ^ mask) if s < 0 else s
        if v > thr:
            _heap_replace(hv, hi, v, col0 + t)
            thr = hv[0]


@nb.njit(cache=True)
def _chunk_max(ch):
    mx = ch[0]
    for t in range(ch.shape[0]):
        x = ch[t]
        if x > mx:
            mx = x
    return mx


@nb.njit(cache=True)
def _select_row(row, col0, limit, mask, hv, hi):
    """Offer one row of a score block, ``_CHUNK`` scores at a time.

    For a non-negative threshold the raw bits order like the floats (negative floats have
    negative bits), so the vectorised max of a raw chunk decides whether any of its scores can
    enter; a chunk that passes is tested again by quarters before scores are looked at one by
    one (the reshaped views keep every loop a fixed-width vectorisable one).
    """
    n = row.shape[0]
    chunks = row.reshape((n // _CHUNK, _CHUNK))
    quarters = row.reshape((n // _QUARTER, _QUARTER))
    for c in range(chunks.shape[0]):
        base = col0 + c * _CHUNK
        if hv[0] < 0:
            _scan(chunks[c], base, limit, mask, hv, hi)
        elif _chunk_max(chunks[c]) > hv[0]:
            for s in range(4 * c, 4 * c + 4):
                if _chunk_max(quarters[s]) > hv[0]:
                    _scan(quarters[s], col0 + s * _QUARTER, limit, mask, hv, hi)


@nb.njit(nogil=True, cache=True)
def _select_block(s2, col0, limit, mask, heap_v, heap_i, row0):
    """Merge the score block ``s2`` (rows, cols) into rows ``row0 + r`` of the heaps."""
    for r in range(s2.shape[0]):
        _select_row(s2[r], col0, limit, mask, heap_v[row0 + r], heap_i[row0 + r])


@nb.njit(cache=True)
def _before(sc, ix, a, b):
    """Pair ``a`` comes before pair ``b``: higher score, or equal score and lower index."""
    return sc[a] > sc[b] or (sc[a] == sc[b] and ix[a] < ix[b])


@nb.njit(cache=True)
def _swap(sc, ix, a, b):
    sc[a], sc[b] = sc[b], sc[a]
    ix[a], ix[b] = ix[b], ix[a]


@nb.njit(cache=True)
def _sift(sc, ix, root, n):
    """Sift ``root`` down a heap whose top is the pair that comes *last*."""
    while True:
        c = 2 * root + 1
        if c >= n:
            return
        if c + 1 < n and _before(sc, ix, c, c + 1):
            c += 1
        if not _before(sc, ix, root, c):
            return
        _swap(sc, ix, root, c)
        root = c


@nb.njit(cache=True)
def _order_candidates(sc, ix, n):
    """Sort the first ``n`` (score, index) pairs by score descending, then index ascending.

    Indices are distinct, so the order is total and any correct sort gives the same result:
    insertion sort for short lists, heapsort (no scratch memory) for long ones.
    """
    if n <= _INSERTION_SORT_MAX:
        for a in range(1, n):
            b = a
            while b > 0 and _before(sc, ix, b, b - 1):
                _swap(sc, ix, b, b - 1)
                b -= 1
        return
    for root in range(n // 2 - 1, -1, -1):
        _sift(sc, ix, root, n)
    for end in range(n - 1, 0, -1):
        _swap(sc, ix, 0, end)
        _sift(sc, ix, 0, end)


@nb.njit(cache=True)
def _widen(v, to_f32, scale, up):
    """Move the float64 bound ``v`` outwards past the final rounding to the working dtype and
    the float64 rounding of the bound's own arithmetic (``scale`` ~ its largest term)."""
    w = 1e-12 * (abs(v) + scale)
    if to_f32:
        w += abs(v) * 2.0 ** -23 + 1e-44
    return v + w if up else v - w


@nb.njit(nogil=True, cache=True, inline="always")
def _first_keys(out_s, out_i, row, k):
    """Result of a zero query: score 0 against every key, so the first ``k`` keys."""
    for t in range(k):
        out_s[row, t] = 0.0
        out_i[row, t] = t


@nb.njit(nogil=True, cache=True, inline="always")
def _query_margin(qstats, i, key_e, key_norm, key_rep_norm, gamma_acc, gamma_canon, tiny):
    """``(margin, scale)`` of query ``i``: ``|canonical - accumulator| <= margin`` for every
    key (module docstring); ``scale`` ~ the bound's largest term, for :func:`_widen`."""
    nq_star = qstats[i, 1]
    e_q = qstats[i, 0]
    nq_rep = qstats[i, 2]
    margin = (nq_star * key_e + e_q * key_norm + e_q * key_e
              + gamma_acc * nq_rep * key_rep_norm + tiny + gamma_canon * nq_star * key_norm)
    scale = nq_rep * key_rep_norm + nq_star * key_norm + 1.0
    return margin, scale


@nb.njit(nogil=True, cache=True)
def _rescore(q, invq, qrows, qstats, keys, invk, cand, cand_lo, cand_hi, c_hi, all_keys, key_e,
             key_norm, key_rep_norm, gamma_acc, gamma_canon, tiny, to_f32, k, out_s, out_i, ok,
             kth, lo, hi):
    """Canonical scores of each query's candidates, its exact top-``k`` and its certificate.

    Query ``i`` is row ``qrows[i]`` of ``q``; its results go to ``out_s[qrows[i]]``.
    ``cand_lo``/``cand_hi`` bound the matmul accumulator of each candidate (from its output),
    ``c_hi[i]`` that of every key that is not a candidate; ``all_keys`` means every key is a
    candidate (nothing to certify). A candidate whose upper bound is below the k-th largest
    lower bound cannot be in the top-k and is not re-scored. ``kth[i]`` is the k-th best
    canonical score found (-inf if none), a lower bound of the true k-th score. Rows
    ``lo <= i < hi``.
    """
    c_len = cand.shape[1]
    sc = np.empty(c_len, np.float64)
    ix = np.empty(c_len, np.int64)
    for i in range(lo, hi):
        row = qrows[i]
        qr = q[row]
        nq_star = qstats[i, 1]
        kth[i] = -np.inf
        ok[i] = False
        if nq_star == 0.0:
            _first_keys(out_s, out_i, row, k)
            ok[i] = True
            continue
        margin, scale = _query_margin(qstats, i, key_e, key_norm, key_rep_norm, gamma_acc,
                                      gamma_canon, tiny)
        for t in range(c_len):
            sc[t] = _widen(cand_lo[i, t] - margin, to_f32, scale, False)
            ix[t] = t
        _order_candidates(sc, ix, c_len)
        low_k = sc[k - 1]  # NaN keeps every candidate below (comparisons are False)
        n = 0
        good = True
        for t in range(min(_AHEAD, c_len)):
            prefetch_row(keys, cand[i, t])
        for t in range(c_len):
            if t + _AHEAD < c_len:  # rows in a random order: load a few ahead
                prefetch_row(keys, cand[i, t + _AHEAD])
            j = cand[i, t]
            if j < 0:
                good = False
                break
            if _widen(cand_hi[i, t] + margin, to_f32, scale, True) < low_k:
                continue
            v = _cdot(qr, keys[j]) * invq[row] * invk[j]
            if to_f32:
                v = np.float64(np.float32(v))
            sc[n] = v
            ix[n] = j
            n += 1
        if not good or n < k:
            continue
        _order_candidates(sc, ix, n)
        for t in range(k):
            out_s[row, t] = sc[t]
            out_i[row, t] = ix[t]
        kth[i] = sc[k - 1]
        if all_keys:
            ok[i] = True
            continue
        # NaN anywhere makes this False
        ok[i] = sc[k - 1] > _widen(c_hi[i] + margin, to_f32, scale, True)


@nb.njit(cache=True)
def _collect_chunk(ch, col0, limit, mask, thr, lst, cnt):
    n = min(ch.shape[0], limit - col0)
    for t in range(n):
        s = ch[t]
        v = (s ^ mask) if s < 0 else s
        if v >= thr:
            if cnt < lst.shape[0]:
                lst[cnt] = col0 + t
            cnt += 1
    return cnt


@nb.njit(nogil=True, cache=True)
def _collect_block(s2, col0, limit, mask, thr, lists, counts, row0):
    """Append to ``lists[row0 + r]`` every column of ``s2[r]`` scoring ``>= thr[row0 + r]``.

    ``counts`` keeps counting past the capacity of ``lists`` so the caller can retry.
    """
    for r in range(s2.shape[0]):
        i = row0 + r
        th = thr[i]
        chunks = s2[r].reshape((s2.shape[1] // _CHUNK, _CHUNK))
        cnt = counts[i]
        for c in range(chunks.shape[0]):
            ch = chunks[c]
            if th >= 0 and _chunk_max(ch) < th:
                continue
            cnt = _collect_chunk(ch, col0 + c * _CHUNK, limit, mask, th, lists[i], cnt)
        counts[i] = cnt


@nb.njit(nogil=True, cache=True)
def _rescore_lists(q, invq, qrows, keys, invk, lists, counts, to_f32, k, out_s, out_i, lo, hi):
    """Exact top-``k`` of query ``qrows[i]`` among the keys ``lists[i, :counts[i]]``, for
    ``lo <= i < hi``."""
    for i in range(lo, hi):
        row = qrows[i]
        n = counts[i]
        sc = np.empty(n, np.float64)
        ix = np.empty(n, np.int64)
        for t in range(n):
            j = lists[i, t]
            v = _cdot(q[row], keys[j]) * invq[row] * invk[j]
            if to_f32:
                v = np.float64(np.float32(v))
            sc[t] = v
            ix[t] = j
        _order_candidates(sc, ix, n)
        for t in range(k):
            out_s[row, t] = sc[t]
            out_i[row, t] = ix[t]


# --------------------------------------------------------------------------- validation


def _check_matrix(name, t):
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {tuple(t.shape)}")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; the numba backend runs on the CPU: pass a "
                         f"CPU tensor (e.g. {name}.cpu()) or use backend='triton'")


def _validate(queries, keys, k, normalized, candidates):
    _check_matrix("queries", queries)
    _check_matrix("keys", keys)
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries has dim {queries.shape[1]} but keys has dim "
                         f"{keys.shape[1]}; they must match")
    if keys.shape[1] < 1:
        raise ValueError("queries and keys have dim 0; pass rows with at least one column")
    n_keys = keys.shape[0]
    k = check_int("k", k)
    if not 1 <= k <= n_keys:
        raise ValueError(f"k={k} is out of range; pass 1 <= k <= n_keys={n_keys}")
    if not isinstance(normalized, bool):
        raise TypeError(f"normalized must be True or False, got {normalized!r}")
    check_candidates(candidates)
    return k


def _inverse_norms_checked(workers, name, x, normalized):
    inv = np.empty(x.shape[0], np.float64)
    norm = np.empty(x.shape[0], np.float64)
    bad = np.zeros(x.shape[0], np.bool_)
    workers.ranges(_inverse_norms, x.shape[0], x, normalized, inv, norm, bad)
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"{name} row {row} contains NaN or infinity; pass finite values")
    return inv, norm * inv  # ||x*||: 1 (0 for a zero row) unless normalized


# --------------------------------------------------------------------------- passes


def use_bf16_candidates(n_queries: int, n_keys: int, dim: int, k: int) -> tuple[bool, str]:
    """What ``candidates="auto"`` picks for a problem of this size, and why.

    Returns
    -------
    use_bf16 : bool
    reason : str
    """
    if not cpu_has_fast_bf16():
        return False, "this CPU has no native bf16 dot instructions (AVX512-BF16 or AMX)"
    if k + _extra_bf16(k) >= n_keys:
        return False, f"k + {_extra_bf16(k)} candidates cover all {n_keys} keys"
    if dim < _AUTO_BF16_MIN_DIM:
        return False, f"dim={dim} < {_AUTO_BF16_MIN_DIM}: the matmul is not compute-bound"
    work = float(n_queries) * n_keys * dim
    if work < AUTO_BF16_MIN_WORK:
        return False, f"{work:.3g} multiply-adds < {AUTO_BF16_MIN_WORK}: too small to pay off"
    return True, "CPU with native bf16 dot instructions and a large problem"


def _working_array(t, work_dtype):
    """``t`` as a C-contiguous numpy array of the working dtype (no copy when it already is)."""
    a = t.detach()
    if a.dtype != work_dtype:
        a = a.to(work_dtype)  # float16/bfloat16 -> float32 is exact
    return np.ascontiguousarray(a.numpy())


class _Problem:
    """Inputs in the working dtype, their inverse norms and constants shared by the passes."""

    def __init__(self, workers, queries, keys, k, normalized):
        work = torch.float64 if torch.float64 in (queries.dtype, keys.dtype) else torch.float32
        self.workers = workers
        self.to_f32 = work == torch.float32
        self.q = _working_array(queries, work)
        self.keys = _working_array(keys, work)
        self.invq, self.q_star = _inverse_norms_checked(workers, "queries", self.q, normalized)
        self.invk, k_star = _inverse_norms_checked(workers, "keys", self.keys, normalized)
        self.key_star_max = float(k_star.max())
        self.k = k
        self.dim = self.q.shape[1]
        self.n_keys = self.keys.shape[0]
        self.gamma_canon = gamma(self.dim + 2, EPS64)
        self.gamma_acc = gamma(self.dim, EPS32)
        self.tiny = (2 * self.dim + 1) * TAU
        self._key_cache = {}
        self.key_max = {}

    def key_blocks(self, bf16):
        """Yield ``(col0, padded_rows, rep)``: the keys' matmul copy, one super-block of at most
        ``_KEY_REP_BYTES`` at a time (kept for the next pass when one block holds them all).

        After a full iteration ``key_max[bf16]`` = (max ||e_y||, max ||y*||, max ||y~||).
        """
        if bf16 in self._key_cache:
            yield from self._key_cache[bf16]
            return
        d = self.dim
        super_rows = max(_BLOCK_KEYS, _KEY_REP_BYTES // (d * (2 if bf16 else 4)) // _BLOCK_KEYS
                         * _BLOCK_KEYS)
        key_rows = np.arange(self.n_keys, dtype=np.int64)
        maxima = np.zeros(3)
        for ks0 in range(0, self.n_keys, super_rows):
            nv = min(super_rows, self.n_keys - ks0)
            padded = -(-nv // _CHUNK) * _CHUNK  # zero rows pad to whole chunks
            k32 = np.zeros((0, d) if bf16 else (padded, d), np.float32)
            k16 = np.zeros((padded, d) if bf16 else (0, d), np.uint16)
            kstats = np.empty((nv, 3), np.float64)
            self.workers.ranges(_prepare_rows, nv, self.keys, self.invk, key_rows, ks0, k32, k16,
                                bf16, kstats)
            maxima = np.maximum(maxima, kstats.max(axis=0))
            rep = torch.from_numpy(k16).view(torch.bfloat16) if bf16 else torch.from_numpy(k32)
            if nv == self.n_keys:
                self._key_cache[bf16] = [(ks0, padded, rep)]
            yield ks0, padded, rep
        self.key_max[bf16] = tuple(float(v) for v in maxima)


def _bits_to_float(keys_t, bf16):
    """Heap keys (order-preserving ints) back to the float values they encode, as float64."""
    if bf16:
        raw = torch.where(keys_t < 0, keys_t ^ 0x7FFF, keys_t).to(torch.int16)
        return raw.view(torch.bfloat16).double()
    raw = torch.where(keys_t < 0, keys_t ^ 0x7FFFFFFF, keys_t).to(torch.int32)
    return raw.view(torch.float32).double()


def _output_bounds(keys_t, bf16):
    """Bounds ``(lo, hi)`` of the accumulator that a matmul output (as a heap key) came from.

    fp32 outputs are the accumulator. bf16 outputs are rounded to nearest: the accumulator lies
    between the midpoints with the neighbouring bf16 numbers (``tau`` more for underflow).
    """
    val = _bits_to_float(keys_t, bf16)
    if not bf16:
        return val, val
    k32 = keys_t.to(torch.int32)
    nxt = _bits_to_float(torch.clamp(k32 + 1, max=0x7FFF), bf16)
    prv = _bits_to_float(torch.clamp(k32 - 1, min=-0x7FFF), bf16)
    return (prv + val) * 0.5 - TAU, (val + nxt) * 0.5 + TAU


class _Scores:
    """Score blocks of some query rows against every key, with the rows' residual statistics.

    :meth:`run` calls ``consume(s2, col0, row0)`` in a worker thread for every block: the
    scores of query rows ``row0:row0 + rows`` (of ``qrows``) against keys
    ``col0:col0 + cols`` as their float bits (int16 for bf16, int32 for fp32), shaped
    (rows, cols) with ``cols`` a multiple of ``_CHUNK`` (columns past ``n_keys`` are zero
    padding). Each task owns a range of query rows, so ``consume`` may write those rows' state
    without locks.
    """

    def __init__(self, p: _Problem, qrows, bf16):
        m, d = len(qrows), p.dim
        self.p, self.bf16, self.m = p, bf16, m
        q32 = np.empty((0, d) if bf16 else (m, d), np.float32)
        q16 = np.empty((m, d) if bf16 else (0, d), np.uint16)
        self.qstats = np.empty((m, 3), np.float64)
        p.workers.ranges(_prepare_rows, m, p.q, p.invq, qrows, 0, q32, q16, bf16, self.qstats)
        self.q_t = torch.from_numpy(q16).view(torch.bfloat16) if bf16 else torch.from_numpy(q32)
        self.int_dtype = np.int16 if bf16 else np.int32
        self.mask = self.int_dtype(0x7FFF) if bf16 else self.int_dtype(0x7FFFFFFF)

    def run(self, consume):
        m, q_t, workers = self.m, self.q_t, self.p.workers
        int_view = torch.int16 if self.bf16 else torch.int32
        # a few tasks per thread so that they end together; at most _BLOCK_QUERIES rows per
        # matmul and at least 32 (below that the matmul is inefficient)
        bq = max(32, min(_BLOCK_QUERIES, -(-m // (2 * workers.n))))
        for ks0, padded, k_t in self.p.key_blocks(self.bf16):

            def task(qs, ks0=ks0, padded=padded, k_t=k_t):
                rows = min(bq, m - qs)
                buf = torch.empty(rows * min(_BLOCK_KEYS, padded), dtype=k_t.dtype)
                for kb in range(0, padded, _BLOCK_KEYS):
                    cols = min(_BLOCK_KEYS, padded - kb)
                    s = buf[:rows * cols].view(rows, cols)
                    torch.mm(q_t[qs:qs + rows], k_t[kb:kb + cols].T, out=s)
                    consume(s.view(int_view).numpy(), ks0 + kb, qs)

            workers.map(task, range(0, m, bq))


def _margin(p: _Problem, qstats, key_max):
    """Per query: bound on |canonical score - matmul accumulator| over all keys (float64)."""
    e_max, star_max, rep_max = key_max
    e_q, q_star, q_rep = qstats[:, 0], qstats[:, 1], qstats[:, 2]
    return (q_star * e_max + e_q * star_max + e_q * e_max + p.gamma_acc * q_rep * rep_max
            + p.tiny + p.gamma_canon * q_star * star_max)


def _candidate_pass(p: _Problem, qrows, bf16, out_s, out_i):
    """Top-k of query rows ``qrows`` from a top-(k + m) candidate pass with its certificate.

    Writes the rows' results and returns ``(ok, kth, qstats)``: whether each row is certified
    exact, its k-th best canonical score among the candidates (a lower bound of the true one)
    and its residual statistics in the pass's precision.
    """
    m = len(qrows)
    c_len = min(p.k + (_extra_bf16(p.k) if bf16 else _EXTRA_FP32), p.n_keys)
    ok = np.empty(m, np.bool_)
    kth = np.empty(m, np.float64)
    if c_len == p.n_keys:
        # every key is a candidate: no matmul pass and nothing to certify
        cand = np.broadcast_to(np.arange(p.n_keys, dtype=np.int64), (m, p.n_keys)).copy()
        qstats = np.zeros((m, 3))
        qstats[:, 1] = p.q_star[qrows]
        lo = np.full(cand.shape, -np.inf)
        p.workers.ranges(_rescore, m, p.q, p.invq, qrows, qstats, p.keys, p.invk, cand, lo, -lo,
                         np.zeros(m), True, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, p.to_f32, p.k, out_s,
                         out_i, ok, kth)
        return ok, kth, qstats
    scores = _Scores(p, qrows, bf16)
    heap_v = np.full((m, c_len), np.iinfo(scores.int_dtype).min, scores.int_dtype)
    heap_i = np.full((m, c_len), -1, np.int64)
    scores.run(lambda s2, col0, row0: _select_block(s2, col0, p.n_keys, scores.mask, heap_v,
                                                    heap_i, row0))
    # the minimum key is the bits of a NaN, below every real score: a row whose heap kept one
    # has index -1 there and fails below
    lo, hi = (b.numpy() for b in _output_bounds(torch.from_numpy(heap_v), bf16))
    c_hi = np.ascontiguousarray(hi[:, 0])  # the heap's root is its minimum
    e_max, star_max, rep_max = p.key_max[bf16]
    p.workers.ranges(_rescore, m, p.q, p.invq, qrows, scores.qstats, p.keys, p.invk, heap_i, lo,
                     hi, c_hi, False, e_max, star_max, rep_max, p.gamma_acc, p.gamma_canon,
                     p.tiny, p.to_f32, p.k, out_s, out_i, ok, kth)
    return ok, kth, scores.qstats


def _round_down_keys(v, bf16):
    """Order keys (int16 / int32) of the largest bf16 / fp32 numbers <= ``v`` (float64).

    ``-inf`` and NaN give the smallest key, which admits every output, NaN ones included.
    """
    v = np.where(np.isnan(v), -np.inf, v)
    lowest = np.iinfo(np.int16 if bf16 else np.int32).min
    with np.errstate(over="ignore"):
        f = v.astype(np.float32)  # beyond the float32 range: +-inf
    up = f.astype(np.float64) > v
    f[up] = np.nextafter(f[up], np.float32(-np.inf))
    raw = f.view(np.int32).astype(np.int64)
    if bf16:
        # drop the low 16 bits toward -inf: truncation for a positive number; for a negative
        # one (negative int16 pattern) one more unit of magnitude, i.e. pattern + 1
        low = raw & 0xFFFF
        raw = raw >> 16  # arithmetic shift: the signed 16-bit pattern
        raw = np.where((raw < 0) & (low != 0), raw + 1, raw)
        keys = np.where(raw < 0, raw ^ 0x7FFF, raw)
    else:
        keys = np.where(raw < 0, raw ^ 0x7FFFFFFF, raw)
    return np.where(v == -np.inf, lowest, keys).astype(np.int16 if bf16 else np.int32)


def _collect_pass(p: _Problem, qrows, kth, qstats, bf16, out_s, out_i):
    """Exact top-k of query rows ``qrows`` given ``kth``, a lower bound of each true k-th score.

    A key of the true top-k has a canonical score >= kth, so its matmul accumulator is at least
    ``kth - margin`` and its output (rounding is monotone) at least that number rounded down.
    One more pass over the keys in the candidate pass's precision (reusing its copy of the
    keys) collects every key scoring that much, and all of them are re-scored canonically:
    exact by construction, and cheap unless many keys tie with the k-th (then it approaches a
    scan of every key for that query).
    """
    m = len(qrows)
    q_star, q_rep = qstats[:, 1], qstats[:, 2]
    star_max, rep_max = p.key_max[bf16][1:]
    with np.errstate(invalid="ignore", over="ignore"):
        tau = kth - np.abs(kth) * 2.0 ** -23 - 1e-44 - _margin(p, qstats, p.key_max[bf16])
        tau -= 1e-12 * (np.abs(tau) + q_rep * rep_max + q_star * star_max + 1.0)
    thr = _round_down_keys(tau, bf16)

    cap = max(256, 4 * p.k)
    pending = np.arange(m)
    while len(pending):
        # bounded memory: as many rows as fit the state budget at this capacity
        take = pending[:max(1, _STATE_BYTES // (8 * cap))]
        rows = qrows[take]
        lists = np.empty((len(take), cap), np.int64)
        counts = np.zeros(len(take), np.int64)
        thr_t = np.ascontiguousarray(thr[take])
        scores = _Scores(p, rows, bf16)
        scores.run(lambda s2, col0, row0: _collect_block(s2, col0, p.n_keys, scores.mask, thr_t,
                                                         lists, counts, row0))
        if (counts < p.k).any():
            bad = int(rows[np.argmax(counts < p.k)])
            raise RuntimeError(f"internal error in cosine_topk_numba: query row {bad} collected "
                               f"fewer than k={p.k} keys above its certified lower bound")
        fits = counts <= cap
        p.workers.ranges(_rescore_lists, int(fits.sum()), p.q, p.invq, rows[fits], p.keys,
                         p.invk, lists[fits], counts[fits], p.to_f32, p.k, out_s, out_i)
        # rows with more keys near their k-th score than the capacity: again, with room
        pending = np.concatenate([take[~fits], pending[len(take):]])
        if (~fits).any():
            cap = int(counts[~fits].max())


def _group_rows(c_len):
    # candidate heap of c_len (score bits + int64 index) per query, plus its results
    return max(1, _STATE_BYTES // (c_len * (4 + 8) + 64))


def _topk(queries, keys, k, *, normalized=False, candidates="auto", stats=None):
    k = _validate(queries, keys, k, normalized, candidates)
    n_q, dim = queries.shape
    n_keys = keys.shape[0]
    if candidates == "auto":
        bf16, reason = use_bf16_candidates(n_q, n_keys, dim, k)
    else:
        bf16, reason = candidates == "bfloat16", "requested"
    with KernelWorkers() as workers:
        p = _Problem(workers, queries, keys, k, normalized)
        out_s = np.empty((n_q, k), np.float32 if p.to_f32 else np.float64)
        out_i = np.empty((n_q, k), np.int64)
        n_failed = 0
        group = _group_rows(k + max(_extra_bf16(k), _EXTRA_FP32))
        for g0 in range(0, n_q, group):
            rows = np.arange(g0, min(n_q, g0 + group), dtype=np.int64)
            ok, kth, qstats = _candidate_pass(p, rows, bf16, out_s, out_i)
            if not ok.all():
                n_failed += int((~ok).sum())
                _collect_pass(p, rows[~ok], kth[~ok], qstats[~ok], bf16, out_s, out_i)
    if stats is not None:
        stats.update(candidates="bfloat16" if bf16 else "float32", reason=reason,
                     n_queries=n_q, n_uncertified=n_failed, threads=workers.n)
    return torch.from_numpy(out_s), torch.from_numpy(out_i)


def cosine_topk_numba(queries: torch.Tensor, keys: torch.Tensor, k: int, *,
                      normalized: bool = False, candidates: str = "auto"):
    """Top-``k`` keys by cosine similarity for every query, on the CPU with numba.

    Scores blocks of keys against blocks of queries with oneDNN matmuls and keeps a running
    top-``(k + m)`` per query in a parallel numba scan, so the ``(n_queries, n_keys)`` score
    matrix never exists; the candidates are then re-scored exactly and certified (see the
    module docstring). The result is the same whatever ``candidates`` is.

    Parameters
    ----------
    queries : torch.Tensor of shape (n_queries, dim)
        CPU, float16, bfloat16, float32 or float64; finite.
    keys : torch.Tensor of shape (n_keys, dim)
        CPU, same choice of dtypes; finite.
    k : int
        ``1 <= k <= n_keys``.
    normalized : bool, default=False
        If True the rows are taken as already L2-normalised and scores are plain dot
        products; otherwise rows are normalised (a zero row scores 0 against everything).
    candidates : {"auto", "bfloat16", "float32"}, default="auto"
        Precision of the matmul that proposes candidates. ``"bfloat16"``: bf16 copies of the
        normalised rows (about 2.5x the fp32 matmul rate with AVX512-BF16, more with AMX);
        queries whose certificate fails are redone in fp32. ``"float32"``: fp32 matmul.
        ``"auto"``: bf16 on CPUs with native bf16 for large problems
        (:func:`use_bf16_candidates` says why), else fp32.

    Returns
    -------
    scores : torch.Tensor of shape (n_queries, k)
        float32 (float64 when either input is float64), highest first: the cosine of the
        original rows computed in float64 and rounded once.
    indices : torch.Tensor of shape (n_queries, k), int64
        Rows of ``keys``; equal scores are ordered by lower index.

    Raises
    ------
    TypeError
        Non-tensor input, unsupported dtype, non-integer ``k`` or non-bool ``normalized``.
    ValueError
        Bad shapes, non-CPU tensors, ``k`` out of range, unknown ``candidates``, or rows with
        NaN or infinity.

    Notes
    -----
    Memory beyond the inputs and outputs: float32 copies of float16/bfloat16 inputs, the keys'
    bf16 (or fp32) copy up to ``_KEY_REP_BYTES`` (77 MB for 100,000 x 384 in bf16), one score
    block per thread and ``(k + m) * 10`` bytes per query: about 200 MB in all for 20,000
    queries x 100,000 keys x 384. A query whose candidates fail the certificate costs one
    more pass over the keys; one with many keys tied at its k-th score (duplicated keys
    straddling the k-th place) also re-scores all of those keys exactly.

    Threads: ``torch.get_num_threads()`` worker threads, each running single-threaded
    matmuls; torch's setting is restored on return.

    Examples
    --------
    >>> import torch
    >>> q = torch.tensor([[1.0, 0.0]])
    >>> keys = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 0.1]])
    >>> cosine_topk_numba(q, keys, 2)[1].tolist()
    [[1, 2]]
    """
    return _topk(queries, keys, k, normalized=normalized, candidates=candidates)
