"""Validate and normalise event and item tables at the border of the library.

Every check reports the column, the first offending row (0-based position in the input, and its
``user_id`` / ``item_id`` when known), the offending value, what was expected and how many rows
are affected.  Nothing is dropped or repaired silently: bad input raises.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from ._utils import datetimes_to_seconds, time_to_seconds

__all__ = ["validate_events", "validate_items", "check_ts_unit", "plausible_ts", "ts_unit_hint",
           "EVENT_COLUMNS", "ITEM_COLUMNS", "TS_UNITS", "TS_WINDOW", "TS_MIN_S", "TS_MAX_S",
           "TS_UNIT_NAMES", "now_seconds"]

EVENT_COLUMNS = ("user_id", "text", "ts")
EVENT_OPTIONAL = ("item_id", "weight")
ITEM_COLUMNS = ("item_id", "text")

#: Seconds per unit of a numeric ``ts`` (``ts_unit``); datetimes and ISO strings carry their own.
TS_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
#: What each ``ts_unit`` is called in messages.
TS_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
#: Plausible event times, UTC: from the first day (inclusive) to the second (exclusive).  A time
#: outside it is a unit mistake (milliseconds read as seconds land in the year ~55000, days or
#: hours since the epoch in 1970) or a placeholder (year 9999, negative sentinels), never data:
#: it is rejected with the row instead of silently skewing the decay.
TS_WINDOW = ("1990-01-01", "2100-01-01")
TS_MIN_S = pd.Timestamp(TS_WINDOW[0], tz="UTC").timestamp()  # 631,152,000
TS_MAX_S = pd.Timestamp(TS_WINDOW[1], tz="UTC").timestamp()  # 4,102,444,800

_TS_EXPECTED = ("a datetime, unix seconds (int/float) or an ISO 8601 string such as "
                "'2024-05-01T12:00:00Z'")


def check_ts_unit(ts_unit) -> float:
    """Seconds per unit of ``ts_unit``; raises ValueError listing the valid units."""
    if not isinstance(ts_unit, str) or ts_unit not in TS_UNITS:
        raise ValueError(f"ts_unit={ts_unit!r} is not valid; pass one of "
                         f"{', '.join(map(repr, TS_UNITS))} (the unit of numeric timestamps)")
    return TS_UNITS[ts_unit]


def now_seconds(now, name: str = "now"):
    """A reference time ``now`` (unix seconds, ISO 8601 string, datetime, Timestamp or
    datetime64; naive times are UTC) as float unix seconds, checked against
    :data:`TS_WINDOW`; None stays None.

    A number is always unix seconds, whatever ``ts_unit`` the events use: a ``now`` in
    milliseconds is refused, never read as a time some 50,000 years ahead.
    """
    if now is None:
        return None
    from .interests import to_seconds

    if isinstance(now, str):
        try:
            now = pd.Timestamp(now)
        except ValueError as exc:
            raise ValueError(f"{name}={now!r} is not a parseable time; pass unix seconds or "
                             "an ISO 8601 time such as '2024-05-01T00:00:00Z'") from exc
        if now.tzinfo is None:
            now = now.tz_localize("UTC")
    secs = to_seconds(now, name)
    if not plausible_ts(np.array([secs]))[0]:
        unit = ts_unit_hint(secs, "s")
        raise ValueError(
            f"{name}={now!r} is outside {TS_WINDOW[0]}..{TS_WINDOW[1]} UTC as unix seconds"
            + (f" (it reads as {TS_UNIT_NAMES[unit]})" if unit else "")
            + "; a number is unix seconds whatever ts_unit is: pass unix seconds or an ISO "
              "8601 time")
    return secs


def plausible_ts(secs: np.ndarray) -> np.ndarray:
    """True where unix seconds lie in :data:`TS_WINDOW` (NaN: False)."""
    secs = np.asarray(secs, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (secs >= TS_MIN_S) & (secs < TS_MAX_S)


def ts_unit_hint(raw, ts_unit: str) -> str:
    """For a numeric time outside the window in ``ts_unit``: the unit that would fit, or ''."""
    try:
        raw = float(raw)
    except (TypeError, ValueError):
        return ""
    for unit, scale in TS_UNITS.items():  # the unit windows are disjoint: at most one fits
        if unit != ts_unit and plausible_ts(np.array([raw * scale]))[0]:
            return unit
    return ""


def _show(value) -> str:
    """A short, unambiguous rendering of a cell value with its type."""
    if value is None:
        return "None"
    if value is pd.NA:
        return "<NA>"
    if value is pd.NaT:
        return "NaT"
    if isinstance(value, (np.number, np.bool_)):
        value = value.item()  # 'nan (float)', not 'np.float64(nan) (float64)'
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


class _Table:
    """The input as pandas plus what error messages need (table name, key column)."""

    def __init__(self, df: pd.DataFrame, name: str, key: str):
        self.df = df
        self.name = name
        self.key = key  # "user_id" for events, "item_id" for items

    def fail(self, column: str, bad: np.ndarray, problem: str, expected: str,
             values=None) -> None:
        """Raise ValueError for the rows where ``bad`` is True, if any."""
        bad = np.asarray(bad, dtype=bool)
        if not bad.any():
            return
        i = int(np.argmax(bad))
        count = int(bad.sum())
        values = self.df[column].to_numpy() if values is None else values
        where = f"row {i}"
        if column != self.key and self.key in self.df.columns:
            key_value = self.df[self.key].iloc[i]
            if not _isna_scalar(key_value):
                where += f" ({self.key} {key_value!r})"
        raise ValueError(
            f"{self.name} column '{column}': {problem}: got {_show(values[i])} at {where}; "
            f"expected {expected}. {count} of {len(bad)} rows affected (row numbers are 0-based "
            "positions in the input).")


def _isna_scalar(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # array-like cell
        return False


def _as_dataframe(obj, name: str) -> pd.DataFrame:
    if isinstance(obj, pd.DataFrame):
        df = obj
    else:
        try:
            import pyarrow as pa
        except ImportError:  # pragma: no cover - pyarrow is a dependency
            pa = None
        if pa is not None and isinstance(obj, pa.Table):
            df = obj.to_pandas()
        else:
            raise TypeError(f"{name} must be a pandas DataFrame or a pyarrow Table, got "
                            f"{type(obj).__module__}.{type(obj).__name__}")
    if not df.columns.is_unique:
        dup = df.columns[df.columns.duplicated()].unique().tolist()
        raise ValueError(f"{name} has duplicate column names {dup}; each column must appear "
                         "once")
    return df


def _require(df: pd.DataFrame, name: str, required, optional) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        present = [str(c) for c in df.columns]
        raise ValueError(
            f"{name} is missing required column(s) {missing}; columns present: {present}. "
            f"Expected columns {list(required)}"
            + (f" and optionally {list(optional)}" if optional else ""))


def _id_kind(value) -> str:
    if isinstance(value, (str, np.str_)):
        return "str"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    return type(value).__name__


def _blank_strings(values: np.ndarray) -> np.ndarray:
    """True where a value is a str that is empty or whitespace only."""
    return np.fromiter((isinstance(v, str) and not v.strip() for v in values), dtype=bool,
                       count=len(values))


def _check_ids(t: _Table, column: str) -> np.ndarray:
    values = t.df[column].to_numpy()
    expected = f"a non-null, non-empty {column}"
    t.fail(column, pd.isna(values), "missing id", expected, values)
    # "" or "  " (an empty CSV cell) names nobody: a missing id, as in batch scoring
    s = t.df[column]
    if isinstance(s.dtype, pd.StringDtype):  # no nulls left: vectorised
        blank = (s.str.strip().str.len() == 0).to_numpy(dtype=bool)
    elif values.dtype == object:
        blank = _blank_strings(values)
    else:
        blank = None
    if blank is not None:
        t.fail(column, blank, "missing id (empty or whitespace-only)", expected, values)
    if values.dtype == object and len(values):
        # ids of one kind only: mixed kinds cannot be ordered, stored or matched reliably
        # ('10' and 10 would silently be two different ids)
        kinds = np.array([_id_kind(v) for v in values], dtype=object)
        t.fail(column, kinds != kinds[0], f"id of a different type than row 0 ({kinds[0]})",
               f"every {column} of one type; cast the column to str", values)
    return values


def _check_text(t: _Table, column: str = "text") -> None:
    s = t.df[column]
    expected = "a non-empty string"
    if isinstance(s.dtype, pd.StringDtype):  # every non-null value is a str: vectorised checks
        t.fail(column, s.isna().to_numpy(), "missing text", expected, s.to_numpy(dtype=object))
        blank = (s.str.strip().str.len() == 0).to_numpy(dtype=bool)
        t.fail(column, blank, "empty or whitespace-only text", expected,
               s.to_numpy(dtype=object))
        return
    values = s.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        is_str = np.ones(len(values), dtype=bool)
    else:
        is_str = np.fromiter((isinstance(v, str) for v in values), dtype=bool,
                             count=len(values))
    null = pd.isna(values) & ~is_str
    t.fail(column, null, "missing text", expected, values)
    t.fail(column, ~is_str, "non-string text", expected, values)
    blank = np.fromiter((not v.strip() for v in values), dtype=bool, count=len(values))
    t.fail(column, blank, "empty or whitespace-only text", expected, values)


def _check_window(t: _Table, column: str, secs: np.ndarray, shown: np.ndarray,
                  numeric: np.ndarray, ts_unit: str) -> None:
    """Reject times outside :data:`TS_WINDOW`, with the unit a numeric one would fit."""
    bad = ~plausible_ts(secs)
    if not bad.any():
        return
    i = int(np.argmax(bad))
    window = f"from {TS_WINDOW[0]} to {TS_WINDOW[1]} UTC"
    if numeric[i]:
        expected = f"unix {TS_UNIT_NAMES[ts_unit]} (ts_unit={ts_unit!r}) {window}"
        unit = ts_unit_hint(shown[i], ts_unit)
        n_ok = int((~bad & numeric).sum())  # numbers that fit the window as ts_unit
        if unit and n_ok:
            expected += (f"; the value reads as {TS_UNIT_NAMES[unit]} but {n_ok} other row(s) "
                         f"read as {TS_UNIT_NAMES[ts_unit]}: the column mixes units; convert it "
                         "to one unit and pass that ts_unit (CLI: --ts-unit)")
        elif unit:
            expected += (f"; the value reads as {TS_UNIT_NAMES[unit]}: pass ts_unit={unit!r} "
                         f"(CLI: --ts-unit {unit})")
    else:
        expected = f"a time {window}"
    t.fail(column, bad, "implausible timestamp", expected, shown)


def _check_ts(t: _Table, column: str = "ts", ts_unit: str = "s") -> np.ndarray:
    scale = check_ts_unit(ts_unit)
    s = t.df[column]
    if s.dtype.kind == "b":
        t.fail(column, np.ones(len(s), bool), "boolean timestamp", _TS_EXPECTED,
               s.to_numpy(dtype=object))
    if s.dtype.kind == "M" or isinstance(s.dtype, pd.DatetimeTZDtype):
        null = s.isna().to_numpy()
        if null.any():
            t.fail(column, null, "missing timestamp", _TS_EXPECTED, s.to_numpy(dtype=object))
        secs = datetimes_to_seconds(s)
        _check_window(t, column, secs, s.to_numpy(dtype=object), np.zeros(len(s), bool),
                      ts_unit)
        return secs
    if s.dtype.kind in "iuf":
        raw = s.to_numpy(dtype=np.float64, na_value=np.nan)
        shown = s.to_numpy(dtype=object)
        t.fail(column, np.isnan(raw), "missing timestamp", _TS_EXPECTED, shown)
        t.fail(column, ~np.isfinite(raw), "non-finite timestamp", _TS_EXPECTED, raw)
        secs = raw * scale
        _check_window(t, column, secs, shown, np.ones(len(s), bool), ts_unit)
        return secs
    # strings or mixed Python objects
    obj = s.to_numpy(dtype=object)
    null = pd.isna(obj)
    t.fail(column, null, "missing timestamp", _TS_EXPECTED, obj)
    is_str = np.fromiter((isinstance(v, str) for v in obj), dtype=bool, count=len(obj))
    if is_str.all():
        parsed = pd.to_datetime(pd.Series(obj), utc=True, errors="coerce", format="ISO8601")
        t.fail(column, parsed.isna().to_numpy(), "unparseable timestamp", _TS_EXPECTED, obj)
        secs = datetimes_to_seconds(parsed)
        _check_window(t, column, secs, obj, np.zeros(len(obj), bool), ts_unit)
        return secs
    secs = np.empty(len(obj), dtype=np.float64)
    bad = np.zeros(len(obj), dtype=bool)
    for i, v in enumerate(obj):
        try:
            secs[i] = time_to_seconds(v, column, scale=scale, strings=True, finite=False)
        except (TypeError, ValueError, OverflowError):
            bad[i] = True
            secs[i] = np.nan
    t.fail(column, bad, "unparseable timestamp", _TS_EXPECTED, obj)
    t.fail(column, ~np.isfinite(secs), "non-finite timestamp", _TS_EXPECTED, obj)
    numeric = np.fromiter((isinstance(v, numbers.Real) for v in obj), dtype=bool,
                          count=len(obj))
    _check_window(t, column, secs, obj, numeric, ts_unit)
    return secs


def _check_weight(t: _Table, column: str = "weight") -> np.ndarray:
    s = t.df[column]
    expected = "a finite number >= 0"
    if s.dtype.kind == "b":
        t.fail(column, np.ones(len(s), bool), "non-numeric weight", expected,
               s.to_numpy(dtype=object))
    if s.dtype.kind in "iuf":
        w = s.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        obj = s.to_numpy(dtype=object)
        numeric = np.fromiter(
            (isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in obj),
            dtype=bool, count=len(obj))
        null = pd.isna(obj) & ~numeric
        t.fail(column, ~numeric & ~null, "non-numeric weight", expected, obj)
        w = np.array([float(v) if ok else np.nan for v, ok in zip(obj, numeric)],
                     dtype=np.float64)
    shown = s.to_numpy(dtype=object)
    t.fail(column, np.isnan(w), "missing or NaN weight", expected, shown)
    t.fail(column, np.isinf(w), "infinite weight", expected, shown)
    t.fail(column, w < 0, "negative weight", expected, shown)
    return w


def validate_events(events, *, ts_unit: str = "s") -> pd.DataFrame:
    """Check an event table and return a normalised copy.

    Parameters
    ----------
    events : pandas.DataFrame or pyarrow.Table
        Required columns ``user_id``, ``text``, ``ts``; optional ``item_id``, ``weight``.
        ``ts`` may be datetime64 (tz-aware, or naive = UTC), pandas Timestamps / datetimes,
        int or float unix times (in ``ts_unit``), or ISO 8601 strings.  Every time must lie
        in :data:`TS_WINDOW` (1990-01-01 to 2100-01-01 UTC).  Other columns are ignored.
    ts_unit : {"s", "ms", "us", "ns"}, default "s"
        Unit of numeric ``ts`` values (datetimes and ISO strings carry their own).

    Returns
    -------
    pandas.DataFrame, shape (n_events, 4 or 5)
        A new frame (the input is not modified) in the input's row order with a fresh
        RangeIndex and columns ``user_id``, ``text``, ``ts`` (float64 unix seconds, UTC),
        ``item_id`` (only if given), ``weight`` (float64; 1.0 when the column is absent).

    Raises
    ------
    TypeError
        ``events`` is not a DataFrame or pyarrow Table.
    ValueError
        A required column is missing (the message lists the columns present), or a value is
        bad: null, empty or whitespace-only ``user_id`` / ``item_id``; ``text`` not a string
        or empty / whitespace-only; ``ts`` missing, NaN/NaT, infinite, unparseable or outside
        :data:`TS_WINDOW` (with the unit it would fit, e.g. milliseconds: pass
        ``ts_unit="ms"``); ``weight`` NaN, infinite, negative or non-numeric.  The message
        names the column, the first offending row (0-based position, with its ``user_id``),
        the value, what was expected and how many rows are affected.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"user_id": ["u1", "u2"], "text": ["good pasta", "fast laptop"],
    ...                    "ts": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00+00:00"]})
    >>> validate_events(df)[["ts", "weight"]].to_numpy().tolist()
    [[1704067200.0, 1.0], [1704153600.0, 1.0]]
    >>> validate_events(df.assign(ts=[1704067200000, 1704153600000]), ts_unit="ms")["ts"].tolist()
    [1704067200.0, 1704153600.0]
    """
    check_ts_unit(ts_unit)
    df = _as_dataframe(events, "events")
    _require(df, "events", EVENT_COLUMNS, EVENT_OPTIONAL)
    t = _Table(df, "events", "user_id")
    _check_ids(t, "user_id")
    item_id = _check_ids(t, "item_id") if "item_id" in df.columns else None
    _check_text(t)
    ts = _check_ts(t, ts_unit=ts_unit)
    weight = _check_weight(t) if "weight" in df.columns else np.ones(len(df), dtype=np.float64)

    # Series keep the ids' and text's dtypes (e.g. pandas string, nullable int); with pandas'
    # copy-on-write the result never writes through to the caller's frame.
    out = {"user_id": df["user_id"].reset_index(drop=True),
           "text": df["text"].reset_index(drop=True),
           "ts": np.array(ts, dtype=np.float64, copy=True)}
    if item_id is not None:
        out["item_id"] = df["item_id"].reset_index(drop=True)
    out["weight"] = np.array(weight, dtype=np.float64, copy=True)
    return pd.DataFrame(out).copy()


def validate_items(items) -> pd.DataFrame:
    """Check an item table and return a normalised copy.

    Parameters
    ----------
    items : pandas.DataFrame or pyarrow.Table
        Required columns ``item_id`` (unique, non-null) and ``text`` (non-empty strings).
        Other columns are ignored.

    Returns
    -------
    pandas.DataFrame, shape (n_items, 2)
        A new frame with columns ``item_id``, ``text`` in the input's order, RangeIndex.

    Raises
    ------
    TypeError
        ``items`` is not a DataFrame or pyarrow Table.
    ValueError
        Missing column, null, empty or whitespace-only ``item_id``, duplicate ``item_id``
        (naming both rows), or non-string / empty ``text``, with the row, value and number of
        rows affected.

    Examples
    --------
    >>> import pandas as pd
    >>> validate_items(pd.DataFrame({"item_id": [1, 2], "text": ["red shoes", "tea"]})).shape
    (2, 2)
    """
    df = _as_dataframe(items, "items")
    _require(df, "items", ITEM_COLUMNS, ())
    t = _Table(df, "items", "item_id")
    _check_ids(t, "item_id")
    ids = df["item_id"].reset_index(drop=True)
    dup_later = ids.duplicated(keep="first").to_numpy()
    if dup_later.any():
        j = int(np.argmax(dup_later))
        first = int(np.argmax((ids == ids.iloc[j]).to_numpy()))
        n_dup = int(ids.duplicated(keep=False).sum())
        raise ValueError(
            f"items column 'item_id': duplicate item_id {ids.iloc[j]!r} at rows {first} and "
            f"{j}; expected each item_id once. {n_dup} of {len(ids)} rows share an item_id "
            "with another row (row numbers are 0-based positions in the input).")
    _check_text(t)
    return pd.DataFrame({"item_id": ids, "text": df["text"].reset_index(drop=True)}).copy()
