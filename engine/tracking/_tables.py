"""The tracking tables (``RUN_DIR/tracking/<name>.parquet``): their schemas and how each is
built from the fitted snapshots, and the 2-D map of all user-snapshots."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._utils import pca_2d
from ._significance import unreported

logger = logging.getLogger(__name__)

__all__ = ["TRACKING_TABLES", "tracking_schemas", "snapshot_table", "assignment_arrays",
           "lifecycle_tables", "transitions_table", "map_table", "windows_table",
           "paths_table", "drift_table", "project_2d"]

#: Tables written by :meth:`SegmentTracker.to_run_dir`, in ``RUN_DIR/tracking/<name>.parquet``.
TRACKING_TABLES = ("snapshots", "assignments", "lifecycle", "lifecycle_candidates",
                   "transitions", "map", "trends")

_LIFECYCLE = ["snapshot", "event", "segments_from", "segments_to", "value", "p_value",
              "stability", "detail"]


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


def _utc(a) -> pd.DatetimeIndex:
    """int64 nanoseconds as UTC times."""
    return pd.to_datetime(np.asarray(a, np.int64), unit="ns", utc=True)


def snapshot_table(snaps, vec, texts, *, n_keywords: int, n_texts: int):
    """``(snapshots_, centroids_)``: one row per snapshot and segment (window, id, size, and
    with ``texts`` its c-TF-IDF keywords and representative texts), and per snapshot the
    unit centroid of each segment id."""
    rows, centroids = [], []
    for s in snaps:
        ids = s["ids"]
        sizes = np.bincount(s["labels"], minlength=len(ids))
        kw, rep = _segment_labels(s, vec, texts, n_keywords, n_texts)
        centroids.append({int(i): s["centroids"][j] for j, i in enumerate(ids)})
        for j, i in enumerate(ids):
            rows.append((s["t"], s["start"], s["end"], int(i), int(sizes[j]),
                         [w for w, _ in kw.get(int(i), [])], list(rep.get(int(i), []))))
    cols = list(zip(*rows)) if rows else [[]] * 7
    df = pd.DataFrame({
        "snapshot": np.asarray(cols[0], np.int32),
        "window_start": _utc(cols[1]), "window_end": _utc(cols[2]),
        "segment_id": np.asarray(cols[3], np.int64), "size": np.asarray(cols[4], np.int64),
        "keywords": pd.Series(list(cols[5]), dtype=object),
        "representative_texts": pd.Series(list(cols[6]), dtype=object)})
    return df, centroids


def _segment_labels(s, vec, texts, n_keywords, n_texts):
    """``(keywords, texts)`` of snapshot ``s``'s segments, keyed by id: c-TF-IDF keywords
    of the window's texts and the texts nearest each centroid (empty without texts; a
    snapshot whose texts give no keyword logs a warning)."""
    from ..labels import representative_texts, segment_keywords

    ids = s["ids"]
    kw, rep = {}, {}
    if texts is None or not len(ids):
        return kw, rep
    ev_seg = ids[s["labels"][s["row_user"]]]
    tx = [texts[r] for r in s["rows"]]
    try:
        kw = segment_keywords(tx, ev_seg, top_n=int(n_keywords))
    except ValueError as exc:
        logger.warning("snapshot %d: no keywords (%s)", s["t"], exc)
    rep = representative_texts(tx, vec[s["rows"]], ev_seg,
                               {int(i): s["centroids"][j] for j, i in enumerate(ids)},
                               n=int(n_texts))
    return kw, rep


def assignment_arrays(snaps):
    """``(snapshot, user code, segment id)`` of every user-snapshot, snapshot by snapshot."""
    t_arr = np.concatenate([np.full(len(s["users"]), s["t"], np.int32) for s in snaps])
    u_arr = np.concatenate([s["users"] for s in snaps])
    seg_arr = np.concatenate([s["ids"][s["labels"]] if len(s["users"]) else
                              np.zeros(0, np.int64) for s in snaps])
    return t_arr, u_arr, seg_arr


def lifecycle_tables(events, max_p_value: float, min_stability: float):
    """``(lifecycle_candidates_, lifecycle_)``: every candidate event with ``reported`` and
    the ``reason`` it was left out (:func:`unreported`), and the reported ones."""
    ev = pd.DataFrame(events, columns=["snapshot", "event", "segments_from", "segments_to",
                                       "value", "detail", "p_value", "stability"])
    ev["snapshot"] = ev["snapshot"].astype(np.int32)
    for c in ("value", "p_value", "stability"):
        ev[c] = ev[c].astype(np.float64)
    ev["event"] = ev["event"].astype(object)
    ev["detail"] = ev["detail"].astype(object)
    ev["reason"] = unreported(events, float(max_p_value), float(min_stability))
    ev["reported"] = ev["reason"] == ""
    candidates = ev[_LIFECYCLE + ["reported", "reason"]].reset_index(drop=True)
    return candidates, ev.loc[ev["reported"], _LIFECYCLE].reset_index(drop=True)


def transitions_table(snaps, n_users: int) -> pd.DataFrame:
    """Users moving from each segment of a snapshot to each of the next (``-1``: absent
    from that snapshot), one row per snapshot and pair."""
    trans = []
    for a, b in zip(snaps, snaps[1:]):
        fa = np.full(n_users, -2, np.int64)
        fb = np.full(n_users, -2, np.int64)
        fa[a["users"]] = a["ids"][a["labels"]] if len(a["users"]) else fa[a["users"]]
        fb[b["users"]] = b["ids"][b["labels"]] if len(b["users"]) else fb[b["users"]]
        sel = (fa != -2) | (fb != -2)
        pair = pd.DataFrame({"f": np.where(fa[sel] == -2, -1, fa[sel]),
                             "t": np.where(fb[sel] == -2, -1, fb[sel])})
        g = pair.groupby(["f", "t"], sort=True).size()
        for (f, to), cnt in g.items():
            trans.append((b["t"], int(f), int(to), int(cnt)))
    tc = list(zip(*trans)) if trans else [[]] * 4
    return pd.DataFrame({"snapshot": np.asarray(tc[0], np.int32),
                         "from_segment": np.asarray(tc[1], np.int64),
                         "to_segment": np.asarray(tc[2], np.int64),
                         "n_users": np.asarray(tc[3], np.int64)})


def map_table(snaps, t_arr, user_ids) -> pd.DataFrame:
    """Every user-snapshot's position on the first two principal axes of all of them."""
    xy = project_2d([s["x"] for s in snaps])
    return pd.DataFrame({"snapshot": t_arr, "user_id": pd.array(user_ids, dtype="str"),
                         "x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32)})


def windows_table(rows_win, coverage) -> pd.DataFrame:
    """One row per snapshot: ``snapshot, window_start, window_end, n_users, n_segments,
    init, silhouette, coverage``."""
    wc = list(zip(*rows_win))
    return pd.DataFrame({
        "snapshot": np.asarray(wc[0], np.int32), "window_start": _utc(wc[1]),
        "window_end": _utc(wc[2]), "n_users": np.asarray(wc[3], np.int64),
        "n_segments": np.asarray(wc[4], np.int64), "init": list(wc[5]),
        "silhouette": np.asarray(wc[6], np.float64),
        "coverage": np.asarray(coverage, np.float64)})


def paths_table(uid_str, u_arr, t_arr, seg_arr, n_snapshots: int) -> pd.DataFrame:
    """Index ``user_id`` (every user), one nullable ``Int64`` column per snapshot: the
    user's segment id there (``<NA>``: absent)."""
    paths = pd.DataFrame({"user_id": pd.array(uid_str[u_arr], dtype="str"), "snapshot": t_arr,
                          "segment_id": seg_arr})
    wide = paths.pivot(index="user_id", columns="snapshot", values="segment_id")
    wide = wide.reindex(index=pd.Index(uid_str, name="user_id"),
                        columns=range(n_snapshots)).astype("Int64")
    wide.columns.name = "snapshot"
    return wide


def drift_table(drift_rows) -> pd.DataFrame:
    """``snapshot, segment_id, value, noise`` of every matched segment outside a split or
    merge."""
    dsc = list(zip(*drift_rows)) if drift_rows else [[]] * 4
    return pd.DataFrame({"snapshot": np.asarray(dsc[0], np.int32),
                         "segment_id": np.asarray(dsc[1], np.int64),
                         "value": np.asarray(dsc[2], np.float64),
                         "noise": np.asarray(dsc[3], np.float64)})


def project_2d(blocks: list, chunk: int = 65536) -> np.ndarray:
    """First two principal components of all rows of ``blocks`` (one projection for all).

    :func:`interestflow._utils.pca_2d` of the stacked rows, streamed ``chunk`` rows at a time
    (memory stays at one chunk whatever the number of user-snapshots), on their covariance,
    its eigendecomposition on one BLAS thread up to 1,024 dimensions (milliseconds there).
    Signs are fixed (largest loading positive) so refits of the same data give the same
    map; a dimension below 2 gives zero columns.

    Returns
    -------
    ndarray of float32, shape (sum of rows, 2)
    """
    dim = blocks[0].shape[1] if len(blocks) else 0
    return pca_2d(blocks, chunk_rows=chunk, covariance=True,
                  eigh_threads=1 if dim <= 1024 else None).astype(np.float32)
