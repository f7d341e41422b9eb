"""Compute kernels: Triton (GPU), numba (CPU) and the plain torch reference of each.

The public entry points here dispatch to one backend chosen by
:func:`interestflow.resolve.resolve_backend`:

- ``"triton"``: fused GPU kernels (:mod:`.triton_cosine`, :mod:`.triton_kmeans`); on the CPU
  only under ``TRITON_INTERPRET=1`` (used by the tests).
- ``"numba"``: CPU kernels (:mod:`.numba_cosine`, :mod:`.numba_kmeans`).
- ``"torch"``: the reference ops of :mod:`.reference` (any device).
- ``"auto"``: Triton for CUDA input when installed, numba for CPU input above a size where it
  pays off, torch otherwise; logs one line per distinct choice.

:func:`assign_fn` and :func:`update_fn` return one backend's K-means kernels as they are
(tensors in and out, no dispatch), for loops that call them many times (``KMeans``'s Lloyd
loop).

Output type follows input type: numpy in, numpy out; a torch tensor in, a tensor on the same
device out. Importing this package imports neither Triton nor numba: a backend's module is
imported the first time that backend runs.
"""

from __future__ import annotations

import importlib
import logging
import sys

if __name__ == "kernels":  # pragma: no cover - exercised in a subprocess by the tests
    # This folder was imported as a top-level package because the root of an interestflow
    # checkout is on sys.path (``python -m`` / ``python -c`` / a notebook started there). Its
    # name would then shadow the PyPI package ``kernels`` that transformers imports (and
    # loading the encoder would fail); hand the name over to that package when installed.
    import importlib.machinery
    import importlib.util
    import os

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _spec = importlib.machinery.PathFinder.find_spec(
        "kernels", [p for p in sys.path if os.path.abspath(p or os.curdir) != _root])
    if _spec is not None and _spec.loader is not None:
        _real = importlib.util.module_from_spec(_spec)
        sys.modules["kernels"] = _real  # what ``import kernels`` returns once this file ran
        _spec.loader.exec_module(_real)

import numpy as np
import torch

from interestflow._utils import TopK
from interestflow.resolve import BackendChoice, resolve_backend

logger = logging.getLogger(__name__)

__all__ = ["cosine_topk", "kmeans_assign", "kmeans_update", "backend_module", "assign_fn",
           "update_fn"]

_MODULES = {
    ("triton", "cosine_topk"): "triton_cosine",
    ("numba", "cosine_topk"): "numba_cosine",
    ("triton", "kmeans"): "triton_kmeans",
    ("numba", "kmeans"): "numba_kmeans",
}


def backend_module(backend: str, family: str):
    """Import and return the kernel module of ``backend`` for ``family`` ("cosine_topk"/"kmeans").

    ``"torch"`` returns :mod:`interestflow.kernels.reference`.
    """
    if backend == "torch":
        from interestflow.kernels import reference

        return reference
    return importlib.import_module(f"{__name__}.{_MODULES[(backend, family)]}")


def _as_tensor(name: str, x):
    """(tensor, was_numpy). numpy arrays become CPU tensors without a copy when possible."""
    if torch.is_tensor(x):
        return x.detach(), False
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x)), True
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _as_tensor_pair(xname: str, x, yname: str, y):
    """``(x, y, was_numpy)``: two 2-D inputs of the same kind (numpy or tensor) as tensors."""
    xt, x_np = _as_tensor(xname, x)
    yt, y_np = _as_tensor(yname, y)
    if x_np != y_np:
        raise TypeError(f"{xname} and {yname} must both be numpy arrays or both torch tensors")
    if xt.ndim != 2 or yt.ndim != 2:
        raise ValueError(f"{xname} and {yname} must be 2-D (n, dim), got shapes "
                         f"{tuple(xt.shape)} and {tuple(yt.shape)}")
    return xt, yt, x_np


def _out(t, was_numpy: bool):
    return t.cpu().numpy() if was_numpy else t


def cosine_topk(queries, keys, k: int, *, backend: str = "auto", normalized: bool = False):
    """Top-``k`` keys by cosine similarity for every query, without the full score matrix.

    Parameters
    ----------
    queries : numpy.ndarray or torch.Tensor of shape (n_queries, dim)
        Floating point (float16/bfloat16/float32/float64).
    keys : numpy.ndarray or torch.Tensor of shape (n_keys, dim)
        Same kind (numpy or tensor) and device as ``queries``.
    k : int
        ``1 <= k <= n_keys``.
    backend : {"auto", "triton", "numba", "torch"}, default="auto"
    normalized : bool, default=False
        True if the rows are already L2-normalised (scores are then plain dot products).
        Otherwise every row is normalised; a zero row scores 0 against everything.

    Returns
    -------
    scores : array or tensor of shape (n_queries, k)
        float32 (float64 for float64 input on the numba/torch backends), highest first.
    rows : array or tensor of shape (n_queries, k), int64
        Rows of ``keys``; equal scores are ordered by lower index on every backend.

    A :class:`~interestflow.TopK` ``(scores, rows)``, the order of every top-k in
    interestflow (as ``torch.topk``).

    Examples
    --------
    >>> import numpy as np
    >>> from interestflow.kernels import cosine_topk
    >>> q = np.array([[1.0, 0.0]], np.float32)
    >>> keys = np.array([[0.0, 1.0], [2.0, 0.0], [1.0, 0.1]], np.float32)
    >>> cosine_topk(q, keys, 2)[1].tolist()
    [[1, 2]]
    """
    q, kk, q_np = _as_tensor_pair("queries", queries, "keys", keys)
    work = float(q.shape[0]) * kk.shape[0] * kk.shape[1]
    choice = resolve_backend("cosine_topk", backend, q.device, work=work)
    name = choice.name
    if name == "triton":
        mod = backend_module("triton", "cosine_topk")
        if isinstance(k, int) and k > mod.MAX_K and backend == "auto":
            logger.info("cosine_topk backend='auto': k=%d exceeds the Triton kernel's MAX_K=%d; "
                        "using the torch reference", k, mod.MAX_K)
            name = "torch"
        else:
            s, i = mod.cosine_topk_triton(q, kk, k, normalized=normalized)
            return TopK(_out(s, q_np), _out(i, q_np))
    if name == "numba":
        s, i = backend_module("numba", "cosine_topk").cosine_topk_numba(
            q, kk, k, normalized=normalized)
    else:
        from interestflow.kernels import reference

        s, i = reference.cosine_topk(q, kk, k, normalized=normalized)
    return TopK(_out(s, q_np), _out(i, q_np))


def kmeans_assign(x, centroids, *, backend: str = "auto"):
    """Nearest centroid of each row and the squared distance to it (no full distance matrix).

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor of shape (n, dim)
    centroids : numpy.ndarray or torch.Tensor of shape (n_clusters, dim)
        Same kind, dtype and device as ``x``.
    backend : {"auto", "triton", "numba", "torch"}, default="auto"

    Returns
    -------
    labels : array or tensor of shape (n,), int64
        Ties go to the lower centroid index.
    min_sq_dist : array or tensor of shape (n,)
        In ``x``'s dtype (float32 on Triton).
    """
    xt, ct, x_np = _as_tensor_pair("x", x, "centroids", centroids)
    choice = resolve_backend("kmeans_assign", backend, xt.device,
                             work=float(xt.shape[0]) * ct.shape[0] * max(1, xt.shape[1]))
    lab, d = assign_fn(choice)(xt, ct)
    return _out(lab, x_np), _out(d, x_np)


def kmeans_update(x, labels, n_clusters: int, *, sample_weight=None, backend: str = "auto"):
    """Per-cluster (weighted) sums of rows and total weights: the M step of Lloyd's algorithm.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor of shape (n, dim)
    labels : numpy.ndarray or torch.Tensor of shape (n,), int64
        Values in ``[0, n_clusters)``.
    n_clusters : int
    sample_weight : array or tensor of shape (n,), optional
    backend : {"auto", "triton", "numba", "torch"}, default="auto"

    Returns
    -------
    sums : array or tensor of shape (n_clusters, dim)
    counts : array or tensor of shape (n_clusters,)
    """
    xt, x_np = _as_tensor("x", x)
    if torch.is_tensor(labels):
        lab = labels.detach()
    else:
        lab = torch.from_numpy(np.ascontiguousarray(np.asarray(labels)))
    w = None
    if sample_weight is not None:
        w = (sample_weight.detach() if torch.is_tensor(sample_weight)
             else torch.from_numpy(np.ascontiguousarray(np.asarray(sample_weight))))
        w = w.to(device=xt.device, dtype=xt.dtype if xt.dtype != torch.float16 else torch.float32)
    choice = resolve_backend("kmeans_update", backend, xt.device,
                             work=float(xt.shape[0]) * max(1, xt.shape[1]) * 64)
    sums, counts = update_fn(choice)(xt, lab, n_clusters, w)
    return _out(sums, x_np), _out(counts, x_np)


def assign_fn(choice: BackendChoice):
    """The assignment kernel of ``choice``'s backend, without input conversion or dispatch.

    For callers that run many assignments on tensors already on the right device (the Lloyd
    loop of :class:`interestflow.KMeans`).

    Parameters
    ----------
    choice : interestflow.resolve.BackendChoice
        ``choice.name`` is "triton", "numba" or "torch".

    Returns
    -------
    callable
        ``f(x, centroids, x_sq_norms=None) -> (labels, min_sq_dist)`` on tensors, as
        :func:`kmeans_assign` returns them (the numba one also takes ``candidates=`` and
        ``rows=``).
    """
    if choice.name == "triton":
        return backend_module("triton", "kmeans").kmeans_assign_triton
    if choice.name == "numba":
        return backend_module("numba", "kmeans").kmeans_assign_numba
    from interestflow.kernels import reference

    def _ref(x, c, x_sq_norms=None):
        return reference.kmeans_assign(x, c, x_sq_norms=x_sq_norms)

    return _ref


def update_fn(choice: BackendChoice):
    """The update kernel of ``choice``'s backend, as :func:`assign_fn` gives the assignment:
    ``f(x, labels, n_clusters, sample_weight=None) -> (sums, counts)`` on tensors, as
    :func:`kmeans_update` returns them."""
    if choice.name == "triton":
        return backend_module("triton", "kmeans").kmeans_update_triton
    if choice.name == "numba":
        return backend_module("numba", "kmeans").kmeans_update_numba
    from interestflow.kernels import reference

    return reference.kmeans_update
