"""Item retrieval at catalogue scale: exact streaming top-k, or FAISS IVF with exact re-scoring.

:class:`ItemIndex` holds L2-normalised item vectors (inner product = cosine) and returns each
query's top-``k`` items, leaving out per-query excluded items (e.g. what a user has already
seen). Two kinds:

``"exact"``
    :func:`interestflow.kernels.cosine_topk` over the stored unit vectors (numba on the CPU,
    Triton on CUDA, the torch reference for small problems): no score matrix is held, memory
    is bounded by a query chunk. Excluded items are handled by asking the kernel for
    ``k + (most excluded items of a query in the chunk)`` and filtering, queries being grouped
    by how many items they exclude.
``"ivf"``
    FAISS ``IndexIVFFlat`` (``METRIC_INNER_PRODUCT``, spherical k-means coarse quantizer)
    trained on a seeded sample of the items; on the GPU through faiss-gpu when it is installed
    and the device is CUDA, else on the CPU. Exclusion by over-fetching in the same way.
    On the CPU the index is searched list by list (``scan="batched"``): the queries of a
    block that probe a list are multiplied with it in one matrix product (bf16 on CPUs with
    native bf16 dot products, see ``candidates``), so each list is read once per block;
    FAISS's own search (``scan="faiss"``, the GPU default) streams every probed list from
    memory once per query, which on a 2-core CPU was slower than the exact path
    (``benchmarks/retrieval.py``). The candidates' scores are recomputed exactly (below) and
    decide the final order, so every returned score is an exact cosine and only recall is
    approximate.
``"auto"``
    ``"exact"`` below :data:`AUTO_IVF_MIN_ITEMS` items, ``"ivf"`` from there when faiss is
    installed (exact otherwise); one INFO line on the ``interestflow.retrieval`` logger says
    what was chosen and why.

Scores
------
The returned score of an item is ``float32(sum_d q[d] * v[d])`` with the products and the sum
in float64, ``q`` and ``v`` being the float32 unit rows (queries are normalised in
:meth:`ItemIndex.search`): the canonical score of the numba kernel with
``normalized=True``, whatever kind or backend found the item. Rows are ordered by that score,
highest first, ties to the lower item row.

IVF parameters
--------------
``nlist`` (inverted lists) defaults to :func:`default_nlist`: ``4 * sqrt(n_items)`` rounded
to the nearest power of two, halved until every list gets at least
:data:`MIN_TRAIN_PER_LIST` training points (FAISS's lower guideline of 39 per centroid).
``nprobe`` (lists scanned per query) defaults to :func:`default_nprobe`, a rule measured on
sentence-embedding-like data to reach recall@10 >= 0.95 against the exact path; see the
function's docstring for the evidence. The training sample is
``min(n_items, TRAIN_PER_LIST * nlist)`` items drawn without replacement with
``random_state``, which also seeds FAISS's k-means.

Nothing here imports faiss until an IVF index is built or loaded.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from ._utils import TopK, check_int, not_fitted, unit_rows
from interestflow.resolve import (
    BACKEND_INSTALL,
    KERNEL_BACKENDS,
    BackendUnavailableError,
    cpu_has_fast_bf16,
    module_available,
    resolve_device,
)

logger = logging.getLogger(__name__)

__all__ = ["ItemIndex", "KINDS", "default_nlist", "default_nprobe", "AUTO_IVF_MIN_ITEMS"]

#: Valid values of ``ItemIndex(kind=...)``.
KINDS = ("auto", "exact", "ivf")

#: ``kind="auto"`` builds an IVF index from this many items (when faiss is installed).
#: Measured on 2-core CPUs (``benchmarks/retrieval.py`` rule check, default nlist/nprobe,
#: user-like queries; 1,000 queries per case): on an AMX Xeon, where both paths use bf16
#: products, IVF search was 1.4x the exact path at 30,000 items, 1.5x at 100,000 (recall@10
#: 0.97), 2.1x at 300,000 (0.98) and 5.8x at 1,000,000 (0.99, 100,000 queries); on a Zen 4
#: EPYC without AMX (float32 IVF scan) about 3x at 100,000. Below this size the exact path
#: stays exact at a cost within about 2x, and no index is trained.
AUTO_IVF_MIN_ITEMS = 200_000

#: FAISS's guideline is 39 to 256 training points per centroid: fewer leaves centroids poorly
#: placed (and FAISS prints a warning), more costs training time for no recall.
MIN_TRAIN_PER_LIST = 39
#: Training points per inverted list drawn for the k-means (capped by the number of items).
#: On real all-MiniLM-L6-v2 embeddings (68,000 texts, 1024 lists) 39 and 64 points per list
#: gave the same recall (0.930 / 0.934 at nprobe 32); training time is proportional to it.
TRAIN_PER_LIST = 40

#: Queries per chunk of a search: bounds the candidate arrays and the FAISS/kernel call size.
QUERY_CHUNK = 16_384
#: Queries per chunk of the batched IVF scan. Each thread multiplies every probed list with
#: the rows of its queries that probe it, so larger chunks give larger products: 20,000
#: queries of the 1M-item benchmark ran ~19% faster in one chunk than in two. Its grouping
#: arrays take ``12 * nprobe`` bytes per query (50 MB at nprobe 128).
SCAN_QUERY_CHUNK = 32_768
#: Exact re-scoring runs on several threads from this many queries per thread.
RESCORE_MIN_ROWS = 1024
#: Most (query, candidate) pairs held per chunk; a chunk whose queries exclude many items
#: (deep over-fetch) gets fewer queries.
CHUNK_PAIRS = 1 << 22
#: GPU FAISS selects at most this many results per query; deeper over-fetches use a CPU copy.
GPU_MAX_K = 2048
#: Valid values of ``ItemIndex(scan=...)``.
SCANS = ("auto", "batched", "faiss")
#: Valid values of ``ItemIndex(candidates=...)``.
CANDIDATES = ("auto", "bfloat16", "float32")

#: Candidates the bf16 batched scan keeps per query beyond the depth asked for. bf16 scores
#: carry 8 significant bits (an error of ~0.004 on a cosine), so an item of the exact top-k
#: can rank a few places lower by its bf16 score; the extra candidates are re-scored exactly
#: like the others. On 10,000 user-like queries of the 1,000,000-item benchmark catalogue
#: (nprobe 128 of 4096), the top-10 after exact re-scoring agreed with the float32 scan's on
#: 93.6% / 99.87% / 99.87% / 99.90% of the rows with 0 / 8 / 16 / 32 extra candidates (the
#: rest are ties between duplicated items); each 16 more cost ~5% of the scan time.
BF16_EXTRA = 16
#: ``candidates="auto"`` scans in bf16 from this dimension on (below it the matmul is too
#: small for bf16 to pay for its rounding), on CPUs with native bf16 dot products.
AUTO_BF16_MIN_DIM = 64
#: The bf16 scan pads the rows and columns of its matmuls to multiples of this. oneDNN
#: JIT-compiles one kernel per distinct bf16 matmul shape (and caches about a thousand):
#: with one shape per inverted list the scan spent most of its time compiling (3x slower
#: than float32, measured); padded, a 1M-item index needs a few hundred shapes.
SCAN_PAD = 64
#: Most query rows per matmul of the batched scan.
SCAN_ROWS = 512

FORMAT = "interestflow.ItemIndex"
#: 2: ``params`` hold ``candidates`` and ``candidates_`` is saved (1: neither).
FORMAT_VERSION = 2


# --------------------------------------------------------------------------- parameter rules


def default_nlist(n_items: int) -> int:
    """Number of inverted lists for ``n_items`` items.

    ``4 * sqrt(n_items)`` rounded to the nearest power of two (FAISS's guideline is
    4 to 16 times the square root for up to a million vectors; the low end keeps training and
    assignment cheap on a CPU), halved until ``n_items >= 39 * nlist`` so that each centroid
    is trained on at least 39 points. 1,000,000 items -> 4096; 100,000 -> 1024;
    10,000 -> 256; fewer than 78 items -> 1.

    Parameters
    ----------
    n_items : int
        At least 1.

    Returns
    -------
    int
    """
    n = int(n_items)
    if n < 1:
        raise ValueError(f"n_items={n_items} is invalid; pass an integer >= 1")
    nlist = 1 << max(0, round(math.log2(4.0 * math.sqrt(n))))
    while nlist > 1 and nlist * MIN_TRAIN_PER_LIST > n:
        nlist //= 2
    return nlist


def default_nprobe(nlist: int) -> int:
    """Number of inverted lists scanned per query for an index of ``nlist`` lists.

    ``round(2 * sqrt(nlist))``, at least 64, at most ``nlist``: 256 lists -> 64 (a quarter),
    1024 -> 64, 2048 -> 91, 4096 -> 128, 16384 -> 256.

    Why: with ``nlist`` from :func:`default_nlist`, the ``nprobe`` that reaches recall@10 =
    0.95 grew like ``sqrt(nlist)`` on real all-MiniLM-L6-v2 embeddings (68,000 texts of the
    shared evaluation data, subsampled to 17,000 / 34,000 / 68,000 items: about 28 / 40 / 48
    lists for user and item queries) and stayed about 48 on synthetic data calibrated to the
    same recall curve (17,000 to 270,000 items). ``2 sqrt(nlist)`` gives recall@10 0.96-0.98
    on the real sets; the floor of 64 covers small synthetic catalogues (0.89 at 32 lists of
    256). ``benchmarks/retrieval.py`` re-measures this rule (its "rule check" table).

    Parameters
    ----------
    nlist : int
        At least 1.

    Returns
    -------
    int
    """
    nlist = int(nlist)
    if nlist < 1:
        raise ValueError(f"nlist={nlist} is invalid; pass an integer >= 1")
    return min(nlist, max(64, round(2.0 * math.sqrt(nlist))))


# --------------------------------------------------------------------------- validation


def _as_matrix(name: str, x) -> np.ndarray:
    """``x`` as a 2-D float numpy array (torch tensors are copied to the host)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 2-D array of numbers, got {type(x).__name__}") from exc
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float or int), got dtype {arr.dtype}")
    if arr.ndim != 2:
        hint = f"; for one vector pass {name}.reshape(1, -1)" if arr.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {arr.shape}{hint}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} has shape {arr.shape}; pass rows with at least one column")
    return arr


def _check_exclude(exclude, n_queries: int, n_items: int):
    """``exclude`` as (indptr int64 (n_queries + 1,), indices int64) or None."""
    if exclude is None:
        return None
    if hasattr(exclude, "indptr") and hasattr(exclude, "indices"):  # scipy.sparse CSR
        if getattr(exclude, "format", "csr") != "csr":
            raise TypeError(f"exclude must be a CSR matrix or an (indptr, indices) pair, got "
                            f"a {exclude.format!r} sparse matrix; convert it with .tocsr()")
        indptr, indices = exclude.indptr, exclude.indices
    elif isinstance(exclude, (tuple, list)) and len(exclude) == 2:
        indptr, indices = exclude
    else:
        raise TypeError("exclude must be None, an (indptr, indices) pair of integer arrays "
                        f"(CSR rows per query) or a scipy CSR matrix, got {type(exclude).__name__}")
    indptr, indices = np.asarray(indptr), np.asarray(indices)
    for nm, a in (("indptr", indptr), ("indices", indices)):
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise TypeError(f"exclude {nm} must be a 1-D integer array, got shape {a.shape} "
                            f"and dtype {a.dtype}")
    indptr = indptr.astype(np.int64, copy=False)
    indices = indices.astype(np.int64, copy=False)
    if len(indptr) != n_queries + 1:
        raise ValueError(f"exclude indptr has length {len(indptr)}; it must be n_queries + 1 = "
                         f"{n_queries + 1}")
    if indptr[0] != 0 or indptr[-1] != len(indices):
        raise ValueError(f"exclude indptr must start at 0 and end at len(indices)="
                         f"{len(indices)}, got {int(indptr[0])} and {int(indptr[-1])}")
    step = np.diff(indptr)
    if (step < 0).any():
        q = int(np.argmax(step < 0))
        raise ValueError(f"exclude indptr decreases at query {q} ({int(indptr[q])} -> "
                         f"{int(indptr[q + 1])}); it must be non-decreasing")
    bad = (indices < 0) | (indices >= n_items)
    if bad.any():
        j = int(np.argmax(bad))
        q = int(np.searchsorted(indptr, j, side="right") - 1)
        raise ValueError(f"exclude indices: query {q} excludes item row {int(indices[j])}, "
                         f"out of range [0, {n_items})")
    return indptr, indices


# --------------------------------------------------------------------------- faiss helpers


def _import_faiss(what: str):
    if not module_available("faiss"):
        raise BackendUnavailableError(
            f"{what} needs FAISS, which is not installed; install it with: "
            f"{BACKEND_INSTALL['faiss']}")
    import faiss

    return faiss


def _faiss_has_gpu(faiss) -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _in_threads(work, n: int, threads: int) -> None:
    """Run ``work(lo, hi)`` over ``threads`` contiguous shares of ``range(n)`` (at least one).

    Each worker thread runs single-threaded torch ops (torch's intra-op setting is per
    thread: small products run better side by side than each split in two) and numba kernels
    that release the GIL; shares write disjoint rows, so results do not depend on threads."""
    import torch

    threads = max(1, min(int(threads), n))
    cuts = np.linspace(0, n, threads + 1).astype(np.int64)
    shares = [(int(cuts[t]), int(cuts[t + 1])) for t in range(threads) if cuts[t + 1] > cuts[t]]
    if len(shares) <= 1:
        work(0, n)
        return
    from concurrent.futures import ThreadPoolExecutor

    torch_threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(len(shares), initializer=torch.set_num_threads,
                                initargs=(1,)) as pool:
            list(pool.map(lambda b: work(*b), shares))
    finally:
        # the workers' set_num_threads(1) also changed torch's default for new threads
        torch.set_num_threads(torch_threads)


def bf16_scan_bytes(n_items: int, dim: int, nlist: int) -> int:
    """Upper bound of the bf16 batched scan's copy of an IVF index's lists, in bytes (each
    list padded to a multiple of :data:`SCAN_PAD` rows)."""
    return 2 * dim * (n_items + nlist * SCAN_PAD)


def _probe_groups(qt, centroids, nprobe: int, nlist: int):
    """Each query's ``nprobe`` nearest lists (float32 products, ``torch.topk``) as its
    (query, list) pairs grouped by list: ``(bounds (nlist + 1,), query of each pair)``."""
    import torch

    m = qt.shape[0]
    step = max(1, (1 << 24) // nlist)  # (queries x centroids) scores per product
    probes = np.concatenate([
        torch.topk(qt[a:a + step] @ centroids.T, nprobe, dim=1, sorted=False)
        .indices.numpy().astype(np.int32) for a in range(0, m, step)]).ravel()
    bounds_l = np.zeros(nlist + 1, np.int64)
    np.cumsum(np.bincount(probes, minlength=nlist), out=bounds_l[1:])
    # (query, slot) pairs grouped by list, then their queries (in place)
    qrows_all = np.argsort(probes, kind="stable")
    del probes
    np.floor_divide(qrows_all, nprobe, out=qrows_all)
    return bounds_l, qrows_all


def _pad(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`SCAN_PAD`."""
    return -(-n // SCAN_PAD) * SCAN_PAD


# --------------------------------------------------------------------------- the index


class ItemIndex(BaseEstimator):
    """Top-``k`` items by cosine similarity for many queries: exact, or FAISS IVF.

    Parameters
    ----------
    kind : {"auto", "exact", "ivf"}, default="auto"
        ``"exact"``: streaming exact top-k (:func:`interestflow.kernels.cosine_topk`).
        ``"ivf"``: FAISS ``IndexIVFFlat`` with exact re-scoring of its candidates (raises
        :class:`~interestflow.resolve.BackendUnavailableError` when faiss is not installed).
        ``"auto"``: ``"exact"`` below :data:`AUTO_IVF_MIN_ITEMS` items or without faiss,
        ``"ivf"`` otherwise; logged at INFO with the reason.
    nlist : int, optional
        IVF inverted lists; default :func:`default_nlist` of the number of items. Ignored by
        the exact kind.
    nprobe : int, optional
        IVF lists scanned per query (``<= nlist``); default :func:`default_nprobe`. Ignored by
        the exact kind.
    backend : {"auto", "numba", "triton", "torch"}, default="auto"
        Kernel backend of the exact kind (see :func:`interestflow.kernels.cosine_topk`).
    device : str, torch.device or None, default=None
        ``None``/``"auto"``: CUDA when visible, else the CPU. On CUDA the exact kind runs the
        Triton kernel on a device copy of the vectors and IVF runs on faiss-gpu when it is
        installed (on the CPU otherwise, said in the log line).
    random_state : int, default=0
        Seeds the IVF training sample and FAISS's k-means.
    scan : {"auto", "batched", "faiss"}, default="auto"
        How an IVF index is searched. ``"faiss"``: FAISS's own ``index.search`` (per query,
        it streams every probed list from memory). ``"batched"`` (CPU only): the same probed
        lists (the ``nprobe`` centroids of highest inner product with the query) and the same
        inverted lists (zero-copy views of the FAISS index), scanned list by list with one
        matrix product per list for all the queries of a block that probe it, so each list is
        read once per block instead of once per query.
        On a 2-core CPU the per-query scan is bound by memory bandwidth and was slower than
        the exact path at ``nprobe`` values that reach recall 0.95; the batched scan is
        compute-bound (``benchmarks/retrieval.py`` measures both). ``"auto"``: ``"faiss"``
        for a GPU index, ``"batched"`` on the CPU. Candidates are re-scored exactly either way.
    candidates : {"auto", "bfloat16", "float32"}, default="auto"
        Precision of the batched scan's matrix products, which only propose candidates
        (every returned score is recomputed exactly). ``"bfloat16"``: bf16 copies of the
        inverted lists (made on the first search) and :data:`BF16_EXTRA` more candidates per
        query; on a CPU with AMX a bf16 product runs ~7x a float32 one. ``"auto"``:
        ``"bfloat16"`` on CPUs with native bf16 dot products (AMX-BF16 or AVX512-BF16) when
        ``dim >= 64``, else ``"float32"``. The two differ only where bf16 rounding pushes an
        item out of a query's candidate list (top-10 agreement 99.9% on the benchmark
        catalogue, the rest ties between duplicated items). Ignored by the exact kind and by
        ``scan="faiss"``.

    Attributes
    ----------
    kind_ : str
        ``"exact"`` or ``"ivf"``.
    reason_ : str
        Why ``kind_`` was chosen.
    vectors_ : numpy.ndarray of shape (n_items, dim), float32
        The unit item rows (a zero input row stays zero and scores 0 against every query).
    item_ids_ : pandas.Index or None
        Ids of the rows, when given to :meth:`fit`.
    n_items_, dim_ : int
    nlist_, nprobe_ : int or None
        IVF parameters in use (None for the exact kind).
    device_ : str
        Where searches run, e.g. ``"cpu"``.
    index_ : faiss.Index or None
        The FAISS index (IVF only).
    scan_ : str or None
        ``"batched"`` or ``"faiss"`` (IVF only).
    candidates_ : str or None
        ``"bfloat16"`` or ``"float32"``: the batched scan's precision (None otherwise).

    Notes
    -----
    Memory: the exact kind holds the float32 unit rows (``4 * n_items * dim`` bytes); IVF
    holds them twice (once inside FAISS's inverted lists, once here for exact re-scoring), and
    the bf16 batched scan adds a bf16 copy of the lists (about ``2 * n_items * dim`` bytes
    plus padding of each list to a multiple of :data:`SCAN_PAD` rows).
    A search works on at most :data:`QUERY_CHUNK` queries (:data:`SCAN_QUERY_CHUNK` for the
    batched IVF scan, which also holds ``12 * nprobe`` bytes per query of the chunk) and
    :data:`CHUNK_PAIRS` (query, candidate) pairs at a time.

    Examples
    --------
    >>> import numpy as np
    >>> from interestflow.retrieval import ItemIndex
    >>> items = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], np.float32)
    >>> index = ItemIndex(kind="exact", device="cpu").fit(items, item_ids=["a", "b", "c"])
    >>> scores, rows = index.search(np.array([[1.0, 0.1]], np.float32), 2)
    >>> rows.tolist()
    [[0, 2]]
    >>> index.item_ids_[rows[0]].tolist()
    ['a', 'c']
    >>> index.search(np.array([[1.0, 0.1]], np.float32), 2, exclude=([0, 1], [0]))[1].tolist()
    [[2, 1]]
    """

    def __init__(self, kind="auto", *, nlist=None, nprobe=None, backend="auto", device=None,
                 random_state=0, scan="auto", candidates="auto"):
        self.kind = kind
        self.nlist = nlist
        self.nprobe = nprobe
        self.backend = backend
        self.device = device
        self.random_state = random_state
        self.scan = scan
        self.candidates = candidates

    # ------------------------------------------------------------------ fit

    def _validate_params(self, n_items: int):
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not valid; pass one of "
                             f"{', '.join(repr(k) for k in KINDS)}")
        if not isinstance(self.backend, str) or self.backend not in KERNEL_BACKENDS:
            raise ValueError(f"backend={self.backend!r} is not valid; pass one of "
                             f"{', '.join(repr(b) for b in KERNEL_BACKENDS)}")
        if self.nlist is not None:
            check_int("nlist", self.nlist, 1)
            if self.nlist > n_items:
                raise ValueError(f"nlist={self.nlist} exceeds the number of items ({n_items}); "
                                 f"pass nlist <= {n_items} or nlist=None for "
                                 f"{default_nlist(n_items)}")
        if self.nprobe is not None:
            check_int("nprobe", self.nprobe, 1)
        if self.random_state is not None:
            check_int("random_state", self.random_state, 0)
        if not isinstance(self.scan, str) or self.scan not in SCANS:
            raise ValueError(f"scan={self.scan!r} is not valid; pass one of "
                             f"{', '.join(repr(v) for v in SCANS)}")
        if not isinstance(self.candidates, str) or self.candidates not in CANDIDATES:
            raise ValueError(f"candidates={self.candidates!r} is not valid; pass one of "
                             f"{', '.join(repr(v) for v in CANDIDATES)}")

    def fit(self, item_vectors, item_ids=None) -> "ItemIndex":
        """Index ``item_vectors`` (rows are L2-normalised; inner product = cosine).

        Parameters
        ----------
        item_vectors : array-like or torch.Tensor of shape (n_items, dim)
            Real, finite values.
        item_ids : array-like of shape (n_items,), optional
            Unique ids of the rows, kept as :attr:`item_ids_` (a pandas Index).

        Returns
        -------
        self
        """
        x = _as_matrix("item_vectors", item_vectors)
        n_items, dim = x.shape
        if n_items < 1:
            raise ValueError("item_vectors has no rows; pass at least one item vector")
        self._validate_params(n_items)
        ids = None
        if item_ids is not None:
            ids = pd.Index(item_ids.to_numpy() if isinstance(item_ids, pd.Series) else item_ids)
            if ids.ndim != 1 or len(ids) != n_items:
                raise ValueError(f"item_ids has {len(ids)} entries but item_vectors has "
                                 f"{n_items} rows; pass one id per row")
            if ids.hasnans:
                raise ValueError(f"item_ids row {int(np.argmax(ids.isna()))} is missing "
                                 "(NaN/None); pass an id for every row")
            if not ids.is_unique:
                dup = ids[ids.duplicated()][0]
                raise ValueError(f"item_ids are not unique: {dup!r} appears more than once "
                                 f"(rows {np.flatnonzero(ids == dup)[:5].tolist()})")
        dev = resolve_device(self.device)
        kind, reason = self._choose_kind(n_items)
        self.vectors_ = unit_rows(x, name="item_vectors")
        self.item_ids_ = ids
        self.n_items_, self.dim_ = n_items, dim
        self.kind_, self.reason_ = kind, reason
        self.device_ = str(dev)
        self._reset_state()
        detail = ""
        if kind == "ivf":
            self._build_ivf(dev)
            self._set_scan()
            detail = (f": nlist={self.nlist_}, nprobe={self.nprobe_}, scan={self.scan_!r}"
                      + (f" ({self.candidates_} candidates)" if self.candidates_ else "") + " on "
                      f"{'the GPU (faiss-gpu)' if self._faiss_gpu else 'the CPU'}")
            if dev.type == "cuda" and not self._faiss_gpu:
                detail += " (this faiss has no GPU support: install faiss-gpu to run IVF on CUDA)"
        else:
            self._prepare_exact(dev)
        logger.info("ItemIndex kind=%r -> %r for %d items x %d%s (%s)", self.kind, kind,
                    n_items, dim, detail, reason)
        return self

    def _reset_state(self):
        self.index_ = None
        self.nlist_ = self.nprobe_ = self.scan_ = self.candidates_ = None
        self._faiss_gpu = False
        self._cpu_index = None
        self._torch_vectors = None
        self._lists = None

    def _set_scan(self):
        if self.scan == "batched" and self._faiss_gpu:
            raise ValueError("scan='batched' runs on the CPU but this IVF index is on the GPU; "
                             "pass scan='faiss' or 'auto', or device='cpu'")
        self.scan_ = self.scan if self.scan != "auto" else \
            ("faiss" if self._faiss_gpu else "batched")
        if self.scan_ == "batched":
            self.candidates_ = self.candidates if self.candidates != "auto" else (
                "bfloat16" if cpu_has_fast_bf16() and self.dim_ >= AUTO_BF16_MIN_DIM
                else "float32")

    def _choose_kind(self, n_items: int) -> tuple[str, str]:
        if self.kind == "exact":
            return "exact", "requested"
        if self.kind == "ivf":
            _import_faiss("ItemIndex(kind='ivf')")
            return "ivf", "requested"
        if n_items < AUTO_IVF_MIN_ITEMS:
            return "exact", (f"{n_items} items < AUTO_IVF_MIN_ITEMS={AUTO_IVF_MIN_ITEMS}: the "
                             "exact path is fast enough and exact")
        if not module_available("faiss"):
            return "exact", (f"{n_items} items >= {AUTO_IVF_MIN_ITEMS} but faiss is not "
                             f"installed ({BACKEND_INSTALL['faiss']})")
        return "ivf", (f"{n_items} items >= AUTO_IVF_MIN_ITEMS={AUTO_IVF_MIN_ITEMS} and faiss "
                       "is installed")

    def _prepare_exact(self, dev):
        if dev.type == "cuda":
            import torch

            self._torch_vectors = torch.from_numpy(self.vectors_).to(dev)

    def _build_ivf(self, dev):
        faiss = _import_faiss("ItemIndex(kind='ivf')")
        n, dim = self.vectors_.shape
        nlist = default_nlist(n) if self.nlist is None else int(self.nlist)
        nprobe = default_nprobe(nlist) if self.nprobe is None else int(self.nprobe)
        if nprobe > nlist:
            raise ValueError(f"nprobe={nprobe} exceeds nlist={nlist}; pass nprobe <= {nlist}")
        if n < MIN_TRAIN_PER_LIST * nlist:
            logger.warning("ItemIndex: nlist=%d has fewer than %d training points per list "
                           "(%d items); centroids may be poorly placed", nlist,
                           MIN_TRAIN_PER_LIST, n)
        seed = self.random_state if self.random_state is not None else \
            int(np.random.SeedSequence().entropy % (2 ** 31))
        n_train = min(n, TRAIN_PER_LIST * nlist)
        rng = np.random.default_rng(seed)
        sample = self.vectors_ if n_train == n else \
            self.vectors_[np.sort(rng.choice(n, n_train, replace=False))]
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed) % (2 ** 31)
        self._faiss_gpu = dev.type == "cuda" and _faiss_has_gpu(faiss)
        if self._faiss_gpu:
            self._gpu_res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_res, dev.index or 0, index)
        index.train(np.ascontiguousarray(sample))
        index.add(self.vectors_)
        index.nprobe = nprobe
        self.index_, self.nlist_, self.nprobe_ = index, nlist, nprobe

    def set_nprobe(self, nprobe) -> "ItemIndex":
        """Change how many inverted lists a fitted IVF index scans per query (no rebuild).

        More lists: higher recall, slower search. :meth:`save` keeps the new value (the
        ``nprobe`` parameter, used by the next :meth:`fit`, is left as it is).

        Parameters
        ----------
        nprobe : int
            ``1 <= nprobe <= nlist_``.

        Returns
        -------
        self
        """
        if getattr(self, "kind_", None) != "ivf":
            raise ValueError("set_nprobe needs a fitted IVF index (kind_ == 'ivf')")
        nprobe = check_int("nprobe", nprobe, 1)
        if nprobe > self.nlist_:
            raise ValueError(f"nprobe={nprobe} exceeds nlist={self.nlist_}; pass nprobe <= "
                             f"{self.nlist_}")
        self.nprobe_ = nprobe
        self.index_.nprobe = nprobe
        if self._cpu_index is not None:
            self._cpu_index.nprobe = nprobe
        return self

    # ------------------------------------------------------------------ search

    def search(self, queries, k, *, exclude=None):
        """Top-``k`` items of every query by cosine similarity.

        Parameters
        ----------
        queries : array-like or torch.Tensor of shape (n_queries, dim)
            Real, finite; normalised here (a zero query scores 0 against every item).
        k : int
            At least 1; a query with fewer than ``k`` eligible items is padded.
        exclude : (indptr, indices) or scipy.sparse CSR matrix, optional
            Item rows to leave out per query, CSR layout: query ``i`` excludes
            ``indices[indptr[i]:indptr[i + 1]]``; ``indptr`` has ``n_queries + 1`` entries.

        Returns
        -------
        scores : numpy.ndarray of shape (n_queries, k), float32
            Exact cosines (see the module docstring), highest first; ``-inf`` in padding.
        rows : numpy.ndarray of shape (n_queries, k), int64
            Item rows (``item_ids_[rows]`` gives ids); ``-1`` in padding. Equal scores are
            ordered by lower row.

        A :class:`~interestflow.TopK` ``(scores, rows)``, the order of every top-k in
        interestflow (as FAISS). Torch tensor queries give torch tensors on the queries'
        device.
        """
        if not hasattr(self, "kind_"):
            raise not_fitted("this ItemIndex is not fitted; call fit(item_vectors) first")
        q = _as_matrix("queries", queries)
        if q.shape[1] != self.dim_:
            raise ValueError(f"queries have dim {q.shape[1]} but the index holds dim "
                             f"{self.dim_} vectors")
        k = check_int("k", k, 1)
        n_q = q.shape[0]
        ex = _check_exclude(exclude, n_q, self.n_items_)
        qn = unit_rows(q, name="queries")
        out_s = np.full((n_q, k), -np.inf, np.float32)
        out_i = np.full((n_q, k), -1, np.int64)
        if n_q:
            n_ex = np.diff(ex[0]) if ex is not None else np.zeros(n_q, np.int64)
            # queries that exclude many items need a deeper fetch: group similar depths
            order = np.argsort(n_ex, kind="stable")
            chunk = SCAN_QUERY_CHUNK if self.scan_ == "batched" else QUERY_CHUNK
            a = 0
            while a < n_q:
                # equal chunks (no small tail chunk: the batched IVF scan's cost per chunk
                # has a part that does not shrink with it)
                left = n_q - a
                b = a + -(-left // -(-left // chunk))  # ceil(left / number of chunks)
                while b - a > 1:  # bound the candidates held (the deepest query decides)
                    width = self._width(self._depth(k, n_ex[order[b - 1]]))
                    if (b - a) * width <= CHUNK_PAIRS:
                        break
                    b = a + max(1, CHUNK_PAIRS // width)
                sel = order[a:b]
                depth = self._depth(k, n_ex[sel[-1]])
                cand = self._candidates(qn[sel], depth)
                s, i = self._finish(qn[sel], cand, k, sel, ex)
                out_s[sel], out_i[sel] = s, i
                a = b
        if hasattr(queries, "detach") and hasattr(queries, "device"):
            import torch

            return TopK(torch.from_numpy(out_s).to(queries.device),
                        torch.from_numpy(out_i).to(queries.device))
        return TopK(out_s, out_i)

    def _depth(self, k: int, n_excluded) -> int:
        return int(min(self.n_items_, k + int(n_excluded)))

    def _width(self, depth: int) -> int:
        """Candidates per query held by a fetch of ``depth``: the bf16 scan adds its extra."""
        extra = BF16_EXTRA if self.candidates_ == "bfloat16" else 0
        return min(self.n_items_, depth + extra)

    def _candidates(self, qn: np.ndarray, depth: int) -> np.ndarray:
        """(n, depth) candidate rows (-1 where none) from the kernel or FAISS."""
        if self.kind_ == "exact":
            from interestflow.kernels import cosine_topk

            if self._torch_vectors is not None:
                import torch

                qt = torch.from_numpy(qn).to(self._torch_vectors.device)
                _, idx = cosine_topk(qt, self._torch_vectors, depth, backend=self.backend,
                                     normalized=True)
                return idx.cpu().numpy()
            _, idx = cosine_topk(qn, self.vectors_, depth, backend=self.backend,
                                 normalized=True)
            return np.asarray(idx, np.int64)
        if self.scan_ == "batched":
            return self._batched_scan(qn, depth)
        index = self.index_
        if self._faiss_gpu and depth > GPU_MAX_K:
            index = self._cpu_copy()
        _, idx = index.search(np.ascontiguousarray(qn), depth)
        return idx.astype(np.int64, copy=False)

    def _list_views(self):
        """(centroids (nlist, dim) float32 tensor, per list: (tensor (rows, dim) in the scan's
        precision, int64 item rows) or None).

        float32: zero-copy views of the FAISS index's ArrayInvertedLists, valid while
        ``index_`` lives. bfloat16: copies, each list padded with zero rows to a multiple of
        :data:`SCAN_PAD` (the ids keep the list's true length)."""
        if self._lists is None:
            import faiss
            import torch

            bf16 = self.candidates_ == "bfloat16"
            ivf = faiss.extract_index_ivf(self.index_)
            invlists = ivf.invlists
            views = []
            for lst in range(self.nlist_):
                size = invlists.list_size(lst)
                if size == 0:
                    views.append(None)
                    continue
                codes = faiss.rev_swig_ptr(invlists.get_codes(lst), size * self.dim_ * 4)
                ids = faiss.rev_swig_ptr(invlists.get_ids(lst), size)
                vecs = torch.from_numpy(codes.view(np.float32).reshape(size, self.dim_))
                if bf16:
                    padded = torch.zeros((_pad(size), self.dim_), dtype=torch.bfloat16)
                    padded[:size] = vecs
                    vecs = padded
                views.append((vecs, ids))
            centroids = torch.from_numpy(ivf.quantizer.reconstruct_n(0, self.nlist_))
            self._lists = (centroids, views)
        return self._lists

    def _batched_scan(self, qn: np.ndarray, depth: int) -> np.ndarray:
        """(n, depth) candidate rows (unordered, -1 where fewer) of an IVF search, list by
        list (see ``scan``); ``depth + BF16_EXTRA`` of them with bf16 candidates.

        Each thread takes a contiguous share of the queries: it picks every query's
        ``nprobe`` nearest centroids (float32 products, ``torch.topk``), groups the
        (query, list) pairs by list, and for each list multiplies the rows of its queries
        that probe it with the list's vectors (at most :data:`SCAN_ROWS` rows per product),
        pushing the scores into the queries' running top-``depth`` heaps (private to the
        thread: no locks).
        """
        import torch

        from interestflow.kernels import numba_ivf

        bf16 = self.candidates_ == "bfloat16"
        depth = self._width(depth)
        centroids, lists = self._list_views()
        nprobe, nlist, dim = self.nprobe_, self.nlist_, self.dim_
        n = len(qn)
        heap_s = np.full((n, depth), -np.inf, np.float32)
        heap_i = np.full((n, depth), -1, np.int64)
        max_cols = max(v[0].shape[0] for v in lists if v is not None)
        threads = min(torch.get_num_threads(), n)
        scan_dtype = torch.bfloat16 if bf16 else torch.float32

        def work(lo, hi):
            qt = torch.from_numpy(qn[lo:hi])
            bounds_l, qrows_all = _probe_groups(qt, centroids, nprobe, nlist)
            mine_s, mine_i = heap_s[lo:hi], heap_i[lo:hi]
            q_scan = qt.to(scan_dtype) if bf16 else qt
            # reused buffers: a fresh tensor per list would be a fresh mmap + page faults.
            # The padding rows of a bf16 product hold zeros or earlier query rows (finite;
            # their scores are never read)
            qbuf = torch.zeros((SCAN_ROWS, dim), dtype=scan_dtype)
            sbuf = torch.empty(SCAN_ROWS * max_cols, dtype=scan_dtype)
            qrows_t = torch.from_numpy(qrows_all)
            for lst in range(nlist):
                a0, b0 = bounds_l[lst], bounds_l[lst + 1]
                if a0 == b0 or lists[lst] is None:
                    continue
                vecs, ids = lists[lst]
                for a in range(a0, b0, SCAN_ROWS):
                    b = min(b0, a + SCAN_ROWS)
                    torch.index_select(q_scan, 0, qrows_t[a:b], out=qbuf[:b - a])
                    rows_q = qbuf[:_pad(b - a)] if bf16 else qbuf[:b - a]
                    scores = sbuf[:rows_q.shape[0] * vecs.shape[0]].view(rows_q.shape[0],
                                                                          vecs.shape[0])
                    torch.mm(rows_q, vecs.T, out=scores)
                    if bf16:
                        numba_ivf.heap_rows_bf16(scores.view(torch.int16).numpy(), b - a,
                                                 len(ids), qrows_all[a:b], ids, mine_s, mine_i)
                    else:
                        numba_ivf.heap_rows(scores.numpy(), qrows_all[a:b], ids, mine_s,
                                            mine_i)

        _in_threads(work, n, threads)
        return heap_i

    def _cpu_copy(self):
        if self._cpu_index is None:
            import faiss

            self._cpu_index = faiss.index_gpu_to_cpu(self.index_)
            self._cpu_index.nprobe = self.nprobe_
        return self._cpu_index

    def _finish(self, qn, cand, k, sel, ex):
        """Drop excluded/missing candidates, re-score exactly, order, keep the top ``k``."""
        n, depth = cand.shape
        valid = cand >= 0
        if ex is not None:
            indptr, indices = ex
            cnt = indptr[sel + 1] - indptr[sel]
            if cnt.any():
                # (query, item) pairs as one int64 key: one vectorised membership test
                starts = np.repeat(indptr[sel], cnt)
                offs = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
                pairs = np.repeat(np.arange(n, dtype=np.int64), cnt) * self.n_items_ \
                    + indices[starts + offs]
                valid &= ~np.isin(np.arange(n, dtype=np.int64)[:, None] * self.n_items_ + cand,
                                  pairs)
        if self.kind_ == "exact":
            # the kernel's order is exact: keep the first k valid candidates of each row
            pos = np.cumsum(valid, axis=1) - 1
            keep = valid & (pos < k)
            width = min(k, depth)
            rows = np.full((n, width), -1, np.int64)
            r, c = np.nonzero(keep)
            rows[r, pos[r, c]] = cand[r, c]
        else:
            rows = np.where(valid, cand, -1)
        scores = self._rescore(qn, rows)
        # order by exact score, highest first, ties to the lower row; padding last
        o = np.argsort(np.where(rows < 0, np.iinfo(np.int64).max, rows), axis=1, kind="stable")
        rows, scores = np.take_along_axis(rows, o, 1), np.take_along_axis(scores, o, 1)
        o = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        rows, scores = np.take_along_axis(rows, o, 1), np.take_along_axis(scores, o, 1)
        if rows.shape[1] < k:
            pad = k - rows.shape[1]
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return scores, rows

    def _rescore(self, qn: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """float32 of the float64 dot products of the unit rows; -inf where ``rows < 0``."""
        import torch

        from interestflow.kernels import numba_ivf

        out = np.empty(rows.shape, np.float32)
        rows = np.ascontiguousarray(rows)
        # random reads of item rows and float64 sums: split the queries over the threads
        _in_threads(lambda lo, hi: numba_ivf.rescore(qn[lo:hi], self.vectors_, rows[lo:hi],
                                                     out[lo:hi]),
                    len(rows), min(torch.get_num_threads(), len(rows) // RESCORE_MIN_ROWS))
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, path) -> Path:
        """Write the index to directory ``path`` (created if needed); never pickles.

        Files: ``meta.json`` (parameters, fitted scalars, a save id), ``vectors.safetensors``
        (the unit rows), ``ids.parquet`` (when ids were given) and, for IVF,
        ``ivf-<save id>.faiss`` written by ``faiss.write_index`` (a GPU index is copied to
        the CPU first). Files are written in a temporary directory and moved in, ``meta.json``
        last; :meth:`load` refuses files that come from different saves.

        Parameters
        ----------
        path : str or os.PathLike

        Returns
        -------
        pathlib.Path
        """
        from safetensors.numpy import save_file

        from interestflow import __version__

        if not hasattr(self, "kind_"):
            raise not_fitted("this ItemIndex is not fitted; nothing to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_id = uuid.uuid4().hex
        faiss_name = f"ivf-{save_id}.faiss" if self.kind_ == "ivf" else None
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "save_id": save_id,
            "interestflow_version": __version__, "params": self.get_params(),
            "kind_": self.kind_, "reason_": self.reason_, "n_items_": int(self.n_items_),
            "dim_": int(self.dim_), "nlist_": self.nlist_, "nprobe_": self.nprobe_,
            "candidates_": self.candidates_,
            "has_ids": self.item_ids_ is not None, "faiss_file": faiss_name,
        }
        if not isinstance(meta["params"]["device"], (str, type(None))):
            meta["params"]["device"] = str(meta["params"]["device"])
        names = ["vectors.safetensors"]
        with tempfile.TemporaryDirectory(dir=path, prefix=".tmp-") as tmp:
            tmp = Path(tmp)
            save_file({"vectors": self.vectors_}, str(tmp / "vectors.safetensors"),
                      metadata={"save_id": save_id})
            if self.item_ids_ is not None:
                _write_ids(self.item_ids_, tmp / "ids.parquet", save_id)
                names.append("ids.parquet")
            if faiss_name:
                import faiss

                index = faiss.index_gpu_to_cpu(self.index_) if self._faiss_gpu else self.index_
                faiss.write_index(index, str(tmp / faiss_name))
                meta["faiss_version"] = faiss.__version__
                names.append(faiss_name)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            for name in names + ["meta.json"]:
                os.replace(tmp / name, path / name)
        if not meta["has_ids"]:
            (path / "ids.parquet").unlink(missing_ok=True)
        for old in path.glob("ivf-*.faiss"):  # earlier saves into the same directory
            if old.name != faiss_name:
                old.unlink()
        return path

    @classmethod
    def load(cls, path, *, device=None) -> "ItemIndex":
        """Read an index written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
        device : str, torch.device or None, optional
            Where to search from now on; default: the saved ``device`` parameter.

        Returns
        -------
        ItemIndex
            Returns exactly what the saved index returned.
        """
        path = Path(path)
        meta = _read_index_meta(path)
        vectors = _read_index_vectors(path, meta["save_id"])
        params = dict(meta["params"])
        if device is not None:
            params["device"] = device
        self = cls(**params)
        self.vectors_ = vectors
        self._reset_state()
        self.n_items_, self.dim_ = int(meta["n_items_"]), int(meta["dim_"])
        if vectors.shape != (self.n_items_, self.dim_):
            raise ValueError(f"{path}: vectors.safetensors has shape {vectors.shape}, "
                             f"meta.json says ({self.n_items_}, {self.dim_})")
        self.item_ids_ = (_read_ids(path / "ids.parquet", meta["save_id"]) if meta["has_ids"]
                          else None)
        self.kind_, self.reason_ = meta["kind_"], meta["reason_"]
        self.nlist_, self.nprobe_ = meta["nlist_"], meta["nprobe_"]
        dev = resolve_device(params["device"])
        self.device_ = str(dev)
        if self.kind_ == "ivf":
            self._load_ivf(path, meta, dev)
        else:
            self._prepare_exact(dev)
        return self

    def _load_ivf(self, path: Path, meta: dict, dev) -> None:
        """Read the save's FAISS index (onto the GPU when ``dev`` is CUDA and faiss has GPU
        support) and keep the scan precision the saved index searched with."""
        faiss = _import_faiss(f"loading the IVF ItemIndex at {str(path)!r}")
        fpath = path / meta["faiss_file"]
        if not fpath.is_file():
            raise ValueError(f"{path}: {meta['faiss_file']} (the FAISS index of this save) "
                             "is missing (an interrupted overwrite?); save the index again")
        index = faiss.read_index(str(fpath))
        if index.ntotal != self.n_items_:
            raise ValueError(f"{fpath} holds {index.ntotal} vectors, meta.json says "
                             f"{self.n_items_}")
        if dev.type == "cuda" and _faiss_has_gpu(faiss):
            self._gpu_res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_res, dev.index or 0, index)
            self._faiss_gpu = True
        index.nprobe = self.nprobe_
        self.index_ = index
        self._set_scan()
        # keep the scan precision the saved index searched with (format 1 scanned in
        # float32), whatever this CPU would pick: the loaded index returns the same rows
        saved = meta.get("candidates_") if meta.get("format_version", 1) >= 2 else "float32"
        if self.scan_ == "batched" and self.candidates == "auto" and saved is not None:
            self.candidates_ = saved


def _read_index_meta(path: Path) -> dict:
    """``meta.json`` of a saved :class:`ItemIndex`, checked to be one this version reads."""
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise ValueError(f"path={str(path)!r} does not hold a saved ItemIndex "
                         "(meta.json is missing)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not an {FORMAT} save")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{meta_path} has format_version {meta['format_version']}; this "
                         f"interestflow reads up to {FORMAT_VERSION}: upgrade interestflow")
    return meta


def _read_index_vectors(path: Path, save_id: str) -> np.ndarray:
    """The saved item vectors, checked to come from the same save as ``meta.json``."""
    from safetensors import safe_open

    with safe_open(str(path / "vectors.safetensors"), framework="numpy") as fh:
        if (fh.metadata() or {}).get("save_id") != save_id:
            raise ValueError(f"{path}: vectors.safetensors and meta.json come from "
                             "different saves (an interrupted overwrite?); save the index "
                             "again")
        return fh.get_tensor("vectors")


def _write_ids(index: pd.Index, path: Path, save_id: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": pd.Series(index, dtype=index.dtype)})
    meta = dict(table.schema.metadata or {})
    meta[b"interestflow_save_id"] = save_id.encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def _read_ids(path: Path, save_id: str) -> pd.Index:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    got = (table.schema.metadata or {}).get(b"interestflow_save_id", b"").decode()
    if got != save_id:
        raise ValueError(f"{path} and meta.json come from different saves (an interrupted "
                         "overwrite?); save the index again")
    return pd.Index(table.column("id").to_pandas()).rename(None)
