"""decayed_user_means: native (C++/OpenMP) vs numpy reference vs a float64 loop written here."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pandas as pd
import pytest

from interestflow import _native
from interestflow.interests import (
    SECONDS_PER_DAY,
    decayed_user_means,
    group_offsets,
    sort_by_group,
)

BACKENDS = ["native", "numpy"]
DAY = SECONDS_PER_DAY
YEAR = 365.25 * DAY


def loop_truth(vectors, offsets, ts, weights, ref, half_life_days):
    """Independent float64 per-user loop in log space (the definition, written plainly)."""
    hl = np.inf if half_life_days is None else half_life_days * DAY
    n_users = len(offsets) - 1
    means = np.zeros((n_users, vectors.shape[1]))
    log2s = np.full(n_users, -np.inf)
    for u in range(n_users):
        lo, hi = offsets[u], offsets[u + 1]
        with np.errstate(divide="ignore"):
            e = np.log2(weights[lo:hi]) - (ref - ts[lo:hi]) / hl
        if hi == lo or not np.isfinite(e).any():
            continue
        m = e.max()
        w = np.exp2(e - m)
        means[u] = (w[:, None] * vectors[lo:hi].astype(np.float64)).sum(0) / w.sum()
        log2s[u] = m + np.log2(w.sum())
    return means, log2s


def make_case(rng, counts, dim, *, zero_frac=0.0, dtype=np.float32, span_days=400.0):
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    n = int(offsets[-1])
    vectors = rng.standard_normal((n, dim)).astype(dtype)
    ts = 1.6e9 + rng.uniform(0, span_days * DAY, n)
    weights = rng.uniform(0.1, 3.0, n)
    weights[rng.random(n) < zero_frac] = 0.0
    return vectors, offsets, ts, weights


CASES = {
    "1 user 1 row dim 1": dict(counts=[1], dim=1),
    "1 user 37 rows dim 384": dict(counts=[37], dim=384),
    "single-event users dim 384": dict(counts=[1, 1, 5, 1, 2, 1, 9], dim=384),
    "odd dim 3, varied sizes": dict(counts=[3, 1, 17, 4, 1, 64, 2], dim=3),
    "zero-weight rows": dict(counts=[6, 4, 8, 3, 5], dim=11, zero_frac=0.4),
    "empty users": dict(counts=[0, 4, 0, 0, 3, 0], dim=5),
    "many users dim 96": dict(counts=np.arange(1, 301) % 23 + 1, dim=96),
    "float16 vectors": dict(counts=[5, 1, 12, 7], dim=33, dtype=np.float16),
    # float16 rows are converted in chunks of 20 rows at dim 384: users cross chunk borders
    "float16 dim 384 long users": dict(counts=[50, 3, 41, 1, 20], dim=384, dtype=np.float16),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("half_life_days", [30.0, 1.5, None])
def test_native_matches_numpy_and_loop(name, half_life_days):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    vectors, offsets, ts, weights = make_case(rng, **CASES[name])
    out = {b: decayed_user_means(vectors, offsets, ts, weights, half_life_days=half_life_days,
                                 backend=b) for b in BACKENDS}
    truth_m, truth_l = loop_truth(vectors, offsets, ts, weights, ts.max(), half_life_days)
    for b, (means, log2s) in out.items():
        assert means.dtype == np.float32 and means.shape == (len(offsets) - 1, vectors.shape[1])
        assert log2s.dtype == np.float64 and log2s.shape == (len(offsets) - 1,)
        np.testing.assert_allclose(means, truth_m, rtol=1e-5, atol=1e-5, err_msg=b)
        np.testing.assert_allclose(log2s, truth_l, rtol=1e-12, atol=1e-9, err_msg=b)
    np.testing.assert_allclose(out["native"][0], out["numpy"][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.isneginf(out["native"][1]), np.isneginf(truth_l))


def test_empty_and_all_zero_users_get_zero_vector_and_neg_inf():
    v = np.ones((3, 2), np.float32)
    for b in BACKENDS:
        means, log2s = decayed_user_means(v, [0, 0, 2, 3], [0.0, 1.0, 2.0], [0.0, 0.0, 2.0],
                                          backend=b)
        np.testing.assert_array_equal(means, [[0, 0], [0, 0], [1, 1]])
        assert np.isneginf(log2s[0]) and np.isneginf(log2s[1]) and log2s[2] == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_toy_two_events_one_day_apart(backend):
    v = np.array([[2.0, 0.0, 1.0], [0.0, 4.0, 1.0]], np.float32)
    ts = np.array([1_000_000.0, 1_000_000.0 + DAY])
    means, log2s = decayed_user_means(v, [0, 2], ts, half_life_days=1.0, backend=backend)
    # weights 0.5 (one day old) and 1 (newest is the reference)
    np.testing.assert_allclose(means[0], [(0.5 * 2) / 1.5, 4 / 1.5, 1.0], rtol=1e-6)
    assert log2s[0] == pytest.approx(np.log2(1.5), abs=1e-12)
    # one more day later: weights 0.25 and 0.5, same mean, half the evidence
    later = ts[1] + DAY
    means2, log2s2 = decayed_user_means(v, [0, 2], ts, half_life_days=1.0, now=later,
                                        backend=backend)
    np.testing.assert_allclose(means2, means, rtol=1e-6)
    assert log2s2[0] == pytest.approx(np.log2(0.75), abs=1e-12)
    # event weights multiply: weight 2 on the old event makes both count 1
    means3, _ = decayed_user_means(v, [0, 2], ts, [2.0, 1.0], half_life_days=1.0,
                                   backend=backend)
    np.testing.assert_allclose(means3[0], [1.0, 2.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_inactive_user_does_not_underflow(backend):
    # half-life 1 day, 20 years idle: true weights are 2**-7305, far below the smallest double
    rng = np.random.default_rng(7)
    now = 1.7e9
    v = rng.standard_normal((5, 384)).astype(np.float32)
    ts = np.array([now - 20 * YEAR - 2 * DAY, now - 20 * YEAR, now - 20 * YEAR - DAY,
                   now - DAY, now])
    offsets = [0, 3, 5]
    means, log2s = decayed_user_means(v, offsets, ts, half_life_days=1.0, now=now,
                                      backend=backend)
    # relative weights inside the idle user are 0.25, 1, 0.5 whatever the absolute scale
    expected = (0.25 * v[0].astype(np.float64) + v[1] + 0.5 * v[2]) / 1.75
    np.testing.assert_allclose(means[0], expected, rtol=1e-6, atol=1e-6)
    assert np.all(np.abs(means[0]) > 0)
    assert log2s[0] == pytest.approx(-20 * 365.25 + np.log2(1.75), rel=1e-12)
    np.testing.assert_allclose(means[1], (0.5 * v[3].astype(np.float64) + v[4]) / 1.5,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_decay_is_weighted_mean(backend):
    v = np.array([[1.0], [3.0], [10.0]], np.float32)
    for hl in (None, np.inf):
        means, log2s = decayed_user_means(v, [0, 3], [0.0, 5e8, 1e9], [1.0, 1.0, 2.0],
                                          half_life_days=hl, backend=backend)
        assert means[0, 0] == pytest.approx(24.0 / 4.0)
        assert log2s[0] == pytest.approx(2.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("now", [
    1_700_000_000.0,
    pd.Timestamp(1_700_000_000, unit="s", tz="UTC"),
    pd.Timestamp(1_700_000_000, unit="s"),  # naive -> UTC
    pd.Timestamp(1_700_000_000, unit="s", tz="UTC").tz_convert("Asia/Shanghai"),
    np.datetime64(1_700_000_000, "s"),
    dt.datetime.fromtimestamp(1_700_000_000, tz=dt.timezone.utc),
])
def test_now_accepts_time_types(backend, now):
    v = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    ts = np.array([1_700_000_000.0 - 2 * DAY, 1_700_000_000.0 - DAY])
    means, log2s = decayed_user_means(v, [0, 2], ts, half_life_days=1.0, now=now,
                                      backend=backend)
    np.testing.assert_allclose(means[0], [0.25 / 0.75, 0.5 / 0.75], rtol=1e-6)
    assert log2s[0] == pytest.approx(np.log2(0.75), abs=1e-12)


def test_datetime64_ts_equals_seconds():
    rng = np.random.default_rng(3)
    v, offsets, ts, w = make_case(rng, [4, 2, 6], 8)
    ts = np.round(ts)
    as_dt = ts.astype(np.int64).astype("datetime64[s]")
    a = decayed_user_means(v, offsets, ts, w, half_life_days=3.0)
    b = decayed_user_means(v, offsets, as_dt, w, half_life_days=3.0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_heavy_user_split_across_threads_matches(dtype):
    # one user with most rows is split across threads (>= 8192 rows, >= n_rows / (2 * threads))
    rng = np.random.default_rng(11)
    v, offsets, ts, w = make_case(rng, [3, 20_000, 1, 7, 9001], 16, zero_frac=0.1, dtype=dtype)
    ref = decayed_user_means(v, offsets, ts, w, half_life_days=20.0, backend="numpy")
    truth_m, truth_l = loop_truth(v, offsets, ts, w, ts.max(), 20.0)
    one = decayed_user_means(v, offsets, ts, w, half_life_days=20.0, n_threads=1)
    for threads in (2, 3):
        many = decayed_user_means(v, offsets, ts, w, half_life_days=20.0, n_threads=threads)
        np.testing.assert_allclose(many[0], truth_m, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(many[0], one[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(many[1], one[1])
        again = decayed_user_means(v, offsets, ts, w, half_life_days=20.0, n_threads=threads)
        np.testing.assert_array_equal(again[0], many[0])  # deterministic for fixed threads
    np.testing.assert_allclose(ref[0], truth_m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one[1], truth_l, rtol=1e-12)


def test_float16_specials_and_equivalence_to_float32():
    # subnormal, max and negative halves convert exactly
    vals = np.array([[6e-8, 65504.0, -2.5, 0.0, -0.0, 1e-5]], np.float16)
    v16 = np.repeat(vals, 3, axis=0)
    means, _ = decayed_user_means(v16, [0, 3], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(means[0], vals[0].astype(np.float32))
    rng = np.random.default_rng(5)
    v, offsets, ts, w = make_case(rng, [9, 1, 30, 4], 70, dtype=np.float16)
    a = decayed_user_means(v, offsets, ts, w)
    b = decayed_user_means(v.astype(np.float32), offsets, ts, w)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-7)


def test_gil_released_concurrent_calls_are_correct():
    rng = np.random.default_rng(2)
    cases = [make_case(rng, rng.integers(1, 40, size=800), 64) for _ in range(2)]
    expected = [decayed_user_means(*c, backend="numpy") for c in cases]
    results: dict = {}
    errors: list = []

    def work(k):
        try:
            for _ in range(3):
                results[k] = decayed_user_means(*cases[k], n_threads=1)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in range(2):
        np.testing.assert_allclose(results[k][0], expected[k][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(results[k][1], expected[k][1], rtol=1e-12)


def test_gil_released_other_thread_runs_during_native_call():
    rng = np.random.default_rng(4)
    v, offsets, ts, w = make_case(rng, np.full(4000, 50), 128)
    ref = np.full(len(offsets) - 1, ts.max())
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    progressed = 0
    try:
        for _ in range(5):
            before = counter[0]
            _native.grouped_decayed_mean(v, offsets, ts, w, ref, 30 * DAY, 1)
            progressed += counter[0] - before
    finally:
        stop.set()
        t.join()
    # with the GIL held, no Python bytecode can run in `spin` while the call is in C++
    assert progressed > 0


def test_group_offsets_and_sort_by_group_from_unsorted_ids():
    ids = np.array(["u2", "u1", "u2", "u3", "u1", "u2"], dtype=object)
    order = sort_by_group(ids)
    assert order.tolist() == [1, 4, 0, 2, 5, 3]  # stable: original order inside a user
    offsets = group_offsets(ids[order])
    assert offsets.tolist() == [0, 2, 5, 6]
    assert group_offsets(np.array([], dtype=np.int64)).tolist() == [0]
    assert group_offsets([7]).tolist() == [0, 1]
    # grouped but not sorted is accepted
    assert group_offsets([5, 5, 1, 3, 3]).tolist() == [0, 2, 3, 5]
    v = np.arange(6, dtype=np.float32)[:, None]
    means, _ = decayed_user_means(v[order], offsets, np.zeros(6), half_life_days=None)
    np.testing.assert_allclose(means[:, 0], [(1 + 4) / 2, (0 + 2 + 5) / 3, 3.0])


def test_group_offsets_rejects_ungrouped_keys():
    with pytest.raises(ValueError, match=r"key 1 at row 3 already appeared at row 0"):
        group_offsets([1, 1, 2, 1])
    with pytest.raises(ValueError, match="1-D"):
        group_offsets(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="mixed"):
        sort_by_group(np.array([1, "a"], dtype=object))


def _base(n=6):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 4)).astype(np.float32), np.array([0, 2, n]),
            np.arange(n, dtype=np.float64), np.ones(n))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("change, exc, pattern", [
    (dict(offsets=[1, 2, 6]), ValueError, r"offsets\[0\] must be 0, got 1"),
    (dict(offsets=[0, 4, 3, 6]), ValueError,
     r"non-decreasing.*offsets\[2\]=3 < offsets\[1\]=4 \(user 1"),
    (dict(offsets=[0, 2, 5]), ValueError,
     r"offsets\[-1\] must equal the number of vector rows \(6\), got 5"),
    (dict(offsets=[0.0, 6.0]), TypeError, "offsets must be integers"),
    (dict(weights=[1, 1, 1, np.nan, 1, np.nan]), ValueError,
     r"weights must be finite and >= 0, got nan at row 3 \(2 rows"),
    (dict(weights=[1, 1, -0.5, 1, 1, 1]), ValueError, r"got -0.5 at row 2"),
    (dict(weights=[1, 1, 1, 1, 1, np.inf]), ValueError, r"got inf at row 5"),
    (dict(weights=[1, 1, 1]), ValueError, r"weights must have shape \(6,\).*got \(3,\)"),
    (dict(weights=np.array(["a"] * 6)), TypeError, "weights must be numeric"),
    (dict(ts=[0, 1, np.inf, 3, 4, 5.0]), ValueError, r"ts must be finite, got inf at row 2"),
    (dict(ts=np.arange(5.0)), ValueError, r"ts must have shape \(6,\).*got \(5,\)"),
    (dict(vectors=np.zeros(6, np.float32)), ValueError, "vectors must be 2-D"),
    (dict(vectors=np.zeros((6, 4), np.int32)), TypeError, "vectors must be a floating array"),
    (dict(half_life_days=0.0), ValueError, "half_life_days must be > 0"),
    (dict(half_life_days=-3), ValueError, "half_life_days must be > 0"),
    (dict(half_life_days=float("nan")), ValueError, "half_life_days must be > 0"),
    (dict(now=3.5), ValueError,
     r"ts at row 4 \(4 s\) is after now \(3.5 s\).*2 rows affected"),
    (dict(now=pd.NaT), ValueError, "now must be a valid time, got NaT"),
    (dict(now="2020-01-01"), TypeError, "now must be unix seconds"),
    (dict(n_threads=-1), ValueError, "n_threads must be an integer >= 0"),
])
def test_bad_input_raises_with_row(backend, change, exc, pattern):
    vectors, offsets, ts, weights = _base()
    kw = dict(vectors=vectors, offsets=offsets, ts=ts, weights=weights)
    extra = {k: val for k, val in change.items() if k not in kw}
    kw.update({k: val for k, val in change.items() if k in kw})
    with pytest.raises(exc, match=pattern):
        decayed_user_means(kw["vectors"], kw["offsets"], kw["ts"], kw["weights"],
                           backend=backend, **extra)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_nonfinite_vector_named_by_row_and_column(backend, dtype):
    vectors, offsets, ts, weights = _base()
    vectors = vectors.astype(dtype)
    vectors[4, 2] = np.nan
    vectors[5, 0] = np.inf
    with pytest.raises(ValueError,
                       match=r"vectors must be finite, got -?nan at row 4, column 2 \(user 1\)"):
        decayed_user_means(vectors, offsets, ts, weights, backend=backend)
    # a zero weight does not hide a NaN
    vectors[4, 2] = 0
    weights[5] = 0.0
    with pytest.raises(ValueError, match=r"got inf at row 5, column 0"):
        decayed_user_means(vectors, offsets, ts, weights, backend=backend)


def test_unknown_backend():
    with pytest.raises(ValueError,
                       match=r"backend must be one of \['native', 'numpy'\], got 'cuda'"):
        decayed_user_means(*_base(), backend="cuda")


def test_native_module_validates_directly():
    v, offsets, ts, w = _base()
    ref = np.full(2, 10.0)
    f = _native.grouped_decayed_mean
    with pytest.raises(ValueError,
                       match=r"non-decreasing, but offsets\[2\]=6 < offsets\[1\]=7 \(user 1\)"):
        f(v, np.array([0, 7, 6]), ts, w, ref, 1.0)
    with pytest.raises(ValueError, match=r"offsets\[-1\] must equal the number of vector rows"):
        f(v, np.array([0, 2, 5]), ts, w, ref, 1.0)
    with pytest.raises(ValueError, match=r"weights must be finite and >= 0, got nan at row 1"):
        f(v, offsets, ts, np.array([1, np.nan, 1, 1, 1, 1.0]), ref, 1.0)
    with pytest.raises(ValueError, match=r"ts must be finite, got -inf at row 0"):
        f(v, offsets, np.array([-np.inf, 1, 2, 3, 4, 5.0]), w, ref, 1.0)
    with pytest.raises(ValueError, match=r"ref has 3 entries, expected 2"):
        f(v, offsets, ts, w, np.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"ts has 5 entries, expected 6"):
        f(v, offsets, ts[:5].copy(), w, ref, 1.0)
    with pytest.raises(ValueError, match=r"ref must be finite, got nan for user 1"):
        f(v, offsets, ts, w, np.array([1.0, np.nan]), 1.0)
    with pytest.raises(TypeError, match="vectors must be float32 or float16, got float64"):
        f(v.astype(np.float64), offsets, ts, w, ref, 1.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        f(np.asfortranarray(v), offsets, ts, w, ref, 1.0)
    # per-user reference times are honoured
    means, log2s = f(v, offsets, ts, w, np.array([1.0, 10.0]), 1.0)
    assert log2s[0] == pytest.approx(np.log2(2 ** -1 + 1.0))
    assert log2s[1] == pytest.approx(np.log2(sum(2.0 ** -(10 - t) for t in range(2, 6))))


@pytest.mark.parametrize("impl", ["avx512", "f16c", "portable"])
def test_every_float16_value_converts_exactly(impl):
    halves = np.arange(65536, dtype=np.uint16)
    expected = halves.view(np.float16).astype(np.float32)
    got = _native._f16_to_f32(halves, impl)
    if got is None:
        pytest.skip(f"float16 converter {impl!r} not available on this build / CPU")
    nan = np.isnan(expected)
    # bit-exact for every non-NaN half (zeros, subnormals, normals, infinities, signs)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], expected.view(np.uint32)[~nan])
    assert np.isnan(got[nan]).all()


def test_float16_converter_in_use_is_reported():
    assert _native.f16_impl in ("avx512", "f16c", "portable")
    assert _native._f16_to_f32(np.zeros(3, np.uint16), "no-such-impl") is None
