"""The tuned baselines of ``benchmarks/recsys_eval.py`` (EASE^R, item-kNN, inner-split tuning).

Toy matrices small enough to compute by hand; the real data is never read here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interestflow.synthetic import train_test_split_by_time

from _fakes import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "recsys_eval.py"


R = load_script("recsys_eval", SCRIPT)


def _events(pairs):
    """(user, item) pairs -> events with increasing ts in the given order."""
    return pd.DataFrame({"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs],
                         "ts": np.arange(len(pairs), dtype=np.int64)})


# ----------------------------------------------------------------------------- EASE^R
def test_ease_matches_hand_computed_block_matrix():
    # items {0, 1} and {2, 3} never co-occur, so each 2x2 block of X^T X + I is inverted
    # by hand: [[3, 1], [1, 2]]^-1 = [[2, -1], [-1, 3]] / 5 and [[2, 1], [1, 3]]^-1 =
    # [[3, -1], [-1, 2]] / 5; B_ij = -P_ij / P_jj.
    train = _events([("a", 0), ("a", 1), ("b", 0), ("c", 2), ("c", 3), ("d", 3)])
    item_ids, S = R.ease_scores(train, ["a", "b", "c", "d"], lam=1.0)
    assert item_ids.tolist() == [0, 1, 2, 3]
    b01, b10, b23, b32 = (1 / 5) / (3 / 5), (1 / 5) / (2 / 5), (1 / 5) / (2 / 5), (1 / 5) / (3 / 5)
    expected = np.array([[b10, b01, 0, 0],      # a: items 0, 1
                         [0, b01, 0, 0],        # b: item 0
                         [0, 0, b32, b23],      # c: items 2, 3
                         [0, 0, b32, 0]])       # d: item 3
    np.testing.assert_allclose(S, expected, rtol=0, atol=1e-12)


def test_ease_weights_match_the_closed_form_on_a_random_matrix():
    rng = np.random.default_rng(0)
    X = (rng.random((40, 7)) < 0.3).astype(float)
    G = X.T @ X
    P = np.linalg.inv(G + 50.0 * np.eye(7))
    B = np.eye(7) - P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    np.testing.assert_allclose(R.ease_weights(G, 50.0), B, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="lam=0"):
        R.ease_weights(G, 0)


# ---------------------------------------------------------------------------- item-kNN
# a: {0, 1, 2}, b: {0, 1}, c: {1, 2, 3}, d: {3}; item degrees 2, 3, 2, 2
KNN_TRAIN = _events([("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1),
                     ("c", 1), ("c", 2), ("c", 3), ("d", 3)])
S01 = S12 = 2 / np.sqrt(6)  # cosines by hand: co-counts over sqrt of degree products
S02 = S23 = 1 / 2
S13 = 1 / np.sqrt(6)


def test_item_knn_all_neighbours_is_plain_cosine_sum():
    _, S = R.item_knn_scores(KNN_TRAIN, ["b", "d"], n_neighbors=3)
    # score(u, i) = sum of sim(i, j) over the user's items j; sim(0, 3) = 0
    np.testing.assert_allclose(S, [[S01, S01, S02 + S12, S13],
                                   [0.0, S13, S23, 0.0]], atol=1e-12)


def test_item_knn_keeps_each_items_top_n_ties_to_lower_row():
    # N=1: item 0 -> {1}; item 1 -> {0} (0 and 2 tie at 2/sqrt 6, lower row kept);
    # item 2 -> {1}; item 3 -> {2}
    _, S = R.item_knn_scores(KNN_TRAIN, ["b", "d"], n_neighbors=1)
    np.testing.assert_allclose(S, [[S01, S01, S12, 0.0], [0.0, 0.0, 0.0, 0.0]], atol=1e-12)
    # N=2: item 2 -> {1, 0} (0 and 3 tie at 1/2), item 3 -> {2, 1}: d's item 3 reaches
    # nobody, b's items reach item 3 only through item 1
    _, S = R.item_knn_scores(KNN_TRAIN, ["b", "d"], n_neighbors=2)
    np.testing.assert_allclose(S, [[S01, S01, S02 + S12, S13], [0.0, 0.0, 0.0, 0.0]],
                               atol=1e-12)


def test_recommendations_drop_seen_items_and_unknown_users_score_zero():
    _, S = R.item_knn_scores(KNN_TRAIN, ["b", "zz"], n_neighbors=3)
    assert not S[1].any()  # a user without training events scores zero everywhere
    recs = R.recs_from_scores(S, np.array([0, 1, 2, 3]), ["b", "zz"], KNN_TRAIN, k=2)
    assert recs["b"] == [2, 3]  # items 0 and 1 are b's own


# ------------------------------------------------------------------------------ tuning
def _toy_events(seed=0, n_users=60, n_items=25, per_user=12):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        block = (u % 3) * 8  # three taste groups, plus some noise items
        items = np.concatenate([rng.choice(np.arange(block, block + 8), per_user - 3),
                                rng.choice(n_items, 3)])
        rows += [(f"u{u}", int(i), int(t)) for t, i in enumerate(rng.permutation(items))]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])


@pytest.mark.parametrize("scorer,grid", [("ease_scores", (1, 10, 100)),
                                         ("item_knn_scores", (1, 3, 10))])
def test_tuning_never_reads_the_test_part(monkeypatch, scorer, grid):
    scorer = getattr(R, scorer)
    events = _toy_events()
    train, test = train_test_split_by_time(events, frac=0.2)
    train = train.reset_index(drop=True)
    users = sorted(R.ground_truth(train, test))

    # the same events with every test event moved to an item no training event has
    other = events.copy()
    other.loc[test.index, "item_id"] = 1000 + np.arange(len(test))
    train2, test2 = train_test_split_by_time(other, frac=0.2)
    train2 = train2.reset_index(drop=True)
    pd.testing.assert_frame_equal(train2, train)  # same training part ...
    assert (test2["item_id"] >= 1000).all()       # ... every test event replaced

    seen_items = []
    real_truth = R.ground_truth
    monkeypatch.setattr(R, "ground_truth", lambda tr, te: (
        seen_items.extend(te["item_id"]), real_truth(tr, te))[1])
    recs1, f1 = R.tuned(scorer, grid, train, users)
    recs2, f2 = R.tuned(scorer, grid, train2, users)
    assert not any(i >= 1000 for i in seen_items)  # inner validation comes from train only
    assert f1["chosen"] == f2["chosen"] and f1["inner"] == f2["inner"]
    assert recs1 == recs2
    # the outer test scores do differ: the replaced test part really changed
    assert R.score(recs1, R.ground_truth(train, test))["recall@10"] > 0
    assert R.score(recs2, R.ground_truth(train2, test2))["recall@10"] == 0


def test_tune_picks_the_best_inner_ndcg_first_on_ties(monkeypatch):
    events = _toy_events(seed=1)
    train, _ = train_test_split_by_time(events, frac=0.2)
    best, inner = R.tune(R.ease_scores, train.reset_index(drop=True), (1, 10, 100, 1000))
    top = max(r["ndcg@10"] for r in inner.values())
    assert best == next(v for v in (1, 10, 100, 1000) if inner[v]["ndcg@10"] == top)
    # a constant scorer ties everywhere: the first grid value wins
    const = lambda tr, users, v: (np.sort(tr["item_id"].unique()),  # noqa: E731
                                  np.zeros((len(users), tr["item_id"].nunique())))
    assert R.tune(const, train.reset_index(drop=True), ("x", "y"))[0] == "x"


def test_segment_popularity_recs_by_hand():
    """benchmarks/segments_eval.py: the most popular unseen items inside the user's segment,
    ties by global popularity then the lower item; K = 1 (one segment) is global popularity."""
    S = load_script("segments_eval", ROOT / "benchmarks" / "segments_eval.py")
    # segment 0 = {a, b, c}, segment 1 = {d, e}
    train = _events([("a", 1), ("b", 1), ("c", 2), ("b", 2), ("a", 3),
                     ("d", 4), ("e", 4), ("d", 5), ("e", 6), ("d", 6), ("c", 6)])
    labels = pd.Series({"a": 0, "b": 0, "c": 0, "d": 1, "e": 1})
    got = S.segment_popularity_recs(train, labels, ["a", "c", "d"], k=3)
    # in segment 0: item 1 (a, b), 2 (b, c), 3 (a), 6 (c); globally 6 has 3 users, 4 has 2
    assert got["a"] == [2, 6, 4]          # unseen: 2 (2 in seg), 6 (1 in seg), then 4, 5
    assert got["c"] == [1, 3, 4]          # 1 (2 in seg), 3 (1 in seg, global 1) vs 4 (0)
    assert got["d"] == [1, 2, 3]          # seg 1 has seen everything it rated: global order
    one = S.segment_popularity_recs(train, pd.Series(0, index=list("abcde")), ["d"], k=3)
    pop = R.popularity(train, ["d"])
    assert one["d"] == pop["d"][:3] == [1, 2, 3]
