"""Triton kernels against the float64 torch reference.

Without CUDA the kernels run on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``,
set here before Triton is imported), so their logic is checked on every CI run; shapes stay
small because the interpreter is slow. With CUDA the same tests run compiled on the GPU, and
the ``gpu`` test adds larger sizes and indices past 2**31 elements.
"""

import os
import subprocess
import sys

import torch

if not torch.cuda.is_available():
    # Must happen before triton is imported: @triton.jit picks the interpreter at decoration.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest.importorskip("triton", reason="triton is not installed (the 'gpu' extra installs it)")

from _kernel_checks import ODD_SHAPES, assert_topk_matches  # noqa: E402

from interestflow.kernels import reference  # noqa: E402
from interestflow.kernels import _triton_config as cfg  # noqa: E402
from interestflow.kernels import triton_cosine, triton_kmeans  # noqa: E402
from interestflow.kernels.tolerances import tolerance  # noqa: E402
from interestflow.kernels.triton_cosine import (  # noqa: E402
    MAX_K,
    cosine_topk_triton,
    row_norms_triton,
)
from interestflow.kernels.triton_kmeans import (  # noqa: E402
    kmeans_assign_triton,
    kmeans_update_triton,
)

if triton_cosine.INTERPRET:
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    pytest.skip("the Triton kernels were imported without TRITON_INTERPRET=1 and there is no "
                "CUDA device", allow_module_level=True)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


def _rand(shape, dtype, seed, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype).to(device)


def _split_config(n_q, n_keys, dim, k):
    """Many small key splits, so the cross-split merge is exercised on tiny inputs."""
    return cfg.cosine_topk_config(n_q, n_keys, dim, k, n_sm=64, min_tiles_per_split=1,
                                  block_n=16, interpret=triton_cosine.INTERPRET)


def assert_assign_matches(x, centroids, labels, dist, dtype):
    """Labels equal to the float64 reference except at near-ties; distances within tolerance."""
    atol, rtol = tolerance(dtype)
    xd, cd = x.cpu().double(), centroids.cpu().double()
    ref_l, ref_d = reference.kmeans_assign(xd, cd)
    labels, dist = labels.cpu(), dist.cpu()
    assert labels.dtype == torch.int64 and dist.dtype == torch.float32
    assert labels.shape == dist.shape == (x.shape[0],)
    # distances scale with the squared norms: tolerance relative to ||x||^2 + ||c||^2
    scale = (xd * xd).sum(1) + (cd * cd).sum(1).max()
    assert bool(((dist.double() - ref_d).abs() <= atol + rtol * scale).all())
    mismatch = labels != ref_l
    if bool(mismatch.any()):
        rows = mismatch.nonzero().flatten()
        chosen = ((xd[rows] - cd[labels[rows]]) ** 2).sum(1)
        assert bool(((chosen - ref_d[rows]).abs() <= atol + rtol * scale[rows]).all())


# ---------------------------------------------------------------------------------------------
# cosine top-k
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cosine_topk_matches_reference(shape, dtype):
    n_q, n_keys, dim = shape
    q = _rand((n_q, dim), dtype, 1)
    keys = _rand((n_keys, dim), dtype, 2)
    for k in sorted({1, min(5, n_keys)}):
        scores, idx = cosine_topk_triton(q, keys, k)
        assert scores.dtype == torch.float32 and scores.device == q.device
        assert_topk_matches(q, keys, k, scores, idx, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cosine_topk_k_equals_n_keys(dtype):
    for n_q, n_keys, dim in ODD_SHAPES:
        if n_keys > MAX_K:
            continue
        n_q = min(n_q, 40)
        q = _rand((n_q, dim), dtype, 3)
        keys = _rand((n_keys, dim), dtype, 4)
        scores, idx = cosine_topk_triton(q, keys, n_keys)
        assert_topk_matches(q, keys, n_keys, scores, idx, dtype)
        # every key exactly once
        assert torch.equal(idx.sort(1).values.cpu(), torch.arange(n_keys).expand(n_q, -1))


def test_cosine_topk_max_k():
    q = _rand((3, 16), torch.float32, 5)
    keys = _rand((200, 16), torch.float32, 6)
    scores, idx = cosine_topk_triton(q, keys, MAX_K)
    assert_topk_matches(q, keys, MAX_K, scores, idx, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_cosine_topk_across_key_splits(dtype):
    n_q, n_keys, dim = 6, 150, 24
    q = _rand((n_q, dim), dtype, 7)
    keys = _rand((n_keys, dim), dtype, 8)
    for k in (1, 20):
        config = _split_config(n_q, n_keys, dim, k)
        # some splits hold fewer keys than k: their empty slots must never surface
        assert config.n_splits > 1 and config.keys_per_split < 20
        scores, idx = cosine_topk_triton(q, keys, k, config=config)
        assert_topk_matches(q, keys, k, scores, idx, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("split", [False, True], ids=["one-split", "many-splits"])
def test_cosine_topk_exact_ties_go_to_lower_index(dtype, split):
    g = torch.Generator().manual_seed(9)
    base = torch.randn(5, 8, generator=g).to(dtype)
    q = torch.randn(4, 8, generator=g).to(dtype)
    # 150 keys, each one of 5 distinct rows: equal scores spread over tiles and splits
    which = torch.randint(0, 5, (150,), generator=g)
    keys = base[which]
    # Expected order built from the groups, not from a float64 top-k: BLAS may round two
    # identical columns differently, which would break the exact ties we are testing.
    group_s, group_order = reference.cosine_topk(q.double(), base.double(), 5)
    assert bool((group_s[:, :-1] - group_s[:, 1:] > 1e-4).all())  # guard on the test data
    expected = torch.stack([
        torch.cat([(which == b).nonzero().flatten() for b in group_order[r]])[:40]
        for r in range(4)
    ])
    config = _split_config(4, 150, 8, 40) if split else None
    scores, idx = cosine_topk_triton(q.to(DEVICE), keys.to(DEVICE), 40, config=config)
    assert torch.equal(idx.cpu(), expected)
    # equal keys give bit-identical scores
    s = scores.cpu()
    same_group = which[expected][:, 1:] == which[expected][:, :-1]
    assert bool(same_group.any())
    assert bool((s[:, 1:] == s[:, :-1])[same_group].all())


def test_cosine_topk_zero_rows_score_zero_and_tie_by_index():
    q = torch.zeros((2, 6), device=DEVICE)
    q[1, 0] = 1.0
    keys = torch.zeros((9, 6), device=DEVICE)
    keys[4, 0] = -2.0
    keys[7, 0] = 3.0
    scores, idx = cosine_topk_triton(q, keys, 4)
    # zero query: every score 0 (ties) -> lowest indices; zero keys score 0 against q[1]
    assert idx.cpu().tolist() == [[0, 1, 2, 3], [7, 0, 1, 2]]
    assert scores.cpu().tolist() == [[0.0] * 4, [1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cosine_topk_normalized_inputs(dtype):
    q = torch.nn.functional.normalize(_rand((9, 33), torch.float32, 10), dim=1).to(dtype)
    keys = torch.nn.functional.normalize(_rand((70, 33), torch.float32, 11), dim=1).to(dtype)
    scores, idx = cosine_topk_triton(q, keys, 7, normalized=True)
    # against the plain dot products of the given (rounded) rows
    ref_s, ref_i = torch.topk(q.cpu().double() @ keys.cpu().double().T, 7)
    atol, rtol = tolerance(dtype)
    torch.testing.assert_close(scores.cpu().double(), ref_s, atol=atol, rtol=rtol)
    true_s = (q.cpu().double()[:, None, :] * keys.cpu().double()[idx.cpu()]).sum(-1)
    torch.testing.assert_close(true_s, ref_s, atol=atol, rtol=rtol)


def test_cosine_topk_strided_rows_and_no_queries():
    wide_q = _rand((5, 40), torch.float32, 12)
    wide_k = _rand((50, 40), torch.float32, 13)
    q, keys = wide_q[:, :17], wide_k[:, 3:20]   # row stride 40, column stride 1
    scores, idx = cosine_topk_triton(q, keys, 3)
    assert_topk_matches(q, keys, 3, scores, idx, torch.float32)
    s0, i0 = cosine_topk_triton(q[:0], keys, 3)
    assert s0.shape == i0.shape == (0, 3)


def test_cosine_topk_bad_inputs():
    q = _rand((3, 4), torch.float32, 14)
    keys = _rand((200, 4), torch.float32, 15)
    with pytest.raises(ValueError, match=r"k=201 exceeds the number of keys \(200\)"):
        cosine_topk_triton(q, keys[:200], 201)
    with pytest.raises(ValueError, match=rf"k=129 exceeds MAX_K={MAX_K}"):
        cosine_topk_triton(q, keys, 129)
    with pytest.raises(ValueError, match="k=0"):
        cosine_topk_triton(q, keys, 0)
    with pytest.raises(TypeError, match="k must be an integer"):
        cosine_topk_triton(q, keys, 2.0)
    with pytest.raises(TypeError, match="queries has dtype torch.float64"):
        cosine_topk_triton(q.double(), keys.double(), 2)
    with pytest.raises(TypeError, match="queries has dtype torch.float32 but keys has dtype"):
        cosine_topk_triton(q, keys.half(), 2)
    with pytest.raises(ValueError, match="queries has dim 4 but keys has dim 3"):
        cosine_topk_triton(q, keys[:, :3], 2)
    with pytest.raises(ValueError, match=r"keys must have contiguous rows.*keys.contiguous\(\)"):
        cosine_topk_triton(q, keys.T.contiguous().T, 2)
    with pytest.raises(ValueError, match="queries must be 2-D"):
        cosine_topk_triton(q[0], keys, 2)
    with pytest.raises(TypeError, match="queries must be a torch.Tensor"):
        cosine_topk_triton(q.tolist(), keys, 2)
    with pytest.raises(ValueError, match="keys must have at least one row"):
        cosine_topk_triton(q, keys[:0], 1)


# ---------------------------------------------------------------------------------------------
# launch configuration
# ---------------------------------------------------------------------------------------------

def test_config_limits_name_the_size():
    with pytest.raises(ValueError, match=r"k=300 exceeds MAX_K=128"):
        cfg.cosine_topk_config(10, 1000, 8, 300)
    with pytest.raises(ValueError, match=r"n_keys=4294967295 exceeds"):
        cfg.cosine_topk_config(10, 2**32 - 1, 8, 5)
    with pytest.raises(ValueError, match=r"block_n=24 must be a power of two"):
        cfg.cosine_topk_config(10, 1000, 8, 5, block_n=24)
    with pytest.raises(ValueError, match=r"n=\d+ needs \d+ blocks"):
        cfg.kmeans_assign_config(2**40, 4, 8)
    with pytest.raises(ValueError, match=r"dim=\d+ needs \d+ blocks"):
        cfg.kmeans_update_config(10, 4, 2**30)
    # few queries: the keys are split so that the GPU has ~4 programs per SM
    c = cfg.cosine_topk_config(2, 1_000_000, 384, 10, n_sm=132)
    assert c.n_splits > 2 * 132
    assert c.n_splits * c.keys_per_split >= 1_000_000
    assert min(c.block_m, c.block_n, c.block_d) >= 16   # tensor-core dot minimum
    # one split when there are queries enough
    assert cfg.cosine_topk_config(100_000, 100_000, 384, 10, n_sm=132).n_splits == 1


# ---------------------------------------------------------------------------------------------
# row norms
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_row_norms(dtype):
    x = _rand((37, 300), dtype, 16)
    x[5] = 0
    xd = x.cpu().double()
    sq = row_norms_triton(x)
    inv = row_norms_triton(x, inverse=True)
    assert sq.dtype == inv.dtype == torch.float32
    torch.testing.assert_close(sq.cpu().double(), (xd * xd).sum(1), atol=1e-5, rtol=1e-5)
    ref_inv = 1 / xd.norm(dim=1).clamp_min(1e-12)
    torch.testing.assert_close(inv.cpu().double(), ref_inv, atol=0, rtol=1e-5)
    assert float(inv[5]) == pytest.approx(1e12)


# ---------------------------------------------------------------------------------------------
# K-means assignment
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kmeans_assign_matches_reference(shape, dtype):
    n, n_clusters, dim = shape
    x = _rand((n, dim), dtype, 20)
    c = _rand((n_clusters, dim), dtype, 21)
    labels, dist = kmeans_assign_triton(x, c)
    assert labels.device == x.device
    assert_assign_matches(x, c, labels, dist, dtype)


def test_kmeans_assign_ties_go_to_lower_index():
    x = torch.zeros((3, 4), device=DEVICE)
    c = _rand((300, 4), torch.float32, 22) + 10.0   # far from every x
    c[100] = 0.5       # equal best distances in different centroid tiles...
    c[200] = 0.5
    c[250] = -0.5      # ...and the same distance from a different centroid
    x[1] = 0.5         # exactly on centroids 100 and 200
    x[2, 0] = 20.0     # far: its best is among the random ones
    labels, dist = kmeans_assign_triton(x, c)
    assert labels.cpu().tolist()[:2] == [100, 100]
    assert dist.cpu().tolist()[:2] == [1.0, 0.0]
    ref_l, _ = reference.kmeans_assign(x.cpu().double(), c.cpu().double())
    assert int(labels[2]) == int(ref_l[2])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_kmeans_assign_given_x_sq_norms(dtype):
    x = _rand((50, 20), dtype, 23)
    c = _rand((6, 20), dtype, 24)
    x_sq = (x.double() ** 2).sum(1)
    labels, dist = kmeans_assign_triton(x, c, x_sq_norms=x_sq)
    assert_assign_matches(x, c, labels, dist, dtype)
    labels0, _ = kmeans_assign_triton(x, c)
    assert torch.equal(labels, labels0)
    # the given norms are used, not recomputed: an offset shows up in the distances
    _, shifted = kmeans_assign_triton(x, c, x_sq_norms=x_sq + 1000.0)
    torch.testing.assert_close(shifted.cpu(), dist.cpu() + 1000.0, atol=0.0, rtol=1e-6)


def test_kmeans_assign_bad_inputs():
    x = _rand((5, 3), torch.float32, 25)
    c = _rand((2, 3), torch.float32, 26)
    with pytest.raises(ValueError, match="centroids must have at least one row"):
        kmeans_assign_triton(x, c[:0])
    with pytest.raises(ValueError, match="x has dim 3 but centroids has dim 2"):
        kmeans_assign_triton(x, c[:, :2])
    with pytest.raises(TypeError, match="x has dtype torch.float32 but centroids has dtype"):
        kmeans_assign_triton(x, c.half())
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        kmeans_assign_triton(x.long(), c.long())
    with pytest.raises(ValueError, match=r"x_sq_norms must have shape \(5,\), got \(4,\)"):
        kmeans_assign_triton(x, c, x_sq_norms=torch.ones(4, device=DEVICE))
    labels, dist = kmeans_assign_triton(x[:0], c)
    assert labels.shape == dist.shape == (0,)


# ---------------------------------------------------------------------------------------------
# K-means update
# ---------------------------------------------------------------------------------------------

UPDATE_SHAPES = [(1, 1, 1), (7, 1, 5), (33, 5, 1), (100, 13, 384), (513, 64, 17)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", UPDATE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kmeans_update_matches_reference(shape, dtype):
    n, n_clusters, dim = shape
    x = _rand((n, dim), dtype, 30)
    g = torch.Generator().manual_seed(31)
    # two clusters more than the labels use: they must come back empty
    labels = torch.randint(0, n_clusters, (n,), generator=g)
    weight = torch.rand(n, generator=g) + 0.1
    atol, rtol = tolerance(dtype)
    xd = x.cpu().double()
    for w in (None, weight):
        sums, counts = kmeans_update_triton(x, labels.to(DEVICE), n_clusters + 2,
                                            None if w is None else w.to(DEVICE))
        ref_s, ref_c = reference.kmeans_update(xd, labels, n_clusters + 2,
                                               None if w is None else w.double())
        assert sums.dtype == counts.dtype == torch.float32
        assert sums.shape == (n_clusters + 2, dim) and counts.shape == (n_clusters + 2,)
        torch.testing.assert_close(sums.cpu().double(), ref_s, atol=atol, rtol=rtol)
        torch.testing.assert_close(counts.cpu().double(), ref_c, atol=atol, rtol=rtol)
        assert bool((sums[n_clusters:] == 0).all()) and bool((counts[n_clusters:] == 0).all())
    # without weights the counts are exact row counts
    _, counts = kmeans_update_triton(x, labels.to(DEVICE), n_clusters + 2)
    assert torch.equal(counts.cpu(), torch.bincount(labels, minlength=n_clusters + 2).float())


def test_kmeans_update_is_deterministic_and_order_aware():
    x = _rand((200, 9), torch.float32, 32)
    g = torch.Generator().manual_seed(33)
    labels = torch.randint(0, 4, (200,), generator=g).to(DEVICE)
    w = (torch.rand(200, generator=g) + 0.5).to(DEVICE)
    first = kmeans_update_triton(x, labels, 4, w)
    second = kmeans_update_triton(x, labels, 4, w)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    # strided rows read correctly
    wide = torch.cat([x, x], dim=1)[:, 9:]
    torch.testing.assert_close(kmeans_update_triton(wide, labels, 4, w)[0], first[0])


def test_kmeans_update_bad_inputs():
    x = _rand((6, 3), torch.float32, 34)
    labels = torch.tensor([0, 1, 2, 1, 0, 2], device=DEVICE)
    with pytest.raises(ValueError, match=r"labels\[2\]=2 is outside \[0, 2\)"):
        kmeans_update_triton(x, labels, 2)
    with pytest.raises(ValueError, match=r"labels\[0\]=-1 is outside"):
        kmeans_update_triton(x, labels - 1, 3)
    with pytest.raises(TypeError, match="labels must be int64"):
        kmeans_update_triton(x, labels.int(), 3)
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\)"):
        kmeans_update_triton(x, labels[:5], 3)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(6,\)"):
        kmeans_update_triton(x, labels, 3, torch.ones(5, device=DEVICE))
    with pytest.raises(ValueError, match="n_clusters=0"):
        kmeans_update_triton(x, labels, 0)
    sums, counts = kmeans_update_triton(x[:0], labels[:0], 3)
    assert torch.equal(sums.cpu(), torch.zeros(3, 3)) and torch.equal(counts.cpu(), torch.zeros(3))


# ---------------------------------------------------------------------------------------------
# GPU: larger sizes and offsets past 2**31 elements
# ---------------------------------------------------------------------------------------------

def _fp32_topk_close(q, keys, k, scores, idx, dtype):
    """Check a large top-k against the float32 torch reference on the GPU (float64 is slow)."""
    atol, rtol = tolerance(dtype)
    ref_s, ref_i = reference.cosine_topk(q.float(), keys, k, chunk=1 << 16)
    torch.testing.assert_close(scores, ref_s, atol=atol, rtol=rtol)
    mismatch = idx != ref_i
    if bool(mismatch.any()):
        qn = torch.nn.functional.normalize(q.float(), dim=1)
        rows = mismatch.nonzero()[:, 0]
        got = torch.nn.functional.normalize(keys[idx[mismatch]].float(), dim=1)
        true_s = (qn[rows] * got).sum(1)
        assert bool(((true_s - ref_s[mismatch]).abs() <= atol + rtol).all())


@pytest.mark.gpu
def test_triton_kernels_on_gpu_large():
    if triton_cosine.INTERPRET:
        pytest.skip("the kernels were built by the interpreter (TRITON_INTERPRET=1)")
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(40)
    for dtype in DTYPES:
        q = torch.randn((700, 384), generator=g, device=dev).to(dtype)
        keys = torch.randn((30_001, 384), generator=g, device=dev).to(dtype)
        for k in (1, 10, MAX_K):
            s, i = cosine_topk_triton(q, keys, k)
            assert_topk_matches(q[:50], keys, k, s[:50], i[:50], dtype)
            _fp32_topk_close(q, keys, k, s, i, dtype)
        s, i = cosine_topk_triton(q[:3], keys, 10)        # few queries: many key splits
        assert_topk_matches(q[:3], keys, 10, s, i, dtype)
        x = torch.randn((50_001, 384), generator=g, device=dev).to(dtype)
        c = torch.randn((257, 384), generator=g, device=dev).to(dtype)
        labels, dist = kmeans_assign_triton(x, c)
        assert_assign_matches(x[:2000], c, labels[:2000], dist[:2000], dtype)
        sums, counts = kmeans_update_triton(x, labels, 257)
        ref_s, ref_c = reference.kmeans_update(x.double(), labels, 257)
        atol, rtol = tolerance(dtype)
        torch.testing.assert_close(sums.double(), ref_s, atol=100 * atol, rtol=rtol)
        assert torch.equal(counts.double(), ref_c)
        again = kmeans_update_triton(x, labels, 257)
        assert torch.equal(again[0], sums)   # bitwise deterministic

    # one index past 2**31 elements: (5.6M, 384) fp16 rows = 4.3 GB
    n_big = (2**31) // 384 + 4097
    free, _ = torch.cuda.mem_get_info()
    if free < 3 * n_big * 384 * 2:
        pytest.skip(f"needs ~{3 * n_big * 384 * 2 / 2**30:.1f} GiB of free GPU memory")
    big = torch.randn((n_big, 384), generator=g, device=dev, dtype=torch.float16)
    q = torch.randn((4, 384), generator=g, device=dev, dtype=torch.float16)
    big[-1] = q[0] * 3       # exact cosine 1, at the very end
    big[-7] = q[1]
    s, i = cosine_topk_triton(q, big, 5)
    assert int(i[0, 0]) == n_big - 1 and int(i[1, 0]) == n_big - 7
    _fp32_topk_close(q, big, 5, s, i, torch.float16)
    c = big[-16:].clone()
    labels, dist = kmeans_assign_triton(big, c)
    assert torch.equal(labels[-16:].cpu(), torch.arange(16))
    assert float(dist[-16:].max()) < 1e-2   # own centroid: 0 up to fp32 cancellation
    tail = big[-5000:]
    assert_assign_matches(tail, c, labels[-5000:], dist[-5000:], torch.float16)
    sums, counts = kmeans_update_triton(big, labels, 16)
    assert int(counts.sum()) == n_big
    ref = torch.zeros((16, 384), dtype=torch.float64, device=dev)
    for start in range(0, n_big, 1 << 20):
        ref.index_add_(0, labels[start:start + (1 << 20)], big[start:start + (1 << 20)].double())
    torch.testing.assert_close(sums.double(), ref, atol=0.5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# compiled (not interpreted) kernels: build them for sm_90 without a GPU
# ---------------------------------------------------------------------------------------------

_COMPILE_SCRIPT = r"""
import pathlib, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from interestflow.kernels import _triton_config as C, triton_cosine as tc, triton_kmeans as tk

assert not tc.INTERPRET
cuobjdump = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
target = GPUTarget("cuda", 90, 32)

def build(fn, sig, consts, label, **opts):
    full = {n: ("constexpr" if n in consts else sig[n]) for n in fn.arg_names}
    kernel = triton.compile(ASTSource(fn=fn, signature=full, constexprs=consts),
                            target=target, options=opts)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"]); f.flush()
        usage = subprocess.run([str(cuobjdump), "-res-usage", f.name], capture_output=True,
                               text=True, check=True).stdout
    line = next(l for l in usage.splitlines() if "REG:" in l)
    print(label, line.split()[:2])
    assert "STACK:0 " in line, (label, line)

# fp16 and bf16 share their code paths; fp32 takes the "ieee" dot
for dt, size, ks in (("fp16", 2, (10, C.MAX_K)), ("bf16", 2, (64,)), ("fp32", 4, (10,))):
    sig = dict(q_ptr="*" + dt, k_ptr="*" + dt, inv_q_ptr="*fp32", inv_k_ptr="*fp32",
               cand_ptr="*i64", n_q="i32", n_keys="i32", dim="i32", stride_q="i32",
               stride_k="i32", keys_per_split="i32")
    for k in ks:
        c = C.cosine_topk_config(20000, 100000, 384, k, n_sm=132, itemsize=size)
        build(tc._cosine_topk_kernel, sig,
              dict(K=k, K_PAD=c.k_pad, BLOCK_M=c.block_m, BLOCK_N=c.block_n,
                   BLOCK_D=c.block_d, NORMALIZED=False, IEEE=dt == "fp32", UPCAST=False),
              f"topk {dt} k={k}", num_warps=c.num_warps, num_stages=c.num_stages)
    if dt == "bf16":
        continue
    a = C.kmeans_assign_config(200000, 256, 384, itemsize=size)
    build(tk._kmeans_assign_kernel,
          dict(x_ptr="*" + dt, c_ptr="*" + dt, c_sq_ptr="*fp32", x_sq_ptr="*fp32",
               labels_ptr="*i64", dist_ptr="*fp32", n="i32", n_clusters="i32", dim="i32",
               stride_x="i32", stride_c="i32"),
          dict(BLOCK_M=a.block_m, BLOCK_N=a.block_n, BLOCK_D=a.block_d,
               IEEE=dt == "fp32", UPCAST=False),
          f"assign {dt}", num_warps=a.num_warps, num_stages=a.num_stages)
    u = C.kmeans_update_config(200000, 256, 384)
    build(tk._kmeans_update_kernel,
          dict(x_ptr="*" + dt, order_ptr="*i64", offsets_ptr="*i64", w_ptr="*fp32",
               sums_ptr="*fp32", wsum_ptr="*fp32", dim="i32", stride_x="i32"),
          dict(BLOCK_R=u.block_r, BLOCK_D=u.block_d, WEIGHTED=True),
          f"update {dt}", num_warps=u.num_warps)
    n = C.row_norms_config(200000, 384)
    build(tc._row_norms_kernel,
          dict(x_ptr="*" + dt, out_ptr="*fp32", n="i32", dim="i32", stride_x="i32"),
          dict(BLOCK_R=n.block_r, BLOCK_D=n.block_d, INVERSE=True),
          f"norms {dt}", num_warps=n.num_warps)
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_register_spills():
    """The compiled path the interpreter never sees: every kernel builds for an H100 (sm_90)
    with the launch parameters of ``_triton_config`` and without spilling registers."""
    import triton

    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not os.path.exists(os.path.join(tools, "cuobjdump")):
        pytest.skip("this triton build ships no NVIDIA toolchain (cuobjdump)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    r = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
