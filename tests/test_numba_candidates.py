"""The candidate stage's numba kernels (interestflow.kernels.numba_candidates) against the numpy
code they replaced: hand-made rows with ties, -inf / +inf / NaN, empty rows and seen items,
then random blocks with many ties. Every comparison is exact (NaN equal to NaN)."""

import numpy as np
import pytest
import scipy.sparse as sp

from interestflow._topk import topk_rows
from interestflow.candidates import (FEATURE_NAMES, SOURCES, _csr_topk, _dense_topk,
                                     _pair_cosines)

nc = pytest.importorskip("interestflow.kernels.numba_candidates")
NO = np.zeros(0, np.int64)


# ------------------------------------------------------------------ numpy references
def ref_csr_topk(indptr, indices, data, k):
    n = len(indices)
    if n == 0 or k == 0:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0), z
    row = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    order = np.lexsort((indices, -data, row))
    row, col, val = row[order], indices[order], data[order]
    rank = np.arange(n) - np.repeat(np.asarray(indptr[:-1], np.int64), np.diff(indptr)) + 1
    keep = rank <= k
    return row[keep], col[keep].astype(np.int64), val[keep], rank[keep].astype(np.int64)


def ref_sparse_source(S, seen, cut):
    S = S.copy()
    S.eliminate_zeros()
    indptr, indices, data = S.indptr.astype(np.int64), S.indices.astype(np.int64), S.data
    keep = data > 0
    if seen is not None and len(seen[1]):
        row = np.repeat(np.arange(S.shape[0]), np.diff(indptr))
        n = S.shape[1]
        seen_row = np.repeat(np.arange(S.shape[0]), np.diff(seen[0]))
        keep &= ~np.isin(row * n + indices, seen_row * n + seen[1])
    if not keep.all():
        row = np.repeat(np.arange(S.shape[0]), np.diff(indptr))[keep]
        indices, data = indices[keep], data[keep]
        indptr = np.zeros(S.shape[0] + 1, np.int64)
        np.cumsum(np.bincount(row, minlength=S.shape[0]), out=indptr[1:])
    return ref_csr_topk(indptr, indices, data.astype(np.float64), cut)


def ref_dense_topk(S, k):
    m, n = S.shape
    kk = min(k, n)
    if m == 0 or kk == 0:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0), z
    top = topk_rows(S, kk)
    val = np.take_along_axis(S, top, axis=1)
    row = np.repeat(np.arange(m), kk).reshape(m, kk)
    rank = np.broadcast_to(np.arange(1, kk + 1), (m, kk))
    ok = np.isfinite(val)
    return row[ok], top[ok], val[ok].astype(np.float64), rank[ok].astype(np.int64)


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert np.asarray(g).dtype == np.asarray(w).dtype
        np.testing.assert_array_equal(g, w)


def sparse_source(S, seen, cut):
    """The kernel call of CandidateGenerator._sparse_source (the method without the class)."""
    from interestflow.candidates import CandidateGenerator
    return CandidateGenerator._sparse_source(None, S.copy(), seen, cut)


# ------------------------------------------------------------------------ hand-made
INF, NAN = np.inf, np.nan
# CSR rows: ties in value (to the lower column, columns given out of order), -inf, +inf, NaN,
# zeros and negatives (dropped by the positive filter), an empty row, a row shorter than k
CSR_ROWS = [
    [(5, 1.0), (2, 1.0), (7, 3.0), (0, 1.0), (3, -INF), (9, 2.0)],
    [],
    [(4, NAN), (1, 0.5), (6, INF), (8, 0.0), (2, -1.0), (0, 0.5)],
    [(3, 2.0)],
    [(9, 0.25), (8, 0.25), (7, 0.25), (6, 0.25), (5, 0.25)],
]


def _csr(rows, n_cols=10):
    ptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    idx = np.array([c for r in rows for c, _ in r], np.int64)
    val = np.array([v for r in rows for _, v in r], np.float64)
    return ptr, idx, val, n_cols


@pytest.mark.parametrize("k", [1, 2, 3, 4, 10])
def test_csr_topk_hand_made(k):
    ptr, idx, val, _ = _csr(CSR_ROWS)
    assert_same(_csr_topk(ptr, idx, val, k), ref_csr_topk(ptr, idx, val, k))
    assert_same(_csr_topk(ptr, idx.astype(np.int32), val, k), ref_csr_topk(ptr, idx, val, k))


def test_csr_topk_hand_made_values():
    ptr, idx, val, _ = _csr(CSR_ROWS)
    row, col, v, rank = _csr_topk(ptr, idx, val, 3)
    # row 0: 3.0 (col 7), 2.0 (col 9), then the tie at 1.0 goes to the lowest column 0
    assert col[row == 0].tolist() == [7, 9, 0] and rank[row == 0].tolist() == [1, 2, 3]
    # row 2: +inf first, then the 0.5 tie to the lower column; NaN sorts last
    assert col[row == 2].tolist() == [6, 0, 1]
    assert 1 not in row.tolist()


@pytest.mark.parametrize("k", [1, 2, 3, 10])
def test_sparse_source_hand_made_with_seen(k):
    ptr, idx, val, n = _csr(CSR_ROWS)
    S = sp.csr_matrix((val, idx, ptr), shape=(len(CSR_ROWS), n))
    seen = (np.array([0, 2, 2, 4, 4, 5], np.int64), np.array([7, 3, 6, 1, 3], np.int64))
    for s in (None, seen, (np.zeros(6, np.int64), NO)):
        assert_same(sparse_source(S, s, k), ref_sparse_source(S, s, k))


DENSE = np.array([
    [1.0, 3.0, 3.0, -INF, 2.0, 3.0, 0.0, -0.0],
    [-INF, -INF, -INF, -INF, -INF, -INF, -INF, -INF],
    [INF, 1.0, NAN, 1.0, -INF, 1.0, 2.0, 1.0],
    [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    [NAN, NAN, 4.0, NAN, -1.0, NAN, NAN, NAN],
    [0.0, -0.0, 0.0, -0.0, 1.0, 0.0, -0.0, 0.0],
])


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8, 20])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dense_topk_hand_made(k, dtype):
    S = DENSE.astype(dtype)
    assert_same(_dense_topk(S, k), ref_dense_topk(S, k))
    P = S.copy()
    P[~(P > 0)] = -np.inf  # what _segment did before the kernel's positive flag
    assert_same(_dense_topk(S, k, positive=True), ref_dense_topk(P, k))
    assert_same(_dense_topk(S[:0], k), ref_dense_topk(S[:0], k))
    assert_same(_dense_topk(S[:, :0], k), ref_dense_topk(S[:, :0], k))


def test_dense_topk_hand_made_values():
    row, col, val, rank = _dense_topk(DENSE, 3)
    assert col[row == 0].tolist() == [1, 2, 5]  # the tie at 3.0 to the lower columns
    assert 1 not in row.tolist()  # only -inf
    # +inf takes rank 1 and is dropped (not finite); the 1.0 tie to the lower column
    assert col[row == 2].tolist() == [6, 1] and rank[row == 2].tolist() == [2, 3]
    assert col[row == 4].tolist() == [2, 4]  # NaN ranks last


def test_union_and_fill_hand_made():
    """The union of the sources' entries and their score / rank columns, against
    np.unique of row * n_items + item and searchsorted (with an empty row and a source
    without entries)."""
    n_items, c = 10, 4
    found = {
        "content": (np.array([0, 0, 0, 2, 3]), np.array([5, 1, 9, 4, 0]),
                    np.array([0.5, 0.25, -1.0, 1 / 3, 2.0]), np.array([1, 2, 3, 1, 1])),
        "item_knn": (NO, NO, np.zeros(0), NO),
        "popularity": (np.array([0, 0, 2, 2, 3]), np.array([1, 3, 4, 8, 0]),
                       np.array([7.0, 6.0, 5.0, 4.0, 0.1]), np.array([1, 2, 1, 2, 1])),
        "segment_trending": (np.array([3, 3]), np.array([9, 0]), np.array([0.7, 0.6]),
                             np.array([1, 2])),
    }
    col = {n: j for j, n in enumerate(FEATURE_NAMES)}
    # reference: the numpy union
    keys = [f[0] * n_items + f[1] for f in found.values()]
    allk = np.unique(np.concatenate(keys))
    want = np.zeros((len(allk), len(FEATURE_NAMES)), np.float32)
    for s in SOURCES:
        want[:, col[f"{s}_score"]] = np.nan
    for s, (r, it, val, rank) in found.items():
        pos = np.searchsorted(allk, r * n_items + it)
        want[pos, col[f"{s}_score"]] = val
        want[pos, col[f"{s}_rank"]] = rank
    want[:, col["n_sources"]] = (want[:, [col[f"{s}_rank"] for s in SOURCES]] > 0).sum(axis=1)
    # kernels
    names = list(found)
    indptr, items, pos = nc.union_rows(c, np.concatenate([found[s][0] for s in names]),
                                       np.concatenate([found[s][1] for s in names]))
    np.testing.assert_array_equal(indptr, np.searchsorted(allk // n_items, np.arange(c + 1)))
    np.testing.assert_array_equal(items, allk % n_items)
    F = np.zeros_like(want)
    src_ptr = np.cumsum([0] + [len(found[s][0]) for s in names]).astype(np.int64)
    cols = lambda kind, which: np.array([col[f"{s}_{kind}"] for s in which], np.int64)
    nc.fill_sources(F, pos, np.concatenate([found[s][2] for s in names]),
                    np.concatenate([found[s][3] for s in names]), src_ptr,
                    cols("score", names), cols("rank", names), cols("score", SOURCES),
                    cols("rank", SOURCES), col["n_sources"])
    np.testing.assert_array_equal(F, want)


@pytest.mark.parametrize("K", [1, 2, 3, 7, 8, 9, 16, 31, 32, 33, 64])
def test_weighted_columns_equal_einsum_bits(K):
    """The segment features: np.einsum("ij,ji->i", float64 weights, M[:, items]) bit for bit
    (before and after the float32 rounding) with float32 and float64 M."""
    rng = np.random.default_rng(K)
    n, n_items = 3000, 500
    W = rng.random((40, K)).astype(np.float32)
    W[3] = 0.0
    row = np.sort(rng.integers(0, 40, n))
    item = rng.integers(0, n_items, n)
    for M in ((rng.random((K, n_items)) ** 3).astype(np.float32),
              rng.normal(size=(K, n_items)), rng.normal(size=(K, n_items)).astype(np.float32)):
        want = np.einsum("ij,ji->i", W[row].astype(np.float64), np.asarray(M[:, item]))
        F = np.zeros((n, 3), np.float32)
        nc.weighted_columns(W, np.ascontiguousarray(M.T), row, item, F, 1)
        np.testing.assert_array_equal(F[:, 1].view(np.uint32),
                                      want.astype(np.float32).view(np.uint32))
        assert not F[:, [0, 2]].any()
        F = np.zeros((n - 1, 3), np.float32)  # an odd count (the last entry alone)
        nc.weighted_columns(W, np.ascontiguousarray(M.T), row[1:], item[1:], F, 0)
        np.testing.assert_array_equal(F[:, 0].view(np.uint32),
                                      want[1:].astype(np.float32).view(np.uint32))


def test_pair_cosines_equal_rescore():
    from interestflow.kernels import numba_ivf

    rng = np.random.default_rng(0)
    U = rng.normal(size=(6, 37)).astype(np.float32)
    V = rng.normal(size=(50, 37)).astype(np.float32)
    counts = np.array([5, 0, 1, 4, 9, 3])
    row = np.repeat(np.arange(6), counts)
    item = rng.integers(0, 50, len(row))
    R = np.full((6, counts.max()), -1, np.int64)
    pos = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    R[row, pos] = item
    out = np.empty(R.shape, np.float32)
    numba_ivf.rescore(U, V, R, out)
    np.testing.assert_array_equal(_pair_cosines(U, V, row, item).view(np.uint32),
                                  out[row, pos].view(np.uint32))
    assert _pair_cosines(U, V, row[:0], item[:0]).shape == (0,)


# --------------------------------------------------------------------------- random
@pytest.mark.parametrize("seed", range(4))
def test_random_blocks_with_ties(seed):
    rng = np.random.default_rng(seed)
    m, n = 60, 90
    D = rng.integers(-2, 5, (m, n)).astype(np.float64)  # many ties
    D[rng.random((m, n)) < 0.1] = -np.inf
    D[rng.random((m, n)) < 0.02] = np.nan
    D[5] = -np.inf
    P = D.copy()
    P[~(P > 0)] = -np.inf
    D[rng.random((m, n)) < 0.02] = np.inf
    for k in (1, 7, 50, 90, 200):
        assert_same(_dense_topk(D, k), ref_dense_topk(D, k))
        assert_same(_dense_topk(D.astype(np.float32), k),
                    ref_dense_topk(D.astype(np.float32), k))
        assert_same(_dense_topk(P, k, positive=True), ref_dense_topk(P, k))
    S = sp.random(m, n, density=0.3, random_state=seed, format="csr")
    S.data = rng.integers(-1, 4, len(S.data)).astype(np.float64)
    S.data[rng.random(len(S.data)) < 0.05] = np.nan
    seen = sp.random(m, n, density=0.1, random_state=seed + 10, format="csr")
    seen = (seen.indptr.astype(np.int64), seen.indices.astype(np.int64))
    for k in (1, 5, 30, 100):
        assert_same(_csr_topk(S.indptr, S.indices, S.data, k),
                    ref_csr_topk(S.indptr, S.indices, S.data, k))
        assert_same(sparse_source(S, seen, k), ref_sparse_source(S, seen, k))
        assert_same(sparse_source(S, None, k), ref_sparse_source(S, None, k))


@pytest.mark.parametrize("seed", range(3))
def test_union_rows_random(seed):
    rng = np.random.default_rng(seed)
    c, n_items = 50, 40
    rows = np.sort(rng.integers(0, c, 600))
    rows[rows == 7] = 8  # an empty row
    items = rng.integers(0, n_items, len(rows))
    keys = rows * n_items + items
    allk = np.unique(keys)
    for it, scale in ((items, 1), (items * (1 << 50), 1 << 50)):  # (2nd: the fallback path)
        indptr, union, pos = nc.union_rows(c, rows, it)
        np.testing.assert_array_equal(union, (allk % n_items) * scale)
        np.testing.assert_array_equal(indptr, np.searchsorted(allk // n_items,
                                                              np.arange(c + 1)))
        np.testing.assert_array_equal(pos, np.searchsorted(allk, keys))
