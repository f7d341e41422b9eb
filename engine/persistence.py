"""Save and load a fitted InterestEngine: safetensors for arrays, Parquet for ids, JSON for the rest.

Nothing is pickled: every array goes through safetensors, ids through Arrow (their dtype is
kept), and settings/labels through JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

FORMAT_VERSION = 1
_ARRAYS = ("user_vectors_", "user_log2_weight_", "item_vectors_", "segments_",
           "segment_centroids_", "segment_soft_")
#: State that only partial_fit needs; a save without it loads but cannot partial_fit.
_INCREMENTAL = ("user_mean_", "item_event_sum_", "item_event_weight_")
#: multi_interest=True only.
_INTERESTS = ("interest_offsets_", "interest_vectors_", "interest_importance_", "interest_sizes_")
_INTER_PREFIX = "interactions."
_REC_PREFIX = "recommender."


def _write_ids(index: pd.Index, path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"id": pd.Series(index, dtype=index.dtype)}), path)


def _read_ids(path: Path) -> pd.Index:
    import pyarrow.parquet as pq
    return pd.Index(pq.read_table(path).column("id").to_pandas()).rename(None)


def encoder_spec(encoder) -> dict | None:
    if encoder is None:
        return None
    return {"model": str(getattr(encoder, "model_path", "")) or None,
            "is_default_model": bool(getattr(encoder, "is_default_model", False)),
            "dtype": str(getattr(encoder, "dtype", "")),
            "max_length": int(getattr(encoder, "max_length", 256)),
            "pooling": getattr(encoder, "pooling", None)}


def save_engine(engine, path: Path) -> Path:
    from safetensors.numpy import save_file

    from . import __version__

    path.mkdir(parents=True, exist_ok=True)
    tensors = {name: np.ascontiguousarray(getattr(engine, name)) for name in _ARRAYS}
    tensors["item_from_items"] = np.ascontiguousarray(engine.item_vector_source_ == "items")
    for name in _INCREMENTAL + _INTERESTS:
        if hasattr(engine, name):
            tensors[name] = np.ascontiguousarray(getattr(engine, name))
    for key, arr in getattr(engine, "interactions_", {}).items():
        tensors[_INTER_PREFIX + key] = np.ascontiguousarray(arr)
    for key, arr in engine.recommender_.state_dict().items():
        tensors[_REC_PREFIX + key] = np.ascontiguousarray(arr)
    # the same id goes into the arrays file and meta.json: load() refuses a mix of two saves
    save_id = uuid.uuid4().hex
    meta = {
        "format": "interestflow.InterestEngine",
        "save_id": save_id,
        "format_version": FORMAT_VERSION,
        "interestflow_version": __version__,
        "params": engine.get_params(),
        "n_segments_": int(engine.n_segments_),
        "reference_time_": float(engine.reference_time_),
        "n_events_": int(engine.n_events_),
        "segment_keywords_": {str(k): v for k, v in engine.segment_keywords_.items()},
        "silhouette_by_k_": {str(k): v for k, v in engine.silhouette_by_k_.items()},
        # partial_fit's segment drift: now and at the last segment fit (absent in older saves)
        "segment_distance_": getattr(engine, "segment_distance_", None),
        "segment_distance_fit_": getattr(engine, "segment_distance_fit_", None),
        "recommender_config": engine.recommender_.config_dict(),
        "encoder": encoder_spec(engine.encoder),
    }
    # write into a temp dir beside the target, then move files in: a crash never leaves a
    # half-written engine behind under the final names
    with tempfile.TemporaryDirectory(dir=path, prefix=".tmp-") as tmp:
        tmp = Path(tmp)
        save_file(tensors, str(tmp / "arrays.safetensors"), metadata={"save_id": save_id})
        _write_ids(engine.user_ids_, tmp / "ids_users.parquet")
        _write_ids(engine.item_ids_, tmp / "ids_items.parquet")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        for name in ("arrays.safetensors", "ids_users.parquet", "ids_items.parquet", "meta.json"):
            os.replace(tmp / name, path / name)
    return path


def load_engine(cls, path: Path, *, encoder=None):
    from safetensors.numpy import load_file

    from .recommend import Recommender

    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise ValueError(f"path={str(path)!r} does not hold a saved InterestEngine "
                         "(meta.json is missing)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != "interestflow.InterestEngine":
        raise ValueError(f"{meta_path} is not an interestflow.InterestEngine save")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{meta_path} has format_version {meta['format_version']}; this "
                         f"interestflow reads up to {FORMAT_VERSION}: upgrade interestflow")
    from safetensors import safe_open

    with safe_open(str(path / "arrays.safetensors"), framework="numpy") as fh:
        arrays_id = (fh.metadata() or {}).get("save_id")
    if arrays_id != meta.get("save_id"):
        raise ValueError(f"{path}: arrays.safetensors and meta.json come from different saves "
                         "(an interrupted overwrite?); save the engine again")
    tensors = load_file(str(path / "arrays.safetensors"))
    engine = cls(encoder=encoder, **meta["params"])
    for name in _ARRAYS:
        setattr(engine, name, tensors[name])
    engine.item_vector_source_ = np.where(tensors["item_from_items"], "items", "events")
    for name in _INCREMENTAL + _INTERESTS:
        if name in tensors:
            setattr(engine, name, tensors[name])
    inter = {k[len(_INTER_PREFIX):]: v for k, v in tensors.items() if k.startswith(_INTER_PREFIX)}
    if inter:
        engine.interactions_ = inter
    engine.user_ids_ = _read_ids(path / "ids_users.parquet")
    engine.item_ids_ = _read_ids(path / "ids_items.parquet")
    engine.n_segments_ = int(meta["n_segments_"])
    engine.reference_time_ = float(meta["reference_time_"])
    engine.n_events_ = int(meta["n_events_"])
    engine.segment_keywords_ = {int(k): [tuple(x) for x in v]
                                for k, v in meta["segment_keywords_"].items()}
    engine.silhouette_by_k_ = {int(k): v for k, v in meta["silhouette_by_k_"].items()}
    engine.segment_distance_ = meta.get("segment_distance_")
    engine.segment_distance_fit_ = meta.get("segment_distance_fit_")
    rec_state = {k[len(_REC_PREFIX):]: v for k, v in tensors.items() if k.startswith(_REC_PREFIX)}
    engine.recommender_ = Recommender.from_state(meta["recommender_config"], rec_state)
    engine.encoder_spec_ = meta.get("encoder")
    return engine
