"""Issue 12: ids kept as written (mapped columns too), empty ids are missing ids, implausible
timestamps rejected with a unit hint (``ts_unit``), and loud partial success in ``score``
(rejected rows on stderr, ``max_rejected``)."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from interestflow import InterestEngine
from interestflow.cli import main
from interestflow.io import read_table
from interestflow.recommend import RecommendConfig
from interestflow.synthetic import make_demo_events
from interestflow.validation import validate_events, validate_items

from _fakes import DIM, HashEncoder

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved content-only engine (40 demo users, 16-d hash vectors, no ranker: score's
    items= needs one) to score item-only events with."""
    root = tmp_path_factory.mktemp("ids_time")
    data = make_demo_events(40)
    eng = InterestEngine(encoder=HashEncoder(), n_segments=3, ranker=None,
                         recommend_config=RecommendConfig(weights={"content": 1.0}))
    eng.fit(data.events, data.items)
    eng.save(root / "model")
    return {"root": root, "model": root / "model", "eng": eng}


def _users(out):
    return pq.read_table(out / "users").to_pandas().sort_values("user_id").reset_index(drop=True)


# ------------------------------------------------------------ row 2: ids are kept as written

def test_csv_ids_stay_as_written_under_mapped_column_names(tmp_path):
    path = tmp_path / "ev.csv"
    path.write_text("uid,iid,review,time\n007,01,a,1\n0007,002,b,2\n7,3,c,3\n")
    back = read_table(path, string_columns=("uid", "iid", "review"))
    assert back["uid"].tolist() == ["007", "0007", "7"]
    assert back["iid"].tolist() == ["01", "002", "3"]
    # the standard names give the same strings without being named
    std = tmp_path / "std.csv"
    std.write_text(path.read_text().replace("uid,iid,review", "user_id,item_id,text"))
    assert read_table(std)["user_id"].tolist() == ["007", "0007", "7"]
    with pytest.raises(TypeError, match="string_columns must be a sequence"):
        read_table(path, string_columns="uid")


def test_json_ids_keep_the_files_types(tmp_path):
    """JSON types its values: a JSON string "007" stays a string, a JSON number 7 an int."""
    path = tmp_path / "ev.jsonl"
    path.write_text('{"user_id": "007", "item_id": 7, "text": "a", "ts": 1704067200}\n'
                    '{"user_id": "7", "item_id": 8, "text": "b", "ts": 1704067201}\n')
    back = read_table(path)
    assert back["user_id"].tolist() == ["007", "7"]
    assert back["item_id"].tolist() == [7, 8]
    assert pd.api.types.is_integer_dtype(back["item_id"])


def test_run_keeps_mapped_csv_ids_and_score_accepts_the_same_flags(tmp_path, capsys):
    """`run --user-col uid` once merged users "007", "0007" and "7" (ids parsed as int64);
    `score` with the same flags then refused the model's int item ids."""
    ev = pd.DataFrame({
        "uid": ["007", "007", "0007", "0007", "7", "7"],
        "iid": ["01", "02", "03", "04", "05", "06"],
        "review": ["guitar strings for my acoustic", "a capo that holds tune", "espresso beans",
                   "a milk frother", "trail running shoes", "running socks"],
        "time": [T0 + i for i in range(6)]})
    ev.to_csv(tmp_path / "ev.csv", index=False)
    items = pd.DataFrame({"iid": ["01", "02", "03", "04", "05", "06"],
                          "review": ["strings", "capo", "beans", "frother", "shoes", "socks"]})
    items.to_csv(tmp_path / "items.csv", index=False)
    flags = ["--user-col", "uid", "--item-col", "iid", "--ts-col", "time"]
    out = tmp_path / "run"
    rc = main(["run", "--events", str(tmp_path / "ev.csv"), "--items", str(tmp_path / "items.csv"),
               "--out", str(out), "--k", "2", "--n-segments", "1", "--text-col", "review",
               "--no-progress"] + flags)
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["users"] == 3 and summary["items"] == 6
    users = pq.read_table(out / "users.parquet").to_pandas()
    assert sorted(users["user_id"]) == ["0007", "007", "7"]
    recs = pq.read_table(out / "recommendations.parquet").to_pandas()
    assert set(recs["item_id"]) <= set(items["iid"])  # "01", not 1
    # score the same kind of file with the same flags against the saved model
    ev[["uid", "iid", "time"]].to_csv(tmp_path / "score.csv", index=False)
    rc = main(["score", "--events", str(tmp_path / "score.csv"), "--model-dir",
               str(out / "model"), "--out", str(tmp_path / "scored"), "--k", "2",
               "--no-progress"] + flags)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    s = json.loads(cap.out)
    assert s["users"] == 3 and s["rejected"]["total"] == 0
    assert _users(tmp_path / "scored")["user_id"].tolist() == ["0007", "007", "7"]


def test_run_compares_int_and_str_item_ids_as_strings_never_the_reverse(tmp_path, capsys):
    """CSV events (item ids as written) with a JSON items file of numbers: the numbers are
    compared as their decimal strings, so "010" is not item 10."""
    ev = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "item_id": ["010", "11", "12", "13"],
                       "text": ["guitar strings", "capo", "espresso beans", "milk frother"],
                       "ts": [T0 + 1, T0 + 2, T0 + 3, T0 + 4]})
    ev.to_csv(tmp_path / "ev.csv", index=False)
    pd.DataFrame({"item_id": [10, 11, 12, 13], "text": ["strings", "capo", "beans",
                                                        "frother"]}).to_json(
        tmp_path / "items.jsonl", orient="records", lines=True)
    out = tmp_path / "o"
    assert main(["run", "--events", str(tmp_path / "ev.csv"), "--items",
                 str(tmp_path / "items.jsonl"), "--out", str(out), "--k", "2",
                 "--n-segments", "2", "--no-progress"]) == 0
    capsys.readouterr()
    eng = InterestEngine.load(out / "model")
    assert sorted(eng.item_ids_) == ["010", "10", "11", "12", "13"]


# ------------------------------------------------------------ row 6: empty ids are missing

@pytest.mark.parametrize("column", ["user_id", "item_id"])
@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_or_blank_ids_are_missing_ids(column, blank):
    df = pd.DataFrame({"user_id": ["a", "b", "c"], "item_id": ["i1", "i2", "i3"],
                       "text": ["x", "y", "z"], "ts": [T0, T0 + 1, T0 + 2]})
    df.loc[1, column] = blank
    with pytest.raises(ValueError) as info:
        validate_events(df)
    msg = str(info.value)
    assert f"events column '{column}': missing id (empty or whitespace-only)" in msg
    assert f"got {blank!r} (str) at row 1" in msg and "1 of 3 rows affected" in msg
    with pytest.raises(ValueError, match=r"items column 'item_id': missing id \(empty or "
                                         r"whitespace-only\).*at row 0"):
        validate_items(pd.DataFrame({"item_id": [blank, "i2"], "text": ["x", "y"]}))


@pytest.mark.parametrize("column", ["user_id", "item_id"])
def test_run_rejects_an_empty_id_cell_naming_the_row(tmp_path, capsys, column):
    ev = pd.DataFrame({"user_id": ["a", "b", "c"], "item_id": ["i1", "i2", "i3"],
                       "text": ["guitar", "espresso", "shoes"], "ts": [T0, T0 + 1, T0 + 2]})
    ev.loc[1, column] = ""  # written as an empty CSV cell
    ev.to_csv(tmp_path / "ev.csv", index=False)
    rc = main(["run", "--events", str(tmp_path / "ev.csv"), "--out", str(tmp_path / "o"),
               "--n-segments", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"events column '{column}': missing id (empty or whitespace-only)" in err
    assert "at row 1" in err
    assert not (tmp_path / "o").exists()


def test_score_treats_blank_item_ids_as_missing(tiny, tmp_path):
    eng = tiny["eng"]
    good = eng.item_ids_[0]
    pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": [good, "   ", ""],
                  "ts": [T0, T0 + 1, T0 + 2]}).to_parquet(tmp_path / "ev.parquet")
    s = score_(tmp_path / "ev.parquet", tiny["model"], tmp_path / "out")
    assert s["rejected"]["by_reason"] == {
        "no text, no vector and no item_id of a catalogue item": 2}
    # an items table whose id is blank is refused like an empty one
    pd.DataFrame({"item_id": [good, "  "], "vector": [list(np.ones(DIM))] * 2}).to_parquet(
        tmp_path / "items.parquet")
    with pytest.raises(ValueError, match="missing item id at row 1"):
        score_(tmp_path / "ev.parquet", tiny["model"], tmp_path / "out2",
               items=tmp_path / "items.parquet")


def score_(events, model, out, **kw):
    from interestflow.batch import score

    return score(events, model, out, k=3, show_progress=False, **kw)


# ------------------------------------------------------------ row 5: plausible timestamps

def _ev(ts):
    return pd.DataFrame({"user_id": ["a", "b", "a", "c"], "text": ["w", "x", "y", "z"],
                         "ts": ts})


def test_milliseconds_are_rejected_with_the_unit_hint_and_accepted_with_ts_unit():
    ms = [(T0 + i) * 1000 for i in range(4)]
    with pytest.raises(ValueError) as info:
        validate_events(_ev(ms))
    msg = str(info.value)
    assert "events column 'ts': implausible timestamp: got 1704067200000 (int) at row 0" in msg
    assert "from 1990-01-01 to 2100-01-01 UTC" in msg
    assert "pass ts_unit='ms' (CLI: --ts-unit ms)" in msg and "4 of 4 rows affected" in msg
    assert validate_events(_ev(ms), ts_unit="ms")["ts"].tolist() == [T0, T0 + 1, T0 + 2, T0 + 3]
    us = [(T0 + i) * 10**6 for i in range(4)]
    assert validate_events(_ev(us), ts_unit="us")["ts"].tolist() == [T0, T0 + 1, T0 + 2, T0 + 3]
    with pytest.raises(ValueError, match="pass ts_unit='us'"):
        validate_events(_ev(us))
    with pytest.raises(ValueError, match=r"ts_unit='h' is not valid; pass one of 's', 'ms'"):
        validate_events(_ev(ms), ts_unit="h")


@pytest.mark.parametrize("ts, row, shown", [
    ([T0, T0 + 1, (T0 + 2) * 1000, T0 + 3], 2, "1704067202000 (int)"),       # s and ms mixed
    ([T0, 253_402_214_400, T0, T0], 1, "253402214400 (int)"),                # year 9999
    ([T0, T0, -1e12, T0], 2, "-1000000000000.0 (float)"),                    # negative sentinel
    (["2024-01-01", "9999-12-31", "2024-01-02", "2024-01-03"], 1, "'9999-12-31' (str)"),
    (pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "1980-06-01"]), 3, "Timestamp"),
    ([T0, "2024-01-02", T0, 19_800], 3, "19800 (int)"),                      # days since 1970
])
def test_implausible_times_are_rejected_naming_row_and_value(ts, row, shown):
    with pytest.raises(ValueError) as info:
        validate_events(_ev(ts))
    msg = str(info.value)
    assert f"events column 'ts': implausible timestamp: got {shown}" in msg
    assert f"at row {row}" in msg and "1 of 4 rows affected" in msg


def test_mixed_units_say_so():
    with pytest.raises(ValueError, match=r"reads as milliseconds but 3 other row\(s\) read as "
                                         r"seconds: the column mixes units"):
        validate_events(_ev([T0, T0 + 1, (T0 + 2) * 1000, T0 + 3]))


def test_mixed_units_count_only_the_numbers_that_fit():
    """An ISO string among the rows is not a number 'read as seconds'."""
    with pytest.raises(ValueError, match=r"reads as milliseconds but 1 other row\(s\) read as "
                                         r"seconds"):
        validate_events(_ev([T0, "2024-01-02", (T0 + 2) * 1000, "2024-01-03"]))


@pytest.mark.parametrize("now, shown", [
    (1_704_067_200_000, "it reads as milliseconds"),   # ms while the events are in ms
    (5e9, "outside 1990-01-01..2100-01-01 UTC"),       # year 2128
    ("9999-12-31", "outside 1990-01-01..2100-01-01 UTC"),
])
def test_fit_and_partial_fit_refuse_an_implausible_now(now, shown):
    data = make_demo_events(12, n_topics=2, random_state=1)
    ev = data.events.assign(ts=data.events["ts"].astype("int64") // 10**6)  # ms since 1970
    with pytest.raises(ValueError, match=f"now=.*{shown}"):
        InterestEngine(encoder=HashEncoder(), n_segments=2).fit(ev, ts_unit="ms", now=now)
    eng = InterestEngine(encoder=HashEncoder(), n_segments=2).fit(ev, ts_unit="ms")
    with pytest.raises(ValueError, match=f"now=.*{shown}"):
        eng.partial_fit(ev.tail(1), ts_unit="ms", now=now)
    assert eng.n_events_ == len(ev)  # refused before any change


def test_fit_checks_times_and_ts_unit_gives_the_same_engine():
    data = make_demo_events(12, n_topics=2, random_state=1)
    ev = data.events.assign(ts=data.events["ts"].astype("int64") // 10**6)  # ms since 1970
    with pytest.raises(ValueError, match="implausible timestamp.*pass ts_unit='ms'"):
        InterestEngine(encoder=HashEncoder(), n_segments=2).fit(ev)
    a = InterestEngine(encoder=HashEncoder(), n_segments=2).fit(ev, ts_unit="ms")
    b = InterestEngine(encoder=HashEncoder(), n_segments=2).fit(data.events)
    np.testing.assert_allclose(a.user_vectors_, b.user_vectors_, atol=1e-6)
    assert a.reference_time_ == pytest.approx(b.reference_time_, abs=1e-3)


def test_score_rejects_out_of_window_rows_with_a_reason_and_ts_unit_reads_them(tiny, tmp_path):
    items = tiny["eng"].item_ids_.to_numpy()
    rng = np.random.default_rng(0)
    n = 40
    ev = pd.DataFrame({"user_id": np.repeat([f"u{i}" for i in range(8)], 5),
                       "item_id": items[rng.integers(0, len(items), n)],
                       "ts": T0 + rng.integers(0, 90 * 86400, n)})
    ev.to_parquet(tmp_path / "s.parquet")
    ev.assign(ts=ev["ts"] * 1000).to_parquet(tmp_path / "ms.parquet")
    mixed = ev.assign(ts=np.where(np.arange(n) % 4 == 0, ev["ts"] * 1000, ev["ts"]))
    mixed.to_parquet(tmp_path / "mixed.parquet")

    ref = score_(tmp_path / "s.parquet", tiny["model"], tmp_path / "ref")
    # mixed: the millisecond rows are rejected with a reason, never mixed in
    s = score_(tmp_path / "mixed.parquet", tiny["model"], tmp_path / "mixed")
    reason = ("implausible ts (outside 1990-01-01..2100-01-01 UTC; numbers read as unix "
              "seconds: milliseconds? pass --ts-unit ms)")
    assert s["rejected"]["by_reason"] == {reason: 10}
    rej = pq.read_table(tmp_path / "mixed" / "rejected.parquet").to_pandas()
    assert rej["file_row"].tolist() == list(range(0, n, 4))
    assert s["reference_time"] == float(mixed["ts"][np.arange(n) % 4 != 0].max())
    # milliseconds with ts_unit="ms": the same users, vectors and reference time
    got = score_(tmp_path / "ms.parquet", tiny["model"], tmp_path / "ms", ts_unit="ms")
    assert got["rejected"]["total"] == 0 and got["reference_time"] == ref["reference_time"]
    a, b = _users(tmp_path / "ref"), _users(tmp_path / "ms")
    np.testing.assert_allclose(np.stack(a["vector"]), np.stack(b["vector"]), atol=1e-6)
    # ts_unit="ms" on the mixed file rejects the other 30 rows instead
    s = score_(tmp_path / "mixed.parquet", tiny["model"], tmp_path / "mixed_ms", ts_unit="ms")
    assert list(s["rejected"]["by_reason"].values()) == [30]
    assert "numbers read as unix milliseconds (--ts-unit ms)" in next(iter(
        s["rejected"]["by_reason"]))
    # ts_unit is part of the job: a changed unit does not resume the old output
    with pytest.raises(ValueError, match=r"params.ts_unit: 's' -> 'ms'"):
        score_(tmp_path / "s.parquet", tiny["model"], tmp_path / "ref", ts_unit="ms")
    with pytest.raises(ValueError, match="now=.*outside 1990-01-01..2100-01-01"):
        score_(tmp_path / "s.parquet", tiny["model"], tmp_path / "x", now=(T0 + 10**8) * 1000)


def test_run_ts_unit_flag(tmp_path, capsys):
    ev = pd.DataFrame({"user_id": ["a", "a", "b", "b"],
                       "text": ["guitar strings", "capo", "espresso beans", "milk frother"],
                       "ts": [(T0 + i) * 1000 for i in range(4)]})
    ev.to_csv(tmp_path / "ev.csv", index=False)
    args = ["run", "--events", str(tmp_path / "ev.csv"), "--out", str(tmp_path / "o"),
            "--n-segments", "2", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "implausible timestamp" in err and "--ts-unit ms" in err
    assert main(args + ["--ts-unit", "ms"]) == 0
    capsys.readouterr()
    assert InterestEngine.load(tmp_path / "o" / "model").reference_time_ == T0 + 3


# ------------------------------------------------------------ row 10: loud partial success

def _half_bad(tiny, tmp_path):
    good = tiny["eng"].item_ids_[:12].tolist()
    ts = [("2024-02-01T00:00:00Z" if i % 2 == 0 else "02/30/2024 25:00") for i in range(12)]
    pd.DataFrame({"user_id": [f"u{i // 2}" for i in range(12)], "item_id": good,
                  "ts": ts}).to_csv(tmp_path / "ev.csv", index=False)
    return ["score", "--events", str(tmp_path / "ev.csv"), "--model-dir", str(tiny["model"]),
            "--k", "2", "--no-progress"]


def test_score_prints_rejected_rows_on_stderr(tiny, tmp_path, capsys):
    args = _half_bad(tiny, tmp_path)
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["rejected"]["total"] == 6
    assert "interestflow score: 6 of 12 rows rejected (50.0%):" in cap.err
    assert "         6  unparseable ts" in cap.err
    assert "row 1 (ev.csv row 1, user_id 'u0'): unparseable ts" in cap.err
    assert str(tmp_path / "a" / "rejected.parquet") in cap.err


@pytest.mark.parametrize("limit, code", [("10%", 3), ("0.5", 0), ("5", 3), ("6", 0)])
def test_score_max_rejected_exits_non_zero_after_writing_everything(tiny, tmp_path, capsys,
                                                                      limit, code):
    args = _half_bad(tiny, tmp_path) + ["--out", str(tmp_path / "o"), "--max-rejected", limit]
    assert main(args) == code
    cap = capsys.readouterr()
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert json.loads(cap.out) == summary  # the summary is printed either way
    rec = summary["max_rejected"]
    assert rec["limit"] == limit and rec["exceeded"] is (code == 3)
    assert rec["allowed_rows"] == {"10%": 1, "0.5": 6, "5": 5, "6": 6}[limit]
    assert summary["users"] == 6 and (tmp_path / "o" / "rejected.parquet").is_file()
    assert len(pq.read_table(tmp_path / "o" / "users").to_pandas()) == 6
    if code == 3:
        assert (f"interestflow: error: 6 of 12 rows rejected (50.0%), more than "
                f"max_rejected='{limit}' allows") in cap.err
        # re-running the finished job still fails the same way (nothing is redone)
        assert main(args) == 3
        assert "already_complete" in capsys.readouterr().out


def test_library_max_rejected_raises_a_value_error_subclass_after_finishing(tiny, tmp_path):
    from interestflow.batch import RejectedRowsError, score

    _half_bad(tiny, tmp_path)
    with pytest.raises(RejectedRowsError) as info:
        score(tmp_path / "ev.csv", tiny["model"], tmp_path / "o", k=2, max_rejected=0.25,
              show_progress=False)
    assert isinstance(info.value, ValueError)
    assert info.value.summary["max_rejected"]["exceeded"] is True
    assert info.value.summary["rejected"]["by_reason"] == {"unparseable ts": 6}
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["max_rejected"][
        "allowed_rows"] == 3
    for bad, exc in (("lots", ValueError), (1.5, ValueError), (-1, ValueError),
                     (True, TypeError), ("150%", ValueError)):
        with pytest.raises(exc, match="max_rejected"):
            score(tmp_path / "ev.csv", tiny["model"], tmp_path / "x", max_rejected=bad,
                  show_progress=False)
