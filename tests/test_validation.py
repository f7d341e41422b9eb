"""validate_events / validate_items error messages and normalisation; read_table / write_parquet."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from interestflow.io import read_table, write_parquet
from interestflow.validation import validate_events, validate_items

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def events(**over):
    base = {
        "user_id": ["u1", "u2", "u1", "u3"],
        "text": ["great pasta", "fast laptop", "cheap flights", "red shoes"],
        "ts": [T0, T0 + 60, T0 + 3600, T0 + 86400],
    }
    base.update(over)
    return pd.DataFrame(base)


# ---------------------------------------------------------------- good input

def test_normalised_output_columns_order_and_dtypes():
    df = events(item_id=["i1", "i2", "i3", "i4"], weight=[1, 2, 0, 0.5], extra=[0, 0, 0, 0])
    df.index = [10, 3, 7, 1]  # a non-default index is reset, row order kept
    out = validate_events(df)
    assert list(out.columns) == ["user_id", "text", "ts", "item_id", "weight"]
    assert out.index.equals(pd.RangeIndex(4))
    assert out["ts"].dtype == np.float64 and out["weight"].dtype == np.float64
    assert out["ts"].tolist() == [T0, T0 + 60, T0 + 3600, T0 + 86400]
    assert out["weight"].tolist() == [1.0, 2.0, 0.0, 0.5]
    assert out["user_id"].tolist() == ["u1", "u2", "u1", "u3"]
    assert out["item_id"].tolist() == ["i1", "i2", "i3", "i4"]
    assert out["text"].tolist() == df["text"].tolist()


def test_weight_defaults_to_one_and_item_id_absent():
    out = validate_events(events())
    assert list(out.columns) == ["user_id", "text", "ts", "weight"]
    assert out["weight"].tolist() == [1.0] * 4


def test_input_not_mutated():
    df = events(ts=pd.to_datetime([T0, T0 + 1, T0 + 2, T0 + 3], unit="s", utc=True))
    before = df.copy(deep=True)
    out = validate_events(df)
    out.loc[0, "user_id"] = "changed"
    out.loc[0, "ts"] = -1.0
    pd.testing.assert_frame_equal(df, before)


@pytest.mark.parametrize("ts", [
    [T0, T0 + 60, T0 + 3600, T0 + 86400],                                   # int seconds
    [float(T0), T0 + 60.0, T0 + 3600.0, T0 + 86400.0],                      # float seconds
    pd.to_datetime([T0, T0 + 60, T0 + 3600, T0 + 86400], unit="s"),         # naive = UTC
    pd.to_datetime([T0, T0 + 60, T0 + 3600, T0 + 86400], unit="s", utc=True)
    .tz_convert("America/New_York"),                                        # tz-aware
    pd.to_datetime([T0, T0 + 60, T0 + 3600, T0 + 86400], unit="s")
    .as_unit("ns"),                                                         # ns resolution
    ["2024-01-01T00:00:00Z", "2024-01-01T00:01:00+00:00",                   # ISO strings,
     "2024-01-01T09:00:00+08:00", "2024-01-02"],                            # mixed offsets
    [pd.Timestamp(T0, unit="s", tz="UTC"), pd.Timestamp(T0 + 60, unit="s"),  # mixed objects
     dt.datetime(2024, 1, 1, 1, 0, tzinfo=dt.timezone.utc), T0 + 86400],
    [np.datetime64(T0, "s"), np.datetime64(T0 + 60, "s"), np.datetime64(T0 + 3600, "s"),
     np.datetime64(T0 + 86400, "s")],
])
def test_every_time_representation_gives_identical_seconds(ts):
    out = validate_events(events(ts=ts))
    assert out["ts"].dtype == np.float64
    assert out["ts"].tolist() == [T0, T0 + 60, T0 + 3600, T0 + 86400]


def test_pyarrow_table_input():
    table = pa.table({
        "user_id": pa.array([7, 8, 7], pa.int64()),
        "text": ["a", "b", "c"],
        "ts": pa.array([T0, T0 + 5, T0 + 9], pa.timestamp("s", tz="Asia/Shanghai")),
        "weight": pa.array([1.0, 0.5, 2.0]),
    })
    out = validate_events(table)
    assert out["ts"].tolist() == [T0, T0 + 5, T0 + 9]
    assert out["user_id"].tolist() == [7, 8, 7]
    assert out["weight"].tolist() == [1.0, 0.5, 2.0]


def test_pandas_string_and_nullable_dtypes():
    df = events(user_id=pd.array(["u1", "u2", "u1", "u3"], dtype="string"),
                text=pd.array(["a", "b", "c", "d"], dtype="string"),
                weight=pd.array([1, 2, 3, 4], dtype="Int64"))
    out = validate_events(df)
    assert out["weight"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert out["user_id"].tolist() == ["u1", "u2", "u1", "u3"]


def test_empty_events_are_valid():
    out = validate_events(events().iloc[:0])
    assert len(out) == 0 and out["ts"].dtype == np.float64


# ---------------------------------------------------------------- bad input

def _raises(df, exc=ValueError):
    with pytest.raises(exc) as info:
        validate_events(df)
    return str(info.value)


def test_not_a_table_is_type_error():
    msg = _raises([{"user_id": 1}], TypeError)
    assert "events must be a pandas DataFrame or a pyarrow Table" in msg and "list" in msg
    with pytest.raises(TypeError, match="items must be a pandas DataFrame"):
        validate_items({"item_id": [1], "text": ["x"]})


def test_missing_column_lists_present_columns():
    msg = _raises(events().drop(columns=["ts"]).assign(when=1))
    assert "missing required column(s) ['ts']" in msg
    assert "columns present: ['user_id', 'text', 'when']" in msg


def test_duplicate_column_names():
    df = pd.concat([events(), events()[["ts"]]], axis=1)
    assert "duplicate column names ['ts']" in _raises(df)


@pytest.mark.parametrize("value, problem", [
    (None, "missing text: got None"),
    (np.nan, "missing text: got nan (float)"),
    (42, "non-string text: got 42 (int)"),
    (b"bytes", "non-string text: got b'bytes' (bytes)"),
    ("", "empty or whitespace-only text: got '' (str)"),
    ("  \t\n", "empty or whitespace-only text: got '  \\t\\n' (str)"),
])
def test_bad_text(value, problem):
    text = pd.Series(["ok", "fine", value, value], dtype=object)
    msg = _raises(events(text=text))
    assert "events column 'text'" in msg
    assert problem in msg
    assert "at row 2 (user_id 'u1')" in msg
    assert "2 of 4 rows affected" in msg
    assert "expected a non-empty string" in msg


@pytest.mark.parametrize("value", [None, np.nan])
def test_null_user_id(value):
    msg = _raises(events(user_id=pd.Series(["u1", "u2", "u3", value], dtype=object)))
    assert "events column 'user_id': missing id" in msg
    assert "at row 3" in msg and "1 of 4 rows affected" in msg


def test_null_item_id_when_column_exists():
    msg = _raises(events(item_id=pd.Series(["i1", None, None, "i4"], dtype=object)))
    assert "events column 'item_id': missing id" in msg
    assert "at row 1 (user_id 'u2')" in msg and "2 of 4 rows affected" in msg


@pytest.mark.parametrize("ts, row, count, problem", [
    (["2024-01-01", "yesterday", "2024-01-03", "2024-13-45"], 1, 2,
     "unparseable timestamp: got 'yesterday' (str)"),
    ([T0, T0, np.nan, T0], 2, 1, "missing timestamp"),
    ([T0, np.inf, T0, -np.inf], 1, 2, "non-finite timestamp: got inf (float)"),
    (pd.to_datetime([T0, None, T0, T0], unit="s"), 1, 1, "missing timestamp: got NaT"),
    (pd.Series([T0, "soon", None, T0], dtype=object), 2, 1, "missing timestamp: got None"),
    (pd.Series([T0, "soon", 1.5, T0], dtype=object), 1, 1,
     "unparseable timestamp: got 'soon' (str)"),
    (pd.Series([T0, [1], T0, T0], dtype=object), 1, 1, "unparseable timestamp: got [1] (list)"),
    ([True, False, True, True], 0, 4, "boolean timestamp"),
])
def test_bad_timestamps(ts, row, count, problem):
    msg = _raises(events(ts=ts))
    assert "events column 'ts'" in msg
    assert problem in msg
    assert f"at row {row} (user_id " in msg
    assert f"{count} of 4 rows affected" in msg
    assert "ISO 8601" in msg


@pytest.mark.parametrize("weight, row, count, problem", [
    ([1.0, np.nan, 1.0, np.nan], 1, 2, "missing or NaN weight: got nan (float)"),
    ([1.0, 1.0, np.inf, 1.0], 2, 1, "infinite weight: got inf (float)"),
    ([1.0, -0.5, 1.0, -2.0], 1, 2, "negative weight: got -0.5 (float)"),
    (pd.Series([1.0, "heavy", 2.0, 1.0], dtype=object), 1, 1,
     "non-numeric weight: got 'heavy' (str)"),
    (pd.Series([1.0, 2.0, None, 1.0], dtype=object), 2, 1, "missing or NaN weight: got None"),
    ([True, False, True, True], 0, 4, "non-numeric weight: got True (bool)"),
    (pd.array([1, None, 2, 3], dtype="Int64"), 1, 1, "missing or NaN weight: got <NA>"),
])
def test_bad_weights(weight, row, count, problem):
    msg = _raises(events(weight=weight))
    assert "events column 'weight'" in msg
    assert problem in msg
    assert f"at row {row} (user_id " in msg
    assert f"{count} of 4 rows affected" in msg
    assert "expected a finite number >= 0" in msg


def test_first_offending_row_is_reported_among_many():
    n = 1000
    text = ["ok"] * n
    for i in (317, 318, 900):
        text[i] = " "
    df = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "text": text,
                       "ts": np.arange(n, dtype=float)})
    msg = _raises(df)
    assert "at row 317 (user_id 'u317')" in msg and "3 of 1000 rows affected" in msg


# ---------------------------------------------------------------- items

def test_validate_items_good():
    items = pd.DataFrame({"item_id": [3, 1, 2], "text": ["tea", "red shoes", "a book"],
                          "price": [1, 2, 3]}, index=[5, 6, 7])
    out = validate_items(items)
    assert list(out.columns) == ["item_id", "text"]
    assert out["item_id"].tolist() == [3, 1, 2]
    assert out.index.equals(pd.RangeIndex(3))


def test_validate_items_duplicate_names_both_rows():
    items = pd.DataFrame({"item_id": ["a", "b", "c", "b", "a"], "text": list("vwxyz")})
    with pytest.raises(ValueError) as info:
        validate_items(items)
    msg = str(info.value)
    assert "items column 'item_id'" in msg
    assert "duplicate item_id 'b' at rows 1 and 3" in msg
    assert "4 of 5 rows" in msg


def test_validate_items_bad_values():
    with pytest.raises(ValueError, match=r"items column 'item_id': missing id: got None at row 1"):
        validate_items(pd.DataFrame({"item_id": pd.Series(["a", None], dtype=object),
                                     "text": ["x", "y"]}))
    with pytest.raises(ValueError, match=r"items column 'text': empty or whitespace-only text: "
                                         r"got '' \(str\) at row 0 \(item_id 'a'\)"):
        validate_items(pd.DataFrame({"item_id": ["a", "b"], "text": ["", "y"]}))
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['text'\]; columns "
                                         r"present: \['item_id', 'title'\]"):
        validate_items(pd.DataFrame({"item_id": ["a"], "title": ["y"]}))


# ---------------------------------------------------------------- io

def _sample():
    return pd.DataFrame({
        "user_id": ["007", "u2", "u3"],
        "text": ["NA", "null, with comma", 'quote " inside'],
        "ts": [T0, T0 + 1, T0 + 2],
        "item_id": ["i1", "i2", "i3"],
        "weight": [1.0, 0.5, 2.0],
    })


@pytest.mark.parametrize("name", ["events.csv", "events.csv.gz", "events.parquet",
                                  "events.pq", "events.jsonl", "events.ndjson", "events.json"])
def test_round_trip(tmp_path, name):
    df = _sample()
    path = tmp_path / name
    if name.endswith((".parquet", ".pq")):
        write_parquet(df, path)
    elif ".csv" in name:
        df.to_csv(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True)
    back = read_table(path)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    # ids and texts come back as strings exactly as written
    assert back["user_id"].tolist() == ["007", "u2", "u3"]
    assert back["text"].tolist()[0] == "NA"
    out = validate_events(back)
    assert out["ts"].tolist() == [T0, T0 + 1, T0 + 2]


def test_json_array_file(tmp_path):
    path = tmp_path / "items.json"
    pd.DataFrame({"item_id": [1, 2], "text": ["a", "b"]}).to_json(path, orient="records")
    assert read_table(path)["text"].tolist() == ["a", "b"]


def test_csv_empty_cells(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("user_id,text,ts,weight\nu1,,1,\nu2,hello,,2\n")
    back = read_table(path)
    assert back["text"].tolist() == ["", "hello"]
    assert np.isnan(back["ts"].iloc[1]) and np.isnan(back["weight"].iloc[0])
    with pytest.raises(ValueError, match=r"'text': empty or whitespace-only text: got '' "
                                         r"\(str\) at row 0 \(user_id 'u1'\)"):
        validate_events(back)


def test_parquet_directory(tmp_path):
    d = tmp_path / "parts"
    df = _sample()
    write_parquet(df.iloc[:2], d / "part-0.parquet")
    write_parquet(df.iloc[2:], d / "part-1.parquet")
    back = read_table(d).sort_values("ts").reset_index(drop=True)
    assert back["user_id"].tolist() == ["007", "u2", "u3"]


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        read_table(tmp_path / "nope.csv")
    bad = tmp_path / "events.xlsx"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"cannot tell the format of .*events.xlsx.*\.csv"):
        read_table(bad)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"could not read .*broken.parquet.* as parquet"):
        read_table(broken)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_table(tmp_path / "emptydir")


def test_write_parquet_is_atomic_and_replaces(tmp_path):
    path = tmp_path / "sub" / "out.parquet"
    write_parquet(_sample(), path)
    write_parquet(_sample().iloc[:1], path)  # replaces
    assert len(read_table(path)) == 1
    assert sorted(os.listdir(path.parent)) == ["out.parquet"]  # no temp files left

    class Boom:
        pass

    with pytest.raises(TypeError, match="pandas DataFrame or a pyarrow Table"):
        write_parquet(Boom(), path)
    # a failing write leaves the previous file intact and no temp file behind
    bad = pd.DataFrame({"x": [object()]})
    with pytest.raises(Exception):
        write_parquet(bad, path)
    assert len(read_table(path)) == 1
    assert sorted(os.listdir(path.parent)) == ["out.parquet"]


def test_bad_text_in_pandas_string_dtype():
    msg = _raises(events(text=pd.array(["a", " ", "b", None], dtype="string")))
    assert "events column 'text': missing text: got <NA> at row 3 (user_id 'u3')" in msg
    msg = _raises(events(text=pd.array(["a", " ", "b", "\u3000"], dtype="string")))
    assert "empty or whitespace-only text: got ' ' (str) at row 1 (user_id 'u2')" in msg
    assert "2 of 4 rows affected" in msg
