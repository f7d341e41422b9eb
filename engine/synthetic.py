"""Moved to :mod:`interestflow.datasets`: the demo event generator is
:mod:`interestflow.datasets.demo`, the temporal split :mod:`interestflow.datasets.split`.

This module re-exports their public names so that ``from interestflow.synthetic import
make_demo_events`` keeps working.
"""

from __future__ import annotations

from .datasets.demo import TOPIC_NAMES, DemoData, make_demo_events
from .datasets.split import train_test_split_by_time

__all__ = ["DemoData", "TOPIC_NAMES", "make_demo_events", "train_test_split_by_time"]
