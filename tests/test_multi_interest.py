"""Per-user multi-interest: native Ward vs scipy, hand-computed toys, multi_interest_topk."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.metrics import adjusted_rand_score

from interestflow import _native
from interestflow.interests import SECONDS_PER_DAY
from interestflow.multi_interest import (
    DEFAULT_THRESHOLD,
    MAX_EVENTS_LIMIT,
    _quotas,
    multi_interest_topk,
    recommend_multi,
    user_interests,
)

DAY = SECONDS_PER_DAY
FIELDS = ("offsets", "medoid_rows", "sizes", "labels", "n_clustered", "n_found")


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_users(seed, n_users, dim, *, max_events=40):
    """Users with 1-4 planted topics, plus duplicate rows, integer-valued (tied) users and
    single-event users; returns vectors, offsets, ts, weights."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_events, n_users)
    counts[::7] = 1
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    blocks = []
    for u, m in enumerate(counts):
        centers = rng.standard_normal((rng.integers(1, 5), dim))
        x = centers[rng.integers(0, len(centers), m)] + 0.4 * rng.standard_normal((m, dim))
        if u % 5 == 1 and m > 3:
            x[1] = x[0]
            x[3] = x[0]
        if u % 9 == 2:
            x = np.round(x)  # many exactly equal distances
        blocks.append(unit(x) if u % 2 else x)
    vectors = np.concatenate(blocks).astype(np.float32)
    n = len(vectors)
    ts = 1.7e9 + rng.uniform(0, 90 * DAY, n)
    weights = rng.uniform(0, 3, n)
    weights[rng.random(n) < 0.1] = 0.0
    return vectors, offsets, ts, weights


def assert_same(a, b):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    np.testing.assert_allclose(a.importance, b.importance, rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def data():
    return make_users(0, 300, 24)


@pytest.mark.parametrize("threshold", [0.0, 0.7, DEFAULT_THRESHOLD, 3.0, math.inf])
def test_native_matches_scipy_reference(data, threshold):
    vectors, offsets, ts, weights = data
    kw = dict(half_life_days=10.0, threshold=threshold)
    nat = user_interests(vectors, offsets, ts, weights, backend="native", **kw)
    ref = user_interests(vectors, offsets, ts, weights, backend="reference", **kw)
    assert_same(nat, ref)
    # and directly against scipy's partition, up to a permutation of the labels
    for u in range(len(offsets) - 1):
        lo, hi = offsets[u], offsets[u + 1]
        if hi - lo < 2:
            continue
        z = linkage(vectors[lo:hi].astype(np.float64), method="ward")
        flat = fcluster(z, threshold, criterion="distance")
        got = nat.labels[lo:hi]
        pairs = set(zip(flat.tolist(), got.tolist()))
        assert len(pairs) == len(set(flat.tolist())) == len(set(got.tolist())), u


def test_interest_counts_vary_and_planted_topics_are_recovered():
    rng = np.random.default_rng(3)
    dim, blocks, truth, offsets = 64, [], [], [0]
    n_topics = [1, 2, 3, 4] * 5
    for k in n_topics:
        centers = unit(rng.standard_normal((k, dim)))
        lab = np.repeat(np.arange(k), rng.integers(3, 9, k))
        rng.shuffle(lab)
        blocks.append(unit(centers[lab] + 0.1 * rng.standard_normal((len(lab), dim))))
        truth.append(lab)
        offsets.append(offsets[-1] + len(lab))
    vectors = np.concatenate(blocks).astype(np.float32)
    n = len(vectors)
    ui = user_interests(vectors, offsets, np.zeros(n), half_life_days=None)
    np.testing.assert_array_equal(ui.counts(), n_topics)
    for u, lab in enumerate(truth):
        got = ui.labels[offsets[u]:offsets[u + 1]]
        assert adjusted_rand_score(lab, got) == 1.0
        # the medoid is a member of its own interest
        for r in range(ui.offsets[u], ui.offsets[u + 1]):
            assert ui.labels[ui.medoid_rows[r]] == r - ui.offsets[u]


def test_threshold_zero_and_huge():
    vectors, offsets, ts, weights = make_users(1, 60, 8)
    zero = user_interests(vectors, offsets, ts, weights, threshold=0.0)
    huge = user_interests(vectors, offsets, ts, weights, threshold=1e12)
    for u in range(len(offsets) - 1):
        rows = vectors[offsets[u]:offsets[u + 1]]
        distinct = len(np.unique(rows, axis=0))
        assert zero.counts()[u] == distinct  # every distinct event its own interest
        assert huge.counts()[u] == 1
        assert huge.sizes[huge.offsets[u]] == len(rows)
        # equal vectors share an interest at threshold 0
        _, inv = np.unique(rows, axis=0, return_inverse=True)
        assert adjusted_rand_score(inv.ravel(), zero.labels[offsets[u]:offsets[u + 1]]) == 1.0


def test_hand_computed_toy():
    # user 0: 1-D points 0, 1, 1.5, 9 -> Ward merges {1, 1.5} at 0.5, {0, 1, 1.5} at
    # sqrt(2*1*2/3) * 1.25 = 1.443, then 9 at sqrt(2*3*1/4) * (9 - 2.5/3) = 10.0; user 1 empty;
    # user 2: one event
    v = np.array([[0.0], [1.0], [1.5], [9.0], [4.0]], np.float32)
    now = 100 * DAY
    ts = now - np.array([0, 1, 2, 0, 3]) * DAY
    w = np.array([1.0, 2.0, 4.0, 0.5, 3.0])
    ui = user_interests(v, [0, 4, 4, 5], ts, w, half_life_days=1.0, threshold=2.0, now=now)
    assert ui.offsets.tolist() == [0, 2, 2, 3]
    assert ui.labels.tolist() == [0, 0, 0, 1, 0]
    assert ui.sizes.tolist() == [3, 1, 1]
    assert ui.medoid_rows.tolist() == [1, 3, 4]  # 1 has the least sum of squares in {0,1,1.5}
    np.testing.assert_allclose(ui.importance, [1 + 2 * 0.5 + 4 * 0.25, 0.5, 3 * 0.125])
    # between the second and third merge heights: two interests; above: one
    assert user_interests(v[:4], [0, 4], ts[:4], w[:4], threshold=1.44).counts().tolist() == [3]
    assert user_interests(v[:4], [0, 4], ts[:4], w[:4], threshold=1.45).counts().tolist() == [2]
    assert user_interests(v[:4], [0, 4], ts[:4], w[:4], threshold=10.01).counts().tolist() == [1]


def test_duplicates_and_medoid_ties_go_to_the_lower_row():
    v = np.tile(np.array([[0.6, 0.8]], np.float32), (5, 1))
    ui = user_interests(v, [0, 5], np.zeros(5), threshold=0.0)
    assert ui.counts().tolist() == [1] and ui.medoid_rows.tolist() == [0]
    # two-point cluster: both sums equal -> lower row; equal importance -> lower first row
    v = np.array([[0, 0], [5, 5], [0, 1], [5, 6]], np.float32)
    ui = user_interests(v, [0, 4], np.zeros(4), threshold=2.0)
    assert ui.labels.tolist() == [0, 1, 0, 1]
    assert ui.medoid_rows.tolist() == [0, 1]


def test_interests_ordered_by_importance():
    v = np.array([[0, 0], [5, 5], [0, 1], [5, 6]], np.float32)
    ui = user_interests(v, [0, 4], np.zeros(4), [1.0, 2.0, 1.0, 2.0], threshold=2.0)
    assert ui.labels.tolist() == [1, 0, 1, 0]
    np.testing.assert_allclose(ui.importance, [4.0, 2.0])


def test_max_events_clusters_the_most_recent_and_says_so():
    rng = np.random.default_rng(5)
    v = rng.standard_normal((12, 6)).astype(np.float32)
    ts = np.array([5, 1, 9, 3, 9, 0, 7, 2, 8, 6, 4, 9], float)  # three ties at 9
    for backend in ("native", "reference"):
        ui = user_interests(v, [0, 2, 12], ts, max_events=4, threshold=1.0, backend=backend)
        assert ui.n_clustered.tolist() == [2, 4]
        # user 1 (rows 2..11): the 4 most recent are ts 9 (rows 2, 4, 11) and 8 (row 8)
        clustered = np.flatnonzero(ui.labels[2:] >= 0) + 2
        assert clustered.tolist() == [2, 4, 8, 11]
        assert (ui.labels[[3, 5, 6, 7, 9, 10]] == -1).all()
        assert ui.sizes[ui.offsets[1]:].sum() == 4
    # ties in ts: the later rows win
    ui = user_interests(v[:3], [0, 3], [1.0, 1.0, 1.0], max_events=2, threshold=0.0)
    assert ui.labels[0] == -1 and (ui.labels[1:] >= 0).all()
    assert_same(user_interests(v, [0, 12], ts, max_events=5, backend="native"),
                user_interests(v, [0, 12], ts, max_events=5, backend="reference"))


def test_max_interests_keeps_the_most_important():
    vectors, offsets, ts, weights = make_users(2, 80, 12)
    full = user_interests(vectors, offsets, ts, weights, threshold=0.8)
    cut = user_interests(vectors, offsets, ts, weights, threshold=0.8, max_interests=2)
    assert_same(cut, user_interests(vectors, offsets, ts, weights, threshold=0.8,
                                    max_interests=2, backend="reference"))
    np.testing.assert_array_equal(cut.n_found, full.counts())
    np.testing.assert_array_equal(cut.counts(), np.minimum(full.counts(), 2))
    assert (full.counts() > 2).any()
    for u in range(len(offsets) - 1):
        a, b = full.offsets[u], cut.offsets[u]
        n = cut.counts()[u]
        np.testing.assert_array_equal(cut.medoid_rows[b:b + n], full.medoid_rows[a:a + n])
        lab_full = full.labels[offsets[u]:offsets[u + 1]]
        lab_cut = cut.labels[offsets[u]:offsets[u + 1]]
        np.testing.assert_array_equal(lab_cut, np.where(lab_full < 2, lab_full, -2))


def test_float16_threads_and_frame(data):
    vectors, offsets, ts, weights = data
    v16 = vectors.astype(np.float16)
    a = user_interests(v16, offsets, ts, weights, n_threads=1)
    b = user_interests(v16.astype(np.float32), offsets, ts, weights, n_threads=2)
    assert_same(a, b)
    np.testing.assert_array_equal(a.importance, b.importance)
    ids = np.array([f"u{i}" for i in range(len(offsets) - 1)])
    df = a.to_frame(ids)
    assert list(df.columns) == ["user_id", "interest", "importance", "medoid_row", "size"]
    assert len(df) == a.n_interests
    first = df.groupby("user_id", sort=False).head(1)
    assert (first["interest"] == 0).all()
    u = 5
    sub = df[df.user_id == "u5"]
    np.testing.assert_array_equal(sub["medoid_row"], a.medoid_rows[a.offsets[u]:a.offsets[u + 1]])
    assert sub["interest"].tolist() == list(range(a.counts()[u]))
    np.testing.assert_array_equal(a.vectors(vectors), vectors[a.medoid_rows])
    assert isinstance(df, pd.DataFrame)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_bad_input_names_the_argument(backend):
    v = np.ones((3, 2), np.float32)
    ok = dict(offsets=[0, 3], ts=[0.0, 1.0, 2.0], backend=backend)
    bad_v = v.copy()
    bad_v[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"vectors must be finite.*row 1, column 1"):
        user_interests(bad_v, **ok)
    with pytest.raises(ValueError, match="offsets must be non-decreasing"):
        user_interests(v, [0, 2, 1, 3], [0.0] * 3, backend=backend)
    with pytest.raises(ValueError, match=r"weights must be finite and >= 0.*row 2"):
        user_interests(v, weights=[1, 1, -1], **ok)
    with pytest.raises(ValueError, match="threshold"):
        user_interests(v, threshold=-1.0, **ok)
    with pytest.raises(ValueError, match="threshold"):
        user_interests(v, threshold=float("nan"), **ok)
    with pytest.raises(ValueError, match="max_events"):
        user_interests(v, max_events=0, **ok)
    with pytest.raises(ValueError, match="max_events"):
        user_interests(v, max_events=MAX_EVENTS_LIMIT + 1, **ok)
    with pytest.raises(ValueError, match="max_interests"):
        user_interests(v, max_interests=0, **ok)
    with pytest.raises(TypeError, match="max_interests"):
        user_interests(v, max_interests=1.5, **ok)
    with pytest.raises(ValueError, match="after now"):
        user_interests(v, now=1.0, **ok)
    with pytest.raises(TypeError, match="vectors"):
        user_interests(np.ones((3, 2), np.int64), **ok)
    with pytest.raises(ValueError, match="ts must have shape"):
        user_interests(v, [0, 3], [0.0, 1.0], backend=backend)


def test_bad_backend_and_native_errors():
    assert _native.ward_max_events_limit == MAX_EVENTS_LIMIT
    v = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match="max_events must be in"):
        _native.ward_interests(v, np.array([0, 3]), np.zeros(3), np.ones(3), np.zeros(1), 0.0,
                               1.0, MAX_EVENTS_LIMIT + 1, 0)
    with pytest.raises(ValueError, match="backend"):
        user_interests(v, [0, 3], [0.0] * 3, backend="scipy")
    # the C++ checks themselves (reached only by direct callers)
    ref = np.zeros(1)
    with pytest.raises(ValueError, match="offsets\\[-1\\]"):
        _native.ward_interests(v, np.array([0, 2]), np.zeros(3), np.ones(3), ref, 0.0, 1.0,
                               10, 0)
    with pytest.raises(ValueError, match="ts must be finite.*row 1"):
        _native.ward_interests(v, np.array([0, 3]), np.array([0, np.inf, 0]), np.ones(3), ref,
                               0.0, 1.0, 10, 0)
    with pytest.raises(ValueError, match="ref has 2 entries"):
        _native.ward_interests(v, np.array([0, 3]), np.zeros(3), np.ones(3), np.zeros(2), 0.0,
                               1.0, 10, 0)
    with pytest.raises(TypeError, match="float32 or float16"):
        _native.ward_interests(v.astype(np.float64), np.array([0, 3]), np.zeros(3), np.ones(3),
                               ref, 0.0, 1.0, 10, 0)


# ----------------------------------------------------------------------- multi_interest_topk
def test_quotas_largest_remainder():
    assert _quotas(np.array([0.5, 0.3, 0.2]), 4).tolist() == [2, 1, 1]
    assert _quotas(np.array([0.75, 0.25]), 4).tolist() == [3, 1]
    assert _quotas(np.array([0.5, 0.5]), 3).tolist() == [2, 1]  # equal remainder: first
    assert _quotas(np.array([0.9, 0.05, 0.05]), 10).tolist() == [9, 1, 0]
    q = _quotas(np.random.default_rng(0).dirichlet(np.ones(7)), 13)
    assert q.sum() == 13


def two_topic_catalogue():
    # items 0-4 near e0, 5-9 near e1, 10-14 near e2 (closest first within each topic)
    eps = np.arange(5) * 0.05
    items = np.concatenate([np.stack([1 - eps, eps, np.zeros(5)], 1),
                            np.stack([np.zeros(5), 1 - eps, eps], 1),
                            np.stack([eps, np.zeros(5), 1 - eps], 1)]).astype(np.float32)
    return items


def test_multi_interest_topk_proportions_exclusion_and_order():
    items = two_topic_catalogue()
    iv = np.eye(3, dtype=np.float32)
    # user 0: interests e0 (3) and e1 (1); user 1: e2 only; user 2: none; user 3: e1 (1), e0 (1)
    iv_rows = np.array([0, 1, 2, 1, 0])
    imp = np.array([3.0, 1.0, 2.0, 1.0, 1.0])
    off = np.array([0, 2, 3, 3, 5])
    exclude = (np.array([0, 2, 2, 2, 3]), np.array([0, 5, 6]))
    scores, rows = multi_interest_topk(iv[iv_rows], imp, off, items, 4, exclude=exclude)
    assert rows[0].tolist() == [1, 2, 3, 6]  # items 0 and 5 excluded; 3 near e0, 1 near e1
    assert rows[1].tolist() == [10, 11, 12, 13]
    assert rows[2].tolist() == [-1] * 4 and np.isneginf(scores[2]).all()
    # equal importances: 2 + 2 (item 6 excluded for user 3)
    assert sorted(rows[3].tolist()) == [0, 1, 5, 7]
    assert (np.diff(scores[:2], axis=1) <= 0).all()
    # scores: max_i rel_i * max(cos, 0), rel = importance / the user's largest
    x = items[3].astype(np.float64)
    np.testing.assert_allclose(scores[0, 2], x[0] / np.linalg.norm(x), rtol=1e-6)
    x = items[6].astype(np.float64)
    np.testing.assert_allclose(scores[0, 3], x[1] / np.linalg.norm(x) / 3, rtol=1e-6)


def test_multi_interest_topk_small_catalogue_pads_and_shallow_candidates_spill_over():
    items = two_topic_catalogue()[:6]  # 5 near e0, 1 near e1
    iv = np.eye(3, dtype=np.float32)[:2]
    scores, rows = multi_interest_topk(iv, [1.0, 1.0], [0, 2], items, 10)
    assert sorted(rows[0, :6].tolist()) == list(range(6))
    assert rows[0, 6:].tolist() == [-1] * 4 and np.isneginf(scores[0, 6:]).all()
    # depth 1 per interest: each interest gives its best item, then runs dry
    _, rows = multi_interest_topk(iv, [1.0, 1.0], [0, 2], items, 4, candidates_per_interest=1)
    assert sorted(rows[0, :2].tolist()) == [0, 5] and rows[0, 2:].tolist() == [-1, -1]


def brute_force(iv, imp, off, items, k, seen):
    """Plain-loop restatement of multi_interest_topk on full argsorts (for random data)."""
    def cos(a, b):
        a = a / np.linalg.norm(a, axis=-1, keepdims=True)
        b = b / np.linalg.norm(b, axis=-1, keepdims=True)
        return a @ b.T

    out = []
    for u in range(len(off) - 1):
        lo, hi = off[u], off[u + 1]
        w = imp[lo:hi]
        q = _quotas(w / w.sum(), k)
        ranked = [np.lexsort((np.arange(len(items)), -cos(iv[i].astype(np.float64),
                                                          items.astype(np.float64))))
                  for i in range(lo, hi)]
        taken, blocked = [], set(seen[u])
        for i in np.lexsort((np.arange(hi - lo), -w)):
            got = 0
            for it in ranked[i]:
                if got == q[i]:
                    break
                if it not in blocked:
                    blocked.add(int(it))
                    taken.append(int(it))
                    got += 1
        out.append(sorted(taken))
    return out


def test_multi_interest_topk_matches_brute_force():
    rng = np.random.default_rng(11)
    items = rng.standard_normal((300, 16)).astype(np.float32)
    n_users = 40
    counts = rng.integers(1, 5, n_users)
    off = np.concatenate(([0], np.cumsum(counts)))
    iv = rng.standard_normal((off[-1], 16)).astype(np.float32)
    imp = rng.uniform(0.1, 5, off[-1])
    seen = [rng.choice(300, rng.integers(0, 30), replace=False) for _ in range(n_users)]
    indptr = np.concatenate(([0], np.cumsum([len(s) for s in seen])))
    scores, rows = multi_interest_topk(iv, imp, off, items, 10,
                                       exclude=(indptr, np.concatenate(seen)), backend="torch")
    truth = brute_force(iv, imp, off, items, 10, seen)
    for u in range(n_users):
        assert sorted(rows[u].tolist()) == truth[u], u
        assert not set(rows[u].tolist()) & set(seen[u].tolist())
        # order: score descending, ties to the lower item
        keys = list(zip((-scores[u]).tolist(), rows[u].tolist()))
        assert keys == sorted(keys)


def test_multi_interest_topk_bad_input():
    items = two_topic_catalogue()
    iv = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="interest_importance\\[1\\]"):
        multi_interest_topk(iv, [1.0, -1.0, 1.0], [0, 3], items, 2)
    with pytest.raises(ValueError, match="interest_offsets"):
        multi_interest_topk(iv, [1.0] * 3, [0, 2], items, 2)
    with pytest.raises(ValueError, match="item_vectors must have 3 columns"):
        multi_interest_topk(iv, [1.0] * 3, [0, 3], items[:, :2], 2)
    with pytest.raises(ValueError, match="exclude indices\\[0\\]=99"):
        multi_interest_topk(iv, [1.0] * 3, [0, 3], items, 2, exclude=([0, 1], [99]))
    with pytest.raises(ValueError, match="k=0"):
        multi_interest_topk(iv, [1.0] * 3, [0, 3], items, 0)
    with pytest.raises(TypeError, match="exclude must be a tuple"):
        multi_interest_topk(iv, [1.0] * 3, [0, 3], items, 2, exclude=[[0, 1], [2]])
