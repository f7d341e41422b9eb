"""What is rising inside each segment: items and keywords whose share of a segment's users
grew from one snapshot to the next, with a significance (:func:`trends_table` builds
:class:`interestflow.tracking.SegmentTracker`'s table ``trends``).

For a segment id present in snapshots ``t - 1`` and ``t``, the share of a key (an item, or a
keyword of the users' texts) is the number of the segment's users at that snapshot who used
it in that window, over the segment's users then. A key is *rising* when its share at ``t``
is above its share at ``t - 1`` and the rise is significant: the one-sided Fisher exact
p-value of the two shares (``c_t`` of ``n_t`` against ``c_{t-1}`` of ``n_{t-1}``, both
counts' sampling error included), times the number of keys tested for that segment,
snapshot and kind (Bonferroni: keys used by at least ``min_users`` of its users), is at most
``max_p_value``. The ``top_n`` largest rises per segment, snapshot and kind are kept.
Limits: the correction is per segment, snapshot and kind, not over the whole table (a
report of many segments and snapshots holds some chance rises); users present in both
snapshots are counted as independent samples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["rising_keys", "trends_table", "TREND_COLUMNS"]

#: Columns of the trends table (``SegmentTracker.trends_``).
TREND_COLUMNS = ("snapshot", "segment_id", "kind", "key", "share", "previous_share",
                 "n_users", "p_value", "label")


def rising_keys(seg_prev, pairs_prev, seg_cur, pairs_cur, n_keys: int, *, max_p_value=0.01,
                top_n=5, min_users=3) -> list[tuple]:
    """Rising keys of every segment present in both snapshots.

    Parameters
    ----------
    seg_prev, seg_cur : ndarray of int, shape (n_users_t,)
        Segment id of each user of the previous / current snapshot.
    pairs_prev, pairs_cur : ndarray of int, shape (n_pairs, 2)
        Distinct ``(user row, key code)`` pairs of that snapshot's window (user rows index
        ``seg_*``).
    n_keys : int
        Number of key codes.

    Returns
    -------
    list of tuple
        ``(segment_id, key_code, share, previous_share, n_users, p_value)``, per segment by
        decreasing rise.

    Examples
    --------
    >>> import numpy as np
    >>> seg0 = np.zeros(40, int); seg1 = np.zeros(40, int)
    >>> before = np.array([[u, 0] for u in range(2)])          # 2 of 40 used key 0
    >>> after = np.array([[u, 0] for u in range(20)])          # 20 of 40 do now
    >>> [(s, k, share) for s, k, share, *_ in rising_keys(seg0, before, seg1, after, 1)]
    [(0, 0, 0.5)]
    """
    from scipy.stats import hypergeom

    seg_prev, seg_cur = np.asarray(seg_prev, np.int64), np.asarray(seg_cur, np.int64)
    pairs_prev = np.asarray(pairs_prev, np.int64).reshape(-1, 2)
    pairs_cur = np.asarray(pairs_cur, np.int64).reshape(-1, 2)
    out = []
    for s in np.intersect1d(np.unique(seg_prev), np.unique(seg_cur)):
        n1, n0 = int((seg_cur == s).sum()), int((seg_prev == s).sum())
        c1 = np.bincount(pairs_cur[seg_cur[pairs_cur[:, 0]] == s, 1], minlength=n_keys)
        c0 = np.bincount(pairs_prev[seg_prev[pairs_prev[:, 0]] == s, 1], minlength=n_keys)
        cand = np.flatnonzero(c1 >= min_users)
        if not len(cand):
            continue
        share, before = c1[cand] / n1, c0[cand] / n0
        # one-sided Fisher: P(>= c1 of the c0 + c1 users with the key fall among the n1)
        p = hypergeom.sf(c1[cand] - 1, n0 + n1, c0[cand] + c1[cand], n1)
        p = np.minimum(1.0, p * len(cand))
        ok = np.flatnonzero((p <= max_p_value) & (share > before))
        order = ok[np.lexsort((cand[ok], -(share[ok] - before[ok])))][:top_n]
        out += [(int(s), int(cand[j]), float(share[j]), float(before[j]), int(c1[cand[j]]),
                 float(p[j])) for j in order]
    return out


def empty_trends() -> pd.DataFrame:
    """A trends table without rows (the columns of :data:`TREND_COLUMNS`, typed)."""
    return pd.DataFrame({"snapshot": np.zeros(0, np.int32), "segment_id": np.zeros(0, np.int64),
                         "kind": pd.Series([], dtype=object), "key": pd.Series([], dtype=object),
                         "share": np.zeros(0), "previous_share": np.zeros(0),
                         "n_users": np.zeros(0, np.int64), "p_value": np.zeros(0),
                         "label": pd.Series([], dtype=object)})


def trends_table(snaps, texts, item_codes, item_names, *, max_p_value: float,
                 top_n: int) -> pd.DataFrame:
    """Items and keywords rising inside segments, snapshot by snapshot (the tracker's
    ``trends_``; columns :data:`TREND_COLUMNS`).

    ``snaps``: the tracker's fitted snapshots (``t``, ``users``, ``ids``, ``labels``,
    ``rows``, ``row_user``); ``item_codes`` ((n_events,) int64, -1: no item) and
    ``item_names``, or None; ``texts`` (one per event) or None. Keys come from
    :func:`rising_keys` (``max_p_value``, ``top_n`` per segment, snapshot and kind); an
    item's label is the first event text naming it, clipped to 80 characters.
    """
    label = _item_labels(texts, item_codes)
    rows = []
    for kind, codes, x, names in _keyed(texts, item_codes, item_names):
        pairs = [_user_key_pairs(s, codes, x) for s in snaps]
        for a, b, pa_, pb in zip(snaps, snaps[1:], pairs, pairs[1:]):
            if not len(a["users"]) or not len(b["users"]):
                continue
            found = rising_keys(a["ids"][a["labels"]], pa_, b["ids"][b["labels"]], pb,
                                len(names), max_p_value=float(max_p_value), top_n=int(top_n))
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


def _item_labels(texts, item_codes):
    """``label(kind, key)``: for an item, the first event text naming it (whitespace
    collapsed, clipped to 80 characters); "" for a keyword or without texts."""
    first_text = {}
    if item_codes is not None and texts is not None:
        has = np.flatnonzero(item_codes >= 0)
        codes_, at = np.unique(item_codes[has], return_index=True)
        first_text = {int(c): texts[has[i]] for c, i in zip(codes_, at)}

    def label(kind, key):
        if kind == "item" and int(key) in first_text:
            t = " ".join(first_text[int(key)].split())
            return t if len(t) <= 80 else t[:79] + "…"
        return ""

    return label


def _keyed(texts, item_codes, item_names) -> list:
    """The kinds of key to test: ``(kind, codes per event or None, term presence matrix or
    None, names)`` for items (``item_codes`` given) and keywords (``texts`` with terms)."""
    from ..labels import term_presence

    keyed = []
    if item_codes is not None:
        keyed.append(("item", item_codes, None, item_names))
    if texts is not None:
        x, terms = term_presence(texts)
        if x.shape[1]:
            keyed.append(("keyword", None, x, terms))
    return keyed


def _user_key_pairs(s, codes, x) -> np.ndarray:
    """Distinct ``(user row, key code)`` pairs of snapshot ``s``'s window: from the events'
    key ``codes`` (-1: none) or their term presence matrix ``x``."""
    if codes is not None:
        k = codes[s["rows"]]
        p = np.stack([s["row_user"], k], axis=1)[k >= 0]
    else:
        sub = x[s["rows"]].tocoo()
        p = np.stack([s["row_user"][sub.row], sub.col], axis=1)
    return np.unique(p.reshape(-1, 2), axis=0)
