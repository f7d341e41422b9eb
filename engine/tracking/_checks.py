"""Input checks of the tracker: numbers, pandas frequencies, and the per-event inputs of
:meth:`SegmentTracker.fit` (vectors, user ids, times as int64 nanoseconds, weights, texts,
item ids). Every error names the parameter, what was expected and, for a bad row, the row.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from .._utils import check_nonnegative

__all__ = ["check_number", "check_offset", "float_rows", "per_event", "event_times_ns",
           "item_codes", "check_events"]


def check_number(name, value, *, lo=None, hi=None, lo_open=False, allow_inf=False) -> float:
    """``value`` as a float, or a named error: ``TypeError`` when it is not a real number
    (bools are not), ``ValueError`` when it is NaN, infinite (unless ``allow_inf``) or
    outside ``[lo, hi]`` (``lo`` itself excluded with ``lo_open``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    v = float(value)
    if np.isnan(v) or (np.isinf(v) and not allow_inf):
        raise ValueError(f"{name}={value!r} must be a finite number")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        op = ">" if lo_open else ">="
        raise ValueError(f"{name}={value!r} is invalid; pass {name} {op} {lo}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}={value!r} is invalid; pass {name} <= {hi}")
    return v


def check_offset(name, value):
    """``value`` (a pandas frequency string, a Timedelta or a DateOffset) as a positive
    pandas ``DateOffset``, or a named error."""
    from pandas.tseries.frequencies import to_offset

    if isinstance(value, (pd.Timedelta, np.timedelta64)) or hasattr(value, "total_seconds"):
        value = pd.Timedelta(value)
    elif not isinstance(value, (str, pd.DateOffset)):
        raise TypeError(f"{name} must be a pandas frequency string such as '30D', '7D' or 'MS', "
                        f"a Timedelta or a DateOffset, got {type(value).__name__} ({value!r})")
    try:
        off = to_offset(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}={value!r} is not a pandas frequency; pass e.g. '30D', '7D', "
                         "'W' or 'MS'") from exc
    probe = pd.Timestamp("2024-01-01", tz="UTC")
    if not probe + off > probe:
        raise ValueError(f"{name}={value!r} must be a positive duration")
    return off


def float_rows(x, name: str) -> np.ndarray:
    """``x`` as a numpy array, or a ``ValueError`` naming ``name`` when it is not a 2-D float
    array (n_users, dim)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype.kind != "f":
        raise ValueError(f"{name} must be a 2-D float array (n_users, dim), got shape "
                         f"{x.shape} dtype {x.dtype}")
    return x


def per_event(values, name: str, n: int, *, unit: str, what: str, dtype=None) -> pd.Series:
    """``values``, one per event, as a pandas Series with index ``0 .. n - 1``.

    A pandas Series or Index keeps its dtype (``dtype`` given: converted with
    ``to_numpy(dtype=...)``); anything else goes through ``np.asarray(values, dtype)``.
    With ``dtype=object`` (ids) a single string is refused (``TypeError``: it would be read
    as one id per character). ``ValueError`` naming ``name`` when the values are not 1-D
    (``unit``: what one entry is) or not ``n`` (``what``: what to pass one of per event).
    """
    if isinstance(values, (pd.Series, pd.Index)):
        if dtype is None:
            return _of_length(pd.Series(values, copy=False).reset_index(drop=True), name, n,
                              what)
        return _of_length(pd.Series(values.to_numpy(dtype=dtype)), name, n, what)
    if dtype is object and isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of {unit}s (one per event), not a string")
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one {unit} per event), got shape {arr.shape}")
    return _of_length(pd.Series(arr), name, n, what)


def _of_length(values, name: str, n: int, what: str):
    """``values`` when it has ``n`` entries (one per event), else a ``ValueError`` naming
    ``name`` (``what``: what to pass one of per event)."""
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but event_vectors has {n} rows; "
                         f"pass one {what} per event")
    return values


def event_times_ns(ts, n: int) -> np.ndarray:
    """Event times as int64 nanoseconds since the epoch (UTC); naive datetimes are UTC,
    numbers are unix seconds (rounded to the nanosecond)."""
    s = per_event(ts, "ts", n, unit="time", what="time")
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(s.dtype):
        vals = np.asarray(s, dtype="datetime64[ns]")
        nat = np.isnat(vals)
    elif pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        sec = np.asarray(s, dtype=np.float64)
        nat = ~np.isfinite(sec)
        if nat.any():
            i = int(np.argmax(nat))
            raise ValueError(f"ts must be finite unix seconds, got {sec[i]} at row {i} "
                             f"({int(nat.sum())} rows affected)")
        return np.round(sec * 1e9).astype(np.int64)
    else:
        raise TypeError(f"ts must hold datetimes or unix seconds (numbers), got dtype {s.dtype}")
    if nat.any():
        i = int(np.argmax(nat))
        raise ValueError(f"ts must be valid times, got NaT at row {i} "
                         f"({int(nat.sum())} rows affected)")
    return np.asarray(vals, dtype="datetime64[ns]").astype(np.int64)


def item_codes(item_ids, n: int):
    """``(codes (n,) int64, -1 for null; names)`` of the events' items, codes in order of
    first appearance, or ``(None, None)`` without ``item_ids``."""
    if item_ids is None:
        return None, None
    arr = per_event(item_ids, "item_ids", n, unit="id", what="item id (or null)", dtype=object)
    codes, names = pd.factorize(arr.astype(object).where(arr.notna(), None), sort=False)
    return codes.astype(np.int64), np.asarray(names, dtype=object)


def check_events(event_vectors, user_ids, ts, weights, texts):
    """The inputs of :meth:`SegmentTracker.fit`, checked and converted.

    Returns ``(vectors (n, dim) float32 C-contiguous, user codes (n,) int64 into the sorted
    user index, users (pandas.Index, sorted), times (n,) int64 ns, weights (n,) float64,
    texts (list of str or None))``.
    """
    vec = _event_vectors(event_vectors)
    n = vec.shape[0]
    codes, users = _user_codes(user_ids, n)
    ts_ns = event_times_ns(ts, n)
    w = _event_weights(weights, n)
    texts = _event_texts(texts, n)
    return vec, codes.astype(np.int64), pd.Index(users), ts_ns, w, texts


def _event_vectors(event_vectors) -> np.ndarray:
    """``event_vectors`` as a float32 C-contiguous (n_events, dim) array: a floating 2-D
    array with at least one row, every value finite."""
    if isinstance(event_vectors, (list, tuple)):
        event_vectors = np.asarray(event_vectors)
    if not isinstance(event_vectors, np.ndarray):
        raise TypeError("event_vectors must be a numpy array of shape (n_events, dim), got "
                        f"{type(event_vectors).__name__}")
    if event_vectors.ndim != 2:
        raise ValueError("event_vectors must be 2-D (n_events, dim), got shape "
                         f"{event_vectors.shape}")
    if event_vectors.dtype.kind != "f":
        raise TypeError(f"event_vectors must be floating point, got dtype "
                        f"{event_vectors.dtype}")
    if event_vectors.shape[0] == 0:
        raise ValueError("event_vectors has no rows; pass at least one event")
    vec = np.ascontiguousarray(event_vectors, dtype=np.float32)
    bad = ~np.isfinite(vec).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"event_vectors has NaN or inf at row {i} ({int(bad.sum())} rows "
                         "affected)")
    return vec


def _user_codes(user_ids, n: int):
    """``(codes, users)``: ``pandas.factorize`` of the events' user ids, sorted; no nulls,
    one id type that orders."""
    uid = per_event(user_ids, "user_ids", n, unit="id", what="user id", dtype=object)
    nulls = uid.isna().to_numpy()
    if nulls.any():
        i = int(np.argmax(nulls))
        raise ValueError(f"user_ids is null at row {i} ({int(nulls.sum())} rows affected); "
                         "every event needs a user id")
    try:
        return pd.factorize(uid, sort=True)
    except TypeError as exc:
        raise TypeError("user_ids mixes id types that cannot be ordered (e.g. str and int); "
                        f"convert them to one type (e.g. str) first ({exc})") from None


def _event_weights(weights, n: int) -> np.ndarray:
    """Event weights as float64 (default 1): numeric, one per event, finite and >= 0."""
    return check_nonnegative("weights", weights, n, "one per event", default=1.0)


def _event_texts(texts, n: int):
    """``texts`` as a list of ``n`` str (one per event), or None."""
    if texts is None:
        return None
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings (one per event), not a single "
                        "string")
    texts = _of_length(list(texts), "texts", n, "text")
    for i, x in enumerate(texts):
        if not isinstance(x, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(x).__name__}")
    return texts
