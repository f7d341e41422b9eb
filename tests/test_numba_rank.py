"""interestflow.kernels.numba_rank: LightGBM text models evaluated in numba equal
Booster.predict to the bit (NaN, zero and threshold edge cases, every missing type, several
models averaged), and the per-user top-k order equals a lexsort reference."""

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")

from interestflow.kernels.numba_rank import K_ZERO, parse_lightgbm, user_topk  # noqa: E402


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


def test_each_model_equals_booster_predict_to_the_bit():
    # both walks: the one-comparison walk, and the general one of "zero" missing-type splits
    assert [parse_lightgbm(b.model_to_string()).any_zero_missing for b in _boosters()] == \
        [False, True, False, False]
    for b in _boosters():
        ens = parse_lightgbm(b.model_to_string())
        X = _edge_rows(ens, 6, 1)
        want = b.predict(X)
        got = ens.predict(X)
        np.testing.assert_array_equal(got, want)
        # threads split rows only
        np.testing.assert_array_equal(ens.predict(np.repeat(X, 20, axis=0), threads=2),
                                      np.repeat(want, 20))


def test_models_averaged_as_the_ranker_averages_them():
    bs = _boosters()
    ens = parse_lightgbm([b.model_to_string() for b in bs])
    assert ens.n_models == 4
    X = _edge_rows(ens, 6, 2)
    want = np.zeros(len(X))
    for b in bs:
        want += b.predict(X)
    want /= len(bs)
    np.testing.assert_array_equal(ens.predict(X), want)
    with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
        ens.predict(X[:, :5])


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
