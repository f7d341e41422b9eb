"""interestflow.KMeans (torch backend) against scikit-learn, and the torch reference ops."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SKKMeans
from sklearn.cluster import kmeans_plusplus
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import check_estimator

from interestflow.kernels.reference import cosine_topk, kmeans_assign, kmeans_update
from interestflow.kmeans import KMeans, _kmeans_plusplus
from interestflow.kmeans import kmeans_plusplus as if_kmeans_plusplus

# Same reason scikit-learn gives for its own KMeans: the check shuffles the weighted data, so
# the random init draws other points than for the repeated data.
EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data": (
        "sample_weight is not equivalent to removing/repeating samples: the check shuffles "
        "the weighted rows, so seeding picks different rows (scikit-learn's KMeans xfails it too)"
    ),
}


def _mixture(n, dim, k, spread, seed, dtype=np.float64):
    rng = np.random.RandomState(seed)
    centers = rng.randn(k, dim) * spread
    return (centers[rng.randint(0, k, n)] + rng.randn(n, dim)).astype(dtype)


# ------------------------------------------------------------------------- estimator API


def test_check_estimator_passes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        results = check_estimator(KMeans(max_iter=20, device="cpu"),
                                  expected_failed_checks=EXPECTED_FAILED, on_fail=None,
                                  on_skip=None)
    failed = {r["check_name"]: repr(r["exception"]) for r in results
              if r["status"] == "failed"}
    assert failed == {}
    statuses = {r["check_name"]: r["status"] for r in results}
    assert statuses["check_clustering"] == "passed"
    assert statuses["check_fit2d_1sample"] == "passed"
    assert len([s for s in statuses.values() if s == "passed"]) >= 50


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_labels_as_sklearn_on_separated_blobs(dtype):
    X = _mixture(600, 5, 6, spread=10.0, seed=0, dtype=dtype)
    init, _ = kmeans_plusplus(X, 6, random_state=0)
    ref = SKKMeans(6, init=init, n_init=1).fit(X)
    ours = KMeans(6, init=init, device="cpu").fit(X)
    assert adjusted_rand_score(ref.labels_, ours.labels_) == 1.0
    assert ours.cluster_centers_.dtype == dtype
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_,
                               rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)
    np.testing.assert_array_equal(ours.predict(X), ours.labels_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inertia_matches_sklearn_on_overlapping_mixture(dtype):
    # 5k x 64 with heavily overlapping components: many Lloyd iterations, labels keep moving.
    X = _mixture(5000, 64, 30, spread=0.6, seed=1, dtype=dtype)
    init, _ = kmeans_plusplus(X, 30, random_state=1)
    ref = SKKMeans(30, init=init, n_init=1, max_iter=300).fit(X)
    ours = KMeans(30, init=init, max_iter=300, device="cpu").fit(X)
    assert ours.n_iter_ > 5
    assert abs(ours.inertia_ / ref.inertia_ - 1) < 5e-3
    assert adjusted_rand_score(ref.labels_, ours.labels_) > 0.95
    # inertia_ is consistent with the fitted centers and labels
    direct = ((X.astype(np.float64) - ours.cluster_centers_[ours.labels_]) ** 2).sum()
    assert ours.inertia_ == pytest.approx(direct, rel=1e-5)


@pytest.mark.parametrize("tol", [3.0, 1.0, 1e-4, 0.0])
def test_tol_is_relative_to_feature_variance_like_sklearn(tol):
    # Offset and scaled data: the tolerance scales with the variance, centering keeps float32
    # distances accurate far from the origin.
    X = _mixture(3000, 16, 20, spread=0.6, seed=2) * 5 + 100
    init, _ = kmeans_plusplus(X, 20, random_state=1)
    for dtype in (np.float64, np.float32):
        ref = SKKMeans(20, init=init, n_init=1, max_iter=300, tol=tol).fit(X.astype(dtype))
        ours = KMeans(20, init=init, max_iter=300, tol=tol, device="cpu").fit(X.astype(dtype))
        assert ours.n_iter_ == ref.n_iter_
        assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)


@pytest.mark.parametrize("n,dim,k", [(37, 1, 5), (1000, 7, 13), (101, 3, 101), (250, 17, 1)])
def test_odd_shapes_match_sklearn(n, dim, k):
    X = np.random.RandomState(n + dim).randn(n, dim)
    init, _ = kmeans_plusplus(X, k, random_state=2)
    ref = SKKMeans(k, init=init, n_init=1).fit(X)
    ours = KMeans(k, init=init, device="cpu").fit(X)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=5e-3, abs=1e-9)
    assert ours.labels_.shape == (n,) and ours.cluster_centers_.shape == (k, dim)
    if k == n:  # every point is its own cluster
        assert ours.inertia_ == pytest.approx(0.0, abs=1e-9)
        assert sorted(ours.labels_.tolist()) == list(range(n))


def test_kmeans_plusplus_picks_the_same_rows_as_sklearn():
    X = _mixture(2000, 8, 12, spread=2.0, seed=3)
    Xt = torch.from_numpy(X - X.mean(0))
    _, idx = _kmeans_plusplus(Xt, (Xt * Xt).sum(1), torch.ones(len(X), dtype=torch.float64),
                              12, np.random.RandomState(7))
    _, ref_idx = kmeans_plusplus(X, 12, random_state=7)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    ref = SKKMeans(12, n_init=1, random_state=7).fit(X)
    ours = KMeans(12, random_state=7, device="cpu").fit(X)
    assert adjusted_rand_score(ref.labels_, ours.labels_) == 1.0
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)


def test_kmeans_plusplus_continues_from_initial_centers_and_draws_uniformly():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [-5.0, 5.0], [-5.1, 5.0]])
    centers, idx = if_kmeans_plusplus(X, 3, initial_centers=[[0.05, 0.0]], random_state=0)
    assert idx[0] == -1 and centers[0].tolist() == [0.05, 0.0]
    assert sorted(int(i) // 2 for i in idx[1:]) == [1, 2]  # one seed in each far pair
    np.testing.assert_array_equal(centers[1:], X[idx[1:]])
    # as many initial centers as clusters: returned as given, no draw
    rs = np.random.RandomState(3)
    centers, idx = if_kmeans_plusplus(X, 2, initial_centers=X[[4, 2]], random_state=rs)
    assert idx.tolist() == [-1, -1] and centers.tolist() == X[[4, 2]].tolist()
    assert rs.randint(10 ** 6) == np.random.RandomState(3).randint(10 ** 6)
    # "uniform": the first center is random_state.randint(n_samples)
    _, idx = if_kmeans_plusplus(X, 1, random_state=11, first_center="uniform")
    assert idx.tolist() == [np.random.RandomState(11).randint(6)]
    # every row already a center: "uniform" draws a row by randint, "weighted" takes row 0
    D = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    _, idx = if_kmeans_plusplus(D, 3, initial_centers=D[[0, 2]], random_state=4,
                                first_center="uniform")
    assert idx.tolist() == [-1, -1, np.random.RandomState(4).randint(3, size=1)[0]]
    _, idx = if_kmeans_plusplus(D, 3, initial_centers=D[[0, 2]], random_state=4)
    assert idx.tolist() == [-1, -1, 0]
    with pytest.raises(ValueError, match=r"initial_centers must have shape \(n_initial, 2\)"):
        if_kmeans_plusplus(X, 2, initial_centers=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="initial_centers contains NaN"):
        if_kmeans_plusplus(X, 2, initial_centers=[[np.nan, 0.0]])
    with pytest.raises(ValueError, match=r"n_clusters=1 is invalid; pass an integer in \[2, 8\]"):
        if_kmeans_plusplus(X, 1, initial_centers=X[:2])
    with pytest.raises(ValueError, match="first_center='first'"):
        if_kmeans_plusplus(X, 2, first_center="first")


def test_random_init_and_reproducibility():
    X = _mixture(500, 4, 5, spread=4.0, seed=4)
    a = KMeans(5, init="random", random_state=11, device="cpu").fit(X)
    b = KMeans(5, init="random", random_state=11, device="cpu").fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert len(np.unique(a.labels_)) == 5


def test_n_init_keeps_the_lowest_inertia():
    X = _mixture(400, 3, 8, spread=1.0, seed=5)
    # One RandomState consumed run after run reproduces the n_init sequence of draws.
    rs = np.random.RandomState(0)
    singles = [KMeans(8, init="random", random_state=rs, device="cpu").fit(X).inertia_
               for _ in range(4)]
    assert len(set(singles)) > 1  # the runs differ, so the choice matters
    best = KMeans(8, init="random", n_init=4, random_state=0, device="cpu").fit(X)
    assert best.inertia_ == pytest.approx(min(singles), rel=1e-12)


def test_dtypes_float32_float64_int():
    X = _mixture(300, 4, 3, spread=5.0, seed=6)
    init = X[:3].copy()
    c64 = KMeans(3, init=init, device="cpu").fit(X).cluster_centers_
    c32 = KMeans(3, init=init, device="cpu").fit(X.astype(np.float32)).cluster_centers_
    cint = KMeans(3, init=np.round(init), device="cpu").fit(np.round(X).astype(np.int64))
    assert c64.dtype == np.float64 and c32.dtype == np.float32
    assert cint.cluster_centers_.dtype == np.float64
    np.testing.assert_allclose(c32, c64, rtol=1e-4, atol=1e-4)


def test_sample_weight_matches_sklearn():
    X = _mixture(400, 3, 4, spread=3.0, seed=8)
    w = np.random.RandomState(0).randint(0, 4, len(X)).astype(np.float64)
    init = X[[0, 50, 100, 150]]
    ref = SKKMeans(4, init=init, n_init=1).fit(X, sample_weight=w)
    ours = KMeans(4, init=init, device="cpu").fit(X, sample_weight=w)
    assert adjusted_rand_score(ref.labels_, ours.labels_) == 1.0
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
    assert ours.score(X, sample_weight=w) == pytest.approx(-ours.inertia_, rel=1e-9)


def test_transform_score_and_torch_in_torch_out():
    X = _mixture(200, 6, 4, spread=3.0, seed=9, dtype=np.float32)
    km = KMeans(4, random_state=0, device="cpu").fit(X)
    d = km.transform(X)
    brute = np.sqrt(((X[:, None, :].astype(np.float64) - km.cluster_centers_[None]) ** 2).sum(-1))
    np.testing.assert_allclose(d, brute, rtol=1e-4, atol=1e-4)
    assert km.score(X) == pytest.approx(-km.inertia_, rel=1e-4)
    Xt = torch.from_numpy(X)
    labels_t = km.predict(Xt)
    assert torch.is_tensor(labels_t) and labels_t.dtype == torch.int64
    np.testing.assert_array_equal(labels_t.numpy(), km.labels_)
    assert torch.is_tensor(km.transform(Xt))
    fp = KMeans(4, random_state=0, device="cpu").fit_predict(Xt)
    assert torch.is_tensor(fp)
    np.testing.assert_array_equal(fp.numpy(), km.labels_)
    assert km.get_feature_names_out().tolist() == [f"kmeans{i}" for i in range(4)]


def test_empty_cluster_is_reseeded_from_the_farthest_point():
    # All points go to center 0; center 1 (at 100) is empty after the first assignment.
    # Farthest from center 0 are rows 1 and 2 (distance^2 4, a tie): the lower row wins.
    X = np.array([[0.0], [-2.0], [2.0], [0.5], [-0.5]])
    init = np.array([[0.0], [100.0]])
    km = KMeans(2, init=init, max_iter=1, device="cpu").fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, [[0.5], [-2.0]])
    np.testing.assert_array_equal(km.labels_, [0, 1, 0, 0, 0])
    again = KMeans(2, init=init, max_iter=1, device="cpu").fit(X)
    np.testing.assert_array_equal(again.cluster_centers_, km.cluster_centers_)
    full = KMeans(2, init=init, device="cpu").fit(X)  # already converged: same clustering
    np.testing.assert_array_equal(full.labels_, [0, 1, 0, 0, 0])
    assert full.inertia_ == 0.25 + 2.25 + 0.0 + 1.0


def test_empty_cluster_skips_zero_weight_points():
    X = np.array([[0.0], [-9.0], [2.0], [0.5], [-0.5]])
    w = np.array([1.0, 0.0, 1.0, 1.0, 1.0])
    km = KMeans(2, init=np.array([[0.0], [100.0]]), max_iter=1, device="cpu")
    km.fit(X, sample_weight=w)
    # row 1 is farthest but weighs nothing; row 2 (x=2) is taken instead
    np.testing.assert_allclose(km.cluster_centers_, [[0.0], [2.0]], atol=1e-12)


def test_auto_backend_logs_its_choice(caplog):
    X = _mixture(50, 2, 2, spread=5.0, seed=10)
    with caplog.at_level(logging.INFO, logger="interestflow.kmeans"):
        km = KMeans(2, random_state=0).fit(X)
    lines = [r.getMessage() for r in caplog.records if r.name == "interestflow.kmeans"]
    assert len(lines) == 1 and "'torch'" in lines[0] and km.device_ in lines[0]
    assert km.backend_ == "torch"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="interestflow.kmeans"):
        KMeans(2, random_state=0, backend="torch").fit(X)
    assert not [r for r in caplog.records if r.name == "interestflow.kmeans"]


def test_device_resolution_follows_input(monkeypatch, caplog):
    import interestflow.kmeans as km_mod

    calls = []

    def fake_resolve(device):
        calls.append(device)
        return torch.device("cpu")

    monkeypatch.setattr(km_mod, "resolve_device", fake_resolve)
    X = _mixture(40, 2, 2, spread=5.0, seed=13, dtype=np.float32)
    with caplog.at_level(logging.INFO, logger="interestflow.kmeans"):
        KMeans(2, random_state=0).fit(X)  # numpy: the resolver decides
    assert calls == [None] and "no CUDA device is visible" in caplog.text
    calls.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="interestflow.kmeans"):
        KMeans(2, random_state=0).fit(torch.from_numpy(X))  # tensor: stays where it is
    assert calls == [] and "input tensor is on cpu" in caplog.text
    KMeans(2, random_state=0, device="cpu").fit(X)
    assert calls == ["cpu"]


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("params,exc,words", [
    (dict(n_clusters=0), ValueError, ["n_clusters=0"]),
    (dict(n_clusters=2.5), TypeError, ["n_clusters"]),
    (dict(n_init=0), ValueError, ["n_init=0"]),
    (dict(max_iter=0), ValueError, ["max_iter=0"]),
    (dict(tol=-1.0), ValueError, ["tol=-1.0"]),
    (dict(tol="small"), TypeError, ["tol"]),
    (dict(init="kmeans"), ValueError, ["init='kmeans'", "'k-means++'", "'random'"]),
    (dict(init=np.zeros((2, 3))), ValueError, ["init", "(2, 3)", "(3, 2)"]),
    (dict(init=len), TypeError, ["init"]),
    (dict(backend="gpu"), ValueError, ["backend='gpu'", "'auto'", "'torch'", "'numba'",
                                       "'triton'", "'cuml'", "'faiss'"]),
    (dict(backend=3), TypeError, ["backend"]),
    (dict(random_state="seed"), ValueError, ["random_state"]),
    (dict(device="tpu"), ValueError, ["device='tpu'"]),
])
def test_bad_params_raise_naming_the_parameter(params, exc, words):
    X = np.random.RandomState(0).randn(20, 2)
    est = KMeans(**{"n_clusters": 3, **params})  # __init__ never validates
    with pytest.raises(exc) as info:
        est.fit(X)
    for word in words:
        assert word in str(info.value)


def test_too_many_clusters_names_both_numbers():
    with pytest.raises(ValueError, match=r"n_samples=4 should be >= n_clusters=5"):
        KMeans(5).fit(np.zeros((4, 2)))


def test_bad_data_and_weights_name_the_row():
    X = np.random.RandomState(0).randn(10, 3)
    X[6, 2] = np.nan
    with pytest.raises(ValueError, match="row 6, column 2"):
        KMeans(2, device="cpu").fit(X)
    with pytest.raises(ValueError, match="row 6"):
        KMeans(2, device="cpu").fit(torch.from_numpy(X))
    X[6, 2] = 0.0
    with pytest.raises(ValueError, match="sample_weight.*row 3"):
        KMeans(2, device="cpu").fit(X, sample_weight=[1, 1, 1, -1, 1, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(10,\)"):
        KMeans(2, device="cpu").fit(X, sample_weight=np.ones(9))
    km = KMeans(2, device="cpu").fit(X)
    with pytest.raises(ValueError, match="X has 2 features, but KMeans is expecting 3"):
        km.predict(torch.zeros(4, 2))


# ------------------------------------------------------------------- reference: k-means


def _brute_assign(x, c):
    d = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1), d.min(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,dim,k", [(1, 3, 1), (257, 1, 7), (1000, 33, 19)])
def test_kmeans_assign_chunked_equals_unchunked_and_brute_force(dtype, n, dim, k):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, dim, generator=g, dtype=dtype)
    c = torch.randn(k, dim, generator=g, dtype=dtype)
    lab, d = kmeans_assign(x, c)
    for rows in (1, 7, 64):
        lab_c, d_c = kmeans_assign(x, c, chunk_rows=rows)
        assert torch.equal(lab_c, lab)
        torch.testing.assert_close(d_c, d)
    ref_lab, ref_d = _brute_assign(x.numpy(), c.numpy())
    np.testing.assert_array_equal(lab.numpy(), ref_lab)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(d.numpy(), ref_d, rtol=tol, atol=tol)
    assert lab.dtype == torch.int64 and d.dtype == dtype


def test_kmeans_assign_ties_go_to_lower_index():
    x = torch.tensor([[0.0], [1.0]])
    c = torch.tensor([[1.0], [-1.0], [1.0]])  # rows 0 and 2 identical
    lab, d = kmeans_assign(x, c)
    assert lab.tolist() == [0, 0]
    assert d.tolist() == [1.0, 0.0]


def test_kmeans_update_sums_and_counts():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    labels = torch.tensor([2, 0, 2, 2])
    sums, counts = kmeans_update(x, labels, 4)
    assert sums.tolist() == [[3.0, 4.0], [0.0, 0.0], [13.0, 16.0], [0.0, 0.0]]
    assert counts.tolist() == [1.0, 0.0, 3.0, 0.0]
    w = torch.tensor([0.5, 2.0, 0.0, 1.0])
    sums_w, counts_w = kmeans_update(x, labels, 4, w)
    assert sums_w.tolist() == [[6.0, 8.0], [0.0, 0.0], [7.5, 9.0], [0.0, 0.0]]
    assert counts_w.tolist() == [2.0, 0.0, 1.5, 0.0]
    with pytest.raises(ValueError, match="labels must have shape"):
        kmeans_update(x, labels[:3], 4)


# ------------------------------------------------------------------ reference: cosine top-k


def _brute_topk(q, keys, k, normalized):
    q = q.astype(np.float64)
    keys = keys.astype(np.float64)
    if not normalized:
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        keys = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
    s = q @ keys.T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, 1), idx


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_cosine_topk_ties_with_duplicate_keys(chunk):
    # Small integer vectors: every dot product is exact, so ties are exact ties; duplicates sit
    # on both sides of chunk boundaries.
    keys = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1], [2, 2, 0], [0, 1, 0], [1, 0, 1],
                     [2, 2, 0], [0, 0, 1]], dtype=np.float32)
    q = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=np.float32)
    for k in (1, 2, 3, 5, len(keys)):
        s, i = cosine_topk(torch.from_numpy(q), torch.from_numpy(keys), k, normalized=True,
                           chunk=chunk)
        ref_s, ref_i = _brute_topk(q, keys, k, normalized=True)
        np.testing.assert_array_equal(i.numpy(), ref_i)
        np.testing.assert_array_equal(s.numpy(), ref_s.astype(np.float32))
    s, i = cosine_topk(torch.from_numpy(q[:1]), torch.from_numpy(keys), 3, normalized=True,
                       chunk=chunk)
    assert i.tolist() == [[0, 2, 3]] and s.tolist() == [[2.0, 2.0, 2.0]]


@pytest.mark.parametrize("chunk", [1, 2, 50])
def test_cosine_topk_dim_one_is_all_ties(chunk):
    keys = np.array([[3.0], [-1.0], [0.5], [-2.0], [7.0]], dtype=np.float32)
    q = np.array([[2.0], [-0.1]], dtype=np.float32)
    s, i = cosine_topk(torch.from_numpy(q), torch.from_numpy(keys), 5, chunk=chunk)
    assert i.tolist() == [[0, 2, 4, 1, 3], [1, 3, 0, 2, 4]]
    assert s.tolist() == [[1.0, 1.0, 1.0, -1.0, -1.0], [1.0, 1.0, -1.0, -1.0, -1.0]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nq,nk,dim,k", [(1, 97, 5, 1), (13, 97, 5, 97), (7, 300, 384, 10)])
def test_cosine_topk_matches_brute_force(dtype, nq, nk, dim, k):
    g = torch.Generator().manual_seed(nk + k)
    q = torch.randn(nq, dim, generator=g, dtype=dtype) * 3
    keys = torch.randn(nk, dim, generator=g, dtype=dtype)
    ref_s, ref_i = _brute_topk(q.numpy(), keys.numpy(), k, normalized=False)
    for chunk in (16, 4096):
        s, i = cosine_topk(q, keys, k, chunk=chunk)
        assert s.dtype == dtype and i.dtype == torch.int64 and s.shape == (nq, k)
        np.testing.assert_array_equal(i.numpy(), ref_i)
        np.testing.assert_allclose(s.numpy(), ref_s, rtol=1e-5, atol=1e-6)


def test_cosine_topk_bad_input():
    q, keys = torch.randn(2, 4), torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"k=4 exceeds the number of keys \(3\)"):
        cosine_topk(q, keys, 4)
    with pytest.raises(ValueError, match="k=0"):
        cosine_topk(q, keys, 0)
    with pytest.raises(ValueError, match="dim"):
        cosine_topk(q, torch.randn(3, 5), 1)
    with pytest.raises(ValueError, match="chunk=0"):
        cosine_topk(q, keys, 1, chunk=0)


# ------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
def test_cuda_fit_matches_cpu():
    X = _mixture(3000, 32, 10, spread=1.0, seed=12, dtype=np.float32)
    init, _ = kmeans_plusplus(X, 10, random_state=0)
    cpu = KMeans(10, init=init, device="cpu").fit(X)
    gpu = KMeans(10, init=init, device="cuda").fit(X)
    assert gpu.device_.startswith("cuda")
    assert adjusted_rand_score(cpu.labels_, gpu.labels_) > 0.99
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-4)
    Xc = torch.from_numpy(X).cuda()
    out = gpu.predict(Xc)
    assert out.device.type == "cuda"
    np.testing.assert_array_equal(out.cpu().numpy(), gpu.predict(X))
    s, i = cosine_topk(Xc[:5], Xc, 7)
    s_cpu, i_cpu = cosine_topk(torch.from_numpy(X[:5]), torch.from_numpy(X), 7)
    assert torch.equal(i.cpu(), i_cpu)
    torch.testing.assert_close(s.cpu(), s_cpu, rtol=1e-5, atol=1e-5)
