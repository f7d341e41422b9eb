import numpy as np
import pandas as pd
import pytest

from interestflow import Encoder, InterestEngine
from interestflow.synthetic import make_demo_events

T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z: toy times inside the plausible window


@pytest.fixture(scope="module")
def encoder():
    return Encoder()


@pytest.fixture(scope="module")
def data():
    return make_demo_events(n_users=60, n_topics=4, random_state=3)


@pytest.fixture(scope="module")
def engine(encoder, data):
    return InterestEngine(encoder=encoder, n_segments=4).fit(data.events, data.items)


def test_fitted_shapes_and_features(engine, data):
    n_users = data.events["user_id"].nunique()
    assert len(engine.user_ids_) == n_users
    assert engine.user_vectors_.shape == (n_users, engine.encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(engine.user_vectors_, axis=1), 1.0, atol=1e-5)
    assert engine.segments_.shape == (n_users,)
    assert engine.segment_centroids_.shape == (4, engine.encoder.dim)
    np.testing.assert_allclose(engine.segment_soft_.sum(axis=1), 1.0, atol=1e-5)
    onehot = engine.segment_onehot_
    assert (onehot.argmax(axis=1) == engine.segments_).all() and onehot.sum() == n_users
    feats = engine.user_features()
    assert list(feats.columns[:2]) == ["user_id", "segment"] and len(feats) == n_users
    # the strongest soft feature of (nearly) every user is its own segment
    assert (engine.segment_soft_.argmax(axis=1) == engine.segments_).mean() > 0.95


def test_user_vector_is_time_decayed_mean(engine, encoder, data):
    ev = data.events
    uid = engine.user_ids_[5]
    mine = ev[ev["user_id"] == uid]
    vecs = encoder.encode(mine["text"].tolist())
    ts = mine["ts"].astype("int64").to_numpy() / 1e9
    ref = ev["ts"].astype("int64").max() / 1e9
    w = 0.5 ** ((ref - ts) / (30.0 * 86400))
    expected = (w[:, None] * vecs).sum(0) / w.sum()
    expected /= np.linalg.norm(expected)
    got = engine.user_vectors_[engine.user_rows([uid])[0]]
    np.testing.assert_allclose(got, expected, atol=2e-3)  # bf16 encoder on both sides
    assert float(got @ expected) > 0.9999


def test_segments_recover_planted_topics(engine, data):
    from sklearn.metrics import adjusted_rand_score
    truth = data.user_topic.reindex(engine.user_ids_).to_numpy()
    assert adjusted_rand_score(truth, engine.segments_) > 0.8


def test_recommend_contract(engine, data):
    users = list(engine.user_ids_[:7])
    recs = engine.recommend(users, k=5)
    assert list(recs.columns) == ["user_id", "item_id", "score", "rank"]
    assert len(recs) == 35
    seen = data.events.groupby("user_id")["item_id"].apply(set)
    for uid, g in recs.groupby("user_id", sort=False):
        assert list(g["rank"]) == [1, 2, 3, 4, 5]
        assert (np.diff(g["score"].to_numpy()) <= 1e-6).all()
        assert not (set(g["item_id"]) & seen[uid])
        assert g["item_id"].is_unique
    assert list(recs["user_id"].drop_duplicates()) == users
    with_seen = engine.recommend(users[:1], k=len(engine.item_ids_), exclude_seen=False)
    assert len(with_seen) == len(engine.item_ids_)


def test_recommend_fewer_rows_only_when_items_run_out(engine, data):
    uid = engine.user_ids_[0]
    n_seen = data.events.loc[data.events["user_id"] == uid, "item_id"].nunique()
    recs = engine.recommend([uid], k=len(engine.item_ids_) + 5)
    assert len(recs) == len(engine.item_ids_) - n_seen


def test_save_load_round_trip(engine, tmp_path):
    engine.save(tmp_path / "m")
    loaded = InterestEngine.load(tmp_path / "m")
    users = list(engine.user_ids_)
    pd.testing.assert_frame_equal(engine.recommend(users, k=10), loaded.recommend(users, k=10))
    np.testing.assert_array_equal(engine.user_vectors_, loaded.user_vectors_)
    np.testing.assert_array_equal(engine.segments_, loaded.segments_)
    pd.testing.assert_frame_equal(engine.user_features(), loaded.user_features())
    assert loaded.segment_keywords_ == engine.segment_keywords_
    assert not list((tmp_path / "m").glob("*.pkl"))


def test_item_vectors_from_events_without_items_table(encoder):
    ev = pd.DataFrame({
        "user_id": ["a", "a", "b", "b", "c"],
        "text": ["red running shoes", "trail running shoes", "espresso beans",
                 "dark roast espresso", "running socks"],
        "ts": [T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5],
        "item_id": ["shoe", "shoe", "coffee", "coffee", "socks"],
    })
    eng = InterestEngine(encoder=encoder, n_segments=2).fit(ev)
    v = encoder.encode(["red running shoes", "trail running shoes"])
    expected = v.mean(0) / np.linalg.norm(v.mean(0))
    got = eng.item_vectors_[eng.item_ids_.get_loc("shoe")]
    assert float(got @ expected) > 0.9999
    assert set(eng.item_ids_) == {"shoe", "coffee", "socks"}


def test_now_changes_weights_not_directions(encoder, data):
    ev = data.events[data.events["user_id"].isin(data.events["user_id"].unique()[:12])]
    a = InterestEngine(encoder=encoder, n_segments=2).fit(ev, data.items)
    later = ev["ts"].max() + pd.Timedelta(days=30)
    b = InterestEngine(encoder=encoder, n_segments=2).fit(ev, data.items, now=later)
    np.testing.assert_allclose(a.user_vectors_, b.user_vectors_, atol=1e-6)
    np.testing.assert_allclose(b.user_log2_weight_, a.user_log2_weight_ - 1.0, atol=1e-9)


def _events():
    return pd.DataFrame({"user_id": ["a", "b", "c"], "text": ["guitar strings", "pedal", "amp"],
                         "ts": [T0 + 1, T0 + 2, T0 + 3], "item_id": ["i1", "i2", "i3"]})


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.drop(columns="text"), ["text"]),
    (lambda d: d.assign(text=["ok", "", "ok"]), ["text", "1"]),
    (lambda d: d.assign(text=["ok", 5, "ok"]), ["text", "1"]),
    (lambda d: d.assign(user_id=["a", None, "c"]), ["user_id", "1"]),
    (lambda d: d.assign(ts=[T0, float("nan"), T0]), ["ts", "1"]),
    (lambda d: d.assign(ts=["2020-01-01", "not a date", "2020-01-02"]), ["ts", "1"]),
    (lambda d: d.assign(weight=[1.0, float("inf"), 1.0]), ["weight", "1"]),
])
def test_bad_events_are_rejected_naming_column_and_row(encoder, mutate, words):
    with pytest.raises((ValueError, TypeError)) as info:
        InterestEngine(encoder=encoder, n_segments=1).fit(mutate(_events()))
    msg = str(info.value)
    for w in words:
        assert w in msg, msg


def test_bad_arguments(engine, encoder):
    with pytest.raises(ValueError, match="unknown user id.*'nobody'.*position 1"):
        engine.recommend([engine.user_ids_[0], "nobody"])
    with pytest.raises(ValueError, match="k=0"):
        engine.recommend([engine.user_ids_[0]], k=0)
    with pytest.raises(ValueError, match=r"n_segments=5 exceeds the number of users \(3\)"):
        InterestEngine(encoder=encoder, n_segments=5).fit(_events())
    with pytest.raises(ValueError, match="half_life_days"):
        InterestEngine(encoder=encoder, half_life_days=0).fit(_events())
    with pytest.raises(RuntimeError, match="not fitted"):
        InterestEngine().recommend(["a"])


def test_mixed_id_types_are_rejected_naming_row(encoder):
    ev = _events().assign(user_id=["a", 1, "c"])
    with pytest.raises(ValueError, match=r"user_id.*row 1.*cast the column to str"):
        InterestEngine(encoder=encoder, n_segments=1).fit(ev)


def test_item_id_type_mismatch_between_events_and_items(encoder):
    ev = _events().assign(item_id=["10", "11", "12"])
    items = pd.DataFrame({"item_id": [10, 11], "text": ["strings", "pedal"]})
    with pytest.raises(ValueError, match=r"events column 'item_id' holds str.*items column"):
        InterestEngine(encoder=encoder, n_segments=1).fit(ev, items)


def test_event_after_now_names_the_input_row(encoder):
    ev = pd.DataFrame({"user_id": ["b", "a", "b", "a", "c"], "text": list("vwxyz"),
                       "ts": [T0 + 1, T0 + 2, T0 + 30, T0 + 4, T0 + 5]})
    with pytest.raises(ValueError, match=r"after now=1704067210.0.*row 2 \(user_id 'b'"):
        InterestEngine(encoder=encoder, n_segments=1).fit(ev, now=T0 + 10)


def test_user_with_only_zero_weights_is_rejected(encoder):
    ev = _events().assign(weight=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"only zero-weight events.*'b' at row 1"):
        InterestEngine(encoder=encoder, n_segments=1).fit(ev)


def test_parameters_checked_before_encoding():
    class NoEncode:
        def encode(self, *a, **k):
            raise AssertionError("encoded before checking parameters")
    with pytest.raises(ValueError, match="exceeds the number of users"):
        InterestEngine(encoder=NoEncode(), n_segments=4).fit(_events())
    with pytest.raises(TypeError, match="n_segments"):
        InterestEngine(encoder=NoEncode(), n_segments=2.5).fit(_events())
    with pytest.raises(TypeError, match="encoder"):
        InterestEngine(encoder="/some/path").fit(_events())


def test_load_refuses_files_from_two_different_saves(engine, tmp_path):
    import shutil
    engine.save(tmp_path / "a")
    engine.save(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "meta.json", tmp_path / "a" / "meta.json")
    with pytest.raises(ValueError, match="different saves"):
        InterestEngine.load(tmp_path / "a")
    assert len(InterestEngine.load(tmp_path / "b").recommend([engine.user_ids_[0]], k=10**9)) > 0
