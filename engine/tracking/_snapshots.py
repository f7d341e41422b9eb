"""Snapshots of the event stream: window edges, part-windows left out, and every active
user's time-decayed interest vector as of a window end (:mod:`interestflow.tracking`,
"Snapshots")."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._utils import unit_rows

logger = logging.getLogger(__name__)

__all__ = ["window_bounds", "whole_windows", "user_vectors"]


def window_bounds(ts_ns, offset, length, *, window: str, origin=None):
    """``(starts, ends)`` (int64 ns) of the windows covering every event time ``ts_ns``.

    Ends every ``offset`` from ``origin`` (default: the earliest event's day at 00:00 UTC)
    until past the last event; a tumbling window starts at the previous end, a sliding one
    ``length`` before its end (not before ``origin``).
    """
    origin = _origin(ts_ns, origin)
    edges = [origin]
    last = int(ts_ns.max())
    while edges[-1].value <= last:
        edges.append(edges[-1] + offset)
    ends = np.array([e.value for e in edges[1:]], dtype=np.int64)
    if window == "tumbling":
        starts = np.array([e.value for e in edges[:-1]], dtype=np.int64)
    else:
        starts = np.array([max((e - length).value, origin.value) for e in edges[1:]],
                          dtype=np.int64)
    return starts, ends


def _origin(ts_ns, origin) -> pd.Timestamp:
    """The first window's start as a UTC Timestamp: ``origin`` (naive = UTC; not after the
    earliest event) or the earliest event's day at 00:00 UTC."""
    if origin is None:
        return pd.Timestamp(int(ts_ns.min()), tz="UTC").floor("D")
    given = origin
    try:
        origin = pd.Timestamp(origin)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"origin={given!r} is not a time") from exc
    origin = origin.tz_localize("UTC") if origin.tzinfo is None else origin.tz_convert("UTC")
    if origin.value > int(ts_ns.min()):
        first = pd.Timestamp(int(ts_ns.min()), tz="UTC")
        raise ValueError(f"origin={given!r} is after the earliest event ({first}); pass an "
                         "origin at or before it")
    return origin


def whole_windows(ts_ns, starts, ends, min_coverage: float):
    """Drop a leading or trailing window that the data covers less than ``min_coverage``
    of (coverage: the part of the window's span between the first and the last event of the
    whole data set), with a warning naming it and its events; a part-window would otherwise
    read as most segments vanishing.

    Returns ``(starts, ends, coverage, dropped)``: the kept windows, their coverage, and one
    dict per dropped window (``window_start, window_end, coverage, n_events``).
    """
    lo, hi = int(ts_ns.min()), int(ts_ns.max()) + 1
    span = (ends - starts).astype(np.float64)
    cov = (np.minimum(ends, hi) - np.maximum(starts, lo)).clip(0) / span
    keep = np.ones(len(starts), bool)
    floor = float(min_coverage)
    if len(starts) > 1:
        for i in (0, len(starts) - 1):
            if cov[i] < floor:
                keep[i] = False
        if not keep.any():  # two part-windows: keep the better covered one
            keep[int(np.argmax(cov))] = True
    dropped = []
    for i in np.flatnonzero(~keep):
        n = int(((ts_ns >= starts[i]) & (ts_ns < ends[i])).sum())
        a, b = (pd.Timestamp(int(v), tz="UTC") for v in (starts[i], ends[i]))
        dropped.append({"window_start": a, "window_end": b, "coverage": float(cov[i]),
                        "n_events": n})
        logger.warning("window %s to %s holds %.0f%% of a whole window's span (min_coverage"
                       "=%g): left out of tracking with its %d events, so that a part-"
                       "window is not read as segments vanishing", a, b, 100 * cov[i],
                       floor, n)
    return starts[keep], ends[keep], cov[keep], dropped


def user_vectors(vec, codes, ts_ns, w, s_ns, e_ns, half_life_days: float) -> dict:
    """The snapshot of window ``[s_ns, e_ns)``: its users and their unit interest vectors.

    A user is in it when it has an event with positive weight in the window; its vector is
    the weighted mean of those events' vectors, each weighted ``weight * 2 ** (-(end - ts) /
    half_life_days)`` (:func:`interestflow.interests.decayed_user_means`), unit-scaled.

    Returns a dict: ``start``, ``end``, ``users`` (user codes, sorted), ``x`` ((n_users,
    dim) unit rows), ``rows`` (the window's events of those users, grouped by user) and
    ``row_user`` (each such event's row in ``users``).
    """
    from ..interests import decayed_user_means

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
        half_life_days=float(half_life_days), now=e_ns / 1e9)
    active = np.isfinite(log2w)  # users whose events in the window all weigh 0 are absent
    keep_rows = active[inv]
    snap.update(users=uniq[active], x=unit_rows(means[active], precision="float32"),
                rows=rows[keep_rows], row_user=np.cumsum(active)[inv[keep_rows]] - 1)
    return snap
