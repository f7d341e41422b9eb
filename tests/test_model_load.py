"""A saved engine folder is checked on load: a damaged, edited or mixed folder never loads.

One tiny engine is fitted and saved once; each test corrupts a copy of its folder.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from interestflow import InterestEngine
from interestflow.synthetic import make_demo_events


@pytest.fixture(scope="module")
def saved(cached_encoder, tmp_path_factory):
    data = make_demo_events(n_users=20, n_topics=3, random_state=3)
    eng = InterestEngine(encoder=cached_encoder, n_segments=3).fit(data.events, data.items)
    folder = eng.save(tmp_path_factory.mktemp("saved") / "model")
    return eng, folder, data


@pytest.fixture
def copy(saved, tmp_path):
    """A fresh copy of the saved folder, to corrupt."""
    return shutil.copytree(saved[1], tmp_path / "model")


def _edit_meta(folder, fn):
    meta = json.loads((folder / "meta.json").read_text())
    fn(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


def _as_format_1(folder):
    """What interestflow 0.1 wrote: format_version 1 and no content hashes."""
    def down(meta):
        meta["format_version"] = 1
        meta.pop("sha256", None)
    _edit_meta(folder, down)


def _load_error(folder, **kw):
    """The error InterestEngine.load raises on ``folder`` (fails the test if it loads)."""
    with pytest.raises(ValueError) as info:
        InterestEngine.load(folder, **kw)
    assert type(info.value).__name__ == "ModelLoadError", repr(info.value)
    return str(info.value)


def test_model_load_error_is_a_public_value_error():
    from interestflow import ModelLoadError
    from interestflow.persistence import ModelLoadError as same

    assert same is ModelLoadError and issubclass(ModelLoadError, ValueError)


def test_save_records_the_hash_of_each_data_file_and_round_trips(saved):
    import hashlib

    eng, folder, _ = saved
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format_version"] == 2
    assert meta["ranker"] is not None  # the default engine's learned ranker, hashed too
    assert meta["sha256"] == {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in ("arrays.safetensors", "ids_users.parquet", "ids_items.parquet",
                     "ranker.txt")}
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]
    again = InterestEngine.load(folder, encoder=eng.encoder)
    users = list(eng.user_ids_[:5])
    pd.testing.assert_frame_equal(again.recommend(users, k=4), eng.recommend(users, k=4))


# ------------------------------------------------------------------------- row 8: edited
def test_shuffled_item_ids_are_refused_naming_the_file(copy):
    path = copy / "ids_items.parquet"
    table = pq.read_table(path)
    pq.write_table(table.take(np.random.default_rng(0).permutation(table.num_rows)), path)
    # same ids, same shapes: only the content hash can tell
    assert sorted(pq.read_table(path).column("id").to_pylist()) == \
        sorted(table.column("id").to_pylist())
    msg = _load_error(copy)
    assert msg.startswith(f"{path}: ") and "SHA-256" in msg


def test_truncated_user_ids_are_refused_naming_the_file(copy):
    path = copy / "ids_users.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)
    msg = _load_error(copy)
    assert msg.startswith(f"{path}: ") and "SHA-256" in msg


def test_negative_half_life_in_meta_is_refused_naming_file_and_parameter(copy):
    _edit_meta(copy, lambda m: m["params"].update(half_life_days=-5))
    msg = _load_error(copy)
    assert msg.startswith(f"{copy / 'meta.json'}: ")
    assert "half_life_days=-5 must be > 0" in msg


def test_partial_fit_drift_state_is_checked_and_round_trips(saved, copy):
    """partial_fit's drift baseline (meta.json) and segment totals (arrays) load as saved; a
    non-number is refused naming the file and the entry."""
    eng = InterestEngine.load(saved[1])
    assert eng.segment_distance_fit_ == pytest.approx(saved[0].segment_distance_fit_)
    np.testing.assert_array_equal(eng.recommender_.segment_popularity_total_,
                                  saved[0].recommender_.segment_popularity_total_)
    _edit_meta(copy, lambda m: m.update(segment_distance_fit_="NaN"))
    msg = _load_error(copy)
    assert msg.startswith(f"{copy / 'meta.json'}: entry 'segment_distance_fit_' is 'NaN'")


def test_shapes_are_checked_against_ids_and_meta(copy, caplog):
    """Without hashes (a format-1 save) the shape checks still refuse what does not fit."""
    _as_format_1(copy)
    users = copy / "ids_users.parquet"
    table = pq.read_table(users)
    pq.write_table(table.slice(0, table.num_rows - 1), users)
    msg = _load_error(copy)
    n = table.num_rows
    assert msg.startswith(f"{users}: has {n - 1} rows but arrays.safetensors holds {n} users")
    pq.write_table(table, users)
    _edit_meta(copy, lambda m: m.update(n_segments_=5))
    msg = _load_error(copy)
    assert msg.startswith(f"{copy / 'meta.json'}: n_segments_ is 5 but arrays.safetensors "
                          "holds 3 segment centroids")
    _edit_meta(copy, lambda m: m.update(n_segments_=3))
    from safetensors.numpy import load_file, save_file

    arrays = copy / "arrays.safetensors"
    t = load_file(str(arrays))
    n_items = len(t["item_vectors_"])
    t["recommender.popularity"] = t["recommender.popularity"][:-1].copy()
    save_file(t, str(arrays), metadata={"save_id": json.loads(
        (copy / "meta.json").read_text())["save_id"]})
    assert _load_error(copy) == (
        f"{arrays}: array 'recommender.popularity' has shape ({n_items - 1},): axis 0 is "
        f"{n_items - 1} but rows in ids_items.parquet is {n_items}; restore the folder as it "
        "was saved, or fit and save the engine again")


def test_duplicate_or_null_ids_are_refused(copy):
    _as_format_1(copy)
    path = copy / "ids_items.parquet"
    ids = pq.read_table(path).column("id").to_pylist()
    pd.DataFrame({"id": [ids[0]] + ids[1:-1] + [ids[0]]}).to_parquet(path, index=False)
    msg = _load_error(copy)
    assert msg.startswith(f"{path}: id {ids[0]!r} is at rows 0 and {len(ids) - 1}")
    pd.DataFrame({"id": ids[:3] + [None] + ids[4:]}).to_parquet(path, index=False)
    assert _load_error(copy).startswith(f"{path}: row 3 holds a null id")


def test_format_1_save_loads_with_a_warning(saved, copy, caplog):
    eng = saved[0]
    _as_format_1(copy)
    with caplog.at_level(logging.WARNING, logger="interestflow.persistence"):
        again = InterestEngine.load(copy, encoder=eng.encoder)
    assert "format_version 1" in caplog.text and "cannot be detected" in caplog.text
    users = list(eng.user_ids_[:3])
    pd.testing.assert_frame_equal(again.recommend(users, k=3), eng.recommend(users, k=3))
    # the earliest format-1 saves carried no save_id in either file
    from safetensors.numpy import load_file, save_file

    save_file(load_file(str(copy / "arrays.safetensors")), str(copy / "arrays.safetensors"))
    _edit_meta(copy, lambda m: m.pop("save_id"))
    again = InterestEngine.load(copy, encoder=eng.encoder)
    pd.testing.assert_frame_equal(again.recommend(users, k=3), eng.recommend(users, k=3))


def test_out_of_range_index_values_are_refused(copy):
    from safetensors.numpy import load_file, save_file

    _as_format_1(copy)
    path = copy / "arrays.safetensors"
    t = load_file(str(path))
    t["segments_"][4] = 7
    save_file(t, str(path), metadata={"save_id": json.loads(
        (copy / "meta.json").read_text())["save_id"]})
    msg = _load_error(copy)
    assert msg.startswith(f"{path}: array 'segments_' entry 4 is 7; expected -1 <= value < 3")


# --------------------------------------------------------------- row 9: unreadable files
def test_truncated_arrays_file_is_refused_naming_it(copy):
    path = copy / "arrays.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _load_error(copy)
    assert msg.startswith(f"{path}: cannot be read as safetensors") and "Safetensor" in msg


def test_broken_meta_json_is_refused_naming_it(copy):
    path = copy / "meta.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    msg = _load_error(copy)
    assert msg.startswith(f"{path}: is not valid JSON") and "JSONDecodeError" in msg


def test_missing_files_and_entries_are_named(copy):
    (copy / "ids_items.parquet").unlink()
    assert _load_error(copy).startswith(f"{copy / 'ids_items.parquet'}: missing")
    _edit_meta(copy, lambda m: m.pop("params"))
    assert _load_error(copy).startswith(f"{copy / 'meta.json'}: entry 'params' is missing or "
                                        "not a mapping")
    (copy / "meta.json").unlink()
    msg = _load_error(copy)
    assert msg.startswith(f"{copy / 'meta.json'}: missing") and \
        "does not hold a saved InterestEngine" in msg


# ------------------------------------------------- interestflow score reads the same way
def test_score_refuses_a_corrupted_model_as_load_does(saved, copy, tmp_path):
    from interestflow.batch import score

    _, _, data = saved
    path = copy / "ids_items.parquet"
    table = pq.read_table(path)
    pq.write_table(table.take(np.arange(table.num_rows)[::-1].copy()), path)
    events = tmp_path / "events.parquet"
    data.events[data.events["user_id"] == data.events["user_id"].iloc[0]].to_parquet(events)
    with pytest.raises(ValueError) as info:
        score(events, copy, tmp_path / "out", k=2, show_progress=False)
    assert type(info.value).__name__ == "ModelLoadError"
    assert str(info.value).startswith(f"{path.resolve()}: ") and "SHA-256" in str(info.value)
    _edit_meta(copy, lambda m: m["params"].update(half_life_days=-5))
    with pytest.raises(ValueError, match=r"meta\.json: saved parameters are invalid: "
                                         r"half_life_days=-5"):
        score(events, copy, tmp_path / "out", k=2, show_progress=False)


def test_score_hashes_the_model_once_in_the_driver_not_per_chunk_process(saved, tmp_path,
                                                                         monkeypatch):
    """Chunk processes check shapes and the save id; only the driver reads every byte."""
    from interestflow import batch, persistence

    _, folder, data = saved
    hashed = []
    real = persistence._sha256
    monkeypatch.setattr(persistence, "_sha256", lambda p: hashed.append(p.name) or real(p))
    batch._RESOURCES.clear()
    events = tmp_path / "events.parquet"
    data.events.to_parquet(events)
    summary = batch.score(events, folder, tmp_path / "out", k=2, chunk_users=5,
                          show_progress=False)
    assert summary["chunks"]["total"] > 1 and batch._LOADS["count"] >= 1
    assert sorted(hashed) == sorted(persistence._DATA_FILES + (persistence._RANKER_FILE,))
