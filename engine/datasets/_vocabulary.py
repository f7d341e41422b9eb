"""The generators' vocabulary, read once from ``vocabulary.json`` (shipped beside this module).

Per-topic words (:class:`Topic`, :data:`TOPICS` in catalogue order), the generic review language
every topic shares and the phrase templates of each event kind, all as tuples: the generators
pick entries by position, so the order in the file is part of every seeded data set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from importlib import resources

__all__ = ["Topic", "TOPICS", "TOPIC_NAMES", "OPINIONS", "PRAISE", "TIMES", "PEOPLE", "FILLERS",
           "PRICES", "YEARS", "STARS", "STARS_LOW", "REVIEW_SENTENCES", "QUERIES", "POSTS",
           "RATINGS", "ITEM_DESCRIPTIONS"]


@dataclass(frozen=True)
class Topic:
    """One catalogue topic: the words its items and events are written with."""

    name: str
    brands: tuple[str, ...]
    models: tuple[str, ...]
    products: tuple[str, ...]
    adjectives: tuple[str, ...]
    attributes: tuple[str, ...]
    features: tuple[str, ...]
    purposes: tuple[str, ...]
    experiences: tuple[str, ...]
    complaints: tuple[str, ...]
    questions: tuple[str, ...]
    # How an item is named from (brand, model, product); books are "title format" with the
    # author given in the description instead.
    item_name: str = "{brand} {model} {product}"


def _load() -> dict:
    """The parsed ``vocabulary.json`` of this package."""
    text = resources.files(__package__).joinpath("vocabulary.json").read_text(encoding="utf-8")
    return json.loads(text)


def _topic(entry: dict) -> Topic:
    """A :class:`Topic` from one entry of the file's ``topics`` list (lists become tuples)."""
    values = {f.name: entry[f.name] for f in fields(Topic)}
    return Topic(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


_DATA = _load()

TOPICS: tuple[Topic, ...] = tuple(_topic(e) for e in _DATA["topics"])
#: Names of every available topic, in the order ``make_demo_events`` takes them.
TOPIC_NAMES: tuple[str, ...] = tuple(t.name for t in TOPICS)

# Generic review language shared by all topics.
OPINIONS: tuple[str, ...] = tuple(_DATA["generic"]["opinions"])
PRAISE: tuple[str, ...] = tuple(_DATA["generic"]["praise"])
TIMES: tuple[str, ...] = tuple(_DATA["generic"]["times"])
PEOPLE: tuple[str, ...] = tuple(_DATA["generic"]["people"])
FILLERS: tuple[str, ...] = tuple(_DATA["generic"]["fillers"])
PRICES: tuple[str, ...] = tuple(_DATA["generic"]["prices"])
YEARS: tuple[str, ...] = tuple(_DATA["generic"]["years"])
STARS: tuple[str, ...] = tuple(_DATA["generic"]["stars"])
STARS_LOW: tuple[str, ...] = tuple(_DATA["generic"]["stars_low"])

# Phrase templates (the slots are listed in the file's "about").
REVIEW_SENTENCES: tuple[str, ...] = tuple(_DATA["templates"]["review_sentences"])
QUERIES: tuple[str, ...] = tuple(_DATA["templates"]["queries"])
POSTS: tuple[str, ...] = tuple(_DATA["templates"]["posts"])
RATINGS: tuple[str, ...] = tuple(_DATA["templates"]["ratings"])
ITEM_DESCRIPTIONS: tuple[str, ...] = tuple(_DATA["templates"]["item_descriptions"])

del _DATA
