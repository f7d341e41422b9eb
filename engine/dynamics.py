"""User segments tracked over time: snapshots, stable segment ids and lifecycle events.

:class:`SegmentTracker` cuts the event stream into windows, builds every active user's
time-decayed interest vector as of each window end, clusters each snapshot warm-started from
the previous snapshot's centroids, keeps segment ids stable by optimal (Hungarian) matching
and reports lifecycle events. :func:`update_segments` is the incremental step used when a few
users' vectors change (``InterestEngine.partial_fit``).

Snapshots
    Windows start at ``origin`` (default: the earliest event's day, 00:00 UTC) and end every
    ``freq``. ``window="tumbling"``: snapshot ``t`` holds the events of ``[edge_t,
    edge_t+1)``; ``window="sliding"``: the events of the ``window_length`` (default three
    ``freq``) before each window end. A user is in a snapshot when it has an event with
    positive weight in it; its vector is the weighted mean of those events' vectors, each
    weighted ``weight * 2 ** (-(end - ts) / half_life_days)`` (``interests.decayed_user_means``
    with ``now`` = the window end), scaled to unit length.

Clustering (per snapshot)
    K is ``n_segments`` or, for ``"auto"``, the engine's criterion
    (:func:`interestflow.segments.choose_n_segments`: cosine silhouette of K-means solutions on
    a sample) with candidates up to ``k_max`` (default ``clip(round(sqrt(n_users)), 2, 64)``).
    The warm start keeps the previous centroids that are still nearest to at least
    ``min_segment_size`` users (the best supported first, at most K), and adds k-means++ (D²)
    seeds for the rest; one fresh k-means++ solution (3 restarts) is also computed and replaces
    the warm one only when its inertia is more than 1% lower, which keeps segments from
    flip-flopping between equally good partitions. Segments smaller than ``min_segment_size``
    are dissolved into their nearest neighbours.

Matching (snapshot t-1 -> t)
    ``score[i, j] = match_weight * cos(centroid_i, centroid_j) + (1 - match_weight) *
    jaccard(members_i, members_j)``, the Jaccard index taken over the users present in both
    snapshots (users who arrive or leave do not dilute it). ``scipy.optimize.
    linear_sum_assignment`` maximises the total score; a pair keeps the previous id when its
    score is at least ``match_threshold``; every other current segment gets a new id (ids are
    never reused).

Lifecycle events (observed at snapshot t), from the flows ``F[i, j]`` = users in previous
segment i and current segment j (users present in both snapshots):

* ``split``: previous i sends at least ``split_threshold`` of its members (and at least
  ``min_segment_size`` users) to each of >= 2 current segments, each of which is mostly
  (>= 50%) made of i's members. ``value`` = share of i's members in the listed segments.
* ``merge``: current j receives at least ``merge_threshold`` of its members (and at least
  ``min_segment_size`` users) from each of >= 2 previous segments, each of which mostly
  (>= 50%) went into j. ``value`` = share of j's members coming from them. (The "mostly"
  conditions keep users who cross a boundary between two lasting segments, in both
  directions, from reading as a split and a merge at once.)
* ``appear``: an unmatched current segment that is not a split part or a merge result.
  ``value`` = its best matching score (below ``match_threshold``).
* ``vanish``: an unmatched previous segment that did not split and is not a merge source.
  ``value`` = its best matching score.

A window without events gives an empty snapshot: every segment of the previous snapshot
vanishes there and the segments after it appear with new ids (``value`` 0).
* ``drift``: a matched pair outside any split/merge whose centroid moved by more than
  sampling explains: ``value = 1 - cos(centroid_t-1, centroid_t)``, ``value - noise >=
  drift_threshold`` and ``value >= 2 * noise``, where
  ``noise = ((1 - R_a**2) / n_a + (1 - R_b**2) / n_b) / (2 R_a R_b)`` is the expected
  ``1 - cos`` between two centroids of ``n_a`` and ``n_b`` unit vectors drawn from one
  segment whose members' mean has length ``R`` (a tight or large segment has little noise, a
  small diffuse one more).

Significance: which candidate events are reported (``lifecycle_``; every candidate, with its
evidence and the reason it was left out, is in ``lifecycle_candidates_``)

* ``stability`` (split, merge, appear, vanish): do the segments involved exist as separate
  groups, or is the cut arbitrary? The users of the split's parts (the merge's sources, or
  the appearing / vanishing segment and its nearest neighbour), in the snapshot where they
  are separate, are re-clustered 10 times: each time a random half of them by a fresh
  K-means with as many clusters; ``stability`` is the mean adjusted Rand index with the
  tracked segments (clipped at 0). Two real groups give ~1; a round cloud cut in two gives
  much less (an elongated cloud is cut the same way every time and can pass: the p-value
  below is the second guard). Reported only when ``stability >= min_stability`` (default 0.6); an appearing or
  vanishing segment that is its snapshot's only one has no stability and is not reported.
* ``p_value``: is the segment's kind of user new (gone), or did only the clustering
  change? Users of a segment's kind are counted in both snapshots (nearest to its
  centroid, at least as close as its lower-quartile member); the p-value is that of its
  share in its own snapshot if it were at most twice the other snapshot's share (one-sided
  binomial). Appear: the new segment against the previous snapshot; vanish: the gone
  segment against the current one; split: the parts' kinds of user new against the
  previous snapshot (pooled, or any single part: see ``_split_p``); merge: at least one
  source's kind gone (one source may simply absorb the others: the smallest source p-value
  times their number). Reported only
  when ``p_value <= max_p_value`` (default 0.01). This keeps a theme that gets its own
  segment once enough users hold it from "appearing", and a cut through a cloud of users
  that moves between snapshots from "splitting" and "merging".
* hysteresis: a split whose parts merge again, a merge split again, or a segment that
  appears and vanishes, within 2 snapshots, is transient: neither event is reported.

Drift events keep their own test (the move against sampling noise above) and carry NaN in
both columns. On real data with permuted timestamps (no dynamics left) these rules leave
~0-1 split / merge / appear / vanish events per 10 transitions
(``benchmarks/tracking_null.py``).
"""

from __future__ import annotations

import logging
import numbers
import time

import numpy as np
import pandas as pd

from ._utils import unit_rows as _unit
from .segments import candidate_ks, check_n_segments

logger = logging.getLogger(__name__)

__all__ = ["SegmentTracker", "cluster_users", "match_segments", "update_segments",
           "tracking_schemas", "TRACKING_TABLES"]

#: Tables written by :meth:`SegmentTracker.to_run_dir`, in ``RUN_DIR/tracking/<name>.parquet``.
TRACKING_TABLES = ("snapshots", "assignments", "lifecycle", "lifecycle_candidates",
                   "transitions", "map", "trends")
_WINDOWS = ("tumbling", "sliding")
_EVENT_ORDER = {"appear": 0, "vanish": 1, "split": 2, "merge": 3, "drift": 4}
# A fresh k-means++ solution replaces the warm-started one only when its inertia is this much
# lower (relative): hysteresis against flip-flopping between near-equal partitions.
_FRESH_GAIN = 0.01
_FRESH_N_INIT = 3
# Without previous centroids (first snapshot) only fresh solutions exist: more restarts, so
# that K-means local optima do not mislead the silhouette (3 restarts picked a wrong K in 2 of
# 18 planted snapshots, 10 in none).
_FIRST_N_INIT = 10
# A drift must also be this many times the centroid move expected from sampling alone: the
# excess over the expectation fluctuates in proportion to it, so small diffuse segments need
# the relative test (on the planted scenarios stable segments reach 1.6x, planted drifts 3x+).
_DRIFT_NOISE_RATIO = 2.0
#: a part of a split is mostly made of the split segment's members; a source of a merge
#: mostly went into the merged segment (users in both snapshots)
_CORE_SHARE = 0.5
# half-samples per stability score (see _stability)
_STABILITY_REPEATS = 10
# a split undone by a merge (or the reverse), or an appear then vanish, within this many
# snapshots is transient: neither event is reported
_HYSTERESIS = 2
# Clustering problems up to this many vector elements (n_users * dim) run with one torch
# intra-op thread and one BLAS thread: their K-means steps and silhouettes take microseconds,
# so thread start-up and barrier waits dominate, and on a busy CPU each barrier waits for a
# descheduled thread (measured 20x slower with two threads than with one on a loaded 2-core
# machine, for 143 users x 384 dims).
_SINGLE_THREAD_ELEMENTS = 1 << 18
# Users sampled (seeded) to score candidate K values, as segments.SegmentConfig.sample_size.
_K_SAMPLE = 3000


def tracking_schemas():
    """The pyarrow schemas of the tracking tables (``RUN_DIR/tracking/*.parquet``).

    Returns
    -------
    dict of str to pyarrow.Schema
        Keyed by the names in :data:`TRACKING_TABLES`.
    """
    import pyarrow as pa

    ts = pa.timestamp("ns", tz="UTC")
    ids = pa.list_(pa.int64())
    strs = pa.list_(pa.string())
    return {
        "snapshots": pa.schema([("snapshot", pa.int32()), ("window_start", ts),
                                ("window_end", ts), ("segment_id", pa.int64()),
                                ("size", pa.int64()), ("keywords", strs),
                                ("representative_texts", strs)]),
        "assignments": pa.schema([("snapshot", pa.int32()), ("user_id", pa.string()),
                                  ("segment_id", pa.int64())]),
        "lifecycle": pa.schema([("snapshot", pa.int32()), ("event", pa.string()),
                                ("segments_from", ids), ("segments_to", ids),
                                ("value", pa.float64()), ("p_value", pa.float64()),
                                ("stability", pa.float64()), ("detail", pa.string())]),
        "lifecycle_candidates": pa.schema([
            ("snapshot", pa.int32()), ("event", pa.string()), ("segments_from", ids),
            ("segments_to", ids), ("value", pa.float64()), ("p_value", pa.float64()),
            ("stability", pa.float64()), ("detail", pa.string()), ("reported", pa.bool_()),
            ("reason", pa.string())]),
        "trends": pa.schema([("snapshot", pa.int32()), ("segment_id", pa.int64()),
                             ("kind", pa.string()), ("key", pa.string()),
                             ("share", pa.float64()), ("previous_share", pa.float64()),
                             ("n_users", pa.int64()), ("p_value", pa.float64()),
                             ("label", pa.string())]),
        "transitions": pa.schema([("snapshot", pa.int32()), ("from_segment", pa.int64()),
                                  ("to_segment", pa.int64()), ("n_users", pa.int64())]),
        "map": pa.schema([("snapshot", pa.int32()), ("user_id", pa.string()),
                          ("x", pa.float32()), ("y", pa.float32())]),
    }


# ------------------------------------------------------------------------------ validation

def _check_number(name, value, *, lo=None, hi=None, lo_open=False, allow_inf=False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    v = float(value)
    if np.isnan(v) or (np.isinf(v) and not allow_inf):
        raise ValueError(f"{name}={value!r} must be a finite number")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        op = ">" if lo_open else ">="
        raise ValueError(f"{name}={value!r} is invalid; pass {name} {op} {lo}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}={value!r} is invalid; pass {name} <= {hi}")
    return v


def _check_int(name, value, minimum) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name}={value} is invalid; pass {name} >= {minimum}")
    return int(value)


def _to_offset(name, value):
    from pandas.tseries.frequencies import to_offset

    if isinstance(value, (pd.Timedelta, np.timedelta64)) or hasattr(value, "total_seconds"):
        value = pd.Timedelta(value)
    elif not isinstance(value, (str, pd.DateOffset)):
        raise TypeError(f"{name} must be a pandas frequency string such as '30D', '7D' or 'MS', "
                        f"a Timedelta or a DateOffset, got {type(value).__name__} ({value!r})")
    try:
        off = to_offset(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}={value!r} is not a pandas frequency; pass e.g. '30D', '7D', "
                         "'W' or 'MS'") from exc
    probe = pd.Timestamp("2024-01-01", tz="UTC")
    if not probe + off > probe:
        raise ValueError(f"{name}={value!r} must be a positive duration")
    return off


def _as_ns(ts, n: int) -> np.ndarray:
    """Event times as int64 nanoseconds since the epoch (UTC); naive datetimes are UTC."""
    if isinstance(ts, (pd.Series, pd.Index)):
        s = pd.Series(ts, copy=False).reset_index(drop=True)
    else:
        arr = np.asarray(ts)
        if arr.ndim != 1:
            raise ValueError(f"ts must be 1-D (one time per event), got shape {arr.shape}")
        s = pd.Series(arr)
    if len(s) != n:
        raise ValueError(f"ts has {len(s)} entries but event_vectors has {n} rows; pass one "
                         "time per event")
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(s.dtype):
        vals = np.asarray(s, dtype="datetime64[ns]")
        nat = np.isnat(vals)
    elif pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        sec = np.asarray(s, dtype=np.float64)
        nat = ~np.isfinite(sec)
        if nat.any():
            i = int(np.argmax(nat))
            raise ValueError(f"ts must be finite unix seconds, got {sec[i]} at row {i} "
                             f"({int(nat.sum())} rows affected)")
        return np.round(sec * 1e9).astype(np.int64)
    else:
        raise TypeError(f"ts must hold datetimes or unix seconds (numbers), got dtype {s.dtype}")
    if nat.any():
        i = int(np.argmax(nat))
        raise ValueError(f"ts must be valid times, got NaT at row {i} "
                         f"({int(nat.sum())} rows affected)")
    return np.asarray(vals, dtype="datetime64[ns]").astype(np.int64)


# ------------------------------------------------------------------------------ clustering

def _nearest(x: np.ndarray, centroids: np.ndarray, backend: str) -> np.ndarray:
    """Row of the most cosine-similar centroid for every row of ``x`` (both unit rows)."""
    from interestflow.kernels import cosine_topk

    _, idx = cosine_topk(np.ascontiguousarray(x, np.float32),
                         np.ascontiguousarray(centroids, np.float32), 1,
                         backend=backend, normalized=True)
    return np.asarray(idx)[:, 0].astype(np.int64)


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, shape (len(a), len(b)), without an (n, k, dim) buffer."""
    d = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _dsq_seeds(x: np.ndarray, centers: np.ndarray, n_new: int, rng) -> np.ndarray:
    """``centers`` plus ``n_new`` greedy k-means++ (D²) seeds drawn from the rows of ``x``.

    Greedy as in scikit-learn: ``2 + log(k)`` candidates are drawn with probability
    proportional to the squared distance to the nearest center, and the one that lowers the
    total squared distance most is kept.
    """
    x = x.astype(np.float64)
    out = [np.asarray(c, np.float64) for c in centers]
    if n_new <= 0:
        return np.asarray(out, dtype=np.float32).reshape(len(out), x.shape[1])
    if out:
        closest = _sq_dist(x, np.asarray(out)).min(axis=1)
    else:
        first = int(rng.randint(len(x)))
        out.append(x[first])
        closest = _sq_dist(x, x[first:first + 1])[:, 0]
        n_new -= 1
    n_trials = 2 + int(np.log(max(len(out) + n_new, 2)))
    for _ in range(n_new):
        total = closest.sum()
        if total <= 0:  # every row already is a center: a duplicate cannot be avoided
            cand = rng.randint(len(x), size=1)
        else:
            cand = np.searchsorted(np.cumsum(closest), rng.uniform(size=n_trials) * total)
            cand = np.minimum(cand, len(x) - 1)
        d = _sq_dist(x[cand], x)
        pot = np.minimum(closest[None], d).sum(1)
        best = int(np.argmin(pot))
        out.append(x[cand[best]])
        closest = np.minimum(closest, d[best])
    return np.asarray(out, dtype=np.float32)


def _kmeans(x, k, init, *, random_state, backend, device, n_init=1, max_iter=100):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from .kmeans import KMeans

    km = KMeans(n_clusters=int(k), init=init, n_init=n_init, max_iter=max_iter,
                random_state=random_state, backend=backend, device=device)
    with warnings.catch_warnings():
        # fewer distinct clusters than k is handled by the caller (small segments dissolve)
        warnings.simplefilter("ignore", ConvergenceWarning)
        km.fit(x)
    return km.labels_.astype(np.int64), np.asarray(km.cluster_centers_, np.float32), \
        float(km.inertia_)


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
        labels, centroids, _ = _kmeans(x, len(keep), centroids[keep], random_state=random_state,
                                       backend=backend, device=device)
    return labels, centroids, origin


class _torch_threads:
    """Context: ``torch.set_num_threads(n)`` for the calling thread, restored on exit."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        if self.n is not None:
            import torch

            self.old = torch.get_num_threads()
            if self.n < self.old:
                torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.n is not None and self.n < self.old:
            import torch

            torch.set_num_threads(self.old)
        return False


def _blas_threads(n: int | None):
    """Context limiting BLAS threads (threadpoolctl, a scikit-learn dependency) or a no-op."""
    import contextlib

    if n is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


def _k_candidates(n, n_segments, k_max):
    if n_segments != "auto":
        return [min(int(n_segments), n)]
    k_max = k_max if k_max is not None else int(np.clip(round(np.sqrt(n)), 2, 64))
    return candidate_ks(n, 2, k_max)


def _warm_init(x, prev_c, k, min_size, rng, backend):
    """Warm start: the previous centroids still nearest to >= ``min_size`` rows (the K best
    supported, kept in their previous order), then greedy k-means++ seeds.

    Returns ``(init (k, dim), origin (k,))``: the previous row of each start, -1 for seeds.
    """
    support = np.bincount(_nearest(x, prev_c, backend), minlength=len(prev_c))
    order = np.argsort(-support, kind="stable")
    kept = np.sort(order[support[order] >= min_size][:k])
    init = _dsq_seeds(x, prev_c[kept], k - len(kept), rng)
    return init, np.concatenate([kept, np.full(k - len(kept), -1)]).astype(np.int64)


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
        _check_int("k_max", k_max, 2)
    min_segment_size = _check_int("min_segment_size", min_segment_size, 1)
    x = np.asarray(user_vectors)
    if x.ndim != 2 or x.dtype.kind != "f":
        raise ValueError(f"user_vectors must be a 2-D float array (n_users, dim), got shape "
                         f"{x.shape} dtype {x.dtype}")
    x = _unit(x)
    n, dim = x.shape
    warm_from = None
    if previous_centroids is not None and len(previous_centroids):
        warm_from = _unit(np.asarray(previous_centroids, dtype=np.float32))
        if warm_from.ndim != 2 or warm_from.shape[1] != dim:
            raise ValueError(f"previous_centroids must have shape (n_previous, {dim}), got "
                             f"{warm_from.shape}")
    if n == 0:
        out = {"silhouette": float("nan"), "timings": {"choose_k_s": 0.0, "cluster_s": 0.0}}
        out.update(labels=np.zeros(0, np.int64), init="empty", k=0,
                   centroids=np.zeros((0, dim), np.float32), resultant=np.zeros(0),
                   size=np.zeros(0, np.int64), previous_rows=np.zeros(0, np.int64))
        return out
    small = n * dim <= _SINGLE_THREAD_ELEMENTS and (device is None or str(device) == "cpu")
    with _torch_threads(1 if small else None), _blas_threads(1 if small else None):
        return _cluster_users(x, warm_from, n_segments, k_max, min_segment_size, random_state,
                              backend, device)


def _cluster_users(x, warm_from, n_segments, k_max, min_segment_size, random_state, backend,
                   device) -> dict:
    from sklearn.metrics import silhouette_score

    n, dim = x.shape
    t0 = time.perf_counter()
    out = {}
    kw = dict(random_state=random_state, backend=backend, device=device)
    ks = _k_candidates(n, n_segments, k_max)
    rng = np.random.RandomState(random_state)
    sample = x
    if len(ks) > 1 and n > _K_SAMPLE:
        sample = x[np.sort(rng.choice(n, size=_K_SAMPLE, replace=False))]
    best = None  # (score, k, labels, centroids, inertia, init, origin)
    for k in ks:
        if k == 1:
            sol = (np.zeros(len(sample), np.int64), _unit(sample.mean(0, keepdims=True)),
                   float("nan"), "single", np.full(1, -1, np.int64))
        else:
            n_init = _FIRST_N_INIT if warm_from is None else _FRESH_N_INIT
            sol = _kmeans(sample, k, "k-means++", n_init=n_init, **kw) + ("first",)
            sol += (np.full(k, -1, np.int64),)
            if warm_from is not None:
                init, origin = _warm_init(sample, warm_from, k, min_segment_size, rng, backend)
                warm = _kmeans(sample, k, init, **kw)
                # the warm start wins unless the fresh solution is clearly better
                fresh_wins = sol[2] < warm[2] * (1.0 - _FRESH_GAIN)
                sol = sol[:3] + ("fresh", sol[4]) if fresh_wins else warm + ("warm", origin)
        if len(ks) == 1:
            score = float("nan")
        elif len(np.unique(sol[0])) < 2:
            continue
        else:
            score = float(silhouette_score(sample, sol[0], metric="cosine"))
        if best is None or (round(score, 4), -k) > (round(best[0], 4), -best[1]):
            best = (score, k) + sol
    if best is None:  # every candidate collapsed to one cluster (identical vectors)
        best = (float("nan"), 1, np.zeros(len(sample), np.int64),
                _unit(sample.mean(0, keepdims=True)), float("nan"), "single",
                np.full(1, -1, np.int64))
    score, k, labels, cents, _, init, origin = best
    t1 = time.perf_counter()
    if k == 1:
        labels = np.zeros(n, np.int64)
    else:
        if sample is not x:  # K was chosen on a sample: cluster everyone from its solution
            labels, cents, _ = _kmeans(x, k, cents, **kw)
        labels, cents, origin = _dissolve_small(x, labels, cents, origin, min_segment_size,
                                                **kw)
    # drop empty clusters; centroids = means of the members, whose length (the mean
    # resultant length R) measures how tight the segment is
    used = np.flatnonzero(np.bincount(labels, minlength=len(cents)))
    remap = np.full(len(cents), -1, np.int64)
    remap[used] = np.arange(len(used))
    labels = remap[labels]
    size = np.bincount(labels, minlength=len(used))
    sums = np.zeros((len(used), dim), np.float64)
    np.add.at(sums, labels, x)
    means = sums / size[:, None]
    out.update(labels=labels, centroids=_unit(means), init=init, size=size, k=len(used),
               resultant=np.linalg.norm(means, axis=1), silhouette=score,
               previous_rows=origin[used])
    out["timings"] = {"choose_k_s": t1 - t0, "cluster_s": time.perf_counter() - t1}
    return out


# ------------------------------------------------------------------------------- tracker

class SegmentTracker:
    """Track user segments over time windows with stable ids and lifecycle events.

    Parameters
    ----------
    freq : str, Timedelta or DateOffset, default "30D"
        Distance between snapshot ends (a pandas frequency: ``"30D"``, ``"7D"``, ``"MS"``...).
    window : {"tumbling", "sliding"}, default "tumbling"
        Tumbling: each snapshot holds the events of its own window. Sliding: each snapshot
        holds the events of the ``window_length`` before its end (windows overlap).
    window_length : str, Timedelta or DateOffset, optional
        Sliding windows only; default three ``freq``; must be at least ``freq``.
    origin : time, optional
        Start of the first window; default the earliest event's day at 00:00 UTC.
    half_life_days : float, default 30.0
        Half-life of the decay toward each window end (``inf`` = plain weighted mean).
    n_segments : int or "auto", default "auto"
        Segments per snapshot; ``"auto"`` chooses K per snapshot by cosine silhouette.
    k_max : int, optional
        Largest K tried by ``"auto"``; default ``clip(round(sqrt(n_users)), 2, 64)`` of the
        snapshot.
    match_weight : float, default 0.5
        Weight of centroid cosine in the matching score (the rest is member Jaccard).
    match_threshold : float, default 0.4
        Smallest matching score that keeps a segment id.
    split_threshold : float, default 0.25
        Smallest share of a previous segment's members per part of a split.
    merge_threshold : float, default 0.25
        Smallest share of a current segment's members per source of a merge.
    drift_threshold : float, default 0.05
        Smallest centroid move (``1 - cos`` between matched centroids, minus the move expected
        from sampling noise) reported as drift; the move must also be at least twice that
        expected from sampling.
    min_segment_size : int, default 5
        Segments smaller than this are dissolved into their neighbours; split/merge flows need
        at least this many users.
    max_p_value : float, default 0.01
        Split / merge / appear / vanish events are reported only with a p-value at most
        this (module docstring, "Significance").
    min_stability : float, default 0.6
        Split / merge / appear / vanish events are reported only with a stability at least
        this (module docstring, "Significance").
    min_coverage : float, default 0.5
        A first or last window that the data covers less than this share of (the data ends
        a few days into the last window, or an ``origin`` well before the first event) is
        left out, with a warning; 0 keeps every window. ``windows_["coverage"]`` has each
        kept window's share.
    n_keywords : int, default 8
        Keywords per segment and snapshot (c-TF-IDF) when ``texts`` are given.
    n_texts : int, default 3
        Representative texts per segment and snapshot when ``texts`` are given.
    random_state : int, default 0
        Seed of sampling and K-means.
    backend : str, default "auto"
        K-means and top-k backend (see :class:`interestflow.KMeans`).
    device : str, optional
        Device for K-means (``None`` picks automatically).

    Attributes
    ----------
    snapshots_, assignments_, lifecycle_, transitions_, map_ : pandas.DataFrame
        The tracking tables (schemas: :func:`tracking_schemas`). ``lifecycle_`` holds the
        reported (significant, not transient) events.
    trends_ : pandas.DataFrame
        Items (``item_ids`` given) and keywords (``texts`` given) whose share of a segment's
        users rose significantly since the previous snapshot: ``snapshot, segment_id, kind
        ("item" / "keyword"), key, share, previous_share, n_users, p_value, label`` (label:
        for an item, the text of the first event naming it, clipped; "" for keywords; see
        :mod:`interestflow.trends`; at most ``n_keywords`` per segment, snapshot and kind,
        p-values at most ``max_p_value``).
    dropped_windows_ : list of dict
        Windows left out by ``min_coverage``: ``window_start, window_end, coverage,
        n_events``.
    lifecycle_candidates_ : pandas.DataFrame
        Every candidate event with its ``p_value``, ``stability``, ``reported`` and the
        ``reason`` it was left out ("" when reported).
    windows_ : pandas.DataFrame
        One row per snapshot: ``snapshot, window_start, window_end, n_users, n_segments,
        init, silhouette, coverage``. ``init`` says where the kept solution came from: ``"warm"``
        (previous centroids), ``"fresh"`` (k-means++ beat the warm start by > 1% inertia),
        ``"first"`` (no previous centroids), ``"single"`` (K = 1), ``"empty"`` (no users).
        ``silhouette`` is that of the chosen K (NaN when K is fixed or 1). ``coverage``:
        the share of the window's span inside the data's time range (1 but for the first
        and last windows).
    paths_ : pandas.DataFrame
        Index ``user_id``, one column per snapshot: each user's segment id (nullable
        ``Int64``; ``<NA>`` when the user is not in that snapshot).
    centroids_ : list of dict of int to ndarray (dim,)
        Per snapshot, unit centroid of each segment id.
    drift_scores_ : pandas.DataFrame
        Every matched segment outside a split or merge, drift or not: ``snapshot,
        segment_id, value`` (``1 - cos`` of its centroid to the previous snapshot) and
        ``noise`` (the move expected from sampling alone), to calibrate ``drift_threshold``.
    snapshot_users_ : list of pandas.Index
        Per snapshot, the users present (original ids, sorted).
    snapshot_vectors_ : list of ndarray, shape (n_users_t, dim)
        Per snapshot, the unit user vectors, rows in ``snapshot_users_`` order.
    timings_ : dict
        Seconds per stage, summed over snapshots: ``user_vectors_s`` (window cuts and decayed
        means), ``choose_k_s`` (candidate K-means solutions and silhouettes), ``cluster_s``
        (final clustering on all users, small-segment dissolution), ``match_s`` (ids and
        events), ``labels_s`` (keywords, representative texts), ``map_s`` (2-D projection),
        ``total_s``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> v = np.repeat(np.eye(3, dtype=np.float32), 40, axis=0) + 0.05 * rng.random((120, 3))
    >>> users = [f"u{i % 60}" for i in range(120)]
    >>> ts = np.where(np.arange(120) < 60, 86400.0, 55 * 86400.0)
    >>> tr = SegmentTracker(n_segments=2, freq="30D").fit(v.astype(np.float32), users, ts)
    >>> tr.windows_["n_users"].tolist()
    [60, 60]
    """

    def __init__(self, *, freq="30D", window="tumbling", window_length=None, origin=None,
                 half_life_days=30.0, n_segments="auto", k_max=None, match_weight=0.5,
                 match_threshold=0.4, split_threshold=0.25, merge_threshold=0.25,
                 drift_threshold=0.05, min_segment_size=5, max_p_value=0.01,
                 min_stability=0.6, min_coverage=0.5, n_keywords=8, n_texts=3, random_state=0, backend="auto",
                 device=None):
        self.freq = freq
        self.window = window
        self.window_length = window_length
        self.origin = origin
        self.half_life_days = half_life_days
        self.n_segments = n_segments
        self.k_max = k_max
        self.match_weight = match_weight
        self.match_threshold = match_threshold
        self.split_threshold = split_threshold
        self.merge_threshold = merge_threshold
        self.drift_threshold = drift_threshold
        self.min_segment_size = min_segment_size
        self.max_p_value = max_p_value
        self.min_stability = min_stability
        self.min_coverage = min_coverage
        self.n_keywords = n_keywords
        self.n_texts = n_texts
        self.random_state = random_state
        self.backend = backend
        self.device = device

    _PARAMS = ("freq", "window", "window_length", "origin", "half_life_days", "n_segments",
               "k_max", "match_weight", "match_threshold", "split_threshold",
               "merge_threshold", "drift_threshold", "min_segment_size", "max_p_value",
               "min_stability", "min_coverage", "n_keywords",
               "n_texts", "random_state", "backend", "device")

    def get_params(self, deep=True) -> dict:
        """Parameters of this tracker (scikit-learn convention)."""
        return {p: getattr(self, p) for p in self._PARAMS}

    def set_params(self, **params) -> "SegmentTracker":
        """Set parameters by name; unknown names raise ``ValueError``."""
        for name, value in params.items():
            if name not in self._PARAMS:
                raise ValueError(f"unknown parameter {name!r} for SegmentTracker; valid: "
                                 f"{', '.join(self._PARAMS)}")
            setattr(self, name, value)
        return self

    # --------------------------------------------------------------------- parameters
    def _check_params(self):
        if self.window not in _WINDOWS:
            raise ValueError(f"window={self.window!r} is not valid; pass one of {_WINDOWS}")
        off = _to_offset("freq", self.freq)
        length = None
        if self.window == "tumbling":
            if self.window_length is not None:
                raise ValueError("window_length is only used with window='sliding'; a tumbling "
                                 "window is freq long (pass window_length=None)")
        else:
            length = (off * 3 if self.window_length is None
                      else _to_offset("window_length", self.window_length))
            probe = pd.Timestamp("2024-01-01", tz="UTC")
            if probe + length < probe + off:
                raise ValueError(f"window_length={self.window_length!r} is shorter than "
                                 f"freq={self.freq!r}; sliding windows must cover every event")
        hl = self.half_life_days
        _check_number("half_life_days", hl, lo=0, lo_open=True, allow_inf=True)
        check_n_segments(self.n_segments)
        if self.k_max is not None:
            _check_int("k_max", self.k_max, 2)
        _check_number("match_weight", self.match_weight, lo=0, hi=1)
        for name in ("match_threshold", "split_threshold", "merge_threshold"):
            _check_number(name, getattr(self, name), lo=0, hi=1)
        _check_number("drift_threshold", self.drift_threshold, lo=0, hi=2)
        _check_int("min_segment_size", self.min_segment_size, 1)
        _check_number("max_p_value", self.max_p_value, lo=0, hi=1)
        _check_number("min_stability", self.min_stability, lo=-1, hi=1)
        _check_number("min_coverage", self.min_coverage, lo=0, hi=1)
        _check_int("n_keywords", self.n_keywords, 1)
        _check_int("n_texts", self.n_texts, 1)
        _check_int("random_state", self.random_state, 0)
        if not isinstance(self.backend, str):
            raise TypeError(f"backend must be a string, got {type(self.backend).__name__}")
        return off, length

    # ---------------------------------------------------------------------------- fit
    def fit(self, event_vectors, user_ids, ts, weights=None, texts=None, item_ids=None):
        """Build snapshots, cluster them, match ids and detect lifecycle events.

        Parameters
        ----------
        event_vectors : ndarray, shape (n_events, dim)
            Encoded events (any row scale; the engine's unit vectors).
        user_ids : array-like, shape (n_events,)
            User of each event (stored as str in the tables).
        ts : array-like, shape (n_events,)
            Event times: datetimes (naive = UTC) or unix seconds.
        weights : array-like, shape (n_events,), optional
            Non-negative event weights; default 1.
        texts : sequence of str, length n_events, optional
            Event texts; when given, segments get keywords and representative texts, and
            ``trends_`` the keywords rising inside segments.
        item_ids : array-like, shape (n_events,), optional
            Item of each event (null: none); when given, ``trends_`` holds the items rising
            inside segments.

        Returns
        -------
        self
        """
        t_total = time.perf_counter()
        item_codes, item_names = _item_codes(item_ids, len(event_vectors))
        offset, length = self._check_params()
        vec, codes, users, ts_ns, w, texts = self._check_inputs(event_vectors, user_ids, ts,
                                                                weights, texts)
        if self.n_segments != "auto":
            check_n_segments(self.n_segments, len(users))
        starts, ends = self._windows(ts_ns, offset, length)
        starts, ends, self.coverage_ = self._whole_windows(ts_ns, starts, ends)
        self.timings_ = dict.fromkeys(("user_vectors_s", "choose_k_s", "cluster_s", "match_s",
                                       "significance_s", "labels_s", "map_s"), 0.0)
        snaps, events, rows_win, self._drift_scores = self._run(vec, codes, ts_ns, w, starts,
                                                                ends)
        self._tables(snaps, events, rows_win, users, vec, codes, ts_ns, texts)
        tic = time.perf_counter()
        self.trends_ = self._trends(snaps, texts, item_codes, item_names)
        self.timings_["trends_s"] = time.perf_counter() - tic
        self.timings_["total_s"] = time.perf_counter() - t_total
        return self

    def _trends(self, snaps, texts, item_codes, item_names) -> pd.DataFrame:
        """Items and keywords rising inside segments (:mod:`interestflow.trends`)."""
        from .labels import term_presence
        from .trends import TREND_COLUMNS, empty_trends, rising_keys

        first_text = {}
        if item_codes is not None and texts is not None:  # an item's label: a text naming it
            has = np.flatnonzero(item_codes >= 0)
            codes_, at = np.unique(item_codes[has], return_index=True)
            first_text = {int(c): texts[has[i]] for c, i in zip(codes_, at)}

        def label(kind, key):
            if kind == "item" and int(key) in first_text:
                t = " ".join(first_text[int(key)].split())
                return t if len(t) <= 80 else t[:79] + "…"
            return ""

        keyed = []
        if item_codes is not None:
            keyed.append(("item", item_codes, None, item_names))
        if texts is not None:
            x, terms = term_presence(texts)
            if x.shape[1]:
                keyed.append(("keyword", None, x, terms))
        rows = []
        for kind, codes, x, names in keyed:
            pairs = []
            for s in snaps:  # distinct (user row, key) pairs of each window
                if codes is not None:
                    k = codes[s["rows"]]
                    p = np.stack([s["row_user"], k], axis=1)[k >= 0]
                else:
                    sub = x[s["rows"]].tocoo()
                    p = np.stack([s["row_user"][sub.row], sub.col], axis=1)
                pairs.append(np.unique(p.reshape(-1, 2), axis=0))
            for a, b, pa_, pb in zip(snaps, snaps[1:], pairs, pairs[1:]):
                if not len(a["users"]) or not len(b["users"]):
                    continue
                found = rising_keys(a["ids"][a["labels"]], pa_, b["ids"][b["labels"]], pb,
                                    len(names), max_p_value=float(self.max_p_value),
                                    top_n=int(self.n_keywords))
                rows += [(b["t"], sid, kind, str(names[key]), sh, before, n, p,
                          label(kind, key)) for sid, key, sh, before, n, p in found]
        if not rows:
            return empty_trends()
        df = pd.DataFrame(rows, columns=list(TREND_COLUMNS))
        df["label"] = df["label"].astype(object)
        df["snapshot"] = df["snapshot"].astype(np.int32)
        df["segment_id"] = df["segment_id"].astype(np.int64)
        df["n_users"] = df["n_users"].astype(np.int64)
        return df.sort_values(["snapshot", "segment_id", "kind", "p_value"],
                              kind="stable").reset_index(drop=True)

    def _whole_windows(self, ts_ns, starts, ends):
        """Drop a leading or trailing window that the data covers less than
        ``min_coverage`` of (coverage: the part of the window's span between the first and
        the last event of the whole data set), with a warning naming it and its events; a
        part-window would otherwise read as most segments vanishing. Returns the kept
        ``starts, ends`` and their coverage."""
        lo, hi = int(ts_ns.min()), int(ts_ns.max()) + 1
        span = (ends - starts).astype(np.float64)
        cov = (np.minimum(ends, hi) - np.maximum(starts, lo)).clip(0) / span
        keep = np.ones(len(starts), bool)
        floor = float(self.min_coverage)
        if len(starts) > 1:
            for i in (0, len(starts) - 1):
                if cov[i] < floor:
                    keep[i] = False
            if not keep.any():  # two part-windows: keep the better covered one
                keep[int(np.argmax(cov))] = True
        self.dropped_windows_ = []
        for i in np.flatnonzero(~keep):
            n = int(((ts_ns >= starts[i]) & (ts_ns < ends[i])).sum())
            a, b = (pd.Timestamp(int(v), tz="UTC") for v in (starts[i], ends[i]))
            self.dropped_windows_.append({"window_start": a, "window_end": b,
                                          "coverage": float(cov[i]), "n_events": n})
            logger.warning("window %s to %s holds %.0f%% of a whole window's span (min_coverage"
                           "=%g): left out of tracking with its %d events, so that a part-"
                           "window is not read as segments vanishing", a, b, 100 * cov[i],
                           floor, n)
        return starts[keep], ends[keep], cov[keep]

    def _run(self, vec, codes, ts_ns, w, starts, ends):
        """Cluster every window and match it to the previous one. Returns ``(snaps, events,
        rows_win, drift_scores)``; events are ``(t, kind, from, to, value, detail, p_value,
        stability)``."""
        def book(stage, sec):
            self.timings_[stage] += sec

        next_id = 0
        prev = None
        drift = []
        snaps, events, rows_win = [], [], []
        for t, (s_ns, e_ns) in enumerate(zip(starts, ends)):
            tic = time.perf_counter()
            snap = self._user_vectors(vec, codes, ts_ns, w, s_ns, e_ns)
            book("user_vectors_s", time.perf_counter() - tic)
            snap["t"] = t
            self._cluster(snap, prev, t, book)
            tic = time.perf_counter()
            if prev is None or len(prev["centroids"]) == 0:
                ids = np.arange(next_id, next_id + len(snap["centroids"]), dtype=np.int64)
                next_id += len(ids)
                snap["ids"] = ids
                if prev is not None:  # after an empty snapshot every segment is new
                    events += [(t, "appear", [], [int(i)], 0.0, "after an empty snapshot", np.nan,
                                np.nan)
                               for i in ids]
            else:
                next_id = self._match(prev, snap, next_id, events, drift)
            book("match_s", time.perf_counter() - tic)
            rows_win.append((t, s_ns, e_ns, len(snap["users"]), len(snap["centroids"]),
                             snap["init"], snap["silhouette"]))
            snaps.append(snap)
            prev = snap
        return snaps, events, rows_win, drift

    def _check_inputs(self, event_vectors, user_ids, ts, weights, texts):
        if isinstance(event_vectors, (list, tuple)):
            event_vectors = np.asarray(event_vectors)
        if not isinstance(event_vectors, np.ndarray):
            raise TypeError("event_vectors must be a numpy array of shape (n_events, dim), got "
                            f"{type(event_vectors).__name__}")
        if event_vectors.ndim != 2:
            raise ValueError("event_vectors must be 2-D (n_events, dim), got shape "
                             f"{event_vectors.shape}")
        if event_vectors.dtype.kind != "f":
            raise TypeError(f"event_vectors must be floating point, got dtype "
                            f"{event_vectors.dtype}")
        n = event_vectors.shape[0]
        if n == 0:
            raise ValueError("event_vectors has no rows; pass at least one event")
        vec = np.ascontiguousarray(event_vectors, dtype=np.float32)
        bad = ~np.isfinite(vec).all(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"event_vectors has NaN or inf at row {i} ({int(bad.sum())} rows "
                             "affected)")
        if isinstance(user_ids, (str, bytes)):
            raise TypeError("user_ids must be a sequence of ids (one per event), not a string")
        arr = (user_ids.to_numpy(dtype=object) if isinstance(user_ids, (pd.Series, pd.Index))
               else np.asarray(user_ids, dtype=object))
        if arr.ndim != 1:
            raise ValueError(f"user_ids must be 1-D (one id per event), got shape {arr.shape}")
        uid = pd.Series(arr)
        if len(uid) != n:
            raise ValueError(f"user_ids has {len(uid)} entries but event_vectors has {n} rows; "
                             "pass one user id per event")
        nulls = uid.isna().to_numpy()
        if nulls.any():
            i = int(np.argmax(nulls))
            raise ValueError(f"user_ids is null at row {i} ({int(nulls.sum())} rows affected); "
                             "every event needs a user id")
        try:
            codes, users = pd.factorize(uid, sort=True)
        except TypeError as exc:
            raise TypeError("user_ids mixes id types that cannot be ordered (e.g. str and int); "
                            f"convert them to one type (e.g. str) first ({exc})") from None
        ts_ns = _as_ns(ts, n)
        if weights is None:
            w = np.ones(n, dtype=np.float64)
        else:
            w = np.asarray(weights)
            if w.ndim != 1 or w.shape[0] != n:
                raise ValueError(f"weights must have shape ({n},) (one per event), got "
                                 f"{w.shape}")
            if w.dtype.kind not in "iuf":
                raise TypeError(f"weights must be numeric, got dtype {w.dtype}")
            w = w.astype(np.float64)
            bad = ~(np.isfinite(w) & (w >= 0))
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"weights must be finite and >= 0, got {w[i]} at row {i} "
                                 f"({int(bad.sum())} rows affected)")
        if texts is not None:
            if isinstance(texts, str):
                raise TypeError("texts must be a sequence of strings (one per event), not a "
                                "single string")
            texts = list(texts)
            if len(texts) != n:
                raise ValueError(f"texts has {len(texts)} entries but event_vectors has {n} "
                                 "rows; pass one text per event")
            for i, x in enumerate(texts):
                if not isinstance(x, str):
                    raise TypeError(f"texts[{i}] must be a str, got {type(x).__name__}")
        return vec, codes.astype(np.int64), pd.Index(users), ts_ns, w, texts

    def _windows(self, ts_ns, offset, length):
        if self.origin is None:
            origin = pd.Timestamp(int(ts_ns.min()), tz="UTC").floor("D")
        else:
            try:
                origin = pd.Timestamp(self.origin)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"origin={self.origin!r} is not a time") from exc
            origin = origin.tz_localize("UTC") if origin.tzinfo is None else \
                origin.tz_convert("UTC")
            if origin.value > int(ts_ns.min()):
                first = pd.Timestamp(int(ts_ns.min()), tz="UTC")
                raise ValueError(f"origin={self.origin!r} is after the earliest event "
                                 f"({first}); pass an origin at or before it")
        edges = [origin]
        last = int(ts_ns.max())
        while edges[-1].value <= last:
            edges.append(edges[-1] + offset)
        ends = np.array([e.value for e in edges[1:]], dtype=np.int64)
        if self.window == "tumbling":
            starts = np.array([e.value for e in edges[:-1]], dtype=np.int64)
        else:
            starts = np.array([max((e - length).value, origin.value) for e in edges[1:]],
                              dtype=np.int64)
        return starts, ends

    def _user_vectors(self, vec, codes, ts_ns, w, s_ns, e_ns):
        from .interests import decayed_user_means

        rows = np.flatnonzero((ts_ns >= s_ns) & (ts_ns < e_ns))
        snap = {"start": s_ns, "end": e_ns}
        if len(rows) == 0:
            snap.update(users=np.zeros(0, np.int64), x=np.zeros((0, vec.shape[1]), np.float32),
                        rows=rows, row_user=np.zeros(0, np.int64))
            return snap
        c = codes[rows]
        order = np.argsort(c, kind="stable")
        rows = rows[order]
        uniq, inv = np.unique(c[order], return_inverse=True)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(inv))]).astype(np.int64)
        means, log2w = decayed_user_means(
            vec[rows], offsets, ts_ns[rows].astype(np.float64) / 1e9, w[rows],
            half_life_days=float(self.half_life_days), now=e_ns / 1e9)
        active = np.isfinite(log2w)  # users whose events in the window all weigh 0 are absent
        keep_rows = active[inv]
        snap.update(users=uniq[active], x=_unit(means[active]), rows=rows[keep_rows],
                    row_user=np.cumsum(active)[inv[keep_rows]] - 1)
        return snap

    def _stability(self, snap, rows, t) -> float:
        """Stability of the split of the users of segments ``rows`` (of ``snap``) into those
        segments: mean adjusted Rand index between that split and a fresh K-means (k-means++,
        3 starts, K = ``len(rows)``) of a random half of those users, over
        :data:`_STABILITY_REPEATS` halves. About 1 for well separated groups; about 0 for
        an arbitrary cut through one cloud of users. NaN with fewer than two segments."""
        from sklearn.metrics import adjusted_rand_score

        rows = np.asarray(rows, np.int64)
        if len(rows) < 2:
            return float("nan")
        tic = time.perf_counter()
        member = np.isin(snap["labels"], rows)
        x, lab = snap["x"][member], snap["labels"][member]
        rng = np.random.default_rng([int(self.random_state), int(t), *rows.tolist()])
        half = max(len(x) // 2, 2 * len(rows))
        scores = []
        for r in range(_STABILITY_REPEATS):
            pick = np.sort(rng.choice(len(x), size=min(half, len(x)), replace=False))
            got, _, _ = _kmeans(x[pick], len(rows), "k-means++", n_init=3,
                                random_state=int(rng.integers(2**31)), backend=self.backend,
                                device=self.device)
            scores.append(adjusted_rand_score(lab[pick], got))
        self.timings_["significance_s"] += time.perf_counter() - tic
        return float(max(0.0, np.mean(scores)))

    def _cluster(self, snap, prev, t, book):
        """Cluster one snapshot (see :func:`cluster_users`) and keep what matching needs."""
        x = snap["x"]
        warm_from = prev["centroids"] if prev is not None and len(prev["centroids"]) else None
        if len(x) and self.n_segments != "auto" and int(self.n_segments) > len(x):
            logger.warning("snapshot %d has %d users, fewer than n_segments=%d: using K=%d",
                           t, len(x), self.n_segments, len(x))
        res = cluster_users(x, warm_from, n_segments=self.n_segments, k_max=self.k_max,
                            min_segment_size=self.min_segment_size,
                            random_state=int(self.random_state) + t, backend=self.backend,
                            device=self.device)
        for stage, sec in res.pop("timings").items():
            book(stage, sec)
        snap.update(res)

    def _match(self, prev, snap, next_id, events, drift):
        """Assign stable ids to ``snap``'s segments and append lifecycle events."""
        t = snap["t"]
        kp, kc = len(prev["centroids"]), len(snap["centroids"])
        if kc == 0:
            snap["ids"] = np.zeros(0, np.int64)
            events += [(t, "vanish", [int(i)], [], 0.0, "empty snapshot", np.nan, np.nan)
                       for i in prev["ids"]]
            return next_id
        # flows over users present in both snapshots
        common, ip, ic = np.intersect1d(prev["users"], snap["users"], assume_unique=True,
                                        return_indices=True)
        m = match_segments(prev["centroids"], snap["centroids"], prev["labels"][ip],
                           snap["labels"][ic], match_weight=float(self.match_weight),
                           match_threshold=float(self.match_threshold))
        match, score, cos, flow = m["match"], m["score"], m["cos"], m["flow"]
        out_tot = flow.sum(axis=1)  # previous members still present
        in_tot = flow.sum(axis=0)   # current members already present before
        ids = np.empty(kc, np.int64)
        for j in range(kc):
            if j in match:
                ids[j] = prev["ids"][match[j]]
            else:
                ids[j] = next_id
                next_id += 1
        snap["ids"] = ids
        pid = prev["ids"]

        out_share = np.divide(flow, out_tot[:, None], out=np.zeros((kp, kc)),
                              where=out_tot[:, None] > 0)
        in_share = np.divide(flow, in_tot[None, :], out=np.zeros((kp, kc)),
                             where=in_tot[None, :] > 0)
        big = flow >= int(self.min_segment_size)
        split_from, split_to, merge_from, merge_to = set(), set(), set(), set()
        found = []
        for i in range(kp):
            parts = np.flatnonzero(big[i] & (out_share[i] >= float(self.split_threshold))
                                   & (in_share[i] >= _CORE_SHARE))
            if len(parts) >= 2:
                parts = parts[np.argsort(-out_share[i, parts], kind="stable")]
                split_from.add(i)
                split_to.update(parts.tolist())
                detail = ", ".join(f"{100 * out_share[i, j]:.0f}% -> {ids[j]}" for j in parts)
                found.append((t, "split", [int(pid[i])], sorted(int(ids[j]) for j in parts),
                              float(out_share[i, parts].sum()),
                              f"segment {pid[i]} ({out_tot[i]} users present in both "
                              f"snapshots): {detail}",
                              _split_p(snap, prev, parts),
                              self._stability(snap, parts, t)))
        for j in range(kc):
            srcs = np.flatnonzero(big[:, j] & (in_share[:, j] >= float(self.merge_threshold))
                                  & (out_share[:, j] >= _CORE_SHARE))
            if len(srcs) >= 2:
                srcs = srcs[np.argsort(-in_share[srcs, j], kind="stable")]
                merge_to.add(j)
                merge_from.update(srcs.tolist())
                detail = ", ".join(f"{100 * in_share[i, j]:.0f}% from {pid[i]}" for i in srcs)
                found.append((t, "merge", sorted(int(pid[i]) for i in srcs), [int(ids[j])],
                              float(in_share[srcs, j].sum()),
                              f"segment {ids[j]} ({in_tot[j]} users present in both "
                              f"snapshots): {detail}",
                              min(1.0, len(srcs) * min(_novelty_parts(prev, snap,
                                                                      srcs)[0])),
                              self._stability(prev, srcs, t)))
        matched_prev = set(match.values())
        for j in range(kc):
            if j not in match and j not in split_to and j not in merge_to:
                new_users = int((snap["labels"] == j).sum() - in_tot[j])
                found.append((t, "appear", [], [int(ids[j])], float(np.max(score[:, j])),
                              f"segment {ids[j]}: {int((snap['labels'] == j).sum())} users, "
                              f"{new_users} new; best match score {np.max(score[:, j]):.2f}",
                              _novelty(snap, prev, j),
                              self._stability(snap, _with_nearest(snap, j), t)))
        for i in range(kp):
            if i not in matched_prev and i not in split_from and i not in merge_from:
                gone = int((prev["labels"] == i).sum() - out_tot[i])
                found.append((t, "vanish", [int(pid[i])], [], float(np.max(score[i])),
                              f"segment {pid[i]}: {int((prev['labels'] == i).sum())} users, "
                              f"{gone} absent now; best match score {np.max(score[i]):.2f}",
                              _novelty(prev, snap, i),
                              self._stability(prev, _with_nearest(prev, i), t)))
        for j, i in sorted(match.items()):
            if i in split_from or i in merge_from or j in split_to or j in merge_to:
                continue
            d = 1.0 - float(cos[i, j])
            noise = _centroid_noise(prev["resultant"][i], prev["size"][i],
                                    snap["resultant"][j], snap["size"][j])
            if d - noise >= float(self.drift_threshold) and d >= _DRIFT_NOISE_RATIO * noise:
                found.append((t, "drift", [int(pid[i])], [int(ids[j])], d,
                              f"segment {ids[j]}: centroid cosine {cos[i, j]:.3f} to the "
                              f"previous snapshot; sampling noise alone gives 1 - cos ~ "
                              f"{noise:.3f}", np.nan, np.nan))
            drift.append((t, int(ids[j]), d, noise))
        found.sort(key=lambda e: (_EVENT_ORDER[e[1]], e[2], e[3]))
        events += found
        return next_id

    # ------------------------------------------------------------------------- tables
    def _tables(self, snaps, events, rows_win, users, vec, codes, ts_ns, texts):
        import pyarrow as pa  # noqa: F401  (schemas below need it; fail early if missing)

        from .labels import representative_texts, segment_keywords

        uid_str = users.astype(str)
        utc = lambda a: pd.to_datetime(np.asarray(a, np.int64), unit="ns", utc=True)  # noqa: E731
        tic = time.perf_counter()
        snap_rows = []
        self.centroids_ = []
        for s in snaps:
            ids = s["ids"]
            sizes = np.bincount(s["labels"], minlength=len(ids))
            kw, rep = {}, {}
            if texts is not None and len(ids):
                ev_seg = ids[s["labels"][s["row_user"]]]
                tx = [texts[r] for r in s["rows"]]
                try:
                    kw = segment_keywords(tx, ev_seg, top_n=int(self.n_keywords))
                except ValueError as exc:
                    logger.warning("snapshot %d: no keywords (%s)", s["t"], exc)
                rep = representative_texts(tx, vec[s["rows"]], ev_seg,
                                           {int(i): s["centroids"][j] for j, i in enumerate(ids)},
                                           n=int(self.n_texts))
            self.centroids_.append({int(i): s["centroids"][j] for j, i in enumerate(ids)})
            for j, i in enumerate(ids):
                snap_rows.append((s["t"], s["start"], s["end"], int(i), int(sizes[j]),
                                  [w for w, _ in kw.get(int(i), [])], list(rep.get(int(i), []))))
        self.timings_["labels_s"] += time.perf_counter() - tic
        cols = list(zip(*snap_rows)) if snap_rows else [[]] * 7
        self.snapshots_ = pd.DataFrame({
            "snapshot": np.asarray(cols[0], np.int32),
            "window_start": utc(cols[1]), "window_end": utc(cols[2]),
            "segment_id": np.asarray(cols[3], np.int64), "size": np.asarray(cols[4], np.int64),
            "keywords": pd.Series(list(cols[5]), dtype=object),
            "representative_texts": pd.Series(list(cols[6]), dtype=object)})

        t_arr = np.concatenate([np.full(len(s["users"]), s["t"], np.int32) for s in snaps])
        u_arr = np.concatenate([s["users"] for s in snaps])
        seg_arr = np.concatenate([s["ids"][s["labels"]] if len(s["users"]) else
                                  np.zeros(0, np.int64) for s in snaps])
        self.assignments_ = pd.DataFrame({"snapshot": t_arr,
                                          "user_id": pd.array(uid_str[u_arr], dtype="str"),
                                          "segment_id": seg_arr.astype(np.int64)})

        ev = pd.DataFrame(events, columns=["snapshot", "event", "segments_from", "segments_to",
                                           "value", "detail", "p_value", "stability"])
        ev["snapshot"] = ev["snapshot"].astype(np.int32)
        for c in ("value", "p_value", "stability"):
            ev[c] = ev[c].astype(np.float64)
        ev["event"] = ev["event"].astype(object)
        ev["detail"] = ev["detail"].astype(object)
        ev["reason"] = _unreported(events, float(self.max_p_value),
                                   float(self.min_stability))
        ev["reported"] = ev["reason"] == ""
        self.lifecycle_candidates_ = ev[["snapshot", "event", "segments_from", "segments_to",
                                         "value", "p_value", "stability", "detail",
                                         "reported", "reason"]].reset_index(drop=True)
        self.lifecycle_ = ev.loc[ev["reported"], ["snapshot", "event", "segments_from",
                                                  "segments_to", "value", "p_value",
                                                  "stability", "detail"]].reset_index(drop=True)

        trans = []
        for a, b in zip(snaps, snaps[1:]):
            n_all = len(users)
            fa = np.full(n_all, -2, np.int64)
            fb = np.full(n_all, -2, np.int64)
            fa[a["users"]] = a["ids"][a["labels"]] if len(a["users"]) else fa[a["users"]]
            fb[b["users"]] = b["ids"][b["labels"]] if len(b["users"]) else fb[b["users"]]
            sel = (fa != -2) | (fb != -2)
            pair = pd.DataFrame({"f": np.where(fa[sel] == -2, -1, fa[sel]),
                                 "t": np.where(fb[sel] == -2, -1, fb[sel])})
            g = pair.groupby(["f", "t"], sort=True).size()
            for (f, to), cnt in g.items():
                trans.append((b["t"], int(f), int(to), int(cnt)))
        tc = list(zip(*trans)) if trans else [[]] * 4
        self.transitions_ = pd.DataFrame({"snapshot": np.asarray(tc[0], np.int32),
                                          "from_segment": np.asarray(tc[1], np.int64),
                                          "to_segment": np.asarray(tc[2], np.int64),
                                          "n_users": np.asarray(tc[3], np.int64)})

        tic = time.perf_counter()
        xy = _project_2d([s["x"] for s in snaps])
        self.map_ = pd.DataFrame({"snapshot": t_arr, "user_id": pd.array(uid_str[u_arr],
                                                                         dtype="str"),
                                  "x": xy[:, 0].astype(np.float32),
                                  "y": xy[:, 1].astype(np.float32)})
        self.timings_["map_s"] += time.perf_counter() - tic

        wc = list(zip(*rows_win))
        self.windows_ = pd.DataFrame({
            "snapshot": np.asarray(wc[0], np.int32), "window_start": utc(wc[1]),
            "window_end": utc(wc[2]), "n_users": np.asarray(wc[3], np.int64),
            "n_segments": np.asarray(wc[4], np.int64), "init": list(wc[5]),
            "silhouette": np.asarray(wc[6], np.float64),
            "coverage": np.asarray(self.coverage_, np.float64)})
        paths = pd.DataFrame({"user_id": pd.array(uid_str[u_arr], dtype="str"), "snapshot": t_arr,
                              "segment_id": seg_arr})
        wide = paths.pivot(index="user_id", columns="snapshot", values="segment_id")
        wide = wide.reindex(index=pd.Index(uid_str, name="user_id"),
                            columns=range(len(snaps))).astype("Int64")
        wide.columns.name = "snapshot"
        self.paths_ = wide
        self.n_snapshots_ = len(snaps)
        self.snapshot_users_ = [users[s["users"]] for s in snaps]
        dsc = list(zip(*self._drift_scores)) if self._drift_scores else [[]] * 4
        self.drift_scores_ = pd.DataFrame({"snapshot": np.asarray(dsc[0], np.int32),
                                           "segment_id": np.asarray(dsc[1], np.int64),
                                           "value": np.asarray(dsc[2], np.float64),
                                           "noise": np.asarray(dsc[3], np.float64)})
        del self._drift_scores
        self.snapshot_vectors_ = [s["x"] for s in snaps]

    # ------------------------------------------------------------------------ outputs
    def _check_fitted(self):
        if not hasattr(self, "snapshots_"):
            raise RuntimeError("this SegmentTracker is not fitted yet; call fit(...) first")

    def transition_matrix(self, snapshot: int) -> pd.DataFrame:
        """Users moving from each segment at ``snapshot - 1`` to each at ``snapshot``.

        Rows are the previous segment ids, columns the current ones; ``-1`` stands for users
        absent from that snapshot. Entries are user counts (int64).
        """
        self._check_fitted()
        if isinstance(snapshot, bool) or not isinstance(snapshot, numbers.Integral):
            raise TypeError(f"snapshot must be an int, got {type(snapshot).__name__}")
        if not 1 <= snapshot < self.n_snapshots_:
            raise ValueError(f"snapshot={snapshot} has no previous snapshot; pass 1 <= snapshot "
                             f"<= {self.n_snapshots_ - 1}")
        tr = self.transitions_[self.transitions_["snapshot"] == snapshot]
        m = tr.pivot_table(index="from_segment", columns="to_segment", values="n_users",
                           aggfunc="sum", fill_value=0)
        return m.astype(np.int64)

    def tables(self) -> dict:
        """The tracking tables keyed by name (:data:`TRACKING_TABLES`)."""
        self._check_fitted()
        return {"snapshots": self.snapshots_, "assignments": self.assignments_,
                "lifecycle": self.lifecycle_,
                "lifecycle_candidates": self.lifecycle_candidates_,
                "transitions": self.transitions_, "trends": self.trends_,
                "map": self.map_}

    def to_run_dir(self, path):
        """Write the tables to ``path/tracking/<name>.parquet`` (atomic writes).

        ``path`` is then a run directory that ``interestflow report path`` (or
        :func:`interestflow.report.write_report`) draws; other files in it are kept.

        Returns
        -------
        pathlib.Path
            The ``tracking`` directory.
        """
        import pyarrow as pa
        from pathlib import Path

        from .io import write_parquet

        self._check_fitted()
        out = Path(path) / "tracking"
        schemas = tracking_schemas()
        for name, df in self.tables().items():
            table = pa.Table.from_pandas(df, schema=schemas[name], preserve_index=False)
            write_parquet(table, out / f"{name}.parquet")
        return out


def _item_codes(item_ids, n):
    """``(codes (n,) int64, -1 for null, names)`` or ``(None, None)``."""
    if item_ids is None:
        return None, None
    if isinstance(item_ids, (str, bytes)):
        raise TypeError("item_ids must be a sequence of ids (one per event), not a string")
    raw = np.asarray(item_ids, dtype=object)
    if raw.ndim != 1:
        raise ValueError(f"item_ids must be 1-D (one id per event), got shape {raw.shape}")
    arr = pd.Series(raw)
    if len(arr) != n:
        raise ValueError(f"item_ids has {len(arr)} entries but event_vectors has {n} rows; "
                         "pass one item id (or null) per event")
    codes, names = pd.factorize(arr.astype(object).where(arr.notna(), None), sort=False)
    return codes.astype(np.int64), np.asarray(names, dtype=object)


def _with_nearest(snap, row) -> list:
    """``[row, the segment of snap whose centroid is nearest to row's]`` ([row] if alone)."""
    c = snap["centroids"]
    if len(c) < 2:
        return [int(row)]
    cos = c @ c[row]
    cos[row] = -np.inf
    return [int(row), int(np.argmax(cos))]


def _split_p(snap, prev, parts) -> float:
    """p-value that a split's parts hold kinds of user the previous snapshot lacked: two
    tests of that null, Bonferroni-combined (twice the smaller p-value): the parts pooled
    (together they replace the parent), and any single part new (the smallest part p-value
    times their number; the other part may be the parent's continuation)."""
    per, pooled = _novelty_parts(snap, prev, parts)
    any_part = min(1.0, len(per) * min(per))
    return float(min(1.0, 2.0 * min(pooled, any_part)))


def _novelty(snap, other, row) -> float:
    """:func:`_novelty_parts` of one segment."""
    return _novelty_parts(snap, other, [row])[1]


def _novelty_parts(snap, other, rows) -> tuple[list, float]:
    """One-sided p-values that the kinds of user of segments ``rows`` of ``snap`` are new
    there (against ``other``): ``([p per row], p of the rows pooled)``.

    A user is of a segment's kind when its nearest centroid of ``snap`` is that segment's
    and its cosine to it is at least the lower quartile of the segment's members' cosines.
    Null: the share of such users in ``snap`` is at most twice their share in ``other``
    (binomial with the ``other`` share, Laplace-smoothed, taken as known: its own sampling
    error is ignored, so with a small ``other`` snapshot the p-value is too small; the
    doubling margin and ``max_p_value`` absorb part of that). Small for segments whose kind
    of user ``other`` lacked; about 1 when ``other`` held as many such users and only the
    clustering changed (for example a segment resolved once more users arrived)."""
    from scipy.stats import binom

    rows = np.atleast_1d(np.asarray(rows, np.int64))
    if len(snap["x"]) == 0 or len(other["x"]) == 0:
        return [float("nan")] * len(rows), float("nan")
    c = snap["centroids"]
    floor = np.full(len(c), np.inf)
    for r in rows:
        own = snap["x"][snap["labels"] == r] @ c[r]
        if len(own):
            floor[r] = float(np.quantile(own, 0.25))

    def counts(x):  # users of each row's kind
        sims = x @ c.T
        near = np.argmax(sims, axis=1)
        ok = sims[np.arange(len(x)), near] >= floor[near]
        return np.array([int((ok & (near == r)).sum()) for r in rows])

    x1, x0 = counts(snap["x"]), counts(other["x"])
    n1, n0 = len(snap["x"]), len(other["x"])

    def p(a, b):
        return float(binom.sf(a - 1, n1, min(1.0, 2.0 * (b + 1) / (n0 + 2))))

    return [p(a, b) for a, b in zip(x1, x0)], p(int(x1.sum()), int(x0.sum()))


def _transient(events) -> list:
    """Per event ``(t, kind, from, to, ..., p_value, stability)``: "" or why it is transient
    (hysteresis: a split undone by a merge of the same segments, a merge split again, or a
    segment that appears and vanishes, within :data:`_HYSTERESIS` snapshots; both events of
    such a pair). Events around an empty snapshot (no test possible) never pair. A pair is
    formed whatever the events' significance: a flip that fails the tests on one side is
    still a flip."""
    reason = [""] * len(events)
    untested = [np.isnan(e[-2]) and np.isnan(e[-1]) and e[1] != "drift" for e in events]
    for ia, a in enumerate(events):
        for ib, b in enumerate(events):
            if untested[ia] or untested[ib] or not 0 < b[0] - a[0] <= _HYSTERESIS:
                continue
            undo = ((a[1] == "split" and b[1] == "merge" and len(set(a[3]) & set(b[2])) >= 2)
                    or (a[1] == "merge" and b[1] == "split" and list(b[2]) == list(a[3]))
                    or (a[1] == "appear" and b[1] == "vanish" and list(b[2]) == list(a[3])))
            if undo:
                reason[ia] = f"transient: {b[1]} at snapshot {b[0]}"
                reason[ib] = f"transient: {a[1]} at snapshot {a[0]}"
    return reason


def _unreported(events, max_p: float, min_stability: float) -> list:
    """Why each event ``(..., p_value, stability)`` is not reported ("" = reported):
    transient (see :func:`_transient`), not new (p-value above ``max_p``) or not stable
    (stability below ``min_stability``). NaN (not tested for that kind) passes, but for an
    appearing / vanishing segment that was its snapshot's only one (no stability: nothing
    to be separate from; "everyone" turning into segments is a change of K)."""
    out = _transient(events)
    for i, e in enumerate(events):
        p, st = e[-2], e[-1]
        if out[i]:
            continue
        if e[1] in ("appear", "vanish") and np.isnan(st) and not np.isnan(p):
            out[i] = "alone in its snapshot: a change of K, nothing to be separate from"
        elif p > max_p:
            out[i] = f"not new: p = {p:.3g} > {max_p:g}"
        elif st < min_stability:
            out[i] = f"not stable: stability {st:.2f} < {min_stability:g}"
    return out


def _centroid_noise(r_a, n_a, r_b, n_b) -> float:
    """Expected ``1 - cos`` between two centroids of the same segment from sampling alone.

    A centroid is the mean of ``n`` unit vectors with mean resultant length ``R``; its error
    has expected squared norm ``(1 - R**2) / n``, and two independent estimates of the same
    direction differ by ``1 - cos ~ (e_a + e_b) / (2 R_a R_b)`` (small-error expansion).
    """
    if r_a <= 0 or r_b <= 0:
        return 0.0
    return 0.5 * ((1.0 - r_a ** 2) / n_a + (1.0 - r_b ** 2) / n_b) / (r_a * r_b)


def _project_2d(blocks: list, chunk: int = 65536) -> np.ndarray:
    """First two principal components of all rows of ``blocks`` (one projection for all).

    The mean and the (dim, dim) covariance are accumulated in float64 over row chunks, so
    memory stays at one chunk whatever the number of user-snapshots. Signs are fixed
    (largest loading positive) so refits of the same data give the same map.

    Returns
    -------
    ndarray of float32, shape (sum of rows, 2)
    """
    n = sum(len(b) for b in blocks)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    dim = blocks[0].shape[1]

    def chunks():
        for b in blocks:
            for i in range(0, len(b), chunk):
                yield b[i:i + chunk].astype(np.float64)

    total = np.zeros(dim)
    for c in chunks():
        total += c.sum(axis=0)
    mu = total / n
    cov = np.zeros((dim, dim))
    for c in chunks():
        c -= mu
        cov += c.T @ c
    with _blas_threads(1 if dim <= 1024 else None):  # milliseconds on one thread
        _, vecs = np.linalg.eigh(cov / max(n - 1, 1))
    comp = vecs[:, ::-1][:, :2]
    if comp.shape[1] < 2:
        comp = np.pad(comp, ((0, 0), (0, 2 - comp.shape[1])))
    flip = np.sign(comp[np.argmax(np.abs(comp), axis=0), np.arange(2)])
    comp = comp * np.where(flip == 0, 1.0, flip)
    return np.concatenate([(c - mu) @ comp for c in chunks()]).astype(np.float32)


def match_segments(previous_centroids, centroids, previous_labels, labels, *,
                   match_weight=0.5, match_threshold=0.4) -> dict:
    """Optimal one-to-one matching of current segments to previous ones.

    The matching of :class:`SegmentTracker` (module docstring, "Matching"): ``score[i, j] =
    match_weight * cos(previous_i, current_j) + (1 - match_weight) * jaccard(members_i,
    members_j)``, the Jaccard index over the users given (those present before and now);
    ``scipy.optimize.linear_sum_assignment`` maximises the total score and a pair is kept
    when its score is at least ``match_threshold``.

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
    x = np.asarray(user_vectors)
    if x.ndim != 2 or x.dtype.kind != "f":
        raise ValueError(f"user_vectors must be a 2-D float array (n_users, dim), got shape "
                         f"{x.shape} dtype {x.dtype}")
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
    n, k = len(x), len(c0)
    n_iter = _check_int("n_iter", n_iter, 0)
    xu = _unit(x)
    cu = _unit(c0)
    if previous_labels is None:
        labels = _nearest(xu, cu, backend)
    else:
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
        if move.any():
            labels[move] = _nearest(xu[move], cu, backend)
    sums = np.zeros((k, x.shape[1]), np.float64)
    np.add.at(sums, labels, xu)
    counts = np.bincount(labels, minlength=k)
    cents = np.where(counts[:, None] > 0, sums, cu)
    cents = _unit(cents)
    if n_iter == 0 or n < k:
        return labels, cents
    labels, cents, _ = _kmeans(xu, k, cents, random_state=random_state, backend=backend,
                               device=device, max_iter=n_iter)
    return labels, _unit(cents)
