"""Planted segment dynamics: users whose interests move between topics over time windows.

:func:`make_planted_scenario` writes user events (reviews, search queries, forum posts, rating
remarks, built by the same phrase machinery as :func:`interestflow.datasets.make_demo_events`)
over ``n_windows`` consecutive windows, with segments that **split**, **merge**, **appear**,
**vanish** and **drift** at known windows, and the ground truth a tracker should recover: each
user's planted segment in every window and the list of planted lifecycle events.

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

from .._utils import check_int, renamed
from ._common import (
    Draws,
    check_count_range,
    check_share,
    event_seconds,
    events_frame,
    items_frame,
    make_items,
    make_text,
    parse_start,
    popularity_cum,
)
from ._vocabulary import TOPICS, Topic

__all__ = ["PlantedScenario", "make_planted_scenario", "evaluate_tracking", "EVENT_KINDS"]

#: Lifecycle event kinds, in the order reports list them.
EVENT_KINDS = ("appear", "vanish", "split", "merge", "drift")

_TOPIC_BY_NAME = {t.name: t for t in TOPICS}
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
_SPLIT_ROLE = 3  # index of the outdoor (splitting) segment in _CAST
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
        :func:`interestflow.datasets.make_demo_events`; sorted by user then time.
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


@dataclass(frozen=True)
class _Plan:
    """The checked arguments of :func:`make_planted_scenario`."""

    n_users: int
    n_windows: int
    window_days: int
    lo: int                          # events per active user and window, inclusive range
    hi: int
    drift_windows: tuple[int, ...]
    drift_shares: tuple[float, ...]
    split_window: int
    merge_window: int
    appear_window: int
    vanish_window: int
    noise_rate: float
    seed: int
    t0: pd.Timestamp                 # start of window 0 (UTC)


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


def _blend_topic(a: Topic, b: Topic, share: float) -> Topic:
    """A topic whose every vocabulary slot comes from ``b`` with probability ``share``."""
    return Topic(name=a.name, item_name=a.item_name,
                 **{f: _blend_field(getattr(a, f), getattr(b, f), share) for f in _TOPIC_FIELDS})


def _check_window(name: str, value, n_windows: int) -> int:
    """``value`` as a window index after the first (``1 <= value < n_windows``)."""
    value = check_int(name, value, 1)
    if value >= n_windows:
        raise ValueError(f"{name}={value} is not a window after the first; pass 1 <= {name} <= "
                         f"{n_windows - 1} (n_windows={n_windows})")
    return value


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
    random_state: int = 0,
    seed=None,
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
    random_state : int, default 0
        Seed of the random generator; same seed, same scenario. (``seed``: its deprecated
        name.)

    Returns
    -------
    PlantedScenario

    Examples
    --------
    >>> from interestflow.datasets import make_planted_scenario
    >>> scn = make_planted_scenario(n_users=45, n_windows=5, random_state=1)
    >>> scn.lifecycle["event"].tolist()
    ['drift', 'drift', 'split', 'merge', 'appear', 'vanish']
    >>> scn.freq, len(scn.window_edges)
    ('30D', 6)
    """
    check_int("random_state" if seed is None else "seed",
              random_state if seed is None else seed, 0)
    seed = renamed("random_state", random_state, "seed", seed, 0)
    p = _check_args(n_users, n_windows, window_days, events_per_window, start, drift_windows,
                    drift_shares, split_window, merge_window, appear_window, vanish_window,
                    noise_rate, seed)
    item_ss, user_ss, text_ss = np.random.SeedSequence([p.seed, 5]).spawn(3)
    items = make_items(list(TOPICS), np.random.default_rng(item_ss))
    rng = np.random.default_rng(user_ss)
    out = _EventWriter(items, Draws(np.random.default_rng(text_ss)))
    role_of, goes_camping = _cast_users(p.n_users, rng)
    truth_rows = _write_events(p, role_of, goes_camping, rng, out)
    return _scenario(p, out.cols, truth_rows, items)


def _check_args(n_users, n_windows, window_days, events_per_window, start, drift_windows,
                drift_shares, split_window, merge_window, appear_window, vanish_window,
                noise_rate, seed) -> _Plan:
    """Check :func:`make_planted_scenario`'s arguments, raising named errors."""
    n_users = check_int("n_users", n_users, 4 * _UNITS)
    n_windows = check_int("n_windows", n_windows, 2)
    window_days = check_int("window_days", window_days, 1)
    seed = check_int("seed", seed, 0)
    lo, hi = check_count_range("events_per_window", events_per_window)
    d_wins, d_shares = _check_drift(drift_windows, drift_shares, n_windows)
    return _Plan(
        n_users=n_users, n_windows=n_windows, window_days=window_days, lo=lo, hi=hi,
        drift_windows=d_wins, drift_shares=d_shares,
        split_window=_check_window("split_window", split_window, n_windows),
        merge_window=_check_window("merge_window", merge_window, n_windows),
        appear_window=_check_window("appear_window", appear_window, n_windows),
        vanish_window=_check_window("vanish_window", vanish_window, n_windows),
        noise_rate=check_share("noise_rate", noise_rate), seed=seed, t0=parse_start(start))


def _check_drift(drift_windows, drift_shares, n_windows: int):
    """The drift schedule as (windows, shares): one share per window, both strictly
    increasing, shares in (0, 1]."""
    if not isinstance(drift_windows, (tuple, list)) or not isinstance(drift_shares,
                                                                       (tuple, list)):
        raise TypeError("drift_windows and drift_shares must be tuples, got "
                        f"{type(drift_windows).__name__} and {type(drift_shares).__name__}")
    if len(drift_windows) != len(drift_shares):
        raise ValueError(f"drift_windows has {len(drift_windows)} entries but drift_shares has "
                         f"{len(drift_shares)}; pass one share per drift window")
    d_wins = tuple(_check_window(f"drift_windows[{i}]", w, n_windows)
                   for i, w in enumerate(drift_windows))
    d_shares = tuple(check_share(f"drift_shares[{i}]", s) for i, s in enumerate(drift_shares))
    if any(b <= a for a, b in zip(d_wins, d_wins[1:])) or any(
            b <= a for a, b in zip(d_shares, d_shares[1:])) or (d_shares and d_shares[0] == 0):
        raise ValueError(f"drift_windows={tuple(drift_windows)} and drift_shares="
                         f"{tuple(drift_shares)} must both be strictly increasing, shares > 0")
    return d_wins, d_shares


def _cast_users(n_users: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each user's role (index into the cast, units dealt then shuffled, the remainder to the
    first segment) and, for the outdoor users, which half they join at the split."""
    unit = n_users // _UNITS
    sizes = [c[2] * unit for c in _CAST]
    sizes[0] += n_users - sum(sizes)
    role_of = np.repeat(np.arange(len(_CAST)), sizes)
    role_of = role_of[rng.permutation(n_users)]
    # outdoor users: which half they take at the split (balanced, random)
    outdoor = np.flatnonzero(role_of == _SPLIT_ROLE)
    goes_camping = np.zeros(n_users, bool)
    goes_camping[rng.permutation(outdoor)[: len(outdoor) // 2]] = True
    return role_of, goes_camping


def _drift_schedule(p: _Plan) -> dict[int, tuple[Topic, float]]:
    """Window -> (blended topic, home-baking share) for every window the drifting segment
    writes with a blended vocabulary."""
    share_at = np.zeros(p.n_windows)
    for w, s in zip(p.drift_windows, p.drift_shares):
        share_at[w:] = s
    return {w: (_blend_topic(_TOPIC_BY_NAME[_DRIFT_FROM], _TOPIC_BY_NAME[_DRIFT_TO],
                             float(share_at[w])), float(share_at[w]))
            for w in range(p.n_windows) if share_at[w] > 0}


class _EventWriter:
    """Collects the events' columns; one event is an item of a topic and a text about it."""

    def __init__(self, items: list, d: Draws):
        self.topics = list(TOPICS)
        self.t_index = {t.name: i for i, t in enumerate(self.topics)}
        self.items = items
        self.pop_cum = popularity_cum(items)
        self.d = d
        self.cols: dict[str, list] = {"user_id": [], "text": [], "ts": [], "item_id": []}

    def emit(self, uid, topic_name, t_ns, topic_obj=None, mix_with=None, share=0.0):
        """One event about ``topic_name`` (vocabulary possibly blended with ``mix_with``)."""
        d = self.d
        ti = self.t_index[topic_name]
        if mix_with is not None and d.u() < share:
            ti = self.t_index[mix_with]  # the referenced item follows the vocabulary mix
        item = self.items[ti][d.pick_cum(self.pop_cum[ti])]
        self.cols["user_id"].append(uid)
        self.cols["text"].append(
            make_text(d, topic_obj or self.topics[self.t_index[topic_name]], item))
        self.cols["ts"].append(t_ns)
        self.cols["item_id"].append(item.item_id)


def _segment_and_plan(p: _Plan, role: str, label0: str, w: int, camping: bool):
    """A user's planted segment in window ``w`` and the topic plan of its events there
    (a topic name, or ``"alternate"`` between the two outdoor topics)."""
    if role == "split":
        if w < p.split_window:
            return _OUTDOOR_LABEL, "alternate"
        seg = _OUTDOOR[0] if camping else _OUTDOOR[1]
        return seg, seg
    if role == "merge":
        seg = _MERGE_FROM if w < p.merge_window else _MERGE_INTO
        return seg, seg
    return label0, label0


def _write_events(p: _Plan, role_of: np.ndarray, goes_camping: np.ndarray,
                  rng: np.random.Generator, out: _EventWriter) -> list[tuple[int, str, str]]:
    """Every user's events, window by window while the user is active; returns the truth
    rows ``(window, user_id, segment)``."""
    drift = _drift_schedule(p)
    width = max(4, len(str(p.n_users)))
    user_ids = [f"u{i:0{width}d}" for i in range(1, p.n_users + 1)]
    truth_rows: list[tuple[int, str, str]] = []
    for u in range(p.n_users):
        label0, role, _ = _CAST[role_of[u]]
        for w in range(p.n_windows):
            if role == "vanish" and w >= p.vanish_window:
                break
            if role == "appear" and w < p.appear_window:
                continue
            seg, plan = _segment_and_plan(p, role, label0, w, goes_camping[u])
            truth_rows.append((w, user_ids[u], seg))
            _window_events(p, out, rng, user_ids[u], w, plan,
                           drift.get(w) if role == "drift" else None)
    return truth_rows


def _window_events(p: _Plan, out: _EventWriter, rng: np.random.Generator, uid: str, w: int,
                   plan: str, drift: tuple[Topic, float] | None) -> None:
    """One user's events in window ``w``: times uniform in the window, topics after ``plan``
    (``drift``: the blended vocabulary of the drifting segment), noise after the first."""
    win_s = p.window_days * 86400
    n = int(rng.integers(p.lo, p.hi + 1))
    offs = np.minimum(event_seconds(rng, 0, win_s, n), win_s - 1)
    first_outdoor = int(rng.integers(2))
    d = out.d
    for j in range(n):
        t_ns = p.t0.value + (w * win_s + int(offs[j])) * 1_000_000_000
        if j > 0 and d.u() < p.noise_rate:
            out.emit(uid, out.topics[int(d.u() * len(out.topics))].name, t_ns)
        elif plan == "alternate":
            out.emit(uid, _OUTDOOR[(j + first_outdoor) % 2], t_ns)
        elif drift is not None:
            out.emit(uid, _DRIFT_FROM, t_ns, drift[0], _DRIFT_TO, drift[1])
        else:
            out.emit(uid, plan, t_ns)


def _truth_frame(truth_rows: list[tuple[int, str, str]]) -> pd.DataFrame:
    """The truth table ``window, user_id, segment`` sorted by window then user."""
    truth = pd.DataFrame(truth_rows, columns=["window", "user_id", "segment"])
    truth["window"] = truth["window"].astype(np.int32)
    truth["user_id"] = truth["user_id"].astype("str")
    return truth.sort_values(["window", "user_id"], ignore_index=True)


def _lifecycle_frame(p: _Plan) -> pd.DataFrame:
    """The planted lifecycle events, sorted by window (drifts first within a window)."""
    life = [(w, "drift", (_DRIFT_FROM,), (_DRIFT_FROM,),
             f"{_DRIFT_FROM} vocabulary {round(100 * s)}% {_DRIFT_TO}")
            for w, s in zip(p.drift_windows, p.drift_shares)]
    life += [
        (p.split_window, "split", (_OUTDOOR_LABEL,), tuple(sorted(_OUTDOOR)),
         f"{_OUTDOOR_LABEL} users split into its two topics"),
        (p.merge_window, "merge", tuple(sorted((_MERGE_INTO, _MERGE_FROM))), (_MERGE_INTO,),
         f"{_MERGE_FROM} users move to {_MERGE_INTO}"),
        (p.appear_window, "appear", (), (_APPEAR,), f"new {_APPEAR} users arrive"),
        (p.vanish_window, "vanish", (_VANISH,), (), f"{_VANISH} users stop"),
    ]
    lifecycle = pd.DataFrame(life, columns=["window", "event", "segments_from", "segments_to",
                                            "detail"])
    lifecycle["window"] = lifecycle["window"].astype(np.int32)
    return lifecycle.sort_values("window", kind="stable", ignore_index=True)


def _scenario(p: _Plan, cols: dict[str, list], truth_rows: list, items: list) -> PlantedScenario:
    """The :class:`PlantedScenario` of the written events, truth rows and catalogue."""
    events = events_frame(cols["user_id"], cols["text"], cols["ts"], cols["item_id"])
    events = events.sort_values(["user_id", "ts"], kind="stable", ignore_index=True)
    flat, items_df = items_frame(items)
    edges = pd.DatetimeIndex([p.t0 + pd.Timedelta(days=p.window_days * w)
                              for w in range(p.n_windows + 1)]).as_unit("ns")
    item_topic = pd.Series([it.topic for it in flat], name="topic", dtype="str",
                           index=pd.Index(items_df["item_id"], name="item_id"))
    return PlantedScenario(events=events, window_edges=edges, freq=f"{p.window_days}D",
                           truth=_truth_frame(truth_rows), lifecycle=_lifecycle_frame(p),
                           items=items_df, item_topic=item_topic)


# ------------------------------------------------------------------------------- scoring

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
    _check_tracked(assignments, lifecycle)
    ari, mapping = _snapshot_scores(scenario, assignments)
    planted = [(int(r.window), r.event, tuple(r.segments_from), tuple(r.segments_to))
               for r in scenario.lifecycle.itertuples()]
    detected = _detected_events(lifecycle, mapping)
    used, hit = _match_events(planted, detected)
    return {
        "ari": ari, "ari_min": float(min(ari)),
        "precision": sum(hit) / len(detected) if detected else float("nan"),
        "recall": sum(used) / len(planted) if planted else float("nan"),
        "per_kind": _per_kind(planted, detected, used, hit),
        "matched": [_describe(p) for u, p in zip(used, planted) if u],
        "missed": [_describe(p) for u, p in zip(used, planted) if not u],
        "spurious": [_describe(d) for h, d in zip(hit, detected) if not h],
    }


def _check_tracked(assignments, lifecycle) -> None:
    """Both tracker tables are DataFrames with the columns :func:`evaluate_tracking` reads."""
    for name, df, cols in (("assignments", assignments, ("snapshot", "user_id", "segment_id")),
                           ("lifecycle", lifecycle,
                            ("snapshot", "event", "segments_from", "segments_to"))):
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{name} is missing column(s) {missing}; it has {list(df.columns)}")


def _snapshot_scores(scenario: PlantedScenario, assignments: pd.DataFrame):
    """Per window: the adjusted Rand index of the tracked ids against the truth (missing users
    as singletons) and the map tracked id -> planted label."""
    from sklearn.metrics import adjusted_rand_score

    ari, mapping = [], []
    for w in range(scenario.n_windows):
        truth = scenario.truth_labels(w)
        a = assignments[assignments["snapshot"] == w]
        mapping.append(_best_labels(a, truth))
        seg = pd.Series(a["segment_id"].to_numpy(), index=a["user_id"].astype(str).to_numpy())
        pred = seg.reindex(truth.index)
        missing = pred.isna().to_numpy()
        pred = pred.to_numpy(dtype=object)
        pred[missing] = [f"missing-{i}" for i in range(int(missing.sum()))]
        ari.append(float(adjusted_rand_score(truth.to_numpy(), pred.astype(str))))
    return ari, mapping


def _detected_events(lifecycle: pd.DataFrame, mapping: list[dict]) -> list[tuple]:
    """Each tracked event as ``(snapshot, kind, labels from, labels to)`` in planted labels
    (``segments_from`` mapped at the previous snapshot, ``segments_to`` at its own)."""
    detected = []
    for r in lifecycle.itertuples():
        t = int(r.snapshot)
        detected.append((t, r.event, _labels_of(mapping, r.segments_from, t - 1),
                         _labels_of(mapping, r.segments_to, t)))
    return detected


def _labels_of(mapping: list[dict], ids, w: int):
    """The sorted planted labels of tracked ``ids`` at window ``w`` (None outside the windows)."""
    if w < 0 or w >= len(mapping):
        return None
    return tuple(sorted({str(mapping[w].get(int(i), f"unmapped-{int(i)}")) for i in ids}))


def _match_events(planted: list, detected: list) -> tuple[list[bool], list[bool]]:
    """Greedy one-to-one matching in detection order: (planted matched, detection matched)."""
    used = [False] * len(planted)
    hit = [False] * len(detected)
    for d_i, d in enumerate(detected):
        for p_i, p in enumerate(planted):
            if not used[p_i] and d == p:
                used[p_i] = hit[d_i] = True
                break
    return used, hit


def _per_kind(planted: list, detected: list, used: list, hit: list) -> dict:
    """Precision, recall and counts per event kind (NaN where nothing to divide by)."""
    per_kind = {}
    for kind in EVENT_KINDS:
        n_p = sum(p[1] == kind for p in planted)
        n_d = sum(d[1] == kind for d in detected)
        tp_p = sum(u for u, p in zip(used, planted) if p[1] == kind)
        tp_d = sum(h for h, d in zip(hit, detected) if d[1] == kind)
        per_kind[kind] = {"precision": tp_d / n_d if n_d else float("nan"),
                          "recall": tp_p / n_p if n_p else float("nan"),
                          "n_planted": n_p, "n_detected": n_d}
    return per_kind


def _describe(e: tuple) -> str:
    """One lifecycle event as ``window W kind: [from] -> [to]``."""
    return f"window {e[0]} {e[1]}: {list(e[2] or ())} -> {list(e[3] or ())}"
