"""What is rising inside each segment: items and keywords whose share of a segment's users
grew from one snapshot to the next, with a significance (used by
:class:`interestflow.dynamics.SegmentTracker`, table ``trends``).

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

__all__ = ["rising_keys", "TREND_COLUMNS"]

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
    return pd.DataFrame({"snapshot": np.zeros(0, np.int32), "segment_id": np.zeros(0, np.int64),
                         "kind": pd.Series([], dtype=object), "key": pd.Series([], dtype=object),
                         "share": np.zeros(0), "previous_share": np.zeros(0),
                         "n_users": np.zeros(0, np.int64), "p_value": np.zeros(0),
                         "label": pd.Series([], dtype=object)})
