"""The model side of a scoring job: what it needs from a saved InterestEngine, the model's
encoder, the catalogue of items to recommend and its retrieval index, the two stages of a
model with a ranker."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import unit_rows
from ._common import staging_dir
from ._inputs import id_array, id_kind, list_values, open_dataset, resolve_inputs


def read_model(model_dir, *, verify_hashes: bool = True) -> dict:
    """What scoring needs from a saved InterestEngine, without loading its user arrays.

    The folder is checked as InterestEngine.load checks it (persistence.open_saved):
    ModelLoadError names the file at fault. The driver verifies the files' SHA-256; chunk
    processes (``verify_hashes=False``) check everything else and that the save id is the
    driver's, so that each worker does not hash the whole model (user arrays included)."""
    from ..persistence import open_saved

    if not isinstance(model_dir, (str, os.PathLike)):
        raise TypeError(f"model_dir must be a path to a saved InterestEngine, got "
                        f"{type(model_dir).__name__}")
    saved = open_saved(Path(model_dir).resolve(), verify_hashes=verify_hashes)
    centroids = saved.tensor("segment_centroids_")
    params = saved.meta["params"]
    return {"dir": str(saved.path), "save_id": saved.meta["save_id"], "meta": saved.meta,
            "half_life_days": float(params["half_life_days"]),
            "temperature": float(params["segment_temperature"]),
            "centroids": np.ascontiguousarray(centroids, np.float32),
            "dim": saved.dim,
            # InterestEngine.recommend ranks through candidates + ranker when the save has one
            "two_stage": saved.meta.get("ranker") is not None,
            "multi_interest": bool(params.get("multi_interest", False)),
            "n_items": saved.n_items,
            "arrays_bytes": os.path.getsize(saved.arrays_path),
            "candidates_config": saved.meta.get("candidates_config"),
            "ranker_config": (saved.meta.get("ranker") or {}).get("config")}


def _model_encoder(model: dict):
    """The encoder the model was fitted with, rebuilt as InterestEngine.load does."""
    from ..engine import InterestEngine

    meta = model["meta"]
    eng = InterestEngine(**meta["params"])
    eng.encoder_spec_ = meta.get("encoder")
    return eng._get_encoder()


def job_encoder(model: dict, job):
    """The model's encoder with the job's embedding store: ``job.embedding_cache`` when a
    path (it wins), none when False, else the model's store, else one for this job only
    (``OUT/_staging/embeddings.sqlite``, shared by its chunks and processes, removed with
    the staging folder at the end)."""
    enc = _model_encoder(model)
    if job.embedding_cache is False:
        enc.cache, enc._cache_store = None, None
    elif job.embedding_cache is not None:
        enc.cache, enc._cache_store = Path(job.embedding_cache), None
    elif getattr(enc, "cache", None) is None:
        enc.cache = staging_dir(Path(job.out)) / "embeddings.sqlite"
    return enc


# --------------------------------------------------------------------------- catalogue
def build_catalogue(model: dict, items, vector_col, column_map, show) -> dict:
    """Item ids and unit vectors to recommend from: (ids pd.Index, vectors (n_items, dim))."""
    dim = model["dim"]
    if items is None:
        ids, vecs, source = _model_items(model)
    else:
        ids, vecs, source = _table_items(model, items, vector_col, column_map, show)
    if len(ids) == 0:
        raise ValueError("no items to recommend: the model has no items; pass items= (a table "
                         "with item_id and a vector or text column)")
    vecs = np.asarray(vecs, np.float32)
    if vecs.shape[1] != dim:
        raise ValueError(f"item vectors have dimension {vecs.shape[1]} but the model's is "
                         f"{dim}; use vectors from the model's encoder")
    return {"ids": ids, "vectors": np.ascontiguousarray(unit_rows(vecs)), "source": source}


def _model_items(model: dict):
    """(ids, vectors, source) of the model's own items."""
    from safetensors import safe_open

    from ..persistence import read_ids

    with safe_open(str(Path(model["dir"]) / "arrays.safetensors"), framework="numpy") as fh:
        vecs = fh.get_tensor("item_vectors_")
    ids = read_ids(Path(model["dir"]) / "ids_items.parquet")
    return ids, vecs, f"the model's {len(ids)} items"


def _table_items(model: dict, items, vector_col, column_map, show):
    """(ids, vectors, source) of an items table: its vector column, else its encoded texts."""
    files, fmt = resolve_inputs(items, "items")
    id_col = column_map.get("item_id", "item_id")
    text_col = column_map.get("text", "text")
    dset = open_dataset(files, fmt, string_cols=[id_col, text_col])
    names = dset.schema.names
    if id_col not in names:
        raise ValueError(f"items has no column {id_col!r} (item ids); columns present: "
                         f"{names}")
    vcol = vector_col if vector_col in names else ("vector" if "vector" in names else None)
    if vcol is None and text_col not in names:
        raise ValueError(f"items needs a vector column ({vector_col or 'vector'!r}) or a "
                         f"text column ({text_col!r}); columns present: {names}")
    table = dset.to_table(columns=[id_col, vcol or text_col])
    ids = _item_ids(table.column(id_col), id_col)
    if vcol is not None:
        flat, lengths, vnull = list_values(table.column(vcol))
        if vnull.any():
            raise ValueError(f"items column {vcol!r}: missing vector at row "
                             f"{int(np.argmax(vnull))}; expected a list of {model['dim']} "
                             "numbers")
        vecs = _check_vectors(vcol, flat, lengths, model["dim"], "items")
        return ids, vecs, f"{len(ids)} items from {items} (column {vcol!r})"
    vecs = _encode_item_texts(model, table.column(text_col), text_col, ids, show)
    return ids, vecs, f"{len(ids)} items from {items} (encoded column {text_col!r})"


def _item_ids(id_arr, id_col: str) -> pd.Index:
    """The items table's ids, checked: strings or integers, none missing, each once."""
    if id_kind(id_arr.type) not in ("str", "int"):
        raise ValueError(f"items column {id_col!r} has type {id_arr.type}; expected "
                         "string or integer ids")
    id_arr = id_array(id_arr)
    ids = pd.Index(id_arr.to_pandas())
    null = id_arr.is_null().to_numpy(zero_copy_only=False)
    if id_kind(id_arr.type) == "str":  # "" or "  " is a missing id, as in the events
        null |= np.asarray(ids.astype(str).str.strip().str.len() == 0)
    if null.any():
        raise ValueError(f"items column {id_col!r}: missing item id at row "
                         f"{int(np.argmax(null))}; expected a non-null id. "
                         f"{int(null.sum())} rows affected")
    dup = ids.duplicated()
    if dup.any():
        j = int(np.argmax(dup))
        first = int(np.argmax(ids == ids[j]))
        raise ValueError(f"items column {id_col!r}: duplicate item_id {ids[j]!r} at rows "
                         f"{first} and {j}; expected each item_id once")
    return ids


def _encode_item_texts(model: dict, column, text_col: str, ids: pd.Index, show):
    """The items' texts (none missing or blank) encoded with the model's encoder."""
    texts = column.to_pandas()
    blank = texts.isna().to_numpy() | (texts.astype(str).str.strip().str.len() == 0).to_numpy()
    if blank.any():
        raise ValueError(f"items column {text_col!r}: missing or empty text at row "
                         f"{int(np.argmax(blank))} (item_id {ids[int(np.argmax(blank))]!r})"
                         f"; expected a non-empty string. {int(blank.sum())} rows "
                         "affected")
    return _model_encoder(model).encode(texts.tolist(), show_progress=show)


def _check_vectors(name, flat, lengths, dim, where):
    """(n, dim) float32 from a list column's values; raises naming the first bad row."""
    bad_len = lengths != dim
    if bad_len.any():
        i = int(np.argmax(bad_len))
        raise ValueError(f"{where} column {name!r}: row {i} has a vector of length "
                         f"{int(lengths[i])}; expected {dim} (the model's dimension). "
                         f"{int(bad_len.sum())} rows affected")
    vec = np.asarray(flat, np.float32).reshape(len(lengths), dim)
    bad = ~np.isfinite(vec).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{where} column {name!r}: row {i} has a non-finite value; expected "
                         f"finite numbers. {int(bad.sum())} rows affected")
    return vec


# --------------------------------------------------------------------------- index
def build_index(kind: str, vectors: np.ndarray, ids: pd.Index, folder: Path) -> dict:
    """Fit the retrieval index over the catalogue once (driver) and save it for the chunk
    processes; it also holds the catalogue's ids and unit vectors. Returns what was built."""
    from ..retrieval import ItemIndex

    index = ItemIndex(kind=kind, random_state=0).fit(vectors, item_ids=ids)
    index.save(folder)
    return {"requested": kind, "kind": index.kind_, "reason": index.reason_,
            "nlist": index.nlist_, "nprobe": index.nprobe_, "candidates": index.candidates_,
            "save_id": _index_id(folder)}


def _index_id(folder: Path) -> str:
    """Save id of the index in ``folder``: part of the per-process cache keys, so that a
    long-lived worker never serves an earlier job's catalogue from the same out."""
    return json.loads((folder / "meta.json").read_text())["save_id"]


def load_index(folder: Path):
    """The catalogue's index as the driver saved it in ``folder``."""
    from ..retrieval import ItemIndex

    return ItemIndex.load(folder)


def load_two_stage(model_dir: str, catalogue_ids: pd.Index):
    """The saved engine's CandidateGenerator and Ranker, loaded as InterestEngine.load loads
    them (the driver verified the files' hashes). They hold the engine's fitted state (its
    training users' arrays, EASE's ``B``, the content index): a cost per process that
    follows the model, not the users scored."""
    from ..engine import InterestEngine
    from ..persistence import load_engine

    eng = load_engine(InterestEngine, Path(model_dir), verify_hashes=False)
    gen, ranker = eng.candidates_, eng.ranker_
    if gen is None or ranker is None:  # open_saved/read_model said it has a ranker
        raise ValueError(f"the model in {model_dir} has no candidate state or ranker; save "
                         "it again with this interestflow")
    if not gen.item_ids_.equals(catalogue_ids):
        raise ValueError(f"the catalogue's item ids differ from the model's in {model_dir}: "
                         "a model with a ranker recommends its own items only")
    return gen, ranker
