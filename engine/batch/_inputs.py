"""Inputs of a scoring job: memory sizes, input files, the events' columns, and the
conversion of id, vector, time and weight columns with the reason each bad row is rejected."""

from __future__ import annotations

import glob
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import datetimes_to_seconds
from ..io import format_of
from ..validation import TS_UNIT_NAMES, TS_UNITS, TS_WINDOW, plausible_ts

#: Standard event column names (``column_map`` maps them to the file's names).
STANDARD_COLUMNS = ("user_id", "ts", "text", "item_id", "weight")

# rejection reasons, in the order they are checked (a row is reported with its first reason)
R_USER, R_TS_MISSING, R_TS_BAD, R_TS_NONFINITE, R_TS_RANGE, R_TS_LATE, R_W_MISSING, \
    R_W_BAD, R_W_INF, R_W_NEG, R_VEC_LEN, R_VEC_NONFINITE, R_CONTENT = range(1, 14)
REJECT_REASONS = {
    R_USER: "missing user_id",
    R_TS_MISSING: "missing ts",
    R_TS_BAD: "unparseable ts",
    R_TS_NONFINITE: "non-finite ts",
    # the text for ts_unit="s"; ts_range_reason gives the one for another unit
    R_TS_RANGE: f"implausible ts (outside {TS_WINDOW[0]}..{TS_WINDOW[1]} UTC; numbers read as "
                "unix seconds: milliseconds? pass --ts-unit ms)",
    R_TS_LATE: "ts after now",
    R_W_MISSING: "missing or NaN weight",
    R_W_BAD: "non-numeric weight",
    R_W_INF: "infinite weight",
    R_W_NEG: "negative weight",
    R_VEC_LEN: "vector of the wrong length",
    R_VEC_NONFINITE: "non-finite vector value",
    R_CONTENT: "no text, no vector and no item_id of a catalogue item",
}


def ts_range_reason(ts_unit: str) -> str:
    """The reason text of a time outside the plausible window, for numbers in ``ts_unit``."""
    if ts_unit == "s":
        return REJECT_REASONS[R_TS_RANGE]
    return (f"implausible ts (outside {TS_WINDOW[0]}..{TS_WINDOW[1]} UTC; numbers read as unix "
            f"{TS_UNIT_NAMES[ts_unit]} (--ts-unit {ts_unit}): seconds? pass --ts-unit s)")


# --------------------------------------------------------------------------- memory sizes
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
          "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12,
          "tib": 2**40}


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


# --------------------------------------------------------------------------- input files
_HIDDEN = (".", "_")


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
        files = _folder_files(path, name, text) if path.is_dir() else [path]
    elif any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"{name}={text!r}: no file matches this pattern")
    else:
        raise FileNotFoundError(f"{name}: no such file or directory: {text!r}")
    fmts = {}
    for f in files:
        fmts.setdefault(format_of(f), f)
    if len(fmts) > 1:
        shown = ", ".join(f"{k} ({v.name})" for k, v in fmts.items())
        raise ValueError(f"{name}={text!r} mixes formats: {shown}; pass files of one format")
    return [f.resolve() for f in files], next(iter(fmts))


def _folder_files(path: Path, name: str, text: str) -> list[Path]:
    """The files of a known format in folder ``path`` and its sub-folders (hidden names
    left out), sorted."""
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(_HIDDEN) for part in p.relative_to(path).parts))
    known = [p for p in files if _known_format(p)]
    if not known:
        raise ValueError(f"{name}={text!r} is a folder with no .parquet, .csv or .jsonl files")
    return known


def _known_format(p: Path) -> bool:
    try:
        format_of(p)
        return True
    except ValueError:
        return False


def file_stamp(files) -> list:
    """``[path, size, mtime_ns]`` of each file (a job's fingerprint)."""
    out = []
    for f in files:
        st = os.stat(f)
        out.append([str(f), int(st.st_size), int(st.st_mtime_ns)])
    return out


def open_dataset(files: list[Path], fmt: str, string_cols=()):
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


# --------------------------------------------------------------------------- the events
@dataclass(frozen=True)
class Events:
    """The checked events input of a job: its files (in order) and their format, a dataset
    over them, the columns read as strings, the source column of each standard column
    present (``{"user_id": src, ...}``, ``"vector"`` for ``vector_col``), the user ids'
    kind (``"str"`` or ``"int"``), and the ``column_map`` and ``vector_col`` asked for."""

    files: list
    fmt: str
    dataset: object
    string_cols: list
    cols: dict
    user_kind: str
    column_map: dict
    vector_col: str | None


def open_events(files: list[Path], fmt: str, column_map, vector_col) -> Events:
    """The events dataset and its columns, checked (see :func:`check_columns`)."""
    cmap = dict(column_map or {})
    string_cols = [cmap.get(c, c) for c in ("user_id", "item_id", "text")]
    dataset = open_dataset(files, fmt, string_cols=string_cols)
    cols = check_columns(dataset.schema.names, cmap, vector_col)
    user_kind = id_kind(dataset.schema.field(cols["user_id"]).type)
    if user_kind not in ("str", "int"):
        raise ValueError(f"events column {cols['user_id']!r} has type "
                         f"{dataset.schema.field(cols['user_id']).type}; expected string or "
                         "integer ids")
    return Events(files=files, fmt=fmt, dataset=dataset, string_cols=string_cols, cols=cols,
                  user_kind=user_kind, column_map=cmap, vector_col=vector_col)


def check_columns(schema_names, column_map, vector_col) -> dict:
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


# --------------------------------------------------------------------------- columns
def plain(arr):
    """A pyarrow array without dictionary encoding and in one chunk."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def id_kind(t) -> str | None:
    """``"str"``, ``"int"`` or ``"null"`` (an all-null column) for an id column's Arrow
    type; None for any other type."""
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


def id_array(arr):
    """An id column as string or int64 (null entries kept)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = plain(arr)
    kind = id_kind(arr.type)
    if kind == "str":
        return pc.cast(arr, pa.string())
    if kind == "int":
        return pc.cast(arr, pa.int64())
    return pa.nulls(len(arr), pa.string())  # an all-null column read as type null


def list_values(arr):
    """(flat float values, per-row lengths, null mask) of a list / fixed-size-list column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = plain(arr)
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


def ts_to_seconds(arr, ts_unit: str = "s") -> tuple[np.ndarray, np.ndarray]:
    """(seconds float64, reason code per row: 0 ok) of a ts column; numbers in ``ts_unit``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = plain(arr)
    t = arr.type
    n = len(arr)
    null = arr.is_null().to_numpy(zero_copy_only=False)
    reason = np.where(null, R_TS_MISSING, 0).astype(np.int8)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        if pa.types.is_date(t):
            arr = pc.cast(arr, pa.timestamp("s"))
            t = arr.type
        raw = pc.fill_null(pc.cast(arr, pa.int64()), 0).to_numpy(zero_copy_only=False)
        scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[t.unit]
        secs = raw.astype(np.float64) * scale
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        secs = pc.fill_null(pc.cast(arr, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        reason[(reason == 0) & ~np.isfinite(secs)] = R_TS_NONFINITE
        secs = secs * TS_UNITS[ts_unit]
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        secs = _iso_to_seconds(arr, null, reason)
    else:
        reason[reason == 0] = R_TS_BAD
        secs = np.full(n, np.nan)
    # milliseconds read as seconds, year 9999, negative sentinels: never mixed in silently
    reason[(reason == 0) & ~plausible_ts(secs)] = R_TS_RANGE
    return secs, reason


def _iso_to_seconds(arr, null: np.ndarray, reason: np.ndarray) -> np.ndarray:
    """Seconds of a string ts column (ISO 8601; NaN where not parsed); sets the reason of
    empty strings (missing) and unparseable ones in ``reason``."""
    s = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)
    empty = (~null) & (s.fillna("").str.strip().str.len() == 0).to_numpy()
    reason[empty] = R_TS_MISSING
    parsed = pd.to_datetime(s.where(reason == 0), utc=True, errors="coerce", format="ISO8601")
    bad = (reason == 0) & parsed.isna().to_numpy()
    reason[bad] = R_TS_BAD
    secs = np.full(len(arr), np.nan)
    ok = ~parsed.isna().to_numpy()
    if ok.any():
        secs[ok] = datetimes_to_seconds(parsed[ok])
    return secs


def weights(arr) -> tuple[np.ndarray, np.ndarray]:
    """(weights float64, reason code per row: 0 ok) of a weight column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = plain(arr)
    t = arr.type
    reason = np.zeros(len(arr), np.int8)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        w = pc.fill_null(pc.cast(arr, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        s = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)
        missing = s.isna().to_numpy() | (s.fillna("").astype(str).str.strip().str.len() == 0
                                         ).to_numpy()
        w = pd.to_numeric(s.where(~missing), errors="coerce").to_numpy(np.float64)
        reason[~missing & np.isnan(w)] = R_W_BAD
    else:
        w = np.full(len(arr), np.nan)
        reason[:] = R_W_BAD
    reason[(reason == 0) & np.isnan(w)] = R_W_MISSING
    reason[(reason == 0) & np.isinf(w)] = R_W_INF
    reason[(reason == 0) & (w < 0)] = R_W_NEG
    return w, reason
