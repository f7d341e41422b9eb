"""Incremental update of a fixed set of segments after some users' vectors changed
(:func:`update_segments`): a standalone step for callers that keep their own segments.
(:meth:`InterestEngine.partial_fit` has its own: it assigns the affected users to the
current centroids and refits, warm-started, only when the segments drift.)"""

from __future__ import annotations

import numpy as np

from .._utils import check_int, unit_rows
from ._checks import float_rows
from ._clustering import nearest_centroid, run_kmeans

__all__ = ["update_segments"]


def update_segments(user_vectors, previous_centroids, changed_rows=None, *,
                    previous_labels=None, n_iter=3, random_state=0, backend="auto",
                    device=None):
    """Update segments after some users' vectors changed, warm-started from the old centroids.

    1. Rows in ``changed_rows`` (and every row when ``previous_labels`` is None, or rows past
       the end of ``previous_labels``: new users) are assigned to their most cosine-similar
       previous centroid; other rows keep ``previous_labels``.
    2. Centroids become the unit-scaled mean of their members (a segment left without
       members keeps its previous centroid).
    3. Up to ``n_iter`` Lloyd iterations over all rows (:class:`interestflow.KMeans` started
       from those centroids), stopping early when no label changes.

    What equals a full refit: with ``n_iter`` large enough to converge, the result is exactly
    ``KMeans(K, init=<centroids of step 2>)`` run to convergence on all unit vectors (a Lloyd
    fixed point). What does not: K stays that of ``previous_centroids`` (no segment appears or
    vanishes; refit with the tracker or the engine for that), and a fresh fit (k-means++
    restarts) may reach a different local optimum. With ``n_iter=0`` unchanged rows keep their
    labels exactly and only the changed rows move.

    Parameters
    ----------
    user_vectors : ndarray, shape (n_users, dim)
        Current user vectors (any scale; rows are unit-scaled).
    previous_centroids : ndarray, shape (n_segments, dim)
        Centroids of the previous fit.
    changed_rows : array-like of int, shape (n_changed,), optional
        Rows whose vectors changed since the previous fit.
    previous_labels : array-like of int, shape (n_previous,), optional
        Labels of the previous fit for rows ``0 .. n_previous - 1`` (``n_previous <=
        n_users``); values in ``0 .. n_segments - 1``.
    n_iter : int, default 3
        Lloyd iterations over all rows after the update (0 = none).
    random_state : int, default 0
        Seed (used by K-means to re-seed an empty cluster).
    backend : str, default "auto"
        K-means / top-k backend.
    device : str, optional
        K-means device.

    Returns
    -------
    labels : ndarray of int64, shape (n_users,)
    centroids : ndarray of float32, shape (n_segments, dim)
        Unit rows.

    Examples
    --------
    >>> import numpy as np
    >>> c = np.eye(2, dtype=np.float32)
    >>> v = np.array([[1, 0.1], [0.1, 1], [0.9, 0.2]], np.float32)
    >>> labels, cents = update_segments(v, c, [2], previous_labels=[0, 1, 1], n_iter=0)
    >>> labels.tolist()
    [0, 1, 0]
    """
    x, c0 = _check_vectors(user_vectors, previous_centroids)
    n, k = len(x), len(c0)
    n_iter = check_int("n_iter", n_iter, 0)
    xu = unit_rows(x, precision="float32")
    cu = unit_rows(c0, precision="float32")
    if previous_labels is None:
        labels = nearest_centroid(xu, cu, backend)
    else:
        labels, move = _kept_labels(previous_labels, changed_rows, n, k)
        if move.any():
            labels[move] = nearest_centroid(xu[move], cu, backend)
    sums = np.zeros((k, x.shape[1]), np.float64)
    np.add.at(sums, labels, xu)
    counts = np.bincount(labels, minlength=k)
    cents = unit_rows(np.where(counts[:, None] > 0, sums, cu), precision="float32")
    if n_iter == 0 or n < k:
        return labels, cents
    labels, cents, _ = run_kmeans(xu, k, cents, random_state=random_state, backend=backend,
                                  device=device, max_iter=n_iter)
    return labels, unit_rows(cents, precision="float32")


def _check_vectors(user_vectors, previous_centroids):
    """``(user_vectors, previous_centroids)`` as arrays: 2-D floats of one dimension, at
    least one row each, finite; no all-zero centroid."""
    x = float_rows(user_vectors, "user_vectors")
    if len(x) == 0:
        raise ValueError("user_vectors has no rows")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"user_vectors has NaN or inf at row {int(np.argmax(bad))}")
    c0 = np.asarray(previous_centroids)
    if c0.ndim != 2 or c0.shape[1] != x.shape[1] or c0.dtype.kind != "f" or len(c0) == 0:
        raise ValueError(f"previous_centroids must be a float array (n_segments, dim={x.shape[1]}"
                         f"), got shape {c0.shape} dtype {c0.dtype}")
    if not np.isfinite(c0).all() or (np.linalg.norm(c0, axis=1) == 0).any():
        raise ValueError("previous_centroids must be finite, non-zero rows")
    return x, c0


def _kept_labels(previous_labels, changed_rows, n: int, k: int):
    """``(labels (n,) int64, move (n,) bool)``: the previous labels, and which rows are to be
    assigned again (new rows past ``previous_labels``, and ``changed_rows``)."""
    prev = np.asarray(previous_labels)
    if prev.ndim != 1 or prev.dtype.kind not in "iu":
        raise TypeError(f"previous_labels must be a 1-D int array, got shape {prev.shape} "
                        f"dtype {prev.dtype}")
    if len(prev) > n:
        raise ValueError(f"previous_labels has {len(prev)} entries but user_vectors has {n} "
                         "rows; pass at most one label per row")
    out = (prev < 0) | (prev >= k)
    if out.any():
        i = int(np.argmax(out))
        raise ValueError(f"previous_labels[{i}]={prev[i]} is not a segment of "
                         f"previous_centroids (0..{k - 1})")
    labels = np.empty(n, np.int64)
    labels[:len(prev)] = prev
    move = np.zeros(n, bool)
    move[len(prev):] = True
    if changed_rows is not None:
        ch = np.asarray(changed_rows)
        if ch.ndim != 1 or (len(ch) and ch.dtype.kind not in "iu"):
            raise TypeError(f"changed_rows must be a 1-D int array, got shape {ch.shape} "
                            f"dtype {ch.dtype}")
        if len(ch) and (ch.min() < 0 or ch.max() >= n):
            i = int(np.argmax((ch < 0) | (ch >= n)))
            raise ValueError(f"changed_rows[{i}]={ch[i]} is not a row of user_vectors "
                             f"(0..{n - 1})")
        move[ch.astype(np.int64)] = True
    return labels, move
