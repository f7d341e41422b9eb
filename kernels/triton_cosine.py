"""Fused normalise-and-cosine top-k in Triton: the ``(n_queries, n_keys)`` scores never exist.

Three layers (see STYLE.md "Kernels"): the private ``@triton.jit`` kernels
``_row_norms_kernel`` and ``_cosine_topk_kernel`` (its score tiles come from the shared
``_triton_common.tile_dot``); the launchers ``row_norms_triton`` and ``cosine_topk_triton``
that check their inputs, allocate the outputs and pick the grid through ``_triton_config``;
the public dispatcher ``interestflow.kernels.cosine_topk``.

How the top-k works
-------------------
Each score is packed with its key index into one int64 whose order is "higher score first,
then lower index first": the float32 score's bits, made order-preserving, go in the high 32
bits and ``2**32 - 1 - index`` in the low 32 bits. Every (score, index) pair is then a
distinct integer, so the ties-to-lower-index rule is part of the ordering itself and no
comparison anywhere needs a tie-break.

Grid ``(ceil(n_queries / block_m), n_splits)``: a program takes ``block_m`` queries and one
contiguous range of keys (split-K, as in flash-decoding, so that a handful of queries still
fills the GPU). It loops over ``block_n``-key tiles, scores a tile with ``tl.dot`` (fp16/bf16
on tensor cores with fp32 accumulation; fp32 with ``input_precision="ieee"``, exact fp32
products) times the two inverse row norms, and keeps per query the ``k`` largest packed
values seen so far in registers. A tile touches that running top-k only while some query's
best remaining tile value beats its current ``k``-th value (a data-dependent loop that
usually runs zero times once the top-k has filled): each step moves every such query's tile
maximum into the slot of its current minimum. Each program writes its ``k`` candidates;
a ``torch.topk`` over the ``n_splits * k`` packed candidates of a query (exact, since the
packed values are distinct) gives the final, ordered top-k, which is unpacked.

Tensors may be CUDA tensors, or CPU tensors when ``TRITON_INTERPRET=1`` was set before
Triton was imported (the CI path).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from interestflow._utils import check_int

from ._triton_common import (
    INTERPRET,
    check_input,
    check_same,
    n_sm,
    on_device,
    tile_dot,
)
from ._triton_config import (
    MAX_K,
    TopkConfig,
    cosine_topk_config,
    row_norms_config,
)

__all__ = ["MAX_K", "INTERPRET", "cosine_topk_triton", "row_norms_triton"]

_LOW_MASK = 2**32 - 1


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------

@triton.jit
def _row_norms_kernel(x_ptr, out_ptr, n, dim, stride_x,
                      BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, INVERSE: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n
    acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        mask = row_ok[:, None] & (d[None, :] < dim)
        v = tl.load(x_ptr + rows[:, None] * stride_x + d[None, :], mask=mask, other=0.0)
        v = v.to(tl.float32)
        acc += v * v
    sq = tl.sum(acc, axis=1)
    if INVERSE:
        out = tl.div_rn(tl.full((BLOCK_R,), 1.0, tl.float32),
                        tl.maximum(tl.sqrt_rn(sq), 1e-12))
    else:
        out = sq
    tl.store(out_ptr + rows, out, mask=row_ok)


@triton.jit
def _cosine_topk_kernel(q_ptr, k_ptr, inv_q_ptr, inv_k_ptr, cand_ptr,
                        n_q, n_keys, dim, stride_q, stride_k, keys_per_split,
                        K: tl.constexpr, K_PAD: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        NORMALIZED: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    pid_m = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1).to(tl.int64)
    n_splits = tl.num_programs(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_q
    if not NORMALIZED:
        inv_q = tl.load(inv_q_ptr + rows, mask=row_ok, other=0.0)

    cols = tl.arange(0, K_PAD)
    pad = tl.full((BLOCK_M, BLOCK_N), -9223372036854775808, tl.int64)
    low_max = tl.full((BLOCK_N,), 4294967295, tl.int64)
    # Empty slots hold distinct values below every packed score (INT64_MIN + 1 + slot), so
    # exactly one slot per row equals the row minimum; slots >= K hold INT64_MAX so they are
    # never the minimum, which is then the k-th best.
    best = tl.where(cols[None, :] < K,
                    tl.full((BLOCK_M, K_PAD), -9223372036854775807, tl.int64) + cols[None, :],
                    tl.full((BLOCK_M, K_PAD), 9223372036854775807, tl.int64))
    kth = tl.min(best, axis=1)

    k_begin = pid_s * keys_per_split
    k_end = tl.minimum(k_begin + keys_per_split, n_keys)
    for k0 in range(k_begin, k_end, BLOCK_N):
        keys = k0 + tl.arange(0, BLOCK_N).to(tl.int64)
        key_ok = keys < k_end
        acc = tile_dot(q_ptr, k_ptr, rows, row_ok, keys, key_ok, dim, stride_q, stride_k,
                       BLOCK_M, BLOCK_N, BLOCK_D, IEEE, UPCAST)
        if NORMALIZED:
            s = acc
        else:
            inv_k = tl.load(inv_k_ptr + keys, mask=key_ok, other=0.0)
            s = acc * inv_q[:, None] * inv_k[None, :]
        # -0.0 and +0.0 must pack to the same value (then the index decides).
        s = tl.where(s == 0.0, 0.0, s)
        bits = s.to(tl.int32, bitcast=True)
        ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
        packed = (ordered.to(tl.int64) << 32) | (low_max - keys)[None, :]
        packed = tl.where(row_ok[:, None] & key_ok[None, :], packed, pad)
        tile_max = tl.max(packed, axis=1)
        while tl.max((tile_max > kth).to(tl.int32), axis=0) > 0:
            hit = tile_max > kth
            best = tl.where(hit[:, None] & (best == kth[:, None]), tile_max[:, None], best)
            packed = tl.where(hit[:, None] & (packed == tile_max[:, None]), pad, packed)
            tile_max = tl.max(packed, axis=1)
            kth = tl.min(best, axis=1)

    out = cand_ptr + (rows[:, None] * n_splits + pid_s) * K + cols[None, :]
    tl.store(out, best, mask=row_ok[:, None] & (cols[None, :] < K))


# --------------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------------

def row_norms_triton(x: torch.Tensor, *, inverse: bool = False) -> torch.Tensor:
    """Squared L2 norm of every row, or ``1 / max(||row||, 1e-12)``, in float32.

    Parameters
    ----------
    x : torch.Tensor of shape (n, dim)
        float32, float16 or bfloat16; accumulated in float32.
    inverse : bool, default=False
        Return the inverse norm used to normalise rows (as ``F.normalize`` does) instead of
        the squared norm.

    Returns
    -------
    torch.Tensor of shape (n,), float32
    """
    check_input("x", x)
    n, dim = x.shape
    if dim < 1:
        raise ValueError(f"x must have at least one column, got shape {tuple(x.shape)}")
    out = torch.empty(n, dtype=torch.float32, device=x.device)
    if n == 0:
        return out
    cfg = row_norms_config(n, dim, interpret=INTERPRET)
    grid = (triton.cdiv(n, cfg.block_r),)
    with on_device(x.device):
        _row_norms_kernel[grid](x, out, n, dim, x.stride(0),
                                BLOCK_R=cfg.block_r, BLOCK_D=cfg.block_d,
                                INVERSE=bool(inverse), num_warps=cfg.num_warps)
    return out


def _unpack(packed: torch.Tensor):
    """Packed int64 candidates -> (float32 scores, int64 key indices)."""
    hi = (packed >> 32).to(torch.int32)
    bits = torch.where(hi >= 0, hi, hi ^ 0x7FFFFFFF)
    return bits.view(torch.float32), _LOW_MASK - (packed & _LOW_MASK)


def cosine_topk_triton(queries: torch.Tensor, keys: torch.Tensor, k: int, *,
                       normalized: bool = False, config: TopkConfig | None = None):
    """Top-``k`` keys by cosine similarity for every query, fused on the GPU.

    Normalisation, scoring and selection happen in one kernel that streams over the keys;
    memory beyond the inputs is ``n_queries * n_splits * k`` int64 candidates plus two
    float32 inverse-norm vectors. Ties (equal float32 scores) go to the lower key index.

    Parameters
    ----------
    queries : torch.Tensor of shape (n_queries, dim)
        float32, float16 or bfloat16; rows with unit column stride. CUDA, or CPU under
        ``TRITON_INTERPRET=1``.
    keys : torch.Tensor of shape (n_keys, dim)
        Same dtype and device as ``queries``.
    k : int
        ``1 <= k <= min(n_keys, MAX_K)``.
    normalized : bool, default=False
        If True the rows are taken as unit vectors and scores are plain dot products;
        otherwise each row is divided by ``max(||row||, 1e-12)`` (a zero row scores 0).
    config : TopkConfig, optional
        Launch parameters; default ``_triton_config.cosine_topk_config`` for this shape
        and device. For tests and tuning.

    Returns
    -------
    scores : torch.Tensor of shape (n_queries, k), float32
        Highest first.
    indices : torch.Tensor of shape (n_queries, k), int64
        Rows of ``keys``.

    Raises
    ------
    ValueError
        On a shape, device or layout mismatch, ``k`` out of range or over ``MAX_K``.
    TypeError
        On a non-tensor, an unsupported dtype or a dtype mismatch.

    Examples
    --------
    >>> q = torch.tensor([[1.0, 0.0]], device="cuda")                  # doctest: +SKIP
    >>> keys = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]], device="cuda")
    >>> cosine_topk_triton(q, keys, 2)[1].tolist()                      # doctest: +SKIP
    [[1, 2]]
    """
    check_input("queries", queries)
    check_input("keys", keys)
    check_same("queries", queries, "keys", keys)
    k = check_int("k", k, 1)
    n_q, dim = queries.shape
    n_keys = keys.shape[0]
    if dim < 1:
        raise ValueError(f"queries and keys must have at least one column, got dim={dim}")
    if n_keys < 1:
        raise ValueError("keys must have at least one row")
    if config is None:
        config = cosine_topk_config(n_q, n_keys, dim, k, n_sm=n_sm(queries.device),
                                    itemsize=queries.element_size(), interpret=INTERPRET)
    elif not isinstance(config, TopkConfig):
        raise TypeError(f"config must be a TopkConfig, got {type(config).__name__}")
    else:
        # validates k against MAX_K and n_keys with the usual messages
        cosine_topk_config(max(n_q, 0), n_keys, dim, k)
        if (config.k_pad < k or config.keys_per_split % config.block_n
                or config.n_splits * config.keys_per_split < n_keys):
            raise ValueError(f"config {config} does not cover k={k} and n_keys={n_keys}")
    device = queries.device
    if n_q == 0:
        return (torch.empty((0, k), dtype=torch.float32, device=device),
                torch.empty((0, k), dtype=torch.int64, device=device))
    if normalized:
        # not read (NORMALIZED is a compile-time branch), but a real allocation to point at
        inv_q = inv_k = torch.empty(1, dtype=torch.float32, device=device)
    else:
        inv_q = row_norms_triton(queries, inverse=True)
        inv_k = row_norms_triton(keys, inverse=True)
    cand = torch.empty((n_q, config.n_splits, k), dtype=torch.int64, device=device)
    grid = (triton.cdiv(n_q, config.block_m), config.n_splits)
    with on_device(device):
        _cosine_topk_kernel[grid](
            queries, keys, inv_q, inv_k, cand,
            n_q, n_keys, dim, queries.stride(0), keys.stride(0), config.keys_per_split,
            K=k, K_PAD=config.k_pad,
            BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_D=config.block_d,
            NORMALIZED=bool(normalized), IEEE=queries.dtype == torch.float32,
            UPCAST=INTERPRET and queries.dtype != torch.float32,
            num_warps=config.num_warps, num_stages=config.num_stages,
        )
    # Packed values are distinct, so topk's order is exactly score desc, index asc.
    packed = cand.view(n_q, config.n_splits * k).topk(k, dim=1, sorted=True).values
    return _unpack(packed)
