"""interestflow._utils: the shared checkers, normaliser, time converters and worker threads."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from interestflow._utils import (TorchWorkers, check_int, datetimes_to_seconds, pca_2d,
                                 time_to_seconds, torch_threads, unit_rows)


def test_check_int_names_the_value_and_its_range():
    assert check_int("k", np.int32(3), 1) == 3 and type(check_int("k", 3, 1)) is int
    assert check_int("k", None, 1, none_ok=True) is None
    with pytest.raises(TypeError, match=r"k must be an integer >= 1, got float \(2.5\)"):
        check_int("k", 2.5, 1)
    with pytest.raises(TypeError, match="k must be an integer >= 1, got bool"):
        check_int("k", True, 1)
    with pytest.raises(ValueError, match=r"k=0 is invalid; pass an integer >= 1"):
        check_int("k", 0, 1)
    with pytest.raises(ValueError, match=r"p=9 is invalid; pass an integer in \[0, 8\]"):
        check_int("p", 9, 0, 8)


def test_unit_rows_keeps_zero_rows_and_names_bad_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]])
    u = unit_rows(x)
    assert u.dtype == np.float32
    np.testing.assert_allclose(u, [[0.6, 0.8], [0.0, 0.0], [1e-18, 0.0]], atol=1e-7)
    assert unit_rows(x, dtype=None).dtype == np.float64
    big = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(unit_rows(big, chunk=3), axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="vectors row 1 contains NaN or infinity"):
        unit_rows(np.array([[1.0, 0.0], [np.nan, 1.0]]), name="vectors")


def test_time_converters_agree_on_utc():
    t = 1_600_000_000.0
    assert time_to_seconds(t, "now") == t
    assert time_to_seconds(1_600_000_000_000, "now", scale=1e-3) == t
    assert time_to_seconds(dt.datetime.fromtimestamp(t, dt.timezone.utc).replace(tzinfo=None),
                           "now") == t
    assert time_to_seconds(pd.Timestamp(t, unit="s"), "now") == t
    assert time_to_seconds(np.datetime64(int(t), "s"), "now") == t
    assert time_to_seconds(dt.date(2020, 9, 13), "now") == 1_599_955_200.0
    assert time_to_seconds("2020-09-13T12:26:40Z", "now", strings=True) == t
    with pytest.raises(TypeError, match="now must be unix seconds"):
        time_to_seconds("2020-09-13", "now")
    with pytest.raises(ValueError, match="now is not an ISO 8601 time"):
        time_to_seconds("yesterday", "now", strings=True)
    with pytest.raises(ValueError, match="now must be a valid time, got NaT"):
        time_to_seconds(pd.NaT, "now")
    s = pd.Series(pd.to_datetime([t, t + 1.5], unit="s")).dt.tz_localize("Europe/Paris")
    np.testing.assert_array_equal(datetimes_to_seconds(s), [t - 7200, t - 7198.5])


def test_torch_workers_run_everything_and_restore_threads():
    import torch

    before = torch.get_num_threads()
    with TorchWorkers(3) as w:
        out = w.map(lambda i: (i, torch.get_num_threads()), range(7))
        hit = np.zeros(50, int)

        def kernel(arr, lo, hi):
            arr[lo:hi] += 1

        w.ranges(kernel, 50, hit)
    assert [o[0] for o in out] == list(range(7)) and {o[1] for o in out} == {1}
    assert (hit == 1).all() and torch.get_num_threads() == before
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_pca_2d_axes_and_their_sign_convention():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)) * [5, 2, 1, 1, 1]
    p = pca_2d(x)
    assert p.shape == (200, 2)
    assert abs(np.var(p[:, 0]) / np.var(x[:, 0]) - 1) < 0.05
    # the axes' signs follow their loadings, not the data: -x gives the mirrored picture
    np.testing.assert_allclose(pca_2d(-x), -p, atol=1e-9)


def test_renamed_parameters_keep_their_old_keyword_with_a_warning():
    from interestflow._utils import renamed

    assert renamed("random_state", 3, "seed", None, 0) == 3
    with pytest.warns(DeprecationWarning, match="seed= is deprecated; pass random_state="):
        assert renamed("random_state", 0, "seed", 7, 0) == 7
    with pytest.raises(TypeError, match="pass random_state= only"):
        renamed("random_state", 3, "seed", 7, 0)


def test_unit_rows_float32_precision_is_the_old_float32_normaliser():
    x = np.random.default_rng(1).standard_normal((50, 16)).astype(np.float32)
    old = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    np.testing.assert_array_equal(unit_rows(x, precision="float32"), old)
    with pytest.raises(ValueError, match="precision='half' is invalid"):
        unit_rows(x, precision="half")


def test_check_nonnegative_names_the_first_bad_row_and_the_count():
    from interestflow._utils import check_nonnegative

    np.testing.assert_array_equal(check_nonnegative("w", None, 3, "one per row", default=1.0),
                                  [1.0, 1.0, 1.0])
    assert check_nonnegative("w", np.array([0, 2]), 2, "one per row").dtype == np.float64
    with pytest.raises(ValueError, match=r"w must be finite and >= 0, got nan at row 1 \(2 rows"):
        check_nonnegative("w", [1.0, np.nan, -1.0], 3, "one per row")
    with pytest.raises(ValueError, match=r"w must have shape \(2,\) \(one per row\)"):
        check_nonnegative("w", [1.0], 2, "one per row")
    with pytest.raises(TypeError, match="w must be numeric, got dtype bool"):
        check_nonnegative("w", [True, False], 2, "one per row")
