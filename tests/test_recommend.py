"""Recommender: exclusion, padding, ties, persistence, each component, selection, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interestflow.recommend import (COMPONENTS, RecommendConfig, Recommender, _holdout_mask,
                                    _item_knn, _tied_ranks_top, _topk_row, _topk_rows)

DAY = 86400.0


def _unit(x):
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _fit(cfg, *, U, I, iu, ii, ts=None, w=None, seg=None, soft=None, hl=30.0, V=None,
         from_inter=None):
    n_users = U.shape[0]
    iu, ii = np.asarray(iu, np.int64), np.asarray(ii, np.int64)
    ts = np.arange(len(iu), dtype=np.float64) * DAY if ts is None else np.asarray(ts, float)
    w = np.ones(len(iu)) if w is None else np.asarray(w, float)
    seg = np.zeros(n_users, np.int64) if seg is None else np.asarray(seg, np.int64)
    soft = np.ones((n_users, 1), np.float32) if soft is None else np.asarray(soft, np.float32)
    return Recommender(cfg).fit(user_vectors=U, item_vectors=I, inter_user=iu, inter_item=ii,
                                inter_ts=ts, inter_weight=w, user_segment=seg,
                                segment_soft=soft, half_life_days=hl, inter_vectors=V,
                                item_from_interactions=from_inter)


def _only(name, **kw):
    return RecommendConfig(weights={name: 1.0}, **kw)


def _random_problem(seed=0, n_users=37, n_items=23, n_inter=150, dim=8, n_seg=3):
    rng = np.random.default_rng(seed)
    U = _unit(rng.normal(size=(n_users, dim)))
    I = _unit(rng.normal(size=(n_items, dim)))
    iu = rng.integers(0, n_users, n_inter)
    ii = rng.integers(0, n_items, n_inter)
    ts = rng.uniform(0, 400 * DAY, n_inter)
    w = rng.uniform(0.5, 2.0, n_inter)
    seg = rng.integers(0, n_seg, n_users)
    soft = rng.dirichlet(np.ones(n_seg), n_users).astype(np.float32)
    V = _unit(rng.normal(size=(n_inter, dim)))
    return dict(U=U, I=I, iu=iu, ii=ii, ts=ts, w=w, seg=seg, soft=soft, V=V)


ALL_EQUAL = RecommendConfig(weights={c: 1.0 for c in COMPONENTS})


# ------------------------------------------------------------------ exclusion, padding
@pytest.mark.parametrize("fusion", ["zscore", "rrf"])
def test_exclude_seen_never_returns_seen_items(fusion):
    p = _random_problem()
    rec = _fit(RecommendConfig(weights={c: 1.0 for c in COMPONENTS}, fusion=fusion), **p)
    users = np.arange(p["U"].shape[0])
    scores, items = rec.topk(users, k=10)
    assert items.shape == scores.shape == (len(users), 10)
    seen = {(u, i) for u, i in zip(p["iu"], p["ii"])}
    assert not any((u, i) in seen for u in users for i in items[u] if i >= 0)
    n_seen = np.array([len({i for uu, i in seen if uu == u}) for u in users])
    # exactly k unless fewer unseen items exist; rows are unique and best first
    assert ((items >= 0).sum(axis=1) == np.minimum(10, 23 - n_seen)).all()
    for u in users:
        valid = items[u][items[u] >= 0]
        assert len(set(valid.tolist())) == len(valid)
        assert (np.diff(scores[u][: len(valid)]) <= 0).all()


def test_padding_when_fewer_unseen_items_than_k():
    U = _unit([[1, 0], [0, 1]])
    I = _unit([[1, 0], [1, 1], [0, 1], [1, 2]])
    # user 0 has seen items 0, 1, 2: one unseen item left
    rec = _fit(_only("content"), U=U, I=I, iu=[0, 0, 0, 1], ii=[0, 1, 2, 0])
    scores, items = rec.topk(np.array([0, 1]), k=3)
    assert items[0].tolist() == [3, -1, -1]
    assert np.isneginf(scores[0, 1:]).all() and np.isfinite(scores[0, 0])
    assert items[1].tolist() == [2, 3, 1]
    _, items = rec.topk(np.array([0]), k=6, exclude_seen=False)
    assert items[0].tolist() == [0, 1, 3, 2, -1, -1]


def test_ties_are_broken_towards_lower_item_rows():
    U = _unit([[1, 0], [0, 1]])
    I = _unit([[0, 1], [1, 0], [1, 0], [0, 1], [1, 0]])  # items 1, 2, 4 tie for user 0
    rec = _fit(_only("content"), U=U, I=I, iu=[1], ii=[0])
    scores, items = rec.topk(np.array([0, 0]), k=4)
    assert items[0].tolist() == [1, 2, 4, 0] and items[1].tolist() == [1, 2, 4, 0]
    assert scores[0, 0] == scores[0, 1] == scores[0, 2] > scores[0, 3]


def test_chunking_does_not_change_results():
    p = _random_problem(seed=3)
    big = _fit(ALL_EQUAL, **p)
    small = _fit(RecommendConfig(weights={c: 1.0 for c in COMPONENTS}, chunk_elements=50), **p)
    users = np.arange(p["U"].shape[0])
    sa, a = big.topk(users, k=7)
    sb, b = small.topk(users, k=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)


# ------------------------------------------------------------------ components
def test_content_ranks_the_item_equal_to_the_user_vector_first():
    p = _random_problem(seed=1)
    U = p["U"].copy()
    U[5] = p["I"][3]
    rec = _fit(_only("content"), **{**p, "U": U, "iu": [0], "ii": [0], "ts": [0.0],
                                    "w": [1.0], "V": None})
    _, items = rec.topk(np.array([5]), k=3)
    assert items[0, 0] == 3
    expected = np.argsort(-(p["I"] @ p["I"][3]), kind="stable")[:3]
    assert items[0].tolist() == expected.tolist()


def test_popularity_ranks_by_distinct_users():
    U = _unit(np.eye(6)[:, :4] + 0.1)
    I = _unit(np.eye(5) + 0.1)
    # item 2: 3 users; item 0: 2 users; item 4: one user 9 times; items 1, 3: nobody
    iu = [0, 1, 2, 3, 4] + [5] * 9
    ii = [2, 2, 2, 0, 0] + [4] * 9
    rec = _fit(_only("popularity"), U=np.pad(U, ((0, 0), (0, 1))), I=I, iu=iu, ii=ii,
               ts=np.zeros(len(iu)), hl=float("inf"))
    np.testing.assert_allclose(rec.popularity_, [2, 0, 3, 0, 1])
    _, items = rec.topk(np.array([0]), k=4)  # user 0 has seen item 2
    assert items[0].tolist() == [0, 4, 1, 3]


def test_zero_weight_interaction_is_seen_but_adds_no_popularity():
    U = _unit(np.ones((4, 2)))
    I = _unit(np.ones((3, 2)))
    rec = _fit(_only("popularity"), U=U, I=I, iu=[0, 1, 2, 3], ii=[0, 0, 1, 2],
               w=[0.0, 0.0, 1.0, 1.0], hl=float("inf"))
    np.testing.assert_allclose(rec.popularity_, [0, 1, 1])
    assert rec.topk(np.array([0]), k=3).rows[0].tolist() == [1, 2, -1]


def test_popularity_decay_prefers_recent_engagement():
    U = _unit(np.ones((6, 3)))
    I = _unit(np.eye(3) + 0.1)
    # item 0: three users a year ago; item 1: two users today
    iu, ii = [0, 1, 2, 3, 4], [0, 0, 0, 1, 1]
    ts = np.array([0, 0, 0, 365, 365]) * DAY
    fresh = _fit(_only("popularity"), U=U, I=I, iu=iu, ii=ii, ts=ts, hl=30.0)
    flat = _fit(_only("popularity"), U=U, I=I, iu=iu, ii=ii, ts=ts, hl=float("inf"))
    assert fresh.topk(np.array([5]), k=1).rows[0, 0] == 1
    assert flat.topk(np.array([5]), k=1).rows[0, 0] == 0
    np.testing.assert_allclose(fresh.popularity_[0], 3 * 2.0 ** (-365 / 30))


def test_segment_popularity_follows_the_users_segment():
    U = _unit(np.ones((8, 2)))
    I = _unit(np.ones((3, 2)))
    # segment 0 (users 0-2) likes item 0, segment 1 (users 3-7) likes item 1: globally item 1
    iu, ii = [0, 1, 3, 4, 5, 6], [0, 0, 1, 1, 1, 1]
    seg = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    soft = np.eye(2, dtype=np.float32)[seg]
    rec = _fit(_only("segment"), U=U, I=I, iu=iu, ii=ii, seg=seg, soft=soft, hl=float("inf"))
    assert rec.topk(np.array([2]), k=1).rows[0, 0] == 0
    assert rec.topk(np.array([7]), k=1).rows[0, 0] == 1
    glob = _fit(_only("popularity"), U=U, I=I, iu=iu, ii=ii, seg=seg, soft=soft)
    assert glob.topk(np.array([2]), k=1).rows[0, 0] == 1
    # soft memberships mix the segments; "hard" uses user_segment only
    soft2 = np.array([[0.3, 0.7]] * 8, np.float32)
    mixed = _fit(_only("segment"), U=U, I=I, iu=iu, ii=ii, seg=seg, soft=soft2)
    hard = _fit(_only("segment", segment_assignment="hard"), U=U, I=I, iu=iu, ii=ii, seg=seg,
                soft=soft2)
    assert mixed.topk(np.array([2]), k=1).rows[0, 0] == 1
    assert hard.topk(np.array([2]), k=1).rows[0, 0] == 0


def test_item_knn_uses_co_occurrence_and_recent_seeds():
    U = _unit(np.ones((7, 2)))
    I = _unit(np.ones((6, 2)))
    # items 0 and 1 co-occur (users 0-2), items 2 and 3 co-occur (users 3-5), equally
    # strongly; user 6 had item 0 long ago and item 2 recently
    iu = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    ii = [0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 0, 2]
    ts = np.zeros(len(iu))
    ts[-2], ts[-1] = 0.0, 300 * DAY
    rec = _fit(_only("item_knn"), U=U, I=I, iu=iu, ii=ii, ts=ts, hl=30.0)
    _, items = rec.topk(np.array([6]), k=2)
    assert items[0].tolist() == [3, 1]  # the recent seed's neighbour first (else a tie: 1)
    flat = _fit(_only("item_knn"), U=U, I=I, iu=iu, ii=ii, ts=ts, hl=float("inf"))
    assert flat.topk(np.array([6]), k=2).rows[0].tolist() == [1, 3]
    # the neighbour lists are the cosine over the binary user-item matrix
    X = np.zeros((7, 6))
    X[iu, ii] = 1
    n = np.linalg.norm(X, axis=0)
    C = X.T @ X / np.where(np.outer(n, n) > 0, np.outer(n, n), 1.0)
    row0 = rec.knn_indices_[rec.knn_indptr_[0]:rec.knn_indptr_[1]]
    np.testing.assert_allclose(rec.knn_weights_[rec.knn_indptr_[0]:rec.knn_indptr_[1]],
                               C[0, row0])
    assert row0.tolist() == [1, 2]  # cos(0,1) = 3/sqrt(12) > cos(0,2) = 1/4


def test_item_knn_matches_brute_force_and_keeps_top_neighbours():
    rng = np.random.default_rng(7)
    X = (rng.random((40, 17)) < 0.25).astype(float)
    X[:, 16] = 0  # an item nobody touched
    r, c = np.nonzero(X)
    ptr = np.zeros(41, np.int64)
    np.cumsum(np.bincount(r, minlength=40), out=ptr[1:])
    ind, idx, val = _item_knn(ptr, c.astype(np.int64), 40, 17, 5, chunk_elements=30)
    n = np.linalg.norm(X, axis=0)
    C = X.T @ X / np.where(np.outer(n, n) > 0, np.outer(n, n), 1)
    np.fill_diagonal(C, 0)
    for i in range(17):
        got_i, got_v = idx[ind[i]:ind[i + 1]], val[ind[i]:ind[i + 1]]
        order = np.lexsort((np.arange(17), -C[i]))
        want = [j for j in order[:5] if C[i, j] > 0]
        assert got_i.tolist() == want
        np.testing.assert_allclose(got_v, C[i, want])
    assert ind[17] - ind[16] == 0


@pytest.mark.parametrize("n, k", [(1, 1), (7, 3), (7, 7), (7, 10), (33, 5)])
def test_topk_rows_matches_the_row_by_row_definition(n, k):
    rng = np.random.default_rng(n * 31 + k)
    F = rng.integers(0, 4, size=(50, n)).astype(np.float64)  # many ties
    F[rng.random(F.shape) < 0.3] = -np.inf
    got = _topk_rows(F, k)
    for r in range(50):
        want = np.lexsort((np.arange(n), -F[r]))[:k]
        assert got[r].tolist() == want.tolist() == _topk_row(F[r], k).tolist()


def test_tied_ranks_share_their_mean_rank():
    row = np.array([3.0, 1.0, 1.0, 1.0, 0.0, -np.inf])
    idx, rank = _tied_ranks_top(row, depth=10)
    assert dict(zip(idx.tolist(), rank.tolist())) == {0: 0.0, 1: 2.0, 2: 2.0, 3: 2.0, 4: 4.0}
    idx, rank = _tied_ranks_top(row, depth=2)  # the tie group's mean rank 2 is past depth 2
    assert idx.tolist() == [0]


def test_zscore_and_rrf_fusion_on_a_hand_computed_case():
    U = _unit([[1.0, 0.0]])
    I = _unit([[1.0, 0.1], [1.0, 1.0], [0.1, 1.0]])
    # content prefers 0 > 1 > 2; popularity (3 other users) prefers 2 > 1 > 0 by a lot
    U4 = np.vstack([U, U, U, U])
    iu, ii = [1, 2, 3, 1, 2, 3], [2, 2, 2, 1, 1, 0]
    for fusion in ("zscore", "rrf"):
        cfg = RecommendConfig(weights={"content": 1.0, "popularity": 1.0}, fusion=fusion)
        rec = _fit(cfg, U=U4, I=I, iu=iu, ii=ii, hl=float("inf"))
        scores, items = rec.topk(np.array([0]), k=3)
        c = (U @ I.T).ravel().astype(np.float64)
        p = np.array([1.0, 2.0, 3.0])
        if fusion == "zscore":
            want = (c - c.mean()) / c.std() + (p - p.mean()) / p.std()
        else:
            rc = np.argsort(np.argsort(-c))
            rp = np.argsort(np.argsort(-p))
            want = 1 / (61 + rc) + 1 / (61 + rp)
        np.testing.assert_allclose(np.sort(scores[0])[::-1], np.sort(want)[::-1], rtol=1e-5)
        assert items[0].tolist() == np.lexsort((np.arange(3), -want)).tolist()


# ------------------------------------------------------------------ selection
def _paired_sequences(n_users=240, n_pairs=15, seed=0, dim=16):
    """Each user takes 3 pairs (a then b): the partner is predictable, texts are noise."""
    rng = np.random.default_rng(seed)
    iu, ii, ts = [], [], []
    for u in range(n_users):
        t = rng.uniform(0, 100) * DAY
        for p in rng.choice(n_pairs, 3, replace=False):
            for item in (2 * p, 2 * p + 1):
                iu.append(u)
                ii.append(item)
                ts.append(t)
                t += DAY
    n = len(iu)
    return dict(U=_unit(rng.normal(size=(n_users, dim))),
                I=_unit(rng.normal(size=(2 * n_pairs, dim))),
                iu=iu, ii=ii, ts=np.array(ts), V=_unit(rng.normal(size=(n, dim))))


def test_auto_selection_adds_behaviour_when_it_predicts_the_next_items():
    p = _paired_sequences()
    rec = _fit(RecommendConfig(), **p, hl=180.0)
    assert rec.weights_[COMPONENTS.index("content")] == 1.0
    assert rec.weights_[COMPONENTS.index("item_knn")] == 1.0
    steps = rec.selection_["steps"]
    assert steps[0]["components"] == ["content"]
    assert steps[1]["components"] == ["content", "item_knn"] and steps[1]["accepted"]
    assert steps[1]["ndcg"] > steps[0]["ndcg"] + 0.3
    # the partner of each user's latest item is recommended first
    last = {u: i for u, i in zip(p["iu"], p["ii"])}
    _, items = rec.topk(np.arange(20), k=1)
    assert all(items[u, 0] != last[u] for u in range(20))


def test_auto_selection_keeps_content_without_evidence():
    # 3 users: too few to show any gain
    p = _paired_sequences(n_users=3, n_pairs=4)
    rec = _fit(RecommendConfig(), **p)
    assert rec.weights_.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_auto_selection_does_not_see_held_out_texts():
    # interaction text == item vector and the given user vectors are the mean over ALL of a
    # user's items: judged with these vectors, content would find the held-out item through
    # its own text. The selection must rebuild user vectors from the earlier part only.
    p = _paired_sequences(seed=2)
    iu, ii = np.asarray(p["iu"]), np.asarray(p["ii"])
    V = p["I"][ii]
    U = np.zeros_like(p["U"])
    np.add.at(U, iu, V)
    U = _unit(U)
    rec = _fit(RecommendConfig(), **{**p, "U": U, "V": V}, hl=180.0)
    hold = _holdout_mask(iu, p["ts"], 0.2)
    leaky = []
    for u in range(U.shape[0]):
        cand = np.setdiff1d(np.arange(p["I"].shape[0]), ii[(iu == u) & ~hold])
        target = ii[(iu == u) & hold][0]
        s = p["I"][cand] @ U[u]
        rank = int((s > s[cand == target][0]).sum())
        leaky.append(1.0 / np.log2(rank + 2) if rank < 10 else 0.0)
    assert np.mean(leaky) > 0.5  # what a leaking selection would have seen
    assert rec.selection_["steps"][0]["components"] == ["content"]
    assert rec.selection_["steps"][0]["ndcg"] < 0.3
    assert rec.weights_[COMPONENTS.index("item_knn")] == 1.0


def test_holdout_mask_follows_the_protocol():
    iu = np.array([0] * 5 + [1] * 8 + [2])
    ts = np.array([5, 1, 4, 2, 3] + [1, 1, 1, 1, 2, 2, 2, 2] + [0], float)
    m = _holdout_mask(iu, ts, 0.2)
    assert m[:5].tolist() == [True, False, False, False, False]  # latest of 5
    assert m[5:13].tolist() == [False] * 6 + [True, True]  # round(1.6)=2, ties keep order
    assert not m[13]  # a single interaction stays in the training part


# ------------------------------------------------------------------ persistence
def test_state_round_trip_gives_identical_recommendations(tmp_path):
    from safetensors.numpy import load_file, save_file

    p = _random_problem(seed=5, n_users=60, n_inter=400)
    for cfg in (RecommendConfig(), RecommendConfig(fusion="rrf", weights={"content": 1.0,
                                                                          "item_knn": 2.0})):
        rec = _fit(cfg, **p)
        save_file(rec.state_dict(), str(tmp_path / "rec.safetensors"))
        (tmp_path / "rec.json").write_text(json.dumps(rec.config_dict()))
        loaded = Recommender.from_state(json.loads((tmp_path / "rec.json").read_text()),
                                        load_file(str(tmp_path / "rec.safetensors")))
        users = np.arange(60)
        for excl in (True, False):
            sa, a = rec.topk(users, k=8, exclude_seen=excl)
            sb, b = loaded.topk(users, k=8, exclude_seen=excl)
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(sa, sb)
        assert loaded.config == rec.config
        np.testing.assert_array_equal(loaded.weights_, rec.weights_)


def test_config_dict_round_trip_and_validation():
    cfg = RecommendConfig(weights={"item_knn": 2, "content": 1}, popularity_half_life_days=7)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert RecommendConfig.from_dict(d) == cfg
    assert cfg.weights == {"content": 1.0, "popularity": 0.0, "segment": 0.0, "item_knn": 2.0}
    with pytest.raises(ValueError, match="unknown RecommendConfig field"):
        RecommendConfig.from_dict({**d, "alpha": 1})


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, match", [
    ({"fusion": "mean"}, "fusion='mean'"),
    ({"weights": {"colour": 1.0}}, "unknown component"),
    ({"weights": {"content": 0.0}}, "no positive weight"),
    ({"weights": {"content": -1.0}}, r"weights\['content'\]"),
    ({"weights": "best"}, "weights='best'"),
    ({"rrf_depth": 0}, "rrf_depth=0"),
    ({"knn_neighbors": 0}, "knn_neighbors=0"),
    ({"select_alpha": 1.5}, "select_alpha=1.5"),
    ({"segment_assignment": "fuzzy"}, "segment_assignment"),
    ({"popularity_half_life_days": 0.0}, "popularity_half_life_days=0.0"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RecommendConfig(**kwargs)


def test_bad_recommend_arguments_raise():
    p = _random_problem()
    rec = _fit(ALL_EQUAL, **p)
    with pytest.raises(ValueError, match="k=0"):
        rec.topk(np.array([0]), k=0)
    with pytest.raises(TypeError, match="k must be an integer"):
        rec.topk(np.array([0]), k=2.5)
    with pytest.raises(ValueError, match=r"user_rows\[1\]=37 is not a known user row"):
        rec.topk(np.array([0, 37]), k=3)
    with pytest.raises(ValueError, match=r"user_rows\[0\]=-1"):
        rec.topk(np.array([-1]), k=3)
    with pytest.raises(TypeError, match="user_rows must be integers"):
        rec.topk(np.array([0.5]), k=3)
    with pytest.raises(ValueError, match="not fitted"):
        Recommender().topk(np.array([0]), k=3)


def test_bad_fit_arguments_raise():
    p = _random_problem()
    bad_item = p["ii"].copy()
    bad_item[4] = 23
    with pytest.raises(ValueError, match=r"inter_item\[4\]=23 is out of range"):
        _fit(ALL_EQUAL, **{**p, "ii": bad_item})
    U = p["U"].copy()
    U[2, 0] = np.nan
    with pytest.raises(ValueError, match="user_vectors has NaN/inf at row 2"):
        _fit(ALL_EQUAL, **{**p, "U": U})
    w = p["w"].copy()
    w[3] = -1.0
    with pytest.raises(ValueError, match=r"inter_weight\[3\]=-1.0"):
        _fit(ALL_EQUAL, **{**p, "w": w})
    with pytest.raises(ValueError, match="item_vectors has dimension 4"):
        _fit(ALL_EQUAL, **{**p, "I": p["I"][:, :4]})
    with pytest.raises(ValueError, match="segment_soft has 5 rows"):
        _fit(ALL_EQUAL, **{**p, "soft": p["soft"][:5]})
    with pytest.raises(ValueError, match="needs inter_vectors"):
        _fit(RecommendConfig(), **{**p, "V": None})
    with pytest.raises(ValueError, match="half_life_days=-1"):
        _fit(ALL_EQUAL, **p, hl=-1.0)


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_content_only_streaming_path_equals_the_dense_path(monkeypatch, exclude_seen):
    from interestflow.recommend import Recommender, RecommendConfig

    rng = np.random.default_rng(5)
    nu, ni, d, n = 120, 300, 12, 2500
    U = rng.normal(size=(nu, d)).astype(np.float32)
    I = rng.normal(size=(ni, d)).astype(np.float32)
    I[7] = I[3]  # an exact tie: the lower item row must come first on both paths
    iu, ii = rng.integers(0, nu, n), rng.integers(0, ni, n)
    iu[:ni - 5] = 0  # user 0 has seen all but a few items: fewer than k candidates
    ii[:ni - 5] = np.arange(ni - 5)
    seg = rng.integers(0, 3, nu)
    rec = Recommender(RecommendConfig(weights={"content": 2.0})).fit(
        user_vectors=U, item_vectors=I, inter_user=iu, inter_item=ii,
        inter_ts=rng.uniform(0, 1e7, n), inter_weight=np.ones(n), user_segment=seg,
        segment_soft=np.eye(3, dtype=np.float32)[seg], half_life_days=30.0)
    assert rec._content_only()
    rows = np.arange(nu)
    fast_s, fast_i = rec.topk(rows, 10, exclude_seen=exclude_seen)
    monkeypatch.setattr(Recommender, "_content_only", lambda self: False)
    dense_s, dense_i = rec.topk(rows, 10, exclude_seen=exclude_seen)
    np.testing.assert_array_equal(fast_i, dense_i)
    np.testing.assert_allclose(fast_s, dense_s, rtol=1e-5, atol=1e-5)
    if exclude_seen:
        assert (fast_i[0] >= 0).sum() == 5 and np.isneginf(fast_s[0, 5:]).all()


def test_subset_recommender_rebuilds_only_interaction_items_and_shares_the_rest():
    """Items built from interactions get the unit mean of their kept interactions' vectors
    (the float64 rebuild of every item, as before, to the bit); described items keep the
    fitted vectors, and with no interaction-built item the array itself is shared (no copy
    of a large catalogue)."""
    from interestflow.recommend import subset_recommender

    rng = np.random.default_rng(3)
    n_users, n_items, d, n = 6, 5, 4, 30
    U = rng.normal(size=(n_users, d)).astype(np.float32)
    I = rng.normal(size=(n_items, d)).astype(np.float32)
    iu, ii = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    ts, wt = rng.uniform(0, 1e6, n), rng.uniform(0.5, 2.0, n)
    V = rng.normal(size=(n, d)).astype(np.float32)
    keep = rng.random(n) < 0.7
    kw = dict(user_vectors=U, item_vectors=I, inter_user=iu, inter_item=ii, inter_ts=ts,
              inter_weight=wt, inter_vectors=V, user_segment_weights=np.ones((n_users, 1)),
              popularity_half_life_days=30.0, seed_half_life_days=30.0, half_life_days=30.0)
    from_inter = np.array([True, False, True, True, False])
    inner, has_text = subset_recommender(RecommendConfig(), keep,
                                         item_from_interactions=from_inter, **kw)
    # reference: every item rebuilt in float64, then the described ones put back
    ref = I.astype(np.float64).copy()
    rebuilt = np.zeros((n_items, d))
    np.add.at(rebuilt, ii[keep], V[keep] * wt[keep, None])
    nrm = np.linalg.norm(rebuilt, axis=1, keepdims=True)
    unit = np.where(nrm > 0, rebuilt / np.where(nrm > 0, nrm, 1.0), 0.0)
    ref[from_inter] = unit[from_inter]
    np.testing.assert_array_equal(inner.item_vectors_, ref.astype(np.float32))
    assert has_text.tolist() == list(~from_inter | np.isin(np.arange(n_items), ii[keep]))
    described, _ = subset_recommender(RecommendConfig(), keep,
                                      item_from_interactions=np.zeros(n_items, bool), **kw)
    assert described.item_vectors_ is I
