"""numba CPU cosine top-k against the float64 reference, its certificate and its input checks."""

import pytest
import torch

pytest.importorskip("numba", reason="numba is not installed")

from _kernel_checks import ODD_SHAPES, assert_topk_matches  # noqa: E402

from interestflow.kernels import numba_cosine as nc  # noqa: E402
from interestflow.kernels import reference  # noqa: E402

MODES = ("float32", "bfloat16", "auto")
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _data(n_q, n_k, dim, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n_q, dim, generator=g).to(dtype),
            torch.randn(n_k, dim, generator=g).to(dtype))


def _topk(q, keys, k, candidates, **kw):
    stats = {}
    s, i = nc._topk(q, keys, k, candidates=candidates, stats=stats, **kw)
    return s, i, stats


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks far smaller than the data, so every test crosses block and group boundaries."""
    monkeypatch.setattr(nc, "_BLOCK_KEYS", 128)
    monkeypatch.setattr(nc, "_BLOCK_QUERIES", 48)
    monkeypatch.setattr(nc, "_STATE_BYTES", 60 * 1000)
    monkeypatch.setattr(nc, "_KEY_REP_BYTES", 1000)  # key super-blocks of _BLOCK_KEYS rows


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("candidates", MODES)
def test_matches_float64_reference(dtype, candidates, small_blocks):
    for n_q, n_k, dim in ODD_SHAPES:
        q, keys = _data(n_q, n_k, dim, dtype)
        for k in sorted({1, min(5, n_k), n_k}):
            s, i = nc.cosine_topk_numba(q, keys, k, candidates=candidates)
            assert s.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
            assert_topk_matches(q, keys, k, s, i, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bf16_candidates_equal_exact_path(dtype, small_blocks):
    q, keys = _data(300, 1000, 96, dtype, seed=1)
    s32, i32, st32 = _topk(q, keys, 7, "float32")
    s16, i16, st16 = _topk(q, keys, 7, "bfloat16")
    assert st16["candidates"] == "bfloat16" and st32["candidates"] == "float32"
    assert torch.equal(s16, s32) and torch.equal(i16, i32)
    assert_topk_matches(q, keys, 7, s16, i16, dtype)


@pytest.mark.parametrize("candidates", ("float32", "bfloat16"))
def test_same_result_with_any_thread_count(candidates, small_blocks):
    q, keys = _data(200, 900, 40, torch.float32, seed=8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        s1, i1, st1 = _topk(q, keys, 9, candidates)
        assert torch.get_num_threads() == 1 and st1["threads"] == 1
        torch.set_num_threads(3)
        s3, i3, st3 = _topk(q, keys, 9, candidates)
        assert torch.get_num_threads() == 3 and st3["threads"] == 3
    finally:
        torch.set_num_threads(before)
    assert torch.equal(s1, s3) and torch.equal(i1, i3)


def test_exact_ties_go_to_lower_index(small_blocks):
    g = torch.Generator().manual_seed(2)
    a, b, c = torch.randn(3, 24, generator=g)
    keys = torch.stack([b, a, c, a, b, a, c, a])
    for candidates in MODES:
        s, i, _ = _topk(a[None], keys, 3, candidates)
        assert i.tolist() == [[1, 3, 5]]
        assert s[0, 0] == s[0, 1] == s[0, 2]
        # b is tied at index 0 and 4 behind the four copies of a
        s, i, _ = _topk(a[None], keys, 5, candidates)
        assert i[0, :4].tolist() == [1, 3, 5, 7]


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_duplicates_straddling_the_candidates_fail_the_certificate(dtype, small_blocks):
    # 300 copies of the query (more than the candidate lists and the first collection
    # capacity hold) spread among random keys: the top-10 are the 10 lowest-index copies,
    # which only the fallback can prove.
    g = torch.Generator().manual_seed(3)
    keys = torch.randn(2000, 64, generator=g, dtype=dtype)
    target = torch.randn(64, generator=g, dtype=dtype)
    pos = torch.randperm(2000, generator=g)[:300]
    keys[pos] = target
    q = torch.cat([target[None], torch.randn(4, 64, generator=g, dtype=dtype)])
    results = {}
    for candidates in ("float32", "bfloat16"):
        s, i, st = _topk(q, keys, 10, candidates)
        assert st["n_uncertified"] >= 1
        assert i[0].tolist() == sorted(pos.tolist())[:10]
        results[candidates] = (s, i)
        assert_topk_matches(q, keys, 10, s, i, dtype)
    assert torch.equal(results["float32"][0], results["bfloat16"][0])
    assert torch.equal(results["float32"][1], results["bfloat16"][1])


@pytest.mark.parametrize("scale", (1e-4, 1e-6))
def test_adversarial_near_ties_fall_back_to_the_exact_answer(scale, small_blocks):
    # keys within `scale` of the query's direction: bf16 (and at 1e-6 fp32 too) cannot order
    # them, so certificates fail and the collection pass must give the exact answer
    g = torch.Generator().manual_seed(4)
    d = 128
    base = torch.nn.functional.normalize(torch.randn(6, d, generator=g), dim=1)
    near = base.repeat(150, 1) + scale * torch.randn(900, d, generator=g)
    keys = torch.cat([near, torch.randn(1500, d, generator=g)])
    keys = keys[torch.randperm(keys.shape[0], generator=g)]
    q = torch.cat([base, base + 0.01 * torch.randn(6, d, generator=g)])
    s32, i32, st32 = _topk(q, keys, 20, "float32")
    s16, i16, st16 = _topk(q, keys, 20, "bfloat16")
    assert st16["n_uncertified"] >= 6
    if scale < 1e-5:
        assert st32["n_uncertified"] >= 6
    assert torch.equal(s16, s32) and torch.equal(i16, i32)
    assert_topk_matches(q, keys, 20, s16, i16, torch.float32)
    # in float64 the near-ties are far apart compared with the rounding: the reference's order
    s64, i64, st64 = _topk(q.double(), keys.double(), 20, "bfloat16")
    assert st64["n_uncertified"] >= 6
    ref_s, ref_i = reference.cosine_topk(q.double(), keys.double(), 20)
    torch.testing.assert_close(s64, ref_s, atol=1e-12, rtol=1e-12)
    assert torch.equal(i64, ref_i)


def test_zero_rows_score_zero(small_blocks):
    q, keys = _data(5, 300, 16, torch.float32, seed=5)
    q[2] = 0
    keys[[7, 8]] = 0
    for candidates in MODES:
        s, i, _ = _topk(q, keys, 4, candidates)
        assert i[2].tolist() == [0, 1, 2, 3] and s[2].tolist() == [0.0] * 4
        # a zero key scores 0: it appears only where the other keys score below 0
        s, i, _ = _topk(q, keys, 300, candidates)
        zero_pos = (i[0] == 7).nonzero().item()
        assert s[0, zero_pos] == 0 and i[0, zero_pos + 1] == 8
        assert_topk_matches(q, keys, 300, s, i, torch.float32)


def test_normalized_true_takes_rows_as_given(small_blocks):
    q, keys = _data(40, 500, 32, torch.float32, seed=6)
    qn, kn = (torch.nn.functional.normalize(t, dim=1) for t in (q, keys))
    for candidates in MODES:
        s, i = nc.cosine_topk_numba(qn, kn, 6, normalized=True, candidates=candidates)
        assert_topk_matches(qn, kn, 6, s, i, torch.float32)
        # not unit rows: plain dot products, as the reference computes them
        s, i = nc.cosine_topk_numba(q, keys, 6, normalized=True, candidates=candidates)
        dots = q.double() @ keys.double().T
        ref = torch.sort(dots, dim=1, descending=True, stable=True)
        torch.testing.assert_close(s.double(), ref.values[:, :6], atol=1e-5, rtol=1e-5)
        assert torch.equal(i, ref.indices[:, :6])


def test_mixed_dtypes_and_empty_queries():
    q, keys = _data(9, 70, 8, torch.float32, seed=7)
    s, i = nc.cosine_topk_numba(q, keys.double(), 3)
    assert s.dtype == torch.float64
    assert_topk_matches(q.double(), keys.double(), 3, s, i, torch.float64)
    s, i = nc.cosine_topk_numba(q[:0], keys, 3)
    assert s.shape == (0, 3) and i.shape == (0, 3) and i.dtype == torch.int64


def test_auto_choice(monkeypatch):
    monkeypatch.setattr(nc, "cpu_has_fast_bf16", lambda: True)
    assert nc.use_bf16_candidates(20_000, 100_000, 384, 10)[0]
    small = nc.use_bf16_candidates(10, 40, 384, 10)
    assert not small[0] and "cover all" in small[1]
    assert "too small" in nc.use_bf16_candidates(1000, 3000, 384, 10)[1]
    assert "dim=16" in nc.use_bf16_candidates(20_000, 100_000, 16, 10)[1]
    q, keys = _data(4, 200, 8, torch.float32)
    assert _topk(q, keys, 2, "auto")[2]["candidates"] == "float32"
    monkeypatch.setattr(nc, "cpu_has_fast_bf16", lambda: False)
    use, reason = nc.use_bf16_candidates(20_000, 100_000, 384, 10)
    assert not use and "bf16" in reason


def test_bad_inputs():
    q, keys = _data(3, 10, 4, torch.float32)
    with pytest.raises(ValueError, match=r"k=0 .*n_keys=10"):
        nc.cosine_topk_numba(q, keys, 0)
    with pytest.raises(ValueError, match=r"k=11"):
        nc.cosine_topk_numba(q, keys, 11)
    for bad_k in (2.0, True, "3"):
        with pytest.raises(TypeError, match="k must be an integer"):
            nc.cosine_topk_numba(q, keys, bad_k)
    with pytest.raises(ValueError, match="queries has dim 4 but keys has dim 5"):
        nc.cosine_topk_numba(q, torch.randn(10, 5), 2)
    with pytest.raises(ValueError, match=r"keys must be 2-D"):
        nc.cosine_topk_numba(q, keys[0], 2)
    with pytest.raises(TypeError, match=r"queries must be float16.*int64"):
        nc.cosine_topk_numba(q.long(), keys, 2)
    with pytest.raises(TypeError, match="keys must be a torch.Tensor"):
        nc.cosine_topk_numba(q, keys.numpy(), 2)
    with pytest.raises(ValueError, match="keys is on meta"):
        nc.cosine_topk_numba(q, torch.empty(10, 4, device="meta"), 2)
    with pytest.raises(ValueError, match="candidates='bf16' is not valid"):
        nc.cosine_topk_numba(q, keys, 2, candidates="bf16")
    with pytest.raises(TypeError, match="normalized must be True or False"):
        nc.cosine_topk_numba(q, keys, 2, normalized="yes")
    bad = keys.clone()
    bad[6, 1] = float("nan")
    with pytest.raises(ValueError, match="keys row 6 contains NaN or infinity"):
        nc.cosine_topk_numba(q, bad, 2)
    bad = q.clone()
    bad[2, 0] = float("inf")
    with pytest.raises(ValueError, match="queries row 2 contains NaN or infinity"):
        nc.cosine_topk_numba(bad, keys, 2)


def test_prefetch_row_is_a_hint_that_changes_nothing():
    """prefetch_row compiles for the tables the kernels read (float32, float64, uint16 bf16
    bits, strided views), ignores rows outside the table and leaves every value as it was."""
    import numba as nb
    import numpy as np

    from interestflow.kernels.numba_prefetch import prefetch_row

    @nb.njit
    def summed(a, rows):
        s = 0.0
        for r in rows:
            prefetch_row(a, r)  # -1 and len(a) included: ignored
            if 0 <= r < a.shape[0]:
                for c in range(a.shape[1]):
                    s += a[r, c]
        return s

    rng = np.random.default_rng(0)
    rows = np.array([3, -1, 0, 7, 8, 2, 100], np.int64)
    for a in (rng.normal(size=(8, 33)).astype(np.float32), rng.normal(size=(8, 5)),
              rng.integers(0, 2 ** 15, size=(8, 70)).astype(np.uint16),
              rng.normal(size=(8, 40)).astype(np.float32)[:, ::3]):
        before = a.copy()
        want = sum(float(a[r].astype(np.float64).sum()) for r in rows if 0 <= r < len(a))
        np.testing.assert_allclose(summed(a, rows), want, rtol=1e-12)
        np.testing.assert_array_equal(a, before)
