"""Block sizes, warps and stages of every Triton kernel, and the limits they imply.

This is the one place that maps a problem shape to launch parameters. It imports neither
Triton nor CUDA, so it can be imported (and tested) anywhere. Every limit is checked here
and reported with the size that broke it.

The GPU figures are starting points for an H100 (132 SMs), not yet tuned on one: tiles of
at least 16 in every ``tl.dot`` dimension (the tensor-core minimum), sizes that compile for
sm_90 without register spills (checked with Triton 3.9's ptxas; no GPU was at hand). Under
``TRITON_INTERPRET=1`` the kernels run on numpy, where larger tiles mean fewer Python steps,
so the same helpers are used with ``interpret=True`` to pick larger key tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

from interestflow._utils import check_int

__all__ = [
    "MAX_K",
    "MAX_KEYS",
    "MAX_GRID_Y",
    "TopkConfig",
    "AssignConfig",
    "UpdateConfig",
    "NormsConfig",
    "next_pow2",
    "cosine_topk_config",
    "kmeans_assign_config",
    "kmeans_update_config",
    "row_norms_config",
]

#: Largest ``k`` the Triton top-k keeps in registers. Larger ``k`` goes to another backend.
MAX_K = 128

#: Largest number of keys: key indices are packed into the low 32 bits of a 64-bit sort key
#: (``2**32 - 1`` itself is kept free so that no valid key packs to the padding value).
MAX_KEYS = 2**32 - 2

#: CUDA's limit on the second grid dimension (the key splits of the top-k).
MAX_GRID_Y = 65535

#: CUDA's limit on the first grid dimension.
MAX_GRID_X = 2**31 - 1


def next_pow2(n: int) -> int:
    """Smallest power of two ``>= n`` (1 for ``n <= 1``)."""
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _block_d(dim: int, cap: int) -> int:
    # A tensor-core dot needs K >= 16; beyond ``cap`` the kernels loop over dim tiles.
    return min(cap, max(16, next_pow2(dim)))


def _check_grid_x(name: str, n_blocks: int, size: int, block: int) -> None:
    if n_blocks > MAX_GRID_X:
        raise ValueError(
            f"{name}={size} needs {n_blocks} blocks of {block}, over the grid limit "
            f"{MAX_GRID_X}; split the input"
        )


@dataclass(frozen=True)
class TopkConfig:
    """Launch parameters of the cosine top-k kernel.

    Attributes
    ----------
    block_m : int
        Queries per program.
    block_n : int
        Keys per tile.
    block_d : int
        Dimensions per ``tl.dot`` step (the kernel loops over ``ceil(dim / block_d)``).
    k_pad : int
        Power of two ``>= k``: width of the running top-k held per query.
    n_splits : int
        Key ranges scored by separate programs (second grid dimension).
    keys_per_split : int
        Keys per split, a multiple of ``block_n``.
    num_warps, num_stages : int
        Triton launch options.
    """

    block_m: int
    block_n: int
    block_d: int
    k_pad: int
    n_splits: int
    keys_per_split: int
    num_warps: int
    num_stages: int


def cosine_topk_config(n_queries: int, n_keys: int, dim: int, k: int, *, n_sm: int = 1,
                       itemsize: int = 2, interpret: bool = False, min_tiles_per_split: int = 8,
                       block_n: int | None = None) -> TopkConfig:
    """Launch parameters for ``cosine_topk_triton``.

    Parameters
    ----------
    n_queries, n_keys, dim : int
        Problem shape: queries (n_queries, dim) against keys (n_keys, dim).
    k : int
        Results per query, ``1 <= k <= min(n_keys, MAX_K)``.
    n_sm : int, default=1
        Streaming multiprocessors of the device; the keys are split so that about
        ``4 * n_sm`` programs run even when there are few queries.
    itemsize : int, default=2
        Bytes per input element (4 for float32: smaller dim tiles keep registers in check).
    interpret : bool, default=False
        True under ``TRITON_INTERPRET=1`` (larger tiles, fewer Python steps).
    min_tiles_per_split : int, default=8
        Fewest key tiles one split scores: each split starts with an empty top-k and pays
        ``k`` insertions before its threshold starts to skip tiles.
    block_n : int, optional
        Keys per tile (a power of two >= 16); default chosen from ``k`` and ``interpret``.

    Raises
    ------
    ValueError
        If ``k > MAX_K``, ``k > n_keys``, ``n_keys > MAX_KEYS`` or a grid dimension would
        exceed the CUDA limit; the message gives the size.
    """
    n_queries = check_int("n_queries", n_queries, minimum=0)
    n_keys = check_int("n_keys", n_keys, minimum=1)
    dim = check_int("dim", dim, minimum=1)
    k = check_int("k", k, minimum=1)
    n_sm = check_int("n_sm", n_sm, minimum=1)
    min_tiles_per_split = check_int("min_tiles_per_split", min_tiles_per_split, minimum=1)
    if k > n_keys:
        raise ValueError(f"k={k} exceeds the number of keys ({n_keys}); pass k <= {n_keys}")
    if k > MAX_K:
        raise ValueError(
            f"k={k} exceeds MAX_K={MAX_K} of the Triton cosine top-k; use another backend "
            f"(torch or numba) for k > {MAX_K}"
        )
    if n_keys > MAX_KEYS:
        raise ValueError(
            f"n_keys={n_keys} exceeds the Triton top-k limit of {MAX_KEYS} keys "
            "(indices are packed into 32 bits); split the keys"
        )
    itemsize = check_int("itemsize", itemsize, minimum=1)
    k_pad = max(16, next_pow2(k))
    # The running top-k holds block_m * k_pad int64 values and a tile block_m * block_n more.
    # These sizes compile for sm_90 (Triton 3.9, 8 warps) without register spills.
    if interpret:
        block_m = 64
    else:
        block_m = 64 if k_pad <= 16 else (32 if k_pad <= 64 else 16)
    if block_n is None:
        block_n = 128 if interpret else 64
    elif block_n < 16 or block_n != next_pow2(block_n):
        raise ValueError(f"block_n={block_n} must be a power of two >= 16")
    block_d = _block_d(dim, 128 if interpret else (64 if itemsize <= 2 else 32))
    m_blocks = _cdiv(max(n_queries, 1), block_m)
    _check_grid_x("n_queries", m_blocks, n_queries, block_m)
    n_tiles = _cdiv(n_keys, block_n)
    want = _cdiv(4 * n_sm, m_blocks)
    n_splits = max(1, min(want, n_tiles // min_tiles_per_split, MAX_GRID_Y))
    tiles_per_split = _cdiv(n_tiles, n_splits)
    n_splits = _cdiv(n_tiles, tiles_per_split)
    return TopkConfig(block_m=block_m, block_n=block_n, block_d=block_d, k_pad=k_pad,
                      n_splits=n_splits, keys_per_split=tiles_per_split * block_n,
                      num_warps=8, num_stages=2)


@dataclass(frozen=True)
class AssignConfig:
    """Launch parameters of the K-means assignment kernel (rows x centroid tiles)."""

    block_m: int
    block_n: int
    block_d: int
    num_warps: int
    num_stages: int


def kmeans_assign_config(n: int, n_clusters: int, dim: int, *, itemsize: int = 2,
                         interpret: bool = False) -> AssignConfig:
    """Launch parameters for ``kmeans_assign_triton``.

    One program takes ``block_m`` rows and streams the centroids in tiles of ``block_n``.
    ``itemsize`` is the bytes per input element (4 for float32: smaller dim tiles).

    Raises
    ------
    ValueError
        If the number of row blocks exceeds the CUDA grid limit.
    """
    n = check_int("n", n, minimum=0)
    n_clusters = check_int("n_clusters", n_clusters, minimum=1)
    dim = check_int("dim", dim, minimum=1)
    if interpret:
        block_m, block_n = 64, max(16, min(128, next_pow2(n_clusters)))
    else:
        block_m, block_n = 64, max(16, min(64, next_pow2(n_clusters)))
    itemsize = check_int("itemsize", itemsize, minimum=1)
    block_d = _block_d(dim, 128 if interpret else (64 if itemsize <= 2 else 32))
    _check_grid_x("n", _cdiv(max(n, 1), block_m), n, block_m)
    # 8 warps: with 4, the 64 x 64 x 64 fp16 tile spills registers on sm_90.
    return AssignConfig(block_m=block_m, block_n=block_n, block_d=block_d,
                        num_warps=8, num_stages=2)


@dataclass(frozen=True)
class UpdateConfig:
    """Launch parameters of the segmented-sum K-means update kernel.

    One program per (cluster, dim block): it loops over its cluster's rows ``block_r`` at
    a time, in the order of a stable sort by label, so the sums are deterministic.
    """

    block_r: int
    block_d: int
    num_warps: int


def kmeans_update_config(n: int, n_clusters: int, dim: int, *,
                         interpret: bool = False) -> UpdateConfig:
    """Launch parameters for ``kmeans_update_triton``.

    Raises
    ------
    ValueError
        If ``n_clusters`` exceeds the CUDA grid limit.
    """
    check_int("n", n, minimum=0)
    n_clusters = check_int("n_clusters", n_clusters, minimum=1)
    dim = check_int("dim", dim, minimum=1)
    if n_clusters > MAX_GRID_X:
        raise ValueError(f"n_clusters={n_clusters} exceeds the grid limit {MAX_GRID_X}")
    block_d = max(16, min(512 if interpret else 128, next_pow2(dim)))
    if _cdiv(dim, block_d) > MAX_GRID_Y:
        raise ValueError(
            f"dim={dim} needs {_cdiv(dim, block_d)} blocks of {block_d}, over the grid "
            f"limit {MAX_GRID_Y}"
        )
    return UpdateConfig(block_r=64 if interpret else 32, block_d=block_d, num_warps=4)


@dataclass(frozen=True)
class NormsConfig:
    """Launch parameters of the row-norm kernel (``block_r`` rows per program)."""

    block_r: int
    block_d: int
    num_warps: int


def row_norms_config(n: int, dim: int, *, interpret: bool = False) -> NormsConfig:
    """Launch parameters for the row-norm kernel (loops over ``dim`` in ``block_d`` steps)."""
    n = check_int("n", n, minimum=0)
    dim = check_int("dim", dim, minimum=1)
    block_d = max(16, min(256, next_pow2(dim)))
    block_r = max(1, (2**16 if interpret else 4096) // block_d)
    _check_grid_x("n", _cdiv(max(n, 1), block_r), n, block_r)
    return NormsConfig(block_r=block_r, block_d=block_d, num_warps=4)
