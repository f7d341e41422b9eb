"""Candidate generation (interestflow.candidates): per-source values on a hand-made toy case,
the union's layout, cuts, seen items, cold users, chunking and memory."""

import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from interestflow.candidates import (FEATURE_NAMES, SOURCES, CandidateConfig,
                                     CandidateGenerator, Candidates, fit_ease)
from interestflow.recommend import Recommender, RecommendConfig

DAY = 86400.0

# Toy case. Binary user-item matrix (4 users x 5 items; item 4 has no user):
#   u0: {0, 1}   u1: {0, 1, 2}   u2: {2, 3}   u3: {3}
# Item columns: i0 {u0,u1}, i1 {u0,u1}, i2 {u1,u2}, i3 {u2,u3}: cosines
#   cos(0,1) = 2/(sqrt2 sqrt2) = 1; cos(0,2) = cos(1,2) = cos(2,3) = 1/2; cos(0,3) = 0.
# Times: everything at day 0, except (u1, 2), (u2, 2), (u2, 3) at day 10 (the latest window)
# and (u3, 3) at day 9 (the preceding window with trend_window_days=1).
# Segments (hard, one-hot): {u0, u1} -> 0, {u2, u3} -> 1.
IU = np.array([0, 0, 1, 1, 1, 2, 2, 3])
II = np.array([0, 1, 0, 1, 2, 2, 3, 3])
TS = np.array([0, 0, 0, 0, 10, 10, 10, 9]) * DAY
ITEMS = np.array([[1, 0], [0.8, 0.6], [0, 1], [-1, 0], [0.6, 0.8]], np.float32)
USERS = np.array([[1, 0], [0, 1], [0.6, 0.8], [-0.8, 0.6]], np.float32)
SOFT = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
SEEN = [{0, 1}, {0, 1, 2}, {2, 3}, {3}]


def _toy_recommender():
    return Recommender(RecommendConfig(weights={"content": 1.0})).fit(
        user_vectors=USERS, item_vectors=ITEMS, inter_user=IU, inter_item=II, inter_ts=TS,
        inter_weight=np.ones(len(IU)), user_segment=np.array([0, 0, 1, 1]), segment_soft=SOFT,
        half_life_days=float("inf"))


def _toy(**cfg):
    cfg.setdefault("trend_window_days", 1.0)
    cfg.setdefault("trend_baseline_windows", 1)
    cfg.setdefault("index_kind", "exact")
    rec = _toy_recommender()
    return CandidateGenerator(CandidateConfig(**cfg)).fit(
        rec, inter_user=IU, inter_item=II, inter_ts=TS, half_life_days=float("inf"),
        device="cpu")


def _source(cand, source, j):
    """{item: (score, rank)} of one source for user j."""
    lo, hi = cand.indptr[j], cand.indptr[j + 1]
    rank = cand.column(f"{source}_rank")[lo:hi]
    score = cand.column(f"{source}_score")[lo:hi]
    return {int(i): (float(s), int(r)) for i, s, r in zip(cand.items[lo:hi], score, rank)
            if r > 0}


def test_feature_names_pair_every_source_with_score_and_rank():
    assert FEATURE_NAMES[:2 * len(SOURCES)] == tuple(
        n for s in SOURCES for n in (f"{s}_score", f"{s}_rank"))
    assert "n_sources" in FEATURE_NAMES and len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_item_knn_candidates_by_hand():
    cand = _toy().generate(np.arange(4))
    # u3 seeds {3}: neighbours of 3 are {2: 1/2}
    assert _source(cand, "item_knn", 3) == {2: (0.5, 1)}
    # u2 seeds {2, 3} (weight 1, same time): 2 -> {0: .5, 1: .5, 3: .5}, 3 -> {2: .5};
    # seen {2, 3} removed; the tie goes to the lower item row
    assert _source(cand, "item_knn", 2) == {0: (0.5, 1), 1: (0.5, 2)}
    # u0 seeds {0, 1}: 0 -> {1: 1, 2: .5}, 1 -> {0: 1, 2: .5}: item 2 scores 1
    assert _source(cand, "item_knn", 0) == {2: (1.0, 1)}


def test_ease_matrix_matches_a_direct_inverse():
    X = np.zeros((4, 5))
    X[IU, II] = 1
    lam = X.sum(axis=0).mean()  # mean item degree: 8 / 5
    P = np.linalg.inv(X.T @ X + lam * np.eye(5))
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    ptr = np.array([0, 2, 5, 7, 8])
    got, got_lam = fit_ease(ptr, II, 4, 5, device="cpu")
    assert got_lam == pytest.approx(1.6)
    np.testing.assert_allclose(got.numpy(), B, rtol=1e-4, atol=1e-6)
    gen = _toy()
    assert gen.ease_lambda_ == pytest.approx(1.6)
    cand = gen.generate(np.arange(4))
    for u in range(4):
        s = X[u] @ B
        unseen = [i for i in range(5) if i not in SEEN[u]]
        got = _source(cand, "ease", u)
        assert set(got) == set(unseen)
        by_rank = sorted(got, key=lambda i: got[i][1])
        # float32 may order exact ties (items 0 and 1 are symmetric) either way
        assert all(s[a] >= s[b] - 1e-6 for a, b in zip(by_rank, by_rank[1:]))
        for i, (score, _) in got.items():
            assert score == pytest.approx(s[i], rel=1e-4, abs=1e-6)
        # every candidate (whatever source proposed it) carries X[u] @ B and the
        # recency-weighted s[u] @ B / sum(s[u]); no decay here (infinite half-life): s = X
        lo, hi = cand.indptr[u], cand.indptr[u + 1]
        for j in range(lo, hi):
            i = cand.items[j]
            row = dict(zip(FEATURE_NAMES, cand.features[j]))
            assert row["ease_all"] == pytest.approx(s[i], rel=1e-4, abs=1e-6)
            assert row["ease_recent"] == pytest.approx(s[i] / len(SEEN[u]), rel=1e-4,
                                                       abs=1e-6)


def test_recent_ease_weights_the_latest_interactions_most():
    # u1 saw items 0 and 1 on day 0 and item 2 on day 10: with a 1-day seed half-life the
    # weights are 2**-10, 2**-10, 1, and ease_recent is their weighted mean of B's rows
    rec = Recommender(RecommendConfig(weights={"content": 1.0}, seed_half_life_days=1.0)).fit(
        user_vectors=USERS, item_vectors=ITEMS, inter_user=IU, inter_item=II, inter_ts=TS,
        inter_weight=np.ones(len(IU)), user_segment=np.array([0, 0, 1, 1]), segment_soft=SOFT,
        half_life_days=float("inf"))
    gen = CandidateGenerator(CandidateConfig(index_kind="exact")).fit(
        rec, inter_user=IU, inter_item=II, inter_ts=TS, half_life_days=float("inf"),
        device="cpu")
    B = np.asarray(gen.ease_b_.cpu().numpy() if hasattr(gen.ease_b_, "cpu") else gen.ease_b_,
                   np.float64)
    w = np.array([2.0 ** -10, 2.0 ** -10, 1.0])
    cand = gen.generate(np.array([1]))
    assert sorted(cand.items.tolist()) == [3, 4]
    for j, i in enumerate(cand.items):
        row = dict(zip(FEATURE_NAMES, cand.features[j]))
        assert row["ease_recent"] == pytest.approx(w @ B[[0, 1, 2], i] / w.sum(), rel=1e-4,
                                                   abs=1e-6)
        assert row["ease_all"] == pytest.approx(B[[0, 1, 2], i].sum(), rel=1e-4, abs=1e-6)
    # and the two differ: the recent item 2 dominates ease_recent
    assert not np.allclose(cand.column("ease_recent"), cand.column("ease_all") / 3)


def test_dense_behaviour_features_are_nan_when_the_source_is_off():
    cand = _toy(ease=0, item_knn=0).generate(np.arange(4))
    for name in ("ease_all", "ease_recent", "item_knn_all"):
        assert np.isnan(cand.column(name)).all()


def test_ease_lambda_is_picked_on_the_inner_split():
    from interestflow.candidates import EASE_LAMBDA_GRID, select_ease_lambda

    rng = np.random.default_rng(7)
    gen, rec = _random(rng, n_users=60, n_items=30, n_inter=600)
    scale, report = select_ease_lambda(gen._iu, gen._ii, gen._ts, 60, 30, device="cpu")
    grid = report["recall@10_by_multiple"]
    assert len(grid) == len(EASE_LAMBDA_GRID) and report["n_users"] >= 2
    best = max(grid.values())
    assert grid[f"{scale:g}"] == best  # the best inner recall; ties to the smaller lambda
    assert scale == min(float(m) for m, v in grid.items() if v == best)
    assert {k: gen.ease_selection_[k] for k in report} == report
    assert gen.ease_selection_["items"] == 30 and gen.ease_selection_["multiple"] == scale
    n_pairs = len(rec.seen_indices_)
    assert gen.ease_lambda_ == pytest.approx(scale * n_pairs / 30)
    assert gen.ease_selection_["lambda"] == pytest.approx(gen.ease_lambda_)
    # on the toy case every multiple ties on the inner split: the smallest, 1 x 8 / 5, wins
    toy = _toy()
    assert len(set(toy.ease_selection_["recall@10_by_multiple"].values())) == 1
    assert toy.ease_lambda_ == pytest.approx(1.6)


def test_ease_lambda_above_the_selection_bound_is_picked_on_the_most_used_items():
    from interestflow.candidates import _selected_ease_lambda, select_ease_lambda

    rng = np.random.default_rng(7)
    gen, rec = _random(rng, n_users=60, n_items=30, n_inter=600)
    iu, ii, ts = gen._iu, gen._ii, gen._ts
    pairs = np.unique(iu * 30 + ii)
    degree = np.bincount(pairs % 30, minlength=30)
    head = np.sort(np.argsort(-degree, kind="stable")[:12])
    lam, report = _selected_ease_lambda(iu, ii, ts, 60, 30, 12, device="cpu")
    # the same as selecting on the interactions with the 12 most-used items, renumbered
    keep = np.isin(ii, head)
    scale, ref = select_ease_lambda(iu[keep], np.searchsorted(head, ii[keep]), ts[keep], 60,
                                    12, device="cpu")
    assert report["items"] == 12 and report["multiple"] == scale
    assert report["recall@10_by_multiple"] == ref["recall@10_by_multiple"]
    # lambda: the multiple of the head's mean item degree (all events), for every item
    assert lam == pytest.approx(scale * degree[head].mean())
    assert report["lambda"] == lam
    fitted = CandidateGenerator(CandidateConfig(ease_select_max_items=12,
                                                index_kind="exact")).fit(
        rec, inter_user=iu, inter_item=ii, inter_ts=ts, half_life_days=30.0, device="cpu")
    assert fitted.ease_lambda_ == pytest.approx(lam) and fitted.ease_b_.shape == (30, 30)


def test_ease_is_off_above_its_item_bound():
    gen = _toy(ease_max_items=4)
    assert gen.ease_b_ is None
    cand = gen.generate(np.arange(4))
    assert (cand.column("ease_rank") == 0).all() and np.isnan(cand.column("ease_score")).all()


def test_popularity_and_segment_popularity_by_hand():
    cand = _toy(popularity=2).generate(np.arange(4))
    # distinct users (no decay): items 0..3 have 2 each, item 4 none (never proposed);
    # ties to the lower row; u3 has seen 3
    assert _source(cand, "popularity", 3) == {0: (2.0, 1), 1: (2.0, 2)}
    assert _source(cand, "popularity", 0) == {2: (2.0, 1), 3: (2.0, 2)}
    # segment 0 = {u0, u1}: counts i0 2, i1 2, i2 1 -> / 5; segment 1: i2 1, i3 2 -> / 3
    assert _source(cand, "segment_popularity", 0) == {2: (pytest.approx(0.2), 1)}
    assert _source(cand, "segment_popularity", 3) == {2: (pytest.approx(1 / 3), 1)}
    got = _source(cand, "segment_popularity", 2)  # seen {2, 3}: nothing left in segment 1
    assert got == {}


def test_segment_trending_by_hand():
    gen = _toy()
    # latest day: (u1, 2) in segment 0; (u2, 2), (u2, 3) in segment 1; day before: (u3, 3)
    np.testing.assert_allclose(gen.segment_trend_, [[0, 0, 1, 0, 0], [0, 0, 1, 0, 0]])
    np.testing.assert_allclose(gen.item_trend_, [0, 0, 2, 0, 0])
    cand = gen.generate(np.arange(4))
    assert _source(cand, "segment_trending", 0) == {2: (1.0, 1)}
    assert _source(cand, "segment_trending", 3) == {2: (1.0, 1)}
    assert _source(cand, "segment_trending", 1) == {}  # item 2 is seen by u1


def test_content_candidates_and_the_union_row():
    cand = _toy(content=2).generate(np.arange(4))
    # u0 = [1, 0], seen {0, 1}: cosines i4 0.6, i2 0, i3 -1
    assert _source(cand, "content", 0) == {4: (pytest.approx(0.6), 1), 2: (0.0, 2)}
    # item 2 of u0 comes from content, item_knn, ease?, popularity, segment sources: one row
    lo, hi = cand.indptr[0], cand.indptr[1]
    items = cand.items[lo:hi].tolist()
    assert items == sorted(set(items))  # deduplicated, ascending
    j = lo + items.index(2)
    row = dict(zip(FEATURE_NAMES, cand.features[j]))
    assert row["content_rank"] == 2 and row["item_knn_rank"] == 1
    assert row["segment_popularity_score"] == pytest.approx(0.2)
    assert row["segment_trending_score"] == 1.0
    assert row["n_sources"] == sum(row[f"{s}_rank"] > 0 for s in SOURCES)
    # dense features are filled for every candidate
    assert row["content_cosine"] == pytest.approx(0.0, abs=1e-7)
    assert row["popularity"] == 2.0 and row["item_trend"] == 2.0
    assert row["segment_popularity"] == pytest.approx(0.2)
    df = cand.to_frame(user_ids=["a", "b", "c", "d"], item_ids=list("vwxyz"))
    assert len(df) == len(cand.items) and list(df.columns[2:]) == list(FEATURE_NAMES)
    assert df.iloc[j]["user"] == "a" and df.iloc[j]["item"] == "x"
    j4 = lo + items.index(4)
    assert np.isnan(cand.features[j4, FEATURE_NAMES.index("item_knn_score")])
    assert cand.features[j4, FEATURE_NAMES.index("item_knn_rank")] == 0


def test_cuts_are_respected_and_seen_items_excluded():
    rng = np.random.default_rng(1)
    gen, rec = _random(rng, content=3, item_knn=2, ease=4, popularity=1,
                       segment_popularity=2, segment_trending=1)
    cand = gen.generate(np.arange(rec.n_users_))
    cfg = gen.config
    for j in range(cand.n_users):
        lo, hi = cand.indptr[j], cand.indptr[j + 1]
        seen = set(rec.seen_indices_[rec.seen_indptr_[j]:rec.seen_indptr_[j + 1]].tolist())
        assert not seen & set(cand.items[lo:hi].tolist())
        assert len(set(cand.items[lo:hi].tolist())) == hi - lo
        assert hi - lo <= sum(cfg.cut(s) for s in SOURCES)
        for s in SOURCES:
            ranks = np.sort(cand.column(f"{s}_rank")[lo:hi])
            ranks = ranks[ranks > 0]
            assert len(ranks) <= cfg.cut(s)
            assert ranks.tolist() == list(range(1, len(ranks) + 1))
    kept = CandidateGenerator(CandidateConfig(**{**cfg.to_dict(), "exclude_seen": False})).fit(
        rec, inter_user=gen._iu, inter_item=gen._ii, inter_ts=gen._ts, half_life_days=30.0,
        device="cpu").generate(np.arange(rec.n_users_))
    # without the exclusion the best content item of a user may be one the user saw
    hits = [set(kept.source_items("content", j).tolist())
            & set(rec.seen_indices_[rec.seen_indptr_[j]:rec.seen_indptr_[j + 1]].tolist())
            for j in range(kept.n_users)]
    assert any(hits)


def _random(rng, n_users=37, n_items=29, n_inter=300, K=3, **cfg):
    iu = rng.integers(0, n_users, n_inter)
    iu[:n_users] = np.arange(n_users)
    ii = rng.integers(0, n_items, n_inter)
    ts = rng.uniform(0, 100, n_inter) * DAY
    U = rng.normal(size=(n_users, 6)).astype(np.float32)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    V = rng.normal(size=(n_items, 6)).astype(np.float32)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    soft = rng.dirichlet(np.ones(K), n_users).astype(np.float32)
    rec = Recommender(RecommendConfig(weights={"content": 1.0})).fit(
        user_vectors=U, item_vectors=V, inter_user=iu, inter_item=ii, inter_ts=ts,
        inter_weight=np.ones(n_inter), user_segment=soft.argmax(1), segment_soft=soft,
        half_life_days=30.0)
    cfg.setdefault("index_kind", "exact")
    gen = CandidateGenerator(CandidateConfig(**cfg)).fit(
        rec, inter_user=iu, inter_item=ii, inter_ts=ts, half_life_days=30.0, device="cpu")
    gen._iu, gen._ii, gen._ts = iu, ii, ts
    return gen, rec


def _same(a: Candidates, b: Candidates):
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.features, b.features)  # NaN == NaN here


def test_chunked_equals_unchunked():
    rng = np.random.default_rng(2)
    gen, rec = _random(rng, content=5, item_knn=5, ease=5, popularity=4,
                       segment_popularity=4, segment_trending=4, chunk_users=1000)
    rows = rng.permutation(rec.n_users_)
    whole = gen.generate(rows)
    small = CandidateGenerator(CandidateConfig(**{**gen.config.to_dict(), "chunk_users": 4})
                               ).fit(rec, inter_user=gen._iu, inter_item=gen._ii,
                                     inter_ts=gen._ts, half_life_days=30.0, device="cpu")
    _same(whole, small.generate(rows))
    # and a user alone gets the same candidates as inside the batch
    one = gen.generate(rows[5:6])
    lo, hi = whole.indptr[5], whole.indptr[6]
    np.testing.assert_array_equal(one.items, whole.items[lo:hi])
    np.testing.assert_array_equal(one.features, whole.features[lo:hi])


def test_segment_pool_equals_the_dense_top_when_the_pool_is_the_catalogue():
    rng = np.random.default_rng(3)
    gen, rec = _random(rng, segment_popularity=6, segment_pool_factor=100)
    cand = gen.generate(np.arange(rec.n_users_))
    S = rec.user_segment_weights_.astype(np.float64) @ rec.segment_popularity_
    for j in range(rec.n_users_):
        seen = rec.seen_indices_[rec.seen_indptr_[j]:rec.seen_indptr_[j + 1]]
        s = S[j].copy()
        s[seen] = -np.inf
        want = sorted(np.flatnonzero(s > 0), key=lambda i: (-s[i], i))[:6]
        assert cand.source_items("segment_popularity", j).tolist() == want


def test_cold_users_get_content_and_popularity():
    gen = _toy(content=2, popularity=2)
    cand = gen.generate_cold(np.array([[1.0, 0.0]], np.float32))
    assert cand.user_rows is None and cand.n_users == 1
    assert _source(cand, "content", 0) == {0: (1.0, 1), 1: (pytest.approx(0.8), 2)}
    assert _source(cand, "popularity", 0) == {0: (2.0, 1), 1: (2.0, 2)}
    for s in ("item_knn", "ease", "segment_popularity", "segment_trending"):
        assert _source(cand, s, 0) == {}
    # with segment weights, the segment sources take part
    seg = gen.generate_cold(np.array([[1.0, 0.0]], np.float32),
                            segment_weights=np.array([[0.0, 1.0]], np.float32))
    assert _source(seg, "segment_popularity", 0) == {3: (pytest.approx(2 / 3), 1),
                                                     2: (pytest.approx(1 / 3), 2)}


def test_multi_interest_content_keeps_the_best_cosine_per_item():
    rec = _toy_recommender()
    # u0 has interests [1, 0] and [0, 1]; the others one each (their user vector)
    iv = np.array([[1, 0], [0, 1], [0, 1], [0.6, 0.8], [-0.8, 0.6]], np.float32)
    off = np.array([0, 2, 3, 4, 5])
    gen = CandidateGenerator(CandidateConfig(content=2, index_kind="exact")).fit(
        rec, inter_user=IU, inter_item=II, inter_ts=TS, half_life_days=30.0,
        interest_vectors=iv, interest_offsets=off, device="cpu")
    cand = gen.generate(np.array([0]))
    # unseen items 2, 3, 4: best cosines 2 -> 1 (second interest), 4 -> 0.8, 3 -> 0
    assert _source(cand, "content", 0) == {2: (1.0, 1), 4: (pytest.approx(0.8), 2)}
    lo, hi = cand.indptr[0], cand.indptr[1]
    j = lo + cand.items[lo:hi].tolist().index(2)
    assert cand.features[j, FEATURE_NAMES.index("interest_max_cosine")] == 1.0
    assert cand.features[j, FEATURE_NAMES.index("content_cosine")] == pytest.approx(0.0,
                                                                                  abs=1e-7)


def test_unknown_user_id_raises_naming_it():
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _fakes import HashEncoder

    from interestflow import InterestEngine

    ev = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c"], "item_id": [1, 2, 2, 3, 1],
                       "text": ["x y", "y z", "z w", "w v", "v x"],
                       "ts": 1.6e9 + np.array([0, 10, 20, 30, 40]) * DAY})
    eng = InterestEngine(encoder=HashEncoder(), n_segments=1).fit(ev)
    gen = CandidateGenerator.from_engine(eng, CandidateConfig(index_kind="exact"), device="cpu")
    cand = gen.generate_ids(["b", "a"])
    assert cand.n_users == 2 and cand.user_rows.tolist() == eng.user_rows(["b", "a"]).tolist()
    with pytest.raises(ValueError, match="'zz' at position 1"):
        gen.generate_ids(["a", "zz"])
    with pytest.raises(ValueError, match="user_rows\\[0\\]=7"):
        gen.generate(np.array([7]))


def test_state_round_trip_gives_the_same_candidates():
    rng = np.random.default_rng(4)
    gen, rec = _random(rng, content=4, ease=4, popularity=3)
    back = CandidateGenerator.from_state(gen.config_dict(), gen.state_dict(), rec,
                                         device="cpu")
    rows = np.arange(rec.n_users_)
    _same(gen.generate(rows), back.generate(rows))


def test_config_is_validated():
    with pytest.raises(ValueError, match="content=-1"):
        CandidateConfig(content=-1)
    with pytest.raises(TypeError, match="chunk_users"):
        CandidateConfig(chunk_users=2.5)
    with pytest.raises(ValueError, match="index_kind"):
        CandidateConfig(index_kind="hnsw")


def test_memory_follows_candidates_not_the_catalogue():
    """200 users x 2,000,000 items: a (users x items) float64 block would be 3.2 GB."""
    n_users, n_items, K, dim = 200, 2_000_000, 2, 4
    rng = np.random.default_rng(5)
    U = rng.normal(size=(n_users, dim)).astype(np.float32)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    V = rng.normal(size=(n_items, dim)).astype(np.float32)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    iu = np.repeat(np.arange(n_users), 5)
    ii = rng.integers(0, n_items, len(iu))
    ts = rng.uniform(0, 100, len(iu)) * DAY
    pop = np.zeros(n_items)
    pop[rng.integers(0, n_items, 5000)] = rng.uniform(1, 10, 5000)
    seg_pop = np.zeros((K, n_items))
    seg_pop[:, :1000] = rng.uniform(0, 1, (K, 1000))
    seen = [np.unique(ii[iu == u]) for u in range(n_users)]
    ptr = np.concatenate([[0], np.cumsum([len(s) for s in seen])]).astype(np.int64)
    idx = np.concatenate(seen).astype(np.int64)
    knn_ptr = np.zeros(n_items + 1, np.int64)
    state = {"user_vectors": U, "item_vectors": V,
             "user_segment_weights": rng.dirichlet(np.ones(K), n_users).astype(np.float32),
             "seen_indptr": ptr, "seen_indices": idx, "popularity": pop,
             "segment_popularity": seg_pop, "seed_indptr": ptr, "seed_indices": idx,
             "seed_weights": np.ones(len(idx)), "knn_indptr": knn_ptr,
             "knn_indices": np.zeros(0, np.int64), "knn_weights": np.zeros(0),
             "weights": np.array([1.0, 0, 0, 0])}
    rec = Recommender.from_state({"config": RecommendConfig(weights={"content": 1.0}).to_dict(),
                                  "popularity_half_life_days": 30.0,
                                  "seed_half_life_days": 30.0}, state)
    gen = CandidateGenerator(CandidateConfig(index_kind="exact", chunk_users=64)).fit(
        rec, inter_user=iu, inter_item=ii, inter_ts=ts, half_life_days=30.0, device="cpu")
    assert gen.ease_b_ is None  # above ease_max_items
    gen.generate(np.arange(4))  # warm-up (numba compilation)

    def peak_of(rows):
        tracemalloc.start()
        t0 = time.perf_counter()
        out = gen.generate(rows)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return out, peak, elapsed

    _, peak_one_chunk, _ = peak_of(np.arange(64))
    cand, peak, elapsed = peak_of(np.arange(n_users))
    sizes = np.diff(cand.indptr)
    assert sizes.min() >= 100 + 50  # content and popularity fill every user's set
    # the exact index scan holds a fixed block (~107 MiB here, independent of the users);
    # beyond it memory follows the chunk: 200 users cost what one chunk of 64 costs
    assert peak < peak_one_chunk + 16 * 2 ** 20, (peak, peak_one_chunk)
    assert peak < 256 * 2 ** 20, f"peak {peak / 2 ** 20:.0f} MiB allocated while generating"
    assert elapsed < 30.0


def _engine_events():
    rng = np.random.default_rng(6)
    n = 120
    return pd.DataFrame({"user_id": rng.integers(0, 15, n).astype(str),
                         "item_id": rng.integers(0, 25, n),
                         "text": [f"t{i % 40} w{i % 7}" for i in range(n)],
                         "ts": 1.6e9 + rng.uniform(0, 90, n) * DAY})


def _hash_encoder():
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _fakes import HashEncoder
    return HashEncoder()


def test_engine_fit_builds_candidates_and_save_load_round_trips(tmp_path):
    import safetensors.numpy as stn

    from interestflow import InterestEngine

    ev = _engine_events()
    eng = InterestEngine(encoder=_hash_encoder(), n_segments=2, device="cpu",
                         ranker=None).fit(ev)
    gen = eng.candidates_
    assert isinstance(gen, CandidateGenerator) and gen.ease_b_ is not None
    users = list(eng.user_ids_[:6])
    before = gen.generate_ids(users)
    eng.save(tmp_path / "m")
    back = InterestEngine.load(tmp_path / "m", encoder=_hash_encoder())
    _same(before, back.candidates_.generate_ids(users))
    # a save without the candidate arrays (older interestflow) loads, with candidates_ None
    import json

    from safetensors import safe_open

    from interestflow.persistence import _sha256

    folder = tmp_path / "m"
    path = folder / "arrays.safetensors"
    with safe_open(str(path), "np") as f:
        save_id = f.metadata()["save_id"]
    arrays = stn.load_file(str(path))
    assert {"candidates.segment_trend", "candidates.item_trend", "candidates.ease_b"} <= set(
        arrays)
    stn.save_file({k: v for k, v in arrays.items() if not k.startswith("candidates.")},
                  str(path), metadata={"save_id": save_id})
    meta = json.loads((folder / "meta.json").read_text())
    meta.pop("candidates_config")
    meta["sha256"]["arrays.safetensors"] = _sha256(path)
    (folder / "meta.json").write_text(json.dumps(meta))
    old = InterestEngine.load(folder, encoder=_hash_encoder())
    assert old.candidates_ is None
    _same(before, CandidateGenerator.from_engine(old, gen.config).generate_ids(users))


def _host(b):
    """EASE's B (a torch tensor on the engine's device) as a numpy array."""
    return b.cpu().numpy() if hasattr(b, "cpu") else np.asarray(b)


def test_partial_fit_updates_the_candidate_state_without_refitting_ease(monkeypatch):
    """Trends follow the new events as a refit's do; EASE (O(n_items**3)) is not refitted
    per update: B keeps its fitted values, padded with zeros for items new since."""
    from interestflow import InterestEngine
    from interestflow import candidates as cmod

    ev = _engine_events()
    first, later = ev[ev["ts"] < 1.6e9 + 60 * DAY], ev[ev["ts"] >= 1.6e9 + 60 * DAY]
    eng = InterestEngine(encoder=_hash_encoder(), n_segments=2, device="cpu").fit(first)
    t0 = eng.candidates_.trend_time_
    b0 = _host(eng.candidates_.ease_b_)
    assert b0.size and np.abs(b0).max() > 0
    calls = []
    for name in ("fit_ease", "select_ease_lambda"):
        monkeypatch.setattr(cmod, name, lambda *a, _n=name, **k: calls.append(_n))
    eng.partial_fit(later, rechoose_k=False)
    monkeypatch.undo()
    assert calls == []
    b1 = _host(eng.candidates_.ease_b_)
    n0 = len(b0)
    np.testing.assert_array_equal(b1[:n0, :n0], b0)
    assert not b1[n0:].any() and not b1[:, n0:].any()
    full = InterestEngine(encoder=_hash_encoder(), n_segments=2, device="cpu").fit(ev)
    full = InterestEngine(encoder=_hash_encoder(), n_segments=2, device="cpu").fit(ev)
    assert eng.candidates_.trend_time_ > t0
    assert eng.candidates_.trend_time_ == full.candidates_.trend_time_
    assert eng.candidates_.n_items_ == len(eng.item_ids_)
    # item trends count interactions only: equal to a refit on all events (same item rows)
    rows = full.item_ids_.get_indexer(eng.item_ids_)
    np.testing.assert_allclose(eng.candidates_.item_trend_, full.candidates_.item_trend_[rows])


@pytest.mark.gpu
def test_cuda_candidates_match_the_cpu():
    """EASE fitted and scored on CUDA (float32) gives the CPU's candidates."""
    rng = np.random.default_rng(8)
    gen, rec = _random(rng, n_users=80, n_items=50, n_inter=900, ease=10, content=10)
    cuda = CandidateGenerator(gen.config).fit(rec, inter_user=gen._iu, inter_item=gen._ii,
                                             inter_ts=gen._ts, half_life_days=30.0,
                                             device="cuda")
    assert cuda.ease_b_.device.type == "cuda"
    np.testing.assert_allclose(cuda.ease_b_.cpu().numpy(), gen.ease_b_.numpy(), rtol=1e-3,
                               atol=1e-5)
    a, b = gen.generate(np.arange(80)), cuda.generate(np.arange(80))
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-3, atol=1e-5)
