"""Clustering of one snapshot (:func:`cluster_users`: K by silhouette, warm start from the
previous centroids, small segments dissolved) and the matching of two snapshots' segments
(:func:`match_segments`). The methods are described in :mod:`interestflow.tracking`.
"""

from __future__ import annotations

import time

import numpy as np

from .._utils import blas_threads, check_int, torch_threads, unit_rows
from ..segments import candidate_ks, check_n_segments
from ._checks import float_rows

__all__ = ["cluster_users", "match_segments", "nearest_centroid", "run_kmeans"]

# A fresh k-means++ solution replaces the warm-started one only when its inertia is this much
# lower (relative): hysteresis against flip-flopping between near-equal partitions.
_FRESH_GAIN = 0.01
_FRESH_N_INIT = 3
# Without previous centroids (first snapshot) only fresh solutions exist: more restarts, so
# that K-means local optima do not mislead the silhouette (3 restarts picked a wrong K in 2 of
# 18 planted snapshots, 10 in none).
_FIRST_N_INIT = 10
# Clustering problems up to this many vector elements (n_users * dim) run with one torch
# intra-op thread and one BLAS thread: their K-means steps and silhouettes take microseconds,
# so thread start-up and barrier waits dominate, and on a busy CPU each barrier waits for a
# descheduled thread (measured 20x slower with two threads than with one on a loaded 2-core
# machine, for 143 users x 384 dims).
_SINGLE_THREAD_ELEMENTS = 1 << 18
# Users sampled (seeded) to score candidate K values, as segments.SegmentConfig.sample_size.
_K_SAMPLE = 3000


# --------------------------------------------------------------------------- primitives

def nearest_centroid(x: np.ndarray, centroids: np.ndarray, backend: str) -> np.ndarray:
    """Row of the most cosine-similar centroid for every row of ``x`` (both unit rows)."""
    from interestflow.kernels import cosine_topk

    _, idx = cosine_topk(np.ascontiguousarray(x, np.float32),
                         np.ascontiguousarray(centroids, np.float32), 1,
                         backend=backend, normalized=True)
    return np.asarray(idx)[:, 0].astype(np.int64)


def run_kmeans(x, k, init, *, random_state, backend, device, n_init=1, max_iter=100):
    """:class:`interestflow.KMeans` of ``x`` with ``k`` clusters from ``init``; returns
    ``(labels int64, centroids float32, inertia)``. Fewer distinct clusters than ``k`` pass
    without a warning (the callers dissolve small segments)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from ..kmeans import KMeans

    km = KMeans(n_clusters=int(k), init=init, n_init=n_init, max_iter=max_iter,
                random_state=random_state, backend=backend, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        km.fit(x)
    return km.labels_.astype(np.int64), np.asarray(km.cluster_centers_, np.float32), \
        float(km.inertia_)


# ----------------------------------------------------------------- one snapshot's segments

def cluster_users(user_vectors, previous_centroids=None, *, n_segments="auto", k_max=None,
                  min_segment_size=5, random_state=0, backend="auto", device=None) -> dict:
    """Segment users, warm-started from previous centroids, choosing K by silhouette.

    The clustering of one :class:`SegmentTracker` snapshot, usable on its own (e.g. to update
    an engine's segments after new events, with K free to change). For each candidate K
    (``n_segments``, or for ``"auto"`` every K of :func:`interestflow.segments.candidate_ks`
    up to ``k_max``, default ``clip(round(sqrt(n_users)), 2, 64)``):

    * a fresh K-means solution (k-means++, 3 restarts; 10 without previous centroids), and
    * with ``previous_centroids``: a warm start from the previous centroids still nearest to
      at least ``min_segment_size`` users (the K best supported, in their previous order)
      plus greedy k-means++ seeds for the rest; it is kept unless the fresh solution has
      more than 1% lower inertia (hysteresis: segments do not flip between equally good
      partitions).

    K is the candidate with the highest mean cosine silhouette (the engine's criterion; ties
    go to the smaller K), scored on a seeded sample of at most 3,000 users when there are
    more (then the chosen solution is refined on all users). Segments smaller than
    ``min_segment_size`` are then dissolved into their nearest neighbours.

    Parameters
    ----------
    user_vectors : ndarray, shape (n_users, dim)
        Unit-scaled user vectors (rows are scaled to unit length if they are not).
    previous_centroids : ndarray, shape (n_previous, dim), optional
        Centroids to warm-start from.
    n_segments : int or "auto", default "auto"
        A fixed K (capped at ``n_users``) or ``"auto"``.
    k_max : int, optional
        Largest K tried by ``"auto"``.
    min_segment_size : int, default 5
    random_state : int, default 0
    backend : str, default "auto"
        K-means / top-k backend.
    device : str, optional
        K-means device.

    Returns
    -------
    dict
        ``labels`` (int64, (n_users,), values ``0..k-1``), ``centroids`` (float32 unit rows,
        (k, dim)), ``size`` (int64, (k,)), ``resultant`` ((k,), length of each segment's mean
        of unit vectors: 1 = all members identical), ``init`` ("warm", "fresh", "first",
        "single" or "empty"), ``silhouette`` (of the chosen K; NaN when K is fixed or 1),
        ``k``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)
    >>> res = cluster_users(x + 0.01, np.eye(3, dtype=np.float32))
    >>> res["k"], res["init"], res["size"].tolist()
    (3, 'warm', [10, 10, 10])
    """
    check_n_segments(n_segments)
    if k_max is not None:
        check_int("k_max", k_max, 2)
    min_segment_size = check_int("min_segment_size", min_segment_size, 1)
    x = unit_rows(float_rows(user_vectors, "user_vectors"), precision="float32")
    n, dim = x.shape
    warm_from = None
    if previous_centroids is not None and len(previous_centroids):
        warm_from = np.asarray(previous_centroids, dtype=np.float32)
        if warm_from.ndim != 2 or warm_from.shape[1] != dim:
            raise ValueError(f"previous_centroids must have shape (n_previous, {dim}), got "
                             f"{warm_from.shape}")
        warm_from = unit_rows(warm_from, precision="float32")
    if n == 0:
        return _no_users(dim)
    small = n * dim <= _SINGLE_THREAD_ELEMENTS and (device is None or str(device) == "cpu")
    with torch_threads(1 if small else None), blas_threads(1 if small else None):
        return _cluster_users(x, warm_from, n_segments, k_max, min_segment_size, random_state,
                              backend, device)


def _no_users(dim: int) -> dict:
    """:func:`cluster_users`' result for a snapshot without users (``init="empty"``)."""
    out = {"silhouette": float("nan"), "timings": {"choose_k_s": 0.0, "cluster_s": 0.0}}
    out.update(labels=np.zeros(0, np.int64), init="empty", k=0,
               centroids=np.zeros((0, dim), np.float32), resultant=np.zeros(0),
               size=np.zeros(0, np.int64), previous_rows=np.zeros(0, np.int64))
    return out


def _cluster_users(x, warm_from, n_segments, k_max, min_segment_size, random_state, backend,
                   device) -> dict:
    """Choose K on ``x`` (or a seeded sample of it), then segment all of ``x``: refine a
    sample's solution on every user, dissolve small segments, summarise (see
    :func:`cluster_users`)."""
    n = len(x)
    t0 = time.perf_counter()
    kw = dict(random_state=random_state, backend=backend, device=device)
    ks = _k_candidates(n, n_segments, k_max)
    rng = np.random.RandomState(random_state)
    sample = x
    if len(ks) > 1 and n > _K_SAMPLE:
        sample = x[np.sort(rng.choice(n, size=_K_SAMPLE, replace=False))]
    score, k, labels, cents, _, init, origin = _choose_k(sample, ks, warm_from,
                                                         min_segment_size, rng, kw)
    t1 = time.perf_counter()
    if k == 1:
        labels = np.zeros(n, np.int64)
    else:
        if sample is not x:  # K was chosen on a sample: cluster everyone from its solution
            labels, cents, _ = run_kmeans(x, k, cents, **kw)
        labels, cents, origin = _dissolve_small(x, labels, cents, origin, min_segment_size,
                                                **kw)
    out = _summary(x, labels, cents, origin, init, score)
    out["timings"] = {"choose_k_s": t1 - t0, "cluster_s": time.perf_counter() - t1}
    return out


def _k_candidates(n, n_segments, k_max):
    """The K values to try: ``[n_segments]`` (at most ``n``), or the ``"auto"`` grid."""
    if n_segments != "auto":
        return [min(int(n_segments), n)]
    k_max = k_max if k_max is not None else int(np.clip(round(np.sqrt(n)), 2, 64))
    return candidate_ks(n, 2, k_max)


def _choose_k(sample, ks, warm_from, min_size, rng, kw) -> tuple:
    """The best candidate solution on ``sample``: ``(silhouette, k, labels, centroids,
    inertia, init, origin)``. Highest cosine silhouette (rounded to 4 decimals) wins, ties go
    to the smaller K; a solution of one distinct cluster is skipped (one K alone is taken
    without a silhouette)."""
    from sklearn.metrics import silhouette_score

    best = None
    for k in ks:
        sol = _solution(sample, k, warm_from, min_size, rng, kw)
        if len(ks) == 1:
            score = float("nan")
        elif len(np.unique(sol[0])) < 2:
            continue
        else:
            score = float(silhouette_score(sample, sol[0], metric="cosine"))
        if best is None or (round(score, 4), -k) > (round(best[0], 4), -best[1]):
            best = (score, k) + sol
    if best is None:  # every candidate collapsed to one cluster (identical vectors)
        best = (float("nan"), 1) + _single(sample)
    return best


def _single(x) -> tuple:
    """The K = 1 solution of ``x``: ``(labels, centroid, inertia NaN, "single", origin)``."""
    centroid = unit_rows(x.mean(0, keepdims=True), precision="float32")
    return (np.zeros(len(x), np.int64), centroid, float("nan"), "single",
            np.full(1, -1, np.int64))


def _solution(sample, k, warm_from, min_size, rng, kw) -> tuple:
    """The solution kept for one K: ``(labels, centroids, inertia, init, origin)``.

    A fresh k-means++ solution, and with ``warm_from`` a warm-started one that wins unless
    the fresh inertia is more than :data:`_FRESH_GAIN` lower. ``origin``: the previous row of
    each centroid's start (-1: a seed)."""
    if k == 1:
        return _single(sample)
    n_init = _FIRST_N_INIT if warm_from is None else _FRESH_N_INIT
    fresh = run_kmeans(sample, k, "k-means++", n_init=n_init, **kw)
    seeds = np.full(k, -1, np.int64)
    if warm_from is None:
        return fresh + ("first", seeds)
    init, origin = _warm_init(sample, warm_from, k, min_size, rng, kw["backend"])
    warm = run_kmeans(sample, k, init, **kw)
    # the warm start wins unless the fresh solution is clearly better
    if fresh[2] < warm[2] * (1.0 - _FRESH_GAIN):
        return fresh + ("fresh", seeds)
    return warm + ("warm", origin)


def _warm_init(x, prev_c, k, min_size, rng, backend):
    """Warm start: the previous centroids still nearest to >= ``min_size`` rows (the K best
    supported, kept in their previous order), then greedy k-means++ seeds continuing from
    them (:func:`interestflow.kmeans.kmeans_plusplus` in float64; with none kept, the first
    seed is a uniformly drawn row).

    Returns ``(init (k, dim), origin (k,))``: the previous row of each start, -1 for seeds.
    """
    from ..kmeans import kmeans_plusplus

    support = np.bincount(nearest_centroid(x, prev_c, backend), minlength=len(prev_c))
    order = np.argsort(-support, kind="stable")
    kept = np.sort(order[support[order] >= min_size][:k])
    init, _ = kmeans_plusplus(x.astype(np.float64), k, initial_centers=prev_c[kept],
                              random_state=rng, first_center="uniform")
    return (init.astype(np.float32),
            np.concatenate([kept, np.full(k - len(kept), -1)]).astype(np.int64))


def _dissolve_small(x, labels, centroids, origin, min_size, *, random_state, backend,
                    device):
    """Remove segments with fewer than ``min_size`` members; Lloyd from the survivors."""
    for _ in range(len(centroids)):
        sizes = np.bincount(labels, minlength=len(centroids))
        small = sizes < min_size
        if not small.any() or small.all():
            break
        keep = np.flatnonzero(~small)
        origin = origin[keep]
        labels, centroids, _ = run_kmeans(x, len(keep), centroids[keep],
                                          random_state=random_state, backend=backend,
                                          device=device)
    return labels, centroids, origin


def _summary(x, labels, cents, origin, init, score) -> dict:
    """:func:`cluster_users`' result: empty clusters dropped, centroids = the unit means of
    the members, whose length (the mean resultant length R) measures how tight a segment
    is."""
    used = np.flatnonzero(np.bincount(labels, minlength=len(cents)))
    remap = np.full(len(cents), -1, np.int64)
    remap[used] = np.arange(len(used))
    labels = remap[labels]
    size = np.bincount(labels, minlength=len(used))
    sums = np.zeros((len(used), x.shape[1]), np.float64)
    np.add.at(sums, labels, x)
    means = sums / size[:, None]
    return {"labels": labels, "centroids": unit_rows(means, precision="float32"), "init": init,
            "size": size,
            "k": len(used), "resultant": np.linalg.norm(means, axis=1), "silhouette": score,
            "previous_rows": origin[used]}


# ------------------------------------------------------------------------------ matching

def match_segments(previous_centroids, centroids, previous_labels, labels, *,
                   match_weight=0.5, match_threshold=0.4) -> dict:
    """Optimal one-to-one matching of current segments to previous ones.

    The matching of :class:`SegmentTracker` (:mod:`interestflow.tracking`, "Matching"):
    ``score[i, j] = match_weight * cos(previous_i, current_j) + (1 - match_weight) *
    jaccard(members_i, members_j)``, the Jaccard index over the users given (those present
    before and now); ``scipy.optimize.linear_sum_assignment`` maximises the total score and a
    pair is kept when its score is at least ``match_threshold``.

    Parameters
    ----------
    previous_centroids : ndarray, shape (k_previous, dim)
        Unit rows.
    centroids : ndarray, shape (k, dim)
        Unit rows.
    previous_labels, labels : ndarray of int, shape (n_common,)
        Previous and current segment of each user present in both; ``-1`` (noise) counts in
        no segment.
    match_weight : float, default 0.5
    match_threshold : float, default 0.4

    Returns
    -------
    dict
        ``match`` (dict: current row -> previous row, matched pairs only), ``score``, ``cos``
        ((k_previous, k) float64) and ``flow`` ((k_previous, k) int64: users in previous
        segment i and current segment j).

    Examples
    --------
    >>> import numpy as np
    >>> c = np.eye(3, dtype=np.float32)
    >>> m = match_segments(c, c[[2, 0]], np.array([0, 2]), np.array([1, 0]))
    >>> sorted(m["match"].items())  # current 0 is previous 2, current 1 is previous 0
    [(0, 2), (1, 0)]
    """
    from scipy.optimize import linear_sum_assignment

    prev_c, cur_c = np.asarray(previous_centroids), np.asarray(centroids)
    kp, kc = len(prev_c), len(cur_c)
    a, b = np.asarray(previous_labels, np.int64), np.asarray(labels, np.int64)
    if a.shape != b.shape:
        raise ValueError(f"previous_labels and labels must give one label per common user, "
                         f"got shapes {a.shape} and {b.shape}")
    cos = np.clip(prev_c @ cur_c.T, -1.0, 1.0)
    keep = (a >= 0) & (b >= 0)
    flow = np.zeros((kp, kc), np.int64)
    np.add.at(flow, (a[keep], b[keep]), 1)
    union = flow.sum(axis=1)[:, None] + flow.sum(axis=0)[None, :] - flow
    jac = np.divide(flow, union, out=np.zeros((kp, kc)), where=union > 0)
    mw = float(match_weight)
    score = mw * cos + (1.0 - mw) * jac
    match = {}
    if kp and kc:
        r, c = linear_sum_assignment(score, maximize=True)
        ok = score[r, c] >= float(match_threshold)
        match = dict(zip(c[ok].tolist(), r[ok].tolist()))
    return {"match": match, "score": score, "cos": cos, "flow": flow}
