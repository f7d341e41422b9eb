"""Deterministic top-k of score rows: descending, ties to the lower index.

Shared by the recommender and the candidate generator (one definition of the order).
"""

from __future__ import annotations

import numpy as np


def topk_row(row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of ``row``: descending, ties to the lower index."""
    n = row.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, np.int64)
    if k < n:
        part = np.argpartition(-row, k - 1)[:k]
        v = row[part].min()
        greater = np.flatnonzero(row > v)
        equal = np.flatnonzero(row == v)[: k - len(greater)]
        cand = np.concatenate([greater, equal])
    else:
        cand = np.arange(n)
    return cand[np.lexsort((cand, -row[cand]))].astype(np.int64)


def topk_rows(F: np.ndarray, k: int) -> np.ndarray:
    """Row-wise :func:`topk_row` of a (m, n) matrix: (m, min(k, n)) indices.

    Vectorised; rows where a tie crosses the k-th place are redone one by one so that the
    lower item rows win, exactly as in :func:`topk_row`.
    """
    m, n = F.shape
    kk = min(k, n)
    if kk == 0 or m == 0:
        return np.zeros((m, kk), np.int64)
    if kk < n:
        part = np.argpartition(-F, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(n), (m, n)).copy()
    vals = np.take_along_axis(F, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    out = np.take_along_axis(part, order, axis=1).astype(np.int64)
    if kk < n:
        v = vals.min(axis=1, keepdims=True)
        ambiguous = (F == v).sum(axis=1) > (vals == v).sum(axis=1)
        for r in np.flatnonzero(ambiguous):
            out[r] = topk_row(F[r], kk)
    return out
