"""interestflow.kernels.numba_rank: LightGBM text models evaluated in numba equal
Booster.predict to the bit (NaN, zero and threshold edge cases, every missing type, several
models averaged), and the per-user top-k order equals a lexsort reference."""

import dataclasses

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")

from interestflow.kernels.numba_rank import (K_ZERO, TABLE_MAX_SPLITS,  # noqa: E402
                                             parse_lightgbm, user_topk)


def _data(n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    X[rng.random(X.shape) < 0.2] = np.nan
    X[rng.random(X.shape) < 0.1] = 0.0
    y = (np.nan_to_num(X[:, 0]) + 0.5 * np.isnan(X[:, 1]) + (X[:, 2] == 0)
         + 0.3 * rng.standard_normal(n) > 0.4).astype(np.float64)
    return X, y


def _boosters():
    X, y = _data(3000, 6, 0)
    group = np.full(100, 30)
    out = []
    # missing type NaN (default), Zero (zero_as_missing), None (use_missing=False); ranking
    # and regression objectives; a model of one leaf per tree (min_data too large to split)
    for params in ({"objective": "lambdarank"},
                   {"objective": "lambdarank", "zero_as_missing": True},
                   {"objective": "regression", "use_missing": False},
                   {"objective": "regression", "min_data_in_leaf": 10_000}):
        ds = lgb.Dataset(X, label=y, group=group if params["objective"] == "lambdarank"
                         else None, params={"verbosity": -1})
        out.append(lgb.train({**params, "num_leaves": 7, "learning_rate": 0.2, "seed": 3,
                              "verbosity": -1, "deterministic": True}, ds,
                             num_boost_round=15))
    return out


def _edge_rows(ens, d, seed):
    """Random rows, rows holding each split's threshold exactly and its float32 neighbours,
    and values the dense reader zeroes (tiny, -0.0)."""
    X, _ = _data(2000, d, seed)
    rows = [X]
    internal = np.concatenate([np.arange(s, s + n) for s, n in
                               zip(ens.node_start[:-1], ens.n_internal)])
    for j in internal:
        t = np.float32(ens.threshold[j])
        for v in (t, np.nextafter(t, np.float32(np.inf)), np.nextafter(t, np.float32(-np.inf))):
            r = X[len(rows) % len(X)].copy()
            r[ens.feature[j]] = v
            rows.append(r[None])
    special = np.array([1e-36, -1e-36, -0.0, K_ZERO, -K_ZERO, np.float32(2e-35), np.nan],
                       np.float32)
    Z = np.repeat(X[:len(special)], d, axis=0)
    for f in range(d):
        Z[f * len(special):(f + 1) * len(special), f] = special
    rows.append(Z)
    return np.concatenate(rows)


def _kernel(ens, kernel):
    """``ens`` scored by the leaf tables ("table", the default for small trees) or by the
    tree walk ("walk", what trees of more than TABLE_MAX_SPLITS splits get)."""
    assert ens.leaf_table is not None  # these test models have small trees
    if kernel == "walk":
        ens = dataclasses.replace(ens, leaf_table=None, table_start=None)
    return ens


@pytest.mark.parametrize("kernel", ["table", "walk"])
def test_each_model_equals_booster_predict_to_the_bit(kernel):
    # both decisions: one comparison per split, and the general one of "zero" missing-type
    # splits
    assert [parse_lightgbm(b.model_to_string()).any_zero_missing for b in _boosters()] == \
        [False, True, False, False]
    for b in _boosters():
        ens = _kernel(parse_lightgbm(b.model_to_string()), kernel)
        X = _edge_rows(ens, 6, 1)
        want = b.predict(X)
        got = ens.predict(X)
        np.testing.assert_array_equal(got, want)
        # threads split rows only
        np.testing.assert_array_equal(ens.predict(np.repeat(X, 20, axis=0), threads=2),
                                      np.repeat(want, 20))


@pytest.mark.parametrize("kernel", ["table", "walk"])
def test_models_averaged_as_the_ranker_averages_them(kernel):
    bs = _boosters()
    ens = _kernel(parse_lightgbm([b.model_to_string() for b in bs]), kernel)
    assert ens.n_models == 4
    X = _edge_rows(ens, 6, 2)
    want = np.zeros(len(X))
    for b in bs:
        want += b.predict(X)
    want /= len(bs)
    np.testing.assert_array_equal(ens.predict(X), want)
    with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
        ens.predict(X[:, :5])


def test_leaf_tables_by_hand_and_big_trees_walk():
    """The table of one tree by hand; trees of more than TABLE_MAX_SPLITS splits get no table
    (the walk scores them) and still equal Booster.predict."""
    from interestflow.kernels.numba_rank import _leaf_tables

    # splits 0 (root), 1 (left of 0) and 2 (right of 0); leaves: 1 -> (L0, L1), 2 -> (L2, L3)
    # child pairs as (first, second), leaves numbered from node 3 on
    child = [1, 2, 3, 4, 5, 6] + [3, 3, 4, 4, 5, 5, 6, 6]
    start, table = _leaf_tables(child, np.array([0]), np.array([3]))
    assert start.tolist() == [0, 8]
    # code bit b: split b takes its first child; bit 0 -> split 1 (bit 1 picks L0/L1), else
    # split 2 (bit 2 picks L2/L3)
    want = [(0 if c >> 1 & 1 else 1) if c & 1 else (2 if c >> 2 & 1 else 3) for c in range(8)]
    assert table.tolist() == want
    X, y = _data(4000, 6, 5)
    b = lgb.train({"objective": "regression", "num_leaves": TABLE_MAX_SPLITS + 10,
                   "min_data_in_leaf": 5, "seed": 1, "verbosity": -1, "deterministic": True},
                  lgb.Dataset(X, label=y, params={"verbosity": -1}), num_boost_round=5)
    ens = parse_lightgbm(b.model_to_string())
    assert ens.leaf_table is None and ens.n_internal.max() > TABLE_MAX_SPLITS
    Z = _edge_rows(ens, 6, 3)
    np.testing.assert_array_equal(ens.predict(Z), b.predict(Z))


def test_bad_model_text_is_refused():
    with pytest.raises(ValueError, match="no 'Tree=' section"):
        parse_lightgbm("tree\nversion=v4\n")
    text = _boosters()[0].model_to_string()
    with pytest.raises(ValueError, match="disagree on the feature count"):
        parse_lightgbm([text, text.replace("max_feature_idx=5", "max_feature_idx=6")])
    X, y = _data(600, 3, 4)
    Xc = np.column_stack([X[:, :2], np.arange(600) % 4]).astype(np.float32)
    cat = lgb.train({"objective": "regression", "verbosity": -1, "num_leaves": 4,
                     "min_data_per_group": 5, "cat_smooth": 1},
                    lgb.Dataset(Xc, label=Xc[:, 2] + y, categorical_feature=[2],
                                params={"verbosity": -1}), num_boost_round=3)
    with pytest.raises(ValueError, match="categorical"):
        parse_lightgbm(cat.model_to_string())


def _reference_topk(indptr, items, s, k):
    m = len(indptr) - 1
    owner = np.repeat(np.arange(m), np.diff(indptr))
    order = np.lexsort((items, -s, owner))
    pos = np.arange(len(s)) - np.repeat(indptr[:-1], np.diff(indptr))
    keep = pos < k
    scores = np.full((m, k), -np.inf)
    out = np.full((m, k), -1, np.int64)
    scores[owner[keep], pos[keep]] = s[order[keep]]
    out[owner[keep], pos[keep]] = items[order[keep]]
    return scores, out


def test_user_topk_order_ties_nan_and_padding():
    # user 0: ties broken by the lower item; user 1: fewer than k; user 2: none; user 3: NaN
    indptr = np.array([0, 6, 8, 8, 12])
    items = np.array([7, 3, 9, 1, 5, 2, 4, 0, 8, 6, 2, 1])
    s = np.array([1.0, 2.0, 2.0, 0.5, 2.0, -1.0, 3.0, 3.0, np.nan, 1.0, np.nan, 1.0])
    sc, it = user_topk(indptr, items, s, 4)
    np.testing.assert_array_equal(it, [[3, 5, 9, 7], [0, 4, -1, -1], [-1, -1, -1, -1],
                                       [1, 6, 2, 8]])
    np.testing.assert_array_equal(sc[0], [2.0, 2.0, 2.0, 1.0])
    assert np.isneginf(sc[1, 2:]).all() and np.isneginf(sc[2]).all()
    ref = _reference_topk(indptr, items, s, 4)
    np.testing.assert_array_equal(it, ref[1])
    np.testing.assert_array_equal(sc, ref[0])
    # many users with rounded scores (ties everywhere), split over threads
    rng = np.random.default_rng(0)
    sizes = rng.integers(0, 40, 5000)
    indptr = np.concatenate([[0], np.cumsum(sizes)])
    items = np.concatenate([np.sort(rng.choice(1000, n, replace=False)) for n in sizes])
    s = np.round(rng.standard_normal(len(items)), 1)
    for k in (1, 10, 50):
        got = user_topk(indptr, items, s, k, threads=2)
        ref = _reference_topk(indptr, items, s, k)
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_array_equal(got[0], ref[0])
