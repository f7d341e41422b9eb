"""Ids and candidate lifecycle events of one transition (snapshot t-1 -> t): matching keeps
ids, the flows of users between segments give splits and merges, unmatched segments appear
or vanish, matched centroids that moved beyond sampling noise drift
(:mod:`interestflow.tracking`, "Lifecycle events").

An event is a tuple ``(t, kind, segments_from, segments_to, value, detail, p_value,
stability)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._clustering import match_segments
from ._significance import centroid_noise, novelty, novelty_parts, split_p, with_nearest

__all__ = ["Rules", "new_ids", "transition"]

_EVENT_ORDER = {"appear": 0, "vanish": 1, "split": 2, "merge": 3, "drift": 4}
# A drift must also be this many times the centroid move expected from sampling alone: the
# excess over the expectation fluctuates in proportion to it, so small diffuse segments need
# the relative test (on the planted scenarios stable segments reach 1.6x, planted drifts 3x+).
_DRIFT_NOISE_RATIO = 2.0
#: a part of a split is mostly made of the split segment's members; a source of a merge
#: mostly went into the merged segment (users in both snapshots)
_CORE_SHARE = 0.5


@dataclass(frozen=True)
class Rules:
    """The :class:`SegmentTracker` parameters that decide ids and events, checked."""

    match_weight: float
    match_threshold: float
    split_share: float
    merge_share: float
    drift_threshold: float
    min_segment_size: int


def new_ids(prev, snap, next_id: int) -> tuple[int, list]:
    """Fresh ids for every segment of ``snap`` (the first snapshot, or one after an empty
    snapshot, where every segment appears with ``value`` 0). Returns ``(next_id, events)``."""
    ids = np.arange(next_id, next_id + len(snap["centroids"]), dtype=np.int64)
    snap["ids"] = ids
    events = []
    if prev is not None:  # after an empty snapshot every segment is new
        events = [(snap["t"], "appear", [], [int(i)], 0.0, "after an empty snapshot", np.nan,
                   np.nan) for i in ids]
    return next_id + len(ids), events


def transition(prev, snap, next_id: int, rules: Rules, stability) -> tuple[int, list, list]:
    """Stable ids for ``snap``'s segments (set as ``snap["ids"]``) and the candidate events
    of ``prev -> snap``, sorted by kind (appear, vanish, split, merge, drift) then segments.

    ``stability(snapshot, rows, t)`` scores the segments ``rows`` of a snapshot
    (:func:`interestflow.tracking._significance.stability`). Returns ``(next_id, events,
    drift_rows)``; ``drift_rows`` are ``(t, segment_id, 1 - cos, noise)`` of every matched
    segment outside a split or merge.
    """
    t = snap["t"]
    if len(snap["centroids"]) == 0:
        snap["ids"] = np.zeros(0, np.int64)
        return next_id, [(t, "vanish", [int(i)], [], 0.0, "empty snapshot", np.nan, np.nan)
                         for i in prev["ids"]], []
    tr = _Transition(prev, snap, rules)
    next_id = tr.assign_ids(next_id)
    found = tr.splits(stability) + tr.merges(stability)
    found += tr.appears(stability) + tr.vanishes(stability)
    drift_rows = []
    found += tr.drifts(drift_rows)
    found.sort(key=lambda e: (_EVENT_ORDER[e[1]], e[2], e[3]))
    return next_id, found, drift_rows


class _Transition:
    """The flows of users between the segments of two snapshots (users present in both)
    and the events they show; the split / merge rows found so far are kept, as appear,
    vanish and drift leave them out."""

    def __init__(self, prev, snap, rules: Rules):
        self.prev, self.snap, self.rules, self.t = prev, snap, rules, snap["t"]
        kp, kc = len(prev["centroids"]), len(snap["centroids"])
        _, ip, ic = np.intersect1d(prev["users"], snap["users"], assume_unique=True,
                                   return_indices=True)
        m = match_segments(prev["centroids"], snap["centroids"], prev["labels"][ip],
                           snap["labels"][ic], match_weight=rules.match_weight,
                           match_threshold=rules.match_threshold)
        self.match, self.score, self.cos, flow = m["match"], m["score"], m["cos"], m["flow"]
        self.out_tot = flow.sum(axis=1)  # previous members still present
        self.in_tot = flow.sum(axis=0)   # current members already present before
        self.out_share = np.divide(flow, self.out_tot[:, None], out=np.zeros((kp, kc)),
                                   where=self.out_tot[:, None] > 0)
        self.in_share = np.divide(flow, self.in_tot[None, :], out=np.zeros((kp, kc)),
                                  where=self.in_tot[None, :] > 0)
        self.big = flow >= rules.min_segment_size
        self.pid = prev["ids"]
        self.split_from, self.split_to, self.merge_from, self.merge_to = (set(), set(), set(),
                                                                          set())

    def assign_ids(self, next_id: int) -> int:
        """A matched segment keeps its previous id, every other one gets a new id."""
        ids = np.empty(len(self.snap["centroids"]), np.int64)
        for j in range(len(ids)):
            if j in self.match:
                ids[j] = self.pid[self.match[j]]
            else:
                ids[j] = next_id
                next_id += 1
        self.snap["ids"] = self.ids = ids
        return next_id

    def splits(self, stability) -> list:
        """Previous segments sending >= ``split_share`` of their members (and at least
        ``min_segment_size`` users) to each of >= 2 current segments mostly made of them."""
        found, ids, pid, out_share = [], self.ids, self.pid, self.out_share
        for i, parts in _fans(self.big, out_share, self.in_share, self.rules.split_share):
            self.split_from.add(i)
            self.split_to.update(parts.tolist())
            detail = ", ".join(f"{100 * out_share[i, j]:.0f}% -> {ids[j]}" for j in parts)
            found.append((self.t, "split", [int(pid[i])], sorted(int(ids[j]) for j in parts),
                          float(out_share[i, parts].sum()),
                          f"segment {pid[i]} ({self.out_tot[i]} users present in both "
                          f"snapshots): {detail}",
                          split_p(self.snap, self.prev, parts),
                          stability(self.snap, parts, self.t)))
        return found

    def merges(self, stability) -> list:
        """Current segments receiving >= ``merge_share`` of their members (and at least
        ``min_segment_size`` users) from each of >= 2 previous segments that mostly went
        into them."""
        found, ids, pid, in_share = [], self.ids, self.pid, self.in_share
        for j, srcs in _fans(self.big.T, in_share.T, self.out_share.T, self.rules.merge_share):
            self.merge_to.add(j)
            self.merge_from.update(srcs.tolist())
            detail = ", ".join(f"{100 * in_share[i, j]:.0f}% from {pid[i]}" for i in srcs)
            found.append((self.t, "merge", sorted(int(pid[i]) for i in srcs), [int(ids[j])],
                          float(in_share[srcs, j].sum()),
                          f"segment {ids[j]} ({self.in_tot[j]} users present in both "
                          f"snapshots): {detail}",
                          min(1.0, len(srcs) * min(novelty_parts(self.prev, self.snap,
                                                                 srcs)[0])),
                          stability(self.prev, srcs, self.t)))
        return found

    def appears(self, stability) -> list:
        """Unmatched current segments that are not a split part or a merge result."""
        found, snap, ids = [], self.snap, self.ids
        for j in range(len(ids)):
            if j in self.match or j in self.split_to or j in self.merge_to:
                continue
            size = int((snap["labels"] == j).sum())
            best = np.max(self.score[:, j])
            found.append((self.t, "appear", [], [int(ids[j])], float(best),
                          f"segment {ids[j]}: {size} users, {int(size - self.in_tot[j])} new; "
                          f"best match score {best:.2f}",
                          novelty(snap, self.prev, j),
                          stability(snap, with_nearest(snap, j), self.t)))
        return found

    def vanishes(self, stability) -> list:
        """Unmatched previous segments that did not split and are not a merge source."""
        found, prev, pid = [], self.prev, self.pid
        matched_prev = set(self.match.values())
        for i in range(len(pid)):
            if i in matched_prev or i in self.split_from or i in self.merge_from:
                continue
            size = int((prev["labels"] == i).sum())
            best = np.max(self.score[i])
            found.append((self.t, "vanish", [int(pid[i])], [], float(best),
                          f"segment {pid[i]}: {size} users, {int(size - self.out_tot[i])} "
                          f"absent now; best match score {best:.2f}",
                          novelty(prev, self.snap, i),
                          stability(prev, with_nearest(prev, i), self.t)))
        return found

    def drifts(self, drift_rows: list) -> list:
        """Matched pairs outside any split / merge whose centroid moved by more than
        sampling explains (``1 - cos`` minus the noise >= ``drift_threshold`` and >=
        :data:`_DRIFT_NOISE_RATIO` times the noise); every such pair's move and noise is
        appended to ``drift_rows``."""
        found, prev, snap, ids, pid = [], self.prev, self.snap, self.ids, self.pid
        for j, i in sorted(self.match.items()):
            if (i in self.split_from or i in self.merge_from or j in self.split_to
                    or j in self.merge_to):
                continue
            d = 1.0 - float(self.cos[i, j])
            noise = centroid_noise(prev["resultant"][i], prev["size"][i],
                                   snap["resultant"][j], snap["size"][j])
            if d - noise >= self.rules.drift_threshold and d >= _DRIFT_NOISE_RATIO * noise:
                found.append((self.t, "drift", [int(pid[i])], [int(ids[j])], d,
                              f"segment {ids[j]}: centroid cosine {self.cos[i, j]:.3f} to the "
                              f"previous snapshot; sampling noise alone gives 1 - cos ~ "
                              f"{noise:.3f}", np.nan, np.nan))
            drift_rows.append((self.t, int(ids[j]), d, noise))
        return found


def _fans(big, share, back, min_share: float):
    """``(row, columns)`` for every row that gives at least ``min_share`` of it (``share``,
    row-normalised flows) and at least ``min_segment_size`` users (``big``) to each of >= 2
    columns, each of which is mostly (``back`` >= :data:`_CORE_SHARE`) made of it; columns
    by decreasing share. Splits read the flows from previous to current segments, merges
    the transposed flows."""
    for r in range(len(share)):
        cols = np.flatnonzero(big[r] & (share[r] >= min_share) & (back[r] >= _CORE_SHARE))
        if len(cols) >= 2:
            yield r, cols[np.argsort(-share[r, cols], kind="stable")]
