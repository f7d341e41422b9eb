"""Per-user interest vectors: time-decayed weighted means of event vectors.

A user's interest vector is the weighted mean of the vectors of the user's events, where event
``i`` has weight ``weight_i * 2 ** (-(now - ts_i) / half_life)``: an event one half-life old
counts half as much as one happening now.  Rows are grouped by user with ``offsets`` (CSR
style): user ``u`` owns rows ``offsets[u]:offsets[u + 1]``; :func:`sort_by_group` and
:func:`group_offsets` build them from unsorted ids.

Two backends compute the same thing: ``"native"`` (C++ / OpenMP in ``interestflow._native``,
GIL released) and ``"numpy"`` (the vectorised reference it is tested against).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._utils import check_nonnegative, time_to_seconds

__all__ = ["decayed_user_means", "group_offsets", "sort_by_group", "SECONDS_PER_DAY"]

SECONDS_PER_DAY = 86_400.0
_BACKENDS = ("native", "numpy")
# Rows per chunk in the numpy reference: the weighted chunk stays in cache and float32 sums
# never run over more than this many rows before being added into float64.
_NUMPY_CHUNK_ROWS = 2048


def sort_by_group(keys) -> np.ndarray:
    """Stable order that brings equal keys together.

    Parameters
    ----------
    keys : array-like, shape (n,)
        Group key of each row (user ids or codes; any sortable dtype, strings included).

    Returns
    -------
    order : ndarray of int64, shape (n,)
        ``keys[order]`` is sorted; rows with equal keys keep their original relative order,
        so events of one user stay in time order if they were.

    Examples
    --------
    >>> sort_by_group(["b", "a", "b", "a"]).tolist()
    [1, 3, 0, 2]
    """
    keys = np.asarray(keys)
    if keys.ndim != 1:
        raise ValueError(f"keys must be 1-D, got shape {keys.shape}")
    try:
        return np.argsort(keys, kind="stable").astype(np.int64, copy=False)
    except TypeError as exc:
        raise TypeError("keys hold values of mixed, unorderable types; convert the ids to one "
                        f"type (e.g. str) first ({exc})") from None


def group_offsets(user_codes_sorted) -> np.ndarray:
    """Offsets of the runs of equal values in a sorted key array.

    Parameters
    ----------
    user_codes_sorted : array-like, shape (n,)
        Keys sorted so that equal keys are adjacent (e.g. ``keys[sort_by_group(keys)]``).

    Returns
    -------
    offsets : ndarray of int64, shape (n_groups + 1,)
        Group ``g`` is rows ``offsets[g]:offsets[g + 1]``; ``offsets[0] == 0`` and
        ``offsets[-1] == n``.  Every group is non-empty.

    Raises
    ------
    ValueError
        If ``user_codes_sorted`` is not 1-D, or a key reappears after a different key (the input
        was not grouped), naming the row.

    Examples
    --------
    >>> group_offsets([3, 3, 5, 7, 7, 7]).tolist()
    [0, 2, 3, 6]
    """
    keys = np.asarray(user_codes_sorted)
    if keys.ndim != 1:
        raise ValueError(f"user_codes_sorted must be 1-D, got shape {keys.shape}")
    n = keys.shape[0]
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    offsets = np.concatenate(([0], change, [n])).astype(np.int64)
    if len(offsets) > 2 and not _is_monotone(keys):
        # Grouped but not sorted is fine; a key that comes back after another is not.
        seen: dict = {}
        for start in offsets[:-1].tolist():
            k = keys[start].item() if isinstance(keys[start], np.generic) else keys[start]
            if k in seen:
                raise ValueError(
                    f"user_codes_sorted is not grouped: key {k!r} at row {start} already "
                    f"appeared at row {seen[k]} before a different key; sort first "
                    "(keys[sort_by_group(keys)])")
            seen[k] = start
    return offsets


def _is_monotone(keys: np.ndarray) -> bool:
    try:
        return bool(np.all(keys[1:] >= keys[:-1]))
    except TypeError:  # unorderable objects
        return False


def to_seconds(value, name: str) -> float:
    """A scalar time (unix seconds, datetime, date, Timestamp, datetime64) as float unix
    seconds (:func:`interestflow._utils.time_to_seconds`)."""
    return time_to_seconds(value, name)


def _as_seconds_array(ts, n_rows: int) -> np.ndarray:
    ts = np.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] != n_rows:
        raise ValueError(
            f"ts must have shape ({n_rows},) (one time per vector row), got {ts.shape}")
    if np.issubdtype(ts.dtype, np.datetime64):
        nat = np.isnat(ts)
        if nat.any():
            i = int(np.argmax(nat))
            raise ValueError(f"ts must be valid times, got NaT at row {i} "
                             f"({int(nat.sum())} rows affected)")
        return ts.astype("datetime64[ns]").astype(np.int64).astype(np.float64) / 1e9
    if ts.dtype.kind not in "iuf":
        raise TypeError(f"ts must be numeric unix seconds or datetime64, got dtype {ts.dtype}")
    return np.ascontiguousarray(ts, dtype=np.float64)


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    """(first True position, count) of a boolean mask."""
    return int(np.argmax(mask)), int(mask.sum())


def check_decay_inputs(vectors, offsets, ts, weights, half_life_days, now, n_threads):
    """Validate and normalise arguments shared by both backends."""
    vectors = _check_vectors(vectors)
    n_rows = vectors.shape[0]
    offsets = _check_offsets(offsets, n_rows)
    ts = _as_seconds_array(ts, n_rows)
    bad = ~np.isfinite(ts)
    if bad.any():
        i, count = _first_bad(bad)
        raise ValueError(f"ts must be finite, got {ts[i]} at row {i} ({count} rows affected)")
    weights = check_nonnegative("weights", weights, n_rows, "one per vector row",
                                default=1.0)
    half_life_s = _half_life_seconds(half_life_days)
    ref = _check_now(now, ts)
    if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, numbers.Integral) \
            or n_threads < 0:
        raise ValueError(f"n_threads must be an integer >= 0 (0 = all cores), got {n_threads!r}")
    return vectors, offsets, ts, weights, half_life_s, ref, int(n_threads)


def _check_vectors(vectors):
    """Check the event vectors: 2-D floats, as contiguous float32 (float16 kept)."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n_rows, dim), got shape {vectors.shape}")
    if vectors.dtype not in (np.float32, np.float16):
        if vectors.dtype.kind != "f":
            raise TypeError(
                f"vectors must be a floating array (float32 or float16), got dtype {vectors.dtype}")
        vectors = vectors.astype(np.float32)
    return np.ascontiguousarray(vectors)


def _check_offsets(offsets, n_rows):
    """Check the CSR offsets of the rows over users (int64, from 0 to ``n_rows``)."""
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError(
            f"offsets must be 1-D with n_users + 1 >= 1 entries, got shape {offsets.shape}")
    if offsets.dtype.kind not in "iu":
        raise TypeError(f"offsets must be integers, got dtype {offsets.dtype}")
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets[0] != 0:
        raise ValueError(f"offsets[0] must be 0, got {int(offsets[0])}")
    steps = np.diff(offsets)
    if (steps < 0).any():
        u, count = _first_bad(steps < 0)
        raise ValueError(
            f"offsets must be non-decreasing, but offsets[{u + 1}]={int(offsets[u + 1])} < "
            f"offsets[{u}]={int(offsets[u])} (user {u}; {count} decreasing steps)")
    if offsets[-1] != n_rows:
        raise ValueError(f"offsets[-1] must equal the number of vector rows ({n_rows}), "
                         f"got {int(offsets[-1])}")
    return offsets


def _half_life_seconds(half_life_days):
    """Check ``half_life_days`` (None: no decay) and return it in seconds (inf: no decay)."""
    if half_life_days is None:
        return math.inf
    if isinstance(half_life_days, (bool, np.bool_)) or not isinstance(
            half_life_days, numbers.Real):
        raise TypeError(f"half_life_days must be a positive number or None, "
                        f"got {type(half_life_days).__name__}")
    if not half_life_days > 0:  # also rejects NaN
        raise ValueError(f"half_life_days must be > 0 (or None / inf for no decay), "
                         f"got {half_life_days}")
    return float(half_life_days) * SECONDS_PER_DAY


def _check_now(now, ts):
    """The reference time in seconds (None: the latest event); no event may be after it."""
    if now is None:
        return float(ts.max()) if len(ts) else 0.0
    ref = to_seconds(now, "now")
    late = ts > ref
    if late.any():
        i, count = _first_bad(late)
        raise ValueError(
            f"ts at row {i} ({ts[i]:.17g} s) is after now ({ref:.17g} s); every event must "
            f"happen at or before now ({count} rows affected)")
    return ref


def _log2_relative_weights(offsets, ts, weights, ref_per_user, half_life_s):
    """Per row: weight relative to its user's largest; per user: log2 of the true weight sum."""
    n_users = len(offsets) - 1
    counts = np.diff(offsets)
    user_of_row = np.repeat(np.arange(n_users), counts)
    inv_hl = 1.0 / half_life_s if math.isfinite(half_life_s) else 0.0
    with np.errstate(divide="ignore"):
        expo = np.log2(weights) - (ref_per_user[user_of_row] - ts) * inv_hl  # -inf: weight 0
    nonempty = counts > 0
    emax = np.full(n_users, -np.inf)
    if nonempty.any():
        emax[nonempty] = np.maximum.reduceat(expo, offsets[:-1][nonempty])
    active = np.isfinite(emax)  # users with a positive total weight
    if np.isposinf(emax).any():
        u = int(np.argmax(np.isposinf(emax)))
        raise ValueError(f"(now - ts) / half_life overflows for user {u}; ts and now must be "
                         "timestamps of a sane magnitude")
    rel = np.exp2(expo - np.where(active, emax, 0.0)[user_of_row])
    wsum = np.zeros(n_users)
    if nonempty.any():
        wsum[nonempty] = np.add.reduceat(rel, offsets[:-1][nonempty])
    with np.errstate(divide="ignore"):
        log2_sums = np.where(active, emax + np.log2(np.where(active, wsum, 1.0)), -np.inf)
    return rel, wsum, log2_sums


def _decayed_means_numpy(vectors, offsets, ts, weights, ref_per_user, half_life_s):
    """Numpy reference: relative weights, then chunked weighted sums with ``np.add.reduceat``.

    Rows are processed in chunks of ``_NUMPY_CHUNK_ROWS`` (any chunk may cut through a user):
    each chunk is weighted in float32 in a cache-sized buffer, summed per user with
    ``reduceat`` and added into float64 totals.
    """
    n_rows, dim = vectors.shape
    n_users = len(offsets) - 1
    rel, wsum, log2_sums = _log2_relative_weights(offsets, ts, weights, ref_per_user,
                                                  half_life_s)
    sums = np.zeros((n_users, dim), dtype=np.float64)
    starts = offsets[:-1]
    rel32 = rel.astype(np.float32)
    buf = np.empty((min(_NUMPY_CHUNK_ROWS, n_rows), dim), dtype=np.float32)
    for r0 in range(0, n_rows, _NUMPY_CHUNK_ROWS):
        r1 = min(r0 + _NUMPY_CHUNK_ROWS, n_rows)
        # users whose rows intersect [r0, r1), empty users excluded (reduceat needs increasing
        # starts, and an empty user would receive the next user's first row)
        u0 = int(np.searchsorted(offsets, r0, side="right")) - 1
        u1 = int(np.searchsorted(offsets, r1, side="left"))
        users = np.arange(u0, u1)
        users = users[offsets[users + 1] > offsets[users]]
        chunk = buf[: r1 - r0]
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows reported below
            np.multiply(vectors[r0:r1], rel32[r0:r1, None], out=chunk)
            sums[users] += np.add.reduceat(chunk, np.maximum(starts[users], r0) - r0, axis=0)
    bad_users = ~np.isfinite(sums).all(axis=1)
    if bad_users.any():
        _raise_nonfinite_vector(vectors, offsets, int(np.argmax(bad_users)))
    active = wsum > 0
    means = np.zeros((n_users, dim), dtype=np.float32)
    means[active] = sums[active] / wsum[active, None]
    return means, log2_sums


def _raise_nonfinite_vector(vectors, offsets, u):
    rows = vectors[offsets[u]:offsets[u + 1]]
    bad = ~np.isfinite(rows)
    if bad.any():
        i, j = np.unravel_index(int(np.argmax(bad)), rows.shape)
        raise ValueError(f"vectors must be finite, got {rows[i, j]} at row {offsets[u] + i}, "
                         f"column {j} (user {u})")
    raise ValueError(f"weighted sum of vectors overflowed float32 for user {u}; vector values "
                     "near 3.4e38 must be rescaled")


def decayed_user_means(vectors, offsets, ts, weights=None, *, half_life_days=30.0, now=None,
                       backend="native", n_threads=0):
    """Time-decayed weighted mean of each user's event vectors.

    Event ``i`` of user ``u`` has weight ``weights[i] * 2 ** (-(now - ts[i]) / half_life)``.
    Weights are handled in log2 space relative to each user's largest, so a user whose last
    event is decades before ``now`` gets an exact mean rather than an underflowed zero.

    Parameters
    ----------
    vectors : ndarray, shape (n_rows, dim)
        Event vectors, rows grouped by user (see ``offsets``).  float32 and float16 are used as
        they are; other float dtypes are converted to float32.
    offsets : array-like of int, shape (n_users + 1,)
        User ``u`` owns rows ``offsets[u]:offsets[u + 1]``.  Must start at 0, be
        non-decreasing and end at ``n_rows``.  Build with :func:`sort_by_group` and
        :func:`group_offsets`.  A user with no rows gets a zero vector.
    ts : array-like, shape (n_rows,)
        Event times: float unix seconds or ``datetime64``.  Must be finite.
    weights : array-like, shape (n_rows,), optional
        Non-negative finite event weights; default 1 for every row.
    half_life_days : float or None, default 30.0
        Age at which an event's weight halves.  ``None`` or ``inf``: no decay (plain weighted
        mean).  Must be > 0.
    now : None, float, datetime, pandas.Timestamp or numpy.datetime64, default None
        Reference time.  ``None``: the most recent event time over all rows, the same for every
        user.  Otherwise no event may be later than ``now``.  Naive datetimes are UTC.
    backend : {"native", "numpy"}, default "native"
        ``"native"``: C++/OpenMP, releases the GIL.  ``"numpy"``: the vectorised reference.
    n_threads : int, default 0
        Threads for the native backend; 0 uses all cores (``OMP_NUM_THREADS`` respected).

    Returns
    -------
    means : ndarray of float32, shape (n_users, dim)
        Weighted mean per user; zeros for a user with no rows or only zero weights.
    log2_weight_sums : ndarray of float64, shape (n_users,)
        ``log2`` of each user's total decayed weight (``-inf`` when it is zero): how much recent
        evidence stands behind the mean, comparable across users without underflow.

    Raises
    ------
    ValueError
        Bad offsets, non-finite ``ts`` or ``vectors``, negative / non-finite weights, events
        after ``now``, ``half_life_days <= 0``, unknown backend; the message names the row.
    TypeError
        Non-numeric ``vectors``, ``ts``, ``weights`` or ``offsets``.

    Examples
    --------
    Two events of one user one day apart with a one-day half-life weigh 0.5 and 1:

    >>> import numpy as np
    >>> v = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> means, lw = decayed_user_means(v, [0, 2], [0.0, 86400.0], half_life_days=1.0)
    >>> [round(float(x), 4) for x in means[0]], float(2 ** lw[0])
    ([0.3333, 0.6667], 1.5)
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {list(_BACKENDS)}, got {backend!r}")
    vectors, offsets, ts, weights, half_life_s, ref, n_threads = check_decay_inputs(
        vectors, offsets, ts, weights, half_life_days, now, n_threads)
    ref_per_user = np.full(len(offsets) - 1, ref, dtype=np.float64)
    if backend == "numpy":
        return _decayed_means_numpy(vectors, offsets, ts, weights, ref_per_user, half_life_s)
    from interestflow._native_loader import native

    return native().grouped_decayed_mean(vectors, offsets, ts, weights, ref_per_user,
                                         half_life_s, n_threads)
