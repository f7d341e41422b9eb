"""interestflow: LLM-based user-interest clustering for recommender systems.

Public API (imported lazily, so that ``import interestflow`` stays light and never imports
triton, cupy, cuml, faiss or numba, nor initialises CUDA)::

    from interestflow import InterestEngine

Estimators and models
    ``InterestEngine``     texts -> user vectors, segments, recommendations (the main object)
    ``Encoder``            a BERT-family text encoder (default: packaged all-MiniLM-L6-v2)
    ``KMeans``             K-means on the best backend (scikit-learn compatible)
    ``Recommender``, ``RecommendConfig``  the fusion recommender and its settings
    ``ItemIndex``          exact / IVF cosine top-k over item vectors
    ``SegmentTracker``     segments over time windows: stable ids, lifecycle events, trends
Functions
    ``decayed_user_means``  time-decayed weighted mean vector per user
    ``user_interests``, ``multi_interest_topk``  several interests per user, and
                            recommending from them (``recommend_multi``: its deprecated
                            form, in the old ``(items, scores)`` order)
    ``cluster_users``       one snapshot's segments (as the tracker clusters)
    ``segment_keywords``    class-based TF-IDF keywords per segment
    ``batch_score``         score every user of an event table, in chunks, resumably
                            (``interestflow score``; ``score`` is its deprecated name)
    ``write_report``        the HTML report of a run folder
Results
    ``TopK``               ``(scores, rows)``: what every top-k returns (``cosine_topk``,
                            ``ItemIndex.search``, ``Recommender.topk``, ``Ranker.topk``,
                            ``multi_interest_topk``), best first, as ``torch.topk`` and FAISS
Data
    ``read_table``, ``validate_events``  read and check event tables
    ``make_demo_events``, ``make_planted_scenario``  generated data (demo; planted dynamics)
Errors
    ``NotFittedError``      using an object before ``fit`` (scikit-learn's, also a
                            ``RuntimeError``)
    ``ModelLoadError``      a saved model folder that cannot be loaded
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
    "make_demo_events": "interestflow.datasets",
    "segment_keywords": "interestflow.labels",
    "validate_events": "interestflow.validation",
    "read_table": "interestflow.io",
    "user_interests": "interestflow.multi_interest",
    "multi_interest_topk": "interestflow.multi_interest",
    "recommend_multi": "interestflow.multi_interest",
    "write_report": "interestflow.report",
    "SegmentTracker": "interestflow.tracking",
    "cluster_users": "interestflow.tracking",
    "make_planted_scenario": "interestflow.datasets",
    "ItemIndex": "interestflow.retrieval",
    "batch_score": "interestflow.batch",
    "NotFittedError": "interestflow._utils",
    "TopK": "interestflow._utils",
}
_RENAMED = {"score": "batch_score"}  # old top-level name -> new (same object)

__all__ = ["__version__", *_LAZY]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str):
    if name in _RENAMED:
        import warnings

        warnings.warn(f"interestflow.{name} is deprecated; use interestflow.{_RENAMED[name]} "
                      "(the same function)", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("interestflow.batch"), "score")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'interestflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), "score" if name == "batch_score" else name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
