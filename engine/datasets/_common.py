"""What the demo and the planted generators share: sequential random draws, the item catalogue,
event texts composed from the vocabulary's phrase templates, argument checks and the frames.

Texts are composed from many phrase templates whose slots are filled from per-topic
vocabularies (brands, models, product types, attributes, purposes, experiences, complaints,
questions) mixed with generic review language, so no two users read alike.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .._utils import check_int
from ._vocabulary import (
    FILLERS,
    ITEM_DESCRIPTIONS,
    OPINIONS,
    PEOPLE,
    POSTS,
    PRAISE,
    PRICES,
    QUERIES,
    RATINGS,
    REVIEW_SENTENCES,
    STARS,
    STARS_LOW,
    TIMES,
    YEARS,
    Topic,
)

__all__ = ["POPULARITY_EXPONENT", "Draws", "Item", "make_items", "popularity_cum", "make_text",
           "parse_start", "check_count_range", "check_share", "events_frame", "items_frame",
           "event_seconds"]

# Event kinds and their shares: reviews, search queries, posts/questions, rating remarks.
_KINDS = (REVIEW_SENTENCES, QUERIES, POSTS, RATINGS)
_KIND_CUM = np.cumsum([0.40, 0.25, 0.20, 0.15])
_N_SENT_CUM = np.cumsum([0.30, 0.35, 0.25, 0.10])   # 1..4 review sentences

_MAX_REVIEW_WORDS = 60
_ITEMS_PER_TOPIC = (15, 25)
POPULARITY_EXPONENT = 0.8   # Zipf-like popularity of items within a topic


class Draws:
    """Sequential uniform draws from a Generator, pre-drawn in chunks (fast in Python loops)."""

    __slots__ = ("_rng", "_buf", "_pos")

    def __init__(self, rng: np.random.Generator, chunk: int = 1 << 16):
        self._rng = rng
        self._buf = rng.random(chunk).tolist()
        self._pos = 0

    def u(self) -> float:
        if self._pos == len(self._buf):
            self._buf = self._rng.random(len(self._buf)).tolist()
            self._pos = 0
        x = self._buf[self._pos]
        self._pos += 1
        return x

    def pick(self, seq):
        return seq[int(self.u() * len(seq))]

    def pick_cum(self, cum) -> int:
        return int(np.searchsorted(cum, self.u() * cum[-1], side="right"))


def _cap(s: str) -> str:
    """``s`` with its first letter in upper case."""
    return s[:1].upper() + s[1:]


_SENTENCE_START = re.compile(r"([.?!]\s+)([a-z])")
_ARTICLE = re.compile(r"\b([aA]) (?!one\b)(?=[aeiouAEIOU])")


def _cap_sentences(s: str) -> str:
    """``s`` with "a" before a vowel made "an" and every sentence starting in upper case."""
    s = _ARTICLE.sub(lambda m: m.group(1) + "n ", s)
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), _cap(s))


class Item:
    """One catalogue item: its id, topic name, name parts, display name and description."""

    __slots__ = ("item_id", "topic", "brand", "model", "product", "name", "text")

    def __init__(self, item_id, topic, brand, model, product, name, text):
        self.item_id, self.topic, self.brand, self.model = item_id, topic, brand, model
        self.product, self.name, self.text = product, name, text


def _choose_parts(topics: list[Topic], rng: np.random.Generator) -> list[list[tuple]]:
    """Per topic, 15-25 distinct (brand, model, product) combinations."""
    lo, hi = _ITEMS_PER_TOPIC
    per_topic: list[list[tuple]] = []
    for topic in topics:
        n = int(rng.integers(lo, hi + 1))
        grid = [(b, m, p) for b in topic.brands for m in topic.models for p in topic.products]
        chosen = rng.choice(len(grid), size=n, replace=False)
        per_topic.append([grid[i] for i in chosen])
    return per_topic


def _describe(d: Draws, topic: Topic, brand: str, model: str, product: str) -> tuple[str, str]:
    """An item's name and its product description drawn from the description templates."""
    name = topic.item_name.format(brand=brand, model=model, product=product)
    adj = d.pick(topic.adjectives)
    adj2 = d.pick([a for a in topic.adjectives if a != adj])
    feature = d.pick(topic.features)
    feature2 = d.pick([f for f in topic.features if f != feature])
    text = d.pick(ITEM_DESCRIPTIONS).format(
        name=name, adj=adj, adj2=adj2, adj_cap=_cap(adj), product=product,
        feature=feature, feature2=feature2, purpose=d.pick(topic.purposes),
        brand=brand)
    if topic.item_name == "{model} {product}":
        text += f" By {brand}."
    return name, text


def make_items(topics: list[Topic], rng: np.random.Generator) -> list[list[Item]]:
    """The catalogue: per topic, its items (ids ``"i0001"``... dealt at random over topics)."""
    d = Draws(rng, chunk=4096)
    per_topic = _choose_parts(topics, rng)
    total = sum(len(x) for x in per_topic)
    # Ids carry no information about the topic: a random permutation assigns them.
    ids = [f"i{k:04d}" for k in rng.permutation(total) + 1]
    out: list[list[Item]] = []
    k = 0
    for topic, parts in zip(topics, per_topic):
        items = []
        for brand, model, product in parts:
            name, text = _describe(d, topic, brand, model, product)
            items.append(Item(ids[k], topic.name, brand, model, product, _cap(name), text))
            k += 1
        out.append(items)
    return out


def popularity_cum(items: list[list[Item]]) -> list[np.ndarray]:
    """Per topic, the cumulative Zipf-like popularity of its items (for ``Draws.pick_cum``)."""
    return [np.cumsum(1.0 / np.arange(1, len(its) + 1) ** POPULARITY_EXPONENT) for its in items]


def _slots(d: Draws, topic: Topic, item: Item) -> dict:
    """Fresh values for every template slot, about ``item`` and its topic."""
    other = d.pick(topic.brands), d.pick(topic.models), d.pick(topic.products)
    attribute = d.pick(topic.attributes)
    opinion = d.pick(OPINIONS)
    praise = d.pick(PRAISE)
    return {
        "item": item.name, "brand": item.brand, "model": item.model, "product": item.product,
        "brand2": other[0] if other[0] != item.brand else d.pick(topic.brands),
        "model2": other[1], "product2": other[2],
        "adj": d.pick(topic.adjectives), "adj2": d.pick(topic.adjectives),
        "attribute": attribute,
        "attribute2": d.pick([a for a in topic.attributes if a != attribute]),
        "feature": d.pick(topic.features), "purpose": d.pick(topic.purposes),
        "experience": d.pick(topic.experiences), "complaint": d.pick(topic.complaints),
        "question": d.pick(topic.questions),
        "opinion": opinion, "opinion2": d.pick([o for o in OPINIONS if o != opinion]),
        "praise": praise, "praise2": d.pick(PRAISE).lower(),
        "time": d.pick(TIMES), "person": d.pick(PEOPLE), "price": d.pick(PRICES),
        "year": d.pick(YEARS), "stars": d.pick(STARS), "stars_low": d.pick(STARS_LOW),
        "n": str(1 + int(d.u() * 60)), "filler": d.pick(FILLERS),
    }


def _review(d: Draws, topic: Topic, item: Item) -> str:
    """A review: 1-4 sentences, fresh slots each, optional filler and star prefix."""
    n_sent = d.pick_cum(_N_SENT_CUM) + 1
    idx: list[int] = []
    while len(idx) < n_sent:
        j = int(d.u() * len(REVIEW_SENTENCES))
        if j not in idx:
            idx.append(j)
    parts = [REVIEW_SENTENCES[j].format(**_slots(d, topic, item)) for j in idx]
    if d.u() < 0.4:
        parts.insert(int(d.u() * (len(parts) + 1)), d.pick(FILLERS))
    if d.u() < 0.15:
        parts.insert(0, f"{d.pick(STARS)} stars.")
    # Keep reviews to about 60 words, as most short-form reviews are.
    while len(parts) > 1 and sum(len(p.split()) for p in parts) > _MAX_REVIEW_WORDS:
        parts.pop()
    return _cap_sentences(" ".join(parts))


def make_text(d: Draws, topic: Topic, item: Item) -> str:
    """One event text about ``item``: a review, a search query, a post or a rating remark."""
    kind = d.pick_cum(_KIND_CUM)
    if kind == 0:
        return _review(d, topic, item)
    slots = _slots(d, topic, item)
    if kind == 1:  # search query: lower case, no punctuation
        return d.pick(QUERIES).format(**slots).lower()
    return _cap_sentences(d.pick(_KINDS[kind]).format(**slots))


def parse_start(start) -> pd.Timestamp:
    """``start`` as a UTC timestamp (naive values are UTC), or a ``ValueError`` naming it."""
    try:
        ts = pd.Timestamp(start)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"start={start!r} is not a date; pass an ISO date string such as '2024-01-01' or "
            "a datetime") from exc
    if ts is pd.NaT:
        raise ValueError(f"start={start!r} is not a date; pass an ISO date such as '2024-01-01'")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def check_count_range(name: str, value) -> tuple[int, int]:
    """``value`` as an inclusive ``(min, max)`` pair of ints >= 1, or a named error."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a (min, max) pair of ints, got {value!r}")
    lo = check_int(f"{name}[0]", value[0], 1)
    hi = check_int(f"{name}[1]", value[1], 1)
    if hi < lo:
        raise ValueError(f"{name}={tuple(value)} has max < min; pass (min, max) with min <= max")
    return lo, hi


def check_share(name: str, value) -> float:
    """``value`` as a float in [0, 1], or a named error."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}={value} is invalid; pass 0 <= {name} <= 1")
    return float(value)


def events_frame(user_ids: list, texts: list, ts_ns: list, item_ids: list) -> pd.DataFrame:
    """The events table: ``user_id, text, ts (datetime64[ns, UTC]), item_id, weight (1.0)``."""
    return pd.DataFrame({
        "user_id": pd.array(user_ids, dtype="str"),
        "text": pd.array(texts, dtype="str"),
        "ts": pd.to_datetime(np.asarray(ts_ns, dtype=np.int64), unit="ns", utc=True)
        .astype("datetime64[ns, UTC]"),
        "item_id": pd.array(item_ids, dtype="str"),
        "weight": np.ones(len(user_ids), dtype=np.float64),
    })


def items_frame(items: list[list[Item]]) -> tuple[list[Item], pd.DataFrame]:
    """Every item sorted by id, and the items table ``item_id, text`` in that order."""
    flat = sorted((it for its in items for it in its), key=lambda it: it.item_id)
    return flat, pd.DataFrame({
        "item_id": pd.array([it.item_id for it in flat], dtype="str"),
        "text": pd.array([it.text for it in flat], dtype="str"),
    })


def event_seconds(rng: np.random.Generator, low, high, n: int) -> np.ndarray:
    """``n`` whole-second offsets drawn uniformly in ``[low, high)``, sorted and strictly
    increasing (ties bumped by one second), as int64."""
    offs = np.sort(rng.uniform(low, high, size=n)).astype(np.int64)
    steps = np.arange(n, dtype=np.int64)
    return np.maximum.accumulate(offs - steps) + steps
