"""Reading and checking the tables of a run directory (the schema is in the package
docstring): every error names the file, the column and the row."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import LIFECYCLE_EVENTS

__all__ = ["Run", "Tracking", "first_bad_row", "load_run"]

_SNAPSHOTS = "tracking/snapshots.parquet"
_ASSIGNMENTS = "tracking/assignments.parquet"
_LIFECYCLE = "tracking/lifecycle.parquet"
_TRANSITIONS = "tracking/transitions.parquet"
_MAP = "tracking/map.parquet"
_CANDIDATES = "tracking/lifecycle_candidates.parquet"
_TRENDS = "tracking/trends.parquet"


@dataclass
class Tracking:
    """The checked ``tracking/`` tables of a run directory."""

    snapshots: pd.DataFrame
    assignments: pd.DataFrame
    lifecycle: pd.DataFrame
    transitions: pd.DataFrame
    map: pd.DataFrame
    candidates: pd.DataFrame | None  # every candidate event (optional file)
    trends: pd.DataFrame | None  # rising items / keywords (optional file)
    order: list  # snapshot numbers, ascending
    labels: dict  # snapshot -> "t3 · 2024-03-01 – 2024-03-08"


@dataclass
class Run:
    """A checked run directory: what the report draws."""

    run_dir: Path
    summary: dict | None
    users: pd.DataFrame | None  # None: a tracking-only run directory
    segments: pd.DataFrame | None
    tracking: Tracking | None


# --------------------------------------------------------------------------------------------
# one table, one column
# --------------------------------------------------------------------------------------------

def _read_table(run_dir: Path, rel: str, columns) -> pd.DataFrame:
    """``run_dir / rel`` read as parquet, with at least ``columns``."""
    path = run_dir / rel
    if not path.is_file():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} has no {rel} ({str(path)!r} "
                                "does not exist)")
    try:
        df = pd.read_parquet(path)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # pyarrow's errors differ by cause; name the file
        raise ValueError(f"could not read {rel} as parquet: {type(exc).__name__}: {exc}") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{rel} lacks column(s) {missing}; columns present: "
                         f"{list(df.columns)}")
    return df.reset_index(drop=True)


def first_bad_row(mask: np.ndarray) -> int:
    """The index of the first true entry of ``mask``."""
    return int(np.flatnonzero(mask)[0])


def _check_int_column(df: pd.DataFrame, col: str, rel: str) -> None:
    """Column ``col`` of table ``rel`` holds integers (no bools) and no missing value."""
    s = df[col]
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_integer_dtype(s):
        raise TypeError(f"{rel} column {col!r} must hold integers, got dtype {s.dtype}")
    if s.isna().any():
        raise ValueError(f"{rel} column {col!r} is missing a value in row "
                         f"{first_bad_row(s.isna().to_numpy())}")


def _check_float_column(df: pd.DataFrame, col: str, rel: str, *,
                        allow_nan: bool = False) -> None:
    """Column ``col`` of table ``rel`` holds finite numbers (NaN too when ``allow_nan``)."""
    s = df[col]
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        raise TypeError(f"{rel} column {col!r} must hold numbers, got dtype {s.dtype}")
    v = s.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isinf(v) if allow_nan else ~np.isfinite(v)
    if bad.any():
        i = first_bad_row(bad)
        raise ValueError(f"{rel} column {col!r} must be finite, row {i} holds {v[i]}")


def _check_time_column(df: pd.DataFrame, col: str, rel: str) -> None:
    """Column ``col`` of table ``rel`` holds timestamps and no missing value."""
    s = df[col]
    if not pd.api.types.is_datetime64_any_dtype(s):
        raise TypeError(f"{rel} column {col!r} must hold timestamps, got dtype {s.dtype}")
    if s.isna().any():
        raise ValueError(f"{rel} column {col!r} is missing a value in row "
                         f"{first_bad_row(s.isna().to_numpy())}")


def _str_list(value, rel: str, col: str, row: int) -> list[str]:
    """A list<str> cell as a Python list; a plain string is one entry (``"a, b"`` stays)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    raise TypeError(f"{rel} column {col!r} row {row}: expected a list of strings, got "
                    f"{type(value).__name__}")


def _int_list(value, rel: str, col: str, row: int) -> list[int]:
    """A list<int> cell (segment ids) as a Python list of ints."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        out = []
        for v in value:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{rel} column {col!r} row {row}: expected a list of integer "
                                f"segment ids, found {v!r}")
            out.append(int(v))
        return out
    raise TypeError(f"{rel} column {col!r} row {row}: expected a list of integer segment ids, "
                    f"got {type(value).__name__}")


def _str_lists(df: pd.DataFrame, col: str, rel: str) -> list[list[str]]:
    """Every cell of a list<str> column as a Python list."""
    return [_str_list(v, rel, col, i) for i, v in enumerate(df[col])]


def _int_lists(df: pd.DataFrame, col: str, rel: str) -> list[list[int]]:
    """Every cell of a list<int> column as a Python list."""
    return [_int_list(v, rel, col, i) for i, v in enumerate(df[col])]


def _fmt_times(times: pd.Series) -> list[str]:
    """Timestamps as dates (UTC), with hours and minutes unless all are at midnight."""
    t = pd.to_datetime(times)
    if t.dt.tz is not None:
        t = t.dt.tz_convert("UTC")
    midnight = bool(((t.dt.hour == 0) & (t.dt.minute == 0) & (t.dt.second == 0)).all())
    return list(t.dt.strftime("%Y-%m-%d" if midnight else "%Y-%m-%d %H:%M"))


# --------------------------------------------------------------------------------------------
# the tracking tables
# --------------------------------------------------------------------------------------------

def _check_snapshots(snaps: pd.DataFrame) -> pd.DataFrame:
    """snapshots.parquet checked, its list cells as Python lists."""
    for col in ("snapshot", "segment_id", "size"):
        _check_int_column(snaps, col, _SNAPSHOTS)
    _check_time_column(snaps, "window_start", _SNAPSHOTS)
    _check_time_column(snaps, "window_end", _SNAPSHOTS)
    if len(snaps) == 0:
        raise ValueError(f"{_SNAPSHOTS} has no rows; a tracked run has at least one snapshot")
    if (snaps["segment_id"] < 0).any():
        i = first_bad_row((snaps["segment_id"] < 0).to_numpy())
        raise ValueError(f"{_SNAPSHOTS} row {i}: segment_id {snaps['segment_id'].iloc[i]} is "
                         "negative; noise (-1) belongs in assignments.parquet only")
    dup = snaps.duplicated(["snapshot", "segment_id"]).to_numpy()
    if dup.any():
        i = first_bad_row(dup)
        raise ValueError(f"{_SNAPSHOTS} row {i}: segment_id {snaps['segment_id'].iloc[i]} "
                         f"appears twice in snapshot {snaps['snapshot'].iloc[i]}")
    snaps = snaps.copy()
    snaps["keywords"] = _str_lists(snaps, "keywords", _SNAPSHOTS)
    snaps["representative_texts"] = _str_lists(snaps, "representative_texts", _SNAPSHOTS)
    return snaps


def _check_assignments(asg: pd.DataFrame) -> pd.DataFrame:
    """assignments.parquet checked (one row per user and snapshot), user ids as str."""
    for col in ("snapshot", "segment_id"):
        _check_int_column(asg, col, _ASSIGNMENTS)
    asg = asg.assign(user_id=asg["user_id"].astype(str))
    dup = asg.duplicated(["snapshot", "user_id"]).to_numpy()
    if dup.any():
        i = first_bad_row(dup)
        raise ValueError(f"{_ASSIGNMENTS} row {i}: user {asg['user_id'].iloc[i]!r} is assigned "
                         f"twice in snapshot {asg['snapshot'].iloc[i]}")
    return asg


def _check_lifecycle(life: pd.DataFrame) -> pd.DataFrame:
    """lifecycle.parquet checked (known events), segment lists as lists, details as str."""
    _check_int_column(life, "snapshot", _LIFECYCLE)
    _check_float_column(life, "value", _LIFECYCLE, allow_nan=True)
    life = life.copy()
    bad = ~life["event"].isin(LIFECYCLE_EVENTS).to_numpy()
    if bad.any():
        i = first_bad_row(bad)
        raise ValueError(f"{_LIFECYCLE} row {i}: event {life['event'].iloc[i]!r} is not one of "
                         f"{list(LIFECYCLE_EVENTS)}")
    life["segments_from"] = _int_lists(life, "segments_from", _LIFECYCLE)
    life["segments_to"] = _int_lists(life, "segments_to", _LIFECYCLE)
    life["detail"] = life["detail"].fillna("").astype(str)
    return life


def _check_transitions(trans: pd.DataFrame) -> None:
    """transitions.parquet holds integers and no negative count."""
    for col in ("snapshot", "from_segment", "to_segment", "n_users"):
        _check_int_column(trans, col, _TRANSITIONS)
    if (trans["n_users"] < 0).any():
        i = first_bad_row((trans["n_users"] < 0).to_numpy())
        raise ValueError(f"{_TRANSITIONS} row {i}: n_users must be >= 0, got "
                         f"{trans['n_users'].iloc[i]}")


def _check_map(mp: pd.DataFrame) -> pd.DataFrame:
    """map.parquet checked (finite coordinates), user ids as str."""
    _check_int_column(mp, "snapshot", _MAP)
    _check_float_column(mp, "x", _MAP)
    _check_float_column(mp, "y", _MAP)
    return mp.assign(user_id=mp["user_id"].astype(str))


def _check_snapshot_refs(order: list, tables) -> None:
    """Every snapshot that ``tables`` ((rel, df) pairs) name is one in snapshots.parquet;
    a transition's snapshot is >= 1 and its predecessor is a snapshot too."""
    for rel, df in tables:
        first = 1 if rel == _TRANSITIONS else 0
        s = df["snapshot"].to_numpy()
        bad = ~np.isin(s, order) | (s < first)
        if rel == _TRANSITIONS:  # a transition at t goes from t-1 to t: both must be snapshots
            bad |= ~np.isin(s - 1, order)
        if bad.any():
            i = first_bad_row(bad)
            what = ("a snapshot >= 1 whose predecessor is a snapshot in " + _SNAPSHOTS
                    if rel == _TRANSITIONS else "a snapshot listed in " + _SNAPSHOTS)
            raise ValueError(f"{rel} row {i}: snapshot {s[i]} is not {what} "
                             f"({order[:10]}{' ...' if len(order) > 10 else ''})")


def _snapshot_labels(snaps: pd.DataFrame, order: list) -> dict:
    """snapshot -> ``"t3 · 2024-03-01 – 2024-03-08"`` (its window)."""
    first = snaps.drop_duplicates("snapshot").set_index("snapshot").loc[order]
    starts, ends = _fmt_times(first["window_start"]), _fmt_times(first["window_end"])
    return {t: f"t{t} · {a} – {b}" for t, a, b in zip(order, starts, ends)}


def _read_candidates(run_dir: Path) -> pd.DataFrame | None:
    """lifecycle_candidates.parquet, or None when the run directory has none."""
    if not (run_dir / _CANDIDATES).is_file():
        return None
    return _read_table(run_dir, _CANDIDATES, ["snapshot", "event", "reported", "reason"])


def _read_trends(run_dir: Path) -> pd.DataFrame | None:
    """trends.parquet checked, or None when the run directory has none."""
    if not (run_dir / _TRENDS).is_file():
        return None
    trends = _read_table(run_dir, _TRENDS, ["snapshot", "segment_id", "kind", "key", "share",
                                            "previous_share", "n_users", "p_value"])
    for col in ("snapshot", "segment_id", "n_users"):
        _check_int_column(trends, col, _TRENDS)
    for col in ("share", "previous_share", "p_value"):
        _check_float_column(trends, col, _TRENDS)
    return trends


def _load_tracking(run_dir: Path) -> Tracking:
    """The five tracking tables and the optional two, read and checked."""
    snaps = _read_table(run_dir, _SNAPSHOTS, ["snapshot", "window_start", "window_end",
                                              "segment_id", "size", "keywords",
                                              "representative_texts"])
    asg = _read_table(run_dir, _ASSIGNMENTS, ["snapshot", "user_id", "segment_id"])
    life = _read_table(run_dir, _LIFECYCLE, ["snapshot", "event", "segments_from",
                                             "segments_to", "value", "detail"])
    trans = _read_table(run_dir, _TRANSITIONS, ["snapshot", "from_segment", "to_segment",
                                                "n_users"])
    mp = _read_table(run_dir, _MAP, ["snapshot", "user_id", "x", "y"])
    snaps = _check_snapshots(snaps)
    asg = _check_assignments(asg)
    life = _check_lifecycle(life)
    _check_transitions(trans)
    mp = _check_map(mp)
    order = sorted(int(s) for s in snaps["snapshot"].unique())
    _check_snapshot_refs(order, ((_ASSIGNMENTS, asg), (_LIFECYCLE, life),
                                 (_TRANSITIONS, trans), (_MAP, mp)))
    labels = _snapshot_labels(snaps, order)
    cand, trends = _read_candidates(run_dir), _read_trends(run_dir)
    for col in ("p_value", "stability"):
        if col in life.columns:
            _check_float_column(life, col, _LIFECYCLE, allow_nan=True)
    return Tracking(snaps, asg, life, trans, mp, cand, trends, order, labels)


# --------------------------------------------------------------------------------------------
# the run directory
# --------------------------------------------------------------------------------------------

def _read_summary(run_dir: Path) -> dict | None:
    """summary.json as a dict; None when it is absent or not a JSON object."""
    spath = run_dir / "summary.json"
    if not spath.is_file():
        return None
    try:
        summary = json.loads(spath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"summary.json in {str(run_dir)!r} is not valid JSON: {exc}") from exc
    return summary if isinstance(summary, dict) else None


def _read_users(run_dir: Path) -> pd.DataFrame:
    """users.parquet checked (integer segments)."""
    users = _read_table(run_dir, "users.parquet", ["user_id", "segment"])
    _check_int_column(users, "segment", "users.parquet")
    return users


def _read_segments(run_dir: Path) -> pd.DataFrame:
    """segments.parquet checked, its list cells as Python lists."""
    rel = "segments.parquet"
    segments = _read_table(run_dir, rel, ["segment", "size", "keywords"])
    _check_int_column(segments, "segment", rel)
    _check_int_column(segments, "size", rel)
    segments = segments.copy()
    segments["keywords"] = _str_lists(segments, "keywords", rel)
    if "representative_texts" in segments.columns:
        segments["representative_texts"] = _str_lists(segments, "representative_texts", rel)
    return segments


def load_run(run_dir) -> Run:
    """Every table of ``run_dir`` that the report draws, read and checked."""
    run_dir = Path(os.fspath(run_dir))
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist or is not a "
                                "directory")
    summary = _read_summary(run_dir)
    tracking = _load_tracking(run_dir) if (run_dir / "tracking").exists() else None
    users = segments = None
    # a tracked run is drawn from tracking/ alone (SegmentTracker.to_run_dir writes only
    # that); the static tables are read, and so checked, when they are there
    if tracking is None or (run_dir / "users.parquet").exists():
        if tracking is None and not (run_dir / "users.parquet").exists():
            raise FileNotFoundError(
                f"run directory {str(run_dir)!r} has no users.parquet and no tracking/ folder; "
                "pass the folder written by `interestflow run` / `interestflow demo` or by "
                "SegmentTracker.to_run_dir")
        users = _read_users(run_dir)
    if tracking is None or (run_dir / "segments.parquet").exists():
        segments = _read_segments(run_dir)
    return Run(run_dir, summary, users, segments, tracking)
