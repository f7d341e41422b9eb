"""Planted segment dynamics: users whose interests move between topics over time windows.

:func:`make_planted_scenario` writes user events (reviews, search queries, forum posts, rating
remarks, built by the phrase machinery of :mod:`interestflow.synthetic`) over ``n_windows``
consecutive windows, with segments that **split**, **merge**, **appear**, **vanish** and
**drift** at known windows, and the ground truth a tracker should recover: each user's planted
segment in every window and the list of planted lifecycle events.

The default cast (``n_users=160``: one *unit* is ``n_users // 9`` users, the outdoor segment
has two units):

========================  ==================================================================
segment                   what happens
========================  ==================================================================
indoor plants             stable
skincare                  stable
espresso coffee           drifts: from ``drift_windows[i]`` on, a share ``drift_shares[i]`` of
                          every text's vocabulary (items, products, purposes, experiences...)
                          comes from *home baking* (kitchen neighbours), so the whole segment
                          moves gradually
camping gear + running    one segment of users who write about both topics (each user's
shoes                     events alternate between the two), until ``split_window``: then half
                          of the users write only about camping gear, the other half only
                          about running shoes
mechanical keyboards      stable; absorbs the video games users at ``merge_window``
video games               from ``merge_window`` on, these users write about mechanical
                          keyboards: the two segments merge into one
baby products             users stop at ``vanish_window``: the segment vanishes
fantasy books             new users start at ``appear_window``: the segment appears
========================  ==================================================================

Every active user has ``events_per_window`` events in each window (uniform in time inside the
window), and a share ``noise_rate`` of events (never a user's first in a window) is off-topic
chatter about a random catalogue topic. Window ``w`` is ``[start + w * window_days,
start + (w + 1) * window_days)``. :func:`evaluate_tracking` scores a tracker's tables against
the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .synthetic import (
    _POPULARITY_EXPONENT,
    _TOPICS,
    _Draws,
    _check_int,
    _make_items,
    _make_text,
    _parse_start,
    _Topic,
)

__all__ = ["PlantedScenario", "make_planted_scenario", "evaluate_tracking", "EVENT_KINDS"]

#: Lifecycle event kinds, in the order reports list them.
EVENT_KINDS = ("appear", "vanish", "split", "merge", "drift")

_TOPIC_BY_NAME = {t.name: t for t in _TOPICS}
_OUTDOOR = ("camping gear", "running shoes")
_OUTDOOR_LABEL = " + ".join(_OUTDOOR)
_DRIFT_FROM, _DRIFT_TO = "espresso coffee", "home baking"
_MERGE_INTO, _MERGE_FROM = "mechanical keyboards", "video games"
_VANISH, _APPEAR = "baby products", "fantasy books"
_STABLE = ("indoor plants", "skincare")
# (segment label at window 0 or on arrival, role, units of users). Topics that are close in
# the encoder's space (running shoes ~ road cycling, video games ~ fantasy books) are never
# two distinct segments at the same time, except for the planted pairs themselves.
_CAST = (
    (_STABLE[0], "stable", 1),
    (_STABLE[1], "stable", 1),
    (_DRIFT_FROM, "drift", 1),
    (_OUTDOOR_LABEL, "split", 2),
    (_MERGE_INTO, "stable", 1),
    (_MERGE_FROM, "merge", 1),
    (_VANISH, "vanish", 1),
    (_APPEAR, "appear", 1),
)
_UNITS = sum(c[2] for c in _CAST)
_TOPIC_FIELDS = ("brands", "models", "products", "adjectives", "attributes", "features",
                 "purposes", "experiences", "complaints", "questions")


@dataclass(frozen=True)
class PlantedScenario:
    """A generated event set with planted segment dynamics and its ground truth.

    Attributes
    ----------
    events : pandas.DataFrame
        Columns ``user_id`` (str), ``text`` (str), ``ts`` (``datetime64[ns, UTC]``),
        ``item_id`` (str), ``weight`` (float, 1.0), like
        :func:`interestflow.synthetic.make_demo_events`; sorted by user then time.
    window_edges : pandas.DatetimeIndex
        ``n_windows + 1`` edges (UTC); window ``w`` is ``[edges[w], edges[w + 1])``.
    freq : str
        The window length as a pandas frequency string (``"30D"`` by default), the value to
        pass as ``SegmentTracker(freq=...)``.
    truth : pandas.DataFrame
        One row per (window, active user): ``window`` (int32), ``user_id`` (str),
        ``segment`` (str, the planted segment label in that window).
    lifecycle : pandas.DataFrame
        The planted lifecycle events: ``window`` (int32, the first window where the change is
        in the data), ``event`` (one of :data:`EVENT_KINDS`), ``segments_from`` and
        ``segments_to`` (tuples of planted labels, sorted), ``detail`` (str).
    items : pandas.DataFrame
        Columns ``item_id``, ``text`` (product descriptions of every catalogue topic).
    item_topic : pandas.Series
        Indexed by ``item_id``: the catalogue topic of each item (an event is about the topic
        of its item, noise and drift vocabulary included).
    """

    events: pd.DataFrame
    window_edges: pd.DatetimeIndex
    freq: str
    truth: pd.DataFrame
    lifecycle: pd.DataFrame
    items: pd.DataFrame
    item_topic: pd.Series

    @property
    def n_windows(self) -> int:
        return len(self.window_edges) - 1

    def truth_labels(self, window: int) -> pd.Series:
        """Planted segment label per user id (index) in ``window``."""
        t = self.truth[self.truth["window"] == window]
        return pd.Series(t["segment"].to_numpy(), index=pd.Index(t["user_id"], name="user_id"),
                         name="segment")


def _blend_field(a: tuple, b: tuple, share: float, resolution: int = 20) -> tuple:
    """Entries of ``a`` and ``b`` repeated so that a uniform pick hits ``b`` with ``share``."""
    if share <= 0:
        return a
    if share >= 1:
        return b
    m_a = max(1, round((1 - share) * resolution * len(b)))
    m_b = max(1, round(share * resolution * len(a)))
    g = math.gcd(m_a, m_b)
    return tuple(x for x in a for _ in range(m_a // g)) + tuple(
        x for x in b for _ in range(m_b // g))


def _blend_topic(a: _Topic, b: _Topic, share: float) -> _Topic:
    """A topic whose every vocabulary slot comes from ``b`` with probability ``share``."""
    return _Topic(name=a.name, item_name=a.item_name,
                  **{f: _blend_field(getattr(a, f), getattr(b, f), share) for f in _TOPIC_FIELDS})


def _check_window(name: str, value, n_windows: int) -> int:
    value = _check_int(name, value, 1)
    if value >= n_windows:
        raise ValueError(f"{name}={value} is not a window after the first; pass 1 <= {name} <= "
                         f"{n_windows - 1} (n_windows={n_windows})")
    return value


def _check_share(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}={value} is invalid; pass 0 <= {name} <= 1")
    return float(value)


def make_planted_scenario(
    n_users: int = 160,
    n_windows: int = 6,
    *,
    window_days: int = 30,
    events_per_window: tuple[int, int] = (3, 4),
    start="2024-01-01",
    drift_windows: tuple[int, ...] = (1, 2),
    drift_shares: tuple[float, ...] = (0.5, 1.0),
    split_window: int = 2,
    merge_window: int = 3,
    appear_window: int = 4,
    vanish_window: int = 4,
    noise_rate: float = 0.05,
    seed: int = 0,
) -> PlantedScenario:
    """Generate events whose user segments split, merge, appear, vanish and drift on cue.

    The cast and the planted events are described in the module docstring; the default
    scenario has about 2,600 events (160 users, 6 windows of 30 days), which the default
    encoder handles in well under 20 s on a laptop CPU.

    Parameters
    ----------
    n_users : int, default 160
        Users in the whole scenario (at least 36); one unit is ``n_users // 9`` users, the
        outdoor segment gets two units and the indoor plants segment the remainder.
    n_windows : int, default 6
        Number of windows (at least 2); every scheduled window must be ``< n_windows``.
    window_days : int, default 30
        Length of a window in days; ``freq`` of the result is ``f"{window_days}D"``.
    events_per_window : (int, int), default (3, 4)
        Inclusive range of each active user's number of events in a window.
    start : str or datetime-like, default "2024-01-01"
        Start of window 0 (naive values are UTC).
    drift_windows : tuple of int, default (1, 2)
        Windows where the espresso coffee segment's vocabulary moves toward home baking.
    drift_shares : tuple of float, default (0.5, 1.0)
        Share of home-baking vocabulary from the matching ``drift_windows`` entry on;
        increasing.
    split_window, merge_window, appear_window, vanish_window : int, default 2, 3, 4, 4
        First window of the split, the merge, the new segment and the vanished segment.
    noise_rate : float, default 0.05
        Probability that an event (other than a user's first in a window) is about a random
        catalogue topic instead of the user's planted interest.
    seed : int, default 0
        Seed of the random generator; same seed, same scenario.

    Returns
    -------
    PlantedScenario

    Examples
    --------
    >>> from interestflow.planted import make_planted_scenario
    >>> scn = make_planted_scenario(n_users=45, n_windows=5, seed=1)
    >>> scn.lifecycle["event"].tolist()
    ['drift', 'drift', 'split', 'merge', 'appear', 'vanish']
    >>> scn.freq, len(scn.window_edges)
    ('30D', 6)
    """
    n_users = _check_int("n_users", n_users, 4 * _UNITS)
    n_windows = _check_int("n_windows", n_windows, 2)
    window_days = _check_int("window_days", window_days, 1)
    seed = _check_int("seed", seed, 0)
    if not isinstance(events_per_window, (tuple, list)) or len(events_per_window) != 2:
        raise TypeError("events_per_window must be a (min, max) pair of ints, got "
                        f"{events_per_window!r}")
    lo = _check_int("events_per_window[0]", events_per_window[0], 1)
    hi = _check_int("events_per_window[1]", events_per_window[1], 1)
    if hi < lo:
        raise ValueError(f"events_per_window={tuple(events_per_window)} has max < min; pass "
                         "(min, max) with min <= max")
    if not isinstance(drift_windows, (tuple, list)) or not isinstance(drift_shares,
                                                                       (tuple, list)):
        raise TypeError("drift_windows and drift_shares must be tuples, got "
                        f"{type(drift_windows).__name__} and {type(drift_shares).__name__}")
    if len(drift_windows) != len(drift_shares):
        raise ValueError(f"drift_windows has {len(drift_windows)} entries but drift_shares has "
                         f"{len(drift_shares)}; pass one share per drift window")
    d_wins = [_check_window(f"drift_windows[{i}]", w, n_windows)
              for i, w in enumerate(drift_windows)]
    d_shares = [_check_share(f"drift_shares[{i}]", s) for i, s in enumerate(drift_shares)]
    if any(b <= a for a, b in zip(d_wins, d_wins[1:])) or any(
            b <= a for a, b in zip(d_shares, d_shares[1:])) or (d_shares and d_shares[0] == 0):
        raise ValueError(f"drift_windows={tuple(drift_windows)} and drift_shares="
                         f"{tuple(drift_shares)} must both be strictly increasing, shares > 0")
    split_window = _check_window("split_window", split_window, n_windows)
    merge_window = _check_window("merge_window", merge_window, n_windows)
    appear_window = _check_window("appear_window", appear_window, n_windows)
    vanish_window = _check_window("vanish_window", vanish_window, n_windows)
    noise_rate = _check_share("noise_rate", noise_rate)
    t0 = _parse_start(start)

    unit = n_users // _UNITS
    sizes = [c[2] * unit for c in _CAST]
    sizes[0] += n_users - sum(sizes)

    item_ss, user_ss, text_ss = np.random.SeedSequence([seed, 5]).spawn(3)
    topics = list(_TOPICS)
    t_index = {t.name: i for i, t in enumerate(topics)}
    items = _make_items(topics, np.random.default_rng(item_ss))
    pop_cum = [np.cumsum(1.0 / np.arange(1, len(its) + 1) ** _POPULARITY_EXPONENT)
               for its in items]
    rng = np.random.default_rng(user_ss)
    d = _Draws(np.random.default_rng(text_ss))

    drift_topic = {}  # window -> blended topic used by the drifting segment from then on
    share_at = np.zeros(n_windows)
    for w, s in zip(d_wins, d_shares):
        share_at[w:] = s
    for w in range(n_windows):
        if share_at[w] > 0:
            drift_topic[w] = _blend_topic(_TOPIC_BY_NAME[_DRIFT_FROM], _TOPIC_BY_NAME[_DRIFT_TO],
                                          float(share_at[w]))

    width = max(4, len(str(n_users)))
    user_ids = [f"u{i:0{width}d}" for i in range(1, n_users + 1)]
    role_of = np.repeat(np.arange(len(_CAST)), sizes)
    role_of = role_of[rng.permutation(n_users)]
    # outdoor users: which half they take at the split (balanced, random)
    outdoor = np.flatnonzero(role_of == 3)
    goes_camping = np.zeros(n_users, bool)
    goes_camping[rng.permutation(outdoor)[: len(outdoor) // 2]] = True

    win_s = window_days * 86400
    cols = {"user_id": [], "text": [], "ts": [], "item_id": []}
    truth_rows: list[tuple[int, str, str]] = []

    def emit(uid, topic_name, t_ns, topic_obj=None, mix_with=None, share=0.0):
        """One event about ``topic_name`` (vocabulary possibly blended with ``mix_with``)."""
        ti = t_index[topic_name]
        if mix_with is not None and d.u() < share:
            ti = t_index[mix_with]  # the referenced item follows the vocabulary mix
        item = items[ti][d.pick_cum(pop_cum[ti])]
        cols["user_id"].append(uid)
        cols["text"].append(_make_text(d, topic_obj or topics[t_index[topic_name]], item))
        cols["ts"].append(t_ns)
        cols["item_id"].append(item.item_id)

    for u in range(n_users):
        label0, role, _ = _CAST[role_of[u]]
        uid = user_ids[u]
        for w in range(n_windows):
            if role == "vanish" and w >= vanish_window:
                break
            if role == "appear" and w < appear_window:
                continue
            # planted segment and the topic plan of this user's events in window w
            if role == "split":
                if w < split_window:
                    seg, plan = _OUTDOOR_LABEL, "alternate"
                else:
                    seg = _OUTDOOR[0] if goes_camping[u] else _OUTDOOR[1]
                    plan = seg
            elif role == "merge":
                seg = plan = _MERGE_FROM if w < merge_window else _MERGE_INTO
            else:
                seg = plan = label0
            truth_rows.append((w, uid, seg))
            n = int(rng.integers(lo, hi + 1))
            offs = np.sort(rng.uniform(0, win_s, size=n)).astype(np.int64)
            steps = np.arange(n, dtype=np.int64)
            offs = np.minimum(np.maximum.accumulate(offs - steps) + steps, win_s - 1)
            first_outdoor = int(rng.integers(2))
            for j in range(n):
                t_ns = t0.value + (w * win_s + int(offs[j])) * 1_000_000_000
                if j > 0 and d.u() < noise_rate:
                    emit(uid, topics[int(d.u() * len(topics))].name, t_ns)
                elif plan == "alternate":
                    emit(uid, _OUTDOOR[(j + first_outdoor) % 2], t_ns)
                elif role == "drift" and w in drift_topic:
                    emit(uid, _DRIFT_FROM, t_ns, drift_topic[w], _DRIFT_TO, float(share_at[w]))
                else:
                    emit(uid, plan, t_ns)

    events = pd.DataFrame({
        "user_id": pd.array(cols["user_id"], dtype="str"),
        "text": pd.array(cols["text"], dtype="str"),
        "ts": pd.to_datetime(np.asarray(cols["ts"], dtype=np.int64), unit="ns", utc=True)
        .astype("datetime64[ns, UTC]"),
        "item_id": pd.array(cols["item_id"], dtype="str"),
        "weight": np.ones(len(cols["user_id"]), dtype=np.float64),
    })
    events = events.sort_values(["user_id", "ts"], kind="stable", ignore_index=True)
    truth = pd.DataFrame(truth_rows, columns=["window", "user_id", "segment"])
    truth["window"] = truth["window"].astype(np.int32)
    truth["user_id"] = truth["user_id"].astype("str")
    truth = truth.sort_values(["window", "user_id"], ignore_index=True)

    life = [(w, "drift", (_DRIFT_FROM,), (_DRIFT_FROM,),
             f"{_DRIFT_FROM} vocabulary {round(100 * s)}% {_DRIFT_TO}")
            for w, s in zip(d_wins, d_shares)]
    life += [
        (split_window, "split", (_OUTDOOR_LABEL,), tuple(sorted(_OUTDOOR)),
         f"{_OUTDOOR_LABEL} users split into its two topics"),
        (merge_window, "merge", tuple(sorted((_MERGE_INTO, _MERGE_FROM))), (_MERGE_INTO,),
         f"{_MERGE_FROM} users move to {_MERGE_INTO}"),
        (appear_window, "appear", (), (_APPEAR,), f"new {_APPEAR} users arrive"),
        (vanish_window, "vanish", (_VANISH,), (), f"{_VANISH} users stop"),
    ]
    lifecycle = pd.DataFrame(life, columns=["window", "event", "segments_from", "segments_to",
                                            "detail"])
    lifecycle["window"] = lifecycle["window"].astype(np.int32)
    lifecycle = lifecycle.sort_values("window", kind="stable", ignore_index=True)

    flat = sorted((it for its in items for it in its), key=lambda it: it.item_id)
    items_df = pd.DataFrame({"item_id": pd.array([it.item_id for it in flat], dtype="str"),
                             "text": pd.array([it.text for it in flat], dtype="str")})
    edges = pd.DatetimeIndex([t0 + pd.Timedelta(days=window_days * w)
                              for w in range(n_windows + 1)]).as_unit("ns")
    item_topic = pd.Series([it.topic for it in flat], name="topic", dtype="str",
                           index=pd.Index(items_df["item_id"], name="item_id"))
    return PlantedScenario(events=events, window_edges=edges, freq=f"{window_days}D",
                           truth=truth, lifecycle=lifecycle, items=items_df,
                           item_topic=item_topic)


def _best_labels(assign: pd.DataFrame, truth: pd.Series) -> dict:
    """Planted label of each tracked segment id: the label most of its members carry."""
    lab = truth.reindex(assign["user_id"].to_numpy()).to_numpy()
    df = pd.DataFrame({"seg": assign["segment_id"].to_numpy(), "lab": lab}).dropna()
    if df.empty:
        return {}
    counts = df.groupby(["seg", "lab"]).size().reset_index(name="n")
    counts = counts.sort_values(["seg", "n", "lab"], ascending=[True, False, True])
    return dict(zip(counts.drop_duplicates("seg")["seg"].astype(int), counts.drop_duplicates(
        "seg")["lab"]))


def evaluate_tracking(scenario: PlantedScenario, assignments: pd.DataFrame,
                      lifecycle: pd.DataFrame) -> dict:
    """Score tracked segments and lifecycle events against a planted scenario's truth.

    Segment recovery: adjusted Rand index per snapshot between the tracked segment ids and
    the planted labels, over the users the truth lists for that window (a planted user
    missing from the tracked snapshot counts as its own singleton segment, so dropping users
    is penalised). Lifecycle events: every tracked segment id is mapped, per snapshot, to the
    planted label most of its members carry; a detected event matches a planted one when the
    snapshot equals the planted window, the kind is equal and the sets of mapped labels of
    ``segments_from`` (at the previous snapshot) and ``segments_to`` (at the event's
    snapshot) equal the planted label sets. Each planted event matches at most one detection.

    Parameters
    ----------
    scenario : PlantedScenario
    assignments : pandas.DataFrame
        ``snapshot, user_id, segment_id`` (``SegmentTracker.assignments_``); snapshot ``t``
        is window ``t`` of the scenario.
    lifecycle : pandas.DataFrame
        ``snapshot, event, segments_from, segments_to`` (``SegmentTracker.lifecycle_``).

    Returns
    -------
    dict
        ``ari`` (list per window), ``ari_min``, ``precision``/``recall`` (all kinds),
        ``per_kind`` ({kind: {"precision", "recall", "n_planted", "n_detected"}}),
        ``matched``/``missed``/``spurious`` (lists of event descriptions).
    """
    from sklearn.metrics import adjusted_rand_score

    for name, df, cols in (("assignments", assignments, ("snapshot", "user_id", "segment_id")),
                           ("lifecycle", lifecycle,
                            ("snapshot", "event", "segments_from", "segments_to"))):
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{name} is missing column(s) {missing}; it has {list(df.columns)}")
    n_w = scenario.n_windows
    ari, mapping = [], []
    for w in range(n_w):
        truth = scenario.truth_labels(w)
        a = assignments[assignments["snapshot"] == w]
        mapping.append(_best_labels(a, truth))
        seg = pd.Series(a["segment_id"].to_numpy(), index=a["user_id"].astype(str).to_numpy())
        pred = seg.reindex(truth.index)
        missing = pred.isna().to_numpy()
        pred = pred.to_numpy(dtype=object)
        pred[missing] = [f"missing-{i}" for i in range(int(missing.sum()))]
        ari.append(float(adjusted_rand_score(truth.to_numpy(), pred.astype(str))))

    def labels_of(ids, w):
        if w < 0 or w >= n_w:
            return None
        return tuple(sorted({str(mapping[w].get(int(i), f"unmapped-{int(i)}")) for i in ids}))

    planted = [(int(r.window), r.event, tuple(r.segments_from), tuple(r.segments_to))
               for r in scenario.lifecycle.itertuples()]
    detected = []
    for r in lifecycle.itertuples():
        t = int(r.snapshot)
        detected.append((t, r.event, labels_of(r.segments_from, t - 1),
                         labels_of(r.segments_to, t)))
    used = [False] * len(planted)
    hit = [False] * len(detected)
    for d_i, d in enumerate(detected):
        for p_i, p in enumerate(planted):
            if not used[p_i] and d == p:
                used[p_i] = hit[d_i] = True
                break
    per_kind = {}
    for kind in EVENT_KINDS:
        n_p = sum(p[1] == kind for p in planted)
        n_d = sum(d[1] == kind for d in detected)
        tp_p = sum(u for u, p in zip(used, planted) if p[1] == kind)
        tp_d = sum(h for h, d in zip(hit, detected) if d[1] == kind)
        per_kind[kind] = {"precision": tp_d / n_d if n_d else float("nan"),
                          "recall": tp_p / n_p if n_p else float("nan"),
                          "n_planted": n_p, "n_detected": n_d}
    fmt = lambda e: f"window {e[0]} {e[1]}: {list(e[2] or ())} -> {list(e[3] or ())}"  # noqa
    return {
        "ari": ari, "ari_min": float(min(ari)),
        "precision": sum(hit) / len(detected) if detected else float("nan"),
        "recall": sum(used) / len(planted) if planted else float("nan"),
        "per_kind": per_kind,
        "matched": [fmt(p) for u, p in zip(used, planted) if u],
        "missed": [fmt(p) for u, p in zip(used, planted) if not u],
        "spurious": [fmt(d) for h, d in zip(hit, detected) if not h],
    }
