"""numba CPU kernels of the candidate stage's per-chunk work (:mod:`interestflow.candidates`).

Each kernel gives exactly what the numpy code it replaced gives (same entries, same order,
same values to the bit); the numpy definitions are kept in the docstrings and checked against
in ``tests/test_numba_candidates.py``.

- :func:`csr_topk`: the top ``k`` entries of every row of a CSR block, descending value, ties
  to the lower column (``lexsort((col, -val, row))`` and a cut at rank ``k``), optionally
  keeping only positive values and leaving out each row's seen columns.
- :func:`dense_topk`: the top ``k`` of every row of a dense block by the rule of
  :func:`interestflow._topk.topk_rows` (descending, ties to the lower index), then only the
  finite values, with their rank in that order.
- :func:`union_rows`: the union of several sources' (row, item) entries, sorted by row then
  item, and where each entry lands in it.
- :func:`fill_sources`: the per-source score / rank columns and ``n_sources`` of the union.
- :func:`weighted_columns`: ``sum_j W[row, j] * M[item, j]`` per entry in float64, summed in
  the order of numpy's ``einsum("ij,ji->i")``, stored float32.
- :func:`pair_dots`: ``U[row] . V[item]`` per entry, the float64 sum of
  :func:`interestflow.kernels.numba_ivf.rescore`.

All are serial (the chunk is small; the machine's other cores run other chunks). This module
imports numba at import time; :mod:`interestflow.candidates` imports it inside functions only.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["csr_topk", "dense_topk", "union_rows", "fill_sources", "weighted_columns",
           "pair_dots"]


@nb.njit(nogil=True, cache=True, inline="always")
def _before(va, ca, pa, vb, cb, pb):
    """Entry a = (value, column, position) ranks before b: larger value first (NaN last, as
    numpy sorts it), then the lower column, then the earlier position (a stable sort)."""
    if va > vb:
        return True
    if va < vb:
        return False
    na = va != va
    nb_ = vb != vb
    if na != nb_:
        return nb_
    if ca != cb:
        return ca < cb
    return pa < pb


@nb.njit(nogil=True, cache=True, inline="always")
def _sift_down(hv, hc, hp, size, pos):
    """Restore the heap below ``pos``: every parent ranks after its children (the root is the
    entry that ranks last)."""
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and _before(hv[c], hc[c], hp[c], hv[c + 1], hc[c + 1], hp[c + 1]):
            c += 1  # the child that ranks later
        if not _before(hv[pos], hc[pos], hp[pos], hv[c], hc[c], hp[c]):
            break
        hv[pos], hv[c] = hv[c], hv[pos]
        hc[pos], hc[c] = hc[c], hc[pos]
        hp[pos], hp[c] = hp[c], hp[pos]
        pos = c


@nb.njit(nogil=True, cache=True, inline="always")
def _push(hv, hc, hp, size, k, v, col, p):
    """Offer (v, col, p) to a heap of at most ``k`` entries; returns the new size."""
    if size < k:
        pos = size
        hv[pos], hc[pos], hp[pos] = v, col, p
        while pos > 0:  # sift up
            par = (pos - 1) // 2
            if not _before(hv[par], hc[par], hp[par], hv[pos], hc[pos], hp[pos]):
                break
            hv[pos], hv[par] = hv[par], hv[pos]
            hc[pos], hc[par] = hc[par], hc[pos]
            hp[pos], hp[par] = hp[par], hp[pos]
            pos = par
        return size + 1
    if _before(v, col, p, hv[0], hc[0], hp[0]):
        hv[0], hc[0], hp[0] = v, col, p
        _sift_down(hv, hc, hp, size, 0)
    return size


@nb.njit(nogil=True, cache=True, inline="always")
def _drain(hv, hc, hp, size):
    """Sort the heap in place, best first (pops the last-ranked entry to the back)."""
    n = size
    while n > 1:
        n -= 1
        hv[0], hv[n] = hv[n], hv[0]
        hc[0], hc[n] = hc[n], hc[0]
        hp[0], hp[n] = hp[n], hp[0]
        _sift_down(hv, hc, hp, n, 0)


@nb.njit(nogil=True, cache=True)
def csr_topk(indptr, indices, data, k, positive, seen_ptr, seen_idx, n_cols):
    """Top ``k`` entries of every row of a CSR block: ``(row, col, value, rank)``, rows
    ascending, each row by rank (1-based).

    The order is ``np.lexsort((indices, -data, row))`` (descending value, NaN last, ties to the
    lower column, then to the earlier entry). ``positive``: only entries ``> 0`` take part.
    ``seen_ptr`` / ``seen_idx`` (a CSR with the block's rows; ``seen_ptr`` of length 0 for
    none): a row's seen columns (all ``< n_cols``) take no part. ``value`` keeps
    ``data``'s dtype.
    """
    m = len(indptr) - 1
    if k <= 0:
        m = 0
    has_seen = len(seen_ptr) > 0
    mark = np.full(n_cols if has_seen else 0, -1, np.int64)
    width = 0
    total = 0
    for r in range(m):
        n = indptr[r + 1] - indptr[r]
        width = max(width, min(n, k))
        total += min(n, k)
    out_r = np.empty(total, np.int64)
    out_c = np.empty(total, np.int64)
    out_v = np.empty(total, data.dtype)
    out_k = np.empty(total, np.int64)
    hv = np.empty(width, data.dtype)
    hc = np.empty(width, np.int64)
    hp = np.empty(width, np.int64)
    o = 0
    for r in range(m):
        if has_seen:
            for t in range(seen_ptr[r], seen_ptr[r + 1]):
                mark[seen_idx[t]] = r
        size = 0
        for t in range(indptr[r], indptr[r + 1]):
            v = data[t]
            if positive and not v > 0:
                continue
            col = np.int64(indices[t])
            if has_seen and mark[col] == r:
                continue
            size = _push(hv, hc, hp, size, k, v, col, t)
        _drain(hv, hc, hp, size)
        for j in range(size):
            out_r[o] = r
            out_c[o] = hc[j]
            out_v[o] = hv[j]
            out_k[o] = j + 1
            o += 1
    return out_r[:o], out_c[:o], out_v[:o], out_k[:o]


@nb.njit(nogil=True, cache=True, inline="always")
def _sift_down_vc(hv, hc, size, pos):
    """:func:`_sift_down` for entries (value, column) without NaN: ``a`` ranks before ``b``
    when ``va > vb`` or ``va == vb and ca < cb``."""
    v = hv[pos]
    col = hc[pos]
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size:
            v1 = hv[c + 1]
            v0 = hv[c]
            if v1 < v0 or (v1 == v0 and hc[c + 1] > hc[c]):
                c += 1  # the child that ranks later
        vc = hv[c]
        if vc < v or (vc == v and hc[c] > col):
            hv[pos] = vc
            hc[pos] = hc[c]
            pos = c
        else:
            break
    hv[pos] = v
    hc[pos] = col


@nb.njit(nogil=True, cache=True, inline="always")
def _emit_finite(hv, hc, size, r, o, out_r, out_c, out_v, out_k):
    """Append row ``r``'s sorted top (its finite values, with their ranks) at ``o``; returns
    the new end."""
    for j in range(size):
        v = hv[j]
        if v < np.inf:
            out_r[o] = r
            out_c[o] = hc[j]
            out_v[o] = np.float64(v)
            out_k[o] = j + 1
            o += 1
    return o


@nb.njit(nogil=True, cache=True)
def dense_topk(S, k, positive):
    """Top ``min(k, n)`` of every row of ``S`` (m, n) in the order of
    :func:`interestflow._topk.topk_rows` (descending, ties to the lower index, NaN last), then
    the finite values only: ``(row, col, value float64, rank)`` with the rank of the entry in
    that top (a ``+inf`` ahead of a value takes a rank), rows ascending, each by rank.

    ``-inf`` and NaN rank after every finite value and are dropped, so they are skipped at
    once; ``positive``: every value that is not ``> 0`` is treated as ``-inf`` (what
    ``S[~(S > 0)] = -inf`` before the call gives).
    """
    m, n = S.shape
    kk = min(k, n)
    out_r = np.empty(m * kk, np.int64)
    out_c = np.empty(m * kk, np.int64)
    out_v = np.empty(m * kk, np.float64)
    out_k = np.empty(m * kk, np.int64)
    hv = np.empty(max(kk, 1), S.dtype)
    hc = np.empty(max(kk, 1), np.int64)
    o = 0
    for r in range(m):
        size = 0
        row = S[r]
        for j in range(n):
            v = row[j]
            if positive:
                if not v > 0:
                    continue
            elif not v > -np.inf:  # -inf or NaN
                continue
            if size < kk:
                # append, then sift up while the new entry ranks after its parent (the
                # parent must rank after its children; an equal value ranks after: j is the
                # largest column so far)
                pos = size
                size += 1
                while pos > 0:
                    par = (pos - 1) >> 1
                    pv = hv[par]
                    if v <= pv:
                        hv[pos] = pv
                        hc[pos] = hc[par]
                        pos = par
                    else:
                        break
                hv[pos] = v
                hc[pos] = j
            elif v > hv[0]:  # columns ascend: an equal value ranks after the root
                hv[0] = v
                hc[0] = j
                _sift_down_vc(hv, hc, size, 0)
        # sort best first: move the last-ranked entry to the back
        t = size
        while t > 1:
            t -= 1
            v = hv[t]
            col = hc[t]
            hv[t] = hv[0]
            hc[t] = hc[0]
            hv[0] = v
            hc[0] = col
            _sift_down_vc(hv, hc, t, 0)
        o = _emit_finite(hv, hc, size, r, o, out_r, out_c, out_v, out_k)
    return out_r[:o], out_c[:o], out_v[:o], out_k[:o]


@nb.njit(nogil=True, cache=True)
def _bucket_by_row(c, rows, values):
    """``values`` grouped by row (rows in ``[0, c)``, entry order kept within a row):
    ``(start (c + 1,), grouped)``, row ``r`` owning ``grouped[start[r]:start[r + 1]]``."""
    counts = np.zeros(c + 1, np.int64)
    for e in range(len(rows)):
        counts[rows[e] + 1] += 1
    start = np.cumsum(counts)
    fill = start[:c].copy()
    buf = np.empty(len(rows), np.int64)
    for e in range(len(rows)):
        r = rows[e]
        buf[fill[r]] = values[e]
        fill[r] += 1
    return start, buf


@nb.njit(nogil=True, cache=True)
def _union_search(c, rows, items):
    """:func:`union_rows` for any item range: a sort of the items per row, then a binary
    search of every entry's item."""
    n = len(rows)
    start, buf = _bucket_by_row(c, rows, np.asarray(items, np.int64))
    indptr = np.zeros(c + 1, np.int64)
    out = np.empty(n, np.int64)
    o = 0
    for r in range(c):
        seg = buf[start[r]:start[r + 1]]
        seg.sort()
        for j in range(len(seg)):
            if j == 0 or seg[j] != seg[j - 1]:
                out[o] = seg[j]
                o += 1
        indptr[r + 1] = o
    pos = np.empty(n, np.int64)
    for e in range(n):
        r = rows[e]
        lo, hi = indptr[r], indptr[r + 1]
        x = items[e]
        while lo < hi:
            mid = (lo + hi) >> 1
            if out[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        pos[e] = lo
    return indptr, out[:o].copy(), pos


@nb.njit(nogil=True, cache=True)
def union_rows(c, rows, items):
    """Union of (row, item) entries (rows in ``[0, c)``, items ``>= 0``): ``(indptr (c + 1,),
    union items, pos)``, the union sorted by row then item (``np.unique(row * n_items +
    item)``), ``pos[e]`` the place of entry ``e`` in it.

    The entries are bucketed by row as keys ``item << b | e`` (``2**b > len(rows)``); a sort of
    a row's keys orders it by item and carries each entry's index along."""
    n = len(rows)
    b = 1
    while (np.int64(1) << b) <= n:
        b += 1
    top = np.int64(0)
    for e in range(n):
        top = max(top, np.int64(items[e]))
    if b >= 62 or top >= (np.int64(1) << (62 - b)):
        return _union_search(c, rows, items)
    keys = np.empty(n, np.int64)
    for e in range(n):
        keys[e] = (np.int64(items[e]) << b) | e
    start, buf = _bucket_by_row(c, rows, keys)
    mask = (np.int64(1) << b) - 1
    indptr = np.zeros(c + 1, np.int64)
    out = np.empty(n, np.int64)
    pos = np.empty(n, np.int64)
    o = -1
    for r in range(c):
        seg = buf[start[r]:start[r + 1]]
        seg.sort()
        prev = np.int64(-1)
        for j in range(len(seg)):
            it = seg[j] >> b
            if it != prev:
                o += 1
                out[o] = it
                prev = it
            pos[seg[j] & mask] = o
        indptr[r + 1] = o + 1
    return indptr, out[:o + 1].copy(), pos


@nb.njit(nogil=True, cache=True)
def fill_sources(F, pos, vals, ranks, src_ptr, src_score, src_rank, score_cols, rank_cols,
                 n_sources_col):
    """The per-source columns of the union's feature rows ``F`` (zeros on entry).

    Every score column of ``score_cols`` starts NaN (rank columns ``rank_cols`` stay 0). The
    ``s``-th source with entries owns entries ``src_ptr[s]:src_ptr[s + 1]`` of ``pos`` /
    ``vals`` / ``ranks`` and writes ``F[pos, src_score[s]] = float32(val)`` and
    ``F[pos, src_rank[s]] = float32(rank)`` in entry order (an entry repeated inside a source:
    the last write stays, as with numpy's fancy assignment). Then ``F[:, n_sources_col]`` is
    the number of rank columns ``> 0``."""
    nnz = F.shape[0]
    for i in range(nnz):
        for j in range(len(score_cols)):
            F[i, score_cols[j]] = np.nan
    for s in range(len(src_ptr) - 1):
        cs = src_score[s]
        cr = src_rank[s]
        for e in range(src_ptr[s], src_ptr[s + 1]):
            p = pos[e]
            F[p, cs] = np.float32(vals[e])
            F[p, cr] = np.float32(ranks[e])
    for i in range(nnz):
        cnt = 0
        for j in range(len(rank_cols)):
            if F[i, rank_cols[j]] > 0:
                cnt += 1
        F[i, n_sources_col] = np.float32(cnt)


@nb.njit(nogil=True, cache=True, inline="always")
def _einsum_dot(W, MT, r, i, K):
    """``np.einsum("ij,ji->i")``'s float64 sum of ``W[r, j] * MT[i, j]``: see
    :func:`weighted_columns`."""
    l0 = 0.0
    l1 = 0.0
    c = 0
    while K - c >= 8:
        l0 += np.float64(W[r, c + 6]) * np.float64(MT[i, c + 6])
        l1 += np.float64(W[r, c + 7]) * np.float64(MT[i, c + 7])
        l0 += np.float64(W[r, c + 4]) * np.float64(MT[i, c + 4])
        l1 += np.float64(W[r, c + 5]) * np.float64(MT[i, c + 5])
        l0 += np.float64(W[r, c + 2]) * np.float64(MT[i, c + 2])
        l1 += np.float64(W[r, c + 3]) * np.float64(MT[i, c + 3])
        l0 += np.float64(W[r, c]) * np.float64(MT[i, c])
        l1 += np.float64(W[r, c + 1]) * np.float64(MT[i, c + 1])
        c += 8
    while c < K:
        l0 += np.float64(W[r, c]) * np.float64(MT[i, c])
        if c + 1 < K:
            l1 += np.float64(W[r, c + 1]) * np.float64(MT[i, c + 1])
        c += 2
    return (l0 + l1) + 0.0


@nb.njit(nogil=True, cache=True)
def weighted_columns(W, MT, row, item, F, col):
    """``F[e, col] = float32(sum_j float64(W[row[e], j]) * float64(MT[item[e], j]))`` (``MT``
    the (n_items, K) transpose of the per-segment matrix).

    The sum runs in the order of numpy's ``np.einsum("ij,ji->i", w, M[:, items])`` with a
    float64 ``w``: its reduction loop (``sum_of_products_contig_contig_outstride0_two``, two
    float64 lanes at numpy's SSE/NEON baseline) gives lane ``l`` the products ``j = l mod 2``,
    taken in blocks of 8 as ``j + 6, j + 4, j + 2, j``, then the tail in order, then adds the
    two lanes and the (zero) output. Products of float32 inputs are exact in float64, so
    numpy's FMA or not makes no difference. Two entries are summed side by side (independent
    chains, each in that order; both matrices in one loop was slower).
    """
    K = W.shape[1]
    n = len(row)
    e = 0
    while e + 1 < n:
        a = _einsum_dot(W, MT, row[e], item[e], K)
        b = _einsum_dot(W, MT, row[e + 1], item[e + 1], K)
        F[e, col] = np.float32(a)
        F[e + 1, col] = np.float32(b)
        e += 2
    if e < n:
        F[e, col] = np.float32(_einsum_dot(W, MT, row[e], item[e], K))


@nb.njit(nogil=True, cache=True)
def pair_dots(U, V, row, item, out):
    """``out[e] = float32(sum_d float64(U[row[e], d]) * float64(V[item[e], d]))``, the sum in
    index order (:func:`~interestflow.kernels.numba_ivf.rescore`'s arithmetic). Runs of eight
    entries of one row are summed side by side (independent chains; each keeps its order: a
    float64 add waits for the previous one, so one chain at a time is latency-bound)."""
    dim = U.shape[1]
    n = len(row)
    e = 0
    while e < n:
        r = row[e]
        if e + 7 < n and row[e + 7] == r and row[e + 1] == r and row[e + 2] == r \
                and row[e + 3] == r and row[e + 4] == r and row[e + 5] == r \
                and row[e + 6] == r:
            i0, i1, i2, i3 = item[e], item[e + 1], item[e + 2], item[e + 3]
            i4, i5, i6, i7 = item[e + 4], item[e + 5], item[e + 6], item[e + 7]
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
            for d in range(dim):
                x = np.float64(U[r, d])
                a0 += x * np.float64(V[i0, d])
                a1 += x * np.float64(V[i1, d])
                a2 += x * np.float64(V[i2, d])
                a3 += x * np.float64(V[i3, d])
                a4 += x * np.float64(V[i4, d])
                a5 += x * np.float64(V[i5, d])
                a6 += x * np.float64(V[i6, d])
                a7 += x * np.float64(V[i7, d])
            out[e] = np.float32(a0)
            out[e + 1] = np.float32(a1)
            out[e + 2] = np.float32(a2)
            out[e + 3] = np.float32(a3)
            out[e + 4] = np.float32(a4)
            out[e + 5] = np.float32(a5)
            out[e + 6] = np.float32(a6)
            out[e + 7] = np.float32(a7)
            e += 8
        else:
            i0 = item[e]
            a0 = 0.0
            for d in range(dim):
                a0 += np.float64(U[r, d]) * np.float64(V[i0, d])
            out[e] = np.float32(a0)
            e += 1
