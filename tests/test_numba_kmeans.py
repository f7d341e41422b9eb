"""numba K-means kernels against the float64 torch reference, the bf16 certificate, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from interestflow.kernels import numba_kmeans as nk  # noqa: E402
from interestflow.kernels import reference  # noqa: E402
from interestflow.kernels._common import gamma as gamma_n  # noqa: E402
from interestflow.kernels.numba_kmeans import (  # noqa: E402
    assign_with_stats,
    kmeans_assign_numba,
    kmeans_update_numba,
)
from interestflow.kernels.tolerances import tolerance  # noqa: E402

from _kernel_checks import ODD_SHAPES  # noqa: E402

DTYPES = [torch.float32, torch.float64]
MODES = ["float32", "bfloat16"]


def _data(n, k, dim, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    c = torch.randn(k, dim, generator=g, dtype=torch.float64)
    return x.to(dtype), c.to(dtype)


def _check_against_reference(x, c, labels, min_sq, dtype):
    """Labels are the float64 argmin except within the dtype's tolerance; distances match."""
    atol, rtol = tolerance(dtype)
    ref_l, ref_d = reference.kmeans_assign(x.double(), c.double())
    assert labels.dtype == torch.int64 and labels.shape == ref_l.shape
    assert min_sq.dtype == dtype and min_sq.shape == ref_d.shape
    assert bool((min_sq >= 0).all())
    # the returned distance is the distance to the returned label, and it is (near) minimal
    own = ((x.double() - c.double()[labels]) ** 2).sum(1)
    torch.testing.assert_close(min_sq.double(), own, atol=atol, rtol=rtol)
    torch.testing.assert_close(min_sq.double(), ref_d, atol=atol, rtol=rtol)
    differ = labels != ref_l
    if bool(differ.any()):
        gap = own[differ] - ref_d[differ]
        assert bool((gap <= atol + rtol * ref_d[differ]).all())


# ------------------------------------------------------------------------------ assignment


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,dim", ODD_SHAPES)
def test_assign_matches_float64_reference(n, k, dim, dtype):
    x, c = _data(n, k, dim, dtype)
    results = {}
    for mode in MODES:
        labels, min_sq = kmeans_assign_numba(x, c, candidates=mode)
        _check_against_reference(x, c, labels, min_sq, dtype)
        results[mode] = (labels, min_sq)
    # the certified bf16 pass gives the exact path's labels and the same distances
    assert torch.equal(results["bfloat16"][0], results["float32"][0])
    assert torch.equal(results["bfloat16"][1], results["float32"][1])


def test_assign_labels_equal_exact_path_on_clustered_data():
    g = torch.Generator().manual_seed(3)
    centers = torch.nn.functional.normalize(torch.randn(40, 96, generator=g), dim=1)
    x = centers[torch.randint(0, 40, (3000,), generator=g)] + 0.3 * torch.randn(
        3000, 96, generator=g)
    x = torch.nn.functional.normalize(x, dim=1)
    c = x[:64].clone()
    exact_l, exact_d = kmeans_assign_numba(x, c, candidates="float32")
    l, d, stats = assign_with_stats(x, c, candidates="bfloat16")
    assert torch.equal(l, exact_l) and torch.equal(d, exact_d)
    assert stats["mode"] == "bfloat16" and stats["rows_bf16"] == 3000
    ref_l, _ = reference.kmeans_assign(x.double(), c.double())
    assert torch.equal(l, ref_l)


def test_ties_go_to_the_lower_centroid_index():
    c = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    x = torch.tensor([[0.0, 0.0], [0.0, 0.5], [2.0, 0.0], [0.5, 0.0], [-0.5, 0.0]])
    for dtype in DTYPES:
        for mode in MODES:
            labels, min_sq = kmeans_assign_numba(x.to(dtype), c.to(dtype), candidates=mode)
            # rows 0-1 are equidistant from centroids 0 and 1; rows 2-3 tie 0 and 2 (duplicates)
            assert labels.tolist() == [0, 0, 0, 0, 1], (dtype, mode)
            assert min_sq.tolist() == [1.0, 1.25, 1.0, 0.25, 0.25]


def test_bf16_certificate_fails_near_boundaries_and_labels_stay_exact():
    """Rows at 1e-5 of a Voronoi boundary: far below bf16 resolution, far above fp32's."""
    g = torch.Generator().manual_seed(7)
    dim, k = 384, 50
    c = torch.nn.functional.normalize(torch.randn(k, dim, generator=g), dim=1)
    n = 600
    a = torch.randint(0, k, (n,), generator=g)
    b = (a + 1 + torch.randint(0, k - 1, (n,), generator=g)) % k
    sign = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    eps = sign * (2e-6 + 8e-6 * torch.rand(n, generator=g))
    x = 0.5 * (c[a] + c[b]) + eps[:, None] * (c[b] - c[a])  # eps > 0: closer to b
    exact_l, exact_d = kmeans_assign_numba(x, c, candidates="float32")
    l, d, stats = assign_with_stats(x, c, candidates="bfloat16")
    assert torch.equal(l, exact_l) and torch.equal(d, exact_d)
    # the bf16 pass could not decide these rows on its own
    assert stats["rows_rescored"] + stats["rows_exact_fallback"] >= 0.9 * n
    ref_l, _ = reference.kmeans_assign(x.double(), c.double())
    expected = torch.where(eps > 0, b, a)
    assert torch.equal(ref_l, expected) and torch.equal(l, expected)


def test_bf16_exact_ties_fall_back_to_the_exact_path():
    """Exactly equidistant rows cannot be certified at either level: the exact path decides."""
    c = torch.zeros(4, 64)
    c[0, 0], c[1, 0], c[2, 1], c[3, 1] = 1.0, -1.0, 1.0, -1.0
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(50, 64)
    x[:, 2:] = torch.randn(50, 62, generator=g)  # orthogonal to every centroid: all four tie
    l, d, stats = assign_with_stats(x, c, candidates="bfloat16")
    assert l.tolist() == [0] * 50
    assert stats["rows_exact_fallback"] == 50
    torch.testing.assert_close(d, (x * x).sum(1) + 1.0)


def test_bf16_matmul_obeys_the_error_model_of_the_certificate():
    """The bound assumes oneDNN multiplies bf16 exactly and accumulates in fp32 before
    rounding once to bf16: check |out - x~.c~| <= gamma_d ||x~|| ||c~|| + u/(1-u) |out|."""
    g = torch.Generator().manual_seed(5)
    for n, k, dim in [(33, 17, 384), (8, 5, 4099), (64, 256, 1000)]:
        x = torch.randn(n, dim, generator=g) + 0.5  # offset: long sums with cancellation-free
        c = torch.randn(k, dim, generator=g) + 0.5  # growth, the worst case for accumulation
        xb, cb = x.bfloat16(), c.bfloat16()
        out = torch.mm(xb, cb.T).double()
        exact = xb.double() @ cb.double().T
        u = 2.0 ** -8
        gamma = gamma_n(dim, 2.0 ** -24)
        bound = (gamma * xb.double().norm(dim=1)[:, None] * cb.double().norm(dim=1)[None]
                 + u / (1 - u) * out.abs() + (2 * dim + 1) * 2.0 ** -126)
        assert bool(((out - exact).abs() <= bound).all()), (n, k, dim)


def test_auto_switches_to_exact_when_bf16_cannot_certify(monkeypatch):
    """Tight clusters far from the origin: bf16 rounding exceeds every gap."""
    import interestflow.resolve as resolve

    monkeypatch.setattr(nk, "TASK_BLOCK_BYTES", 2**18)  # 256 rows per task, 4096 per group
    g = torch.Generator().manual_seed(2)
    dim = 256
    c = 100.0 + 1e-3 * torch.randn(64, dim, generator=g)
    x = c[torch.randint(0, 64, (9000,), generator=g)] + 1e-4 * torch.randn(9000, dim,
                                                                        generator=g)
    exact_l, exact_d = kmeans_assign_numba(x, c, candidates="float32")
    l_b, d_b, s_b = assign_with_stats(x, c, candidates="bfloat16")
    assert torch.equal(l_b, exact_l) and torch.equal(d_b, exact_d)
    assert s_b["rows_exact_fallback"] > 0.9 * 9000 and not s_b["switched_to_exact"]
    monkeypatch.setattr(nk, "AUTO_BF16_MIN_WORK", 1)
    monkeypatch.setattr(resolve, "cpu_has_fast_bf16", lambda: True)
    l_a, d_a, s_a = assign_with_stats(x, c, candidates="auto")
    assert s_a["mode"] == "bfloat16" and s_a["switched_to_exact"]
    assert s_a["rows_bf16"] == 4096  # one group of 16 tasks of 256 rows, then the exact path
    assert torch.equal(l_a, exact_l) and torch.equal(d_a, exact_d)


def test_auto_choice(monkeypatch):
    import interestflow.resolve as resolve

    monkeypatch.setattr(resolve, "cpu_has_fast_bf16", lambda: True)
    assert nk._resolve_candidates("auto", 200_000, 256, 384) == "bfloat16"
    assert nk._resolve_candidates("auto", 100, 256, 384) == "float32"  # too small
    assert nk._resolve_candidates("auto", 10**7, 32, 384) == "float32"  # few clusters
    assert nk._resolve_candidates("auto", 10**7, 256, 16) == "float32"  # tiny dim
    assert nk._resolve_candidates("auto", 10**7, 64, 64) == "float32"  # small K * dim
    assert nk._resolve_candidates("auto", 10**7, 64, 384) == "bfloat16"
    assert nk._resolve_candidates("float32", 10**7, 256, 384) == "float32"
    monkeypatch.setattr(resolve, "cpu_has_fast_bf16", lambda: False)
    assert nk._resolve_candidates("auto", 200_000, 256, 384) == "float32"
    assert nk._resolve_candidates("bfloat16", 10, 2, 3) == "bfloat16"


@pytest.mark.parametrize("mode", MODES)
def test_assign_is_deterministic_and_accepts_views(mode):
    x, c = _data(2500, 70, 48, torch.float32, seed=4)
    a = kmeans_assign_numba(x, c, candidates=mode)
    b = kmeans_assign_numba(x, c, candidates=mode)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    wide = torch.cat([x, x], dim=1)[:, :48]  # non-contiguous view of the same values
    v = kmeans_assign_numba(wide, c, candidates=mode, x_sq_norms=(x * x).sum(1))
    assert torch.equal(a[0], v[0]) and torch.equal(a[1], v[1])


def test_assign_empty_input():
    labels, min_sq = kmeans_assign_numba(torch.zeros(0, 5), torch.ones(3, 5))
    assert labels.shape == (0,) and labels.dtype == torch.int64 and min_sq.shape == (0,)


# ------------------------------------------------------------------------------ update


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,dim", ODD_SHAPES)
def test_update_matches_float64_reference(n, k, dim, dtype):
    x, _ = _data(n, k, dim, dtype, seed=1)
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, k, (n,), generator=g)
    w = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    atol, rtol = tolerance(dtype)
    for weights in (None, w):
        sums, counts = kmeans_update_numba(x, labels, k, weights)
        ref_s, ref_c = reference.kmeans_update(x.double(), labels, k,
                                              None if weights is None else weights.double())
        assert sums.dtype == dtype and counts.dtype == dtype
        assert sums.shape == (k, dim) and counts.shape == (k,)
        torch.testing.assert_close(sums.double(), ref_s, atol=atol, rtol=rtol)
        torch.testing.assert_close(counts.double(), ref_c, atol=atol, rtol=rtol)


def test_update_empty_clusters_and_exact_counts():
    x = torch.arange(12, dtype=torch.float64).reshape(4, 3)
    labels = torch.tensor([2, 0, 2, 0])
    sums, counts = kmeans_update_numba(x, labels, 4)
    assert counts.tolist() == [2.0, 0.0, 2.0, 0.0]
    assert sums.tolist() == [[12.0, 14.0, 16.0], [0.0] * 3, [6.0, 8.0, 10.0], [0.0] * 3]
    w = torch.tensor([0.5, 2.0, 0.0, 1.0], dtype=torch.float64)
    sums, counts = kmeans_update_numba(x, labels, 4, w)
    assert counts.tolist() == [3.0, 0.0, 0.5, 0.0]
    assert sums.tolist() == [[15.0, 18.0, 21.0], [0.0] * 3, [0.0, 0.5, 1.0], [0.0] * 3]


def _with_threads(n, fn):
    """``fn()`` with torch's thread count (the kernels' worker count) set to ``n``."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(n)
        return fn()
    finally:
        torch.set_num_threads(before)


def test_update_is_bit_identical_across_runs_and_thread_counts():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(20_000, 37, generator=g) * 1e3
    labels = torch.randint(0, 7, (20_000,), generator=g)
    w = torch.rand(20_000, generator=g)
    first = kmeans_update_numba(x, labels, 7, w)
    others = [kmeans_update_numba(x, labels, 7, w)]
    others += [_with_threads(t, lambda: kmeans_update_numba(x, labels, 7, w)) for t in (1, 3)]
    for other in others:
        assert torch.equal(first[0], other[0]) and torch.equal(first[1], other[1])


@pytest.mark.parametrize("mode", MODES)
def test_assign_is_bit_identical_across_thread_counts(mode, monkeypatch):
    monkeypatch.setattr(nk, "TASK_BLOCK_BYTES", 2**16)  # many tasks per thread
    x, c = _data(3000, 40, 64, torch.float32, seed=6)
    before = torch.get_num_threads()
    runs = [_with_threads(t, lambda: kmeans_assign_numba(x, c, candidates=mode))
            for t in (1, 3, before)]
    assert torch.get_num_threads() == before  # the workers leave torch's setting as it was
    for other in runs[1:]:
        assert torch.equal(runs[0][0], other[0]) and torch.equal(runs[0][1], other[1])


# ------------------------------------------------------------------------------ bad input


def test_assign_rejects_bad_input():
    x, c = _data(5, 3, 4, torch.float32)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        kmeans_assign_numba(x.numpy(), c)
    with pytest.raises(TypeError, match="float32 or float64.*float16"):
        kmeans_assign_numba(x.half(), c.half())
    with pytest.raises(TypeError, match="x has dtype torch.float32 but centroids.*float64"):
        kmeans_assign_numba(x, c.double())
    with pytest.raises(ValueError, match="x has dim 4 but centroids has dim 3"):
        kmeans_assign_numba(x, c[:, :3])
    with pytest.raises(ValueError, match="2-D"):
        kmeans_assign_numba(x[0], c)
    with pytest.raises(ValueError, match="at least one row"):
        kmeans_assign_numba(x, c[:0])
    with pytest.raises(ValueError, match="candidates='fp8'.*'auto', 'bfloat16', 'float32'"):
        kmeans_assign_numba(x, c, candidates="fp8")
    with pytest.raises(ValueError, match=r"x_sq_norms must be a tensor of shape \(5,\)"):
        kmeans_assign_numba(x, c, x_sq_norms=torch.ones(4))
    bad = x.clone()
    bad[3, 1] = float("nan")
    for mode in MODES:
        with pytest.raises(ValueError, match="x row 3"):
            kmeans_assign_numba(bad, c, candidates=mode)
    bad_c = c.clone()
    bad_c[2, 0] = float("inf")
    with pytest.raises(ValueError, match="centroids row 2"):
        kmeans_assign_numba(x, bad_c)


def test_update_rejects_bad_input():
    x = torch.ones(4, 2)
    ok = torch.tensor([0, 1, 1, 0])
    with pytest.raises(ValueError, match=r"labels\[2\]=5 is outside \[0, n_clusters=2\)"):
        kmeans_update_numba(x, torch.tensor([0, 1, 5, 0]), 2)
    with pytest.raises(ValueError, match=r"labels\[1\]=-1"):
        kmeans_update_numba(x, torch.tensor([0, -1, 1, 0]), 2)
    with pytest.raises(TypeError, match="labels must be int64"):
        kmeans_update_numba(x, ok.int(), 2)
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        kmeans_update_numba(x, ok[:3], 2)
    with pytest.raises(TypeError, match="n_clusters must be an integer"):
        kmeans_update_numba(x, ok, 2.0)
    with pytest.raises(ValueError, match="n_clusters=0"):
        kmeans_update_numba(x, ok, 0)
    with pytest.raises(ValueError, match="sample_weight must be finite and >= 0; row 1"):
        kmeans_update_numba(x, ok, 2, torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="row 3"):
        kmeans_update_numba(x, ok, 2, torch.tensor([1.0, 1.0, 1.0, float("nan")]))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(4,\)"):
        kmeans_update_numba(x, ok, 2, torch.ones(3))
    with pytest.raises(TypeError, match="float32 or float64"):
        kmeans_update_numba(x.to(torch.bfloat16), ok, 2)


# ------------------------------------------------------------------------------ in KMeans


@pytest.mark.parametrize("force_bf16", [False, True])
def test_kmeans_numba_backend_matches_sklearn(monkeypatch, force_bf16):
    from sklearn.cluster import KMeans as SKKMeans
    from sklearn.metrics import adjusted_rand_score

    import interestflow.resolve as resolve
    from interestflow import KMeans

    if force_bf16:  # the certified bf16 pass inside the Lloyd loop, whatever this CPU is
        monkeypatch.setattr(nk, "AUTO_BF16_MIN_WORK", 1)
        monkeypatch.setattr(nk, "_AUTO_BF16_MIN_CLUSTERS_X_DIM", 1)
        monkeypatch.setattr(resolve, "cpu_has_fast_bf16", lambda: True)
    modes = []
    real = nk.assign_with_stats

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        modes.append(out[2]["mode"])
        return out

    monkeypatch.setattr(nk, "assign_with_stats", spy)
    rng = np.random.RandomState(0)
    centers = rng.randn(64, 64).astype(np.float32) * 2.0
    X = centers[rng.randint(0, 64, 4000)] + rng.randn(4000, 64).astype(np.float32)
    init = X[rng.choice(4000, 64, replace=False)]
    ref = SKKMeans(64, init=init, n_init=1, max_iter=30, tol=0.0, algorithm="lloyd").fit(X)
    ours = KMeans(64, init=init, n_init=1, max_iter=30, tol=0.0, backend="numba",
                  device="cpu").fit(X)
    assert ours.backend_ == "numba"
    assert modes and set(modes) == {"bfloat16" if force_bf16 else "float32"}
    assert adjusted_rand_score(ref.labels_, ours.labels_) > 0.99
    assert abs(ours.inertia_ - ref.inertia_) <= 0.005 * ref.inertia_


# ------------------------------------------------------------------------------ prepared rows


@pytest.mark.parametrize("dtype", DTYPES)
def test_prepared_bf16_rows_give_the_same_results(dtype):
    """rows=prepare_bf16_rows(x) only saves the rounding: labels, distances and stats equal
    a call that rounds the rows itself, for a few centroid sets (the Lloyd loop's use)."""
    x, c = _data(3001, 70, 96, dtype, seed=11)
    rows = nk.prepare_bf16_rows(x, 70, candidates="bfloat16")
    assert isinstance(rows, nk.BF16Rows) and rows.bits.shape == (3001, 96)
    for seed in range(3):
        c = c + 0.1 * _data(1, 70, 96, dtype, seed=seed)[1]
        got = assign_with_stats(x, c, candidates="bfloat16", rows=rows)
        want = assign_with_stats(x, c, candidates="bfloat16")
        assert got[2]["mode"] == "bfloat16" and got[2] == want[2]
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert torch.equal(got[0], kmeans_assign_numba(x, c, candidates="float32")[0])


def test_prepared_bf16_rows_are_checked_against_x():
    x, c = _data(500, 64, 64, torch.float32, seed=12)
    rows = nk.prepare_bf16_rows(x, 64, candidates="bfloat16")
    other = x.clone()
    with pytest.raises(ValueError, match="another x"):
        kmeans_assign_numba(other, c, candidates="bfloat16", rows=rows)
    with pytest.raises(ValueError, match="another x"):
        kmeans_assign_numba(x[:400], c, candidates="bfloat16", rows=rows)
    x.mul_(2.0)  # an in-place change: the prepared rounding is stale
    with pytest.raises(ValueError, match="modified in place"):
        kmeans_assign_numba(x, c, candidates="bfloat16", rows=rows)
    with pytest.raises(TypeError, match="rows must be a BF16Rows"):
        kmeans_assign_numba(x, c, rows=object())
    with pytest.raises(ValueError, match="C-contiguous"):
        nk.prepare_bf16_rows(x.T, 64, candidates="bfloat16")


def test_prepare_bf16_rows_is_none_when_the_assignment_would_not_use_bf16(monkeypatch):
    x, _ = _data(100, 8, 16, torch.float32)
    assert nk.prepare_bf16_rows(x, 8, candidates="float32") is None
    assert nk.prepare_bf16_rows(x, 8) is None  # "auto": far too small for bf16
    assert nk.prepare_bf16_rows(x[:0], 8, candidates="bfloat16") is None


def test_kmeans_numba_fit_prepares_the_rows_once(monkeypatch):
    """A fit rounds the rows once (shared by its n_init runs) and equals a fit without it."""
    import interestflow.resolve as resolve
    from interestflow import KMeans

    monkeypatch.setattr(nk, "AUTO_BF16_MIN_WORK", 1)
    monkeypatch.setattr(nk, "_AUTO_BF16_MIN_CLUSTERS_X_DIM", 1)
    monkeypatch.setattr(resolve, "cpu_has_fast_bf16", lambda: True)
    rng = np.random.RandomState(1)
    X = (rng.randn(64, 64) * 2.0)[rng.randint(0, 64, 3000)] + rng.randn(3000, 64)
    X = X.astype(np.float32)
    calls = []
    real = nk.prepare_bf16_rows
    monkeypatch.setattr(nk, "prepare_bf16_rows",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    ours = KMeans(64, n_init=3, max_iter=20, tol=0.0, backend="numba", device="cpu",
                  random_state=0).fit(X)
    assert len(calls) == 1
    monkeypatch.setattr(nk, "prepare_bf16_rows", lambda *a, **kw: None)
    plain = KMeans(64, n_init=3, max_iter=20, tol=0.0, backend="numba", device="cpu",
                   random_state=0).fit(X)
    np.testing.assert_array_equal(ours.labels_, plain.labels_)
    np.testing.assert_array_equal(ours.cluster_centers_, plain.cluster_centers_)
    assert ours.inertia_ == plain.inertia_ and ours.n_iter_ == plain.n_iter_
