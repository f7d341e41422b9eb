"""numba CPU kernels of the candidate stage's per-chunk work (:mod:`interestflow.candidates`).

Each kernel gives exactly what the numpy code it replaced gives (same entries, same order,
same values to the bit); the numpy definitions are kept in the docstrings and checked against
in ``tests/test_candidates.py``.

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


@nb.njit(nogil=True, cache=True)
def dense_topk(S, k):
    """Top ``min(k, n)`` of every row of ``S`` (m, n) in the order of
    :func:`interestflow._topk.topk_rows` (descending, ties to the lower index, NaN last), then
    the finite values only: ``(row, col, value float64, rank)`` with the rank of the entry in
    that top (so a ``+inf`` ahead of a value takes a rank), rows ascending, each by rank."""
    m, n = S.shape
    kk = min(k, n)
    out_r = np.empty(m * kk, np.int64)
    out_c = np.empty(m * kk, np.int64)
    out_v = np.empty(m * kk, np.float64)
    out_k = np.empty(m * kk, np.int64)
    hv = np.empty(kk, S.dtype)
    hc = np.empty(kk, np.int64)
    hp = np.zeros(kk, np.int64)  # the column is the position: no tie is left
    o = 0
    for r in range(m):
        size = 0
        row = S[r]
        for j in range(n):
            v = row[j]
            if size == kk:
                # columns come in ascending order: only a strictly better value (or any
                # value over a NaN root) displaces the last-ranked entry
                h = hv[0]
                if not (v > h or (h != h and v == v)):
                    continue
            size = _push(hv, hc, hp, size, kk, v, np.int64(j), 0)
        _drain(hv, hc, hp, size)
        for j in range(size):
            v = hv[j]
            if np.isfinite(v):
                out_r[o] = r
                out_c[o] = hc[j]
                out_v[o] = np.float64(v)
                out_k[o] = j + 1
                o += 1
    return out_r[:o], out_c[:o], out_v[:o], out_k[:o]


@nb.njit(nogil=True, cache=True)
def union_rows(c, rows, items):
    """Union of (row, item) entries (rows in ``[0, c)``): ``(indptr (c + 1,), union items,
    pos)``, the union sorted by row then item (``np.unique(row * n_items + item)``), ``pos[e]``
    the place of entry ``e`` in it."""
    n = len(rows)
    counts = np.zeros(c + 1, np.int64)
    for e in range(n):
        counts[rows[e] + 1] += 1
    start = np.cumsum(counts)  # start[r]: first slot of row r in the bucketed entries
    fill = start[:c].copy()
    buf = np.empty(n, np.int64)
    for e in range(n):
        r = rows[e]
        buf[fill[r]] = items[e]
        fill[r] += 1
    indptr = np.zeros(c + 1, np.int64)
    out = np.empty(n, np.int64)
    o = 0
    for r in range(c):
        seg = np.sort(buf[start[r]:start[r + 1]])
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
        while lo < hi:  # the union row holds x
            mid = (lo + hi) >> 1
            if out[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        pos[e] = lo
    return indptr, out[:o].copy(), pos


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


@nb.njit(nogil=True, cache=True)
def weighted_columns(W, MT, row, item, F, col):
    """``F[e, col] = float32(sum_j float64(W[row[e], j]) * float64(MT[item[e], j]))`` (``MT``
    the (n_items, K) transpose of the per-segment matrix).

    The sum runs in the order of numpy's ``np.einsum("ij,ji->i", w, M[:, items])`` with a
    float64 ``w``: its reduction loop (``sum_of_products_contig_contig_outstride0_two``, two
    float64 lanes at numpy's SSE/NEON baseline) gives lane ``l`` the products ``j = l mod 2``,
    taken in blocks of 8 as ``j + 6, j + 4, j + 2, j``, then the tail in order, then adds the
    two lanes and the (zero) output. Products of float32 inputs are exact in float64, so
    numpy's FMA or not makes no difference.
    """
    K = W.shape[1]
    for e in range(len(row)):
        r = row[e]
        i = item[e]
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
            else:
                l1 += 0.0
            c += 2
        F[e, col] = np.float32((l0 + l1) + 0.0)


@nb.njit(nogil=True, cache=True)
def pair_dots(U, V, row, item, out):
    """``out[e] = float32(sum_d float64(U[row[e], d]) * float64(V[item[e], d]))``, the sum in
    index order (:func:`~interestflow.kernels.numba_ivf.rescore`'s arithmetic). Runs of four
    entries of one row are summed side by side (independent chains; each keeps its order)."""
    dim = U.shape[1]
    n = len(row)
    e = 0
    while e < n:
        r = row[e]
        if e + 3 < n and row[e + 1] == r and row[e + 2] == r and row[e + 3] == r:
            i0, i1, i2, i3 = item[e], item[e + 1], item[e + 2], item[e + 3]
            a0 = a1 = a2 = a3 = 0.0
            for d in range(dim):
                x = np.float64(U[r, d])
                a0 += x * np.float64(V[i0, d])
                a1 += x * np.float64(V[i1, d])
                a2 += x * np.float64(V[i2, d])
                a3 += x * np.float64(V[i3, d])
            out[e] = np.float32(a0)
            out[e + 1] = np.float32(a1)
            out[e + 2] = np.float32(a2)
            out[e + 3] = np.float32(a3)
            e += 4
        else:
            i0 = item[e]
            a0 = 0.0
            for d in range(dim):
                a0 += np.float64(U[r, d]) * np.float64(V[i0, d])
            out[e] = np.float32(a0)
            e += 1
