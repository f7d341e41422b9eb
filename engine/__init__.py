"""interestflow: LLM-based user-interest clustering for recommender systems.

Public API (imported lazily so that ``import interestflow`` stays light and never imports
triton, cupy, cuml, faiss or numba, nor initialises CUDA)::

    from interestflow import Encoder, KMeans, InterestEngine
"""

from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"

_LAZY = {
    "Encoder": "interestflow.encoder",
    "KMeans": "interestflow.kmeans",
    "InterestEngine": "interestflow.engine",
    "ModelLoadError": "interestflow.persistence",
    "decayed_user_means": "interestflow.interests",
    "Recommender": "interestflow.recommend",
    "RecommendConfig": "interestflow.recommend",
    "make_demo_events": "interestflow.synthetic",
    "segment_keywords": "interestflow.labels",
    "validate_events": "interestflow.validation",
    "read_table": "interestflow.io",
    "user_interests": "interestflow.multi_interest",
    "recommend_multi": "interestflow.multi_interest",
    "write_report": "interestflow.report",
    "SegmentTracker": "interestflow.dynamics",
    "cluster_users": "interestflow.dynamics",
    "make_planted_scenario": "interestflow.planted",
    "ItemIndex": "interestflow.retrieval",
    "score": "interestflow.batch",
}

__all__ = ["__version__", *_LAZY]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'interestflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
