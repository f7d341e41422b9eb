"""Save and load a fitted InterestEngine: safetensors for arrays, Parquet for ids, JSON for the rest.

Nothing is pickled: every array goes through safetensors, ids through Arrow (their dtype is
kept), and settings/labels through JSON.

Every load goes through :func:`open_saved`, which checks a saved folder before anything is
built from it (``InterestEngine.load`` and batch scoring's model reader alike): the meta data
and the parameters (validated as ``fit`` validates them), the shape of every array against
the id tables and the meta data, and, from format 2 on, the SHA-256 of each data file
recorded at save time, which catches edits that keep the shapes (shuffled id rows) and
truncation. Any problem raises :class:`ModelLoadError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: 2: meta.json records the SHA-256 of the data files. Format-1 saves (no hashes) still load,
#: with every other check and a warning that their integrity cannot be verified.
FORMAT_VERSION = 2
_ARRAYS = ("user_vectors_", "user_log2_weight_", "item_vectors_", "segments_",
           "segment_centroids_", "segment_soft_")
#: State that only partial_fit needs; a save without it loads but cannot partial_fit.
_INCREMENTAL = ("user_mean_", "item_event_sum_", "item_event_weight_")
#: multi_interest=True only.
_INTERESTS = ("interest_offsets_", "interest_vectors_", "interest_importance_", "interest_sizes_")
_INTER_PREFIX = "interactions."
_INTER_KEYS = ("user", "item", "ts", "weight")
_REC_PREFIX = "recommender."
#: The files whose bytes meta.json's "sha256" covers (meta.json itself holds the hashes).
_DATA_FILES = ("arrays.safetensors", "ids_users.parquet", "ids_items.parquet")
#: The learned ranker's model (``ranker="lightgbm"``), LightGBM's own text format; present
#: (and hashed) only when meta.json's "ranker" entry is not null.
_RANKER_FILE = "ranker.txt"
_RESAVE = "restore the folder as it was saved, or fit and save the engine again"

# Expected shape of every array, in symbols: U users (ids_users.parquet), I items
# (ids_items.parquet), K segments (meta.json n_segments_), D the vector dimension
# (user_vectors_), C recommender components; M interests, N interactions, S/T/R the
# recommender's seen/seed/neighbour entries (free, but equal within their group).
# kind: "f" floating, "i" integer, "b" bool.
_SHAPES = {
    "user_vectors_": (("U", "D"), "f"), "user_log2_weight_": (("U",), "f"),
    "item_vectors_": (("I", "D"), "f"), "segments_": (("U",), "i"),
    "segment_centroids_": (("K", "D"), "f"), "segment_soft_": (("U", "K"), "f"),
    "item_from_items": (("I",), "b"),
    "user_mean_": (("U", "D"), "f"), "item_event_sum_": (("I", "D"), "f"),
    "item_event_weight_": (("I",), "f"),
    "interest_offsets_": (("U+1",), "i"), "interest_vectors_": (("M", "D"), "f"),
    "interest_importance_": (("M",), "f"), "interest_sizes_": (("M",), "i"),
    "interactions.user": (("N",), "i"), "interactions.item": (("N",), "i"),
    "interactions.ts": (("N",), "f"), "interactions.weight": (("N",), "f"),
    "recommender.user_vectors": (("U", "D"), "f"), "recommender.item_vectors": (("I", "D"), "f"),
    "recommender.user_segment_weights": (("U", "K"), "f"),
    "recommender.seen_indptr": (("U+1",), "i"), "recommender.seen_indices": (("S",), "i"),
    "recommender.popularity": (("I",), "f"), "recommender.segment_popularity": (("K", "I"), "f"),
    "recommender.seed_indptr": (("U+1",), "i"), "recommender.seed_indices": (("T",), "i"),
    "recommender.seed_weights": (("T",), "f"),
    "recommender.knn_indptr": (("I+1",), "i"), "recommender.knn_indices": (("R",), "i"),
    "recommender.knn_weights": (("R",), "f"), "recommender.weights": (("C",), "f"),
    "recommender.segment_popularity_total": (("K",), "f"),
    "candidates.segment_trend": (("K", "I"), "f"), "candidates.item_trend": (("I",), "f"),
    "candidates.ease_b": (("I", "I"), "f"), "candidates.item_first_ts": (("I",), "f"),
}
#: Arrays in _SHAPES that a save may lack (saves from before partial_fit's incremental
#: recommender statistics; partial_fit rebuilds them once).
_OPTIONAL = ("recommender.segment_popularity_total", "candidates.segment_trend",
             "candidates.item_trend", "candidates.ease_b", "candidates.item_first_ts")
#: Candidate-generation state (interestflow.candidates); absent from older saves, which load
#: without it (``candidates_`` is None: CandidateGenerator.from_engine rebuilds it). ease_b
#: only when EASE was fitted (n_items <= ease_max_items).
_CAND_PREFIX = "candidates."
_KIND_NAMES = {"f": "floating-point", "i": "integer", "b": "bool"}


def _kind(dtype: str) -> str | None:
    """"f", "i" or "b" of a safetensors dtype name ("F32", "I64", "BOOL", ...)."""
    if dtype == "BOOL":
        return "b"
    return {"F": "f", "B": "f", "I": "i", "U": "i"}.get(dtype[:1])


class ModelLoadError(ValueError):
    """A saved InterestEngine folder that cannot be loaded: a file is missing, unreadable,
    inconsistent with the others, or was changed after the save. The message starts with the
    path of the file at fault."""


def _fail(file: Path, msg: str, exc: BaseException | None = None):
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    raise ModelLoadError(f"{file}: {msg}{detail}") from exc


def _sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB blocks (memory does not grow with the file)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _write_ids(index: pd.Index, path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"id": pd.Series(index, dtype=index.dtype)}), path)


def read_ids(path: Path) -> pd.Index:
    """The ids saved in ``path``; ModelLoadError naming the file when it is missing or
    unreadable, or holds a null or duplicate id (each row is one user or item)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        _fail(path, f"missing; {_RESAVE}")
    try:
        column = pq.read_table(path).column("id")
    except (MemoryError, KeyboardInterrupt):
        raise
    except KeyError as exc:
        _fail(path, "has no 'id' column", exc)
    except Exception as exc:  # pyarrow's errors differ by cause; name the file
        _fail(path, f"cannot be read as Parquet; {_RESAVE}", exc)
    ids = pd.Index(column.to_pandas()).rename(None)
    null = np.asarray(ids.isna())
    if null.any():
        _fail(path, f"row {int(np.argmax(null))} holds a null id ({int(null.sum())} rows "
                    f"affected); {_RESAVE}")
    dup = np.asarray(ids.duplicated())
    if dup.any():
        j = int(np.argmax(dup))
        first = int(np.argmax(np.asarray(ids == ids[j])))
        _fail(path, f"id {ids[j]!r} is at rows {first} and {j}; each id must appear once. "
                    f"{_RESAVE}")
    return ids


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    if not path.is_file():
        _fail(path, f"missing; {_RESAVE}")
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        _fail(path, f"cannot be read as Parquet; {_RESAVE}", exc)


def encoder_spec(encoder) -> dict | None:
    if encoder is None:
        return None
    return {"model": str(getattr(encoder, "model_path", "")) or None,
            "is_default_model": bool(getattr(encoder, "is_default_model", False)),
            "dtype": str(getattr(encoder, "dtype", "")),
            "max_length": int(getattr(encoder, "max_length", 256)),
            "pooling": getattr(encoder, "pooling", None)}


def _shape_problem(shapes: dict, dtypes: dict, n_users: int, n_items: int,
                   n_segments: int) -> str | None:
    """What is wrong with the arrays' shapes and dtypes (None: nothing), against the id
    tables' lengths and the number of segments; see _SHAPES. ``dtypes`` holds safetensors
    dtype names or numpy dtypes."""
    from .recommend import COMPONENTS

    kinds = {k: _kind(d) if isinstance(d, str) else
             {"f": "f", "i": "i", "u": "i", "b": "b"}.get(np.dtype(d).kind)
             for k, d in dtypes.items()}
    # every recommender array but _OPTIONAL is required (save refuses one missing from
    # _SHAPES)
    required = set(_ARRAYS) | {"item_from_items"} | {k for k in _SHAPES
                                                     if k.startswith(_REC_PREFIX)
                                                     and k not in _OPTIONAL}
    missing = sorted(required - set(shapes))
    if missing:
        return f"holds no array(s) {missing}"
    unknown = sorted(set(shapes) - set(_SHAPES))
    if unknown:
        return f"holds unexpected array(s) {unknown} (saved by a newer interestflow?)"
    for group in (_INCREMENTAL, _INTERESTS, tuple(_INTER_PREFIX + k for k in _INTER_KEYS),
                  ("candidates.segment_trend", "candidates.item_trend")):
        have = [n for n in group if n in shapes]
        if have and len(have) != len(group):
            return f"holds {have} but not {sorted(set(group) - set(have))}; they come together"
    if len(shapes["user_vectors_"]) != 2:
        return f"user_vectors_ has shape {tuple(shapes['user_vectors_'])}; expected 2-D"
    sizes = {"U": n_users, "I": n_items, "K": n_segments, "D": int(shapes["user_vectors_"][1]),
             "C": len(COMPONENTS), "U+1": n_users + 1, "I+1": n_items + 1}
    where = {"U": "rows in ids_users.parquet", "I": "rows in ids_items.parquet",
             "K": "n_segments_ in meta.json", "D": "the dimension of user_vectors_",
             "C": "recommender components", "U+1": "rows in ids_users.parquet + 1",
             "I+1": "rows in ids_items.parquet + 1"}
    for name in sorted(shapes):
        dims, kind = _SHAPES[name]
        if kinds[name] != kind:
            return f"array {name!r} has dtype {dtypes[name]}; expected {_KIND_NAMES[kind]}"
        shape = tuple(int(x) for x in shapes[name])
        if len(shape) != len(dims):
            return f"array {name!r} has shape {shape}; expected {len(dims)}-D {dims}"
        for axis, (sym, got) in enumerate(zip(dims, shape)):
            if sym not in sizes:  # a free size (interests, interactions, ...): first one sets it
                sizes[sym] = got
                where[sym] = f"axis {axis} of {name!r}"
            elif got != sizes[sym]:
                return (f"array {name!r} has shape {shape}: axis {axis} is {got} but "
                        f"{where[sym]} is {sizes[sym]}")
    return None


def _state_tensors(engine) -> dict[str, np.ndarray]:
    """Every array of the engine's state, keyed as in arrays.safetensors (checked)."""
    tensors = {name: np.ascontiguousarray(getattr(engine, name)) for name in _ARRAYS}
    tensors["item_from_items"] = np.ascontiguousarray(engine.item_vector_source_ == "items")
    for name in _INCREMENTAL + _INTERESTS:
        if hasattr(engine, name):
            tensors[name] = np.ascontiguousarray(getattr(engine, name))
    for key, arr in getattr(engine, "interactions_", {}).items():
        tensors[_INTER_PREFIX + key] = np.ascontiguousarray(arr)
    for key, arr in engine.recommender_.state_dict().items():
        tensors[_REC_PREFIX + key] = np.ascontiguousarray(arr)
    cand = getattr(engine, "candidates_", None)
    if cand is not None:
        for key, arr in cand.state_dict().items():
            tensors[_CAND_PREFIX + key] = np.ascontiguousarray(arr)
    # never write a folder that load would refuse
    problem = _shape_problem({k: v.shape for k, v in tensors.items()},
                             {k: v.dtype for k, v in tensors.items()},
                             len(engine.user_ids_), len(engine.item_ids_),
                             int(engine.n_segments_))
    if problem:
        raise ValueError(f"cannot save this InterestEngine: its state is inconsistent "
                         f"(arrays.safetensors would hold: {problem})")
    return tensors


def _save_meta(engine, save_id: str) -> dict:
    """The content of meta.json (without the hashes, added once the files are written)."""
    from . import __version__

    cand = getattr(engine, "candidates_", None)
    ranker = getattr(engine, "ranker_", None)
    return {
        "format": "interestflow.InterestEngine",
        "save_id": save_id,
        "format_version": FORMAT_VERSION,
        "interestflow_version": __version__,
        "params": engine._saved_params(),
        "n_segments_": int(engine.n_segments_),
        "reference_time_": float(engine.reference_time_),
        "n_events_": int(engine.n_events_),
        "segment_keywords_": {str(k): v for k, v in engine.segment_keywords_.items()},
        "silhouette_by_k_": {str(k): v for k, v in engine.silhouette_by_k_.items()},
        # which rule chose K, and the inner-split recall per K (absent in older saves)
        "n_segments_rule_": getattr(engine, "n_segments_rule_", None),
        "segment_use_by_k_": {str(k): v for k, v in
                              getattr(engine, "segment_use_by_k_", {}).items()},
        # partial_fit's segment drift: now and at the last segment fit (absent in older saves)
        "segment_distance_": getattr(engine, "segment_distance_", None),
        "segment_distance_fit_": getattr(engine, "segment_distance_fit_", None),
        "recommender_config": engine.recommender_.config_dict(),
        "candidates_config": None if cand is None else cand.config_dict(),
        "ranker": None if ranker is None else ranker.to_dict(),
        "encoder": encoder_spec(engine.encoder),
    }


def save_engine(engine, path: Path) -> Path:
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    tensors = _state_tensors(engine)
    ranker = getattr(engine, "ranker_", None)
    files = _DATA_FILES + ((_RANKER_FILE,) if ranker is not None else ())
    # the same id goes into the arrays file and meta.json: load() refuses a mix of two saves
    save_id = uuid.uuid4().hex
    meta = _save_meta(engine, save_id)
    # write into a temp dir beside the target, then move files in: a crash never leaves a
    # half-written engine behind under the final names
    with tempfile.TemporaryDirectory(dir=path, prefix=".tmp-") as tmp:
        tmp = Path(tmp)
        save_file(tensors, str(tmp / "arrays.safetensors"), metadata={"save_id": save_id})
        _write_ids(engine.user_ids_, tmp / "ids_users.parquet")
        _write_ids(engine.item_ids_, tmp / "ids_items.parquet")
        if ranker is not None:
            (tmp / _RANKER_FILE).write_text(ranker.model_string(), encoding="utf-8")
        # hashes of the exact bytes that are moved in below (a rename keeps the bytes)
        meta["sha256"] = {name: _sha256(tmp / name) for name in files}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        for name in files + ("meta.json",):
            os.replace(tmp / name, path / name)
    if ranker is None and (path / _RANKER_FILE).exists():  # left by an earlier save here
        (path / _RANKER_FILE).unlink()
    return path


@dataclass
class SavedModel:
    """A checked saved-engine folder (from :func:`open_saved`); arrays are read on demand.

    ``meta`` is meta.json with ``segment_keywords_`` and ``silhouette_by_k_`` keyed by int;
    ``shapes`` maps every array in arrays.safetensors to its shape.
    """

    path: Path
    meta: dict
    shapes: dict
    n_users: int
    n_items: int
    dim: int

    @property
    def arrays_path(self) -> Path:
        return self.path / "arrays.safetensors"

    def tensor(self, name: str) -> np.ndarray:
        """One array, read alone (the others stay on disk)."""
        from safetensors import safe_open

        try:
            with safe_open(str(self.arrays_path), framework="numpy") as fh:
                return fh.get_tensor(name)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:
            _fail(self.arrays_path, f"cannot read array {name!r}; {_RESAVE}", exc)

    def tensors(self) -> dict[str, np.ndarray]:
        """Every array, with its values checked where a bad value would index out of range."""
        from safetensors.numpy import load_file

        try:
            t = load_file(str(self.arrays_path))
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:
            _fail(self.arrays_path, f"cannot be read as safetensors; {_RESAVE}", exc)
        problem = _value_problem(t, self.n_users, self.n_items, int(self.meta["n_segments_"]))
        if problem:
            _fail(self.arrays_path, f"{problem}; {_RESAVE}")
        return t

    def ids(self, which: str) -> pd.Index:
        """``"users"`` or ``"items"``: the ids, checked non-null and unique."""
        path = self.path / f"ids_{which}.parquet"
        ids = read_ids(path)
        expected = self.n_users if which == "users" else self.n_items
        if len(ids) != expected:  # the file changed since open_saved
            _fail(path, f"has {len(ids)} rows, had {expected} when the folder was checked")
        return ids


def _value_problem(t: dict, n_users: int, n_items: int, n_segments: int) -> str | None:
    """Index arrays whose values point outside their table (shapes were checked before)."""
    def out_of(name, lo, hi):
        a = t[name]
        bad = (a < lo) | (a >= hi)
        if bad.any():
            i = int(np.argmax(bad))
            return (f"array {name!r} entry {i} is {a[i]}; expected {lo} <= value < {hi} "
                    f"({int(bad.sum())} entries affected)")
        return None

    def csr(ptr_name, n_entries, idx_name=None, hi=None):
        p = t[ptr_name]
        if len(p) and (p[0] != 0 or p[-1] != n_entries or (np.diff(p) < 0).any()):
            return (f"array {ptr_name!r} is not a valid offset array (it must start at 0, "
                    f"never decrease and end at {n_entries})")
        return out_of(idx_name, 0, hi) if idx_name else None

    checks = [lambda: out_of("segments_", -1, n_segments)]
    for part in ("seen", "seed", "knn"):
        ptr, idx = f"{_REC_PREFIX}{part}_indptr", f"{_REC_PREFIX}{part}_indices"
        checks.append(lambda ptr=ptr, idx=idx: csr(ptr, len(t[idx]), idx, n_items))
    if "interest_offsets_" in t:
        checks.append(lambda: csr("interest_offsets_", len(t["interest_vectors_"])))
    if _INTER_PREFIX + "user" in t:
        checks.append(lambda: out_of(_INTER_PREFIX + "user", 0, n_users))
        checks.append(lambda: out_of(_INTER_PREFIX + "item", 0, n_items))
    for check in checks:
        problem = check()
        if problem:
            return problem
    return None


def _int_keyed(meta_path: Path, meta: dict, key: str, convert) -> dict:
    value = meta.get(key)
    if not isinstance(value, dict):
        _fail(meta_path, f"entry {key!r} must be a mapping, got {type(value).__name__}; "
                         f"{_RESAVE}")
    try:
        return {int(k): convert(v) for k, v in value.items()}
    except (TypeError, ValueError) as exc:
        _fail(meta_path, f"entry {key!r} is malformed; {_RESAVE}", exc)


def open_saved(path, cls=None, *, verify_hashes: bool = True) -> SavedModel:
    """Check a saved InterestEngine folder and return what is needed to read it.

    Reads meta.json, validates the saved parameters as ``fit`` does (``cls`` is the engine
    class, default :class:`~interestflow.InterestEngine`), checks that the arrays file and the
    meta data come from the same save, the SHA-256 of every data file against the one
    recorded at save time (format 2; ``verify_hashes=False`` skips only this step, for a
    process that reopens a folder another process of the same job has verified, with the
    same save id), and every array's shape and dtype against the id tables and
    ``n_segments_``. Arrays are not loaded (only the safetensors header and the Parquet
    footers are read, plus one streaming pass over each file for its hash).

    Raises
    ------
    ModelLoadError
        Naming the file at fault and what is wrong with it.
    """
    path = Path(os.fspath(path))
    meta_path = path / "meta.json"
    meta, version = _read_meta(path, meta_path)
    meta = _check_meta_params(meta_path, meta, cls)
    arrays_path = path / "arrays.safetensors"
    save_id, shapes, dtypes = _read_array_header(arrays_path)
    if save_id != meta["save_id"]:
        raise ModelLoadError(f"{path}: arrays.safetensors and meta.json come from different "
                             "saves (an interrupted overwrite?); save the engine again")
    if version >= 2 and verify_hashes:
        _verify_hashes(path, meta_path, meta)
    elif version < 2:
        logger.warning("%s: format_version 1 save (interestflow < 0.2) has no content hashes; "
                       "shapes and parameters are checked, but edits that keep the shapes "
                       "(e.g. reordered id rows) cannot be detected; save it again to add them",
                       path)
    n_users = _parquet_rows(path / "ids_users.parquet")
    n_items = _parquet_rows(path / "ids_items.parquet")
    # the three anchors first, each blamed on its own file; then every array against them
    for file, n, key, what in ((path / "ids_users.parquet", n_users, "user_vectors_", "users"),
                               (path / "ids_items.parquet", n_items, "item_vectors_", "items"),
                               (meta_path, meta["n_segments_"], "segment_centroids_",
                                "segment centroids")):
        shape = shapes.get(key)
        if shape is not None and len(shape) == 2 and shape[0] != n:
            has = f"n_segments_ is {n}" if file == meta_path else f"has {n} rows"
            _fail(file, f"{has} but arrays.safetensors holds {shape[0]} {what} ({key} has "
                        f"shape {tuple(shape)}); {_RESAVE}")
    problem = _shape_problem(shapes, dtypes, n_users, n_items, meta["n_segments_"])
    if problem:
        _fail(arrays_path, f"{problem}; {_RESAVE}")
    return SavedModel(path, meta, shapes, n_users, n_items, int(shapes["user_vectors_"][1]))


def _read_meta(path: Path, meta_path: Path) -> tuple[dict, int]:
    """Read meta.json and check its format, version and entry types: ``(meta, version)``."""
    if not meta_path.is_file():
        _fail(meta_path, f"missing: {str(path)!r} does not hold a saved InterestEngine; save one "
                         "with InterestEngine.save(dir) or `interestflow run`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(meta_path, f"is not valid JSON; {_RESAVE}", exc)
    if not isinstance(meta, dict) or meta.get("format") != "interestflow.InterestEngine":
        _fail(meta_path, "is not an interestflow.InterestEngine save")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        _fail(meta_path, f"format_version={version!r} is not a positive int; {_RESAVE}")
    if version > FORMAT_VERSION:
        _fail(meta_path, f"has format_version {version}; this interestflow reads up to "
                         f"{FORMAT_VERSION}: upgrade interestflow")
    if version == 1 and "save_id" not in meta:  # the earliest saves had none
        meta = dict(meta, save_id=None)
    expected = {"save_id": ((str, type(None)) if version == 1 else str, "a str"),
                "params": (dict, "a mapping"), "n_segments_": (int, "an int"),
                "reference_time_": ((int, float), "a number"), "n_events_": (int, "an int"),
                "recommender_config": (dict, "a mapping")}
    for key, (kind, what) in expected.items():
        value = meta.get(key)
        if key not in meta or isinstance(value, bool) or not isinstance(value, kind):
            _fail(meta_path, f"entry {key!r} is missing or not {what}; {_RESAVE}")
    if meta["n_segments_"] < 0 or meta["n_events_"] < 0 or \
            not math.isfinite(meta["reference_time_"]):
        _fail(meta_path, f"n_segments_={meta['n_segments_']}, n_events_={meta['n_events_']}, "
                         f"reference_time_={meta['reference_time_']}: expected counts >= 0 "
                         f"and a finite time; {_RESAVE}")
    for key in ("segment_distance_", "segment_distance_fit_"):  # absent in older saves
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            # a mean cosine distance: finite, and may round a hair below 0
            _fail(meta_path, f"entry {key!r} is {value!r}; expected null or a finite number "
                             f"(partial_fit's segment drift); {_RESAVE}")
    return meta, version


def _check_meta_params(meta_path: Path, meta: dict, cls) -> dict:
    """Check the saved parameters as ``fit`` does and convert the int-keyed entries."""
    if cls is None:
        from .engine import InterestEngine as cls
    try:
        # the checks fit() runs on the same parameters (encoder checked by the caller)
        cls(**meta["params"])._check_params()
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{meta_path}: saved parameters are invalid: {exc}") from exc
    meta = dict(meta)
    meta["segment_keywords_"] = _int_keyed(meta_path, meta, "segment_keywords_",
                                           lambda v: [(str(w), float(s)) for w, s in v])
    meta["silhouette_by_k_"] = _int_keyed(meta_path, meta, "silhouette_by_k_", lambda v: v)
    if meta.get("encoder") is not None and not isinstance(meta["encoder"], dict):
        _fail(meta_path, f"entry 'encoder' must be a mapping or null; {_RESAVE}")
    return meta


def _read_array_header(arrays_path: Path) -> tuple[str | None, dict, dict]:
    """Read the safetensors header only: ``(save_id, shapes, dtypes)``."""
    from safetensors import safe_open

    if not arrays_path.is_file():
        _fail(arrays_path, f"missing; {_RESAVE}")
    try:
        with safe_open(str(arrays_path), framework="numpy") as fh:
            save_id = (fh.metadata() or {}).get("save_id")
            shapes, dtypes = {}, {}
            for key in fh.keys():
                sl = fh.get_slice(key)
                shapes[key], dtypes[key] = tuple(sl.get_shape()), sl.get_dtype()
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # SafetensorError and friends
        _fail(arrays_path, f"cannot be read as safetensors (truncated or damaged?); {_RESAVE}",
              exc)
    return save_id, shapes, dtypes


def _verify_hashes(path: Path, meta_path: Path, meta: dict):
    """Check every data file's SHA-256 against the one recorded in meta.json (format 2)."""
    recorded = meta.get("sha256")
    files = _DATA_FILES + ((_RANKER_FILE,) if meta.get("ranker") is not None else ())
    if not isinstance(recorded, dict) or set(recorded) != set(files):
        _fail(meta_path, f"entry 'sha256' must map {list(files)} to their SHA-256; "
                         f"{_RESAVE}")
    for name in files:
        if not (path / name).is_file():
            _fail(path / name, f"missing; {_RESAVE}")
        if _sha256(path / name) != recorded[name]:
            _fail(path / name, "content differs from the save (its SHA-256 is not the one "
                               "recorded in meta.json): the file was edited, truncated or "
                               f"copied from another save; {_RESAVE}")


def load_engine(cls, path: Path, *, encoder=None, verify_hashes: bool = True):
    """The engine saved in ``path`` (:meth:`InterestEngine.load`); ``verify_hashes=False``
    skips only the SHA-256 check, for a process reopening a folder that another process of
    the same job verified (see :func:`open_saved`)."""
    saved = open_saved(path, cls, verify_hashes=verify_hashes)
    meta = saved.meta
    tensors = saved.tensors()
    engine = cls(encoder=encoder, **meta["params"])
    _restore_arrays(engine, tensors)
    _restore_meta(engine, saved)
    engine.recommender_ = _load_recommender(path, meta, tensors)
    engine.candidates_ = _load_candidates(path, meta, tensors, engine)
    engine.ranker_ = _load_ranker(path, meta, engine)
    engine.encoder_spec_ = meta.get("encoder")
    return engine


def _restore_arrays(engine, tensors: dict):
    """Set the engine's fitted arrays (and the interactions, when saved) from ``tensors``."""
    for name in _ARRAYS:
        setattr(engine, name, tensors[name])
    engine.item_vector_source_ = np.where(tensors["item_from_items"], "items", "events")
    for name in _INCREMENTAL + _INTERESTS:
        if name in tensors:
            setattr(engine, name, tensors[name])
    inter = {k[len(_INTER_PREFIX):]: v for k, v in tensors.items() if k.startswith(_INTER_PREFIX)}
    if inter:
        engine.interactions_ = inter


def _restore_meta(engine, saved: SavedModel):
    """Set the engine's ids and the fitted values recorded in meta.json."""
    meta = saved.meta
    engine.user_ids_ = saved.ids("users")
    engine.item_ids_ = saved.ids("items")
    engine.n_segments_ = int(meta["n_segments_"])
    engine.reference_time_ = float(meta["reference_time_"])
    engine.n_events_ = int(meta["n_events_"])
    engine.segment_keywords_ = meta["segment_keywords_"]
    engine.silhouette_by_k_ = meta["silhouette_by_k_"]
    rule = meta.get("n_segments_rule_")  # None: an older save (the rule was not recorded)
    engine.n_segments_rule_ = None if rule is None else str(rule)
    engine.segment_use_by_k_ = {int(k): float(v) for k, v in
                                (meta.get("segment_use_by_k_") or {}).items()}
    engine.segment_distance_ = meta.get("segment_distance_")
    engine.segment_distance_fit_ = meta.get("segment_distance_fit_")


def _load_recommender(path: Path, meta: dict, tensors: dict):
    """The saved :class:`~interestflow.recommend.Recommender`."""
    from .recommend import Recommender

    rec_state = {k[len(_REC_PREFIX):]: v for k, v in tensors.items() if k.startswith(_REC_PREFIX)}
    try:
        return Recommender.from_state(meta["recommender_config"], rec_state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path / 'meta.json'}: entry 'recommender_config' is invalid: "
                             f"{type(exc).__name__}: {exc}") from exc


def _load_candidates(path: Path, meta: dict, tensors: dict, engine):
    """The saved candidate generator, or None when the save has none."""
    cand_state = {k[len(_CAND_PREFIX):]: v for k, v in tensors.items()
                  if k.startswith(_CAND_PREFIX)}
    if not (cand_state and meta.get("candidates_config") is not None):
        return None
    from .candidates import CandidateGenerator

    multi = getattr(engine, "interest_offsets_", None) is not None
    try:
        gen = CandidateGenerator.from_state(
            meta["candidates_config"], cand_state, engine.recommender_,
            interest_vectors=engine.interest_vectors_ if multi else None,
            interest_offsets=engine.interest_offsets_ if multi else None,
            device=engine.device)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path / 'meta.json'}: entry 'candidates_config' is "
                             f"invalid: {type(exc).__name__}: {exc}") from exc
    gen.user_ids_, gen.item_ids_ = engine.user_ids_, engine.item_ids_
    return gen


def _load_ranker(path: Path, meta: dict, engine):
    """The saved LightGBM ranker, or None when the save has none."""
    if meta.get("ranker") is None:
        return None
    from .ranker import Ranker

    file = path / _RANKER_FILE
    if engine.candidates_ is None:
        _fail(path / "meta.json", f"has a ranker but no candidate state; {_RESAVE}")
    try:
        model = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(file, f"cannot be read; {_RESAVE}", exc)
    try:
        return Ranker.from_model_string(model, meta["ranker"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{file}: not a valid ranker model for meta.json's 'ranker' "
                             f"entry: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # LightGBMError for a damaged model text
        _fail(file, f"cannot be parsed as a LightGBM model; {_RESAVE}", exc)
