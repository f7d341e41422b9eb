"""Read event / item tables from CSV, Parquet or JSON Lines; write Parquet atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pandas as pd

__all__ = ["read_table", "write_parquet", "FORMATS"]

FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")
# Read as text exactly as written: ids such as "007" stay strings and a review reading "NA" or
# "null" stays text instead of becoming a missing value.
_CSV_TEXT_COLUMNS = ("user_id", "item_id", "text")
_CSV_NULL_COLUMNS = ("ts", "weight")


def format_of(path: Path) -> str:
    """``"csv"``, ``"parquet"`` or ``"jsonl"`` from the extension of ``path`` (a compression
    suffix ignored), ``"parquet"`` for a folder of Parquet parts; ``ValueError`` naming the
    known extensions otherwise."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None and path.is_dir() and any(path.glob("*.parquet")):
        fmt = "parquet"  # a directory of parquet parts (a dataset)
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise ValueError(f"cannot tell the format of {str(path)!r} from its extension; "
                         f"expected one of {known} (optionally compressed: "
                         f"{', '.join(_COMPRESSION)} for csv/jsonl) or a directory of "
                         ".parquet files")
    return fmt


def _read_csv(path: Path, string_columns) -> pd.DataFrame:
    header = pd.read_csv(path, nrows=0).columns
    text_cols = [c for c in dict.fromkeys(string_columns) if c in header]
    return pd.read_csv(
        path,
        dtype={c: str for c in text_cols},
        keep_default_na=False,
        # only numeric columns treat the usual spellings of "missing" as missing
        na_values={c: ["", "NA", "NaN", "nan", "null", "NULL", "None"]
                   for c in header if c not in text_cols},
    )


def _read_json(path: Path) -> pd.DataFrame:
    # A .json file may hold one array of records instead of one record per line.
    opener = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zip": "zip"}
    compression = opener.get(path.suffix.lower(), "infer")
    lines = True
    if compression == "infer":
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
        lines = not head.startswith(b"[")
    # dtype=False: keep JSON's own types (strings stay strings, "007" is not 7); ts is
    # interpreted by validate_events.
    return pd.read_json(path, lines=lines, dtype=False, compression=compression)


def read_table(path, *, string_columns=None) -> pd.DataFrame:
    """Read a table of events or items.

    Ids are kept as written: a column is read as strings unless the file's own types say
    otherwise.  CSV has no types, so its id and text columns are strings exactly as written
    (``"007"``, ``"0007"`` and ``"7"`` stay three ids, a text ``"NA"`` stays ``"NA"``, an empty
    cell is ``""``, which validation reports as a missing id).  Parquet columns keep their
    type (an int64 id column stays integers), and so do JSON values (a JSON number is an
    integer id, a JSON string a string id: JSON cannot write ``007`` as a number).

    Parameters
    ----------
    path : str or os.PathLike
        ``.csv``; ``.parquet`` / ``.pq`` (a file, or a directory of parquet files);
        ``.jsonl`` / ``.ndjson`` / ``.json`` (one JSON record per line; a ``.json`` file holding
        one array of records is read too).  CSV and JSON may be compressed (``.gz``, ``.bz2``,
        ``.xz``, ``.zst``, ``.zip``).
    string_columns : sequence of str, optional
        CSV columns read as strings exactly as written: the id and text columns under the
        names this file uses.  Default ``("user_id", "item_id", "text")``; a caller that maps
        other column names (``--user-col uid``) passes those names.  Other formats ignore it.

    Returns
    -------
    pandas.DataFrame, shape (n_rows, n_columns)
        The table as stored; check it with :func:`interestflow.validation.validate_events`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Unknown extension, or the file cannot be parsed in the format its extension names.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> write_parquet(pd.DataFrame({"user_id": ["u1"], "text": ["hi"], "ts": [1.7e9]}),
    ...               os.path.join(d, "events.parquet"))
    >>> read_table(os.path.join(d, "events.parquet")).shape
    (1, 3)
    """
    string_columns = _CSV_TEXT_COLUMNS if string_columns is None else \
        _column_names(string_columns)
    path = Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {str(path)!r}")
    fmt = format_of(path)
    if path.is_dir() and fmt != "parquet":
        raise ValueError(f"{str(path)!r} is a directory; only parquet datasets may be "
                         "directories")
    try:
        if fmt == "csv":
            return _read_csv(path, string_columns)
        if fmt == "parquet":
            return pd.read_parquet(path)
        return _read_json(path)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # parser errors differ per engine; name the file and format
        raise ValueError(f"could not read {str(path)!r} as {fmt}: "
                         f"{type(exc).__name__}: {exc}") from exc


def _column_names(columns) -> tuple:
    if isinstance(columns, (str, bytes)) or not all(isinstance(c, str) for c in columns):
        raise TypeError(f"string_columns must be a sequence of column names (str), got "
                        f"{columns!r}")
    return tuple(columns)


def write_parquet(df, path) -> Path:
    """Write a DataFrame (or pyarrow Table) to Parquet atomically.

    The data go to a temporary file in the destination directory, which is flushed to disk
    and then renamed over ``path`` (``os.replace``), so readers never see a half-written file
    and a crash leaves either the old file or the new one.  Missing parent directories are
    created.

    Parameters
    ----------
    df : pandas.DataFrame or pyarrow.Table
        The table to write.
    path : str or os.PathLike
        Destination file.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(df, pd.DataFrame):
        table = pa.Table.from_pandas(df, preserve_index=None)
    elif isinstance(df, pa.Table):
        table = df
    else:
        raise TypeError(f"df must be a pandas DataFrame or a pyarrow Table, got "
                        f"{type(df).__name__}")
    path = Path(os.fspath(path))
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)
    return path


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", *, encoding=None, file_mode=None):
    """Open a temporary file beside ``path``; on success fsync it and rename it to ``path``.

    A crash or an exception leaves either the old ``path`` or the new one, never a partial
    file (the temporary file is removed on error). Missing parent directories are created.

    Parameters
    ----------
    path : str or os.PathLike
    mode : {"wb", "w"}, default "wb"
    encoding : str, optional
        Text mode only (default UTF-8).
    file_mode : int, optional
        Permissions of the final file (``mkstemp`` makes it owner-only, e.g. 0o644 to share).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode={mode!r} is not supported; pass 'wb' or 'w'")
    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kw = {"encoding": encoding or "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if file_mode is not None:
            os.chmod(tmp, file_mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
