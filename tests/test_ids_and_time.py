"""Issue 12: ids kept as written (mapped columns too) and empty ids are missing ids."""

import hashlib
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

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
DIM = 16


class HashEncoder:
    """Deterministic text -> unit vector (seeded by the text's SHA-256): a tiny, fast model."""

    dim = DIM

    def encode(self, texts, show_progress=None, **kwargs):
        out = np.empty((len(texts), DIM), np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).normal(size=DIM)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved engine (40 demo users, 16-d hash vectors) to score item-only events with."""
    root = tmp_path_factory.mktemp("ids_time")
    data = make_demo_events(40)
    eng = InterestEngine(encoder=HashEncoder(), n_segments=3,
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
    from interestflow import InterestEngine as IE

    eng = IE.load(out / "model")
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

    return score(events, model, out, k=3, progress=False, **kw)
