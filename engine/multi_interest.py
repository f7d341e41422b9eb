"""Per-user multi-interest (PinnerSage-style): each user's events clustered on their own.

One mean vector per user blurs a user who reads about cooking and about football into a
point between the two.  Following PinnerSage (Pal et al., KDD 2020), each user's own event
vectors are clustered with Ward agglomerative clustering cut at a distance threshold, so the
number of interests varies per user; each interest is represented by its medoid (a real event,
so it stays on the data manifold) and weighted by its importance, the time-decayed weight sum
of its events (the same decay as :func:`interestflow.interests.decayed_user_means`).

:func:`user_interests` computes them, natively (C++ / OpenMP in ``interestflow._native``,
parallel over users, GIL released) or with the scipy reference the native code is tested
against: ``scipy.cluster.hierarchy.linkage(method="ward")`` and
``fcluster(criterion="distance")`` per user, with equal partitions (ties included).
:func:`multi_interest_topk` recommends from several interests in proportion to their
importance.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass

import numpy as np

from .interests import check_decay_inputs
from ._utils import TopK, check_int, check_matrix, unit_rows

__all__ = ["DEFAULT_THRESHOLD", "DEFAULT_MAX_EVENTS", "MAX_EVENTS_LIMIT", "UserInterests",
           "user_interests", "multi_interest_topk", "recommend_multi"]

logger = logging.getLogger(__name__)

#: Ward height at which two groups of unit vectors stop being merged: ``sqrt(2)``.  See
#: :func:`user_interests` for why.
DEFAULT_THRESHOLD = math.sqrt(2.0)
#: Events clustered per user (the most recent ones); memory is 16 * max_events**2 bytes per
#: thread.
DEFAULT_MAX_EVENTS = 500
#: Largest accepted ``max_events`` (``interestflow._native.ward_max_events_limit``).
MAX_EVENTS_LIMIT = 2048
_BACKENDS = ("auto", "native", "reference")


@dataclass(frozen=True)
class UserInterests:
    """Interests of every user, as flat arrays (CSR style over users).

    The interests of user ``u`` are entries ``offsets[u]:offsets[u + 1]`` of ``medoid_rows``,
    ``importance`` and ``sizes``, most important first (equal importance: the interest whose
    first event row is lower first).

    Attributes
    ----------
    offsets : ndarray of int64, shape (n_users + 1,)
    medoid_rows : ndarray of int64, shape (n_interests,)
        Row (in the ``vectors`` given to :func:`user_interests`) of each interest's medoid.
    importance : ndarray of float64, shape (n_interests,)
        Sum of ``weight * 2 ** (-(now - ts) / half_life)`` over the interest's events.
    sizes : ndarray of int64, shape (n_interests,)
        Number of events in the interest.
    labels : ndarray of int64, shape (n_rows,)
        Interest of each event within its user (0 = most important); ``-1``: not clustered
        because older than the user's ``max_events`` most recent events; ``-2``: its cluster
        is not among the user's ``max_interests`` most important.
    n_clustered : ndarray of int64, shape (n_users,)
        Events clustered per user, ``min(n_events, max_events)``.
    n_found : ndarray of int64, shape (n_users,)
        Clusters found per user before the ``max_interests`` cut.
    """

    offsets: np.ndarray
    medoid_rows: np.ndarray
    importance: np.ndarray
    sizes: np.ndarray
    labels: np.ndarray
    n_clustered: np.ndarray
    n_found: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_interests(self) -> int:
        return len(self.medoid_rows)

    def counts(self) -> np.ndarray:
        """Interests per user, ndarray of int64, shape (n_users,)."""
        return np.diff(self.offsets)

    def user_of_interest(self) -> np.ndarray:
        """User row of every interest, ndarray of int64, shape (n_interests,)."""
        return np.repeat(np.arange(self.n_users, dtype=np.int64), self.counts())

    def vectors(self, event_vectors) -> np.ndarray:
        """Medoid vectors, shape (n_interests, dim): ``event_vectors[medoid_rows]``.

        Parameters
        ----------
        event_vectors : ndarray, shape (n_rows, dim)
            The vectors given to :func:`user_interests`.
        """
        event_vectors = np.asarray(event_vectors)
        if event_vectors.ndim != 2 or event_vectors.shape[0] != len(self.labels):
            raise ValueError(f"event_vectors must have shape ({len(self.labels)}, dim) (the "
                             f"vectors the interests were computed from), got "
                             f"{event_vectors.shape}")
        return event_vectors[self.medoid_rows]

    def to_frame(self, user_ids=None):
        """One row per interest: user_id, interest, importance, medoid_row, size.

        Parameters
        ----------
        user_ids : array-like, shape (n_users,), optional
            Id of each user row (e.g. ``InterestEngine.user_ids_``); default: the user rows.

        Returns
        -------
        pandas.DataFrame
            ``interest`` is the rank within the user (0 = most important).
        """
        import pandas as pd

        if user_ids is None:
            user_ids = np.arange(self.n_users, dtype=np.int64)
        user_ids = np.asarray(user_ids)
        if user_ids.ndim != 1 or len(user_ids) != self.n_users:
            raise ValueError(f"user_ids must have shape ({self.n_users},) (one per user), got "
                             f"{user_ids.shape}")
        users = self.user_of_interest()
        return pd.DataFrame({
            "user_id": user_ids[users],
            "interest": np.arange(self.n_interests, dtype=np.int64) - self.offsets[users],
            "importance": self.importance,
            "medoid_row": self.medoid_rows,
            "size": self.sizes,
        })


def user_interests(vectors, offsets, ts, weights=None, *, half_life_days=30.0,
                   threshold=DEFAULT_THRESHOLD, max_interests=None,
                   max_events=DEFAULT_MAX_EVENTS, now=None, backend="auto",
                   n_threads=0) -> UserInterests:
    """Cluster each user's event vectors into interests (Ward, cut at a distance threshold).

    For each user: Ward agglomerative clustering of the user's events on Euclidean distance,
    with exactly the merges of ``scipy.cluster.hierarchy.linkage(X, method="ward")``, cut with
    ``fcluster(Z, t=threshold, criterion="distance")`` (a group forms while every merge inside
    it is at height <= ``threshold``).  Per cluster, the **medoid** is the event minimising the
    sum of squared Euclidean distances to the cluster's events (for unit vectors: the event
    with the largest summed cosine similarity to them; in general the event nearest the
    centroid, Ward's own criterion); equal sums go to the lower row.  The **importance** is the
    sum over the cluster's events of ``weight * 2 ** (-(now - ts) / half_life)``.  Clustering
    is unweighted (Ward has no event weights); weights and recency enter the importance only.

    **Default threshold** ``sqrt(2)``: the Ward height of merging groups ``A`` and ``B`` is
    ``h**2 = 2 |A||B| / (|A| + |B|) * |c_A - c_B|**2``.  For unit vectors with mean pairwise
    cosine ``s_A`` inside ``A``, ``s_B`` inside ``B`` and ``s_AB`` across, this is
    ``h**2 = 2 + 2 / (|A| + |B|) * (|B| (|A| - 1) s_A + |A| (|B| - 1) s_B - 2 |A||B| s_AB)``,
    so ``h <= sqrt(2)`` exactly when the groups are about as similar to each other as within
    themselves: ``s_AB >= ((|A| - 1) / |A| * s_A + (|B| - 1) / |B| * s_B) / 2``.  Two single
    events merge when their cosine is >= 0.  The rule depends on the geometry of unit vectors
    only, not on a data set or an encoder, and was not tuned on any evaluation data.  Lower
    values give more, tighter interests; ``0`` makes each distinct event its own interest
    (duplicates still merge), ``inf`` gives one interest per user.

    Parameters
    ----------
    vectors : ndarray, shape (n_rows, dim)
        Event vectors (unit-norm sentence embeddings for the default threshold), rows grouped
        by user.  float32 and float16 are used as they are; other floats become float32.
    offsets : array-like of int, shape (n_users + 1,)
        User ``u`` owns rows ``offsets[u]:offsets[u + 1]`` (see
        :func:`interestflow.interests.group_offsets`).  A user with no rows has no interests.
    ts : array-like, shape (n_rows,)
        Event times: float unix seconds or ``datetime64``.
    weights : array-like, shape (n_rows,), optional
        Non-negative event weights; default 1.
    half_life_days : float or None, default 30.0
        Age at which an event's weight in the importance halves; ``None`` or ``inf``: no decay.
    threshold : float, default ``sqrt(2)``
        Ward height at which the dendrogram is cut; >= 0, ``inf`` allowed.
    max_interests : int or None, default None
        Keep each user's ``max_interests`` most important interests; the events of the others
        get label ``-2`` and ``n_found`` tells how many there were.  None keeps all
        (:func:`recommend_multi` gives interests too small for one slot nothing anyway).
    max_events : int, default 500
        Cluster each user's ``max_events`` most recent events (equal times: the later row);
        older events get label ``-1``, take part in no interest, and ``n_clustered`` says how
        many events were clustered.  At most :data:`MAX_EVENTS_LIMIT` (2048); memory is
        ``16 * max_events**2`` bytes per thread.
    now : None, float, datetime, pandas.Timestamp or numpy.datetime64, default None
        Reference time of the decay; ``None``: the latest event time over all rows.  No event
        may be later than ``now``.
    backend : {"auto", "native", "reference"}, default "auto"
        ``"native"``: C++/OpenMP.  ``"reference"``: scipy per user (slow; for tests).
        ``"auto"``: native, or the reference with a log line when the native module is not
        built.
    n_threads : int, default 0
        Threads of the native backend; 0 uses all cores (``OMP_NUM_THREADS`` respected).

    Returns
    -------
    UserInterests

    Raises
    ------
    ValueError
        Bad offsets, non-finite ``ts`` / ``vectors`` / weights, negative weights, events after
        ``now``, ``half_life_days <= 0``, ``threshold`` NaN or < 0, ``max_events`` or
        ``max_interests`` out of range, unknown backend; the message names the row.
    TypeError
        Non-numeric inputs or non-integer counts.

    Examples
    --------
    Two users: the first with two topics (two events each), the second with one event.

    >>> import numpy as np
    >>> v = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99], [1, 0]], np.float32)
    >>> ui = user_interests(v, [0, 4, 5], ts=[0, 1, 2, 3, 4], half_life_days=None)
    >>> ui.offsets.tolist(), ui.sizes.tolist(), ui.labels.tolist()
    ([0, 2, 3], [2, 2, 1], [0, 0, 1, 1, 0])
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {list(_BACKENDS)}, got {backend!r}")
    vectors, offsets, ts, weights, half_life_s, ref, n_threads = check_decay_inputs(
        vectors, offsets, ts, weights, half_life_days, now, n_threads)
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a number, got {threshold!r}")
    threshold = float(threshold)
    if math.isnan(threshold) or threshold < 0:
        raise ValueError(f"threshold={threshold} is invalid; pass a number >= 0 (inf: one "
                         "interest per user)")
    max_interests = check_int("max_interests", max_interests, 1, none_ok=True)

    if backend == "auto":
        from interestflow.resolve import module_available

        backend = "native" if module_available("interestflow._native") else "reference"
        if backend == "reference":
            logger.info("user_interests backend='auto': interestflow._native is not built; "
                        "using the scipy reference (rebuild with `pip install -e .`)")
    max_events = check_int("max_events", max_events, 1, MAX_EVENTS_LIMIT)

    ref_per_user = np.full(len(offsets) - 1, ref, dtype=np.float64)
    if backend == "native":
        from interestflow._native_loader import native

        out = native().ward_interests(vectors, offsets, ts, weights, ref_per_user, half_life_s,
                                      threshold, max_events, max_interests or 0, n_threads)
    else:
        out = _reference(vectors, offsets, ts, weights, ref_per_user, half_life_s, threshold,
                         max_events, max_interests or 0)
    result = UserInterests(*out)
    skipped = np.diff(offsets) - result.n_clustered
    if skipped.any():
        logger.info("user_interests: %d events of %d users are older than their user's "
                    "max_events=%d most recent and were not clustered (label -1)",
                    int(skipped.sum()), int((skipped > 0).sum()), max_events)
    return result


# --------------------------------------------------------------------------- reference
def _reference(vectors, offsets, ts, weights, ref_per_user, half_life_s, threshold,
               max_events, max_interests):
    """scipy per user: linkage(method="ward") + fcluster(criterion="distance").

    Same outputs as ``_native.ward_interests``.  Medoid sums run over the members in row
    order (``cumsum``, sequential like the native loop), so equal sums tie exactly.
    """
    n_rows = vectors.shape[0]
    n_users = len(offsets) - 1
    inv_hl = 1.0 / half_life_s if math.isfinite(half_life_s) else 0.0
    labels = np.zeros(n_rows, np.int64)
    n_clustered = np.zeros(n_users, np.int64)
    n_found = np.zeros(n_users, np.int64)
    counts = np.zeros(n_users, np.int64)
    medoids, importances, sizes = [], [], []
    for u in range(n_users):
        lo, hi = int(offsets[u]), int(offsets[u + 1])
        if hi == lo:
            continue
        rows = np.arange(lo, hi)
        if hi - lo > max_events:
            # most recent first, equal ts: later row first
            newest = np.lexsort((-rows, -ts[lo:hi]))[:max_events]
            rows = np.sort(rows[newest])
            labels[lo:hi] = -1
        n_clustered[u] = len(rows)
        clusters = _ward_clusters(vectors, rows, ts, weights, ref_per_user[u], inv_hl,
                                  threshold, u)
        n_found[u] = len(clusters)
        kept = len(clusters) if max_interests == 0 else min(len(clusters), max_interests)
        counts[u] = kept
        for r, (_, _, imp, med, mem) in enumerate(clusters):
            labels[rows[mem]] = r if r < kept else -2
            if r < kept:
                medoids.append(med)
                importances.append(imp)
                sizes.append(len(mem))
    interest_offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return (interest_offsets, np.asarray(medoids, np.int64), np.asarray(importances, np.float64),
            np.asarray(sizes, np.int64), labels, n_clustered, n_found)


def _ward_clusters(vectors, rows, ts, weights, ref, inv_hl, threshold, u):
    """The interests of user ``u`` (its clustered ``rows``), most important first (ties: the
    lower first row): a list of ``(-importance, first row, importance, medoid row, member
    positions in rows)``."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist, squareform

    X = vectors[rows].astype(np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.unravel_index(int(np.argmax(bad)), X.shape)
        raise ValueError(f"vectors must be finite, got {X[i, j]} at row {rows[i]}, "
                         f"column {j} (user {u})")
    m = len(rows)
    w = weights[rows]
    with np.errstate(over="ignore"):
        rel = np.where(w > 0, w * np.exp2(-(ref - ts[rows]) * inv_hl), 0.0)
    if m == 1:
        flat = np.zeros(1, np.int64)
    else:
        Z = linkage(X, method="ward")
        flat = fcluster(Z, threshold, criterion="distance").astype(np.int64) - 1
    sq = squareform(pdist(X, "sqeuclidean")) if m > 1 else np.zeros((1, 1))
    clusters = []
    for c in np.unique(flat):
        mem = np.flatnonzero(flat == c)
        imp = float(np.cumsum(rel[mem])[-1])
        if not math.isfinite(imp):
            raise ValueError(f"the decayed weight sum of an interest of user {u} overflows "
                             "a double; (ref - ts) / half_life must be of a sane magnitude")
        sums = np.cumsum(sq[np.ix_(mem, mem)], axis=1)[:, -1]
        clusters.append((-imp, int(rows[mem[0]]), imp, int(rows[mem[int(np.argmin(sums))]]),
                         mem))
    clusters.sort(key=lambda c: (c[0], c[1]))
    return clusters


# --------------------------------------------------------------------------- recommend
def _csr_offsets(name, x, n_rows_total, n_groups):
    x = np.asarray(x)
    if x.ndim != 1 or x.shape[0] != n_groups + 1:
        raise ValueError(f"{name} must have shape ({n_groups + 1},), got {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got dtype {x.dtype}")
    x = x.astype(np.int64)
    if x[0] != 0 or x[-1] != n_rows_total:
        raise ValueError(f"{name} must start at 0 and end at {n_rows_total}, got {x[0]} .. "
                         f"{x[-1]}")
    steps = np.diff(x)
    if (steps < 0).any():
        u = int(np.argmax(steps < 0))
        raise ValueError(f"{name} must be non-decreasing, but {name}[{u + 1}]={x[u + 1]} < "
                         f"{name}[{u}]={x[u]}")
    return x


def _quotas(shares: np.ndarray, k: int) -> np.ndarray:
    """Largest-remainder apportionment of ``k`` slots; equal remainders: lower index first."""
    exact = shares * k
    q = np.floor(exact).astype(np.int64)
    left = k - int(q.sum())
    if left > 0:
        order = np.lexsort((np.arange(len(shares)), -(exact - q)))
        q[order[:left]] += 1
    return q


def multi_interest_topk(interest_vectors, interest_importance, interest_offsets, item_vectors,
                        k, *, exclude=None, candidates_per_interest=None,
                        backend="auto") -> TopK:
    """Top-``k`` items per user, drawn from the user's interests by importance.

    1. **Quotas.**  User ``u``'s ``k`` slots are split between its interests in proportion to
       their importance by the largest-remainder method (equal remainders: the interest
       listed first); all-zero importances share equally.
    2. **Candidates.**  Each interest retrieves its nearest items by cosine with
       :func:`interestflow.kernels.cosine_topk` (``candidates_per_interest`` deep; default
       ``k + (items the user has seen)``, enough for every quota to be filled after
       exclusions and duplicates).  Interests in descending importance each take their quota
       of best items that are neither excluded nor already taken; slots an interest cannot
       fill (a shallow ``candidates_per_interest`` or a small catalogue) go round-robin to
       the other interests' next candidates.
    3. **Exact re-rank** of the chosen items by ``max_i  pi_i * max(cos(v_i, x), 0)`` over
       the user's interests ``i``, with ``pi_i`` the importance relative to the user's
       largest and the cosine recomputed in float64: the item's similarity to the interest
       that explains it best, scaled by how much that interest matters (items of the main
       interest first, each interest's items by similarity).  A negative cosine counts as no
       affinity (0), so an unrelated interest never lifts an item.  Scores lie in [0, 1];
       equal (float32) scores: lower item index.

    Parameters
    ----------
    interest_vectors : ndarray, shape (n_interests, dim)
        One vector per interest (e.g. ``UserInterests.vectors(event_vectors)``); need not be
        normalised (a zero vector has cosine 0 with everything).
    interest_importance : array-like, shape (n_interests,)
        Non-negative finite importances.
    interest_offsets : array-like of int, shape (n_users + 1,)
        User ``u``'s interests are rows ``interest_offsets[u]:interest_offsets[u + 1]``; a
        user without interests gets only padding.
    item_vectors : ndarray, shape (n_items, dim)
    k : int
        Items per user, >= 1.
    exclude : tuple (indptr, indices), optional
        Items not to recommend, CSR over users: user ``u``'s are
        ``indices[indptr[u]:indptr[u + 1]]`` (item rows; duplicates allowed).
    candidates_per_interest : int or None, default None
        Candidate depth per interest (clamped to ``n_items``); None: ``k + n_excluded(u)``.
    backend : str, default "auto"
        Backend of :func:`interestflow.kernels.cosine_topk`.

    Returns
    -------
    TopK
        ``(scores, rows)``, the order of every top-k in interestflow: ``scores`` float32
        (n_users, k), re-rank scores, best first, padded with -inf; ``rows`` int64 (n_users,
        k), item rows, padded with -1 when fewer items can be recommended.

    Examples
    --------
    A user whose first interest weighs 3 and second 1 gets 3 items near the first and 1 near
    the second:

    >>> import numpy as np
    >>> items = np.array([[1, 0.0], [1, 0.1], [1, 0.2], [1, 0.3], [0.0, 1], [0.1, 1]],
    ...                  np.float32)
    >>> iv = np.array([[1, 0.0], [0.0, 1]], np.float32)
    >>> _, rows = multi_interest_topk(iv, [3.0, 1.0], [0, 2], items, 4)
    >>> rows.tolist()
    [[0, 1, 2, 4]]
    """
    iv = check_matrix("interest_vectors", interest_vectors)
    n_interests, dim = iv.shape
    items = check_matrix("item_vectors", item_vectors, dim=dim)
    n_items = items.shape[0]
    imp = _check_importance(interest_importance, n_interests)
    off = _check_interest_offsets(interest_offsets, n_interests)
    n_users = off.shape[0] - 1
    k = check_int("k", k, 1)
    depth_fixed = check_int("candidates_per_interest", candidates_per_interest, 1,
                             none_ok=True)
    ex_ptr, ex_idx = _check_exclude_csr(exclude, n_users, n_items)

    out_items = np.full((n_users, k), -1, np.int64)
    out_scores = np.full((n_users, k), -np.inf, np.float32)
    if n_items == 0 or n_interests == 0:
        return TopK(out_scores, out_items)
    cand = _interest_candidates(iv, items, off, np.diff(ex_ptr), k, depth_fixed, backend)
    # exact re-rank inputs: unit rows in float64 (zero rows stay zero)
    iv_unit = unit_rows(iv, dtype=np.float64)
    items_unit = unit_rows(items, dtype=np.float64)
    for u in range(n_users):
        lo, hi = int(off[u]), int(off[u + 1])
        if hi == lo:
            continue
        w = imp[lo:hi]
        blocked = set(ex_idx[ex_ptr[u]:ex_ptr[u + 1]].tolist())
        taken = _take_by_quota(cand[lo:hi], w, blocked, k)
        if not taken:
            continue
        chosen = np.asarray(taken, np.int64)
        score, rank = _rerank(w, iv_unit[lo:hi], items_unit, chosen)
        n = len(chosen)
        out_items[u, :n] = chosen[rank]
        out_scores[u, :n] = score[rank]
    return TopK(out_scores, out_items)


def recommend_multi(interest_vectors, interest_importance, interest_offsets, item_vectors, k,
                    *, exclude=None, candidates_per_interest=None, backend="auto"):
    """Deprecated: :func:`multi_interest_topk` in the old order, ``(item_rows, scores)``.

    Every top-k in interestflow now returns ``(scores, rows)`` (:class:`~interestflow.TopK`);
    ``scores, rows = multi_interest_topk(...)`` replaces ``rows, scores =
    recommend_multi(...)``. Same arrays, same arguments; a ``DeprecationWarning``.
    """
    import warnings

    warnings.warn("recommend_multi() returns (item_rows, scores) and is deprecated; use "
                  "multi_interest_topk(), which returns (scores, rows) like every top-k in "
                  "interestflow", DeprecationWarning, stacklevel=2)
    scores, rows = multi_interest_topk(interest_vectors, interest_importance, interest_offsets,
                                       item_vectors, k, exclude=exclude,
                                       candidates_per_interest=candidates_per_interest,
                                       backend=backend)
    return rows, scores


def _check_importance(interest_importance, n_interests):
    """Check the importances: one finite, non-negative number per interest (as float64)."""
    imp = np.asarray(interest_importance)
    if imp.ndim != 1 or imp.shape[0] != n_interests:
        raise ValueError(f"interest_importance must have shape ({n_interests},) (one per "
                         f"interest vector), got {imp.shape}")
    if imp.dtype.kind not in "iuf" or imp.dtype == np.bool_:
        raise TypeError(f"interest_importance must be numeric, got dtype {imp.dtype}")
    imp = imp.astype(np.float64)
    bad = ~(np.isfinite(imp) & (imp >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"interest_importance[{i}]={imp[i]} is invalid; importances must be "
                         "finite and >= 0")
    return imp


def _check_interest_offsets(interest_offsets, n_interests):
    """Check the CSR offsets of the interests over users (int64, n_users + 1 entries)."""
    off = np.asarray(interest_offsets)
    if off.ndim != 1 or off.shape[0] < 1:
        raise ValueError(f"interest_offsets must be 1-D with n_users + 1 >= 1 entries, got "
                         f"shape {off.shape}")
    return _csr_offsets("interest_offsets", off, n_interests, off.shape[0] - 1)


def _check_exclude_csr(exclude, n_users, n_items):
    """Check ``exclude`` (CSR over users, or None: nothing) and return ``(indptr, indices)``."""
    if exclude is None:
        return np.zeros(n_users + 1, np.int64), np.zeros(0, np.int64)
    if not (isinstance(exclude, tuple) and len(exclude) == 2):
        raise TypeError("exclude must be a tuple (indptr, indices) of the items to leave "
                        f"out per user (CSR), got {type(exclude).__name__}")
    ex_idx = np.asarray(exclude[1])
    if ex_idx.ndim != 1:
        raise ValueError(f"exclude indices must be 1-D, got shape {ex_idx.shape}")
    if len(ex_idx) and not np.issubdtype(ex_idx.dtype, np.integer):
        raise TypeError(f"exclude indices must be integers, got dtype {ex_idx.dtype}")
    ex_idx = ex_idx.astype(np.int64)
    ex_ptr = _csr_offsets("exclude indptr", exclude[0], len(ex_idx), n_users)
    bad = (ex_idx < 0) | (ex_idx >= n_items)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"exclude indices[{i}]={ex_idx[i]} is out of range; expected "
                         f"0 <= item < {n_items}")
    return ex_ptr, ex_idx


def _interest_candidates(iv, items, off, n_ex, k, depth_fixed, backend):
    """Retrieve each interest's nearest items (cosine), best first, as a list of row arrays."""
    n_interests, n_items = iv.shape[0], items.shape[0]
    n_users = off.shape[0] - 1
    # candidate depth per interest, retrieved in buckets of similar depth (power of two) so
    # that a heavy user does not deepen everyone's search
    user_of = np.repeat(np.arange(n_users), np.diff(off))
    if depth_fixed is None:
        depth = np.minimum(k + n_ex[user_of], n_items)
    else:
        depth = np.full(n_interests, min(depth_fixed, n_items), np.int64)
    bucket = np.minimum(2 ** np.ceil(np.log2(np.maximum(depth, 1))).astype(np.int64), n_items)
    cand = [None] * n_interests
    from interestflow.kernels import cosine_topk

    for b in np.unique(bucket):
        rows = np.flatnonzero(bucket == b)
        _, idx = cosine_topk(iv[rows], items, int(b), backend=backend)
        idx = np.asarray(idx)
        for r, i in enumerate(rows):
            cand[i] = idx[r, :depth[i]]
    return cand


def _take_by_quota(cand, w, blocked, k):
    """Fill one user's ``k`` slots: each interest its quota, then round-robin spill-over."""
    n = len(w)
    total = w.sum()
    shares = w / total if total > 0 else np.full(n, 1.0 / n)
    order = np.lexsort((np.arange(n), -w))  # most important first
    quota = _quotas(shares, k)
    taken: list[int] = []
    pos = [0] * n

    def take_next(i):
        c = cand[i]
        while pos[i] < len(c):
            item = int(c[pos[i]])
            pos[i] += 1
            if item not in blocked:
                blocked.add(item)
                taken.append(item)
                return True
        return False

    for i in order:
        for _ in range(int(quota[i])):
            if not take_next(i):
                break
    active = list(order)
    while len(taken) < k and active:
        active = [i for i in active if len(taken) < k and take_next(i)]
    return taken


def _rerank(w, iv_unit, items_unit, chosen):
    """Exact re-rank scores of one user's chosen items and their order (best first)."""
    rel = w / w.max() if w.max() > 0 else np.ones(len(w))
    sims = np.maximum(iv_unit @ items_unit[chosen].T, 0.0)  # (interests, chosen)
    score = (rel[:, None] * sims).max(axis=0).astype(np.float32)
    rank = np.lexsort((chosen, -score))
    return score, rank
