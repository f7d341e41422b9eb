"""Plain torch reference ops: the definition every faster kernel is tested against.

This module imports only torch (and interestflow's own internals). It must never import
Triton or numba, so that a CPU-only machine without either can run the references, the tests
that use them and the ``torch`` backends built on them. The Triton (GPU) and numba (CPU)
kernels of the kernels issue are compared with these functions, and benchmarks import them as
the baseline.

Every op works on CPU and CUDA tensors alike and keeps its working memory bounded: large
inputs are processed in row chunks sized so that one temporary block stays under
``DEFAULT_BLOCK_BYTES``.
"""

from __future__ import annotations

import torch

from interestflow._utils import check_int

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "DEFAULT_TOPK_CHUNK",
    "ELEMENTWISE_BLOCK_BYTES",
    "chunk_rows_for",
    "pairwise_sq_distances",
    "kmeans_assign",
    "kmeans_update",
    "cosine_topk",
]

#: Upper bound, in bytes, for one temporary block (e.g. a chunk's distance matrix).
DEFAULT_BLOCK_BYTES = 64 * 2**20

#: Budget for element-wise temporaries (e.g. weighted rows): small enough to stay in cache.
ELEMENTWISE_BLOCK_BYTES = 4 * 2**20

#: Default number of keys scored per step by :func:`cosine_topk`.
DEFAULT_TOPK_CHUNK = 4096


def _check_matrix(name: str, t) -> None:
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def _check_pair(xname: str, x, yname: str, y) -> None:
    _check_matrix(xname, x)
    _check_matrix(yname, y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{xname} has dim {x.shape[1]} but {yname} has dim {y.shape[1]}; they must match"
        )
    if x.device != y.device:
        raise ValueError(
            f"{xname} is on {x.device} but {yname} is on {y.device}; put them on one device"
        )


def chunk_rows_for(row_bytes: int, *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Number of rows whose temporary block of ``row_bytes`` each fits in ``block_bytes``.

    Parameters
    ----------
    row_bytes : int
        Bytes one row of the temporary block takes (e.g. ``n_clusters * itemsize``).
    block_bytes : int, default=DEFAULT_BLOCK_BYTES
        Memory budget for the whole block.

    Returns
    -------
    int
        At least 1.
    """
    return max(1, int(block_bytes) // max(1, int(row_bytes)))


def pairwise_sq_distances(x: torch.Tensor, y: torch.Tensor, *, y_sq_norms=None) -> torch.Tensor:
    """Squared Euclidean distances ``||x_i||^2 - 2 x_i.y_j + ||y_j||^2``, clamped at 0.

    Materialises the full ``(n, m)`` result; callers chunk ``x`` to bound memory.

    Parameters
    ----------
    x : torch.Tensor of shape (n, dim)
    y : torch.Tensor of shape (m, dim)
        Same dtype and device as ``x``.
    y_sq_norms : torch.Tensor of shape (m,), optional
        Precomputed ``(y * y).sum(1)``.

    Returns
    -------
    torch.Tensor of shape (n, m)
        In the dtype of ``x``.
    """
    _check_pair("x", x, "y", y)
    if y_sq_norms is None:
        y_sq_norms = (y * y).sum(1)
    d = torch.addmm(y_sq_norms.unsqueeze(0), x, y.T, beta=1, alpha=-2)
    d.add_((x * x).sum(1, keepdim=True))
    return d.clamp_min_(0)


def kmeans_assign(x: torch.Tensor, centroids: torch.Tensor, chunk_rows=None, *, x_sq_norms=None):
    """Nearest centroid of every row of ``x`` and the squared distance to it.

    Distances are computed as ``||x||^2 - 2 x.c + ||c||^2`` with one matmul per chunk of
    rows into one reused buffer; the full ``(n, n_clusters)`` distance matrix is never held
    at once. Ties go to the lower centroid index.

    Parameters
    ----------
    x : torch.Tensor of shape (n, dim)
        Floating point, CPU or CUDA.
    centroids : torch.Tensor of shape (n_clusters, dim)
        Same dtype and device as ``x``.
    chunk_rows : int, optional
        Rows per chunk. Default: as many as keep one ``(chunk_rows, max(n_clusters, dim))``
        block under ``DEFAULT_BLOCK_BYTES``.
    x_sq_norms : torch.Tensor of shape (n,), optional
        Precomputed ``(x * x).sum(1)`` (saves a pass when ``x`` is assigned repeatedly).

    Returns
    -------
    labels : torch.Tensor of shape (n,), int64
    min_sq_dist : torch.Tensor of shape (n,)
        In the dtype of ``x``; clamped at 0 (the expansion can round slightly below it).

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0, 0.0], [0.9, 1.0], [5.0, 5.0]])
    >>> c = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    >>> kmeans_assign(x, c)[0].tolist()
    [0, 0, 1]
    """
    _check_pair("x", x, "centroids", centroids)
    if x.dtype != centroids.dtype:
        raise TypeError(f"x has dtype {x.dtype} but centroids has dtype {centroids.dtype}")
    n, dim = x.shape
    n_clusters = centroids.shape[0]
    if n_clusters < 1:
        raise ValueError("centroids must have at least one row")
    if x_sq_norms is not None and x_sq_norms.shape != (n,):
        raise ValueError(f"x_sq_norms must have shape ({n},), got {tuple(x_sq_norms.shape)}")
    if chunk_rows is None:
        chunk_rows = chunk_rows_for(max(n_clusters, dim) * x.element_size())
    else:
        chunk_rows = check_int("chunk_rows", chunk_rows, minimum=1)
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    min_sq = torch.empty(n, dtype=x.dtype, device=x.device)
    if n == 0:
        return labels, min_sq
    c_sq = (centroids * centroids).sum(1).unsqueeze(0)
    ct = centroids.T
    buf = torch.empty((min(chunk_rows, n), n_clusters), dtype=x.dtype, device=x.device)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        xc = x[start:stop]
        block = buf[:stop - start]
        # ||x||^2 is constant per row, so the argmin only needs ||c||^2 - 2 x.c.
        torch.addmm(c_sq, xc, ct, beta=1, alpha=-2, out=block)
        vals, lab = min_sq[start:stop], labels[start:stop]
        torch.min(block, dim=1, out=(vals, lab))
        vals.add_(x_sq_norms[start:stop] if x_sq_norms is not None else (xc * xc).sum(1))
    return labels, min_sq.clamp_min_(0)


def kmeans_update(x: torch.Tensor, labels: torch.Tensor, n_clusters: int, sample_weight=None):
    """Per-cluster weighted sums of rows and total weights (the M step of Lloyd's algorithm).

    Parameters
    ----------
    x : torch.Tensor of shape (n, dim)
    labels : torch.Tensor of shape (n,), int64
        Values in ``[0, n_clusters)``; not range-checked (the caller produced them).
    n_clusters : int
    sample_weight : torch.Tensor of shape (n,), optional
        Non-negative weights in the dtype of ``x``; ``None`` means all ones.

    Returns
    -------
    sums : torch.Tensor of shape (n_clusters, dim)
        ``sum_i w_i x_i`` over the rows of each cluster, in the dtype of ``x``.
    counts : torch.Tensor of shape (n_clusters,)
        ``sum_i w_i`` of each cluster, in the dtype of ``x`` (0 for an empty cluster).

    Notes
    -----
    Uses ``index_add_``; on CUDA its atomic adds make the summation order, and hence the
    last bits of the sums, vary from run to run.
    """
    _check_matrix("x", x)
    n_clusters = check_int("n_clusters", n_clusters, minimum=1)
    n, dim = x.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if labels.dtype != torch.int64:
        raise TypeError(f"labels must be int64, got {labels.dtype}")
    sums = torch.zeros((n_clusters, dim), dtype=x.dtype, device=x.device)
    if sample_weight is None:
        sums.index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=n_clusters)[:n_clusters].to(x.dtype)
        return sums, counts
    if sample_weight.shape != (n,):
        raise ValueError(
            f"sample_weight must have shape ({n},), got {tuple(sample_weight.shape)}"
        )
    w = sample_weight.to(dtype=x.dtype)
    step = chunk_rows_for(dim * x.element_size(), block_bytes=ELEMENTWISE_BLOCK_BYTES)
    for start in range(0, n, step):
        stop = start + step
        sums.index_add_(0, labels[start:stop], x[start:stop] * w[start:stop, None])
    counts = torch.zeros(n_clusters, dtype=x.dtype, device=x.device)
    counts.index_add_(0, labels, w)
    return sums, counts


def cosine_topk(queries: torch.Tensor, keys: torch.Tensor, k: int, *, normalized: bool = False,
                chunk: int = DEFAULT_TOPK_CHUNK):
    """Top-``k`` keys by cosine similarity for every query, streamed over key chunks.

    Scores one chunk of keys at a time and merges it into a running top-``k``, so memory is
    ``O(n_queries * (k + chunk))`` per query block whatever the number of keys. Results are
    ordered by score, highest first; equal scores are ordered by lower key index first (also
    across chunk boundaries).

    Parameters
    ----------
    queries : torch.Tensor of shape (n_queries, dim)
    keys : torch.Tensor of shape (n_keys, dim)
        Same device as ``queries``.
    k : int
        ``1 <= k <= n_keys``.
    normalized : bool, default=False
        If True the rows are taken as already L2-normalised and scores are plain dot
        products; otherwise rows are normalised first (a zero row scores 0 against everything).
    chunk : int, default=DEFAULT_TOPK_CHUNK
        Keys scored per step.

    Returns
    -------
    scores : torch.Tensor of shape (n_queries, k)
        float32 for half-precision inputs, else the promoted input dtype.
    indices : torch.Tensor of shape (n_queries, k), int64
        Row indices into ``keys``.

    Examples
    --------
    >>> import torch
    >>> q = torch.tensor([[1.0, 0.0]])
    >>> keys = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]])
    >>> cosine_topk(q, keys, 2)[1].tolist()
    [[1, 2]]
    """
    _check_pair("queries", queries, "keys", keys)
    n_keys = keys.shape[0]
    k = check_int("k", k, minimum=1)
    if k > n_keys:
        raise ValueError(f"k={k} exceeds the number of keys ({n_keys}); pass k <= {n_keys}")
    chunk = check_int("chunk", chunk, minimum=1)
    dtype = torch.promote_types(queries.dtype, keys.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    n_q = queries.shape[0]
    device = queries.device
    out_scores = torch.empty((n_q, k), dtype=dtype, device=device)
    out_idx = torch.empty((n_q, k), dtype=torch.int64, device=device)
    # Candidate block per query row: k running + chunk new scores plus their int64 indices.
    q_rows = chunk_rows_for((k + chunk) * (torch.finfo(dtype).bits // 8 + 8))

    def _prep(t):
        t = t.to(dtype)
        return t if normalized else torch.nn.functional.normalize(t, dim=1)

    for qs in range(0, n_q, q_rows):
        q = _prep(queries[qs:qs + q_rows])
        best_s = torch.empty((q.shape[0], 0), dtype=dtype, device=device)
        best_i = torch.empty((q.shape[0], 0), dtype=torch.int64, device=device)
        for ks in range(0, n_keys, chunk):
            kc = _prep(keys[ks:ks + chunk])
            s = q @ kc.T
            i = torch.arange(ks, ks + kc.shape[0], device=device).expand(q.shape[0], -1)
            # Running best (all lower indices, already ordered) comes first and the chunk is in
            # index order, so a stable descending sort breaks ties by lower index.
            cand_s = torch.cat((best_s, s), dim=1)
            cand_i = torch.cat((best_i, i), dim=1)
            order = torch.sort(cand_s, dim=1, descending=True, stable=True).indices[:, :k]
            best_s = cand_s.gather(1, order)
            best_i = cand_i.gather(1, order)
        out_scores[qs:qs + q.shape[0]] = best_s
        out_idx[qs:qs + q.shape[0]] = best_i
    return out_scores, out_idx
