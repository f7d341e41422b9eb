"""SegmentTracker and update_segments on hand-made vectors (no encoder: fast and exact)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score

from interestflow.dynamics import (
    TRACKING_TABLES,
    SegmentTracker,
    cluster_users,
    tracking_schemas,
    update_segments,
)

DAY = 86400.0
DIM = 24


def _topics(n, seed=0):
    """``n`` random orthonormal topic directions in DIM dimensions."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((DIM, n)))
    return q.T.astype(np.float32)


class _Stream:
    """Builds (vectors, user_ids, ts) window by window: users x their topic mix."""

    def __init__(self, seed=0, noise=0.15, per_window=3):
        self.rng = np.random.default_rng(seed)
        self.noise, self.per_window = noise, per_window
        self.v, self.u, self.t = [], [], []

    def add(self, window, users, direction):
        """Each user in ``users`` gets ``per_window`` events around ``direction`` in window."""
        direction = np.asarray(direction, np.float32)
        for user in users:
            for _ in range(self.per_window):
                e = direction + self.noise * self.rng.standard_normal(DIM)
                self.v.append(e / np.linalg.norm(e))
                self.u.append(user)
                self.t.append(window * 30 * DAY + self.rng.uniform(1, 29.9) * DAY)

    def arrays(self):
        return np.asarray(self.v, np.float32), np.asarray(self.u), np.asarray(self.t)


def _users(prefix, n):
    return [f"{prefix}{i:02d}" for i in range(n)]


def _fit(stream, **kw):
    v, u, t = stream.arrays()
    kw.setdefault("random_state", 0)
    return SegmentTracker(**kw).fit(v, u, t)


def _events(tr, kind=None):
    lc = tr.lifecycle_
    if kind is not None:
        lc = lc[lc["event"] == kind]
    return [(int(r.snapshot), r.event, list(r.segments_from), list(r.segments_to))
            for r in lc.itertuples()]


def _id_of(tr, snapshot, user):
    a = tr.assignments_
    return int(a[(a["snapshot"] == snapshot) & (a["user_id"] == user)]["segment_id"].iloc[0])


# ------------------------------------------------------------------- lifecycle: toy cases

def test_ids_stable_and_no_events_when_nothing_changes():
    top = _topics(4)
    s = _Stream()
    groups = [_users(g, 12) for g in "abcd"]
    for w in range(4):
        for g, d in zip(groups, top):
            s.add(w, g, d)
    tr = _fit(s)
    assert tr.windows_["n_segments"].tolist() == [4, 4, 4, 4]
    assert tr.lifecycle_.empty
    paths = tr.paths_
    assert (paths.nunique(axis=1) == 1).all()          # every user keeps its id
    assert sorted(paths[0].unique().tolist()) == [0, 1, 2, 3]
    # transitions are the identity: each segment's 12 users stay
    tr1 = tr.transition_matrix(1)
    assert (np.diag(tr1.to_numpy()) == 12).all() and tr1.to_numpy().sum() == 48


def _split_stream(n_windows, apart):
    """Users c and d on their own topics throughout; the 20 "ab" users write about a mix of
    two topics, except in the windows where ``apart(w)``: then half write about each."""
    top = _topics(4)
    mixed = (top[0] + top[1]) / np.sqrt(2)
    s = _Stream()
    ab, c, d = _users("ab", 20), _users("c", 12), _users("d", 12)
    for w in range(n_windows):
        s.add(w, c, top[2])
        s.add(w, d, top[3])
        if apart(w):
            s.add(w, ab[:10], top[0])
            s.add(w, ab[10:], top[1])
        else:
            s.add(w, ab, mixed)
    return s


def test_split_keeps_the_parent_id_on_one_part():
    tr = _fit(_split_stream(3, lambda w: w >= 2))
    parent = _id_of(tr, 1, "ab00")
    parts = sorted({_id_of(tr, 2, "ab00"), _id_of(tr, 2, "ab10")})
    assert len(parts) == 2 and parent in parts
    assert _events(tr) == [(2, "split", [parent], parts)]
    row = tr.lifecycle_.iloc[0]
    assert row["value"] == pytest.approx(1.0)          # all members went to the two parts
    assert "50% ->" in row["detail"]


def test_merge_keeps_one_id_and_absorbs_the_other():
    top = _topics(4)
    s = _Stream()
    a, b, c, d = (_users(g, 12) for g in "abcd")
    for w in range(3):
        s.add(w, a, top[0])
        s.add(w, c, top[2])
        s.add(w, d, top[3])
        s.add(w, b, top[1] if w < 2 else top[0])        # b's users move to a's topic
    tr = _fit(s)
    ia, ib = _id_of(tr, 1, "a00"), _id_of(tr, 1, "b00")
    assert _id_of(tr, 2, "b00") == _id_of(tr, 2, "a00") == ia
    assert _events(tr) == [(2, "merge", sorted([ia, ib]), [ia])]
    assert tr.lifecycle_.iloc[0]["value"] == pytest.approx(1.0)


def test_appear_and_vanish():
    top = _topics(5)
    s = _Stream()
    a, b, c, old, new = (_users(g, 12) for g in ("a", "b", "c", "old", "new"))
    for w in range(3):
        for g, d in zip((a, b, c), top):
            s.add(w, g, d)
        if w < 2:
            s.add(w, old, top[3])                       # these users stop after window 1
        else:
            s.add(w, new, top[4])                       # new users with a new interest
    tr = _fit(s)
    gone, born = _id_of(tr, 1, "old00"), _id_of(tr, 2, "new00")
    assert born not in tr.paths_[1].dropna().tolist()  # a fresh id, never used before
    assert sorted(_events(tr)) == [(2, "appear", [], [born]), (2, "vanish", [gone], [])]
    assert tr.paths_.loc["old00", 2] is pd.NA and tr.paths_.loc["new00", 1] is pd.NA
    tr2 = tr.transition_matrix(2)
    assert tr2.loc[gone, -1] == 12 and tr2.loc[-1, born] == 12


def test_drift_reported_beyond_sampling_noise_only():
    top = _topics(4)
    s = _Stream(noise=0.1)
    a, b, c = (_users(g, 15) for g in "abc")
    # c rotates toward top[3] by 0.5 rad at window 2: 1 - cos = 1 - cos(0.5) = 0.122
    rot = np.cos(0.5) * top[2] + np.sin(0.5) * top[3]
    for w in range(3):
        s.add(w, a, top[0])
        s.add(w, b, top[1])
        s.add(w, c, top[2] if w < 2 else rot)
    tr = _fit(s)
    ic = _id_of(tr, 2, "c00")
    assert _events(tr) == [(2, "drift", [ic], [ic])]
    assert tr.lifecycle_.iloc[0]["value"] == pytest.approx(1 - np.cos(0.5), abs=0.02)
    # the sampling-noise estimate matches the moves of the segments that did not drift
    ds = tr.drift_scores_
    assert len(ds) == 6 and set(ds["snapshot"]) == {1, 2}
    still = ds[ds["segment_id"] != ic]
    assert ((still["value"] / still["noise"]).between(0.3, 2.0)).all()
    assert 0.5 < (still["value"] / still["noise"]).mean() < 1.5
    # the same data with a threshold above the move: no event
    assert _fit(s, drift_threshold=0.2).lifecycle_.empty


def test_a_window_without_events_ends_every_segment():
    top = _topics(3)
    s = _Stream()
    groups = [_users(g, 10) for g in "abc"]
    for w in (0, 2):                                    # nothing happens in window 1
        for g, d in zip(groups, top):
            s.add(w, g, d)
    tr = _fit(s)
    assert tr.windows_["n_users"].tolist() == [30, 0, 30]
    assert tr.windows_["init"].tolist() == ["first", "empty", "first"]
    ev = _events(tr)
    assert ev == [(1, "vanish", [i], []) for i in (0, 1, 2)] + \
        [(2, "appear", [], [i]) for i in (3, 4, 5)]
    assert (tr.lifecycle_["value"] == 0.0).all()
    assert tr.transitions_["n_users"].tolist() == [10] * 6


def test_fixed_k_and_sliding_windows():
    top = _topics(3)
    s = _Stream()
    groups = [_users(g, 10) for g in "abc"]
    for w in range(4):
        for g, d in zip(groups, top):
            s.add(w, g, d)
    tr = _fit(s, n_segments=3, window="sliding", window_length="60D")
    win = tr.windows_
    assert (win["n_segments"] == 3).all() and (win["n_users"] == 30).all()
    length = win["window_end"] - win["window_start"]
    assert length.iloc[0] == pd.Timedelta("30D")        # clipped at the origin
    assert (length.iloc[1:] == pd.Timedelta("60D")).all()
    assert tr.lifecycle_.empty


def test_user_vectors_are_decayed_means_of_the_window():
    # one user, two events in window 0; its snapshot vector is their decayed mean
    v = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], np.float32)
    u = np.array(["x", "x", "y", "y"])
    t = np.array([0.0, 10 * DAY, 5 * DAY, 6 * DAY])
    tr = SegmentTracker(n_segments=1, half_life_days=10.0, min_segment_size=1).fit(v, u, t)
    # window end 30 days: weights 2^-3 and 2^-2
    w1, w2 = 2.0 ** -3, 2.0 ** -2
    expect = np.array([w1, w2, 0]) / np.hypot(w1, w2)
    assert np.allclose(tr.snapshot_vectors_[0][0], expect, atol=1e-6)
    assert tr.snapshot_users_[0].tolist() == ["x", "y"]


# ------------------------------------------------------------------------ tables / schema

@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    top = _topics(3)
    s = _Stream()
    a, b, c = (_users(g, 10) for g in "abc")
    for w in range(3):
        s.add(w, a, top[0])
        s.add(w, b, top[1])
        if w < 2:
            s.add(w, c, top[2])
    v, u, t = s.arrays()
    texts = [f"{'espresso crema grinder' if x[0] == 'a' else 'trail shoes running'} "
             f"{'tamper' if x[0] == 'a' else 'laces'} review {i}" if x[0] != "c" else
             f"monstera leaves pot {i}" for i, x in enumerate(u)]
    tr = SegmentTracker(random_state=0).fit(v, u, pd.to_datetime(t, unit="s", utc=True),
                                            texts=texts)
    out = tr.to_run_dir(tmp_path_factory.mktemp("run"))
    return tr, out, u


def test_tables_match_the_run_dir_schema(tracked):
    tr, out, _ = tracked
    schemas = tracking_schemas()
    for name in TRACKING_TABLES:
        table = pq.read_table(out / f"{name}.parquet")
        assert table.schema.remove_metadata() == schemas[name], name
        assert table.num_rows == len(tr.tables()[name])
    snaps = pq.read_table(out / "snapshots.parquet").to_pandas()
    assert snaps["snapshot"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert (snaps["size"] == 10).all()
    assert str(snaps["window_start"].dtype) == "datetime64[ns, UTC]"


def test_labels_paths_transitions_and_map(tracked):
    tr, _, users = tracked
    snaps = tr.snapshots_
    seg_a = _id_of(tr, 0, "a00")
    kw = snaps[(snaps["snapshot"] == 0) & (snaps["segment_id"] == seg_a)]["keywords"].iloc[0]
    assert set(kw[:4]) == {"espresso", "crema", "grinder", "tamper"}
    rep = snaps[snaps["segment_id"] == seg_a]["representative_texts"].iloc[0]
    assert len(rep) == 3 and all(x.startswith("espresso crema grinder") for x in rep)
    # paths agree with assignments; transitions count every user present at t-1 or t
    a = tr.assignments_
    for r in a.sample(10, random_state=0).itertuples():
        assert tr.paths_.loc[r.user_id, r.snapshot] == r.segment_id
    t2 = tr.transitions_[tr.transitions_["snapshot"] == 2]
    assert t2["n_users"].sum() == 30
    assert t2[t2["to_segment"] == -1]["n_users"].sum() == 10   # the c users left
    assert (tr.transitions_["snapshot"] >= 1).all()
    m = tr.map_
    assert len(m) == len(a) and m["x"].dtype == np.float32
    assert m[["x", "y"]].std().min() > 0                        # a real 2-D spread
    # same user, same topic: map points of one segment stay together across snapshots
    same = m[m["user_id"] == "a00"]["x"]
    assert same.max() - same.min() < 0.5 * (m["x"].max() - m["x"].min())


def test_refit_is_deterministic():
    top = _topics(3)
    s = _Stream(seed=3)
    for w in range(2):
        for g, d in zip("abc", top):
            s.add(w, _users(g, 10), d)
    one, two = _fit(s), _fit(s)
    for name in TRACKING_TABLES:
        pd.testing.assert_frame_equal(one.tables()[name], two.tables()[name])


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kw, err, match", [
    ({"window": "hopping"}, ValueError, "window='hopping'"),
    ({"freq": "thirty days"}, ValueError, "freq='thirty days'"),
    ({"freq": 30}, TypeError, "freq must be"),
    ({"window_length": "60D"}, ValueError, "only used with window='sliding'"),
    ({"window": "sliding", "window_length": "10D"}, ValueError, "shorter than freq"),
    ({"split_threshold": 1.5}, ValueError, "split_threshold=1.5"),
    ({"match_weight": "high"}, TypeError, "match_weight must be a number"),
    ({"half_life_days": 0}, ValueError, "half_life_days=0"),
    ({"n_segments": "many"}, ValueError, "n_segments='many'"),
    ({"min_segment_size": 0}, ValueError, "min_segment_size=0"),
])
def test_bad_parameters_name_themselves(kw, err, match):
    v = np.eye(3, dtype=np.float32)
    with pytest.raises(err, match=match):
        SegmentTracker(**kw).fit(v, ["a", "b", "c"], [0.0, 1.0, 2.0])


def test_bad_inputs_name_the_row():
    v = np.eye(4, dtype=np.float32)
    u = ["a", "b", "c", "d"]
    t = [0.0, 1.0, 2.0, 3.0]
    tr = SegmentTracker(n_segments=2)
    bad = v.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf at row 2"):
        tr.fit(bad, u, t)
    with pytest.raises(ValueError, match="2-D"):
        tr.fit(v[0], u, t)
    with pytest.raises(ValueError, match="user_ids has 3 entries"):
        tr.fit(v, u[:3], t)
    with pytest.raises(ValueError, match="user_ids is null at row 1"):
        tr.fit(v, ["a", None, "c", "d"], t)
    with pytest.raises(ValueError, match="NaT at row 3"):
        tr.fit(v, u, pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", None]))
    with pytest.raises(ValueError, match=r"weights must be finite and >= 0, got -1.0 at row 0"):
        tr.fit(v, u, t, weights=[-1.0, 1, 1, 1])
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        tr.fit(v, u, t, texts=["x", 2, "y", "z"])
    with pytest.raises(ValueError, match="n_segments=9 exceeds the number of users"):
        SegmentTracker(n_segments=9).fit(v, u, t)
    with pytest.raises(ValueError, match="origin=.* is after the earliest event"):
        SegmentTracker(origin="2030-01-01").fit(v, u, t)
    with pytest.raises(RuntimeError, match="not fitted"):
        SegmentTracker().tables()
    with pytest.raises(ValueError, match="unknown parameter 'k'"):
        SegmentTracker().set_params(k=3)


def test_get_set_params_round_trip():
    tr = SegmentTracker(freq="7D", drift_threshold=0.1)
    p = tr.get_params()
    assert p["freq"] == "7D" and p["drift_threshold"] == 0.1
    assert SegmentTracker(**p).get_params() == p
    assert tr.set_params(match_threshold=0.6).match_threshold == 0.6


def test_deprecated_share_names_still_work_and_warn():
    """split_threshold / merge_threshold were renamed split_share / merge_share (member
    shares, not a cosine like the engine's merge_threshold): the old keywords still act,
    exactly as the new ones, with a DeprecationWarning naming the new name."""
    top = _topics(4)
    s = _Stream()
    a, b, c = (_users(g, 12) for g in "abc")
    for w in range(3):
        s.add(w, a, top[0])
        s.add(w, b, top[1] if w < 2 else top[0])   # b joins a: a merge at snapshot 2
        s.add(w, c, top[2])
    merges = lambda tr: (tr.lifecycle_candidates_["event"] == "merge").sum()  # noqa: E731
    assert merges(_fit(s)) == 1
    new = _fit(s, merge_share=0.9)                 # no source gives 90% of the merged one
    with pytest.warns(DeprecationWarning, match="pass merge_share instead"):
        old = _fit(s, merge_threshold=0.9)
    assert merges(new) == 0
    for name in TRACKING_TABLES:
        pd.testing.assert_frame_equal(old.tables()[name], new.tables()[name])
    assert old.get_params()["merge_threshold"] == 0.9 and old.merge_share == 0.25
    with pytest.raises(ValueError, match="pass split_share only"):
        _fit(s, split_threshold=0.3, split_share=0.4)


# ---------------------------------------------------------------------- update_segments

def _blobs(n_per, k, seed=0, noise=0.2):
    top = _topics(k, seed)
    rng = np.random.default_rng(seed)
    x = np.repeat(top, n_per, axis=0) + noise * rng.standard_normal((n_per * k, DIM))
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


def test_update_segments_moves_only_changed_rows_without_iterations():
    x, y = _blobs(20, 3)
    cents = _topics(3)
    x2 = x.copy()
    x2[[0, 1]] = x[[40, 41]]                            # two users moved to topic 2
    labels, new_c = update_segments(x2, cents, [0, 1], previous_labels=y, n_iter=0)
    expect = y.copy()
    expect[[0, 1]] = 2
    assert labels.tolist() == expect.tolist()
    xu = x2 / np.linalg.norm(x2, axis=1, keepdims=True)
    m = xu[labels == 2].mean(0)
    assert np.allclose(new_c[2], m / np.linalg.norm(m), atol=1e-5)
    # new users (rows past previous_labels) are assigned too
    labels, _ = update_segments(np.vstack([x, x[45:46]]), cents, None, previous_labels=y,
                                n_iter=0)
    assert labels[-1] == 2 and labels[:-1].tolist() == y.tolist()


def test_update_segments_converged_equals_kmeans_from_the_same_start():
    from interestflow import KMeans

    x, y = _blobs(25, 4, seed=1, noise=0.6)
    cents = _topics(4, seed=1)
    labels0, c0 = update_segments(x, cents, None, n_iter=0)
    labels, c = update_segments(x, cents, None, n_iter=300)
    xu = x / np.linalg.norm(x, axis=1, keepdims=True)
    km = KMeans(4, init=c0, n_init=1, max_iter=300, random_state=0).fit(xu)
    assert labels.tolist() == km.labels_.tolist()
    ref = km.cluster_centers_ / np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True)
    assert np.allclose(c, ref, atol=1e-5)


def test_update_segments_bad_input():
    x, y = _blobs(5, 2)
    c = _topics(2)
    with pytest.raises(ValueError, match="previous_centroids must be"):
        update_segments(x, c[:, :3], None)
    with pytest.raises(ValueError, match=r"previous_labels\[0\]=7 is not a segment"):
        update_segments(x, c, None, previous_labels=np.full(10, 7))
    with pytest.raises(ValueError, match=r"changed_rows\[0\]=99 is not a row"):
        update_segments(x, c, [99], previous_labels=y)
    with pytest.raises(TypeError, match="n_iter must be an int"):
        update_segments(x, c, None, n_iter=1.5)


# -------------------------------------------------------------------------- cluster_users

def test_cluster_users_warm_start_keeps_the_previous_order_and_finds_a_new_segment():
    x, y = _blobs(15, 4, seed=2)
    first = cluster_users(x)
    assert first["init"] == "first" and first["k"] == 4
    assert adjusted_rand_score(y, first["labels"]) == 1.0
    # same users, previous centroids: the warm solution is kept, in the previous order
    again = cluster_users(x, first["centroids"])
    assert again["init"] == "warm" and again["labels"].tolist() == first["labels"].tolist()
    # a fifth group of users arrives: K grows, the four old segments keep their rows
    assert again["previous_rows"].tolist() == [0, 1, 2, 3]
    extra = _topics(6, seed=9)[5] + 0.2 * np.random.default_rng(1).standard_normal((15, DIM))
    grown = cluster_users(np.vstack([x, extra]).astype(np.float32), first["centroids"])
    assert grown["k"] == 5
    assert grown["labels"][:60].tolist() == first["labels"].tolist()
    assert len(set(grown["labels"][60:].tolist())) == 1 and grown["labels"][60] == 4
    assert grown["previous_rows"].tolist() == [0, 1, 2, 3, -1]
    assert grown["size"].tolist() == [15] * 5
    assert np.allclose(np.linalg.norm(grown["centroids"], axis=1), 1.0, atol=1e-5)
    assert ((grown["resultant"] > 0.5) & (grown["resultant"] <= 1.0)).all()


def test_warm_start_seeds_are_kmeans_plusplus_continuing_from_the_kept_centroids():
    from interestflow.kmeans import kmeans_plusplus
    from interestflow.tracking._clustering import _warm_init

    topics = _topics(3, seed=3)
    x = np.repeat(topics, 10, axis=0) + 0.01 * np.random.default_rng(0).standard_normal(
        (30, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    far = -topics[:3].sum(0) / np.sqrt(3)
    prev = np.stack([topics[0], far])  # the second previous centroid has no users left
    rng, ref_rng = np.random.RandomState(7), np.random.RandomState(7)
    init, origin = _warm_init(x, prev, 3, 5, rng, "numba")
    ref, idx = kmeans_plusplus(x.astype(np.float64), 3, initial_centers=prev[[0]],
                               random_state=ref_rng, first_center="uniform")
    assert init.dtype == np.float32 and init.tobytes() == ref.astype(np.float32).tobytes()
    assert rng.randint(10 ** 6) == ref_rng.randint(10 ** 6)  # the same draws were used
    assert origin.tolist() == [0, -1, -1] and idx[0] == -1
    assert np.array_equal(init[0], prev[0])
    # one seed in each group of users the kept centroid does not cover
    assert sorted(int(i) // 10 for i in idx[1:]) == [1, 2]
    assert np.array_equal(init[1:], x[idx[1:]])
    # none kept: the first seed is a uniformly drawn user
    init, origin = _warm_init(x, prev, 2, 31, np.random.RandomState(5), "numba")
    assert origin.tolist() == [-1, -1]
    assert np.array_equal(init[0], x[np.random.RandomState(5).randint(30)])


def test_cluster_users_fixed_k_small_segments_and_bad_input():
    x, _ = _blobs(15, 3, seed=4)
    fixed = cluster_users(x, n_segments=3)
    assert fixed["k"] == 3 and np.isnan(fixed["silhouette"])
    assert cluster_users(x)["silhouette"] > 0.4
    # two stray users (one interest far from the rest) get a cluster of their own with K=4,
    # which min_segment_size=5 dissolves into the nearest segments
    stray = _topics(6, seed=7)[4] + 0.01 * np.random.default_rng(0).standard_normal((2, DIM))
    xs = np.vstack([x, stray]).astype(np.float32)
    assert cluster_users(xs, n_segments=4, min_segment_size=2)["size"].tolist().count(2) == 1
    res = cluster_users(xs, n_segments=4)
    assert res["k"] == 3 and res["size"].sum() == 47 and res["size"].min() >= 15
    with pytest.raises(ValueError, match="previous_centroids must have shape"):
        cluster_users(x, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="n_segments=0"):
        cluster_users(x, n_segments=0)
    with pytest.raises(ValueError, match="2-D float array"):
        cluster_users(x[0])


def test_module_examples_run():
    import doctest

    from interestflow import dynamics
    from interestflow.datasets import planted

    for mod in (dynamics, planted):
        assert doctest.testmod(mod).failed == 0, mod.__name__


def test_map_is_the_pca_of_all_snapshots_together():
    from sklearn.decomposition import PCA

    from interestflow.tracking._tables import project_2d

    rng = np.random.default_rng(0)
    a = (rng.standard_normal((500, 10)) * np.arange(1, 11)).astype(np.float32)
    b = rng.standard_normal((301, 10)).astype(np.float32)
    got = project_2d([a, b], chunk=64)                 # chunks cut through both blocks
    ref = PCA(2).fit_transform(np.vstack([a, b]).astype(np.float64))
    assert got.shape == (801, 2) and got.dtype == np.float32
    assert np.allclose(np.abs(got), np.abs(ref), atol=1e-4)


# ------------------------------------------------------------ significance and hysteresis

def _stationary(seed=0, n_windows=8):
    """No dynamics at all: every user keeps one interest (a point in a broad cloud around
    three overlapping themes) for all windows; more users each window (as real data grows),
    each writing 1-3 events per window about its interest."""
    rng = np.random.default_rng(seed)
    themes = _topics(3, seed=seed)
    s = _Stream(seed=seed, noise=0.35, per_window=1)
    n_users = 0
    taste = {}
    for w in range(n_windows):
        n_users = int(20 + 25 * w)
        for i in range(n_users):
            u = f"u{i:03d}"
            if u not in taste:
                mix = rng.dirichlet([0.7, 0.7, 0.7])
                taste[u] = mix @ themes + 0.3 * rng.standard_normal(DIM)
            for _ in range(int(rng.integers(1, 4))):
                s.add(w, [u], taste[u])
    return s


@pytest.mark.parametrize("seed", [0, 1])
def test_stationary_stream_reports_no_structural_events(seed):
    tr = _fit(_stationary(seed))
    kinds = ("split", "merge", "appear", "vanish")
    raw = tr.lifecycle_candidates_[tr.lifecycle_candidates_["event"].isin(kinds)]
    reported = tr.lifecycle_[tr.lifecycle_["event"].isin(kinds)]
    assert len(raw) >= 3               # the clustering alone does produce candidates ...
    assert len(reported) == 0          # ... and none survives the tests
    assert (raw["reason"] != "").all() and not raw["reported"].any()
    # every candidate carries its evidence
    assert raw["p_value"].between(0, 1).all()
    assert raw["stability"].dropna().between(0, 1).all()


def test_lifecycle_columns_carry_significance():
    tr = _fit(_split_stream(3, lambda w: w >= 2))
    assert list(tr.lifecycle_.columns) == [f.name for f in tracking_schemas()["lifecycle"]]
    row = tr.lifecycle_.iloc[0]
    assert row["event"] == "split" and row["stability"] == pytest.approx(1.0)
    assert row["p_value"] <= 0.01       # its parts are new kinds of users (reported)


def test_split_undone_by_a_merge_is_transient():
    tr = _fit(_split_stream(4, lambda w: w == 2))      # apart for one window only
    allev = tr.lifecycle_candidates_
    assert allev["event"].tolist() == ["split", "merge"]
    assert allev["reason"].tolist() == ["transient: merge at snapshot 3",
                                        "transient: split at snapshot 2"]
    assert tr.lifecycle_.empty
    # with hysteresis the stable split of the same users four windows apart is reported
    s2 = _split_stream(6, lambda w: 2 <= w < 5)
    kinds = [(int(r.snapshot), r.event) for r in _fit(s2).lifecycle_.itertuples()]
    assert kinds == [(2, "split"), (5, "merge")]


def test_segment_resolved_by_more_users_is_not_new():
    """A theme held by the same share of users all along gets its own segment only once
    there are enough of them (here: more users overall, the same 1 in 15 on theme c). The
    appearance is the clustering's, not the users', so it is not reported."""
    top = _topics(3)
    s = _Stream(noise=0.2)
    for w in range(3):
        scale = 1 if w < 2 else 5
        s.add(w, _users("a", 28 * scale), top[0])
        s.add(w, _users("b", 28 * scale), top[1])
        s.add(w, _users("c", 4 * scale), top[2])       # 4 (< min_segment_size), then 20
    tr = _fit(s, min_segment_size=5)
    raw = tr.lifecycle_candidates_
    app = raw[raw["event"] == "appear"]
    assert len(app) == 1 and app["p_value"].iloc[0] > 0.01
    assert tr.lifecycle_[tr.lifecycle_["event"] == "appear"].empty


def test_part_window_at_the_end_is_left_out_not_read_as_vanishing(caplog):
    top = _topics(3)
    s = _Stream()
    groups = [_users(g, 12) for g in "abc"]
    for w in range(3):
        for g, d in zip(groups, top):
            s.add(w, g, d)
    v, u, t = s.arrays()
    # one more event, one day into a fourth window: the data ends there
    v = np.vstack([v, v[:1]])
    u = np.append(u, u[0])
    origin = np.floor(t.min() / DAY) * DAY                # windows start at the first day
    t = np.append(t, origin + 3 * 30 * DAY + 0.5 * DAY)
    with caplog.at_level("WARNING", logger="interestflow.dynamics"):
        tr = SegmentTracker(random_state=0).fit(v, u, t)
    assert tr.n_snapshots_ == 3
    assert len(tr.dropped_windows_) == 1
    gone = tr.dropped_windows_[0]
    assert gone["n_events"] == 1 and gone["coverage"] == pytest.approx(0.5 / 30, abs=0.01)
    assert "left out of tracking with its 1 events" in caplog.text
    assert tr.windows_["coverage"].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=0.05)
    assert tr.lifecycle_candidates_.empty            # nothing "vanishes"
    # min_coverage=0 keeps it, and the part-window reads as two segments vanishing
    kept = SegmentTracker(random_state=0, min_coverage=0).fit(v, u, t)
    assert kept.n_snapshots_ == 4 and kept.windows_["coverage"].iloc[-1] < 0.05
    assert (kept.lifecycle_candidates_["event"] == "vanish").sum() == 2


def test_the_only_segment_of_a_snapshot_is_not_reported_vanishing():
    """A snapshot of one segment (a few users) followed by one of three: the single
    segment's "vanishing" is K growing; with nothing to be separate from it has no
    stability and is not reported, however small its p-value."""
    top = _topics(4)
    s = _Stream(noise=0.1)
    s.add(0, _users("z", 12), top[3])
    for g, d in zip("abc", top):
        s.add(1, _users(g, 12), d)
    tr = _fit(s)
    cand = tr.lifecycle_candidates_
    assert tr.windows_["n_segments"].tolist() == [1, 3]
    van = cand[cand["event"] == "vanish"]
    assert len(van) == 1 and np.isnan(van["stability"].iloc[0])
    assert van["p_value"].iloc[0] < 1e-6
    assert van["reason"].iloc[0].startswith("alone in its snapshot")
    assert "vanish" not in tr.lifecycle_["event"].tolist()


def test_trends_name_the_item_and_keyword_rising_inside_a_segment():
    top = _topics(2)
    s = _Stream(per_window=2)
    a, b = _users("a", 30), _users("b", 30)
    for w in range(3):
        s.add(w, a, top[0])
        s.add(w, b, top[1])
    v, u, t = s.arrays()
    win = (t // (30 * DAY)).astype(int)
    rng = np.random.default_rng(1)
    items = np.array([f"i{rng.integers(20)}" for _ in range(len(u))], dtype=object)
    texts = np.array(["plain words here"] * len(u), dtype=object)
    # in window 2, 20 of a's 30 users buy item "hot" and write about "theremin"
    first = {}
    for r in range(len(u)):
        if win[r] == 2 and u[r].startswith("a") and int(u[r][1:]) < 20 and u[r] not in first:
            first[u[r]] = r
    for r in first.values():
        items[r], texts[r] = "hot", "my new theremin"
    items[np.flatnonzero((win == 0) & (u == "a00"))[0]] = "hot"   # one early buyer
    items[np.flatnonzero(win == 1)[:3]] = None                     # events without an item
    tr = SegmentTracker(random_state=0).fit(v, u, t, texts=list(texts), item_ids=items)
    seg_a = _id_of(tr, 2, "a00")
    got = tr.trends_
    assert set(got["segment_id"]) == {seg_a} and set(got["snapshot"]) == {2}
    row = got[(got["kind"] == "item")].iloc[0]
    assert row["key"] == "hot" and row["share"] == pytest.approx(20 / 30)
    assert row["previous_share"] == 0.0 and row["n_users"] == 20 and row["p_value"] < 1e-6
    assert row["label"] == "plain words here"       # the text of the first event naming it
    words = got[got["kind"] == "keyword"]["key"].tolist()
    assert "theremin" in words and "plain" not in words
    assert len(got[got["kind"] == "item"]) == 1          # random items do not "rise"
    # the table is written with the others
    assert "trends" in tr.tables() and list(got.columns) == [
        f.name for f in tracking_schemas()["trends"]]


def test_two_part_windows_keep_the_better_covered_one():
    v = np.eye(4, DIM, dtype=np.float32)[[0, 1, 0, 1]]
    users = ["a", "b", "a", "b"]
    day = pd.Timestamp("2024-01-01", tz="UTC").value / 1e9
    ts = np.array([19, 19, 35, 35]) * DAY + day              # 2024-01-20 and 2024-02-05
    tr = SegmentTracker(freq="30D", origin="2024-01-01", n_segments=2).fit(v, users, ts)
    assert tr.n_snapshots_ == 1 and len(tr.dropped_windows_) == 1
    assert tr.windows_["coverage"].iloc[0] == pytest.approx(11 / 30, abs=0.01)
