"""Incremental update of a fixed set of segments after some users' vectors changed.

:func:`update_segments` is the standalone update, for callers that keep their own segments.
It is built on two steps that :meth:`InterestEngine.partial_fit
<interestflow.InterestEngine.partial_fit>` uses too: :func:`assign_to_nearest` (the changed
users move to their most cosine-similar current centroid, every other user keeps its segment)
and :func:`warm_lloyd` (Lloyd iterations started from given centroids). Around them the two
differ: :func:`update_segments` recomputes the centroids as their members' means and runs up
to ``n_iter`` Lloyd iterations every time; the engine keeps its centroids, keeps the K-means
objective's running sum, and refits (re-choosing K; warm-started Lloyd when K is unchanged)
only when the segments drift or ``rechoose_k=True`` asks for it.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._utils import check_int, unit_rows
from ._checks import float_rows
from ._clustering import nearest_centroid

__all__ = ["update_segments", "assign_to_nearest", "warm_lloyd"]


def update_segments(user_vectors, previous_centroids, changed_rows=None, *,
                    previous_labels=None, n_iter=3, random_state=0, backend="auto",
                    device=None):
    """Update segments after some users' vectors changed, warm-started from the old centroids.

    1. Rows in ``changed_rows`` (and every row when ``previous_labels`` is None, or rows past
       the end of ``previous_labels``: new users) are assigned to their most cosine-similar
       previous centroid; other rows keep ``previous_labels`` (:func:`assign_to_nearest`).
    2. Centroids become the unit-scaled mean of their members (a segment left without
       members keeps its previous centroid).
    3. Up to ``n_iter`` Lloyd iterations over all rows (:func:`warm_lloyd`:
       :class:`interestflow.KMeans` started from those centroids), stopping early when no
       label changes.

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
        labels = assign_to_nearest(np.empty(n, np.int64), xu, cu, backend=backend)
    else:
        labels, move = _kept_labels(previous_labels, changed_rows, n, k)
        assign_to_nearest(labels, xu, cu, move, backend=backend)
    cents = _member_means(xu, labels, cu)
    if n_iter == 0 or n < k:
        return labels, cents
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # a segment left empty is expected here, not news
        warnings.simplefilter("ignore", ConvergenceWarning)
        return warm_lloyd(xu, cents, max_iter=n_iter, random_state=random_state,
                          backend=backend, device=device)


def assign_to_nearest(labels, unit_vectors, unit_centroids, rows=None, *, backend="auto"):
    """Move ``rows`` to their most cosine-similar centroid; every other row keeps its label.

    The first step of :func:`update_segments`, and the assignment of the users a
    :meth:`InterestEngine.partial_fit <interestflow.InterestEngine.partial_fit>` touches.

    Parameters
    ----------
    labels : ndarray of int, shape (n_users,)
        Current labels; the rows in ``rows`` are overwritten (in place).
    unit_vectors : ndarray, shape (n_users, dim)
        Unit rows.
    unit_centroids : ndarray, shape (n_segments, dim)
        Unit rows.
    rows : array-like of int or bool mask, optional
        Rows to move (index or mask into ``unit_vectors``); every row when None.
    backend : str or None, default "auto"
        Top-k backend of :func:`interestflow.kernels.cosine_topk`; None: one dense product
        on the host (``argmax`` of ``x @ unit_centroids.T``, ties to the lower row), which
        starts no kernel and suits the few rows of one update.

    Returns
    -------
    labels : ndarray of int, shape (n_users,)
        ``labels`` itself.

    Examples
    --------
    >>> import numpy as np
    >>> c = np.eye(2, dtype=np.float32)
    >>> x = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    >>> assign_to_nearest(np.array([0, 0, 0]), x, c, [1, 2], backend=None).tolist()
    [0, 1, 1]
    """
    x = unit_vectors if rows is None else unit_vectors[rows]
    if len(x) == 0:
        return labels
    if backend is None:
        new = np.argmax(x @ unit_centroids.T, axis=1).astype(np.int64)
    else:
        new = nearest_centroid(x, unit_centroids, backend)
    if rows is None:
        labels[:] = new
    else:
        labels[rows] = new
    return labels


def warm_lloyd(unit_vectors, centroids, *, max_iter=100, random_state=0, backend="auto",
               device=None):
    """Lloyd iterations over all rows, started from ``centroids`` (K stays their number).

    :class:`interestflow.KMeans` with ``init=centroids`` and one run: the last step of
    :func:`update_segments`, and the engine's refit when K is unchanged. Like ``KMeans`` it
    warns (``ConvergenceWarning``) when fewer than K distinct clusters remain.

    Parameters
    ----------
    unit_vectors : ndarray, shape (n_users, dim)
        Unit rows; ``n_users >= n_segments``.
    centroids : ndarray, shape (n_segments, dim)
        Starting centroids.
    max_iter : int, default 100
        Most Lloyd iterations (``KMeans``'s default); fewer when the labels settle.
    random_state : int, default 0
        Seed (used by K-means to re-seed an empty cluster).
    backend : str, default "auto"
        K-means backend.
    device : str, optional
        K-means device.

    Returns
    -------
    labels : ndarray of int64, shape (n_users,)
    centroids : ndarray of float32, shape (n_segments, dim)
        Unit rows.
    """
    from ..kmeans import KMeans

    km = KMeans(n_clusters=len(centroids), init=centroids, n_init=1, max_iter=max_iter,
                random_state=random_state, backend=backend, device=device)
    km.fit(unit_vectors)
    return np.asarray(km.labels_).astype(np.int64), \
        unit_rows(np.asarray(km.cluster_centers_, np.float32), precision="float32")


def _member_means(unit_vectors, labels, fallback):
    """Unit-scaled mean of each segment's members (float32); a segment without members keeps
    its row of ``fallback``."""
    k = len(fallback)
    sums = np.zeros((k, unit_vectors.shape[1]), np.float64)
    np.add.at(sums, labels, unit_vectors)
    counts = np.bincount(labels, minlength=k)
    return unit_rows(np.where(counts[:, None] > 0, sums, fallback), precision="float32")


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
