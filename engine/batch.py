"""Offline batch scoring: an event table of any size -> user vectors, segments and top-k items.

:func:`score` (CLI ``interestflow score``) runs a fitted :class:`~interestflow.InterestEngine`
over an event table that need not fit in memory, in chunks of users whose size, not the
number of users, sets the peak memory, and it survives being killed at any moment.

How it works
------------
1. **Catalogue.** The items to recommend (the model's items, or ``items=``: its vector column,
   else its encoded texts) are indexed once by :class:`interestflow.retrieval.ItemIndex`
   (``index=``), saved to ``OUT/_staging/index`` with their ids and unit vectors.
2. **Count.** A first read of the events' user id column only hashes every user id (a fixed
   seeded hash, the same in every process and run) and counts distinct users with a bounded
   k-minimum-values sketch (exact up to 16,384 users), one task per input file, the sketches
   merged by the driver. The number of chunks ``B`` follows from that count and
   ``chunk_users`` (or ``max_memory``); the rows per file number the input's rows.
3. **Staging.** A second, streaming read of the needed columns, again one task per input file,
   validates every row, rejects bad ones with a reason (counted in the summary and listed in
   ``OUT/rejected.parquet``), and spills the good ones to ``OUT/_staging/bNNNNN/`` (bucket =
   hash(user_id) mod B) through an in-memory buffer of bounded size: no file stays open and
   all of a user's events land in one bucket. A marker written last
   (``_staging/_COMPLETE.json``, with the reference time: ``now`` or the latest valid ``ts``)
   makes a finished staging pass reusable; an unfinished one is redone from scratch.
4. **Chunks.** Each bucket is scored on its own: events -> vectors (the ``vector_col`` value,
   else the encoded text, else the vector of the event's catalogue item) -> time-decayed user
   means (:func:`~interestflow.interests.decayed_user_means`, the model's half-life) -> unit user
   vectors -> nearest model centroid and soft segment features (the model's temperature) ->
   top-k items, by the same stages as :meth:`InterestEngine.recommend
   <interestflow.InterestEngine.recommend>` where the model has a learned ranker:

   * **Model with a ranker** (``InterestEngine(ranker="lightgbm")``): stage 1, the model's
     :class:`~interestflow.candidates.CandidateGenerator` (content, item-kNN, EASE,
     popularity, segment popularity, segment trending) through
     :meth:`~interestflow.candidates.CandidateGenerator.generate_for`, fed with what ``fit``
     would have stored for these users, built from the chunk's events by the functions
     ``fit`` uses: seen items and item-kNN seeds (:func:`~interestflow.recommend.user_seeds`
     of the events with a catalogue item), segment weights
     (:func:`~interestflow.recommend.segment_weights`), interaction count and latest time
     (:func:`~interestflow.ranker.user_activity`); stage 2, the model's LightGBM ranker over
     :func:`~interestflow.ranker.ranking_features`. The ranker's reference time (its
     ``user_recency_days``) is the latest time of a staged event with a catalogue item, as
     ``fit``'s ``behaviour_time_`` is the latest interaction time (``now`` does not move it).
     Scoring the events a model was fitted on therefore gives every user the list
     ``recommend`` gives (tested). Users pass through both stages
     ``CandidateConfig.chunk_users`` (default 1,024) at a time, so the two stages add one
     sub-chunk's arrays, not the chunk's: its candidates (``chunk_users x`` the sum of the
     source cuts, at most 450, rows of ``len(RANKER_FEATURES)`` float32) and EASE's dense
     ``chunk_users x n_items`` float32 block (EASE exists only up to ``ease_max_items``
     items, 20,000 by default: at most 82 MB); nothing of (users x catalogue) is allocated.
     Each process also holds the model's fitted state (its arrays, EASE's ``B``, the
     generator's content index), loaded once. Per-user interests are not built from events,
     so a ranker model with ``multi_interest=True`` is refused, as is ``items=``.
   * **Model without a ranker**: the top-k catalogue items by cosine (``ItemIndex.search``),
     leaving out items the user's events mention. These are ``recommend``'s items, in its
     order, for a content-only recommender (``RecommendConfig(weights={"content": w})``,
     ``index="exact"``; ``recommend``'s scores are the z-scores of these cosines over the
     unseen items); the other recommenders blend behaviour components over the whole
     catalogue per user (dense users x items blocks) and ``multi_interest=True`` engines rank
     per interest, which batch scoring does not reproduce: their batch lists are content-only.

   The two part files ``users/part-NNNNN.parquet`` and ``recommendations/part-NNNNN.parquet``
   are written atomically (temp file + rename); then the chunk is recorded in
   ``manifest.json`` (rewritten atomically by the one driver process).
5. **Finish.** ``summary.json`` (counts, rejected rows by reason, timings per stage); the staging
   folder is removed.

Resuming: the same call after a crash continues: chunks in the manifest are not redone and a
chunk that was cut off is redone from its staged events, which are the same, so the output is
identical to an uninterrupted run. The manifest holds a fingerprint of the job (input paths,
sizes and modification times, parameters, the model's save id): a different job refuses to
resume into the same ``out``. One job writes an ``out`` at a time: a job holds the OS lock of
``out`` (:mod:`interestflow.outdir`) from before it reads anything until it returns, and a
second job on the same ``out``, started at the same time or later, is refused; the lock dies
with its process, so the job that resumes after a kill is not refused.

With ``dask=`` the file and chunk tasks run on Dask (:mod:`interestflow.distributed`); every
process loads the model state, index and encoder once and keeps them for its later chunks.
Chunks sort their events by (user, input row), so the output does not depend on which
process staged or scored what, nor in which order.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import math
import numbers
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .outdir import FolderLock, check_location
from .validation import TS_UNIT_NAMES, TS_WINDOW, now_seconds

logger = logging.getLogger(__name__)

__all__ = ["score", "parse_memory", "DEFAULT_CHUNK_USERS", "RejectedRowsError"]

#: Users per chunk when neither ``chunk_users`` nor ``max_memory`` is given.
DEFAULT_CHUNK_USERS = 50_000
MANIFEST_FORMAT = "interestflow.batch.score"
MANIFEST_VERSION = 1
#: Standard event column names (``column_map`` maps them to the file's names).
STANDARD_COLUMNS = ("user_id", "ts", "text", "item_id", "weight")
#: Rows read per batch while counting and staging.
_READ_BATCH_ROWS = 131_072
#: Spill buffer of the staging pass, bytes (smaller when max_memory asks for less).
_STAGING_BUFFER_BYTES = 256 * 2**20
#: Event rows gathered into one float32 block before the decayed means (bounds that copy).
_GATHER_ROWS = 65_536
#: Distinct-user sketch size: exact counts up to this many users, ~1% error above.
_SKETCH_K = 16_384
#: Rejected rows shown in the summary (all of them are in rejected.parquet).
_MAX_EXAMPLES = 20
#: Memory assumed for the scoring process besides the catalogue and the chunk: the numba
#: kernels' buffers and JIT, Arrow's pool, Parquet writer buffers.
_RUNTIME_MARGIN_BYTES = 384 * 2**20
#: An encoder (all-MiniLM-L6-v2 and torch's working set) when events carry texts.
_ENCODER_BYTES = 512 * 2**20

# rejection reasons, in the order they are checked (a row is reported with its first reason)
_R_USER, _R_TS_MISSING, _R_TS_BAD, _R_TS_NONFINITE, _R_TS_RANGE, _R_TS_LATE, _R_W_MISSING, \
    _R_W_BAD, _R_W_INF, _R_W_NEG, _R_VEC_LEN, _R_VEC_NONFINITE, _R_CONTENT = range(1, 14)
REJECT_REASONS = {
    _R_USER: "missing user_id",
    _R_TS_MISSING: "missing ts",
    _R_TS_BAD: "unparseable ts",
    _R_TS_NONFINITE: "non-finite ts",
    # the text for ts_unit="s"; _ts_range_reason gives the one for another unit
    _R_TS_RANGE: f"implausible ts (outside {TS_WINDOW[0]}..{TS_WINDOW[1]} UTC; numbers read as "
                 "unix seconds: milliseconds? pass --ts-unit ms)",
    _R_TS_LATE: "ts after now",
    _R_W_MISSING: "missing or NaN weight",
    _R_W_BAD: "non-numeric weight",
    _R_W_INF: "infinite weight",
    _R_W_NEG: "negative weight",
    _R_VEC_LEN: "vector of the wrong length",
    _R_VEC_NONFINITE: "non-finite vector value",
    _R_CONTENT: "no text, no vector and no item_id of a catalogue item",
}
#: Reason of the rows of a user whose every event has weight 0 (found while scoring a chunk).
REASON_ZERO_WEIGHT = "every event of the user has weight 0"


def _ts_range_reason(ts_unit: str) -> str:
    """The reason text of a time outside the plausible window, for numbers in ``ts_unit``."""
    if ts_unit == "s":
        return REJECT_REASONS[_R_TS_RANGE]
    return (f"implausible ts (outside {TS_WINDOW[0]}..{TS_WINDOW[1]} UTC; numbers read as unix "
            f"{TS_UNIT_NAMES[ts_unit]} (--ts-unit {ts_unit}): seconds? pass --ts-unit s)")


class RejectedRowsError(ValueError):
    """:func:`score` finished and wrote every output, but rejected more rows than
    ``max_rejected`` allows.  ``summary`` is the job's summary (also in ``summary.json``)."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


def _parse_max_rejected(value):
    """``max_rejected`` -> None, ("count", n) or ("share", fraction in [0, 1])."""
    if value is None:
        return None
    expected = ("a count of rows (int >= 0, e.g. 100) or a share of the rows (a float in "
                "[0, 1] such as 0.05, or a string such as '5%')")
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"max_rejected must be {expected}, got bool")
    if isinstance(value, numbers.Integral):
        kind, x = "count", int(value)
    elif isinstance(value, numbers.Real):
        kind, x = "share", float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("%"):
                kind, x = "share", float(text[:-1]) / 100.0
            elif text.isdigit():
                kind, x = "count", int(text)
            else:
                kind, x = "share", float(text)
        except ValueError:
            raise ValueError(f"max_rejected={value!r} is not {expected}") from None
    else:
        raise TypeError(f"max_rejected must be {expected}, got {type(value).__name__}")
    if kind == "count" and x < 0 or kind == "share" and not 0.0 <= x <= 1.0:
        raise ValueError(f"max_rejected={value!r} is out of range; pass {expected}")
    return kind, x


def _rejected_limit(limit, value, summary: dict) -> dict | None:
    """The ``max_rejected`` record of a summary: the limit, rows it allows, exceeded or not."""
    if limit is None:
        return None
    kind, x = limit
    rows = int(summary["events"]["rows"])
    total = int(summary["rejected"]["total"])
    allowed = x if kind == "count" else int(math.floor(round(x * rows, 9)))
    return {"limit": value if isinstance(value, str) else _py(value), "kind": kind,
            "allowed_rows": int(allowed), "rejected_rows": total, "rows": rows,
            "exceeded": total > allowed}


def _check_rejected(summary: dict) -> dict:
    rec = summary.get("max_rejected")
    if rec and rec["exceeded"]:
        share = rec["rejected_rows"] / max(1, rec["rows"])
        raise RejectedRowsError(
            f"{rec['rejected_rows']} of {rec['rows']} rows rejected ({share:.1%}), more than "
            f"max_rejected={rec['limit']!r} allows ({rec['allowed_rows']} rows); the outputs "
            f"and summary were written (rejected rows by reason: "
            f"{summary['rejected']['by_reason']}; every one in "
            f"{summary['rejected']['file']})", summary)
    return summary


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
          "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12,
          "tib": 2**40}


# --------------------------------------------------------------------------- small helpers
def parse_memory(value) -> int:
    """A memory size in bytes from an int or a string such as ``"2GB"``, ``"512MiB"``, ``"3G"``.

    ``KB``/``MB``/``GB``/``TB`` are powers of 1000, ``KiB``/``MiB``/``GiB``/``TiB`` and the
    single letters ``K``/``M``/``G``/``T`` powers of 1024.

    Examples
    --------
    >>> parse_memory("2GB"), parse_memory("1.5GiB"), parse_memory(1024)
    (2000000000, 1610612736, 1024)
    """
    if isinstance(value, bool):
        raise TypeError(f"max_memory must be a size such as '2GB' or an int of bytes, got "
                        f"{value!r}")
    if isinstance(value, numbers.Integral):
        n = int(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(f"max_memory={value!r} is not a size; pass e.g. '2GB', '512MiB', "
                             "'3G' or an int of bytes")
        n = int(float(m.group(1)) * _UNITS[unit])
    else:
        raise TypeError(f"max_memory must be a size such as '2GB' or an int of bytes, got "
                        f"{type(value).__name__}")
    if n <= 0:
        raise ValueError(f"max_memory={value!r} must be > 0")
    return n


def _write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temp file beside ``path``, fsync, rename over it."""
    from .io import atomic_open

    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=1, ensure_ascii=False, default=_json_default)


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _rss_bytes() -> int:
    """Resident memory of this process now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def _show_progress(progress) -> bool:
    if progress is None:
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):
            return False
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    return bool(progress)


# --------------------------------------------------------------------------- input files
_HIDDEN = (".", "_")


def _fmt_of(path: Path) -> str:
    from .io import _format_of

    return _format_of(path)


def resolve_inputs(spec, name: str = "events") -> tuple[list[Path], str]:
    """Files and format of an input given as a file, a folder or a glob pattern.

    Parameters
    ----------
    spec : str or os.PathLike
        A file (``.parquet``/``.pq``, ``.csv``, ``.jsonl``/``.ndjson``/``.json``, CSV/JSON
        optionally ``.gz``/``.bz2``/``.xz``/``.zst``), a folder (every file in it and its
        sub-folders with one of those extensions, names starting with ``.`` or ``_`` left
        out) or a glob pattern (``*``, ``?``, ``[...]``; ``**`` for sub-folders).
    name : str
        Parameter name used in error messages.

    Returns
    -------
    files : list of pathlib.Path
        Sorted absolute paths; their order fixes the row numbers of the input.
    fmt : {"parquet", "csv", "jsonl"}
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike) to a file, folder or glob "
                        f"pattern, got {type(spec).__name__}")
    text = os.fspath(spec)
    path = Path(text)
    if path.exists():
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(_HIDDEN)
                                       for part in p.relative_to(path).parts))
            known = [p for p in files if _known_format(p)]
            if not known:
                raise ValueError(f"{name}={text!r} is a folder with no .parquet, .csv or .jsonl "
                                 "files")
            files = known
        else:
            files = [path]
    elif any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"{name}={text!r}: no file matches this pattern")
    else:
        raise FileNotFoundError(f"{name}: no such file or directory: {text!r}")
    fmts = {}
    for f in files:
        fmts.setdefault(_fmt_of(f), f)
    if len(fmts) > 1:
        shown = ", ".join(f"{k} ({v.name})" for k, v in fmts.items())
        raise ValueError(f"{name}={text!r} mixes formats: {shown}; pass files of one format")
    return [f.resolve() for f in files], next(iter(fmts))


def _known_format(p: Path) -> bool:
    try:
        _fmt_of(p)
        return True
    except ValueError:
        return False


def _file_stamp(files) -> list:
    out = []
    for f in files:
        st = os.stat(f)
        out.append([str(f), int(st.st_size), int(st.st_mtime_ns)])
    return out


def _dataset(files: list[Path], fmt: str, string_cols=()):
    """A pyarrow dataset over ``files`` in their order (CSV ids and text read as strings)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    paths = [str(f) for f in files]
    if fmt == "parquet":
        return ds.dataset(paths, format="parquet")
    if fmt == "csv":
        import pyarrow.csv as pacsv

        # ids and text stay exactly as written ("007" is not 7); an empty cell is "" there
        # and counts as missing below, while numeric columns read "", "NA", "null" as null
        conv = pacsv.ConvertOptions(column_types={c: pa.string() for c in string_cols},
                                    strings_can_be_null=False)
        return ds.dataset(paths, format=ds.CsvFileFormat(convert_options=conv))
    for f in files:  # pyarrow reads JSON Lines; a .json holding one array is not streamable
        with open(f, "rb") as fh:
            head = fh.read(4096).lstrip()
        if head.startswith(b"["):
            raise ValueError(f"{f} holds one JSON array; batch scoring streams JSON Lines "
                             "(one record per line): convert it to .jsonl or Parquet")
    return ds.dataset(paths, format="json")


def _iter_batches(dataset, columns, batch_rows=_READ_BATCH_ROWS):
    """Record batches of ``columns`` in file order, then row order (deterministic)."""
    for frag in dataset.get_fragments():
        yield from frag.to_batches(columns=columns, batch_size=batch_rows,
                                   use_threads=True)


def _plain(arr):
    """A pyarrow array without dictionary encoding and in one chunk."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _id_kind(t) -> str | None:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_null(t):
        return "null"
    return None


def _id_array(arr):
    """An id column as string or int64 (null entries kept)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _plain(arr)
    kind = _id_kind(arr.type)
    if kind == "str":
        return pc.cast(arr, pa.string())
    if kind == "int":
        return pc.cast(arr, pa.int64())
    return pa.nulls(len(arr), pa.string())  # an all-null column read as type null


def _hash_ids(values) -> np.ndarray:
    """Fixed seeded 64-bit hash of ids (pandas' SipHash with its fixed key): the same in
    every process and run, unlike Python's hash()."""
    return pd.util.hash_array(np.asarray(values), categorize=False)


# --------------------------------------------------------------------------- model, catalogue
def _read_model(model_dir, *, verify_hashes: bool = True) -> dict:
    """What scoring needs from a saved InterestEngine, without loading its user arrays.

    The folder is checked as InterestEngine.load checks it (persistence.open_saved):
    ModelLoadError names the file at fault. The driver verifies the files' SHA-256; chunk
    processes (``verify_hashes=False``) check everything else and that the save id is the
    driver's, so that each worker does not hash the whole model (user arrays included)."""
    from .persistence import open_saved

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
    from .engine import InterestEngine

    meta = model["meta"]
    eng = InterestEngine(**meta["params"])
    eng.encoder_spec_ = meta.get("encoder")
    return eng._get_encoder()


def _job_encoder(model: dict, job):
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
        enc.cache = _staging(Path(job.out)) / "embeddings.sqlite"
    return enc


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


def _list_values(arr):
    """(flat float values, per-row lengths, null mask) of a list / fixed-size-list column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _plain(arr)
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise TypeError(f"a vector column must hold lists of numbers, got type {t}")
    null = arr.is_null().to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(arr)
    if not (pa.types.is_floating(flat.type) or pa.types.is_integer(flat.type)):
        raise TypeError(f"a vector column must hold lists of numbers, got type {t}")
    flat = pc.cast(flat, pa.float32()).to_numpy(zero_copy_only=False)
    return flat, lengths.astype(np.int64), null


def _build_catalogue(model: dict, items, vector_col, column_map, show) -> dict:
    """Item ids and unit vectors to recommend from: (ids pd.Index, vectors (n_items, dim))."""
    from safetensors import safe_open

    from .persistence import _read_ids
    from ._utils import unit_rows as _unit

    dim = model["dim"]
    if items is None:
        with safe_open(str(Path(model["dir"]) / "arrays.safetensors"), framework="numpy") as fh:
            vecs = fh.get_tensor("item_vectors_")
        ids = _read_ids(Path(model["dir"]) / "ids_items.parquet")
        source = f"the model's {len(ids)} items"
    else:
        files, fmt = resolve_inputs(items, "items")
        id_col = column_map.get("item_id", "item_id")
        text_col = column_map.get("text", "text")
        dset = _dataset(files, fmt, string_cols=[id_col, text_col])
        names = dset.schema.names
        if id_col not in names:
            raise ValueError(f"items has no column {id_col!r} (item ids); columns present: "
                             f"{names}")
        vcol = vector_col if vector_col in names else ("vector" if "vector" in names else None)
        if vcol is None and text_col not in names:
            raise ValueError(f"items needs a vector column ({vector_col or 'vector'!r}) or a "
                             f"text column ({text_col!r}); columns present: {names}")
        table = dset.to_table(columns=[id_col, vcol or text_col])
        id_arr = table.column(id_col)
        if _id_kind(id_arr.type) not in ("str", "int"):
            raise ValueError(f"items column {id_col!r} has type {id_arr.type}; expected "
                             "string or integer ids")
        id_arr = _id_array(id_arr)
        ids = pd.Index(id_arr.to_pandas())
        null = id_arr.is_null().to_numpy(zero_copy_only=False)
        if _id_kind(id_arr.type) == "str":  # "" or "  " is a missing id, as in the events
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
        if vcol is not None:
            flat, lengths, vnull = _list_values(table.column(vcol))
            if vnull.any():
                raise ValueError(f"items column {vcol!r}: missing vector at row "
                                 f"{int(np.argmax(vnull))}; expected a list of {dim} numbers")
            vecs = _check_vectors(vcol, flat, lengths, dim, "items")
            source = f"{len(ids)} items from {items} (column {vcol!r})"
        else:
            texts = table.column(text_col).to_pandas()
            blank = texts.isna().to_numpy() | (texts.astype(str).str.strip().str.len() == 0
                                               ).to_numpy()
            if blank.any():
                raise ValueError(f"items column {text_col!r}: missing or empty text at row "
                                 f"{int(np.argmax(blank))} (item_id {ids[int(np.argmax(blank))]!r})"
                                 f"; expected a non-empty string. {int(blank.sum())} rows "
                                 "affected")
            vecs = _model_encoder(model).encode(texts.tolist(), show_progress=show)
            source = f"{len(ids)} items from {items} (encoded column {text_col!r})"
    if len(ids) == 0:
        raise ValueError("no items to recommend: the model has no items; pass items= (a table "
                         "with item_id and a vector or text column)")
    vecs = np.asarray(vecs, np.float32)
    if vecs.shape[1] != dim:
        raise ValueError(f"item vectors have dimension {vecs.shape[1]} but the model's is "
                         f"{dim}; use vectors from the model's encoder")
    return {"ids": ids, "vectors": np.ascontiguousarray(_unit(vecs)), "source": source}


def _build_index(kind: str, vectors: np.ndarray, ids: pd.Index, folder: Path) -> dict:
    """Fit the retrieval index over the catalogue once (driver) and save it for the chunk
    processes; it also holds the catalogue's ids and unit vectors. Returns what was built."""
    from .retrieval import ItemIndex

    index = ItemIndex(kind=kind, random_state=0).fit(vectors, item_ids=ids)
    index.save(folder)
    return {"requested": kind, "kind": index.kind_, "reason": index.reason_,
            "nlist": index.nlist_, "nprobe": index.nprobe_, "candidates": index.candidates_,
            "save_id": _index_id(folder)}


def _index_id(folder: Path) -> str:
    """Save id of the index in ``folder``: part of the per-process cache keys, so that a
    long-lived worker never serves an earlier job's catalogue from the same out."""
    return json.loads((folder / "meta.json").read_text())["save_id"]


def _load_index(folder: Path):
    from .retrieval import ItemIndex

    return ItemIndex.load(folder)


# --------------------------------------------------------------------------- job spec
@dataclass(frozen=True)
class _Job:
    """What a chunk process needs (small, sent to Dask workers): paths and parameters."""

    out: str
    model_dir: str
    save_id: str
    k: int
    n_buckets: int
    reference_time: float
    has_text: bool
    has_vector: bool
    has_weight: bool
    has_item: bool
    user_kind: str
    index_id: str
    two_stage: bool = False
    behaviour_time: float | None = None
    embedding_cache: str | bool | None = None  # a path, None (model's or job's), False (none)


def _staging(out: Path) -> Path:
    return out / "_staging"


_RESOURCES: dict = {}
#: How many times this process loaded a job's resources (tests check: once per process).
_LOADS = {"count": 0}


def _resources(job: _Job) -> dict:
    """Model state, catalogue, index and (lazily) encoder, loaded once per process."""
    key = (job.out, job.model_dir, job.save_id, job.index_id)
    res = _RESOURCES.get(key)
    if res is None:
        model = _read_model(job.model_dir, verify_hashes=False)  # the driver hashed it
        if model["save_id"] != job.save_id:
            raise ValueError(f"the model in {job.model_dir} was saved again while scoring "
                             f"(save id {model['save_id']} != {job.save_id}); restart the job "
                             "with a new out")
        st = _staging(Path(job.out))
        index = _load_index(st / "index")
        cat = {"ids": index.item_ids_, "vectors": index.vectors_}  # unit rows
        res = {"model": model, "catalogue": cat, "index": index,
               "encoder": None, "generator": None, "ranker": None}
        if job.two_stage:
            res["generator"], res["ranker"] = _load_two_stage(job.model_dir, cat["ids"])
        _RESOURCES.clear()  # one job per process at a time: drop an earlier job's arrays
        _RESOURCES[key] = res
        _LOADS["count"] += 1
    return res


def _load_two_stage(model_dir: str, catalogue_ids: pd.Index):
    """The saved engine's CandidateGenerator and Ranker, loaded as InterestEngine.load loads
    them (the driver verified the files' hashes). They hold the engine's fitted state (its
    training users' arrays, EASE's ``B``, the content index): a cost per process that
    follows the model, not the users scored."""
    from .engine import InterestEngine
    from .persistence import load_engine

    eng = load_engine(InterestEngine, Path(model_dir), verify_hashes=False)
    gen, ranker = eng.candidates_, eng.ranker_
    if gen is None or ranker is None:  # open_saved/_read_model said it has a ranker
        raise ValueError(f"the model in {model_dir} has no candidate state or ranker; save "
                         "it again with this interestflow")
    if not gen.item_ids_.equals(catalogue_ids):
        raise ValueError(f"the catalogue's item ids differ from the model's in {model_dir}: "
                         "a model with a ranker recommends its own items only")
    return gen, ranker


# --------------------------------------------------------------------------- row validation
def _ts_to_seconds(arr, ts_unit: str = "s") -> tuple[np.ndarray, np.ndarray]:
    """(seconds float64, reason code per row: 0 ok) of a ts column; numbers in ``ts_unit``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .validation import TS_UNITS, _datetimes_to_seconds, plausible_ts

    arr = _plain(arr)
    t = arr.type
    n = len(arr)
    null = arr.is_null().to_numpy(zero_copy_only=False)
    reason = np.where(null, _R_TS_MISSING, 0).astype(np.int8)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        if pa.types.is_date(t):
            arr = pc.cast(arr, pa.timestamp("s"))
            t = arr.type
        raw = pc.fill_null(pc.cast(arr, pa.int64()), 0).to_numpy(zero_copy_only=False)
        scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[t.unit]
        secs = raw.astype(np.float64) * scale
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        secs = pc.fill_null(pc.cast(arr, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        reason[(reason == 0) & ~np.isfinite(secs)] = _R_TS_NONFINITE
        secs = secs * TS_UNITS[ts_unit]
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        s = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)
        empty = (~null) & (s.fillna("").str.strip().str.len() == 0).to_numpy()
        reason[empty] = _R_TS_MISSING
        parsed = pd.to_datetime(s.where(reason == 0), utc=True, errors="coerce",
                                format="ISO8601")
        bad = (reason == 0) & parsed.isna().to_numpy()
        reason[bad] = _R_TS_BAD
        secs = np.full(n, np.nan)
        ok = ~parsed.isna().to_numpy()
        if ok.any():
            secs[ok] = _datetimes_to_seconds(parsed[ok])
    else:
        reason[reason == 0] = _R_TS_BAD
        secs = np.full(n, np.nan)
    # milliseconds read as seconds, year 9999, negative sentinels: never mixed in silently
    reason[(reason == 0) & ~plausible_ts(secs)] = _R_TS_RANGE
    return secs, reason


def _weights(arr) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _plain(arr)
    t = arr.type
    reason = np.zeros(len(arr), np.int8)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        w = pc.fill_null(pc.cast(arr, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        s = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)
        missing = s.isna().to_numpy() | (s.fillna("").astype(str).str.strip().str.len() == 0
                                         ).to_numpy()
        w = pd.to_numeric(s.where(~missing), errors="coerce").to_numpy(np.float64)
        reason[~missing & np.isnan(w)] = _R_W_BAD
    else:
        w = np.full(len(arr), np.nan)
        reason[:] = _R_W_BAD
    reason[(reason == 0) & np.isnan(w)] = _R_W_MISSING
    reason[(reason == 0) & np.isinf(w)] = _R_W_INF
    reason[(reason == 0) & (w < 0)] = _R_W_NEG
    return w, reason


def _first(reason: np.ndarray, mask: np.ndarray, code: int) -> None:
    """Give rows still without a reason (0) where ``mask`` holds the reason ``code``."""
    reason[(reason == 0) & mask] = code


# --------------------------------------------------------------------------- staging pass
class _Stager:
    """Staging of one input file: validate, reject with reasons, spill rows per bucket.

    Spills are named ``bNNNNN/fFFFFF-sSSSSSS.parquet`` (file, flush), so the stagers of
    different files (Dask tasks) never write the same file.
    """

    def __init__(self, st: Path, n_buckets: int, cols: dict, user_kind: str, dim: int,
                 catalogue_ids: pd.Index, now_s, buffer_bytes: int, file_index: int,
                 file_name: str, row0: int, ts_unit: str = "s"):
        import pyarrow as pa

        self.st, self.B, self.cols, self.dim = st, n_buckets, cols, dim
        self.ts_unit = ts_unit
        self.reasons = {**REJECT_REASONS, _R_TS_RANGE: _ts_range_reason(ts_unit)}
        self.cat_index = catalogue_ids
        self.now_s = now_s
        self.buffer_bytes = buffer_bytes
        self.file_index, self.file_name, self.row0 = file_index, file_name, row0
        self.buffers: list[list] = [[] for _ in range(n_buckets)]
        self.buffered = 0
        self.rejected: list = []
        self.rejected_rows = 0
        self.flushes = 0
        self.rows = 0
        self.accepted = 0
        self.by_reason: dict[str, int] = {}
        self.examples: list = []
        self.max_ts = -np.inf
        self.max_item_ts = -np.inf  # latest event with a catalogue item (fit's behaviour_time_)
        self.bucket_rows = np.zeros(n_buckets, np.int64)
        fields = [("user_id", pa.string() if user_kind == "str" else pa.int64()),
                  ("row", pa.int64()), ("ts", pa.float64())]
        if "weight" in cols:
            fields.append(("weight", pa.float64()))
        if "item_id" in cols:
            fields.append(("item_row", pa.int64()))
        if "text" in cols:
            fields.append(("text", pa.string()))
        if "vector" in cols:
            fields.append(("vector", pa.list_(pa.float32())))
        self.schema = pa.schema(fields)
        self.reject_schema = pa.schema([("row", pa.int64()), ("file", pa.string()),
                                        ("file_row", pa.int64()), ("reason", pa.string()),
                                        ("user_id", pa.string())])

    def add(self, batch) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        n = batch.num_rows
        c = self.cols
        file_row0 = self.rows
        rows = np.arange(self.row0 + file_row0, self.row0 + file_row0 + n, dtype=np.int64)
        self.rows += n
        reason = np.zeros(n, np.int8)
        uid = _id_array(batch.column(c["user_id"]))
        u_null = uid.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_string(uid.type):
            u_null |= pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(uid)), 0),
                                   True).to_numpy(zero_copy_only=False)
        _first(reason, u_null, _R_USER)
        ts, ts_reason = _ts_to_seconds(batch.column(c["ts"]), self.ts_unit)
        reason[reason == 0] = ts_reason[reason == 0]
        if self.now_s is not None:
            _first(reason, np.nan_to_num(ts, nan=-np.inf) > self.now_s, _R_TS_LATE)
        if "weight" in c:
            w, w_reason = _weights(batch.column(c["weight"]))
            reason[reason == 0] = w_reason[reason == 0]
        has_content = np.zeros(n, bool)
        vec_col = None
        if "vector" in c:
            arr = _plain(batch.column(c["vector"]))
            flat, lengths, vnull = _list_values(arr)
            _first(reason, ~vnull & (lengths != self.dim), _R_VEC_LEN)
            good_len = ~vnull & (lengths == self.dim)
            starts = np.concatenate([[0], np.cumsum(lengths)])[:-1]
            if good_len.any():
                idx = (starts[good_len][:, None] + np.arange(self.dim)).ravel()
                finite = np.isfinite(flat[idx]).reshape(-1, self.dim).all(axis=1)
                nonfinite = np.zeros(n, bool)
                nonfinite[np.flatnonzero(good_len)[~finite]] = True
                _first(reason, nonfinite, _R_VEC_NONFINITE)
                good_len[nonfinite] = False
            has_content |= good_len
            vec_col = pc.if_else(pa.array(good_len), pc.cast(arr, pa.list_(pa.float32())),
                                 pa.nulls(n, pa.list_(pa.float32())))
        text = None
        if "text" in c:
            text = _plain(batch.column(c["text"]))
            if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)
                    or pa.types.is_null(text.type)):
                raise ValueError(f"events column {c['text']!r} has type {text.type}; expected "
                                 "strings")
            text = pc.cast(text, pa.string())
            blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0),
                                 True).to_numpy(zero_copy_only=False)
            text = pc.if_else(pa.array(blank), pa.nulls(n, pa.string()), text)
            has_content |= ~blank
        item_row = None
        if "item_id" in c:
            iid = _id_array(batch.column(c["item_id"]))
            i_null = iid.is_null().to_numpy(zero_copy_only=False)
            if pa.types.is_string(iid.type):  # "" or "  " names no item, as for user_id
                i_null |= pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(iid)),
                                                0), True).to_numpy(zero_copy_only=False)
            vals = pc.fill_null(iid, "" if pa.types.is_string(iid.type) else 0).to_numpy(
                zero_copy_only=False)
            item_row = self.cat_index.get_indexer(pd.Index(vals)).astype(np.int64)
            item_row[i_null] = -1
            has_content |= item_row >= 0
        _first(reason, ~has_content, _R_CONTENT)

        bad = reason != 0
        if bad.any():
            self._reject(rows[bad], reason[bad], uid.filter(pa.array(bad)),
                         file_row0 + np.flatnonzero(bad))
        good = ~bad
        ng = int(good.sum())
        if not ng:
            return
        self.accepted += ng
        self.max_ts = max(self.max_ts, float(ts[good].max()))
        if item_row is not None and (good & (item_row >= 0)).any():
            self.max_item_ts = max(self.max_item_ts, float(ts[good & (item_row >= 0)].max()))
        keep = pa.array(good)
        uid_g = uid.filter(keep)
        hashes = _hash_ids(uid_g.to_numpy(zero_copy_only=False))
        bucket = (hashes % np.uint64(self.B)).astype(np.int64)
        cols = {"user_id": uid_g, "row": pa.array(rows[good]), "ts": pa.array(ts[good])}
        if "weight" in c:
            cols["weight"] = pa.array(w[good])
        if item_row is not None:
            cols["item_row"] = pa.array(item_row[good])
        if text is not None:
            cols["text"] = text.filter(keep)
        if vec_col is not None:
            cols["vector"] = vec_col.filter(keep)
        table = pa.table(cols, schema=self.schema)
        order = np.argsort(bucket, kind="stable")
        table = table.take(pa.array(order))
        bounds = np.searchsorted(bucket[order], np.arange(self.B + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            self.buffers[b].append(table.slice(bounds[b], bounds[b + 1] - bounds[b]))
        self.bucket_rows += np.diff(bounds)
        self.buffered += table.nbytes
        if self.buffered >= self.buffer_bytes:
            self.flush()

    def _reject(self, rows, codes, uid, file_rows) -> None:
        import pyarrow as pa

        reasons = np.array([self.reasons[int(x)] for x in codes], dtype=object)
        for r, cnt in zip(*np.unique(reasons.astype(str), return_counts=True)):
            self.by_reason[str(r)] = self.by_reason.get(str(r), 0) + int(cnt)
        uid_s = pa.array(uid.to_pandas().astype("string"), pa.string()) if len(uid) else \
            pa.array([], pa.string())
        fname = self.file_name
        t = pa.table({"row": pa.array(rows, pa.int64()),
                      "file": pa.array([fname] * len(rows), pa.string()),
                      "file_row": pa.array(np.asarray(file_rows, np.int64)),
                      "reason": pa.array(reasons.tolist(), pa.string()), "user_id": uid_s},
                     schema=self.reject_schema)
        for i in range(min(len(rows), _MAX_EXAMPLES - len(self.examples))):
            self.examples.append({"row": int(rows[i]), "file": fname,
                                  "file_row": int(file_rows[i]), "reason": str(reasons[i]),
                                  "user_id": uid_s[i].as_py()})
        self.rejected.append(t)
        self.rejected_rows += len(rows)
        self.buffered += t.nbytes

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        seq = self.flushes
        for b, parts in enumerate(self.buffers):
            if not parts:
                continue
            folder = self.st / f"b{b:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(parts), folder / f"f{self.file_index:05d}-"
                           f"s{seq:06d}.parquet")
            self.buffers[b] = []
        if self.rejected:
            folder = self.st / "rejected"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(self.rejected),
                           folder / f"f{self.file_index:05d}-s{seq:06d}.parquet")
            self.rejected = []
        self.flushes += 1
        self.buffered = 0


@dataclass(frozen=True)
class _Input:
    """The events input as the file tasks of the count and staging passes need it."""

    files: tuple
    fmt: str
    string_cols: tuple
    cols: tuple  # ((standard name, source column), ...)

    def dataset(self, fi: int):
        return _dataset([Path(self.files[fi])], self.fmt, self.string_cols)


def _count_file(inp: _Input, fi: int) -> dict:
    """Rows of file ``fi`` and the k-minimum-values sketch of its user id hashes (the
    ``_SKETCH_K`` smallest distinct hashes), reading only the user id column."""
    user_col = dict(inp.cols)["user_id"]
    kept = np.zeros(0, np.uint64)
    rows = 0
    for batch in _iter_batches(inp.dataset(fi), [user_col]):
        uid = _id_array(batch.column(0))
        vals = uid.drop_null().to_numpy(zero_copy_only=False)
        if len(vals):
            h = np.unique(_hash_ids(vals))
            kept = np.union1d(kept, h[:_SKETCH_K])[:_SKETCH_K]
        rows += batch.num_rows
    return {"rows": rows, "sketch": kept}


def _merge_sketches(sketches) -> np.ndarray:
    """The sketch of a union of files: the ``_SKETCH_K`` smallest distinct hashes of their
    sketches (order-independent, so tasks may finish in any order)."""
    kept = np.zeros(0, np.uint64)
    for sk in sketches:
        kept = np.union1d(kept, sk)[:_SKETCH_K]
    return kept


def _sketch_count(kept: np.ndarray) -> tuple[int, bool]:
    """(distinct users, exact?) from a sketch: exact below ``_SKETCH_K`` hashes, else the
    k-minimum-values estimate (the K-th smallest of n uniform hashes sits near K/n of the
    range; relative error about 1/sqrt(K) = 0.8%)."""
    if len(kept) < _SKETCH_K:
        return len(kept), True
    return int(round((_SKETCH_K - 1) / (float(kept[-1]) / 2.0**64))), False


@dataclass(frozen=True)
class _StageSpec:
    """What a staging task needs besides its file."""

    inp: _Input
    out: str
    n_buckets: int
    user_kind: str
    dim: int
    now_s: float | None
    buffer_bytes: int
    index_id: str
    ts_unit: str = "s"


_CATALOGUE_IDS: dict = {}


def _catalogue_ids(out: str, index_id: str) -> pd.Index:
    """The catalogue's item ids (saved with the index), once per process and job."""
    ids = _CATALOGUE_IDS.get((out, index_id))
    if ids is None:
        import pyarrow.parquet as pq

        table = pq.read_table(_staging(Path(out)) / "index" / "ids.parquet")
        ids = pd.Index(table.column("id").to_pandas()).rename(None)
        _CATALOGUE_IDS.clear()
        _CATALOGUE_IDS[(out, index_id)] = ids
    return ids


def _stage_file(spec: _StageSpec, fi: int, row0: int) -> dict:
    """Stage file ``fi`` (its rows numbered from ``row0``); returns its counts."""
    inp = spec.inp
    stager = _Stager(_staging(Path(spec.out)), spec.n_buckets, dict(inp.cols), spec.user_kind,
                     spec.dim, _catalogue_ids(spec.out, spec.index_id), spec.now_s,
                     spec.buffer_bytes, fi, inp.files[fi], row0, spec.ts_unit)
    src_cols = list(dict.fromkeys(c for _, c in inp.cols))
    for frag in inp.dataset(fi).get_fragments():
        for batch in frag.to_batches(columns=src_cols, batch_size=_READ_BATCH_ROWS):
            stager.add(batch)
    stager.flush()
    return {"file": fi, "rows": stager.rows, "accepted": stager.accepted,
            "rejected": stager.rejected_rows, "by_reason": stager.by_reason,
            "examples": stager.examples, "max_ts": float(stager.max_ts),
            "max_item_ts": float(stager.max_item_ts),
            "bucket_rows_max": int(stager.bucket_rows.max()), "pid": os.getpid()}


def _bytes_per_row(dataset, files, fmt, columns, rows) -> float:
    """Estimated in-memory bytes of one staged row (for max_memory)."""
    if not rows:
        return 64.0
    if fmt == "parquet":
        total = 0
        for frag in dataset.get_fragments():
            md = frag.metadata
            for g in range(md.num_row_groups):
                rg = md.row_group(g)
                for j in range(rg.num_columns):
                    col = rg.column(j)
                    if col.path_in_schema.split(".")[0] in columns:
                        total += col.total_uncompressed_size
        return max(32.0, total / rows + 16)
    size = sum(os.path.getsize(f) for f in files)
    compressed = any(str(f).endswith((".gz", ".bz2", ".xz", ".zst")) for f in files)
    return max(32.0, size * (5 if compressed else 1) / rows + 16)


def _chunk_users_for_memory(max_memory: int, *, n_items: int, dim: int, n_seg: int, k: int,
                            rows_per_user: float, bytes_per_row: float, has_text: bool,
                            has_vector: bool, index: dict | None = None,
                            two_stage: dict | None = None) -> int:
    """Users per chunk so that one scoring process stays under ``max_memory`` (an estimate:
    see the benchmark for measured peaks). ``index``: what :func:`_build_index` built.

    ``two_stage`` (the :func:`_read_model` record of a model with a ranker) adds the fixed
    cost of the two stages: the loaded engine (its arrays file, EASE's ``B`` included), the
    candidate generator's own content index, and one sub-chunk of ``CandidateConfig.
    chunk_users`` users: its candidates (``chunk_users x total cut`` rows of the ranker's
    features in float32, plus the union's keys and the per-source entries), EASE's dense
    ``chunk_users x n_items`` float32 block when EASE is on, and the segment sources'
    ``chunk_users x pool`` float64 blocks. Per user it adds the seeds/seen CSR entries, the
    (k) ranked output and the content source's (cut) search result."""
    from .retrieval import bf16_scan_bytes

    # the catalogue twice (the index's unit rows and FAISS's lists, or the exact kind's
    # copy), plus the bf16 copy of the lists that a bf16 IVF scan makes (padded per list)
    index_bytes = 2 * n_items * dim * 4
    if index and index.get("candidates") == "bfloat16":
        index_bytes += bf16_scan_bytes(n_items, dim, index["nlist"])
    fixed = (_rss_bytes() + index_bytes + _RUNTIME_MARGIN_BYTES
             + 2 * _GATHER_ROWS * dim * 4 + (_ENCODER_BYTES if has_text else 0))
    per_row = 3 * bytes_per_row + 24 + (2 * dim * 4 if has_vector else 0)
    per_user = rows_per_user * per_row + 3 * dim * 4 + 3 * n_seg * 4 \
        + (k + rows_per_user) * 48
    if two_stage is not None:
        from .candidates import CandidateConfig

        cut = CandidateConfig.from_dict(two_stage["candidates_config"]["config"]).content
        fixed += _two_stage_bytes(two_stage, dim, n_seg)
        # seeds/seen CSR entries, the ranked output, segment weights, and the content
        # source searched for the whole chunk at once (scores and rows, cut per user)
        per_user += rows_per_user * 3 * 8 + k * 16 + n_seg * 4 + cut * 12
    # 15% headroom: allocator caches and the moment-to-moment mix of buffers (measured
    # peaks at max_memory=1.8GB: 1.42-1.86 GB)
    room = max_memory / 1.15 - fixed
    users = int(room // per_user) if room > 0 else 0
    if users < 100:
        need = 1.15 * (fixed + 100 * per_user)
        raise ValueError(
            f"max_memory={max_memory} bytes is too small: about {fixed / 2**20:.0f} MiB go to "
            f"the process, the {n_items} catalogue vectors and buffers, and each user needs "
            f"about {per_user / 1024:.1f} KiB; pass max_memory >= {math.ceil(need / 2**20)}MiB")
    return users


def _two_stage_bytes(model: dict, dim: int, n_seg: int) -> int:
    """Fixed memory of the two stages in a scoring process (see _chunk_users_for_memory)."""
    from .candidates import SOURCES, CandidateConfig
    from .ranker import RANKER_FEATURES

    cfg = CandidateConfig.from_dict(model["candidates_config"]["config"])
    n_items = int(model["n_items"])
    # ranker.rank_users runs num_threads sub-chunks side by side
    threads = int((model.get("ranker_config") or {}).get("num_threads", 2))
    cu = cfg.chunk_users * max(1, threads)
    total_cut = sum(cfg.cut(s) for s in SOURCES)
    # features twice (candidate columns, then the ranker's copy with its extra columns),
    # union keys / items / per-source entries (~6 int64 per entry)
    cand = cu * total_cut * (2 * len(RANKER_FEATURES) * 4 + 6 * 8)
    ease = 2 * cu * n_items * 4 if cfg.ease > 0 and n_items <= cfg.ease_max_items else 0
    pool = n_seg * cfg.segment_pool_factor * max(cfg.segment_popularity, cfg.segment_trending)
    segment = 2 * cu * min(n_items, pool) * 8
    return int(model["arrays_bytes"]) + 2 * n_items * dim * 4 + cand + ease + segment


# --------------------------------------------------------------------------- chunk scoring
def _part_name(b: int) -> str:
    return f"part-{b:05d}.parquet"


def score_chunk(job: _Job, b: int) -> dict:
    """Score bucket ``b`` of a staged job and write its two part files atomically.

    Idempotent: running it again (after a crash, or twice at once on two workers) writes the
    same files. Returns the chunk's counts and stage timings.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .interests import decayed_user_means
    from .io import write_parquet
    from ._utils import unit_rows as _unit
    from .segments import soft_features

    t_all = time.perf_counter()
    tm = {}
    t = time.perf_counter()
    res = _resources(job)
    tm["load_s"] = time.perf_counter() - t
    model, cat, index = res["model"], res["catalogue"], res["index"]
    out = Path(job.out)
    t = time.perf_counter()
    folder = _staging(out) / f"b{b:05d}"
    files = sorted(folder.glob("f*.parquet")) if folder.is_dir() else []
    if files:
        table = pa.concat_tables([pq.read_table(f) for f in files])
        # deterministic order whatever the spill order: by user, then input row
        table = table.sort_by([("user_id", "ascending"), ("row", "ascending")])
    else:
        table = None
    tm["read_s"] = time.perf_counter() - t
    n_rows = 0 if table is None else table.num_rows
    dim = model["dim"]
    centroids = model["centroids"]
    n_seg = len(centroids)
    stats = {"bucket": b, "events": n_rows, "users": 0, "recommendations": 0,
             "rejected": {}, "pid": os.getpid()}

    if n_rows:
        uid = table.column("user_id").to_numpy()
        if uid.dtype == object:
            change = np.flatnonzero(uid[1:] != uid[:-1]) + 1
        else:
            change = np.flatnonzero(np.diff(uid) != 0) + 1
        offsets = np.concatenate([[0], change, [n_rows]]).astype(np.int64)
        user_ids = uid[offsets[:-1]]
        ts = table.column("ts").to_numpy()
        w = table.column("weight").to_numpy() if job.has_weight else np.ones(n_rows)
        item_row = table.column("item_row").to_numpy() if job.has_item else \
            np.full(n_rows, -1, np.int64)

        # where each event's vector comes from: its vector > its text > its item
        t = time.perf_counter()
        src_vec = np.zeros(n_rows, bool)
        vec_pos = None
        if job.has_vector:
            vcol = table.column("vector").combine_chunks()
            src_vec = ~vcol.is_null().to_numpy(zero_copy_only=False)
            vec_pos = np.cumsum(src_vec) - 1
            ev_vectors = vcol.filter(pa.array(src_vec)).flatten().to_numpy().reshape(-1, dim)
        src_text = np.zeros(n_rows, bool)
        if job.has_text:
            tcol = table.column("text")
            src_text = ~tcol.is_null().to_numpy(zero_copy_only=False) & ~src_vec
            codes, uniques = pd.factorize(pd.Series(tcol.filter(pa.array(src_text)).to_numpy(
                zero_copy_only=False), dtype=object), sort=False)
            text_pos = np.full(n_rows, -1, np.int64)
            text_pos[src_text] = codes
            if len(uniques):
                if res["encoder"] is None:
                    res["encoder"] = _job_encoder(model, job)
                enc = res["encoder"]
                text_vectors = np.asarray(enc.encode(list(uniques), show_progress=False),
                                          np.float32)
                cache = getattr(enc, "cache", None)
                stats["texts"] = {
                    "distinct": len(uniques),
                    "encoded": int(enc.cache_encoded_ if cache is not None else len(uniques)),
                    "store": ("none" if cache is None else "job" if Path(cache) ==
                              _staging(Path(job.out)) / "embeddings.sqlite" else "persistent")}
        src_item = ~src_vec & ~src_text
        tm["encode_s"] = time.perf_counter() - t

        t = time.perf_counter()
        n_users = len(user_ids)
        means = np.empty((n_users, dim), np.float32)
        log2w = np.empty(n_users)
        gather = np.empty((min(n_rows, max(_GATHER_ROWS, int(np.diff(offsets).max()))), dim),
                          np.float32)
        u0 = 0
        while u0 < n_users:
            # users [u0, u1) with at most _GATHER_ROWS rows (or one user, however many)
            u1 = int(np.searchsorted(offsets, offsets[u0] + _GATHER_ROWS, side="right")) - 1
            u1 = min(max(u1, u0 + 1), n_users)
            r0, r1 = int(offsets[u0]), int(offsets[u1])
            block = gather[: r1 - r0]
            sl = slice(r0, r1)
            m = src_item[sl]
            if m.all():  # one source (the usual case): a plain take, half the copies
                np.take(cat["vectors"], item_row[sl], axis=0, out=block)
            else:
                block[m] = cat["vectors"][item_row[sl][m]]
                if job.has_vector:
                    m = src_vec[sl]
                    block[m] = ev_vectors[vec_pos[sl][m]]
                if job.has_text:
                    m = src_text[sl]
                    block[m] = text_vectors[text_pos[sl][m]]
            mu, lw = decayed_user_means(block, offsets[u0:u1 + 1] - r0, ts[sl], w[sl],
                                        half_life_days=model["half_life_days"],
                                        now=job.reference_time)
            means[u0:u1], log2w[u0:u1] = mu, lw
            u0 = u1
        alive = np.isfinite(log2w)
        if not alive.all():  # only zero-weight events: no interest signal, reported
            dead_rows = int(np.diff(offsets)[~alive].sum())
            stats["rejected"][REASON_ZERO_WEIGHT] = dead_rows
            stats["zero_weight_users"] = int((~alive).sum())
            stats["zero_weight_examples"] = [_py(x) for x in user_ids[~alive][:5]]
        U = _unit(means[alive])
        user_ids = user_ids[alive]
        counts = np.diff(offsets)[alive]
        keep_row = np.repeat(alive, np.diff(offsets))
        tm["user_vectors_s"] = time.perf_counter() - t

        t = time.perf_counter()
        sims = U @ centroids.T
        segment = np.argmax(sims, axis=1).astype(np.int64) if n_seg else \
            np.zeros(len(U), np.int64)
        soft = soft_features(U, centroids, model["temperature"])
        tm["segments_s"] = time.perf_counter() - t

        t = time.perf_counter()
        user_of_row = np.repeat(np.arange(len(U), dtype=np.int64), counts)
        ir = item_row[keep_row]
        has = ir >= 0
        if job.two_stage:
            scores, rows = _rank_two_stage(
                res, job, U, soft, segment, user_of_row[has], ir[has], ts[keep_row][has],
                w[keep_row][has], min(job.k, len(cat["ids"])))
            tm["two_stage_s"] = time.perf_counter() - t
        else:
            # exclude the catalogue items each user's events mention
            pairs = np.unique(user_of_row[has] * len(cat["ids"]) + ir[has])
            ex_user = pairs // len(cat["ids"])
            ex_item = pairs % len(cat["ids"])
            indptr = np.concatenate([[0], np.cumsum(np.bincount(ex_user, minlength=len(U)))])
            scores, rows = index.search(U, job.k, exclude=(indptr.astype(np.int64), ex_item))
            tm["retrieval_s"] = time.perf_counter() - t
    else:
        user_ids = np.zeros(0, np.int64 if job.user_kind == "int" else object)
        U = np.zeros((0, dim), np.float32)
        segment = np.zeros(0, np.int64)
        soft = np.zeros((0, n_seg), np.float32)
        k_eff = min(job.k, len(cat["ids"]))
        scores, rows = np.zeros((0, k_eff), np.float32), np.zeros((0, k_eff), np.int64)

    t = time.perf_counter()
    id_type = pa.string() if job.user_kind == "str" else pa.int64()
    users = {"user_id": pa.array(user_ids, id_type),
             "vector": pa.ListArray.from_arrays(
                 pa.array(np.arange(0, (len(U) + 1) * dim, dim, dtype=np.int32)),
                 pa.array(U.ravel(), pa.float32())),
             "segment": pa.array(segment, pa.int64())}
    for j in range(n_seg):
        users[f"segment_{j}"] = pa.array(soft[:, j], pa.float32())
    valid = rows >= 0
    n_per = valid.sum(axis=1)
    item_ids = cat["ids"]
    recs = pa.table({
        "user_id": pa.array(np.repeat(user_ids, n_per), id_type),
        "item_id": pa.array(item_ids.to_numpy()[rows[valid]],
                            pa.int64() if _is_int_index(item_ids) else pa.string()),
        "score": pa.array(scores[valid].astype(np.float32), pa.float32()),
        "rank": pa.array(np.cumsum(valid, axis=1)[valid].astype(np.int64), pa.int64()),
    })
    write_parquet(pa.table(users), out / "users" / _part_name(b))
    write_parquet(recs, out / "recommendations" / _part_name(b))
    tm["write_s"] = time.perf_counter() - t
    stats["users"] = int(len(U))
    stats["recommendations"] = int(recs.num_rows)
    tm["chunk_s"] = time.perf_counter() - t_all
    stats["timings_s"] = tm
    stats["resource_loads"] = _LOADS["count"]
    return stats


def _rank_two_stage(res, job: _Job, U, soft, segment, iu, ii, ts, w, k: int):
    """Candidates, then the ranker, for the users of one chunk
    (:func:`interestflow.ranker.rank_users`; recency relative to ``job.behaviour_time``, the
    job's latest event with a catalogue item, as ``fit``'s ``behaviour_time_``)."""
    from .ranker import rank_users

    t_ref = job.behaviour_time if job.behaviour_time is not None else job.reference_time
    return rank_users(res["generator"], res["ranker"], U, soft, segment, iu, ii, ts, w, k,
                      t_ref=t_ref)


def _is_int_index(idx: pd.Index) -> bool:
    return pd.api.types.is_integer_dtype(idx.dtype)


def _py(x):
    return x.item() if isinstance(x, np.generic) else x


# --------------------------------------------------------------------------- driver
class _LocalRunner:
    """Runs tasks one after the other in this process (the Dask runner's interface)."""

    def map(self, fn, arg_tuples, on_done) -> None:
        for args in arg_tuples:
            on_done(args, fn(*args))


@contextlib.contextmanager
def _runner(dask_spec):
    if dask_spec is None:
        yield _LocalRunner()
        return
    from .distributed import session

    with session(dask_spec) as runner:
        yield runner


def _fingerprint(files, fmt, items_files, model, params) -> dict:
    return {"events": {"format": fmt, "files": _file_stamp(files)},
            "items": None if items_files is None else _file_stamp(items_files),
            "model": {"dir": model["dir"], "save_id": model["save_id"]},
            "params": params}


def _diff(a, b, prefix="") -> list[str]:
    """Paths where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if a == b else [f"{prefix}: {a!r} -> {b!r}"]


def _on_chunk_done(manifest: dict, path: Path, b: int, stats: dict) -> None:
    """Record a finished chunk in the manifest (atomic rewrite; only the driver calls it)."""
    manifest["chunks"][str(b)] = stats
    _write_json_atomic(path, manifest)


def _check_columns(schema_names, column_map, vector_col) -> dict:
    """Source column of each standard column present: {"user_id": src, ...}."""
    if column_map is None:
        column_map = {}
    if not isinstance(column_map, dict):
        raise TypeError(f"column_map must be a dict {{standard name: column in the file}}, "
                        f"got {type(column_map).__name__}")
    bad = [k for k in column_map if k not in STANDARD_COLUMNS]
    if bad:
        hint = ""
        if all(v in STANDARD_COLUMNS for v in column_map.values()):
            hint = " (it maps standard names to the file's columns: did you pass it reversed?)"
        raise ValueError(f"column_map keys {bad} are not standard column names; valid keys: "
                         f"{list(STANDARD_COLUMNS)}{hint}")
    cols = {}
    for std in STANDARD_COLUMNS:
        src = column_map.get(std, std)
        if src in schema_names:
            cols[std] = src
        elif std in column_map:
            raise ValueError(f"column_map[{std!r}]={src!r} is not a column of the events; "
                             f"columns present: {schema_names}")
    for std in ("user_id", "ts"):
        if std not in cols:
            raise ValueError(f"events have no {std!r} column; columns present: {schema_names}; "
                             f"name it with column_map={{{std!r}: ...}} (--{std.split('_')[0]}"
                             "-col)")
    if vector_col is not None:
        if vector_col not in schema_names:
            raise ValueError(f"vector_col={vector_col!r} is not a column of the events; "
                             f"columns present: {schema_names}")
        cols["vector"] = vector_col
    if not {"text", "item_id", "vector"} & set(cols):
        raise ValueError(f"events have no text, item_id or vector column: nothing to build "
                         f"user vectors from; columns present: {schema_names}")
    return cols


def _stage(runner, out, st, marker, man_path, manifest, model, items, vector_col, cmap, show,
           cols, dataset, dataset_string_cols, files, fmt, user_kind, index_kind, mem,
           chunk_users, k, now_s, ts_unit="s") -> dict:
    """Catalogue and index (here), then the count and staging passes as one task per input
    file (``runner``: in this process, or Dask tasks); returns the staging record."""
    from tqdm.auto import tqdm

    timings = {}
    # a cut-off staging pass is redone from scratch (its spills are partial); chunks
    # recorded against it would be too
    shutil.rmtree(st, ignore_errors=True)
    manifest["chunks"] = {}
    manifest["staging"] = None
    _write_json_atomic(man_path, manifest)
    st.mkdir(parents=True)
    t = time.perf_counter()
    cat = _build_catalogue(model, items, vector_col, cmap, show)
    built_index = _build_index(index_kind, cat["vectors"], cat["ids"], st / "index")
    timings["catalogue_s"] = time.perf_counter() - t
    if "item_id" in cols:
        ev_kind = _id_kind(dataset.schema.field(cols["item_id"]).type)
        cat_kind = "int" if _is_int_index(cat["ids"]) else "str"
        if ev_kind in ("str", "int") and ev_kind != cat_kind:
            raise ValueError(f"events column {cols['item_id']!r} holds {ev_kind} ids but the "
                             f"catalogue's item ids are {cat_kind}s "
                             f"(first: {cat['ids'][0]!r}); store both with one type")
        if ev_kind not in ("str", "int", "null"):
            raise ValueError(f"events column {cols['item_id']!r} has type "
                             f"{dataset.schema.field(cols['item_id']).type}; expected "
                             "string or integer ids")
    inp = _Input(files=tuple(str(f) for f in files), fmt=fmt,
                 string_cols=tuple(dataset_string_cols), cols=tuple(cols.items()))
    t = time.perf_counter()
    file_rows = np.zeros(len(files), np.int64)
    sketch = [np.zeros(0, np.uint64)]

    def counted_file(args, r):
        file_rows[args[1]] = r["rows"]
        sketch[0] = _merge_sketches([sketch[0], r["sketch"]])
        bar.update(1)

    with tqdm(total=len(files), unit="files", desc="count users", disable=not show) as bar:
        runner.map(_count_file, [(inp, fi) for fi in range(len(files))], counted_file)
    users, exact = _sketch_count(sketch[0])
    counted = {"rows": int(file_rows.sum()), "users": users, "exact": exact}
    timings["count_users_s"] = time.perf_counter() - t
    n_users = max(1, counted["users"])
    if mem is not None:
        bpr = _bytes_per_row(dataset, files, fmt, set(cols.values()), counted["rows"])
        per_chunk = _chunk_users_for_memory(
            mem, n_items=len(cat["ids"]), dim=model["dim"], n_seg=len(model["centroids"]),
            k=int(k), rows_per_user=counted["rows"] / n_users, bytes_per_row=bpr,
            has_text="text" in cols, has_vector="vector" in cols, index=built_index,
            two_stage=model if model["two_stage"] else None)
        buffer_bytes = int(min(_STAGING_BUFFER_BYTES, max(16 * 2**20, mem // 4)))
    else:
        per_chunk = int(chunk_users) if chunk_users is not None else DEFAULT_CHUNK_USERS
        buffer_bytes = _STAGING_BUFFER_BYTES
    n_buckets = max(1, math.ceil(n_users / per_chunk))
    logger.info("score: %s%d users (%d rows in %d file(s)) -> %d chunk(s) of about %d users",
                "" if counted["exact"] else "about ", n_users, counted["rows"], len(files),
                n_buckets, per_chunk)
    t = time.perf_counter()
    spec = _StageSpec(inp=inp, out=str(out), n_buckets=n_buckets, user_kind=user_kind,
                      dim=model["dim"], now_s=now_s, buffer_bytes=buffer_bytes,
                      index_id=built_index["save_id"], ts_unit=ts_unit)
    row0 = np.concatenate([[0], np.cumsum(file_rows)[:-1]])
    results = []
    with tqdm(total=counted["rows"], unit="rows", desc="stage events",
              disable=not show) as bar:
        runner.map(_stage_file, [(spec, fi, int(row0[fi])) for fi in range(len(files))],
                   lambda args, r: (results.append(r), bar.update(r["rows"])))
    by_reason: dict = {}
    for r in results:
        for reason, c in r["by_reason"].items():
            by_reason[reason] = by_reason.get(reason, 0) + c
    accepted = sum(r["accepted"] for r in results)
    rejected = sum(r["rejected"] for r in results)
    examples = sorted((e for r in results for e in r["examples"]),
                      key=lambda e: e["row"])[:_MAX_EXAMPLES]
    max_ts = max(r["max_ts"] for r in results)
    timings["staging_s"] = time.perf_counter() - t
    if accepted == 0:
        raise ValueError(f"events: none of the {counted['rows']} rows is usable; rejected by "
                         f"reason: {by_reason}; first: {examples[:3]}")
    ref = float(max_ts) if now_s is None else float(now_s)
    max_item_ts = max(r["max_item_ts"] for r in results)
    staged = {"n_buckets": n_buckets, "chunk_users": per_chunk,
              "users_estimate": counted["users"], "users_exact": counted["exact"],
              "rows": counted["rows"], "accepted": accepted,
              "rejected": rejected, "rejected_by_reason": by_reason,
              "rejected_examples": examples, "reference_time": ref,
              "behaviour_time": float(max_item_ts) if np.isfinite(max_item_ts) else None,
              "user_kind": user_kind, "columns": cols,
              "catalogue": {"items": int(len(cat["ids"])), "source": cat["source"]},
              "index": built_index,
              "bucket_rows_max": max(r["bucket_rows_max"] for r in results),
              "timings_s": dict(timings)}
    _write_json_atomic(marker, staged)
    manifest["staging"] = {k_: staged[k_] for k_ in ("n_buckets", "chunk_users", "rows",
                                                    "accepted", "rejected",
                                                    "reference_time")}
    _write_json_atomic(man_path, manifest)
    return staged

def score(events, model_dir, out, *, items=None, k: int = 10, chunk_users=None,
          max_memory=None, vector_col=None, index="auto", now=None, dask=None, progress=None,
          column_map=None, ts_unit="s", max_rejected=None, embedding_cache=None) -> dict:
    """Score every user of an event table with a fitted model, in bounded memory, resumably.

    Parameters
    ----------
    events : str or os.PathLike
        Events: a Parquet file, a folder of Parquet files (a dataset) or a glob pattern; CSV
        and JSON Lines files (also compressed) work too. Columns ``user_id``, ``ts`` (unix
        times in ``ts_unit``, timestamps or ISO 8601 strings, from 1990-01-01 to 2100-01-01
        UTC) and at least one of ``text``, ``item_id``, ``vector_col``; optional ``weight``
        (>= 0, default 1). Other columns are not read. Ids are kept as written: CSV ids are
        strings (``"007"`` is not ``"7"``), Parquet and JSON ids keep the file's type.
    model_dir : str or os.PathLike
        A saved :class:`~interestflow.InterestEngine` (its encoder, half-life, segment
        centroids and temperature, and by default its items). With a learned ranker
        (``ranker="lightgbm"``) its candidate generator and ranker too: the users' lists
        then come from the same two stages as ``InterestEngine.recommend`` (see the module
        docstring; ``items=`` is refused, and ``index=`` only indexes the catalogue for
        staging: the content source searches the generator's own index, as ``recommend``
        does). With ``segment_assignment="hard"`` the segment weights are the one-hot of the
        nearest centroid (``fit`` uses the clustering's labels, which may differ for users at
        a segment border; HDBSCAN noise users get a segment here).
    out : str or os.PathLike
        Output folder: ``users/part-NNNNN.parquet`` (``user_id``, ``vector`` list<float32>
        (dim,), ``segment``, ``segment_0..K-1``), ``recommendations/part-NNNNN.parquet``
        (``user_id``, ``item_id``, ``score``, ``rank`` from 1), ``manifest.json``,
        ``summary.json`` and ``rejected.parquet`` (``row``, ``file``, ``file_row``,
        ``reason``, ``user_id`` of every rejected row). Must be new, empty, or the folder of
        an earlier run of the same job (which is then resumed). Checked before anything is
        read; one job at a time: the job holds the lock ``.NAME.lock`` beside the folder
        (:class:`interestflow.outdir.FolderLock`) and a second job is refused.
    items : str or os.PathLike, optional
        Items to recommend instead of the model's: ``item_id`` and a vector column
        (``vector_col`` if the items have it, else ``"vector"``) or ``text`` (encoded with the
        model's encoder).
    k : int, default 10
        Recommendations per user (fewer when fewer unseen items exist).
    chunk_users : int, optional
        Users per chunk (approximately: users are hashed into ``ceil(n_users / chunk_users)``
        chunks). Default: from ``max_memory`` if given, else :data:`DEFAULT_CHUNK_USERS`.
    max_memory : int or str, optional
        Memory budget of one scoring process (each Dask worker), e.g. ``"2GB"``; sets
        ``chunk_users`` from an estimate of the fixed cost (the process, catalogue, buffers)
        and the per-user cost, with 15% headroom: a target, not a hard limit. Not with
        ``chunk_users``.
    vector_col : str, optional
        Column of precomputed event vectors (list of ``dim`` numbers): such events are not
        encoded. Also read from ``items`` when the items table has it.
    index : {"auto", "exact", "ivf"}, default "auto"
        Kind of :class:`~interestflow.retrieval.ItemIndex` over the catalogue: ``"exact"``
        cosine top-k, ``"ivf"`` FAISS IVF (candidates re-scored exactly), ``"auto"`` IVF from
        ``AUTO_IVF_MIN_ITEMS`` items when faiss is installed. Built once per job.
    now : float, str or datetime, optional
        Reference time of the decay (a number is unix seconds, whatever ``ts_unit``); default
        the latest valid event time. Events after it are rejected.
    dask : str, optional
        ``"local"`` / ``"local:N"`` (a LocalCluster of N single-threaded worker processes;
        N defaults to the CPU count) or a scheduler address ``"tcp://host:8786"`` (workers must
        see ``out`` and the inputs at the same paths). Default: chunks run in this process.
    progress : bool, optional
        Progress bars (users/s and ETA); default: when stderr is a terminal.
    column_map : dict, optional
        ``{standard name: column in the file}`` for ``user_id``, ``ts``, ``text``,
        ``item_id``, ``weight`` (``item_id`` and ``text`` apply to ``items`` too).
    ts_unit : {"s", "ms", "us", "ns"}, default "s"
        Unit of numeric ``ts`` values. A row whose time falls outside 1990-01-01..2100-01-01
        UTC (e.g. milliseconds read as seconds) is rejected with the reason "implausible ts".
    max_rejected : int, float or str, optional
        Most rejected rows allowed: a count (``100``) or a share of the input rows (``0.05``
        or ``"5%"``). Above it, ``score`` still finishes and writes every output and the
        summary (which records the limit and that it was exceeded), then raises
        :class:`RejectedRowsError`. Default: no limit (the counts are in the summary).
    embedding_cache : str, os.PathLike or False, optional
        A persistent embedding store for the texts (see ``Encoder(cache=...)``; refused if
        another encoder made it); default: the one the model was saved with, else a store
        for this job only (``OUT/_staging``), so that every chunk and worker encodes each
        distinct text once (two workers that meet a new text at the same moment may both
        encode it). ``False``: no store; each chunk encodes its own distinct texts. The
        summary's ``texts`` counts the distinct texts of each chunk summed (``looked_up``)
        and how many of them were encoded.

    Returns
    -------
    dict
        The summary also written to ``out/summary.json``: counts (rows, accepted, rejected
        rows by reason with examples, users, recommendations, chunks done now and earlier),
        the reference time, the catalogue, timings per stage (s), users/s, peak RSS (MiB),
        and ``max_rejected`` (the limit, the rows it allows, whether it was exceeded; None
        without a limit).

    Raises
    ------
    RejectedRowsError
        (a ValueError) More rows were rejected than ``max_rejected`` allows; raised after
        the job completed, with the summary as its ``summary``.
    ValueError
        Bad parameters, missing columns, a model or items that do not fit together, an
        ``out`` holding a different job (the message lists what changed), an ``out`` that
        cannot be written, or (:class:`~interestflow.outdir.FolderLockedError`) an ``out``
        being written by another job (the message names it).
    FileNotFoundError
        ``events``, ``items`` or ``model_dir`` do not exist.

    Examples
    --------
    >>> from interestflow.batch import score                                # doctest: +SKIP
    >>> summary = score("events/", "model/", "scores/", k=20, chunk_users=100_000)  # doctest: +SKIP
    >>> summary["users"], summary["rejected"]["total"]                      # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if chunk_users is not None and max_memory is not None:
        raise ValueError("pass chunk_users or max_memory, not both (max_memory sets "
                         "chunk_users from the estimated cost per user)")
    if chunk_users is not None:
        if isinstance(chunk_users, bool) or not isinstance(chunk_users, numbers.Integral):
            raise TypeError(f"chunk_users must be an int, got {type(chunk_users).__name__}")
        if chunk_users < 1:
            raise ValueError(f"chunk_users={chunk_users} must be >= 1")
    mem = parse_memory(max_memory) if max_memory is not None else None
    if index not in ("auto", "exact", "ivf"):
        raise ValueError(f"index={index!r} is not valid; pass one of 'auto', 'exact', 'ivf'")
    if not (embedding_cache is None or embedding_cache is False
            or isinstance(embedding_cache, (str, os.PathLike))):
        raise TypeError(f"embedding_cache must be a path, None or False, got "
                        f"{embedding_cache!r}")
    if vector_col is not None and not isinstance(vector_col, str):
        raise TypeError(f"vector_col must be a column name (str), got "
                        f"{type(vector_col).__name__}")
    now_s = now_seconds(now)
    from .validation import check_ts_unit

    check_ts_unit(ts_unit)
    limit = _parse_max_rejected(max_rejected)
    show = _show_progress(progress)
    dask_spec = None
    if dask is not None:
        from .distributed import parse_dask

        dask_spec = parse_dask(dask)
    # one job per folder, checked before any input is read or the model loaded
    out = check_location(out)
    with FolderLock(out, command="score"):
        man_path = out / "manifest.json"
        if not man_path.is_file() and out.is_dir() and any(out.iterdir()):
            raise ValueError(f"out={str(out)!r} exists and is not an interestflow score "
                             "folder (no manifest.json); pass a new or empty folder")

        files, fmt = resolve_inputs(events, "events")
        items_files = resolve_inputs(items, "items")[0] if items is not None else None
        model = _read_model(model_dir)
        if model["two_stage"] and items is not None:
            raise ValueError(f"items= cannot be used with the model in {model['dir']}: it has a "
                             "ranker, whose candidate sources (item-kNN, EASE, popularity, "
                             "trends) are fitted on the model's own items; score without items=")
        if model["two_stage"] and model["multi_interest"]:
            raise ValueError(f"the model in {model['dir']} has a ranker and multi_interest=True; "
                             "batch scoring does not build per-user interests from the events "
                             "yet, so its lists would differ from InterestEngine.recommend's; "
                             "use InterestEngine.recommend for this model")
        cmap = dict(column_map or {})
        string_cols = [cmap.get(c, c) for c in ("user_id", "item_id", "text")]
        dataset = _dataset(files, fmt, string_cols=string_cols)
        cols = _check_columns(dataset.schema.names, cmap, vector_col)
        user_kind = _id_kind(dataset.schema.field(cols["user_id"]).type)
        if user_kind not in ("str", "int"):
            raise ValueError(f"events column {cols['user_id']!r} has type "
                             f"{dataset.schema.field(cols['user_id']).type}; expected string or "
                             "integer ids")
        params = {"k": int(k), "chunk_users": None if chunk_users is None else int(chunk_users),
                  "max_memory": mem, "vector_col": vector_col, "index": index,
                  "now": now_s, "column_map": {c: cmap[c] for c in sorted(cmap)},
                  "default_chunk_users": DEFAULT_CHUNK_USERS, "ts_unit": ts_unit}
        fp = _fingerprint(files, fmt, items_files, model, params)
        fp_id = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]

        if man_path.is_file():
            manifest = json.loads(man_path.read_text())
            if manifest.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"{man_path} is not an interestflow score manifest; pass a new or "
                                 "empty out")
            if manifest.get("fingerprint_id") != fp_id:
                changes = _diff(manifest.get("fingerprint"), fp)
                raise ValueError(
                    f"out={str(out)!r} holds a different scoring job, so it cannot be resumed: "
                    + "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")
                    + ". Pass a new out (or delete this one) to start this job")
            if manifest.get("complete") and (out / "summary.json").is_file():
                shutil.rmtree(_staging(out), ignore_errors=True)
                summary = json.loads((out / "summary.json").read_text())
                summary["already_complete"] = True
                logger.info("score: %s is already complete; nothing to do", out)
                summary["max_rejected"] = _rejected_limit(limit, max_rejected, summary)
                return _check_rejected(summary)
        else:
            out.mkdir(parents=True, exist_ok=True)
            manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                        "fingerprint_id": fp_id, "fingerprint": fp, "complete": False,
                        "staging": None, "chunks": {}}
            _write_json_atomic(man_path, manifest)

        timings = {}
        st = _staging(out)
        marker = st / "_COMPLETE.json"
        staged = json.loads(marker.read_text()) if marker.is_file() else None
        workers: dict = {}
        with _runner(dask_spec) as runner:
            if staged is None:
                try:
                    staged = _stage(runner, out, st, marker, man_path, manifest, model, items,
                                    vector_col, cmap, show, cols, dataset, string_cols, files, fmt,
                                    user_kind, index, mem, chunk_users, k, now_s, ts_unit)
                except Exception:
                    # nothing of this job is usable before staging completes: leave no manifest
                    # behind, so that a corrected command can start afresh in the same out
                    shutil.rmtree(st, ignore_errors=True)
                    man_path.unlink(missing_ok=True)
                    if not any(out.iterdir()):
                        out.rmdir()
                    raise
            n_buckets = int(staged["n_buckets"])
            scols = staged["columns"]
            if model["two_stage"] and "behaviour_time" not in staged:
                raise ValueError(f"{marker} was staged by an earlier interestflow without the "
                                 "ranker's reference time; delete out and score again")
            job = _Job(out=str(out), model_dir=model["dir"], save_id=model["save_id"], k=int(k),
                       n_buckets=n_buckets, reference_time=float(staged["reference_time"]),
                       has_text="text" in scols, has_vector="vector" in scols,
                       has_weight="weight" in scols, has_item="item_id" in scols,
                       user_kind=staged["user_kind"], index_id=staged["index"]["save_id"],
                       two_stage=bool(model["two_stage"]),
                       behaviour_time=staged.get("behaviour_time"),
                       embedding_cache=embedding_cache if (embedding_cache is None
                                                       or embedding_cache is False)
                       else str(Path(embedding_cache).expanduser()))
            done_before = {int(b) for b in manifest["chunks"]}
            pending = [b for b in range(n_buckets) if b not in done_before]
            if done_before:
                logger.info("score: resuming %s: %d of %d chunks already done", out,
                            len(done_before), n_buckets)
            est_total = int(staged["users_estimate"])
            done_users = sum(int(s["users"]) for s in manifest["chunks"].values())
            t = time.perf_counter()
            with tqdm(total=max(est_total, done_users), initial=done_users, unit="users",
                      desc="score users", disable=not show, dynamic_ncols=True) as bar:
                def done(args, stats):
                    b = args[1]
                    _on_chunk_done(manifest, man_path, b, stats)
                    wk = workers.setdefault(str(stats.get("pid")),
                                            {"chunks": 0, "resource_loads": 0})
                    wk["chunks"] += 1
                    wk["resource_loads"] = max(wk["resource_loads"], int(stats["resource_loads"]))
                    if bar.n + stats["users"] > bar.total:
                        bar.total = bar.n + stats["users"]
                    bar.update(stats["users"])
                    bar.set_postfix(chunks=f"{len(manifest['chunks'])}/{n_buckets}",
                                    refresh=False)

                runner.map(score_chunk, [(job, b) for b in pending], done)
        timings["chunks_wall_s"] = time.perf_counter() - t
        missing = [b for b in range(n_buckets) if str(b) not in manifest["chunks"]]
        if missing:  # a failed task raises in runner.map; this guards the bookkeeping itself
            raise RuntimeError(f"chunks {missing[:10]} were not recorded as done")

        summary = _finish(out, manifest, man_path, staged, job, timings, t_start,
                          pending, len(done_before), workers, dask, limit, max_rejected)
        return _check_rejected(summary)


def _finish(out: Path, manifest, man_path, staged, job, timings, t_start, pending, n_before,
            workers, dask, limit=None, limit_value=None) -> dict:
    """rejected.parquet, summary.json, manifest complete, staging removed (in that order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    st = _staging(out)
    for sub in ("users", "recommendations"):  # temp files of attempts cut off by a crash
        for p in (out / sub).glob(".part-*.tmp"):
            p.unlink(missing_ok=True)
    rej_files = sorted((st / "rejected").glob("f*.parquet")) if (st / "rejected").is_dir() \
        else []
    tmp = out / ".rejected.parquet.tmp"
    schema = pa.schema([("row", pa.int64()), ("file", pa.string()), ("file_row", pa.int64()),
                        ("reason", pa.string()), ("user_id", pa.string())])
    with pq.ParquetWriter(tmp, schema) as writer:
        for f in rej_files:  # one spill at a time: bounded memory
            writer.write_table(pq.read_table(f, schema=schema))
    os.replace(tmp, out / "rejected.parquet")

    chunks = manifest["chunks"]
    by_reason = dict(staged["rejected_by_reason"])
    stage_t: dict = {}
    zero_users = 0
    zero_examples = []
    texts = {"looked_up": 0, "encoded": 0, "store": None}
    for s in chunks.values():
        if "texts" in s:
            texts["looked_up"] += int(s["texts"]["distinct"])
            texts["encoded"] += int(s["texts"]["encoded"])
            texts["store"] = s["texts"].get("store")
        for r, c in s.get("rejected", {}).items():
            by_reason[r] = by_reason.get(r, 0) + int(c)
        for key, v in s["timings_s"].items():
            stage_t[key] = stage_t.get(key, 0.0) + float(v)
        zero_users += int(s.get("zero_weight_users", 0))
        zero_examples += s.get("zero_weight_examples", [])
    users = sum(int(s["users"]) for s in chunks.values())
    recs = sum(int(s["recommendations"]) for s in chunks.values())
    users_now = sum(int(chunks[str(b)]["users"]) for b in pending)
    wall = time.perf_counter() - t_start
    timings_s = {**staged.get("timings_s", {}), **{k_: round(v, 3) for k_, v in timings.items()}}
    timings_s["chunk_stages_sum_s"] = {k_: round(v, 3) for k_, v in sorted(stage_t.items())}
    timings_s["wall_s"] = round(wall, 3)
    summary = {
        "events": {"rows": staged["rows"], "accepted": staged["accepted"],
                   "scored": sum(int(s["events"]) for s in chunks.values())
                   - by_reason.get(REASON_ZERO_WEIGHT, 0)},
        "rejected": {"total": int(sum(by_reason.values())), "by_reason": by_reason,
                     "examples": staged["rejected_examples"],
                     "zero_weight_users": zero_users,
                     "zero_weight_user_examples": zero_examples[:_MAX_EXAMPLES],
                     "file": "rejected.parquet"},
        "users": users,
        "recommendations": recs,
        "k": job.k,
        "chunks": {"total": job.n_buckets, "done_now": len(pending), "done_before": n_before,
                   "chunk_users": staged["chunk_users"]},
        "reference_time": job.reference_time,
        "catalogue": staged["catalogue"],
        "index": staged["index"],
        "dask": dask,
        "workers": workers,
        "texts": texts,
        "timings_s": timings_s,
        "users_per_s": (round(users_now / timings["chunks_wall_s"], 1)
                        if users_now and timings.get("chunks_wall_s") else None),
        "peak_rss_mib": round(_peak_rss_bytes() / 2**20, 1),
        "outputs": {"users": "users/part-*.parquet",
                    "recommendations": "recommendations/part-*.parquet",
                    "rejected": "rejected.parquet", "manifest": "manifest.json"},
    }
    summary["max_rejected"] = _rejected_limit(limit, limit_value, summary)
    total = summary["rejected"]["total"]
    if total:
        logger.info("score: %d of %d rows rejected: %s (all in %s)", total,
                    summary["events"]["rows"], by_reason, out / "rejected.parquet")
    _write_json_atomic(out / "summary.json", summary)
    manifest["complete"] = True
    _write_json_atomic(man_path, manifest)
    shutil.rmtree(st, ignore_errors=True)
    return summary
