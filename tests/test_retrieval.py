"""ItemIndex: exact path vs a float64 reference, IVF recall and exact re-scoring, persistence,
the auto choice and input errors."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from interestflow import retrieval
from interestflow.resolve import BackendUnavailableError
from interestflow.retrieval import ItemIndex, default_nlist, default_nprobe

EXACT_BACKENDS = ("torch", "numba")


def _unit(x):
    """The index's own normalisation: float64 norms, float32 unit rows (zero rows stay zero)."""
    x = np.asarray(x, np.float64)
    n = np.sqrt((x * x).sum(1, keepdims=True))
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def reference(items, queries, k, exclude=None):
    """Float64 brute force: scores of the float32 unit rows, ties to the lower row, padded."""
    v = _unit(items).astype(np.float64)
    q = _unit(queries).astype(np.float64)
    s = (q @ v.T).astype(np.float32)
    n_q, n = s.shape
    out_s = np.full((n_q, k), -np.inf, np.float32)
    out_i = np.full((n_q, k), -1, np.int64)
    for r in range(n_q):
        rows = np.arange(n)
        if exclude is not None:
            rows = np.setdiff1d(rows, exclude[1][exclude[0][r]:exclude[0][r + 1]])
        o = rows[np.lexsort((rows, -s[r, rows]))][:k]
        out_s[r, :len(o)], out_i[r, :len(o)] = s[r, o], o
    return out_s, out_i


def random_exclude(rng, n_q, n_items, max_len):
    lens = rng.integers(0, max_len + 1, n_q)
    indptr = np.concatenate([[0], np.cumsum(lens)])
    indices = np.concatenate([rng.choice(n_items, size=m, replace=False) for m in lens]
                             + [np.zeros(0, np.int64)])
    return indptr, indices


def clustered(n, dim, n_centers, rng, spread=0.35):
    """Unit rows around a shared mean direction and ``n_centers`` topic centres (Zipf sizes),
    the shape of sentence embeddings in small."""
    mu = rng.standard_normal(dim)
    mu *= 0.4 / np.linalg.norm(mu)
    centers = rng.standard_normal((n_centers, dim)) * dim ** -0.5
    p = 1.0 / np.arange(1, n_centers + 1) ** 0.8
    lab = rng.choice(n_centers, size=n, p=p / p.sum())
    x = mu + centers[lab] + rng.standard_normal((n, dim)) * spread * dim ** -0.5
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------- exact


@pytest.mark.parametrize("backend", EXACT_BACKENDS)
@pytest.mark.parametrize("n_items,dim,n_q,k", [
    (257, 7, 33, 5),     # non-power-of-two sizes
    (1, 3, 4, 1),        # a single item
    (50, 1, 6, 4),       # dim 1: every score is +-1, all ties
    (3000, 64, 65, 10),  # large enough for the numba kernel under backend="auto"
])
def test_exact_matches_float64_reference(backend, n_items, dim, n_q, k):
    rng = np.random.default_rng(n_items + dim)
    items = rng.standard_normal((n_items, dim)).astype(np.float32)
    queries = rng.standard_normal((n_q, dim)).astype(np.float32) * 3.0
    index = ItemIndex("exact", backend=backend, device="cpu").fit(items)
    s, i = index.search(queries, k)
    ref_s, ref_i = reference(items, queries, k)
    assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == (n_q, k)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s, rtol=0, atol=1e-7)


@pytest.mark.parametrize("backend", EXACT_BACKENDS)
def test_exact_ties_go_to_the_lower_row(backend):
    items = np.array([[0, 1], [1, 0], [0, 2], [1, 0], [3, 0], [1, 1]], np.float32)
    index = ItemIndex("exact", backend=backend, device="cpu").fit(items)
    s, i = index.search(np.array([[2.0, 0.0], [0.0, 1.0]], np.float32), 4)
    assert i.tolist() == [[1, 3, 4, 5], [0, 2, 5, 1]]
    np.testing.assert_allclose(s[0], [1, 1, 1, np.sqrt(0.5)], atol=1e-7)


@pytest.mark.parametrize("backend", EXACT_BACKENDS)
def test_exact_exclusion_and_padding(backend):
    rng = np.random.default_rng(3)
    items = rng.standard_normal((400, 16)).astype(np.float32)
    queries = rng.standard_normal((70, 16)).astype(np.float32)
    indptr, indices = random_exclude(rng, 70, 400, 60)
    # query 5 may keep only 3 items: k=10 pads with -inf / -1
    keep = np.array([7, 100, 399])
    lens = np.diff(indptr)
    parts = [indices[indptr[r]:indptr[r + 1]] for r in range(70)]
    parts[5] = np.setdiff1d(np.arange(400), keep)
    lens[5] = len(parts[5])
    ex = (np.concatenate([[0], np.cumsum(lens)]), np.concatenate(parts))
    index = ItemIndex("exact", backend=backend, device="cpu").fit(items)
    s, i = index.search(queries, 10, exclude=ex)
    ref_s, ref_i = reference(items, queries, 10, exclude=ex)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s, atol=1e-7)
    assert sorted(i[5, :3].tolist()) == keep.tolist() and (i[5, 3:] == -1).all()
    assert np.isneginf(s[5, 3:]).all()
    for r in range(70):
        assert not np.isin(i[r], ex[1][ex[0][r]:ex[0][r + 1]]).any()


def test_scipy_csr_exclude_and_k_above_n_items():
    sp = pytest.importorskip("scipy.sparse")
    items = np.eye(4, dtype=np.float32)
    ex = sp.csr_matrix((np.ones(2), ([0, 1], [2, 0])), shape=(2, 4))
    s, i = ItemIndex("exact", device="cpu").fit(items).search(
        np.array([[0, 0, 1, 0], [1, 0, 0, 0]], np.float32), 6, exclude=ex)
    assert i.tolist() == [[0, 1, 3, -1, -1, -1], [1, 2, 3, -1, -1, -1]]
    assert s[0, :3].tolist() == [0, 0, 0] and np.isneginf(s[:, 3:]).all()


def test_zero_rows_score_zero():
    items = np.array([[0, 0, 0], [1, 0, 0], [0, -1, 0]], np.float32)
    index = ItemIndex("exact", device="cpu").fit(items)
    s, i = index.search(np.array([[1, 0, 0], [0, 0, 0]], np.float32), 3)
    assert i.tolist() == [[1, 0, 2], [0, 1, 2]]
    assert s.tolist() == [[1, 0, 0], [0, 0, 0]]


def test_torch_queries_give_tensors_and_ids_are_kept():
    torch = pytest.importorskip("torch")
    items = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    index = ItemIndex("exact", device="cpu").fit(torch.from_numpy(items),
                                                 item_ids=["x", "y", "z"])
    s, i = index.search(torch.tensor([[0.0, 2.0]]), 2)
    assert torch.is_tensor(s) and torch.is_tensor(i) and i.tolist() == [[1, 2]]
    assert index.item_ids_[i[0].numpy()].tolist() == ["y", "z"]
    assert index.n_items_ == 3 and index.dim_ == 2 and index.kind_ == "exact"


def test_no_queries():
    index = ItemIndex("exact", device="cpu").fit(np.eye(3, dtype=np.float32))
    s, i = index.search(np.zeros((0, 3), np.float32), 2)
    assert s.shape == (0, 2) and i.shape == (0, 2)


# ------------------------------------------------------------------------------- rules


def test_default_nlist_and_nprobe_rules():
    assert default_nlist(1_000_000) == 4096
    assert default_nlist(100_000) == 1024
    assert default_nlist(10_000) == 256  # 4*sqrt -> 512, capped by 39 points per list
    assert default_nlist(77) == 1
    assert all(n >= 39 * default_nlist(n) for n in (100, 5000, 123_457))
    for nlist in (1, 2, 64, 256, 1024, 4096, 65536):
        assert 1 <= default_nprobe(nlist) <= nlist
    with pytest.raises(ValueError, match="n_items"):
        default_nlist(0)


# ------------------------------------------------------------------------------- IVF


@pytest.fixture(scope="module")
def ivf_data():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    x = clustered(20_500, 48, 600, rng)
    items, queries = x[:20_000], x[20_000:]
    exact = ItemIndex("exact", device="cpu").fit(items)
    ivf = ItemIndex("ivf", device="cpu", random_state=0).fit(items)
    return items, queries, exact, ivf


def test_batched_scan_matches_faiss_search(ivf_data):
    """The CPU list-by-list scan probes the same lists as FAISS's own search: same results
    up to float rounding of near-equal scores."""
    items, queries, exact, ivf = ivf_data
    assert ivf.scan_ == "batched"
    ref = ItemIndex("ivf", device="cpu", random_state=0, scan="faiss").fit(items)
    assert ref.scan_ == "faiss" and (ref.nlist_, ref.nprobe_) == (ivf.nlist_, ivf.nprobe_)
    # a small nprobe, so that the probed lists matter
    ref.set_nprobe(4)
    try:
        s, i = ivf.set_nprobe(4).search(queries, 10)
        fs, fi = ref.search(queries, 10)
    finally:
        ivf.set_nprobe(default_nprobe(ivf.nlist_))
    assert ref.nprobe_ == 4 and ref.index_.nprobe == 4 and ref.get_params()["nprobe"] is None
    assert (i == fi).mean() >= 0.995
    np.testing.assert_allclose(s, fs, rtol=0, atol=1e-6)
    assert _recall(exact.search(queries, 10)[1], i) < 0.99  # nprobe 4 of 512 is approximate


def _recall(ref, got):
    return np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(ref.tolist(), got.tolist())])


def test_ivf_default_params_recall_and_exact_scores(ivf_data):
    items, queries, exact, ivf = ivf_data
    assert ivf.kind_ == "ivf"
    assert (ivf.nlist_, ivf.nprobe_) == (default_nlist(20_000), default_nprobe(512))
    es, ei = exact.search(queries, 10)
    s, i = ivf.search(queries, 10)
    rec = _recall(ei, i)
    assert rec >= 0.95, rec
    # every returned score is the exact cosine of that row, and rows are in exact order
    v, q = items.astype(np.float64), queries.astype(np.float64)
    want = np.einsum("qkd,qd->qk", v[i], q).astype(np.float32)
    # float64 sums in another order may differ by one float32 ulp (6e-8 below 1)
    np.testing.assert_allclose(s, want, rtol=0, atol=1e-7)
    assert (np.diff(s, axis=1) <= 0).all()
    same = i == ei
    assert same.mean() > 0.9
    np.testing.assert_allclose(s[same], es[same], rtol=0, atol=1e-7)


def test_ivf_exclusion(ivf_data):
    items, queries, exact, ivf = ivf_data
    rng = np.random.default_rng(1)
    _, top = exact.search(queries, 30)
    # exclude a random half of each query's exact top 30 (and some random rows)
    parts = [np.concatenate([t[rng.random(30) < 0.5], rng.choice(20_000, 5, replace=False)])
             for t in top]
    parts = [np.unique(p) for p in parts]
    ex = (np.concatenate([[0], np.cumsum([len(p) for p in parts])]), np.concatenate(parts))
    _, ei = exact.search(queries, 10, exclude=ex)
    s, i = ivf.search(queries, 10, exclude=ex)
    for r in range(len(queries)):
        assert not np.isin(i[r], parts[r]).any()
    assert _recall(ei, i) >= 0.95
    assert (i >= 0).all() and np.isfinite(s).all()


@pytest.fixture(scope="module")
def ivf96_data():
    """dim 96 (where candidates='auto' may pick bf16): the same index scanned both ways."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(7)
    x = clustered(12_400, 96, 400, rng)
    items, queries = x[:12_000], x[12_000:]
    f32 = ItemIndex("ivf", device="cpu", random_state=0, candidates="float32").fit(items)
    b16 = ItemIndex("ivf", device="cpu", random_state=0, candidates="bfloat16").fit(items)
    exact = ItemIndex("exact", device="cpu").fit(items)
    return items, queries, f32, b16, exact


def test_bf16_candidates_agree_with_float32_scan(ivf96_data):
    """bf16 products only propose candidates (BF16_EXTRA more of them): after exact re-scoring
    the top-k is the float32 scan's on all but rare near-ties, and every score is exact."""
    items, queries, f32, b16, exact = ivf96_data
    assert (f32.candidates_, b16.candidates_) == ("float32", "bfloat16")
    assert (b16.nlist_, b16.nprobe_) == (f32.nlist_, f32.nprobe_)
    b16.set_nprobe(8)
    f32.set_nprobe(8)
    try:
        s, i = b16.search(queries, 10)
        fs, fi = f32.search(queries, 10)
        assert b16._batched_scan(_unit(queries), 10).shape == (len(queries),
                                                                 10 + retrieval.BF16_EXTRA)
    finally:
        b16.set_nprobe(default_nprobe(b16.nlist_))
        f32.set_nprobe(default_nprobe(f32.nlist_))
    assert _recall(fi, i) >= 0.995
    v, q = items.astype(np.float64), _unit(queries).astype(np.float64)
    want = np.einsum("qkd,qd->qk", v[i], q).astype(np.float32)
    np.testing.assert_allclose(s, want, rtol=0, atol=1e-7)
    assert (np.diff(s, axis=1) <= 0).all()
    same = i == fi
    np.testing.assert_array_equal(s[same], fs[same])
    # with the default nprobe, as good as float32 against the exact top-10
    ei = exact.search(queries, 10)[1]
    rec16, rec32 = _recall(ei, b16.search(queries, 10)[1]), _recall(ei, f32.search(queries, 10)[1])
    assert rec16 >= rec32 - 0.005


def test_bf16_lists_are_padded_copies(ivf96_data):
    import torch

    _, _, f32, b16, _ = ivf96_data
    b16.search(np.ones((1, 96), np.float32), 3)
    f32.search(np.ones((1, 96), np.float32), 3)
    _, lists16 = b16._list_views()
    _, lists32 = f32._list_views()
    for l16, l32 in zip(lists16, lists32):
        assert (l16 is None) == (l32 is None)
        if l16 is None:
            continue
        (v16, ids16), (v32, ids32) = l16, l32
        assert v16.dtype == torch.bfloat16 and v32.dtype == torch.float32
        n = len(ids32)
        assert v16.shape[0] % retrieval.SCAN_PAD == 0 and n <= v16.shape[0] < n + retrieval.SCAN_PAD
        np.testing.assert_array_equal(ids16, ids32)
        np.testing.assert_array_equal(v16[:n].float().numpy(), v32.bfloat16().float().numpy())
        assert not v16[n:].any()


def test_candidates_auto_choice(monkeypatch):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(8)
    for dim, fast, want in [(96, True, "bfloat16"), (96, False, "float32"),
                            (retrieval.AUTO_BF16_MIN_DIM - 1, True, "float32")]:
        monkeypatch.setattr(retrieval, "cpu_has_fast_bf16", lambda fast=fast: fast)
        ix = ItemIndex("ivf", nlist=4, device="cpu").fit(
            rng.standard_normal((400, dim)).astype(np.float32))
        assert ix.candidates_ == want
    ix = ItemIndex("ivf", nlist=4, device="cpu", scan="faiss").fit(
        rng.standard_normal((400, 96)).astype(np.float32))
    assert ix.candidates_ is None
    assert ItemIndex("exact", device="cpu").fit(np.eye(3, dtype=np.float32)).candidates_ is None


def test_heap_kernels_keep_the_best_scores():
    """heap_rows / heap_rows_bf16 (int16 bit patterns, padding not read) vs a sort."""
    import torch

    from interestflow.kernels import numba_ivf

    rng = np.random.default_rng(9)
    n_q, depth = 7, 5
    for bf16 in (False, True):
        heap_s = np.full((n_q, depth), -np.inf, np.float32)
        heap_i = np.full((n_q, depth), -1, np.int64)
        seen = {q: [] for q in range(n_q)}
        for block in range(12):
            # as in a scan: a query meets a list's items once
            r, c = int(rng.integers(1, n_q + 1)), int(rng.integers(1, 70))
            qrows = rng.choice(n_q, r, replace=False).astype(np.int64)
            ids = rng.choice(10_000, c, replace=False).astype(np.int64) + 100_000 * block
            vals = rng.uniform(-1, 1, (r, c)).astype(np.float32)
            if block % 3 == 1:  # exact ties, signed zeros, infinities, all-negative rows
                vals = rng.choice(np.array([0.0, -0.0, 0.5, -0.5, -np.inf, np.inf, 1e-40,
                                            -3e38], np.float32), (r, c))
            elif block % 3 == 2:
                vals = -np.abs(vals)
            vals = torch.from_numpy(vals)
            if bf16:
                vals = vals.bfloat16()
                padded = torch.full((r + 3, c + 5), 7.0, dtype=torch.bfloat16)  # never read
                padded[:r, :c] = vals
                numba_ivf.heap_rows_bf16(padded.view(torch.int16).numpy(), r, c, qrows, ids,
                                         heap_s, heap_i)
                vals = vals.float()
            else:
                numba_ivf.heap_rows(vals.numpy(), qrows, ids, heap_s, heap_i)
            for a, q in enumerate(qrows):
                seen[q] += list(zip(vals[a].tolist(), ids.tolist()))
        for q in range(n_q):
            best = sorted(seen[q], reverse=True)[:depth]
            got = sorted(zip(heap_s[q].tolist(), heap_i[q].tolist()), reverse=True)
            assert [v for v, _ in got] == [v for v, _ in best]
            value_of = {i: v for v, i in seen[q]}
            assert all(value_of[i] == v for v, i in got if i >= 0)


def test_rescore_is_the_float64_sum_in_order():
    """Four sums side by side give the bits of one sum after another, for any width."""
    from interestflow.kernels import numba_ivf

    rng = np.random.default_rng(10)
    q = rng.standard_normal((6, 37)).astype(np.float32)
    v = rng.standard_normal((50, 37)).astype(np.float32)
    for width in (1, 3, 4, 5, 9):
        rows = rng.integers(-1, 50, (6, width)).astype(np.int64)
        out = np.empty(rows.shape, np.float32)
        numba_ivf.rescore(q, v, rows, out)
        want = np.full(rows.shape, -np.inf, np.float32)
        for a in range(6):
            for b in range(width):
                if rows[a, b] >= 0:
                    acc = 0.0
                    for d in range(37):
                        acc += float(q[a, d]) * float(v[rows[a, b], d])
                    want[a, b] = np.float32(acc)
        np.testing.assert_array_equal(out.view(np.int32), want.view(np.int32))


def test_bf16_scan_with_exclusion_and_many_queries_per_list(ivf96_data):
    """bf16 scan with excluded items (deeper fetch, BF16_EXTRA on top) and lists probed by
    more queries than one product takes (SCAN_ROWS): same rows as the float32 scan on all but
    near-ties, never an excluded item."""
    assert retrieval.SCAN_ROWS % retrieval.SCAN_PAD == 0  # the padded row blocks fit qbuf
    items, queries, f32, b16, exact = ivf96_data
    rng = np.random.default_rng(13)
    q = np.concatenate([queries] * 3)  # 1,200 queries over 8 probes of few lists
    _, top = exact.search(q, 20)
    parts = [np.unique(np.concatenate([t[rng.random(20) < 0.4],
                                       rng.choice(12_000, 3, replace=False)])) for t in top]
    ex = (np.concatenate([[0], np.cumsum([len(p) for p in parts])]), np.concatenate(parts))
    b16.set_nprobe(b16.nlist_)  # every list probed by all 1,200 queries (> SCAN_ROWS)
    f32.set_nprobe(f32.nlist_)
    try:
        s, i = b16.search(q, 10, exclude=ex)
        fs, fi = f32.search(q, 10, exclude=ex)
    finally:
        b16.set_nprobe(default_nprobe(b16.nlist_))
        f32.set_nprobe(default_nprobe(f32.nlist_))
    for r in range(len(q)):
        assert not np.isin(i[r], parts[r]).any()
    # nprobe = nlist scans everything: both are exact up to bf16 near-ties at the edge
    ei = exact.search(q, 10, exclude=ex)[1]
    assert _recall(ei, fi) == 1.0
    assert _recall(ei, i) >= 0.999
    same = i == fi
    np.testing.assert_array_equal(s[same], fs[same])


def test_threaded_rescore_equals_one_thread(monkeypatch):
    import torch

    rng = np.random.default_rng(14)
    items = _unit(rng.standard_normal((3000, 40)))
    index = ItemIndex("exact", device="cpu").fit(items)
    qn = _unit(rng.standard_normal((5000, 40)))
    rows = rng.integers(-1, 3000, (5000, 13))
    many = index._rescore(qn, rows)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    one = index._rescore(qn, rows)
    np.testing.assert_array_equal(many.view(np.int32), one.view(np.int32))


@pytest.mark.parametrize("saved_fast,loaded_fast", [(False, True), (True, False)])
def test_load_keeps_the_saved_scan_precision(tmp_path, monkeypatch, saved_fast, loaded_fast):
    """candidates='auto' is decided where the index is fitted; a load on another CPU keeps
    it, so the loaded index returns the saved one's rows. A format-1 save (no candidates_)
    scanned in float32 and loads that way."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(15)
    items = clustered(3000, 96, 60, rng)
    queries = clustered(200, 96, 60, np.random.default_rng(16))
    monkeypatch.setattr(retrieval, "cpu_has_fast_bf16", lambda: saved_fast)
    index = ItemIndex("ivf", device="cpu", random_state=1).fit(items)
    want = "bfloat16" if saved_fast else "float32"
    assert index.candidates_ == want
    before = index.search(queries, 10)
    index.save(tmp_path / "ix")
    monkeypatch.setattr(retrieval, "cpu_has_fast_bf16", lambda: loaded_fast)
    loaded = ItemIndex.load(tmp_path / "ix")
    assert loaded.candidates_ == want
    after = loaded.search(queries, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    # an index saved before the format had candidates: float32 scan, whatever the CPU
    meta = json.loads((tmp_path / "ix" / "meta.json").read_text())
    assert meta["format_version"] == 2 and meta["candidates_"] == want
    del meta["candidates_"], meta["params"]["candidates"]
    meta["format_version"] = 1
    (tmp_path / "ix" / "meta.json").write_text(json.dumps(meta))
    assert ItemIndex.load(tmp_path / "ix").candidates_ == "float32"


def test_ivf_k_above_reachable_items_pads():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    items = rng.standard_normal((100, 8)).astype(np.float32)
    ivf = ItemIndex("ivf", nlist=2, nprobe=2, device="cpu").fit(items)
    s, i = ivf.search(items[:3], 150)
    assert (i[:, :100] >= 0).all() and (i[:, 100:] == -1).all()
    assert np.isneginf(s[:, 100:]).all()
    assert sorted(i[0, :100].tolist()) == list(range(100))
    assert i[1, 0] == 1 and s[1, 0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_save_load_round_trip(tmp_path, kind):
    if kind == "ivf":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    items = clustered(3000, 24, 80, rng)
    ids = [f"item{j}" for j in range(3000)]
    index = ItemIndex(kind, device="cpu", random_state=3).fit(items, item_ids=ids)
    queries = clustered(50, 24, 80, np.random.default_rng(5))
    ex = random_exclude(rng, 50, 3000, 8)
    before = index.search(queries, 12, exclude=ex)
    index.save(tmp_path / "ix")
    loaded = ItemIndex.load(tmp_path / "ix")
    after = loaded.search(queries, 12, exclude=ex)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert loaded.item_ids_.tolist() == ids
    assert (loaded.kind_, loaded.nlist_, loaded.nprobe_) == (kind, index.nlist_, index.nprobe_)
    assert loaded.get_params() == index.get_params()
    files = sorted(p.name for p in (tmp_path / "ix").iterdir())
    assert "meta.json" in files and "vectors.safetensors" in files
    assert any(f.endswith(".faiss") for f in files) == (kind == "ivf")
    assert not any(f.endswith((".pkl", ".pickle")) for f in files)
    if kind == "ivf":  # a changed nprobe is saved
        index.set_nprobe(2).save(tmp_path / "ix")
        assert ItemIndex.load(tmp_path / "ix").nprobe_ == 2


def test_load_refuses_mixed_saves(tmp_path):
    items = np.eye(5, dtype=np.float32)
    ItemIndex("exact", device="cpu").fit(items).save(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    meta["save_id"] = "0" * 32
    (tmp_path / "a" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="different saves"):
        ItemIndex.load(tmp_path / "a")
    with pytest.raises(ValueError, match="meta.json is missing"):
        ItemIndex.load(tmp_path / "nothing")


def test_resave_into_same_directory_replaces_faiss_file(tmp_path):
    pytest.importorskip("faiss")
    items = np.random.default_rng(6).standard_normal((200, 8)).astype(np.float32)
    ItemIndex("ivf", nlist=4, device="cpu").fit(items).save(tmp_path)
    ItemIndex("ivf", nlist=4, device="cpu").fit(items[:100]).save(tmp_path)
    assert len(list(tmp_path.glob("*.faiss"))) == 1
    assert ItemIndex.load(tmp_path).n_items_ == 100


# ------------------------------------------------------------------------------- auto


def test_auto_choice_is_logged(caplog, monkeypatch):
    pytest.importorskip("faiss")
    monkeypatch.setattr(retrieval, "AUTO_IVF_MIN_ITEMS", 1000)
    rng = np.random.default_rng(7)
    with caplog.at_level(logging.INFO, logger="interestflow.retrieval"):
        small = ItemIndex(device="cpu").fit(rng.standard_normal((999, 8)))
        big = ItemIndex(device="cpu").fit(rng.standard_normal((1000, 8)))
    assert (small.kind_, big.kind_) == ("exact", "ivf")
    lines = [r.getMessage() for r in caplog.records if r.name == "interestflow.retrieval"]
    assert len(lines) == 2
    assert "'auto' -> 'exact'" in lines[0] and "999 items < AUTO_IVF_MIN_ITEMS=1000" in lines[0]
    assert "'auto' -> 'ivf'" in lines[1] and f"nprobe={big.nprobe_}" in lines[1]


def test_without_faiss(caplog, monkeypatch):
    monkeypatch.setattr(retrieval, "AUTO_IVF_MIN_ITEMS", 10)
    monkeypatch.setattr(retrieval, "module_available", lambda name: name != "faiss")
    items = np.random.default_rng(8).standard_normal((20, 4))
    with caplog.at_level(logging.INFO, logger="interestflow.retrieval"):
        index = ItemIndex(device="cpu").fit(items)
    assert index.kind_ == "exact" and "interestflow[faiss]" in index.reason_
    assert "faiss is not installed" in caplog.records[-1].getMessage()
    with pytest.raises(BackendUnavailableError, match=r"interestflow\[faiss\]"):
        ItemIndex("ivf", device="cpu").fit(items)


def test_import_does_not_load_faiss():
    code = ("import sys, numpy as np\nfrom interestflow.retrieval import ItemIndex\n"
            "ItemIndex('exact', device='cpu').fit(np.eye(3)).search(np.eye(3), 2)\n"
            "print('faiss' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


# ------------------------------------------------------------------------------- errors


def _fitted():
    return ItemIndex("exact", device="cpu").fit(np.eye(4, dtype=np.float32))


@pytest.mark.parametrize("params,err,match", [
    ({"kind": "hnsw"}, ValueError, "kind='hnsw'"),
    ({"kind": "ivf", "nlist": 10}, ValueError, "nlist=10 exceeds the number of items"),
    ({"kind": "ivf", "nlist": 0}, ValueError, "nlist=0"),
    ({"kind": "ivf", "nlist": 2.5}, TypeError, "nlist must be an integer"),
    ({"kind": "ivf", "nlist": 2, "nprobe": 3}, ValueError, "nprobe=3 exceeds nlist=2"),
    ({"backend": "cuda"}, ValueError, "backend='cuda'"),
    ({"random_state": -1}, ValueError, "random_state=-1"),
    ({"kind": "ivf", "scan": "fast"}, ValueError, "scan='fast'"),
    ({"kind": "ivf", "candidates": "fp8"}, ValueError, "candidates='fp8'"),
])
def test_bad_params(params, err, match):
    if params.get("kind") == "ivf":
        pytest.importorskip("faiss")
    with pytest.raises(err, match=match):
        ItemIndex(device="cpu", **params).fit(np.eye(4, dtype=np.float32))


def test_bad_fit_input():
    x = np.ones((5, 3))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="item_vectors row 3 contains NaN"):
        ItemIndex("exact").fit(x)
    with pytest.raises(ValueError, match="item_vectors must be 2-D"):
        ItemIndex("exact").fit(np.ones(3))
    with pytest.raises(TypeError, match="item_vectors must hold real numbers"):
        ItemIndex("exact").fit(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="item_vectors has no rows"):
        ItemIndex("exact").fit(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="item_ids has 2 entries"):
        ItemIndex("exact").fit(np.eye(3), item_ids=[1, 2])
    with pytest.raises(ValueError, match="item_ids are not unique: 'b'"):
        ItemIndex("exact").fit(np.eye(3), item_ids=["a", "b", "b"])


def test_bad_search_input():
    index = _fitted()
    q = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="not fitted"):
        ItemIndex().search(q, 1)
    with pytest.raises(ValueError, match="queries have dim 3 but the index holds dim 4"):
        index.search(np.ones((2, 3)), 1)
    with pytest.raises(ValueError, match=r"reshape\(1, -1\)"):
        index.search(np.ones(4), 1)
    with pytest.raises(ValueError, match="queries row 1 contains NaN"):
        index.search(np.array([[1, 0, 0, 0], [np.inf, 0, 0, 0]]), 1)
    with pytest.raises(ValueError, match="k=0"):
        index.search(q, 0)
    with pytest.raises(TypeError, match="k must be an integer"):
        index.search(q, 2.0)
    with pytest.raises(ValueError, match="indptr has length 3; it must be n_queries \\+ 1 = 5"):
        index.search(q, 1, exclude=([0, 0, 0], []))
    with pytest.raises(ValueError, match="query 2 excludes item row 4, out of range"):
        index.search(q, 1, exclude=([0, 0, 0, 1, 1], [4]))
    with pytest.raises(ValueError, match="indptr decreases at query 1"):
        index.search(q, 1, exclude=([0, 2, 1, 2, 2], [0, 1]))
    with pytest.raises(TypeError, match="exclude must be None"):
        index.search(q, 1, exclude=[[0, 1]])
    with pytest.raises(ValueError, match="set_nprobe needs a fitted IVF index"):
        index.set_nprobe(2)


def test_set_nprobe_errors():
    pytest.importorskip("faiss")
    index = ItemIndex("ivf", nlist=4, device="cpu").fit(np.eye(8, dtype=np.float32) + 0.1)
    with pytest.raises(ValueError, match="nprobe=5 exceeds nlist=4"):
        index.set_nprobe(5)
    with pytest.raises(TypeError, match="nprobe must be an integer"):
        index.set_nprobe(1.5)
