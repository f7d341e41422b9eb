"""InterestEngine.partial_fit equals a full refit (vectors) and keeps segments consistent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from interestflow import InterestEngine
from interestflow.synthetic import make_demo_events


@pytest.fixture(scope="module")
def split_data(cached_encoder):
    data = make_demo_events(80, n_topics=4, random_state=7)
    ev = data.events.sort_values("ts", kind="stable").reset_index(drop=True)
    cut = ev["ts"].quantile(0.75)
    return data, ev, ev[ev["ts"] <= cut], ev[ev["ts"] > cut], cached_encoder


def test_partial_fit_equals_full_refit(split_data, tmp_path):
    data, ev, old, new, enc = split_data
    new = pd.concat([new, pd.DataFrame({"user_id": ["zz_new_user"], "text": [
        "new guitar strings and a tuner for my acoustic"], "ts": [new["ts"].max()],
        "item_id": ["zz_new_item"], "weight": [2.0]})], ignore_index=True)
    # the fusion recommender: its state is rebuilt exactly by partial_fit (the ranker's model
    # and EASE are kept until the next fit; see test_ranker's partial_fit test)
    full = InterestEngine(encoder=enc, ranker=None).fit(pd.concat([old, new], ignore_index=True),
                                                       data.items)
    inc = InterestEngine(encoder=enc, ranker=None).fit(old, data.items)
    calls = []
    real = enc.encode
    enc.encode = lambda texts, show_progress=None: calls.append(list(texts)) or real(texts)
    try:
        inc.partial_fit(new)
    finally:
        enc.encode = real
    assert len(calls) == 1 and set(calls[0]) == set(new["text"])  # only new texts encoded
    assert inc.reference_time_ == full.reference_time_
    assert inc.n_events_ == full.n_events_
    rows = inc.user_ids_.get_indexer(full.user_ids_)
    assert (rows >= 0).all() and len(inc.user_ids_) == len(full.user_ids_)
    np.testing.assert_allclose(inc.user_vectors_[rows], full.user_vectors_, atol=2e-6)
    np.testing.assert_allclose(inc.user_log2_weight_[rows], full.user_log2_weight_, atol=1e-9)
    items = inc.item_ids_.get_indexer(full.item_ids_)
    assert (items >= 0).all()
    np.testing.assert_allclose(inc.item_vectors_[items], full.item_vectors_, atol=2e-6)
    # K-means on all users vs nearest-centroid assignment after partial_fit: a few boundary
    # users of these 80 differ (0.935 with K chosen by usefulness, K = 4 both ways)
    assert adjusted_rand_score(inc.segments_[rows], full.segments_) >= 0.9
    users = list(full.user_ids_[:20])
    a = inc.recommend(users, k=5)
    b = full.recommend(users, k=5)
    assert (a["item_id"].to_numpy() == b["item_id"].to_numpy()).mean() > 0.9
    # state survives save/load and partial_fit still works after it
    inc.save(tmp_path / "m")
    again = InterestEngine.load(tmp_path / "m", encoder=enc)
    np.testing.assert_array_equal(again.user_mean_, inc.user_mean_)
    for key in inc.interactions_:
        np.testing.assert_array_equal(again.interactions_[key], inc.interactions_[key])


def test_partial_fit_leaves_unaffected_users_unchanged(split_data):
    data, ev, old, new, enc = split_data
    inc = InterestEngine(encoder=enc).fit(old, data.items)
    before = inc.user_vectors_.copy()
    one_user = new[new["user_id"] == new["user_id"].iloc[0]]
    inc.partial_fit(one_user)
    changed = np.flatnonzero(np.abs(inc.user_vectors_ - before).max(axis=1) > 0)
    assert changed.tolist() == [int(inc.user_ids_.get_loc(one_user["user_id"].iloc[0]))]


def test_a_partial_fit_that_fails_part_way_leaves_an_engine_that_says_so(split_data,
                                                                       monkeypatch):
    """State is updated in place: after a failure past the input checks the engine refuses
    to recommend or save (instead of serving a mix of old and new state) until fit()."""
    data, ev, old, new, enc = split_data
    inc = InterestEngine(encoder=enc).fit(old, data.items)

    def fail(*args, **kwargs):
        raise ValueError("segmenter found nothing")

    monkeypatch.setattr(InterestEngine, "_update_segments", fail)
    with pytest.raises(ValueError, match="segmenter found nothing"):
        inc.partial_fit(new)
    for call in (lambda: inc.recommend(inc.user_ids_[:1], k=2), lambda: inc.save("x"),
                 lambda: inc.partial_fit(new)):
        with pytest.raises(RuntimeError, match=r"partial_fit failed part-way \(ValueError: "
                                               r"segmenter found nothing\)"):
            call()
    monkeypatch.undo()
    inc.fit(old, data.items)
    assert len(inc.recommend(inc.user_ids_[:1], k=2)) == 2


def test_partial_fit_rejects_bad_input(split_data):
    data, ev, old, new, enc = split_data
    inc = InterestEngine(encoder=enc).fit(old, data.items)
    with pytest.raises(ValueError, match="before the engine's reference time"):
        inc.partial_fit(new, now=old["ts"].min())
    bad = new.head(1).assign(user_id=1)
    with pytest.raises(ValueError, match="'user_id' holds int64 ids"):
        inc.partial_fit(bad)
    with pytest.raises(ValueError, match="no rows"):
        inc.partial_fit(new.head(0))
    with pytest.raises(RuntimeError, match="not fitted"):
        InterestEngine(encoder=enc).partial_fit(new)


def test_partial_fit_segments_agree_with_a_full_refit_on_the_planted_scenario(cached_encoder):
    from interestflow.planted import make_planted_scenario

    sc = make_planted_scenario(random_state=0)
    ts = pd.to_datetime(sc.events["ts"], utc=True)
    cut = sc.window_edges[-2]  # the last window arrives as new events
    old, new = sc.events[ts <= cut], sc.events[ts > cut]
    assert len(old) and len(new)
    full = InterestEngine(encoder=cached_encoder).fit(sc.events, sc.items)
    inc = InterestEngine(encoder=cached_encoder).fit(old, sc.items).partial_fit(new)
    rows = inc.user_ids_.get_indexer(full.user_ids_)
    np.testing.assert_allclose(inc.user_vectors_[rows], full.user_vectors_, atol=1e-6)
    # K-means on all users vs nearest-centroid assignment after partial_fit: a few boundary
    # users of these 80 differ (0.935 with K chosen by usefulness, K = 4 both ways)
    assert adjusted_rand_score(inc.segments_[rows], full.segments_) >= 0.9


# ------------------------------------------------- stable segments and cheap updates (issue 12)

class _LookupEncoder:
    """Hand-made geometry: every text has a fixed vector (no model)."""

    dim = 16

    def __init__(self):
        self.table = {}

    def add(self, text, vec):
        self.table[text] = np.asarray(vec, np.float32)

    def encode(self, texts, show_progress=None, **kwargs):
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


_WORDS = {"g1": "guitar strings tuner", "g2": "camping tent stove",
          "a": "espresso grinder beans", "b": "espresso milk frother",
          "e": "fantasy novel dragons"}
_DIM = 16


def _direction(group: str) -> np.ndarray:
    """Group directions: g1, g2 and e orthogonal; a and b two close halves around e3."""
    e = np.eye(_DIM)
    t = 0.6  # a, b at cosine 0.47: silhouette picks K=4, and K=3 once a user sits between
    d = {"g1": e[0], "g2": e[1], "a": e[2] + t * e[3], "b": e[2] - t * e[3], "e": e[4],
         "centre": e[2]}[group]
    return d / np.linalg.norm(d)


def _four_groups(extra_group=None, n_extra=0):
    """Users in four groups of 8, one event each, vector = direction + noise."""
    rng = np.random.default_rng(0)
    rows, enc = [], _LookupEncoder()
    sizes = [("g1", 8), ("g2", 8), ("a", 8), ("b", 8)]
    if extra_group:
        sizes.append((extra_group, n_extra))
    for g, n in sizes:
        for i in range(n):
            text = f"{_WORDS[g]} {i}"
            v = _direction(g) + 0.15 * rng.normal(size=_DIM)
            enc.add(text, v / np.linalg.norm(v))
            rows.append((f"{g}_{i:02d}", text, 1_600_000_000 + 60 * i, g))
    ev = pd.DataFrame(rows, columns=["user_id", "text", "ts", "group"])
    return ev, enc


def _group_segments(eng, ev):
    """Segment of each group's users (every user of a group must share one segment)."""
    out = {}
    for g, users in ev.groupby("group")["user_id"]:
        seg = np.unique(eng.segments_[eng.user_rows(users)])
        assert len(seg) == 1, (g, seg)
        out[g] = int(seg[0])
    return out


@pytest.fixture
def spy_choose_k(monkeypatch):
    import interestflow.segments as segments

    calls = []
    real = segments.choose_n_segments

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(segments, "choose_n_segments", spy)
    return calls


def test_one_event_keeps_k_ids_and_keywords_where_rechoosing_k_moves_it(spy_choose_k):
    """Row 12: main re-chose K by silhouette on every call (4 -> 3 here) and cleared keywords."""
    from interestflow.segments import choose_n_segments

    ev, enc = _four_groups()
    eng = InterestEngine(encoder=enc).fit(ev[["user_id", "text", "ts"]])
    assert eng.n_segments_ == 4
    groups = _group_segments(eng, ev)
    assert sorted(groups.values()) == [0, 1, 2, 3]
    segments, soft = eng.segments_.copy(), eng.segment_soft_.copy()
    keywords, cents = dict(eng.segment_keywords_), eng.segment_centroids_.copy()
    assert len(keywords) == 4 and keywords[groups["g1"]][0][0] in _WORDS["g1"].split()
    # one new user between a and b; re-choosing K on the updated users gives K=3
    enc.add("espresso espresso 0", _direction("centre"))
    one = pd.DataFrame({"user_id": ["new"], "text": ["espresso espresso 0"],
                        "ts": [1_600_100_000]})
    after = np.vstack([eng.user_vectors_, _direction("centre")[None].astype(np.float32)])
    assert choose_n_segments(after, eng._segment_config())[0] == 3  # the premise
    spy_choose_k.clear()

    eng.partial_fit(one)
    assert eng.n_segments_ == 4
    np.testing.assert_array_equal(eng.segments_[:len(segments)], segments)
    np.testing.assert_array_equal(eng.segment_soft_[:len(segments)], soft)
    np.testing.assert_array_equal(eng.segment_centroids_, cents)
    assert eng.segment_keywords_ == keywords
    assert eng.segments_[eng.user_rows(["new"])[0]] in (groups["a"], groups["b"])
    assert spy_choose_k == []  # no silhouette re-choice for one event
    assert not eng.segments_refitted_ and abs(eng.segment_drift_) < 0.01


def test_rechoose_k_maps_new_segments_to_old_ids_and_keeps_their_keywords(spy_choose_k):
    ev, enc = _four_groups()
    eng = InterestEngine(encoder=enc).fit(ev[["user_id", "text", "ts"]])
    groups, keywords = _group_segments(eng, ev), dict(eng.segment_keywords_)
    enc.add("espresso espresso 0", _direction("centre"))
    one = pd.DataFrame({"user_id": ["new"], "text": ["espresso espresso 0"],
                        "ts": [1_600_100_000]})
    spy_choose_k.clear()
    eng.partial_fit(one, rechoose_k=True)
    assert len(spy_choose_k) == 1 and eng.segments_refitted_
    assert eng.n_segments_ == 3 and set(eng.segments_) == {0, 1, 2}
    now = _group_segments(eng, ev)
    # g1 and g2 keep id and keywords; a and b merged into one segment carrying one old id
    assert now["g1"] == groups["g1"] and now["g2"] == groups["g2"]
    assert now["a"] == now["b"]
    merged = now["a"]
    source = next(g for g in ("a", "b") if keywords[groups[g]] == eng.segment_keywords_[merged])
    assert merged == groups[source] or groups[source] == 3  # id 3 no longer exists: moved
    for g in ("g1", "g2"):
        assert eng.segment_keywords_[now[g]] == keywords[groups[g]]
    assert len(eng.segment_keywords_) == 3
    assert eng.segment_drift_ == 0.0  # the refit is the new baseline


def test_drift_refits_on_a_planted_new_group_and_not_on_a_small_update(spy_choose_k, caplog):
    ev, enc = _four_groups(extra_group="e", n_extra=12)
    old, shift = ev[ev["group"] != "e"], ev[ev["group"] == "e"]
    cols = ["user_id", "text", "ts"]
    eng = InterestEngine(encoder=enc).fit(old[cols])
    groups, keywords = _group_segments(eng, old), dict(eng.segment_keywords_)
    base = eng.segment_distance_fit_
    # a small update: one more event of a g1 user, close to its group
    enc.add("guitar strings tuner again", _direction("g1"))
    spy_choose_k.clear()
    eng.partial_fit(pd.DataFrame({"user_id": ["g1_00"], "text": ["guitar strings tuner again"],
                                  "ts": [1_600_200_000]}))
    assert spy_choose_k == [] and not eng.segments_refitted_
    assert eng.segment_drift_ < 0.02  # the user moved towards its centroid: below 0
    # rechoose_k=False: the planted group is assigned to old segments, a warning says so
    frozen = InterestEngine(encoder=enc).fit(old[cols])
    with caplog.at_level("WARNING", logger="interestflow.engine"):
        frozen.partial_fit(shift[cols].assign(ts=1_600_300_000), rechoose_k=False)
    assert frozen.n_segments_ == 4 and frozen.segment_drift_ > 0.1
    assert "segment drift" in caplog.text
    # "auto": 12 users of a new interest (27%) raise the mean distance by far more than 10%
    spy_choose_k.clear()
    eng.partial_fit(shift[cols].assign(ts=1_600_300_000))
    assert len(spy_choose_k) == 1 and eng.segments_refitted_
    # K=5 fits the users as well as K=4 fitted the old ones; kept segments fit them badly
    assert eng.segment_distance_ < 1.1 * base < frozen.segment_distance_
    assert eng.segment_drift_ == 0.0  # the refit is the new baseline
    assert eng.n_segments_ == 5
    now = _group_segments(eng, ev)
    for g in ("g1", "g2", "a", "b"):  # old segments keep id and keywords
        assert now[g] == groups[g] and eng.segment_keywords_[now[g]] == keywords[groups[g]]
    assert now["e"] == 4 and 4 not in eng.segment_keywords_  # new segment: new id, no keywords


def test_drift_on_demo_data_separates_a_new_topic_from_more_events(split_data, spy_choose_k):
    data, ev, old, new, enc = split_data
    inc = InterestEngine(encoder=enc).fit(old, data.items)
    spy_choose_k.clear()
    inc.partial_fit(new)  # 25% more events of the same users and topics
    assert spy_choose_k == [] and not inc.segments_refitted_ and inc.segment_drift_ < 0.1
    topic = data.user_topic
    held = set(topic[topic == topic.unique()[3]].index)
    eng = InterestEngine(encoder=enc).fit(ev[~ev["user_id"].isin(held)], data.items)
    k = eng.n_segments_
    spy_choose_k.clear()
    eng.partial_fit(ev[ev["user_id"].isin(held)])  # a fourth topic's users arrive
    assert len(spy_choose_k) == 1 and eng.segments_refitted_ and eng.n_segments_ >= k
    # the new topic gets a segment of its own (K chosen by usefulness on the three topics
    # was already 4, one topic split in two; the refit gives the new topic one of them)
    seg = pd.Series(eng.segments_, index=eng.user_ids_)
    new_seg = seg[list(held)].mode().iloc[0]
    assert (seg[list(held)] == new_seg).mean() >= 0.9
    assert seg[seg == new_seg].index.isin(list(held)).mean() >= 0.9


def test_one_event_updates_only_what_it_touches(split_data, monkeypatch, spy_choose_k):
    import interestflow.kmeans as kmeans
    import interestflow.recommend as recommend

    data, ev, old, new, enc = split_data
    inc = InterestEngine(encoder=enc).fit(old, data.items)
    seg, soft = inc.segments_.copy(), inc.segment_soft_.copy()
    spy_choose_k.clear()
    fits = []
    real_km = kmeans.KMeans.fit
    monkeypatch.setattr(kmeans.KMeans, "fit",
                        lambda *a, **k: fits.append("kmeans") or real_km(*a, **k))
    real_fit = recommend.Recommender.fit
    monkeypatch.setattr(recommend.Recommender, "fit",
                        lambda *a, **k: fits.append("recommender") or real_fit(*a, **k))
    event = new[new["item_id"].notna()].head(1)
    inc.partial_fit(event)
    assert fits == [] and spy_choose_k == []  # no clustering, no recommender rebuild
    row = inc.user_rows(event["user_id"])[0]
    others = np.arange(len(seg)) != row
    np.testing.assert_array_equal(inc.segments_[others], seg[others])
    np.testing.assert_array_equal(inc.segment_soft_[others], soft[others])
    # the updated recommender equals one rebuilt from all interactions
    monkeypatch.setattr(recommend.Recommender, "fit", real_fit)
    rec = inc.recommender_
    full = recommend.Recommender(recommend.RecommendConfig(weights=dict(zip(
        recommend.COMPONENTS, rec.weights_.tolist())))).fit(
        user_vectors=inc.user_vectors_, item_vectors=inc.item_vectors_,
        inter_user=inc.interactions_["user"], inter_item=inc.interactions_["item"],
        inter_ts=inc.interactions_["ts"], inter_weight=inc.interactions_["weight"],
        user_segment=inc.segments_, segment_soft=inc.segment_soft_, half_life_days=30.0)
    _assert_same_state(rec, full)


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sb:
        if sb[key].dtype.kind in "iu":
            np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)
        else:
            np.testing.assert_allclose(sa[key], sb[key], rtol=1e-9, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("assignment", ["soft", "hard"])
@pytest.mark.parametrize("neighbors", [100, 3])  # 100: the catalogue grows past it; 3: rows
def test_recommender_update_equals_fit_on_all_interactions(assignment, neighbors):
    from interestflow.recommend import COMPONENTS, RecommendConfig, Recommender

    rng = np.random.default_rng(0)
    n_users, n_items, dim, k = 60, 40, 8, 3
    U = rng.normal(size=(n_users, dim)).astype(np.float32)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    V = rng.normal(size=(n_items, dim)).astype(np.float32)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    iu, ii = rng.integers(0, n_users, 400), rng.integers(0, n_items, 400)
    ts = rng.uniform(0, 1e7, 400)
    wt = rng.choice([0.0, 1.0, 2.0], 400, p=[0.1, 0.6, 0.3])  # zero weights: seen, no signal
    soft = rng.dirichlet(np.ones(k), n_users).astype(np.float32)
    seg = soft.argmax(1)
    seg[::7] = -1  # noise users
    cfg = RecommendConfig(weights=dict.fromkeys(COMPONENTS, 1.0),
                          segment_assignment=assignment, knn_neighbors=neighbors)
    first = (np.arange(400) < 300) & (iu < 50) & (ii < 35)  # 10 users, 5 items arrive later
    rest = np.arange(400) >= 300
    cat = lambda x: np.concatenate([x[first], x[rest]])  # noqa: E731
    rec = Recommender(cfg).fit(
        user_vectors=U[:50], item_vectors=V[:35], inter_user=iu[first], inter_item=ii[first],
        inter_ts=ts[first], inter_weight=wt[first], user_segment=seg[:50],
        segment_soft=soft[:50], half_life_days=30.0)
    changed = np.array([1, 4, 9])  # users whose memberships moved without new interactions
    soft[changed] = rng.dirichlet(np.ones(k), len(changed))
    args = dict(user_vectors=U, item_vectors=V, inter_user=cat(iu), inter_item=cat(ii),
                inter_ts=cat(ts), inter_weight=cat(wt), user_segment=seg, segment_soft=soft)
    rec.update(**args, n_previous=int(first.sum()), changed_users=changed)
    full = Recommender(cfg).fit(**args, half_life_days=30.0)
    _assert_same_state(rec, full)
    assert rec.behaviour_time_ == full.behaviour_time_
    for r in (rec, full):
        r._sparse = None
    np.testing.assert_array_equal(rec.topk(np.arange(n_users), 10).rows,
                                  full.topk(np.arange(n_users), 10).rows)


def test_partial_fit_after_load_and_from_an_older_save(split_data, tmp_path):
    data, ev, old, new, enc = split_data
    inc = InterestEngine(encoder=enc).fit(old, data.items)
    inc.save(tmp_path / "m")
    again = InterestEngine.load(tmp_path / "m", encoder=enc)
    assert again.segment_distance_fit_ == inc.segment_distance_fit_
    assert again.recommender_.can_update()
    a = again.partial_fit(new.head(5))
    b = inc.partial_fit(new.head(5))
    np.testing.assert_array_equal(a.segments_, b.segments_)
    np.testing.assert_allclose(a.segment_distance_, b.segment_distance_, rtol=1e-12)
    _assert_same_state(a.recommender_, b.recommender_)
    # a save without the drift and incremental recommender state still updates (rebuilds)
    older = InterestEngine.load(tmp_path / "m", encoder=enc)
    older.segment_distance_ = older.segment_distance_fit_ = None
    older.recommender_.behaviour_time_ = None
    older.partial_fit(new.head(5))
    np.testing.assert_array_equal(older.segments_, b.segments_)
    _assert_same_state(older.recommender_, b.recommender_)


def test_partial_fit_rejects_bad_update_options(split_data):
    data, ev, old, new, enc = split_data
    inc = InterestEngine(encoder=enc).fit(old, data.items)
    with pytest.raises(ValueError, match="rechoose_k='yes' is not valid"):
        inc.partial_fit(new.head(1), rechoose_k="yes")
    with pytest.raises(ValueError, match="drift_threshold=0 is not valid"):
        inc.partial_fit(new.head(1), drift_threshold=0)


def test_hdbscan_refit_keeps_matched_ids_and_keywords():
    ev, enc = _four_groups(extra_group="e", n_extra=12)
    old, shift = ev[ev["group"] != "e"], ev[ev["group"] == "e"]
    cols = ["user_id", "text", "ts"]
    eng = InterestEngine(encoder=enc, segmenter="hdbscan").fit(old[cols])
    groups, keywords = _group_segments(eng, old), dict(eng.segment_keywords_)
    k = eng.n_segments_
    eng.partial_fit(shift[cols].assign(ts=1_600_300_000))  # density: refitted on every call
    assert eng.segments_refitted_ and eng.n_segments_ == k + 1
    now = _group_segments(eng, ev)
    for g in groups:
        assert now[g] == groups[g] and eng.segment_keywords_[now[g]] == keywords[groups[g]]
    assert now["e"] == k and k not in eng.segment_keywords_
