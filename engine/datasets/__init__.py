"""Data generators: synthetic user events with a planted ground truth, for ``interestflow
demo``, the tests and the benchmarks (no real data is read here).

Generators
----------
:func:`make_demo_events` (:mod:`.demo`)
    Reviews, search queries, forum posts and rating remarks about consumer-product topics,
    with a planted current interest per user (some users drift to a second topic); returns
    :class:`DemoData`. :data:`TOPIC_NAMES` lists the topics it can draw from.
:func:`make_planted_scenario` (:mod:`.planted`)
    Events over consecutive time windows whose user segments split, merge, appear, vanish and
    drift on cue; returns :class:`PlantedScenario` with the truth a tracker should recover.
    :func:`evaluate_tracking` scores a tracker's tables against it (:data:`EVENT_KINDS`: the
    lifecycle event kinds).

Also here
---------
:func:`train_test_split_by_time` (:mod:`.split`)
    The temporal hold-out of the evaluation data: per user, the latest events are the test set.

Both generators write their texts from ``vocabulary.json`` (per-topic words and phrase
templates, shipped in this folder); the same ``seed`` gives identical frames.

Examples
--------
>>> from interestflow.datasets import make_demo_events
>>> make_demo_events(20, n_topics=2, random_state=0).events["user_id"].nunique()
20
"""

from __future__ import annotations

from .demo import TOPIC_NAMES, DemoData, make_demo_events
from .planted import EVENT_KINDS, PlantedScenario, evaluate_tracking, make_planted_scenario
from .split import train_test_split_by_time

__all__ = ["make_demo_events", "DemoData", "TOPIC_NAMES", "make_planted_scenario",
           "PlantedScenario", "evaluate_tracking", "EVENT_KINDS", "train_test_split_by_time"]
