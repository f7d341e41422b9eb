"""Internals shared by interestflow's modules: one checker per kind of value, the one row
normaliser, the time converters, the worker-thread context, a 2-D PCA.

Private to the distribution (``interestflow`` and ``interestflow.kernels``): modules import
these names from here instead of from each other (``ARCHITECTURE.md``; a test fails when a
module imports another module's private name). Nothing here imports torch at module level.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import numbers

from typing import Any, NamedTuple

import numpy as np

__all__ = ["NotFittedError", "not_fitted", "renamed", "TopK", "check_int", "check_nonnegative",
           "check_matrix", "check_indices", "check_user_rows", "unit_rows",
           "datetimes_to_seconds", "time_to_seconds", "blas_threads", "torch_threads",
           "TorchWorkers", "pca_2d"]


# ------------------------------------------------------------------------------- checkers
_NOT_FITTED = None


def _not_fitted_class():
    """Built on first use: importing scikit-learn takes ~1 s, too much for every import."""
    global _NOT_FITTED
    if _NOT_FITTED is None:
        from sklearn.exceptions import NotFittedError as _SklearnNotFitted

        class NotFittedError(_SklearnNotFitted, RuntimeError):
            """Raised when an interestflow object is used before it is fitted.

            A ``sklearn.exceptions.NotFittedError`` (so a ``ValueError`` and an
            ``AttributeError``, as scikit-learn estimators raise) and also a ``RuntimeError``
            (what the engine and the tracker raised before).
            """

        NotFittedError.__module__ = "interestflow"
        NotFittedError.__qualname__ = "NotFittedError"
        _NOT_FITTED = NotFittedError
    return _NOT_FITTED


def not_fitted(message: str):
    """The one not-fitted error, to raise: ``raise not_fitted("this X is not fitted yet;
    call fit() first")`` (a :class:`NotFittedError`)."""
    return _not_fitted_class()(message)


def __getattr__(name):
    if name == "NotFittedError":
        return _not_fitted_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None, *,
              none_ok: bool = False):
    """``value`` as a Python int, or a named error.

    ``TypeError`` when it is not an integer (bools are not: ``True`` is not a count);
    ``ValueError`` when it is outside ``[minimum, maximum]`` (either bound optional).
    ``None`` passes through when ``none_ok``.
    """
    if value is None and none_ok:
        return None
    if minimum is not None and maximum is not None:
        rng = f" in [{minimum}, {maximum}]"
    elif minimum is not None:
        rng = f" >= {minimum}"
    elif maximum is not None:
        rng = f" <= {maximum}"
    else:
        rng = ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer{rng}{' or None' if none_ok else ''}, got "
                        f"{type(value).__name__} ({value!r})")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name}={value} is invalid; pass an integer{rng}")
    return int(value)


def renamed(new: str, value, old: str, old_value, default):
    """The value of a parameter renamed from ``old`` to ``new`` (one name per meaning
    across interestflow): ``value``, or ``old_value`` with a ``DeprecationWarning`` when
    only the old keyword was given (``old_value`` not None); both given: ``TypeError``."""
    if old_value is None:
        return value
    if value is not default and value != default:
        raise TypeError(f"pass {new}= only ({old}= is its old name)")
    import warnings

    warnings.warn(f"{old}= is deprecated; pass {new}= (same meaning)", DeprecationWarning,
                  stacklevel=3)
    return old_value


class TopK(NamedTuple):
    """A top-k result, in the one order every top-k of interestflow returns: ``(scores,
    rows)``, as ``torch.topk`` (values, indices) and FAISS's ``search`` (D, I).

    ``scores`` (n_queries, k): best first, ``-inf`` in padding; ``rows`` (n_queries, k),
    int64: the item (key) rows they belong to, ``-1`` in padding; equal scores are ordered by
    lower row. numpy arrays, or torch tensors where the inputs were tensors. Unpacks as a
    tuple (``scores, rows = index.search(q, 10)``) or reads by name (``result.rows``).
    """

    scores: Any
    rows: Any


# ------------------------------------------------------------------------------- vectors
def check_nonnegative(name: str, x, n: int, what: str, *, default=None) -> np.ndarray:
    """``x`` as float64 of shape ``(n,)``, each finite and >= 0 (``None``: ``default``, e.g.
    all ones); ``what`` says what one value is per (``"one per event"``). Raises naming
    ``name``, the first bad row and how many rows are bad."""
    if x is None and default is not None:
        return np.full(n, float(default))
    x = np.asarray(x)
    if x.ndim != 1 or x.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) ({what}), got {x.shape}")
    if x.dtype.kind not in "iuf" or x.dtype == np.bool_:
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    bad = ~(np.isfinite(x) & (x >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} must be finite and >= 0, got {x[i]} at row {i} "
                         f"({int(bad.sum())} rows affected)")
    return x


def check_matrix(name, x, rows=None, dim=None):
    """Finite float32 C-contiguous (n, dim) matrix; raises naming ``name`` and the bad row."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {x.shape}")
    if rows is not None and x.shape[0] != rows:
        raise ValueError(f"{name} has {x.shape[0]} rows, expected {rows}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the other vectors' dim), got "
                         f"{x.shape[1]}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be a float array, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} has NaN/inf at row {int(np.argmax(bad))} "
                         f"({int(bad.sum())} rows); vectors must be finite")
    return x


def check_indices(name: str, x, size: int, *, n: int | None = None,
                  out_of_range: str = "is out of range; expected 0 <= value < {size}"
                  ) -> np.ndarray:
    """``x`` as int64, checked: 1-D integers (``n`` of them when given) in ``[0, size)``.
    Raises naming ``name`` and the first bad position; ``out_of_range`` is what the message
    says of a value out of range (``{size}`` is filled in)."""
    x = np.asarray(x)
    if n is not None and (x.ndim != 1 or x.shape[0] != n):
        raise ValueError(f"{name} must have shape ({n},), got {x.shape}")
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    if len(x) and not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got dtype {x.dtype}")
    x = x.astype(np.int64, copy=False)
    bad = (x < 0) | (x >= size)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}]={int(x[i])} {out_of_range.format(size=size)}")
    return x


def check_user_rows(user_rows, n_users: int) -> np.ndarray:
    """``user_rows`` as int64, checked: 1-D integers in ``[0, n_users)`` (raises naming the
    first bad position)."""
    return check_indices("user_rows", user_rows, n_users,
                         out_of_range="is not a known user row; expected 0 <= row < {size}")


def unit_rows(x, *, dtype=np.float32, name: str | None = None, precision: str = "float64",
              chunk: int = 1 << 16) -> np.ndarray:
    """A copy of ``x`` (n, d) with rows scaled to unit L2 norm; an all-zero row stays zero.

    Each row is divided by ``max(norm, 1e-12)`` (torch's ``normalize`` epsilon).
    ``precision="float64"`` (default) computes in float64, in blocks of ``chunk`` rows (a
    float32 input needs no float64 copy of the whole array); ``"float32"`` computes in float32
    (how user vectors and segment centroids have always been normalised: their results, such
    as K-means on them, stay the same to the bit). ``dtype``: of the result (``None``: the
    input's floating dtype). With ``name``, a row holding NaN or infinity raises
    ``ValueError`` naming ``name`` and the row.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name or 'x'} must be 2-D (rows of vectors), got shape {x.shape}")
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision={precision!r} is invalid; pass 'float32' or 'float64'")
    if dtype is None:
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    if precision == "float32":
        if name is not None:
            _check_finite_rows(name, x, chunk)
        x32 = np.asarray(x, dtype=np.float32)
        out = x32 / np.maximum(np.linalg.norm(x32, axis=1, keepdims=True), 1e-12)
        return out.astype(dtype, copy=False)
    out = np.empty(x.shape, dtype)
    for a in range(0, x.shape[0], chunk):
        blk = np.asarray(x[a:a + chunk], dtype=np.float64)
        if name is not None:  # checked in the same pass over the rows
            _check_finite_rows(name, blk, len(blk), offset=a)
        norm = np.sqrt(np.einsum("ij,ij->i", blk, blk))
        out[a:a + chunk] = blk / np.maximum(norm, 1e-12)[:, None]
    return out


def _check_finite_rows(name: str, x, chunk: int, offset: int = 0) -> None:
    """Raise naming ``name`` and the first row of ``x`` holding NaN or infinity."""
    for a in range(0, x.shape[0], chunk):
        bad = ~np.isfinite(x[a:a + chunk]).all(axis=1)
        if bad.any():
            row = offset + a + int(np.argmax(bad))
            raise ValueError(f"{name} row {row} contains NaN or infinity; pass finite values")


def pca_2d(x, *, chunk_rows: int | None = None, covariance: bool = False,
           eigh_threads: int | None = None) -> np.ndarray:
    """(n, 2) float64 coordinates of the rows of ``x`` on their first two principal axes,
    signs fixed so that the largest loading of each axis is positive (reruns draw the same
    picture).

    ``x`` is an (n, d) array, or a list of (n_i, d) arrays taken as their stacked rows (one
    projection for all of them). Rows are taken in float64, ``chunk_rows`` of one array at a
    time (default: a whole array): with ``chunk_rows`` set, the memory held is one chunk and
    the output, whatever ``n``. The axes are the top eigenvectors of the centred rows'
    scatter matrix, or with ``covariance`` of their covariance (the scatter over ``n - 1``:
    the same axes, their last bits may differ); ``eigh_threads`` caps the BLAS threads of
    that eigendecomposition (a small one is fastest on one thread, and its last bits can
    depend on the thread count). ``d < 2`` gives zero columns for the missing axes; no rows
    give shape (0, 2).

    The report's map of users is ``pca_2d(x)``; the tracker's map of every user-snapshot
    (``tracking._tables.project_2d``) is ``pca_2d(blocks, chunk_rows=65536,
    covariance=True, eigh_threads=1)`` (up to 1,024 dimensions) in float32.
    """
    blocks = [x] if isinstance(x, np.ndarray) else list(x)
    n = sum(len(b) for b in blocks)
    if n == 0:
        return np.zeros((0, 2))
    mu, scatter = _pca_moments(blocks, chunk_rows, n)
    comps = _pca_axes(scatter / max(n - 1, 1) if covariance else scatter, eigh_threads)
    return np.concatenate([c @ comps for c in _centred_chunks(blocks, chunk_rows, mu)])


def _row_chunks(blocks, chunk_rows, *, copy: bool = True):
    """The rows of ``blocks`` in float64, at most ``chunk_rows`` of one array at a time (None:
    each array whole), in the array's memory order; copies unless ``copy=False`` and the
    array already is float64 (then views, to be read only)."""
    for b in blocks:
        step = max(1, len(b) if chunk_rows is None else int(chunk_rows))
        for i in range(0, len(b), step):
            c = b[i:i + step]
            yield c if not copy and c.dtype == np.float64 else c.astype(np.float64)


def _centred_chunks(blocks, chunk_rows, mu):
    """:func:`_row_chunks` minus the mean ``mu`` (in place)."""
    for c in _row_chunks(blocks, chunk_rows):
        c -= mu
        yield c


def _pca_moments(blocks, chunk_rows, n: int):
    """``(mean (d,), scatter (d, d))`` of the ``n`` stacked rows of ``blocks``, summed chunk
    by chunk in float64 (two passes: the mean, then the centred rows' ``c.T @ c``)."""
    dim = blocks[0].shape[1]
    total = np.zeros(dim)
    for c in _row_chunks(blocks, chunk_rows, copy=False):
        total += c.sum(axis=0)
    mu = total / n
    scatter = np.zeros((dim, dim))
    for c in _centred_chunks(blocks, chunk_rows, mu):
        scatter += c.T @ c
    return mu, scatter


def _pca_axes(matrix: np.ndarray, eigh_threads: int | None) -> np.ndarray:
    """(d, 2) eigenvectors of the two largest eigenvalues of the symmetric ``matrix`` (zero
    columns past ``d``), each signed so that its largest loading is positive; the
    eigendecomposition on at most ``eigh_threads`` BLAS threads (None: the library's)."""
    with blas_threads(None if eigh_threads is None else int(eigh_threads)):
        _, vecs = np.linalg.eigh(matrix)
    comps = vecs[:, ::-1][:, :2]
    if comps.shape[1] < 2:
        comps = np.pad(comps, ((0, 0), (0, 2 - comps.shape[1])))
    signs = np.sign(comps[np.abs(comps).argmax(axis=0), [0, 1]])
    signs[signs == 0] = 1
    return comps * signs


# ---------------------------------------------------------------------------------- time
def datetimes_to_seconds(s) -> np.ndarray:
    """A datetime64 pandas Series (any unit; tz-aware converted to UTC, naive taken as UTC)
    as float64 unix seconds, at microsecond resolution."""
    import pandas as pd

    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    us = s.to_numpy().astype("datetime64[us]").astype(np.int64)
    return us.astype(np.float64) / 1e6


def time_to_seconds(value, name: str, *, scale: float = 1.0, strings: bool = False,
                    finite: bool = True) -> float:
    """One time as float unix seconds: a number (times ``scale``), a datetime / date, a
    pandas Timestamp, a numpy datetime64, or (``strings=True``) an ISO 8601 string. Naive
    times are UTC. Raises ``TypeError`` / ``ValueError`` naming ``name``; a NaN or infinite
    number too unless ``finite=False`` (then it is returned, for the caller to report)."""
    import pandas as pd

    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a time (unix seconds or a datetime), got bool")
    if value is pd.NaT or (isinstance(value, np.datetime64) and np.isnat(value)):
        raise ValueError(f"{name} must be a valid time, got NaT")
    if isinstance(value, numbers.Real):
        out = float(value) * scale
    elif isinstance(value, (pd.Timestamp, np.datetime64)):
        # .asm8 is the UTC instant (naive Timestamps are taken as UTC); microseconds, not
        # nanoseconds, so that years past 2262 (refused later as implausible) do not overflow
        dt64 = value.asm8 if isinstance(value, pd.Timestamp) else value
        out = float(dt64.astype("datetime64[us]").astype(np.int64)) / 1e6
    elif isinstance(value, _dt.datetime):
        if value.tzinfo is None:  # naive times are UTC, as in validate_events
            value = value.replace(tzinfo=_dt.timezone.utc)
        out = value.timestamp()
    elif isinstance(value, _dt.date):
        out = _dt.datetime(value.year, value.month, value.day,
                           tzinfo=_dt.timezone.utc).timestamp()
    elif strings and isinstance(value, str):
        try:
            out = float(datetimes_to_seconds(pd.Series(
                pd.to_datetime([value], utc=True, format="ISO8601")))[0])
        except (ValueError, OverflowError):
            raise ValueError(f"{name} is not an ISO 8601 time: {value!r:.60}") from None
    else:
        raise TypeError(
            f"{name} must be unix seconds (float), a datetime, a pandas Timestamp or a "
            f"numpy datetime64, got {type(value).__name__}")
    if finite and not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


# ------------------------------------------------------------------------------- threads
def blas_threads(n: int | None):
    """Context limiting BLAS threads to ``n`` (threadpoolctl, a scikit-learn dependency), or
    a no-op for None."""
    if n is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


class torch_threads:
    """Context: ``torch.set_num_threads(n)`` for the calling thread when ``n`` is fewer
    than now, restored on exit; ``n=None`` changes nothing."""

    def __init__(self, n: int | None):
        self.n = n
        self.old = None

    def __enter__(self):
        if self.n is not None:
            import torch

            self.old = torch.get_num_threads()
            if self.n < self.old:
                torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.old is not None and self.n < self.old:
            import torch

            torch.set_num_threads(self.old)
        return False


class TorchWorkers:
    """Plain worker threads, each running torch with ``threads_each`` intra-op threads.

    Why plain threads: torch's intra-op setting is per thread (OpenMP), so small products run
    better side by side than each split across cores, and numba kernels release the GIL.
    Their idle threads block (OpenMP's spin after every parallel region, which is what numba
    ``prange`` next to torch ran into: 3.4 s against 1.9 s for one bf16 pass on 2 cores).
    Setting the workers' threads also changes torch's default for new threads, so the
    caller's ``torch.get_num_threads()`` is restored on :meth:`close` / exit.

    Parameters
    ----------
    n : int, optional
        Worker threads (default: the caller's ``torch.get_num_threads()``). With one, tasks
        run in the calling thread.
    threads_each : int, default 1
        torch intra-op threads of each worker.
    name : str
        Thread name prefix (seen in debuggers and profilers).
    """

    def __init__(self, n: int | None = None, *, threads_each: int = 1,
                 name: str = "interestflow"):
        import torch

        self._torch = torch
        self.restore = torch.get_num_threads()
        self.n = max(1, int(self.restore if n is None else n))
        self.pool = None
        if self.n > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(self.n, initializer=torch.set_num_threads,
                                           initargs=(max(1, int(threads_each)),),
                                           thread_name_prefix=name)

    def map(self, fn, items) -> list:
        """``[fn(x) for x in items]``, run on the workers."""
        if self.pool is None:
            return [fn(x) for x in items]
        return list(self.pool.map(fn, items))

    def ranges(self, kernel, n_items: int, *args) -> None:
        """``kernel(*args, lo, hi)`` over ``[0, n_items)`` split into a few ranges a worker."""
        step = max(1, -(-n_items // (4 * self.n)))
        self.map(lambda lo: kernel(*args, lo, min(n_items, lo + step)), range(0, n_items, step))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
            self._torch.set_num_threads(self.restore)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
