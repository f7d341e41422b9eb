"""The demo event generator of ``interestflow demo``, the tests and the benchmarks.

:func:`make_demo_events` writes realistic user activity (reviews, search queries, forum posts,
star-rating remarks) about consumer-product topics, with a *planted* current interest per user
that a time-decayed user vector should recover. Some users drift to a second topic part way
through the period, and about one event in ten is off-topic noise, so that recovering the
planted interest is a real test rather than a lookup.

Everything is built from a :class:`numpy.random.Generator`; the same ``seed`` gives identical
frames. Texts are composed from many phrase templates whose slots are filled from per-topic
vocabularies (``vocabulary.json``) mixed with generic review language, so no two users read
alike.
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
from ._vocabulary import TOPIC_NAMES, TOPICS

__all__ = ["DemoData", "TOPIC_NAMES", "make_demo_events"]

_NOISE_RATE = 0.10       # share of events about a random other topic


@dataclass(frozen=True)
class DemoData:
    """A generated event set with its planted ground truth.

    Attributes
    ----------
    events : pandas.DataFrame
        Columns ``user_id`` (str, ``"u0001"``...), ``text`` (str), ``ts``
        (``datetime64[ns, UTC]``), ``item_id`` (str), ``weight`` (float, 1.0); sorted by
        user then time, timestamps strictly increasing within a user.
    items : pandas.DataFrame
        Columns ``item_id`` (str) and ``text`` (a short product description), sorted by id.
    user_topic : pandas.Series
        Indexed by ``user_id``: the planted *current* topic name (the topic of the user's
        most recent interest, which a time-decayed user vector should recover).
    topic_names : list of str
        The topics used, in catalogue order.
    item_topic : pandas.Series
        Indexed by ``item_id``: the topic name of each item. An event's topic is the topic
        of its item.
    user_initial_topic : pandas.Series
        Indexed by ``user_id``: the topic the user started with (equal to ``user_topic``
        for users who did not drift).
    drifted : pandas.Series
        Indexed by ``user_id``: True for users who switched topic part way through.
    """

    events: pd.DataFrame
    items: pd.DataFrame
    user_topic: pd.Series
    topic_names: list[str]
    item_topic: pd.Series
    user_initial_topic: pd.Series
    drifted: pd.Series


@dataclass(frozen=True)
class _Args:
    """The checked arguments of :func:`make_demo_events`."""

    n_users: int
    n_topics: int
    lo: int              # events per user, inclusive range
    hi: int
    period_s: float      # length of the period in seconds
    n_drift: int         # users who switch topic
    seed: int
    t0: pd.Timestamp     # start of the period (UTC)


@dataclass(frozen=True)
class _Users:
    """Every user's planted interests and activity (arrays of length ``n_users``)."""

    ids: list[str]
    primary: np.ndarray      # topic index the user starts with
    second: np.ndarray       # topic index a drifted user switches to
    drifted: np.ndarray      # bool
    n_events: np.ndarray
    switch_frac: np.ndarray  # share of a drifted user's events before the switch
    win_start: np.ndarray    # the user's active window, seconds into the period
    win_end: np.ndarray


def make_demo_events(
    n_users: int = 400,
    *,
    n_topics: int = 8,
    events_per_user: tuple[int, int] = (8, 20),
    start="2024-01-01",
    days: float = 180,
    drift_fraction: float = 0.25,
    random_state: int = 0,
    seed=None,
) -> DemoData:
    """Generate realistic user events with a planted, partly drifting interest per user.

    Each user has a primary topic (topics are dealt out evenly, then shuffled). A share
    ``drift_fraction`` of users switches to a second topic part way through their history
    (after 40-70% of their events), so their planted current topic is the second one. About
    10% of events, never a user's last one, are off-topic noise about a random other topic.
    Every event references an item of the topic it talks about (popular items are referenced
    more often) and its text is a review, a search query, a forum post/question or a star
    rating remark built from phrase templates (3 to about 60 words).

    Parameters
    ----------
    n_users : int, default 400
        Number of users, ids ``"u0001"``... (zero-padded to at least 4 digits).
    n_topics : int, default 8
        Number of topics, taken in catalogue order from :data:`TOPIC_NAMES` (12 available).
    events_per_user : (int, int), default (8, 20)
        Inclusive range of the number of events per user (uniform). Drifted users get at
        least 2 events.
    start : str or datetime-like, default "2024-01-01"
        Start of the period (naive values are taken as UTC).
    days : float, default 180
        Length of the period; each user is active in a random window inside it.
    drift_fraction : float, default 0.25
        Share of users (rounded) whose interest switches to a second topic. Needs
        ``n_topics >= 2`` when positive.
    random_state : int, default 0
        Seed of the :class:`numpy.random.Generator`; same seed, same data. Items depend on
        the seed and ``n_topics`` only, not on ``n_users``. (``seed``: its deprecated name.)

    Returns
    -------
    DemoData
        ``events`` (n_events rows), ``items``, ``user_topic`` (n_users,), ``topic_names``,
        ``item_topic``, ``user_initial_topic``, ``drifted``.

    Examples
    --------
    >>> from interestflow.datasets import make_demo_events
    >>> data = make_demo_events(50, n_topics=4, random_state=1)
    >>> data.events.columns.tolist()
    ['user_id', 'text', 'ts', 'item_id', 'weight']
    >>> len(data.user_topic)
    50
    """
    check_int("random_state" if seed is None else "seed",
              random_state if seed is None else seed, 0)
    seed = renamed("random_state", random_state, "seed", seed, 0)
    a = _check_args(n_users, n_topics, events_per_user, start, days, drift_fraction, seed)
    topics = list(TOPICS[:a.n_topics])
    item_ss, user_ss, text_ss = np.random.SeedSequence([a.seed, a.n_topics]).spawn(3)
    items = make_items(topics, np.random.default_rng(item_ss))
    rng = np.random.default_rng(user_ss)
    users = _draw_users(a, rng)
    cols = _write_events(a, users, topics, items, rng, Draws(np.random.default_rng(text_ss)))
    return _demo_data(users, topics, items, cols)


def _check_args(n_users, n_topics, events_per_user, start, days, drift_fraction,
                seed) -> _Args:
    """Check :func:`make_demo_events`' arguments (named errors) and derive the drift count."""
    n_users = check_int("n_users", n_users, 1)
    n_topics = check_int("n_topics", n_topics, 1)
    if n_topics > len(TOPICS):
        raise ValueError(
            f"n_topics={n_topics} exceeds the {len(TOPICS)} available topics "
            f"({', '.join(TOPIC_NAMES)}); pass n_topics <= {len(TOPICS)}")
    seed = check_int("seed", seed, 0)
    lo, hi = check_count_range("events_per_user", events_per_user)
    if isinstance(days, bool) or not isinstance(days, (int, float, np.integer, np.floating)):
        raise TypeError(f"days must be a number, got {type(days).__name__} ({days!r})")
    if not (math.isfinite(days) and days > 0):
        raise ValueError(f"days={days} is invalid; pass a finite number of days > 0")
    n_drift = int(math.floor(check_share("drift_fraction", drift_fraction) * n_users + 0.5))
    if n_drift > 0 and n_topics < 2:
        raise ValueError(
            f"drift_fraction={drift_fraction} needs at least two topics to drift between, "
            f"got n_topics={n_topics}; pass n_topics >= 2 or drift_fraction=0")
    if n_drift > 0 and hi < 2:
        raise ValueError(
            f"drift_fraction={drift_fraction} needs users with at least 2 events, got "
            f"events_per_user={tuple(events_per_user)}; raise the maximum or pass drift_fraction=0")
    return _Args(n_users=n_users, n_topics=n_topics, lo=lo, hi=hi,
                 period_s=float(days) * 86400.0, n_drift=n_drift, seed=seed,
                 t0=parse_start(start))


def _draw_users(a: _Args, rng: np.random.Generator) -> _Users:
    """Primary topics dealt evenly then shuffled; drift users, their second topic and switch
    point; each user's number of events and active window."""
    n_users, n_topics = a.n_users, a.n_topics
    primary = rng.permutation(np.arange(n_users) % n_topics)
    drifted = np.zeros(n_users, dtype=bool)
    drifted[rng.choice(n_users, size=a.n_drift, replace=False)] = True
    # The second topic is uniform over the other topics.
    second = (primary + rng.integers(1, max(n_topics, 2), size=n_users)) % n_topics
    n_events = rng.integers(a.lo, a.hi + 1, size=n_users)
    n_events[drifted] = np.maximum(n_events[drifted], 2)
    switch_frac = rng.uniform(0.4, 0.7, size=n_users)
    win_start = rng.uniform(0.0, 0.3, size=n_users) * a.period_s
    win_end = a.period_s - rng.uniform(0.0, 0.2, size=n_users) * a.period_s
    width = max(4, len(str(n_users)))
    return _Users(ids=[f"u{i:0{width}d}" for i in range(1, n_users + 1)], primary=primary,
                  second=second, drifted=drifted, n_events=n_events, switch_frac=switch_frac,
                  win_start=win_start, win_end=win_end)


def _switch_index(users: _Users, u: int, n: int) -> int:
    """Index of user ``u``'s first event about the second topic (``n``: never)."""
    if not users.drifted[u]:
        return n
    return min(max(1, int(round(users.switch_frac[u] * n))), n - 1)


def _write_events(a: _Args, users: _Users, topics: list, items: list, rng: np.random.Generator,
                  d: Draws) -> dict[str, list]:
    """Every user's events in user then time order: the planted (or noise) topic, an item of
    it picked by popularity, a text about that item, a whole-second time in the user's window."""
    pop_cum = popularity_cum(items)
    cols: dict[str, list] = {"user_id": [], "text": [], "ts": [], "item_id": []}
    t0_ns = a.t0.value
    for u in range(a.n_users):
        n = int(users.n_events[u])
        offs = event_seconds(rng, users.win_start[u], users.win_end[u], n)
        k_switch = _switch_index(users, u, n)
        uid = users.ids[u]
        for j in range(n):
            t = int(users.primary[u] if j < k_switch else users.second[u])
            if j < n - 1 and a.n_topics > 1 and d.u() < _NOISE_RATE:
                t = (t + 1 + int(d.u() * (a.n_topics - 1))) % a.n_topics
            item = items[t][d.pick_cum(pop_cum[t])]
            cols["user_id"].append(uid)
            cols["text"].append(make_text(d, topics[t], item))
            cols["item_id"].append(item.item_id)
            cols["ts"].append(t0_ns + int(offs[j]) * 1_000_000_000)
    return cols


def _demo_data(users: _Users, topics: list, items: list, cols: dict[str, list]) -> DemoData:
    """The events, items and ground-truth tables of :class:`DemoData`."""
    events = events_frame(cols["user_id"], cols["text"], cols["ts"], cols["item_id"])
    flat, items_df = items_frame(items)
    names = [t.name for t in topics]
    current = np.where(users.drifted, users.second, users.primary)
    uidx = pd.Index(users.ids, name="user_id", dtype="str")
    return DemoData(
        events=events,
        items=items_df,
        user_topic=pd.Series([names[t] for t in current], index=uidx, name="topic", dtype="str"),
        topic_names=names,
        item_topic=pd.Series([it.topic for it in flat],
                             index=pd.Index([it.item_id for it in flat], name="item_id",
                                            dtype="str"),
                             name="topic", dtype="str"),
        user_initial_topic=pd.Series([names[t] for t in users.primary], index=uidx,
                                     name="topic", dtype="str"),
        drifted=pd.Series(users.drifted, index=uidx, name="drifted"),
    )
