"""Global user segments: choice of K, clustering, one-hot and soft segment features."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ._utils import unit_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentConfig:
    """Settings for user segmentation.

    Attributes
    ----------
    n_segments : int or "auto"
        ``segmenter="kmeans"`` only. Number of segments; ``"auto"`` picks K in
        ``[k_min, k_max]`` by the mean cosine silhouette of K-means solutions on a seeded
        sample (see :func:`choose_n_segments` for why silhouette).
    k_min, k_max : int
        Bounds for ``"auto"``; ``k_max=None`` means ``clip(sqrt(n_users / 2), k_min, 64)``.
    segmenter : {"kmeans", "hdbscan"}
        ``"kmeans"``: every user in one of K segments. ``"hdbscan"``: density-based segments
        whose number follows the data; users in no dense region get segment ``-1`` (noise),
        reported as such. Runs on cuML on a CUDA device when installed, else fast-hdbscan,
        else scikit-learn's HDBSCAN (the choice is logged).
    min_cluster_size : int or None
        ``"hdbscan"`` only: the smallest segment; ``None`` means ``max(5, n_users // 100)``
        (a segment below 1% of the users is too small to act on in a recommender).
    hdbscan_dims : int
        ``"hdbscan"`` only: users are projected on this many principal components first.
        Density estimates degrade in hundreds of dimensions and the fast tree-based HDBSCAN
        needs few; 16 components keep most of the variance of sentence-embedding means.
    merge_threshold : float or None
        Segments whose centroids have cosine similarity at or above this are merged (the
        closest pair first, repeatedly), so one interest is not reported as two segments.
        At 0.95 only near-duplicates merge: on the demo data the centroids of distinct topics
        have cosine <= 0.75 while the two halves of one topic cut in two by too large a K have
        0.88-0.96, so this merges the closest halves and never two topics. ``None`` disables
        merging.
    sample_size : int
        Users sampled (without replacement, seeded) to score candidate K values.
    temperature : float
        Softmax temperature over cosine(user, centroid) for the soft segment features.
    random_state : int
        Seed for sampling and K-means.
    """

    n_segments: int | str = "auto"
    k_min: int = 2
    k_max: int | None = None
    sample_size: int = 3000
    temperature: float = 0.05
    random_state: int = 0
    segmenter: str = "kmeans"
    min_cluster_size: int | None = None
    hdbscan_dims: int = 16
    merge_threshold: float | None = 0.95

    def __post_init__(self):
        if self.segmenter not in SEGMENTERS:
            raise ValueError(f"segmenter={self.segmenter!r} is not valid; pass one of "
                             f"{', '.join(repr(x) for x in SEGMENTERS)}")
        mcs = self.min_cluster_size
        if mcs is not None and (isinstance(mcs, bool) or not isinstance(mcs, (int, np.integer))
                                or mcs < 2):
            raise ValueError(f"min_cluster_size={mcs!r} is not valid; pass None or an int >= 2")
        hd = self.hdbscan_dims
        if isinstance(hd, bool) or not isinstance(hd, (int, np.integer)) or hd < 1:
            raise ValueError(f"hdbscan_dims={hd!r} is not valid; pass an int >= 1")
        mt = self.merge_threshold
        if mt is not None and (isinstance(mt, bool) or not isinstance(mt, (int, float))
                               or not -1.0 <= float(mt) <= 1.0):
            raise ValueError(f"merge_threshold={mt!r} is not valid; pass None or a cosine "
                             "in [-1, 1]")


#: Segmentation algorithms of :class:`SegmentConfig`.
SEGMENTERS = ("kmeans", "hdbscan")


def candidate_ks(n_users: int, k_min: int, k_max: int | None) -> list[int]:
    """Candidate K values for ``"auto"`` in ``[k_min, hi]``: every K up to 16, then a
    geometric grid."""
    hi = k_max if k_max is not None else int(np.clip(round(np.sqrt(n_users / 2)), k_min, 64))
    hi = min(hi, n_users - 1)
    lo = min(k_min, hi)
    if hi < 2:
        return [1]
    ks = list(range(max(lo, 2), min(hi, 16) + 1))
    k = 16
    while k < hi:
        k = int(round(k * 1.25))
        ks.append(min(k, hi))
    return sorted(k for k in set(ks) if k >= lo)


def choose_n_segments(vectors: np.ndarray, config: SegmentConfig, *, device=None) -> tuple[int, dict]:
    """Pick K by the mean cosine silhouette of K-means solutions on a seeded sample.

    Silhouette compares each user's cohesion with its own segment to its separation from the
    nearest other segment; it needs no labels and no tuning constant, and is bounded in [-1, 1],
    which makes it comparable across K. Returns ``(k, {k: silhouette})``.
    """
    from sklearn.metrics import silhouette_score

    from .kmeans import KMeans

    n = len(vectors)
    ks = candidate_ks(n, config.k_min, config.k_max)
    if ks == [1]:
        return 1, {}
    rng = np.random.default_rng(config.random_state)
    idx = rng.choice(n, size=min(n, config.sample_size), replace=False)
    sample = unit_rows(vectors[np.sort(idx)], precision="float32")
    scores: dict[int, float] = {}
    for k in ks:
        if k >= len(sample):
            break
        km = KMeans(n_clusters=k, n_init=3, random_state=config.random_state, device=device)
        labels = km.fit_predict(sample)
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(sample, labels, metric="cosine"))
    if not scores:
        return 1, {}
    best = max(scores, key=lambda k: (round(scores[k], 4), -k))
    logger.info("n_segments='auto': chose K=%d (silhouette %.3f) from %s", best, scores[best],
                {k: round(v, 3) for k, v in scores.items()})
    return best, scores


#: K values the usefulness rule tries (capped below the number of users): powers of two and
#: the values halfway between them, so that a few real groups (3, 6, ...) are not forced up
#: to the next power of two.
USE_KS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def segment_popularity_recall(labels, kept_user, kept_item, truth_user, truth_item,
                              n_items: int, k: int = 10, *, per_user: bool = False):
    """Mean recall@k of recommending each user the most popular unseen items of the user's
    segment (distinct kept users of the segment per item; ties by global popularity, then the
    lower item), over the users of ``truth`` (their held-out unseen items).

    ``labels`` (n_users,) segment per user (-1: none, global popularity); ``kept_*`` the
    (user, item) pairs the segments are built from (the users' seen items); ``truth_*`` the
    held-out pairs (seen pairs already removed). ``per_user=True`` returns each truth user's
    recall (users in increasing order) instead of the mean.
    """
    labels = np.asarray(labels, np.int64)
    ku, ki = np.asarray(kept_user, np.int64), np.asarray(kept_item, np.int64)
    pair = np.unique(ku * n_items + ki)
    pu, pi = pair // n_items, pair % n_items
    glob = np.bincount(pi, minlength=n_items)
    glob_order = np.lexsort((np.arange(n_items), -glob))
    seg = labels[pu]
    ok = seg >= 0
    vals, cnt = np.unique(seg[ok] * n_items + pi[ok], return_counts=True)
    s_of, i_of = vals // n_items, vals % n_items
    # per segment: its items by (count desc, global desc, item asc)
    order = np.lexsort((i_of, -glob[i_of], -cnt, s_of))
    s_of, i_of = s_of[order], i_of[order]
    n_seg = int(labels.max()) + 1 if len(labels) else 0
    starts = np.searchsorted(s_of, np.arange(n_seg + 1))
    seen_ptr = np.searchsorted(pu, np.arange(len(labels) + 1))
    tu, ti = np.asarray(truth_user, np.int64), np.asarray(truth_item, np.int64)
    by_user = np.argsort(tu, kind="stable")
    tu, ti = tu[by_user], ti[by_user]
    users, first = np.unique(tu, return_index=True)
    ends = np.append(first[1:], len(tu))
    recalls = []
    for u, lo, hi in zip(users.tolist(), first.tolist(), ends.tolist()):
        seen = set(pi[seen_ptr[u]:seen_ptr[u + 1]].tolist())
        want = set(ti[lo:hi].tolist())
        got = []
        s = labels[u]
        lists = ([i_of[starts[s]:starts[s + 1]]] if s >= 0 else []) + [glob_order]
        need = k + len(seen)  # no list has to be read further than this
        for lst in lists:
            for it in lst[:need].tolist():
                if it not in seen and it not in got:
                    got.append(it)
                    if len(got) == k:
                        break
            if len(got) == k:
                break
        recalls.append(len(want.intersection(got)) / len(want))
    if per_user:
        return np.asarray(recalls, np.float64)
    return float(np.mean(recalls)) if recalls else 0.0


def one_standard_error_k(per_user: dict) -> tuple[int, int, dict]:
    """The smallest K whose mean is within one standard error of the best K's mean, the
    error being that of the paired per-user differences with the best K (same users, same
    held-out items; Breiman et al.'s rule for pruning trees, paired). The unpaired error of
    the best mean was tried and is too wide on real data (Amazon: K = 2, 0.92x the best K's
    recall on the held-out test; MovieLens: K = 6 -> 3 after merging, 0.89x).

    ``per_user``: K -> per-user scores (same users, same order). Returns ``(chosen K, best
    K, {K: mean})``; the best K is the highest mean (the smaller K on an exact tie).
    """
    scores = {k: float(np.mean(r)) if len(r) else 0.0 for k, r in per_user.items()}
    best = max(scores, key=lambda k: (scores[k], -k))
    top = np.asarray(per_user[best], np.float64)
    for k in sorted(per_user):
        diff = top - np.asarray(per_user[k], np.float64)
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        if scores[best] - scores[k] <= se:
            return k, best, scores
    return best, best, scores


def choose_n_segments_by_use(inner_vectors: np.ndarray, kept_user, kept_item, truth_user,
                             truth_item, n_items: int, config: "SegmentConfig", *,
                             device=None) -> tuple[int, dict]:
    """Pick K in :data:`USE_KS` by :func:`segment_popularity_recall` on an inner temporal
    split: segments fitted (K-means and the config's merging, as ``fit_segments``) on user
    vectors built from each user's earlier events only (``inner_vectors``), popularity from
    those earlier (user, item) pairs, recall of the users' latest held-out items.

    One-standard-error rule (as in CART's pruning): the smallest K whose mean recall is
    within one standard error of the best K's (:func:`one_standard_error_k`): differences
    smaller than the split's own noise do not buy more segments. Returns ``(k, {k:
    recall})``."""
    from dataclasses import replace

    n = len(inner_vectors)
    per_user: dict[int, np.ndarray] = {}
    for k in USE_KS:
        if k >= n:
            break
        labels, _, _, _ = fit_segments(inner_vectors, replace(config, n_segments=int(k)),
                                       device=device)
        per_user[k] = segment_popularity_recall(labels, kept_user, kept_item, truth_user,
                                                truth_item, n_items, per_user=True)
    if not per_user:
        return 1, {}
    chosen, best, scores = one_standard_error_k(per_user)
    logger.info("n_segments='auto': chose K=%d (inner segment-popularity recall@10 %.4f; "
                "best K=%d %.4f, one-standard-error rule) from %s", chosen, scores[chosen],
                best, scores[best], {k: round(v, 4) for k, v in scores.items()})
    return chosen, scores


def soft_features(vectors: np.ndarray, centroids: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax over cosine(user, centroid) / temperature, shape (n_users, K), rows sum to 1."""
    sims = (unit_rows(vectors, precision="float32")
            @ unit_rows(centroids, precision="float32").T)
    z = sims / temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return p.astype(np.float32)


def one_hot(labels: np.ndarray, n_segments: int) -> np.ndarray:
    """One-hot segment features, shape (n_users, n_segments), float32; noise (-1) is all 0."""
    labels = np.asarray(labels)
    out = np.zeros((len(labels), n_segments), dtype=np.float32)
    rows = np.flatnonzero(labels >= 0)
    out[rows, labels[rows]] = 1.0
    return out


def check_n_segments(k, n_users: int | None = None) -> None:
    """Validate ``n_segments`` ('auto' or an int in [1, n_users]); raise naming the value."""
    if isinstance(k, str):
        if k != "auto":
            raise ValueError(f"n_segments={k!r} is not valid; pass 'auto' or an int >= 1")
    elif isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"n_segments must be 'auto' or an int, got {type(k).__name__}")
    elif k < 1:
        raise ValueError(f"n_segments={k} must be >= 1")
    elif n_users is not None and k > n_users:
        raise ValueError(f"n_segments={k} exceeds the number of users ({n_users}); "
                         f"pass n_segments <= {n_users}")


def fit_segments(vectors: np.ndarray, config: SegmentConfig, *, device=None):
    """Cluster users; returns ``(labels, centroids, k, silhouette_by_k)``.

    ``labels`` is int64 of shape (n_users,) with values in ``[0, k)``, or ``-1`` for noise
    users (``segmenter="hdbscan"`` only); ``centroids`` (k, dim) are unit vectors. Segments
    closer than ``config.merge_threshold`` are merged before returning.
    """
    n = len(vectors)
    scores: dict[int, float] = {}
    unit = unit_rows(vectors, precision="float32")
    if config.segmenter == "hdbscan":
        labels = hdbscan_labels(unit, config, device=device)
        k = int(labels.max()) + 1
        if k < 1:
            raise ValueError(
                f"segmenter='hdbscan' found no segment among {n} users (all noise with "
                f"min_cluster_size={_min_cluster_size(config, n)}); pass a smaller "
                "min_cluster_size or segmenter='kmeans'")
        centroids = _centroids(unit, labels, k)
    else:
        from .kmeans import KMeans

        k = config.n_segments
        check_n_segments(k, n)
        if k == "auto":
            k, scores = choose_n_segments(vectors, config, device=device)
        km = KMeans(n_clusters=int(k), n_init=3, random_state=config.random_state, device=device)
        labels = np.asarray(km.fit_predict(unit)).astype(np.int64)
        centroids = unit_rows(np.asarray(km.cluster_centers_, dtype=np.float32),
                              precision="float32")
    if config.merge_threshold is not None and len(centroids) > 1:
        labels, centroids = merge_close_segments(unit, labels, centroids,
                                                 float(config.merge_threshold))
    return labels, centroids, int(len(centroids)), scores


def _centroids(unit: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Unit mean vector of each segment's members, shape (k, dim); noise rows ignored."""
    keep = labels >= 0
    sums = np.zeros((k, unit.shape[1]), np.float64)
    np.add.at(sums, labels[keep], unit[keep])
    return unit_rows(sums, precision="float32")


def merge_close_segments(unit: np.ndarray, labels: np.ndarray, centroids: np.ndarray,
                         threshold: float):
    """Merge segments whose centroid cosine is >= ``threshold``, closest pair first.

    After each merge the merged centroid is the unit mean of all its members, and cosines
    are recomputed. Surviving segments are renumbered ``0..k'-1`` in order of their lowest
    original id; noise (-1) stays noise.

    Returns
    -------
    labels : ndarray of int64, shape (n_users,)
    centroids : ndarray of float32, shape (k', dim)
    """
    labels = np.asarray(labels, np.int64).copy()
    k = len(centroids)
    sums = np.zeros((k, unit.shape[1]), np.float64)
    keep = labels >= 0
    np.add.at(sums, labels[keep], unit[keep])
    alive = np.bincount(labels[keep], minlength=k) > 0
    cents = unit_rows(sums, precision="float32").astype(np.float64)
    target = np.arange(k)
    merged = 0
    while alive.sum() > 1:
        idx = np.flatnonzero(alive)
        sim = cents[idx] @ cents[idx].T
        np.fill_diagonal(sim, -np.inf)
        a, b = np.unravel_index(int(np.argmax(sim)), sim.shape)
        if sim[a, b] < threshold:
            break
        a, b = sorted((int(idx[a]), int(idx[b])))
        sums[a] += sums[b]
        alive[b] = False
        target[target == b] = a
        cents[a] = sums[a] / max(np.linalg.norm(sums[a]), 1e-12)
        merged += 1
    if merged:
        logger.info("merged %d near-duplicate segment(s) (centroid cosine >= %.3f)", merged,
                    threshold)
    survivors = np.flatnonzero(alive)
    new_id = np.full(k, -1, np.int64)
    new_id[survivors] = np.arange(len(survivors))
    labels[keep] = new_id[target[labels[keep]]]
    if not merged:
        return labels, np.asarray(centroids, np.float32)
    return labels, cents[survivors].astype(np.float32)


def _min_cluster_size(config: SegmentConfig, n: int) -> int:
    mcs = config.min_cluster_size
    return int(mcs) if mcs is not None else max(5, n // 100)


def hdbscan_labels(unit: np.ndarray, config: SegmentConfig, *, device=None) -> np.ndarray:
    """HDBSCAN segment labels of unit user vectors (``-1`` = noise), int64 shape (n_users,).

    The vectors are projected on ``config.hdbscan_dims`` principal components first. Backend:
    cuML HDBSCAN when the device is CUDA and cuML is installed, else fast-hdbscan, else
    scikit-learn's HDBSCAN; one log line says which.
    """
    from .resolve import module_available, resolve_device

    n = len(unit)
    mcs = _min_cluster_size(config, n)
    if n < 2:
        return np.full(n, -1, np.int64)
    dims = int(min(config.hdbscan_dims, unit.shape[1], n))
    centred = unit.astype(np.float64) - unit.mean(axis=0, dtype=np.float64)
    # PCA by SVD of the centred data: deterministic (no random solver), sign-fixed below.
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:dims]
    comps *= np.where(comps[np.arange(dims), np.abs(comps).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    low = np.ascontiguousarray(centred @ comps.T, dtype=np.float32)
    dev = resolve_device(device)
    if dev.type == "cuda" and module_available("cuml"):
        import cupy
        from cuml.cluster import HDBSCAN as CuHDBSCAN

        logger.info("segmenter='hdbscan' runs on cuML (CUDA), min_cluster_size=%d", mcs)
        lab = CuHDBSCAN(min_cluster_size=mcs).fit_predict(cupy.asarray(low))
        return cupy.asnumpy(lab).astype(np.int64)
    if module_available("fast_hdbscan"):
        import fast_hdbscan

        import numba

        logger.info("segmenter='hdbscan' runs on fast-hdbscan (CPU), min_cluster_size=%d", mcs)
        # one numba thread: with more, fast-hdbscan settles ties by thread timing and the
        # same users got other segments from run to run (demo users, 2 threads on a loaded
        # machine: 2-9 of 29 repeats differed, 0 on one thread; ~2x the time at 20k-100k
        # users on 2 cores: benchmarks/hdbscan_threads.py). numba's thread count is per
        # calling thread: other threads are not affected.
        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            lab = fast_hdbscan.HDBSCAN(min_cluster_size=mcs).fit_predict(low)
        finally:
            numba.set_num_threads(before)
    else:
        from sklearn.cluster import HDBSCAN

        logger.info("segmenter='hdbscan' runs on scikit-learn's HDBSCAN (CPU; fast-hdbscan is "
                    "not installed: pip install fast-hdbscan), min_cluster_size=%d",
                    mcs)
        lab = HDBSCAN(min_cluster_size=mcs, copy=True).fit_predict(low)
    return np.asarray(lab, np.int64)
