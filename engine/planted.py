"""Moved to :mod:`interestflow.datasets` (the planted tracking scenario is
:mod:`interestflow.datasets.planted`).

This module re-exports its public names so that ``from interestflow.planted import
make_planted_scenario`` keeps working.
"""

from __future__ import annotations

from .datasets.planted import EVENT_KINDS, PlantedScenario, evaluate_tracking, make_planted_scenario

__all__ = ["PlantedScenario", "make_planted_scenario", "evaluate_tracking", "EVENT_KINDS"]
