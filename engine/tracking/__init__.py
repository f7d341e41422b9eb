"""User segments tracked over time: snapshots, stable segment ids and lifecycle events.

:class:`SegmentTracker` cuts the event stream into windows, builds every active user's
time-decayed interest vector as of each window end, clusters each snapshot warm-started from
the previous snapshot's centroids, keeps segment ids stable by optimal (Hungarian) matching
and reports lifecycle events. :func:`cluster_users` (one snapshot's clustering) and
:func:`match_segments` (the matching) work on their own too; :func:`update_segments` moves a
fixed set of segments after a few users' vectors changed (Lloyd from the old centroids; the
engine's ``partial_fit`` is built on the same steps of :mod:`interestflow.tracking.update`).

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

* ``split``: previous i sends at least ``split_share`` of its members (and at least
  ``min_segment_size`` users) to each of >= 2 current segments, each of which is mostly
  (>= 50%) made of i's members. ``value`` = share of i's members in the listed segments.
* ``merge``: current j receives at least ``merge_share`` of its members (and at least
  ``min_segment_size`` users) from each of >= 2 previous segments, each of which mostly
  (>= 50%) went into j. ``value`` = share of j's members coming from them. (The "mostly"
  conditions keep users who cross a boundary between two lasting segments, in both
  directions, from reading as a split and a merge at once.)
* ``appear``: an unmatched current segment that is not a split part or a merge result.
  ``value`` = its best matching score (below ``match_threshold``).
* ``vanish``: an unmatched previous segment that did not split and is not a merge source.
  ``value`` = its best matching score.
* ``drift``: a matched pair outside any split/merge whose centroid moved by more than
  sampling explains: ``value = 1 - cos(centroid_t-1, centroid_t)``, ``value - noise >=
  drift_threshold`` and ``value >= 2 * noise``, where
  ``noise = ((1 - R_a**2) / n_a + (1 - R_b**2) / n_b) / (2 R_a R_b)`` is the expected
  ``1 - cos`` between two centroids of ``n_a`` and ``n_b`` unit vectors drawn from one
  segment whose members' mean has length ``R`` (a tight or large segment has little noise, a
  small diffuse one more).

A window without events gives an empty snapshot: every segment of the previous snapshot
vanishes there and the segments after it appear with new ids (``value`` 0).

Significance: which candidate events are reported (``lifecycle_``; every candidate, with its
evidence and the reason it was left out, is in ``lifecycle_candidates_``)

* ``stability`` (split, merge, appear, vanish): do the segments involved exist as separate
  groups, or is the cut arbitrary? The users of the split's parts (the merge's sources, or
  the appearing / vanishing segment and its nearest neighbour), in the snapshot where they
  are separate, are re-clustered 10 times: each time a random half of them by a fresh
  K-means with as many clusters; ``stability`` is the mean adjusted Rand index with the
  tracked segments (clipped at 0). Two real groups give ~1; a round cloud cut in two gives
  much less (an elongated cloud is cut the same way every time and can pass: the p-value
  below is the second guard). Reported only when ``stability >= min_stability`` (default
  0.6); an appearing or vanishing segment that is its snapshot's only one has no stability
  and is not reported.
* ``p_value``: is the segment's kind of user new (gone), or did only the clustering
  change? Users of a segment's kind are counted in both snapshots (nearest to its
  centroid, at least as close as its lower-quartile member); the p-value is that of its
  share in its own snapshot if it were at most twice the other snapshot's share (one-sided
  binomial). Appear: the new segment against the previous snapshot; vanish: the gone
  segment against the current one; split: the parts' kinds of user new against the
  previous snapshot (pooled, or any single part: the two tests Bonferroni-combined);
  merge: at least one source's kind gone (one source may simply absorb the others: the
  smallest source p-value times their number). Reported only when ``p_value <=
  max_p_value`` (default 0.01). This keeps a theme that gets its own
  segment once enough users hold it from "appearing", and a cut through a cloud of users
  that moves between snapshots from "splitting" and "merging".
* hysteresis: a split whose parts merge again, a merge split again, or a segment that
  appears and vanishes, within 2 snapshots, is transient: neither event is reported.

Drift events keep their own test (the move against sampling noise above) and carry NaN in
both columns. On real data with permuted timestamps (no dynamics left) these rules leave
~0-1 split / merge / appear / vanish events per 10 transitions
(``benchmarks/tracking_null.py``).

Layout: ``tracker`` (:class:`SegmentTracker`), ``_checks`` (input checks, event times),
``_snapshots`` (windows, decayed user vectors), ``_clustering`` (:func:`cluster_users`,
:func:`match_segments`), ``_lifecycle`` (ids and candidate events of a transition),
``_significance`` (stability, novelty p-values, hysteresis), ``_tables`` (the tables, their
schemas, the 2-D map), ``trends`` (items and keywords rising inside segments), ``update``
(:func:`update_segments` and its steps, shared with the engine's ``partial_fit``).
``interestflow.dynamics`` and ``interestflow.trends`` are the former module paths and
re-export the same names.
"""

from ._clustering import cluster_users, match_segments
from ._tables import TRACKING_TABLES, tracking_schemas
from .tracker import SegmentTracker
from .update import update_segments

__all__ = ["SegmentTracker", "cluster_users", "match_segments", "update_segments",
           "tracking_schemas", "TRACKING_TABLES"]

# doctest.testmod of this package (or of interestflow.dynamics) runs the examples of the
# names it exports, which are defined in its modules
__test__ = {name: globals()[name] for name in __all__ if name != "TRACKING_TABLES"}
