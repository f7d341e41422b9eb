"""The :class:`SegmentTracker`: snapshots of the event stream, clustered and matched over
time, with lifecycle events, their significance and the tracking tables (the method is
described in :mod:`interestflow.tracking`)."""

from __future__ import annotations

import logging
import numbers
import time
import warnings

import numpy as np
import pandas as pd

from .._utils import check_int, not_fitted
from ..segments import check_n_segments
from ._checks import check_events, check_number, check_offset, item_codes
from ._clustering import cluster_users
from ._lifecycle import Rules, new_ids, transition
from ._significance import stability
from ._snapshots import user_vectors, whole_windows, window_bounds
from ._tables import (assignment_arrays, drift_table, lifecycle_tables, map_table,
                      paths_table, snapshot_table, tracking_schemas, transitions_table,
                      windows_table)
from .trends import trends_table

logger = logging.getLogger(__name__)

__all__ = ["SegmentTracker"]

_WINDOWS = ("tumbling", "sliding")
# (new name, deprecated name) of the tracker's member shares, and their default
_RENAMED = (("split_share", "split_threshold"), ("merge_share", "merge_threshold"))
_DEFAULT_SHARE = 0.25


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
    split_share : float, default 0.25
        Smallest share of a previous segment's members that each part of a split receives.
    merge_share : float, default 0.25
        Smallest share of a current segment's members that each source of a merge gives.
    drift_threshold : float, default 0.05
        Smallest centroid move (``1 - cos`` between matched centroids, minus the move expected
        from sampling noise) reported as drift; the move must also be at least twice that
        expected from sampling.
    min_segment_size : int, default 5
        Segments smaller than this are dissolved into their neighbours; split/merge flows need
        at least this many users.
    max_p_value : float, default 0.01
        Split / merge / appear / vanish events are reported only with a p-value at most
        this (:mod:`interestflow.tracking`, "Significance").
    min_stability : float, default 0.6
        Split / merge / appear / vanish events are reported only with a stability at least
        this (:mod:`interestflow.tracking`, "Significance").
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
    split_threshold, merge_threshold : float, optional
        Deprecated names of ``split_share`` and ``merge_share`` (member shares, unlike
        :class:`~interestflow.InterestEngine`'s ``merge_threshold``, a centroid cosine);
        when given, :meth:`fit` uses them with a ``DeprecationWarning``.

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
                 match_threshold=0.4, split_share=_DEFAULT_SHARE, merge_share=_DEFAULT_SHARE,
                 drift_threshold=0.05, min_segment_size=5, max_p_value=0.01,
                 min_stability=0.6, min_coverage=0.5, n_keywords=8, n_texts=3, random_state=0,
                 backend="auto", device=None, split_threshold=None, merge_threshold=None):
        self.freq = freq
        self.window = window
        self.window_length = window_length
        self.origin = origin
        self.half_life_days = half_life_days
        self.n_segments = n_segments
        self.k_max = k_max
        self.match_weight = match_weight
        self.match_threshold = match_threshold
        self.split_share = split_share
        self.merge_share = merge_share
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
        self.split_threshold = split_threshold
        self.merge_threshold = merge_threshold

    _PARAMS = ("freq", "window", "window_length", "origin", "half_life_days", "n_segments",
               "k_max", "match_weight", "match_threshold", "split_share", "merge_share",
               "drift_threshold", "min_segment_size", "max_p_value", "min_stability",
               "min_coverage", "n_keywords", "n_texts", "random_state", "backend", "device",
               "split_threshold", "merge_threshold")

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
        """Check every parameter (errors name it); returns ``(freq offset, window length
        (sliding windows) or None, the event rules)``."""
        off, length = self._check_windows()
        check_number("half_life_days", self.half_life_days, lo=0, lo_open=True,
                     allow_inf=True)
        check_n_segments(self.n_segments)
        if self.k_max is not None:
            check_int("k_max", self.k_max, 2)
        check_number("match_weight", self.match_weight, lo=0, hi=1)
        check_number("match_threshold", self.match_threshold, lo=0, hi=1)
        split_share, merge_share = self._shares()
        check_number("drift_threshold", self.drift_threshold, lo=0, hi=2)
        check_int("min_segment_size", self.min_segment_size, 1)
        for name, lo in (("max_p_value", 0), ("min_stability", -1), ("min_coverage", 0)):
            check_number(name, getattr(self, name), lo=lo, hi=1)
        for name, lo in (("n_keywords", 1), ("n_texts", 1), ("random_state", 0)):
            check_int(name, getattr(self, name), lo)
        if not isinstance(self.backend, str):
            raise TypeError(f"backend must be a string, got {type(self.backend).__name__}")
        rules = Rules(match_weight=float(self.match_weight),
                      match_threshold=float(self.match_threshold), split_share=split_share,
                      merge_share=merge_share, drift_threshold=float(self.drift_threshold),
                      min_segment_size=int(self.min_segment_size))
        return off, length, rules

    def _check_windows(self):
        """``window``, ``freq`` and ``window_length`` checked: ``(freq offset, window
        length or None)``; sliding windows default to three ``freq``, never shorter."""
        if self.window not in _WINDOWS:
            raise ValueError(f"window={self.window!r} is not valid; pass one of {_WINDOWS}")
        off = check_offset("freq", self.freq)
        if self.window == "tumbling":
            if self.window_length is not None:
                raise ValueError("window_length is only used with window='sliding'; a tumbling "
                                 "window is freq long (pass window_length=None)")
            return off, None
        length = (off * 3 if self.window_length is None
                  else check_offset("window_length", self.window_length))
        probe = pd.Timestamp("2024-01-01", tz="UTC")
        if probe + length < probe + off:
            raise ValueError(f"window_length={self.window_length!r} is shorter than "
                             f"freq={self.freq!r}; sliding windows must cover every event")
        return off, length

    def _shares(self) -> tuple[float, float]:
        """``split_share`` and ``merge_share``, checked. A deprecated ``split_threshold`` /
        ``merge_threshold`` that is not None stands in for its new name (with a
        ``DeprecationWarning``; an error names it as given)."""
        out = []
        for new, old in _RENAMED:
            name, value = new, getattr(self, new)
            if getattr(self, old) is not None:
                if value != _DEFAULT_SHARE:
                    raise ValueError(f"{old}={getattr(self, old)!r} and {new}={value!r} are "
                                     f"both given; pass {new} only ({old} is its deprecated "
                                     "name)")
                warnings.warn(f"SegmentTracker's {old} is deprecated; pass {new} instead (a "
                              "share of members, not a cosine like InterestEngine's "
                              "merge_threshold)", DeprecationWarning, stacklevel=4)
                name, value = old, getattr(self, old)
            out.append(check_number(name, value, lo=0, hi=1))
        return out[0], out[1]

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
        items, item_names = item_codes(item_ids, len(event_vectors))
        offset, length, rules = self._check_params()
        vec, codes, users, ts_ns, w, texts = check_events(event_vectors, user_ids, ts,
                                                          weights, texts)
        if self.n_segments != "auto":
            check_n_segments(self.n_segments, len(users))
        starts, ends = window_bounds(ts_ns, offset, length, window=self.window,
                                     origin=self.origin)
        starts, ends, self.coverage_, self.dropped_windows_ = whole_windows(
            ts_ns, starts, ends, self.min_coverage)
        self.timings_ = dict.fromkeys(("user_vectors_s", "choose_k_s", "cluster_s", "match_s",
                                       "significance_s", "labels_s", "map_s"), 0.0)
        snaps, events, rows_win, drift_rows = self._run(vec, codes, ts_ns, w, starts, ends,
                                                        rules)
        self._tables(snaps, events, rows_win, drift_rows, users, vec, texts)
        tic = time.perf_counter()
        self.trends_ = trends_table(snaps, texts, items, item_names,
                                    max_p_value=self.max_p_value, top_n=self.n_keywords)
        self.timings_["trends_s"] = time.perf_counter() - tic
        self.timings_["total_s"] = time.perf_counter() - t_total
        return self

    def _run(self, vec, codes, ts_ns, w, starts, ends, rules):
        """Cluster every window and match it to the previous one. Returns ``(snaps, events,
        rows_win, drift_rows)``; events are ``(t, kind, from, to, value, detail, p_value,
        stability)``."""
        next_id = 0
        prev = None
        snaps, events, rows_win, drift_rows = [], [], [], []
        for t, (s_ns, e_ns) in enumerate(zip(starts, ends)):
            tic = time.perf_counter()
            snap = user_vectors(vec, codes, ts_ns, w, s_ns, e_ns, self.half_life_days)
            self.timings_["user_vectors_s"] += time.perf_counter() - tic
            snap["t"] = t
            self._cluster(snap, prev, t)
            tic = time.perf_counter()
            if prev is None or len(prev["centroids"]) == 0:
                next_id, found = new_ids(prev, snap, next_id)
            else:
                next_id, found, drift = transition(prev, snap, next_id, rules,
                                                   self._stability)
                drift_rows += drift
            events += found
            self.timings_["match_s"] += time.perf_counter() - tic
            rows_win.append((t, s_ns, e_ns, len(snap["users"]), len(snap["centroids"]),
                             snap["init"], snap["silhouette"]))
            snaps.append(snap)
            prev = snap
        return snaps, events, rows_win, drift_rows

    def _cluster(self, snap, prev, t):
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
            self.timings_[stage] += sec
        snap.update(res)

    def _stability(self, snap, rows, t) -> float:
        """:func:`~interestflow.tracking._significance.stability` with this tracker's seed,
        backend and device, timed as ``significance_s``."""
        tic = time.perf_counter()
        out = stability(snap, rows, t, random_state=self.random_state, backend=self.backend,
                        device=self.device)
        self.timings_["significance_s"] += time.perf_counter() - tic
        return out

    # ------------------------------------------------------------------------- tables
    def _tables(self, snaps, events, rows_win, drift_rows, users, vec, texts):
        """Set the fitted tables and attributes from the snapshots and their events."""
        import pyarrow as pa  # noqa: F401  (schemas need it; fail early if missing)

        uid_str = users.astype(str)
        tic = time.perf_counter()
        self.snapshots_, self.centroids_ = snapshot_table(
            snaps, vec, texts, n_keywords=self.n_keywords, n_texts=self.n_texts)
        self.timings_["labels_s"] += time.perf_counter() - tic
        t_arr, u_arr, seg_arr = assignment_arrays(snaps)
        self.assignments_ = pd.DataFrame({"snapshot": t_arr,
                                          "user_id": pd.array(uid_str[u_arr], dtype="str"),
                                          "segment_id": seg_arr.astype(np.int64)})
        self.lifecycle_candidates_, self.lifecycle_ = lifecycle_tables(
            events, self.max_p_value, self.min_stability)
        self.transitions_ = transitions_table(snaps, len(users))
        tic = time.perf_counter()
        self.map_ = map_table(snaps, t_arr, uid_str[u_arr])
        self.timings_["map_s"] += time.perf_counter() - tic
        self.windows_ = windows_table(rows_win, self.coverage_)
        self.paths_ = paths_table(uid_str, u_arr, t_arr, seg_arr, len(snaps))
        self.n_snapshots_ = len(snaps)
        self.snapshot_users_ = [users[s["users"]] for s in snaps]
        self.drift_scores_ = drift_table(drift_rows)
        self.snapshot_vectors_ = [s["x"] for s in snaps]

    # ------------------------------------------------------------------------ outputs
    def _check_fitted(self):
        """Raise :class:`~interestflow.NotFittedError` (also a ``RuntimeError``) unless
        :meth:`fit` has run."""
        if not hasattr(self, "snapshots_"):
            raise not_fitted("this SegmentTracker is not fitted yet; call fit(...) first")

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

        from ..io import write_parquet

        self._check_fitted()
        out = Path(path) / "tracking"
        schemas = tracking_schemas()
        for name, df in self.tables().items():
            table = pa.Table.from_pandas(df, schema=schemas[name], preserve_index=False)
            write_parquet(table, out / f"{name}.parquet")
        return out
