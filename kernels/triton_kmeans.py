"""K-means assignment and centroid update in Triton.

Three layers (see STYLE.md "Kernels"): the private ``@triton.jit`` kernels
``_kmeans_assign_kernel`` (its score tiles come from the shared ``_triton_common.tile_dot``,
as the cosine top-k's do) and ``_kmeans_update_kernel``; the launchers
``kmeans_assign_triton`` and ``kmeans_update_triton`` that check inputs, allocate outputs and
take their block sizes from ``_triton_config``; the public dispatcher in
``interestflow.kernels``.

Assignment: one program per ``block_m`` rows streams the centroids in ``block_n`` tiles,
scores ``||c||^2 - 2 x.c`` with ``tl.dot`` (fp32 accumulation; fp32 inputs with
``input_precision="ieee"``) and keeps a running minimum and its index, so the
``(n, n_clusters)`` distance matrix never exists. A tile replaces the running best only when
strictly smaller, and ``tl.min(..., return_indices=True)`` takes the first index within a
tile, so ties go to the lower centroid index. ``||x||^2`` is added at the end and the result
clamped at 0, like ``reference.kmeans_assign``.

Update: deterministic segmented sums without float atomics. Rows are stably sorted by label
(torch), a cluster's rows are then one contiguous segment, and one program per
(cluster, dim block) adds its segment's rows in that fixed order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from interestflow._utils import check_int

from ._triton_common import (
    INTERPRET,
    check_device,
    check_input,
    check_same,
    on_device,
    tile_dot,
)
from ._triton_config import kmeans_assign_config, kmeans_update_config
from .triton_cosine import row_norms_triton

__all__ = ["kmeans_assign_triton", "kmeans_update_triton"]


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------

@triton.jit
def _kmeans_assign_kernel(x_ptr, c_ptr, c_sq_ptr, x_sq_ptr, labels_ptr, dist_ptr,
                          n, n_clusters, dim, stride_x, stride_c,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                          IEEE: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n
    best = tl.full((BLOCK_M,), float("inf"), tl.float32)
    best_i = tl.zeros((BLOCK_M,), dtype=tl.int64)
    for c0 in range(0, n_clusters, BLOCK_N):
        cs = c0 + tl.arange(0, BLOCK_N).to(tl.int64)
        c_ok = cs < n_clusters
        acc = tile_dot(x_ptr, c_ptr, rows, row_ok, cs, c_ok, dim, stride_x, stride_c,
                       BLOCK_M, BLOCK_N, BLOCK_D, IEEE, UPCAST)
        c_sq = tl.load(c_sq_ptr + cs, mask=c_ok, other=0.0)
        dist = c_sq[None, :] - 2.0 * acc
        dist = tl.where(c_ok[None, :], dist, float("inf"))
        tile_min, tile_arg = tl.min(dist, axis=1, return_indices=True,
                                    return_indices_tie_break_left=True)
        better = tile_min < best
        best = tl.where(better, tile_min, best)
        best_i = tl.where(better, c0 + tile_arg.to(tl.int64), best_i)
    x_sq = tl.load(x_sq_ptr + rows, mask=row_ok, other=0.0)
    tl.store(labels_ptr + rows, best_i, mask=row_ok)
    tl.store(dist_ptr + rows, tl.maximum(best + x_sq, 0.0), mask=row_ok)


@triton.jit
def _kmeans_update_kernel(x_ptr, order_ptr, offsets_ptr, w_ptr, sums_ptr, wsum_ptr,
                          dim, stride_x,
                          BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
                          WEIGHTED: tl.constexpr):
    cluster = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = d < dim
    start = tl.load(offsets_ptr + cluster)
    end = tl.load(offsets_ptr + cluster + 1)
    acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
    wacc = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for r0 in range(start, end, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        r_ok = r < end
        row = tl.load(order_ptr + r, mask=r_ok, other=0)
        v = tl.load(x_ptr + row[:, None] * stride_x + d[None, :],
                    mask=r_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        if WEIGHTED:
            w = tl.load(w_ptr + row, mask=r_ok, other=0.0)
            acc += v * w[:, None]
            wacc += w
        else:
            acc += v
    tl.store(sums_ptr + cluster * dim + d, tl.sum(acc, axis=0), mask=d_ok)
    if WEIGHTED:
        if pid_d == 0:
            tl.store(wsum_ptr + cluster, tl.sum(wacc, axis=0))


# --------------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------------

def _check_vector(name: str, v, n: int, device: torch.device) -> torch.Tensor:
    """A length-``n`` floating vector on ``device``, returned as contiguous float32."""
    if not torch.is_tensor(v):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(v.shape)}")
    if not v.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {v.dtype}")
    if v.device != device:
        raise ValueError(f"{name} is on {v.device} but x is on {device}; put them on one device")
    return v.to(torch.float32).contiguous()


def kmeans_assign_triton(x: torch.Tensor, centroids: torch.Tensor, *, x_sq_norms=None):
    """Nearest centroid of every row of ``x`` and the squared distance to it, fused.

    Parameters
    ----------
    x : torch.Tensor of shape (n, dim)
        float32, float16 or bfloat16; rows with unit column stride. CUDA, or CPU under
        ``TRITON_INTERPRET=1``.
    centroids : torch.Tensor of shape (n_clusters, dim)
        Same dtype and device as ``x``.
    x_sq_norms : torch.Tensor of shape (n,), optional
        Precomputed ``(x * x).sum(1)`` (any floating dtype, used as float32); computed
        here when omitted.

    Returns
    -------
    labels : torch.Tensor of shape (n,), int64
        Ties go to the lower centroid index.
    min_sq_dist : torch.Tensor of shape (n,), float32
        ``||x||^2 - 2 x.c + ||c||^2`` for the chosen centroid, clamped at 0.

    Raises
    ------
    ValueError
        On a shape, device or layout mismatch, or no centroids.
    TypeError
        On a non-tensor, an unsupported dtype or a dtype mismatch.

    Examples
    --------
    >>> x = torch.tensor([[0.0, 0.0], [0.9, 1.0], [5.0, 5.0]], device="cuda")  # doctest: +SKIP
    >>> c = torch.tensor([[0.0, 0.0], [5.0, 5.0]], device="cuda")
    >>> kmeans_assign_triton(x, c)[0].tolist()                                  # doctest: +SKIP
    [0, 0, 1]
    """
    check_input("x", x)
    check_input("centroids", centroids)
    check_same("x", x, "centroids", centroids)
    n, dim = x.shape
    n_clusters = centroids.shape[0]
    if dim < 1:
        raise ValueError(f"x must have at least one column, got shape {tuple(x.shape)}")
    if n_clusters < 1:
        raise ValueError("centroids must have at least one row")
    if x_sq_norms is not None:
        x_sq_norms = _check_vector("x_sq_norms", x_sq_norms, n, x.device)
    cfg = kmeans_assign_config(n, n_clusters, dim, itemsize=x.element_size(),
                               interpret=INTERPRET)
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    min_sq = torch.empty(n, dtype=torch.float32, device=x.device)
    if n == 0:
        return labels, min_sq
    if x_sq_norms is None:
        x_sq_norms = row_norms_triton(x)
    c_sq = row_norms_triton(centroids)
    grid = (triton.cdiv(n, cfg.block_m),)
    with on_device(x.device):
        _kmeans_assign_kernel[grid](
            x, centroids, c_sq, x_sq_norms, labels, min_sq,
            n, n_clusters, dim, x.stride(0), centroids.stride(0),
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_d,
            IEEE=x.dtype == torch.float32, UPCAST=INTERPRET and x.dtype != torch.float32,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
    return labels, min_sq


def kmeans_update_triton(x: torch.Tensor, labels: torch.Tensor, n_clusters: int,
                         sample_weight=None):
    """Per-cluster weighted sums of rows and total weights, deterministically.

    No float atomics: rows are stably sorted by label and each (cluster, dim block) program
    adds its cluster's rows in that order, so the same input always gives the same bits.

    Parameters
    ----------
    x : torch.Tensor of shape (n, dim)
        float32, float16 or bfloat16; rows with unit column stride. CUDA, or CPU under
        ``TRITON_INTERPRET=1``.
    labels : torch.Tensor of shape (n,), int64
        Values in ``[0, n_clusters)`` (checked).
    n_clusters : int
    sample_weight : torch.Tensor of shape (n,), optional
        Weights (any floating dtype, used as float32); ``None`` means all ones.

    Returns
    -------
    sums : torch.Tensor of shape (n_clusters, dim), float32
        ``sum_i w_i x_i`` over each cluster's rows; zeros for an empty cluster.
    counts : torch.Tensor of shape (n_clusters,), float32
        ``sum_i w_i`` per cluster (the exact row count without weights); 0 if empty.

    Raises
    ------
    ValueError
        On a shape or device mismatch, or a label outside ``[0, n_clusters)``.
    TypeError
        On a non-tensor, an unsupported dtype or non-int64 labels.
    """
    check_input("x", x)
    n_clusters = check_int("n_clusters", n_clusters, 1)
    n, dim = x.shape
    if dim < 1:
        raise ValueError(f"x must have at least one column, got shape {tuple(x.shape)}")
    if not torch.is_tensor(labels):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if labels.dtype != torch.int64:
        raise TypeError(f"labels must be int64, got {labels.dtype}")
    if labels.device != x.device:
        raise ValueError(
            f"labels is on {labels.device} but x is on {x.device}; put them on one device"
        )
    check_device("labels", labels)
    w = None
    if sample_weight is not None:
        w = _check_vector("sample_weight", sample_weight, n, x.device)
    cfg = kmeans_update_config(n, n_clusters, dim, interpret=INTERPRET)
    sums = torch.zeros((n_clusters, dim), dtype=torch.float32, device=x.device)
    counts = torch.zeros(n_clusters, dtype=torch.float32, device=x.device)
    if n == 0:
        return sums, counts
    bad = (labels < 0) | (labels >= n_clusters)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"labels[{row}]={int(labels[row])} is outside [0, {n_clusters}); "
            f"labels must be in [0, n_clusters)"
        )
    order = torch.argsort(labels, stable=True)
    n_per = torch.bincount(labels, minlength=n_clusters)
    offsets = torch.zeros(n_clusters + 1, dtype=torch.int64, device=x.device)
    torch.cumsum(n_per, 0, out=offsets[1:])
    grid = (n_clusters, triton.cdiv(dim, cfg.block_d))
    with on_device(x.device):
        _kmeans_update_kernel[grid](
            x, order, offsets, w if w is not None else counts, sums, counts,
            dim, x.stride(0),
            BLOCK_R=cfg.block_r, BLOCK_D=cfg.block_d, WEIGHTED=w is not None,
            num_warps=cfg.num_warps,
        )
    if w is None:
        counts = n_per.to(torch.float32)
    return sums, counts
