"""The learned ranker (interestflow.ranker) and InterestEngine(ranker="lightgbm"): features by
value on a hand-made toy case, labels from the inner temporal split only, determinism,
save/load, exclude_seen, unknown users, partial_fit."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _fakes import HashEncoder  # noqa: E402

from interestflow import InterestEngine, ModelLoadError  # noqa: E402
from interestflow.candidates import (FEATURE_NAMES, CandidateConfig,  # noqa: E402
                                     CandidateGenerator, Candidates)
from interestflow.ranker import (PAIR_FEATURES, RANKER_FEATURES, USER_FEATURES,  # noqa: E402
                                 Ranker, RankerConfig, ranking_features, user_activity)
from interestflow.recommend import Recommender, RecommendConfig  # noqa: E402

# the hand-checked toy case of test_candidates: 4 users x 5 items, hard segments {u0, u1},
# {u2, u3}
from test_candidates import DAY, II, ITEMS, IU, SOFT, TS, USERS  # noqa: E402


def _toy():
    rec = Recommender(RecommendConfig(weights={"content": 1.0})).fit(
        user_vectors=USERS, item_vectors=ITEMS, inter_user=IU, inter_item=II, inter_ts=TS,
        inter_weight=np.ones(len(IU)), user_segment=np.array([0, 0, 1, 1]), segment_soft=SOFT,
        half_life_days=float("inf"))
    gen = CandidateGenerator(CandidateConfig(index_kind="exact", trend_window_days=1.0,
                                             trend_baseline_windows=1)).fit(
        rec, inter_user=IU, inter_item=II, inter_ts=TS, half_life_days=float("inf"),
        device="cpu")
    return rec, gen


def test_feature_names_extend_the_candidate_columns():
    assert RANKER_FEATURES == FEATURE_NAMES + PAIR_FEATURES + USER_FEATURES
    assert len(set(RANKER_FEATURES)) == len(RANKER_FEATURES)


def test_user_activity_by_hand():
    count, last = user_activity(IU, TS, 5)
    np.testing.assert_array_equal(count, [2, 3, 2, 1, 0])
    np.testing.assert_array_equal(last, [0, 10 * DAY, 10 * DAY, 9 * DAY, -np.inf])


def test_ranking_features_by_value():
    rec, gen = _toy()
    cand = gen.generate(np.arange(4))
    count, last = user_activity(IU, TS, 4)
    X = ranking_features(cand, rec.popularity_, segment_weights=rec.user_segment_weights_,
                         count=count, last_ts=last, t_ref=12 * DAY,
                         item_first_ts=gen.item_first_ts_)
    assert X.feature_names == RANKER_FEATURES
    n = len(FEATURE_NAMES)
    # the candidate columns are carried as they are (NaN where a source is absent)
    np.testing.assert_array_equal(X.features[:, :n], cand.features)
    np.testing.assert_array_equal(X.items, cand.items)
    col = {f: j for j, f in enumerate(RANKER_FEATURES)}
    owner = np.repeat(np.arange(4), np.diff(X.indptr))
    # user features: log(1 + n), days since the latest interaction, hard segments
    np.testing.assert_allclose(X.features[:, col["user_log_interactions"]],
                               np.log1p([2, 3, 2, 1])[owner], rtol=1e-6)
    np.testing.assert_allclose(X.features[:, col["user_recency_days"]],
                               np.array([12.0, 2.0, 2.0, 3.0])[owner], rtol=1e-6)
    np.testing.assert_array_equal(X.features[:, col["user_segment_entropy"]], 0.0)
    np.testing.assert_array_equal(X.features[:, col["user_segment_max"]], 1.0)
    # content_cosine_gap: 0 at the user's best candidate, negative below it
    gap = X.features[:, col["content_cosine_gap"]]
    cos = X.column("content_cosine")
    for j in range(4):
        lo, hi = X.indptr[j], X.indptr[j + 1]
        np.testing.assert_allclose(gap[lo:hi], cos[lo:hi] - cos[lo:hi].max(), atol=1e-7)
    # the users' best of a column skips NaN (a user with only NaN or no rows: NaN)
    v = np.array([np.nan, np.nan, 0.5, np.nan, 0.2], np.float32)
    from interestflow.ranker import _user_max
    np.testing.assert_array_equal(_user_max(v, np.array([0, 2, 2, 5])),
                                  np.array([np.nan, np.nan, 0.5], np.float32))
    # segment_lift = segment popularity / popularity share; popularity without decay:
    # distinct users per item [2, 2, 2, 2, 0], share 1/4 each; item 4 has none: NaN
    # item_age_days: the user's latest interaction minus the item's first, in days; first
    # interactions of items 0-4: days 0, 0, 10, 9, none (NaN)
    np.testing.assert_array_equal(gen.item_first_ts_, np.array([0, 0, 10, 9, np.nan]) * DAY)
    last_day = np.array([0.0, 10.0, 10.0, 9.0])[owner]
    first_day = np.array([0.0, 0.0, 10.0, 9.0, np.nan])[X.items]
    np.testing.assert_array_equal(X.features[:, col["item_age_days"]],
                                  (last_day - first_day).astype(np.float32))
    assert (X.features[:, col["item_age_days"]] < 0).any()  # an item newer than the user
    with pytest.raises(ValueError, match="item_first_ts"):
        ranking_features(cand, rec.popularity_, segment_weights=rec.user_segment_weights_,
                         count=count, last_ts=last, t_ref=12 * DAY,
                         item_first_ts=gen.item_first_ts_[:3])
    lift = X.features[:, col["segment_lift"]]
    seg_pop = X.column("segment_popularity")
    has = X.items < 4
    np.testing.assert_allclose(lift[has], seg_pop[has] / 0.25, rtol=1e-6)
    assert np.isnan(lift[~has]).all() and (~has).any()


def _tiny_ranker_data(seed=0):
    rng = np.random.default_rng(seed)
    m, per = 30, 12
    X = rng.normal(size=(m * per, 3)).astype(np.float32)
    y = (X[:, 0] + 0.1 * rng.normal(size=len(X)) > 0.8).astype(np.float32)
    y[::per] = 1  # every user has a positive
    cand = Candidates(np.arange(0, m * per + 1, per), np.tile(np.arange(per), m), X,
                      ("a", "b", "c"))
    return cand, y


def test_ranker_learns_the_informative_feature_and_topk_orders_by_score():
    cand, y = _tiny_ranker_data()
    r = Ranker(RankerConfig(n_rounds=100, min_data_in_leaf=5, validation_fraction=0)).fit(cand, y)
    s = r.score(cand)
    assert np.corrcoef(s, cand.features[:, 0])[0, 1] > 0.5
    result = r.topk(cand, 4)
    scores, items = result
    assert type(result).__name__ == "TopK" and result.rows is items  # (scores, rows)
    assert scores.shape == items.shape == (30, 4)
    for j in range(30):
        lo, hi = cand.indptr[j], cand.indptr[j + 1]
        expect = np.lexsort((cand.items[lo:hi], -s[lo:hi]))[:4]
        np.testing.assert_array_equal(items[j], cand.items[lo:hi][expect])
        np.testing.assert_allclose(scores[j], s[lo:hi][expect])


def test_topk_ties_go_to_the_lower_item_and_short_users_are_padded():
    cand, y = _tiny_ranker_data()
    r = Ranker(RankerConfig(n_rounds=5, min_data_in_leaf=5)).fit(cand, y)
    # every candidate identical: one score, so the order is the item order
    flat = Candidates(np.array([0, 3, 5]), np.array([7, 2, 5, 9, 1]),
                      np.zeros((5, 3), np.float32), ("a", "b", "c"))
    scores, items = r.topk(flat, 4)
    np.testing.assert_array_equal(items, [[2, 5, 7, -1], [1, 9, -1, -1]])
    assert np.isinf(scores[0, 3]) and scores[0, 3] < 0 and scores[0, 0] == scores[1, 0]


def test_ranker_drops_users_without_a_positive_and_checks_inputs():
    from sklearn.exceptions import NotFittedError

    cand, y = _tiny_ranker_data()
    y[:12] = 0  # user 0: no positive
    r = Ranker(RankerConfig(n_rounds=3, min_data_in_leaf=5)).fit(cand, y)
    assert r.training_["users"] == 29 and r.training_["users_dropped_no_positive"] == 1
    with pytest.raises(ValueError, match="no user has a positive"):
        Ranker().fit(cand, np.zeros_like(y))
    with pytest.raises(ValueError, match="labels must have shape"):
        Ranker().fit(cand, y[:-1])
    with pytest.raises(NotFittedError):
        Ranker().score(cand)
    with pytest.raises(ValueError, match=r"trained on .* \(missing \['b'\]\)"):
        r.score(Candidates(cand.indptr, cand.items, cand.features, ("a", "c", "x")))
    # columns are found by name, in any order
    perm = Candidates(cand.indptr, cand.items, cand.features[:, [2, 0, 1]], ("c", "a", "b"))
    np.testing.assert_array_equal(r.score(perm), r.score(cand))
    with pytest.raises(ValueError, match="n_rounds=0"):
        RankerConfig(n_rounds=0)
    with pytest.raises(ValueError, match="holdout_fraction"):
        RankerConfig(holdout_fraction=1.0)


def test_the_score_is_the_mean_of_the_models():
    cand, y = _tiny_ranker_data()
    r = Ranker(RankerConfig(n_rounds=20, min_data_in_leaf=5, n_models=3)).fit(cand, y)
    assert len(r.boosters_) == 3 and len(r.training_["rounds"]) == 3
    each = [b.predict(cand.features) for b in r.boosters_]
    np.testing.assert_allclose(r.score(cand), np.mean(each, axis=0), rtol=1e-12)
    # the models differ (seeds random_state + j), so the mean is not one of them
    assert not np.allclose(each[0], each[1])
    one = Ranker(RankerConfig(n_rounds=20, min_data_in_leaf=5, n_models=1)).fit(cand, y)
    np.testing.assert_allclose(one.score(cand), each[0], rtol=1e-12)
    # the saved text holds every model; from_model_string splits it back
    back = Ranker.from_model_string(r.model_string(), json.loads(json.dumps(r.to_dict())))
    np.testing.assert_array_equal(back.score(cand), r.score(cand))
    d = r.to_dict()
    d["model_lengths"] = [1] + d["model_lengths"][1:]
    with pytest.raises(ValueError, match="model_lengths"):
        Ranker.from_model_string(r.model_string(), d)


def test_excluded_features_are_not_seen_by_the_models():
    from interestflow.ranker import FEATURE_GROUPS

    cfg = RankerConfig(exclude=("text", "user_recency_days"))
    used = cfg.used_features()
    assert not set(FEATURE_GROUPS["text"]) & set(used) and "user_recency_days" not in used
    assert len(used) == len(RANKER_FEATURES) - len(FEATURE_GROUPS["text"]) - 1
    assert RankerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"exclude: unknown name\(s\) \['txt'\]"):
        RankerConfig(exclude=("txt",))
    with pytest.raises(TypeError, match="exclude must be a tuple"):
        RankerConfig(exclude="text")
    cand, y = _tiny_ranker_data()
    cand = Candidates(cand.indptr, cand.items, cand.features,
                      ("content_cosine", "popularity", "item_trend"))
    r = Ranker(RankerConfig(n_rounds=30, min_data_in_leaf=5, exclude=("text",))).fit(cand, y)
    assert r.feature_names_ == ("popularity", "item_trend")
    # the first column carries the signal: without it the scores do not follow it
    assert abs(np.corrcoef(r.score(cand), cand.features[:, 0])[0, 1]) < 0.5
    changed = cand.features.copy()
    changed[:, 0] = 0.0  # what the model does not see cannot change its scores
    np.testing.assert_array_equal(
        r.score(Candidates(cand.indptr, cand.items, changed, cand.feature_names)),
        r.score(cand))


# ------------------------------------------------------------------------- engine
def _events(seed=6, n=600, n_users=40, n_items=60):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"user_id": rng.integers(0, n_users, n).astype(str),
                         "item_id": rng.integers(0, n_items, n),
                         "text": [f"t{i % 40} w{i % 7}" for i in range(n)],
                         "ts": 1.6e9 + rng.uniform(0, 90, n) * DAY})


def _engine(ev, **kw):
    return InterestEngine(encoder=HashEncoder(), n_segments=2, device="cpu",
                          ranker="lightgbm", **kw).fit(ev)


@pytest.fixture(scope="module")
def fitted():
    return _engine(_events())


def test_ranker_param_is_validated_and_reported():
    assert InterestEngine().get_params()["ranker"] == "lightgbm"  # the default
    assert InterestEngine(ranker=None).get_params()["ranker"] is None
    cfg = RankerConfig(n_models=2, exclude=("segment",))
    assert InterestEngine(ranker=cfg).get_params()["ranker"] == cfg.to_dict()
    with pytest.raises(ValueError, match=r"ranker='xgboost' is invalid; pass one of \[None, "
                                         r"'lightgbm'\]"):
        InterestEngine(ranker="xgboost").fit(_events())
    with pytest.raises(ValueError, match="unknown RankerConfig field"):
        InterestEngine(ranker={"n_trees": 3}).fit(_events())


def test_a_ranker_config_is_used_saved_and_loaded(tmp_path):
    cfg = RankerConfig(n_models=2, exclude=("segment",), random_state=3)
    eng = InterestEngine(encoder=HashEncoder(), n_segments=2, device="cpu",
                         ranker=cfg).fit(_events())
    assert eng.ranker_.config == cfg and len(eng.ranker_.boosters_) == 2
    assert "segment_lift" not in eng.ranker_.feature_names_
    users = list(eng.user_ids_)
    eng.save(tmp_path / "m")
    back = InterestEngine.load(tmp_path / "m", encoder=HashEncoder())
    assert back.get_params()["ranker"] == cfg.to_dict()
    pd.testing.assert_frame_equal(back.recommend(users, k=5), eng.recommend(users, k=5))


def test_labels_come_from_the_inner_holdouts_and_features_from_the_earlier_part(monkeypatch):
    """The training queries of label split 1 are built from stage 1 refitted on each user's
    earlier 80%: the positives are exactly the candidates among the user's latest 20% (not
    seen earlier), and user activity counts the earlier part only. Split 2 does the same
    inside split 1's earlier part. With the full-period stage 1 the held-out items would be
    seen items, excluded from the candidates: no positive could exist."""
    from interestflow import ranker as rmod
    from interestflow.synthetic import train_test_split_by_time

    ev = _events()
    captured = {"parts": []}
    fit, features = rmod.Ranker.fit, rmod.ranking_features

    def spy(self, cand, labels):
        captured["cand"], captured["labels"] = cand, labels
        return fit(self, cand, labels)

    def spy_features(cand, *args, **kwargs):
        captured["parts"].append(len(cand.items))
        return features(cand, *args, **kwargs)

    monkeypatch.setattr(rmod.Ranker, "fit", spy)
    monkeypatch.setattr(rmod, "ranking_features", spy_features)
    eng = _engine(ev)
    cand, labels = captured["cand"], captured["labels"]
    assert len(captured["parts"]) == 2 == eng.ranker_.training_["splits"]
    assert sum(captured["parts"]) == len(labels)
    users = eng.user_ids_[cand.user_rows]
    owner = np.repeat(np.arange(cand.n_users), np.diff(cand.indptr))
    pairs = list(zip(users[owner], eng.item_ids_[cand.items]))
    split_of = np.repeat([0, 1], captured["parts"])
    col = RANKER_FEATURES.index("user_log_interactions")
    rest = ev
    for split in (0, 1):
        inner_train, inner_hold = train_test_split_by_time(rest, frac=0.2)
        earlier = set(zip(inner_train["user_id"], inner_train["item_id"]))
        later = set(zip(inner_hold["user_id"], inner_hold["item_id"])) - earlier
        here = np.flatnonzero(split_of == split)
        got = {pairs[j] for j in here if labels[j] == 1}
        assert got and got == {pairs[j] for j in here if pairs[j] in later}
        assert not any(pairs[j] in earlier for j in here)  # earlier items: seen, excluded
        # user activity: the earlier part's counts, not the full period's
        n_earlier = inner_train.groupby("user_id").size()
        np.testing.assert_allclose(cand.features[here, col], np.log1p(
            n_earlier.reindex(users[owner[here]]).to_numpy()), rtol=1e-6)
        # item_age_days from the earlier part only: the user's latest earlier event minus the
        # item's first earlier event (NaN for an item only the held-out events have)
        last_u = inner_train.groupby("user_id")["ts"].max()
        first_i = inner_train.groupby("item_id")["ts"].min()
        items = eng.item_ids_[cand.items[here]]
        want = (last_u.reindex(users[owner[here]]).to_numpy()
                - first_i.reindex(items).to_numpy()) / DAY
        age = cand.features[here, RANKER_FEATURES.index("item_age_days")]
        np.testing.assert_allclose(age, want, rtol=1e-6, atol=1e-3)
        assert np.isnan(want).sum() == np.isnan(age).sum()
        rest = inner_train
    assert eng.ranker_.training_["positives"] == int(labels.sum())


def test_two_fits_give_the_same_model(fitted):
    again = _engine(_events())
    assert again.ranker_.model_string() == fitted.ranker_.model_string()
    users = list(fitted.user_ids_)
    pd.testing.assert_frame_equal(again.recommend(users, k=10), fitted.recommend(users, k=10))


def test_recommend_ranks_candidates_and_excludes_seen(fitted):
    users = list(fitted.user_ids_[:8])
    out = fitted.recommend(users, k=10)
    assert list(out.columns) == ["user_id", "item_id", "score", "rank"]
    assert (out.groupby("user_id").size() == 10).all()
    ev = _events()
    seen = set(zip(ev["user_id"], ev["item_id"]))
    assert not any(p in seen for p in zip(out["user_id"], out["item_id"]))
    # the ranker's order: scores non-increasing within a user, ranks 1..10
    for _, g in out.groupby("user_id"):
        assert (np.diff(g["score"].to_numpy()) <= 0).all()
        assert g["rank"].tolist() == list(range(1, 11))
    # scores are the ranker's scores of the candidates
    gen, r = fitted.candidates_, fitted.ranker_
    from interestflow.ranker import ranking_features

    rows = fitted.user_rows(users[:1])
    act = user_activity(fitted.interactions_["user"], fitted.interactions_["ts"],
                        len(fitted.user_ids_))
    rec = fitted.recommender_
    X = ranking_features(gen.generate(rows), rec.popularity_,
                         segment_weights=rec.user_segment_weights_[rows], count=act[0][rows],
                         last_ts=act[1][rows], t_ref=rec.behaviour_time_,
                         item_first_ts=gen.item_first_ts_)
    s, items = r.topk(X, 10)
    np.testing.assert_array_equal(out["item_id"].to_numpy()[:10], fitted.item_ids_[items[0]])
    np.testing.assert_allclose(out["score"].to_numpy()[:10], s[0].astype(np.float32))
    # one user at a time gives the same lists as a batch
    one = pd.concat([fitted.recommend([u], k=10) for u in users[:3]], ignore_index=True)
    pd.testing.assert_frame_equal(one, out[out["user_id"].isin(users[:3])]
                                  .reset_index(drop=True))
    # exclude_seen=False lets the user's seen items compete
    both = fitted.recommend(users, k=60, exclude_seen=False)
    assert any(p in seen for p in zip(both["user_id"], both["item_id"]))


def test_unknown_user_raises(fitted):
    with pytest.raises(ValueError, match="unknown user id"):
        fitted.recommend(["nobody"], k=5)


def test_save_load_restores_identical_scores(fitted, tmp_path):
    users = list(fitted.user_ids_)
    before = fitted.recommend(users, k=10)
    fitted.save(tmp_path / "m")
    assert (tmp_path / "m" / "ranker.txt").is_file()
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert "ranker.txt" in meta["sha256"] and meta["params"]["ranker"] == "lightgbm"
    back = InterestEngine.load(tmp_path / "m", encoder=HashEncoder())
    assert back.ranker_.model_string() == fitted.ranker_.model_string()
    pd.testing.assert_frame_equal(back.recommend(users, k=10), before)
    # an edited model file is refused, naming it
    path = tmp_path / "m" / "ranker.txt"
    path.write_text(path.read_text().replace("learning_rate", "learning_rat", 1))
    with pytest.raises(ModelLoadError, match="ranker.txt"):
        InterestEngine.load(tmp_path / "m", encoder=HashEncoder())


def test_save_without_ranker_removes_a_stale_model_file(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    plain = InterestEngine(encoder=HashEncoder(), n_segments=2, device="cpu",
                           ranker=None).fit(_events())
    assert plain.ranker_ is None
    plain.save(tmp_path / "m")
    assert not (tmp_path / "m" / "ranker.txt").exists()
    back = InterestEngine.load(tmp_path / "m", encoder=HashEncoder())
    assert back.ranker_ is None
    pd.testing.assert_frame_equal(back.recommend(["1", "2"], k=5),
                                  plain.recommend(["1", "2"], k=5))


def test_partial_fit_keeps_the_ranker_and_recommends_for_new_users():
    ev = _events()
    first = ev[ev["ts"] < 1.6e9 + 70 * DAY]
    later = ev[ev["ts"] >= 1.6e9 + 70 * DAY].copy()
    later.loc[later.index[:5], "user_id"] = "newcomer"
    eng = _engine(first)
    model = eng.ranker_.model_string()
    eng.partial_fit(later, rechoose_k=False)
    assert eng.ranker_.model_string() == model
    out = eng.recommend(["newcomer", "1"], k=5)
    assert (out.groupby("user_id").size() == 5).all()
    # the newcomer's own items are excluded: features come from the updated candidates
    mine = set(later.loc[later["user_id"] == "newcomer", "item_id"])
    assert not mine & set(out.loc[out["user_id"] == "newcomer", "item_id"])



def test_recommend_from_events_equals_recommend_on_the_fitted_events(fitted):
    ev = _events()
    got = fitted.recommend_from_events(ev, k=7)
    users = sorted(ev["user_id"].unique())
    expect = fitted.recommend(users, k=7)
    pd.testing.assert_frame_equal(got[["user_id", "item_id", "rank"]],
                                  expect[["user_id", "item_id", "rank"]])
    np.testing.assert_allclose(got["score"], expect["score"], rtol=1e-5, atol=1e-5)


def test_users_with_texts_only_get_a_ranked_cold_start_list(fitted):
    """New users whose events carry texts but no item: content, popularity and segment
    candidates ordered by the same ranker (behaviour scores zero); unknown ids still raise
    in recommend()."""
    from interestflow.ranker import ranking_features
    from interestflow._utils import unit_rows as _unit
    from interestflow.segments import soft_features

    cold = pd.DataFrame({"user_id": ["new1", "new1", "new2"],
                         "text": ["t3 w1", "t5 w2", "t7 w3"],
                         "ts": 1.6e9 + np.array([80.0, 81.0, 85.0]) * DAY})
    out = fitted.recommend_from_events(cold, k=5)
    assert out.groupby("user_id").size().to_dict() == {"new1": 5, "new2": 5}
    # by hand: the users' vectors, soft segments, then generate_for + the ranker
    enc = HashEncoder()
    v1 = enc.encode(["t3 w1", "t5 w2"])
    # the later event weighs more: 2 ** (-(latest - ts) / half-life)
    w1 = 2.0 ** ((np.array([80.0, 81.0]) - 81.0) / fitted.half_life_days)
    U = _unit(np.stack([(w1[:, None] * v1).sum(0) / w1.sum(),
                        enc.encode(["t7 w3"])[0]]).astype(np.float32))
    soft = soft_features(U, fitted.segment_centroids_, fitted.segment_temperature)
    gen, rec = fitted.candidates_, fitted.recommender_
    empty = (np.zeros(3, np.int64), np.zeros(0, np.int64))
    cand = gen.generate_for(U, empty, (*empty, np.zeros(0)), soft)
    for s_ in ("item_knn", "ease"):
        assert (cand.column(f"{s_}_rank") == 0).all()  # no interactions: no behaviour source
    assert (cand.column("content_rank") > 0).any() and (cand.column("popularity_rank") > 0).any()
    assert (cand.column("ease_all") == 0).all()
    X = ranking_features(cand, rec.popularity_, segment_weights=soft, count=np.zeros(2),
                         last_ts=np.full(2, -np.inf), t_ref=rec.behaviour_time_,
                         item_first_ts=gen.item_first_ts_)
    assert np.isnan(X.column("user_recency_days")).all()
    scores, items = fitted.ranker_.topk(X, 5)
    for j, u in enumerate(["new1", "new2"]):
        got = out[out["user_id"] == u].sort_values("rank")
        assert got["item_id"].tolist() == list(fitted.item_ids_[items[j]])
        np.testing.assert_allclose(got["score"], scores[j], rtol=1e-5)
    with pytest.raises(ValueError, match="unknown user id"):
        fitted.recommend(["new1"], k=5)
    with pytest.raises(ValueError, match="column 'text'"):
        fitted.recommend_from_events(cold.assign(text=["ok", "", "ok"]), k=5)
    plain = InterestEngine(encoder=HashEncoder(), n_segments=2, device="cpu",
                           ranker=None).fit(_events())
    with pytest.raises(ValueError, match="needs the two-stage engine"):
        plain.recommend_from_events(cold, k=5)


def test_inner_splits_share_the_fitted_index_when_items_are_described(monkeypatch):
    """With an items table (described items: the inner splits' item vectors are the fitted
    ones) every inner CandidateGenerator reuses the fitted generator's ItemIndex instead of
    fitting its own (an IVF index over a large catalogue costs a K-means and gigabytes)."""
    from interestflow import candidates as cmod

    seen = []
    fit = cmod.CandidateGenerator.fit

    def spy(self, rec, **kw):
        out = fit(self, rec, **kw)
        seen.append((kw.get("index"), self._index))
        return out

    monkeypatch.setattr(cmod.CandidateGenerator, "fit", spy)
    ev = _events()
    items = pd.DataFrame({"item_id": np.arange(60), "text": [f"item {i}" for i in range(60)]})
    eng = InterestEngine(encoder=HashEncoder(), n_segments=2, device="cpu",
                         ranker="lightgbm").fit(ev, items)
    outer = eng.candidates_._index
    assert len(seen) == 3  # the fitted generator, then one per label split
    assert seen[0][0] is None
    assert all(given is outer and used is outer for given, used in seen[1:])
    with pytest.raises(ValueError, match="fitted ItemIndex over the recommender's 60"):
        cmod.CandidateGenerator().fit(eng.recommender_, inter_user=np.zeros(0, np.int64),
                                      inter_item=np.zeros(0, np.int64),
                                      inter_ts=np.zeros(0), half_life_days=30.0,
                                      device="cpu", index=object())
