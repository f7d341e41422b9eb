"""Candidate generation: a bounded union of items per user from every source.

Stage 1 of the two-stage recommender (stage 2, a learned ranker, scores the union). Each
source proposes its own top-``cut`` items per user (the cuts are :class:`CandidateConfig`
fields; a cut of 0 switches the source off):

``content``
    cosine of the user's interest vector with the item vectors through
    :class:`~interestflow.retrieval.ItemIndex` (exact or FAISS IVF). With per-user interests
    (``multi_interest=True``) every interest is searched and an item keeps its best cosine.
``item_knn``
    item-item co-occurrence kNN: ``seeds[u] @ knn``, the recommender's recency-weighted seed
    items times its sparse top-``knn_neighbors`` cosine neighbour lists (sparse product; at
    any catalogue size).
``ease``
    EASE (Steck, WWW 2019), a linear item-item model fitted in closed form on the binary
    user-item matrix ``X``: ``P = (X^T X + lambda I)^-1``, ``B = I - P / diag(P)`` (columns
    divided by the diagonal, so ``diag(B) = 0``); the score is ``X[u] @ B``. Fitted only
    when ``n_items <= ease_max_items`` (dense ``B``: ``4 * n_items**2`` bytes, 1.6 GB at the
    default 20,000 items; about three times that at the peak of the fit), on the GPU when
    the device is CUDA. ``lambda`` is picked on an inner temporal split of the training
    interactions (each user's latest 20% held out, recall@10 of the held-out unseen items)
    among ``m x mean item degree`` for ``m`` in :data:`EASE_LAMBDA_GRID` when ``n_items <=
    ease_select_max_items``; above that (or with fewer than 2 held-out users) it is the mean
    item degree ``mean(diag(X^T X))`` itself (Steck's tuned values, 500 on ML-20M, 200 on MSD
    and 1000 on Netflix, lie between 0.25x and 1x of those data sets' mean item degrees;
    on the sparse Amazon 5-core data the best value is ~16x, hence the selection).
``popularity``
    the recommender's recent popularity (distinct users, each counted with the time-decayed
    weight of their latest interaction).
``segment_popularity``
    the same inside the user's segments: ``w[u] @ P`` with the recommender's segment weights
    ``w`` (soft or hard) and per-segment item distributions ``P``.
``segment_trending``
    items gaining users in the user's segments: per segment, the (membership-weighted)
    number of distinct users who engaged with the item in the latest window, minus the mean
    number per window over the ``trend_baseline_windows`` preceding windows; ``w[u] @ T``,
    positive values only. The window is ``trend_window_days`` (default: the engine's
    half-life, 30 days by default).

Output (:class:`Candidates`): a CSR over users, items sorted by item row inside each user,
with one float32 feature row per (user, candidate) -- see :data:`FEATURE_NAMES`:

* ``<source>_score`` and ``<source>_rank`` for every source in :data:`SOURCES`: the source's
  score and 1-based rank (ties to the lower item row); where the item did not come from
  that source the rank is **0** and the score **NaN** (XGBoost's missing value).
* dense features, filled for every candidate: ``content_cosine`` (user vector . item
  vector), ``interest_max_cosine`` (best cosine over the user's interests; equal to
  ``content_cosine`` without interests), ``popularity``, ``segment_popularity`` (``w[u] @
  P[:, i]``), ``segment_trend`` (``w[u] @ T[:, i]``), ``item_trend`` (the global trend of the
  item, same window rule) and ``n_sources``.

Memory follows the candidates: users are processed ``chunk_users`` at a time, and no array
of (users x catalogue) is allocated. Per chunk of ``c`` users the largest arrays are:
content ``c x cut`` (plus the index's own bounded blocks); item_knn the sparse product,
``<= sum(n_seeds) x knn_neighbors`` entries; segment sources ``c x pool`` with ``pool <= K x
segment_pool_factor x cut``; popularity ``cut + n_seen`` per user; the union ``c x
total_cut``. The one exception is EASE, whose scores are ``c x n_items``: it exists only
for ``n_items <= ease_max_items``, so the block is at most ``4 x chunk_users x
ease_max_items`` bytes (82 MB at the defaults).

Segment sources rank the union of every segment's own top ``segment_pool_factor x cut``
items. That equals the exact top-``cut`` of ``w[u] @ P`` whenever the ``cut``-th best pooled
score is at least ``sum_k w[u, k] * tau_k`` (``tau_k`` the score of segment ``k``'s last
pooled item; Fagin's threshold rule), which holds for hard segments and usually for soft ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ._topk import topk_rows
from ._utils import check_int, check_user_rows, not_fitted
from .recommend import config_from_dict

logger = logging.getLogger(__name__)

#: Candidate sources, in the order of their feature columns.
SOURCES: tuple[str, ...] = ("content", "item_knn", "ease", "popularity", "segment_popularity",
                            "segment_trending")
#: Features filled for every candidate (after the per-source score/rank pairs).
DENSE_FEATURES: tuple[str, ...] = ("content_cosine", "interest_max_cosine", "popularity",
                                   "segment_popularity", "segment_trend", "item_trend",
                                   "item_knn_all", "ease_all", "ease_recent", "n_sources")
#: Column names of :attr:`Candidates.features`, in order.
FEATURE_NAMES: tuple[str, ...] = tuple(
    name for s in SOURCES for name in (f"{s}_score", f"{s}_rank")) + DENSE_FEATURES
_SECONDS_PER_DAY = 86400.0
#: Multiples of the mean item degree among which EASE's lambda is picked on the inner split.
EASE_LAMBDA_GRID: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


@dataclass(frozen=True)
class CandidateConfig:
    """Settings of :class:`CandidateGenerator`; every default is documented here.

    Parameters
    ----------
    content, item_knn, ease, popularity, segment_popularity, segment_trending : int
        Cut of each source: items it proposes per user (0 switches it off). Defaults 100,
        100, 100, 50, 50, 50: at most 450 candidates per user (fewer after deduplication).
    exclude_seen : bool, default True
        Leave out the items the user interacted with in the training data.
    ease_max_items : int, default 20_000
        EASE is fitted only up to this many items (dense float32 ``B``: ``4 * n_items**2``
        bytes, 1.6 GB at 20,000; the fit peaks at about three times that).
    ease_lambda : float or None, default None
        L2 penalty of EASE; None: picked on an inner temporal split (see the module
        docstring) up to ``ease_select_max_items`` items, else the mean item degree of the
        binary user-item matrix (at least 1).
    ease_select_max_items : int, default 5_000
        Largest catalogue for which ``ease_lambda=None`` picks lambda on the inner split
        (one EASE fit per grid value, ``O(n_items**3)`` each).
    trend_window_days : float or None, default None
        Window of ``segment_trending``; None: the ``half_life_days`` given to :meth:`fit`
        (30 days when that is infinite).
    trend_baseline_windows : int, default 3
        Preceding windows whose mean is the baseline of the trend.
    segment_pool_factor : int, default 2
        Segment sources pool each segment's top ``segment_pool_factor * cut`` items.
    chunk_users : int, default 1024
        Users per chunk; bounds memory (see the module docstring).
    index_kind : {"auto", "exact", "ivf"}, default "auto"
        ``kind`` of the :class:`~interestflow.retrieval.ItemIndex` of the content source.
    """

    content: int = 100
    item_knn: int = 100
    ease: int = 100
    popularity: int = 50
    segment_popularity: int = 50
    segment_trending: int = 50
    exclude_seen: bool = True
    ease_max_items: int = 20_000
    ease_lambda: float | None = None
    ease_select_max_items: int = 5_000
    trend_window_days: float | None = None
    trend_baseline_windows: int = 3
    segment_pool_factor: int = 2
    chunk_users: int = 1024
    index_kind: str = "auto"

    def __post_init__(self):
        for name in SOURCES + ("ease_max_items", "ease_select_max_items"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("trend_baseline_windows", "segment_pool_factor", "chunk_users"):
            check_int(name, getattr(self, name), minimum=1)
        if not isinstance(self.exclude_seen, (bool, np.bool_)):
            raise TypeError(f"exclude_seen must be a bool, got {self.exclude_seen!r}")
        for name in ("ease_lambda", "trend_window_days"):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number or None, got {v!r}")
            if not math.isfinite(float(v)) or float(v) <= 0:
                raise ValueError(f"{name}={v} is invalid; pass a finite number > 0 or None")
        if self.index_kind not in ("auto", "exact", "ivf"):
            raise ValueError(f"index_kind={self.index_kind!r} is invalid; pass one of "
                             f"['auto', 'exact', 'ivf']")

    def cut(self, source: str) -> int:
        return int(getattr(self, source))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "CandidateConfig":
        return config_from_dict(cls, d)


@dataclass
class Candidates:
    """Candidates of a batch of users, CSR over users.

    Attributes
    ----------
    indptr : ndarray of int64, shape (n_users + 1,)
        User ``j``'s candidates are entries ``indptr[j]:indptr[j + 1]``.
    items : ndarray of int64, shape (nnz,)
        Item rows, ascending inside each user.
    features : ndarray of float32, shape (nnz, len(feature_names))
        See :data:`FEATURE_NAMES` and the module docstring (rank 0 / score NaN: not from
        that source).
    feature_names : tuple of str
    user_rows : ndarray of int64, shape (n_users,) or None
        Rows of the users (None for cold users given by their vectors).
    """

    indptr: np.ndarray
    items: np.ndarray
    features: np.ndarray
    feature_names: tuple = FEATURE_NAMES
    user_rows: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def column(self, name: str) -> np.ndarray:
        """One feature column by name, shape (nnz,)."""
        try:
            return self.features[:, self.feature_names.index(name)]
        except ValueError:
            raise ValueError(f"unknown feature {name!r}; valid: {list(self.feature_names)}") \
                from None

    def source_items(self, source: str, j: int) -> np.ndarray:
        """Items of user ``j`` proposed by ``source``, in that source's rank order."""
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; valid: {list(SOURCES)}")
        lo, hi = self.indptr[j], self.indptr[j + 1]
        rank = self.column(f"{source}_rank")[lo:hi]
        sel = np.flatnonzero(rank > 0)
        return self.items[lo:hi][sel[np.argsort(rank[sel], kind="stable")]]

    def to_frame(self, user_ids=None, item_ids=None):
        """pandas.DataFrame, one row per (user, candidate): ``user`` (position in this batch,
        or ``user_ids[position]``), ``item`` (row, or ``item_ids[row]``) and every feature."""
        import pandas as pd

        user = np.repeat(np.arange(self.n_users), np.diff(self.indptr))
        df = pd.DataFrame(self.features, columns=list(self.feature_names))
        df.insert(0, "item", self.items if item_ids is None else np.asarray(item_ids)[self.items])
        df.insert(0, "user", user if user_ids is None else np.asarray(user_ids)[user])
        return df

    @staticmethod
    def concatenate(parts: list["Candidates"]) -> "Candidates":
        """One result from chunk results, in order."""
        if not parts:
            return _empty(0)
        ptr = [np.zeros(1, np.int64)]
        off = 0
        for p in parts:
            ptr.append(p.indptr[1:] + off)
            off += p.indptr[-1]
        rows = None if any(p.user_rows is None for p in parts) else \
            np.concatenate([p.user_rows for p in parts])
        return Candidates(np.concatenate(ptr), np.concatenate([p.items for p in parts]),
                          np.concatenate([p.features for p in parts]), parts[0].feature_names,
                          rows)


def _empty(n_users: int, rows=None) -> Candidates:
    return Candidates(np.zeros(n_users + 1, np.int64), np.zeros(0, np.int64),
                      np.zeros((0, len(FEATURE_NAMES)), np.float32), FEATURE_NAMES, rows)


# ------------------------------------------------------------------------ sparse helpers
def _kernels():
    """The numba kernels of this module (imported on first use: ``import interestflow`` does
    not import numba)."""
    from interestflow.kernels import numba_candidates

    return numba_candidates


_NO_SEEN = np.zeros(0, np.int64)


def _csr_topk(indptr, indices, data, k):
    """Top ``k`` entries of every CSR row by value (ties to the lower column).

    Returns (row, col, value, rank) of the kept entries, rank 1-based: the entries of
    ``np.lexsort((indices, -data, row))`` whose place in their row is ``<= k`` (NaN last),
    selected per row by a bounded heap (:func:`~interestflow.kernels.numba_candidates.csr_topk`).
    """
    n = len(indices)
    if n == 0 or k == 0:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0), z
    return _kernels().csr_topk(np.asarray(indptr, np.int64), np.asarray(indices),
                               np.asarray(data), int(k), False, _NO_SEEN, _NO_SEEN, 0)


def _dense_topk(S, k, positive=False):
    """Top ``k`` finite entries of every row of a dense block: (row, col, value, rank).

    The order and ranks of ``topk_rows(S, k)``; ``positive``: as if every value that is not
    ``> 0`` were ``-inf`` (left out, as a non-finite value of the top is)."""
    m, n = S.shape
    kk = min(k, n)
    if m == 0 or kk == 0:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0), z
    # topk_rows(S, kk) (ties to the lower column), then the finite values with their rank
    return _kernels().dense_topk(np.ascontiguousarray(S), kk, bool(positive))


def _rows_csr(indptr, indices, rows, data=None):
    """Sub-CSR of ``rows`` (in that order): (indptr, indices[, data])."""
    rows = np.asarray(rows, np.int64)
    counts = indptr[rows + 1] - indptr[rows]
    ptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    take = np.repeat(indptr[rows] - ptr[:-1], counts) + np.arange(ptr[-1])
    if data is None:
        return ptr, indices[take].astype(np.int64)
    return ptr, indices[take].astype(np.int64), data[take]


def _search_entries(s, i):
    """(row, item, score, rank) of a search result (scores, rows), padding dropped."""
    r = np.repeat(np.arange(len(i)), i.shape[1]).reshape(i.shape)
    rank = np.broadcast_to(np.arange(1, i.shape[1] + 1), i.shape)
    ok = i >= 0
    return r[ok], i[ok], s[ok].astype(np.float64), rank[ok].astype(np.int64)


def _union_of_sources(c: int, found: dict):
    """One entry per (row, item) of the sources' entries, sorted by row then item (np.unique
    of the keys row * n_items + item), each source's score and rank placed in it:
    ``(indptr (c + 1,), item, row, F (n, n_features) float32, column of each feature)``."""
    kern = _kernels()
    col = {n: j for j, n in enumerate(FEATURE_NAMES)}
    names = list(found)
    z = np.zeros(0, np.int64)
    r_all = np.concatenate([np.asarray(found[s][0], np.int64) for s in names] + [z])
    indptr, item, pos = kern.union_rows(
        c, r_all, np.concatenate([np.asarray(found[s][1], np.int64) for s in names] + [z]))
    row = np.repeat(np.arange(c), np.diff(indptr))
    F = np.zeros((len(item), len(FEATURE_NAMES)), np.float32)
    src_ptr = np.zeros(len(names) + 1, np.int64)
    np.cumsum([len(found[s][0]) for s in names], out=src_ptr[1:])

    def cols(kind, which):
        return np.array([col[f"{s}_{kind}"] for s in which], np.int64)

    kern.fill_sources(
        F, pos, np.concatenate([np.asarray(found[s][2], np.float64) for s in names]
                               + [np.zeros(0)]),
        np.concatenate([np.asarray(found[s][3], np.int64) for s in names] + [z]),
        src_ptr, cols("score", names), cols("rank", names), cols("score", SOURCES),
        cols("rank", SOURCES), col["n_sources"])
    return indptr, item, row, F, col


def _pair_cosines(U, V, row, item):
    """``U[row] . V[item]`` per entry, entries sorted by row: float32 of the float64 dot
    product (the exact index's rescoring kernel, so a content candidate's cosine is its
    content score to the bit), without gathering the (nnz, dim) rows of ``U`` and ``V``
    (2 x 4 x dim bytes per candidate of memory traffic that dominated the features)."""
    n = len(row)
    out = np.empty(n, np.float32)
    if n == 0:
        return out
    _kernels().pair_dots(np.ascontiguousarray(U, np.float32),
                         np.ascontiguousarray(V, np.float32), np.asarray(row, np.int64),
                         np.asarray(item, np.int64), out)
    return out


# ------------------------------------------------------------------------------ EASE
def fit_ease(indptr, indices, n_users: int, n_items: int, *, lam: float | None = None,
             device=None):
    """EASE item-item weights from a binary user-item CSR: ``(B, lambda)``.

    ``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1`` (Steck, WWW 2019), float32,
    shape (n_items, n_items), ``diag(B) = 0``. ``lam=None``: the mean item degree (>= 1).
    Runs in float32 on ``device`` (a Cholesky inverse); memory about ``12 * n_items**2``
    bytes at the peak.
    """
    import scipy.sparse as sp
    import torch

    from .resolve import resolve_device

    dev = resolve_device(device)
    X = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr),
                      shape=(n_users, n_items))
    X.data[:] = 1.0  # binary even where a pair repeats
    X.sum_duplicates()
    X.data[:] = 1.0
    degree = np.diff(X.T.tocsr().indptr)
    if lam is None:
        lam = max(1.0, float(degree.mean()) if n_items else 1.0)
    # dense Gram matrix built on the host (float32, 4 * n_items**2 bytes), then moved
    Gt = torch.from_numpy(np.asarray((X.T @ X).toarray(), np.float32)).to(dev)
    Gt.diagonal().add_(float(lam))
    L = torch.linalg.cholesky(Gt)
    del Gt
    P = torch.cholesky_inverse(L)
    del L
    d = P.diagonal().clone()
    P.div_(-d[None, :])  # B_ij = -P_ij / P_jj
    P.diagonal().zero_()
    # cholesky_inverse may return a column-major result; scipy's sparse @ dense copies a
    # non-C-contiguous right operand on every call (4 * n_items**2 bytes, ~0.6 s at 8k items)
    return P.contiguous(), float(lam)


def select_ease_lambda(inter_user, inter_item, inter_ts, n_users: int, n_items: int, *,
                       grid=EASE_LAMBDA_GRID, k: int = 10, device=None):
    """EASE's lambda picked on an inner temporal split, as a multiple of the mean item
    degree: ``(multiple, report)``.

    Each user's latest 20% of interactions are held out; EASE is fitted on the rest for
    ``lambda = m * mean item degree`` (``m`` in ``grid``) and scored by mean recall@``k`` of
    the held-out items the user had not seen, over users with such items and earlier ones.
    The best mean wins (ties: the smaller lambda); fewer than 2 such users: ``m = 1``.
    """
    import scipy.sparse as sp

    from .recommend import holdout_mask

    iu = np.asarray(inter_user, np.int64)
    ii = np.asarray(inter_item, np.int64)
    hold = holdout_mask(iu, inter_ts, 0.2)
    X = sp.csr_matrix((np.ones(int((~hold).sum()), np.float32), (iu[~hold], ii[~hold])),
                      shape=(n_users, n_items))
    X.sum_duplicates()
    X.data[:] = 1.0
    H = sp.csr_matrix((np.ones(int(hold.sum()), np.float32), (iu[hold], ii[hold])),
                      shape=(n_users, n_items))
    H.sum_duplicates()
    H.data[:] = 1.0
    H = (H - H.multiply(X)).tocsr()
    H.eliminate_zeros()
    users = np.flatnonzero((np.diff(H.indptr) > 0) & (np.diff(X.indptr) > 0))
    degree = max(1.0, float(np.asarray(X.sum(axis=0)).mean()))
    if len(users) < 2:
        return 1.0, {"n_users": int(len(users)), "grid": {}}
    Xu, Hu = X[users], H[users]
    n_truth = np.diff(Hu.indptr)
    report = {}
    for m in grid:
        B, lam = fit_ease(X.indptr, X.indices, n_users, n_items, lam=m * degree,
                          device=device)
        B = B.cpu().numpy()
        hits = np.zeros(len(users))
        for a in range(0, len(users), 1024):
            S = np.asarray(Xu[a:a + 1024] @ B)
            S[Xu[a:a + 1024].nonzero()] = -np.inf
            top = topk_rows(S, k)
            for r in range(len(S)):
                t = Hu.indices[Hu.indptr[a + r]:Hu.indptr[a + r + 1]]
                hits[a + r] = np.isin(top[r], t).sum()
        report[m] = float((hits / n_truth).mean())
    best = max(report, key=lambda m: (report[m], -m))
    return float(best), {"n_users": int(len(users)), "mean_degree": degree,
                         f"recall@{k}_by_multiple": {f"{m:g}": v for m, v in report.items()}}


def _selected_ease_lambda(inter_user, inter_item, inter_ts, n_users: int, n_items: int,
                          max_items: int, *, device=None) -> tuple[float, dict]:
    """EASE's lambda for :meth:`CandidateGenerator.fit`: :func:`select_ease_lambda` on the
    interactions with the ``max_items`` items most users interacted with (all items when
    there are no more; ties to the lower item row), its multiple of that matrix's mean item
    degree applied to the same matrix with all its events.

    Above ``max_items`` the selection runs on the popular head of the catalogue, which holds
    most interactions and whose items' degrees set how much lambda shrinks their weights; the
    lambda found there is used as is for the whole catalogue (the long tail's items are
    shrunk harder, as EASE does with any single lambda). Report: ``select_ease_lambda``'s,
    plus ``items`` (of the selection) and ``lambda``.
    """
    iu = np.asarray(inter_user, np.int64)
    ii = np.asarray(inter_item, np.int64)
    ts = np.asarray(inter_ts, np.float64)
    pairs = np.unique(iu * np.int64(max(n_items, 1)) + ii)
    degree = np.bincount(pairs % max(n_items, 1), minlength=n_items)
    if n_items > max_items:
        head = np.sort(np.argsort(-degree, kind="stable")[:max_items])
        remap = np.full(n_items, -1, np.int64)
        remap[head] = np.arange(len(head))
        keep = remap[ii] >= 0
        iu, ii, ts = iu[keep], remap[ii[keep]], ts[keep]
        degree = degree[head]
    n_sel = min(n_items, max_items)
    multiple, report = select_ease_lambda(iu, ii, ts, n_users, n_sel, device=device)
    lam = float(multiple) * max(1.0, float(degree.mean()) if n_sel else 1.0)
    report = dict(report, items=int(n_sel), multiple=float(multiple), **{"lambda": lam})
    return lam, report


# --------------------------------------------------------------------------- trending
def _fit_interactions(inter_user, inter_item, inter_ts, inter_weight, n_users: int,
                      n_items: int):
    """:meth:`CandidateGenerator.fit`'s interactions, checked against the recommender's
    users and items, without those of weight 0: ``(iu, ii, ts)``."""
    iu = np.asarray(inter_user, np.int64)
    ii = np.asarray(inter_item, np.int64)
    ts = np.asarray(inter_ts, np.float64)
    if not (iu.shape == ii.shape == ts.shape) or iu.ndim != 1:
        raise ValueError(f"inter_user, inter_item and inter_ts must be 1-D of one length, "
                         f"got shapes {iu.shape}, {ii.shape}, {ts.shape}")
    if len(iu) and (iu.min() < 0 or iu.max() >= n_users or ii.min() < 0
                    or ii.max() >= n_items):
        raise ValueError("inter_user/inter_item hold rows outside the recommender's "
                         f"{n_users} users / {n_items} items")
    if inter_weight is not None:
        keep = np.asarray(inter_weight, np.float64) > 0
        iu, ii, ts = iu[keep], ii[keep], ts[keep]
    return iu, ii, ts


def item_first_times(inter_item, inter_ts, n_items: int) -> np.ndarray:
    """Time of each item's first interaction, unix seconds (float64, NaN for an item without
    one): what ``item_age_days`` of the ranker measures from (see
    :func:`interestflow.ranker.ranking_features`)."""
    first = np.full(n_items, np.inf)
    np.minimum.at(first, np.asarray(inter_item, np.int64), np.asarray(inter_ts, np.float64))
    first[np.isinf(first)] = np.nan
    return first


def segment_trends(inter_user, inter_item, inter_ts, segment_weights, n_items: int, *,
                   t_ref: float, window_days: float, baseline_windows: int):
    """Per-segment and global item trends: ``(T (K, n_items), item_trend (n_items,))``.

    A (user, item) pair counts once per window. ``T[k, i]`` = segment-``k``-weighted distinct
    users of item ``i`` in ``(t_ref - W, t_ref]`` minus the mean per window over the
    ``baseline_windows`` windows before; ``item_trend`` the same with every user weighing 1.
    """
    import scipy.sparse as sp

    W = float(window_days) * _SECONDS_PER_DAY
    n_users, K = segment_weights.shape
    age = t_ref - np.asarray(inter_ts, np.float64)
    recent = age < W
    base = (age >= W) & (age < W * (1 + baseline_windows))

    def counts(sel):
        X = sp.csr_matrix((np.ones(int(sel.sum())), (inter_user[sel], inter_item[sel])),
                          shape=(n_users, n_items))
        X.sum_duplicates()
        X.data[:] = 1.0
        seg = np.asarray((X.T @ segment_weights.astype(np.float64)).T)  # (K, n_items)
        return seg, np.asarray(X.sum(axis=0)).ravel()

    r_seg, r_all = counts(recent)
    b_seg, b_all = counts(base)
    T = (r_seg - b_seg / baseline_windows).astype(np.float32)
    trend = (r_all - b_all / baseline_windows).astype(np.float32)
    return T, trend


# ------------------------------------------------------------------------- generator
class CandidateGenerator:
    """Bounded candidate sets per user from every source; see the module docstring.

    Parameters
    ----------
    config : CandidateConfig, optional
        ``CandidateConfig()`` when None.

    Examples
    --------
    >>> import numpy as np
    >>> from interestflow.recommend import Recommender, RecommendConfig
    >>> rng = np.random.default_rng(0)
    >>> U = rng.normal(size=(4, 8)).astype(np.float32)
    >>> U /= np.linalg.norm(U, axis=1, keepdims=True)
    >>> V = rng.normal(size=(6, 8)).astype(np.float32)
    >>> V /= np.linalg.norm(V, axis=1, keepdims=True)
    >>> iu, ii = np.array([0, 0, 1, 2, 3]), np.array([0, 1, 1, 2, 3])
    >>> ts = np.arange(5.0) * 86400
    >>> rec = Recommender(RecommendConfig(weights={"content": 1.0})).fit(
    ...     user_vectors=U, item_vectors=V, inter_user=iu, inter_item=ii, inter_ts=ts,
    ...     inter_weight=np.ones(5), user_segment=np.zeros(4, np.int64),
    ...     segment_soft=np.ones((4, 1), np.float32), half_life_days=30.0)
    >>> gen = CandidateGenerator(CandidateConfig(content=2, popularity=2)).fit(
    ...     rec, inter_user=iu, inter_item=ii, inter_ts=ts, half_life_days=30.0, device="cpu")
    >>> cand = gen.generate(np.array([0, 1]))
    >>> cand.indptr.shape, cand.features.shape[1] == len(FEATURE_NAMES)
    ((3,), True)
    """

    def __init__(self, config: CandidateConfig | None = None):
        if config is None:
            config = CandidateConfig()
        if not isinstance(config, CandidateConfig):
            raise TypeError(f"config must be a CandidateConfig, got {type(config).__name__}")
        self.config = config

    # ------------------------------------------------------------------- fit
    def fit(self, recommender, *, inter_user, inter_item, inter_ts, half_life_days: float,
            inter_weight=None, interest_vectors=None, interest_offsets=None,
            device=None, index=None) -> "CandidateGenerator":
        """Build the state that the recommender does not keep (EASE, trends, the index).

        Parameters
        ----------
        recommender : interestflow.recommend.Recommender
            Fitted; its vectors, seen items, popularity, segment popularity, seeds and
            item-kNN lists are used as they are.
        inter_user, inter_item : ndarray of int, shape (n_inter,)
            The interactions the recommender was fitted on (rows).
        inter_ts : ndarray of float, shape (n_inter,)
            Their times, unix seconds.
        half_life_days : float
            The engine's half-life; the default trend window.
        inter_weight : ndarray of float, shape (n_inter,), optional
            Interactions of weight 0 do not count in the trends.
        interest_vectors : ndarray, shape (n_interests, dim), optional
        interest_offsets : ndarray of int, shape (n_users + 1,), optional
            Per-user interests (``multi_interest=True``): the content source searches each.
        device : str or torch.device, optional
            Where EASE is fitted and scored and the index searches (None: CUDA when visible).
        index : interestflow.retrieval.ItemIndex, optional
            The content index, already fitted over ``recommender.item_vectors_`` with this
            config's ``index_kind`` (shared, not copied): the ranker's inner splits reuse the
            fitted generator's when the item vectors are the same (a second IVF index over a
            1,000,000-item catalogue costs its K-means and ~4 GB).

        Returns
        -------
        self
        """
        from .resolve import resolve_device

        cfg = self.config
        if not hasattr(recommender, "weights_"):
            raise not_fitted("recommender is not fitted; call Recommender.fit() first")
        rec = recommender
        n_users, n_items = rec.n_users_, rec.n_items_
        iu, ii, ts = _fit_interactions(inter_user, inter_item, inter_ts, inter_weight, n_users,
                                       n_items)
        self.device_ = resolve_device(device)
        self.recommender_ = rec
        self._set_interests(interest_vectors, interest_offsets, n_users, rec.dim_)
        hl = float(half_life_days)
        window = cfg.trend_window_days
        if window is None:
            window = hl if math.isfinite(hl) else 30.0
        self.trend_window_days_ = float(window)
        t_ref = getattr(rec, "behaviour_time_", None)
        if t_ref is None:
            t_ref = float(ts.max()) if len(ts) else 0.0
        self.trend_time_ = float(t_ref)
        self.segment_trend_, self.item_trend_ = segment_trends(
            iu, ii, ts, rec.user_segment_weights_, n_items, t_ref=self.trend_time_,
            window_days=self.trend_window_days_, baseline_windows=cfg.trend_baseline_windows)
        self.item_first_ts_ = item_first_times(ii, ts, n_items)
        self._fit_ease(iu, ii, ts, n_users, n_items)
        if index is not None:
            if getattr(index, "n_items_", None) != n_items:
                raise ValueError(f"index: a fitted ItemIndex over the recommender's {n_items} "
                                 f"items is needed, got {getattr(index, 'n_items_', None)}")
            self._index = index
        self._prepare(keep_index=index is not None)
        return self

    def _fit_ease(self, iu, ii, ts, n_users: int, n_items: int) -> None:
        """EASE's ``ease_b_`` and ``ease_lambda_`` (``lambda`` selected on the interactions
        when the config leaves it None); all None when EASE is off or the catalogue is over
        ``ease_max_items``."""
        cfg, rec = self.config, self.recommender_
        self.ease_b_, self.ease_lambda_, self.ease_selection_ = None, None, None
        if cfg.ease > 0 and 0 < n_items <= cfg.ease_max_items:
            lam = cfg.ease_lambda
            if lam is None:
                lam, self.ease_selection_ = _selected_ease_lambda(
                    iu, ii, ts, n_users, n_items, cfg.ease_select_max_items,
                    device=self.device_)
            B, lam = fit_ease(rec.seen_indptr_, rec.seen_indices_, n_users, n_items,
                              lam=lam, device=self.device_)
            self.ease_b_, self.ease_lambda_ = B, lam
        elif cfg.ease > 0 and n_items > cfg.ease_max_items:
            logger.info("candidates: EASE off, %d items > ease_max_items=%d (dense B would "
                        "take %.1f GB)", n_items, cfg.ease_max_items, 4 * n_items ** 2 / 1e9)

    @property
    def index_(self):
        """The fitted :class:`~interestflow.retrieval.ItemIndex` of the content source (None
        when that source is off); ``fit(index=...)`` of a generator over the same item
        vectors can reuse it."""
        if not hasattr(self, "device_"):
            raise not_fitted("this CandidateGenerator is not fitted; call fit() first")
        return self._index

    def update(self, recommender, *, inter_user, inter_item, inter_ts, inter_weight=None
               ) -> "CandidateGenerator":
        """Follow an updated recommender (after ``InterestEngine.partial_fit``) without a refit.

        The trends are recomputed (linear in the interactions: their window moves with the
        latest event) and the derived state follows the recommender's new statistics; EASE's
        ``B`` and ``lambda`` stay as fitted (O(n_items**3) is a :meth:`fit`'s cost, not an
        update's). A user's EASE scores come from the user's current items, so new
        interactions count at once; items added since the fit get no EASE score until the
        next fit (``B`` is padded with zeros for them). The content index is rebuilt from the
        updated item vectors when it is exact (one normalised copy); an IVF index
        (``AUTO_IVF_MIN_ITEMS`` items and more) over an unchanged catalogue is kept as fitted, so
        items re-embedded since then keep their fitted vectors in the content source until
        the next fit; a grown catalogue rebuilds it. Per-user interests are
        not updated by ``partial_fit`` (it refuses ``multi_interest=True`` engines).

        Parameters
        ----------
        recommender : interestflow.recommend.Recommender
            The updated recommender (the same object or its rebuild).
        inter_user, inter_item, inter_ts, inter_weight
            All interactions, as for :meth:`fit`.

        Returns
        -------
        self
        """
        self._check_fitted()
        rec = recommender
        n_users, n_items = rec.n_users_, rec.n_items_
        if n_items < self.n_items_ or n_users < self.n_users_:
            raise ValueError(f"update() only grows the catalogue and the users: "
                             f"{self.n_users_} users / {self.n_items_} items before, "
                             f"{n_users} / {n_items} now; call fit()")
        iu = np.asarray(inter_user, np.int64)
        ii = np.asarray(inter_item, np.int64)
        ts = np.asarray(inter_ts, np.float64)
        if inter_weight is not None:
            keep = np.asarray(inter_weight, np.float64) > 0
            iu, ii, ts = iu[keep], ii[keep], ts[keep]
        self.recommender_ = rec
        t_ref = getattr(rec, "behaviour_time_", None)
        self.trend_time_ = float(t_ref if t_ref is not None else (ts.max() if len(ts) else 0.0))
        self.segment_trend_, self.item_trend_ = segment_trends(
            iu, ii, ts, rec.user_segment_weights_, n_items, t_ref=self.trend_time_,
            window_days=self.trend_window_days_,
            baseline_windows=self.config.trend_baseline_windows)
        self.item_first_ts_ = item_first_times(ii, ts, n_items)
        if self.ease_b_ is not None and n_items > self.ease_b_.shape[0]:
            import torch

            old = self.ease_b_
            if isinstance(old, torch.Tensor):
                B = torch.zeros((n_items, n_items), dtype=old.dtype, device=old.device)
            else:
                B = np.zeros((n_items, n_items), np.float32)
            B[:old.shape[0], :old.shape[1]] = old
            self.ease_b_ = B
        # an IVF index over the same catalogue is kept (a rebuild is a K-means over the items)
        keep_index = (self._index is not None and self._index.kind_ == "ivf"
                      and n_items == self.n_items_)
        self._prepare(keep_index=keep_index)
        return self

    def _set_interests(self, vectors, offsets, n_users, dim):
        if (vectors is None) != (offsets is None):
            raise ValueError("pass interest_vectors and interest_offsets together")
        if vectors is None:
            self.interest_vectors_, self.interest_offsets_ = None, None
            return
        v = np.ascontiguousarray(vectors, np.float32)
        off = np.asarray(offsets, np.int64)
        if v.ndim != 2 or v.shape[1] != dim:
            raise ValueError(f"interest_vectors must have shape (n, {dim}), got {v.shape}")
        if off.shape != (n_users + 1,) or off[0] != 0 or off[-1] != len(v):
            raise ValueError(f"interest_offsets must have shape ({n_users + 1},), start at 0 "
                             f"and end at {len(v)}")
        self.interest_vectors_, self.interest_offsets_ = v, off

    def _prepare(self, keep_index: bool = False):
        """Derived, unsaved state: the index (kept as it is with ``keep_index``), the
        popularity order, the segment pools."""
        import scipy.sparse as sp

        from .retrieval import ItemIndex

        cfg, rec = self.config, self.recommender_
        n_users, n_items = rec.n_users_, rec.n_items_
        self.n_users_, self.n_items_ = n_users, n_items
        if not keep_index:
            self._index = None
        if cfg.content > 0 and n_items and not keep_index:
            self._index = ItemIndex(kind=cfg.index_kind, device=self.device_).fit(
                rec.item_vectors_)
        self._seeds = sp.csr_matrix((rec.seed_weights_, rec.seed_indices_, rec.seed_indptr_),
                                    shape=(n_users, n_items))
        self._knn = sp.csr_matrix((rec.knn_weights_, rec.knn_indices_, rec.knn_indptr_),
                                  shape=(n_items, n_items))
        n_seen = np.diff(rec.seen_indptr_)
        self._pop_order, self._pop_depth_ = np.zeros(0, np.int64), -1
        self._pop_depth(int(n_seen.max()) if len(n_seen) else 0)
        self._pools = {}
        self._mt_cache = {}  # see _transposed
        for name, M in (("segment_popularity", rec.segment_popularity_),
                        ("segment_trending", self.segment_trend_)):
            m = min(n_items, cfg.segment_pool_factor * cfg.cut(name))
            if m == 0 or M.shape[0] == 0:
                self._pools[name] = np.zeros(0, np.int64)
                continue
            tops = topk_rows(np.asarray(M), m)
            vals = np.take_along_axis(np.asarray(M), tops, axis=1)
            self._pools[name] = np.unique(tops[vals > 0])
        self._ease_t = None
        if self.ease_b_ is not None:
            import torch
            self._ease_t = self.ease_b_ if isinstance(self.ease_b_, torch.Tensor) else \
                torch.from_numpy(np.asarray(self.ease_b_, np.float32)).to(self.device_)
            self._ease_t = self._ease_t.contiguous()  # see fit_ease

    def _pop_depth(self, max_seen: int):
        """Popularity order deep enough that a user with ``max_seen`` seen items still gets
        ``popularity`` unseen ones (the top ``popularity + max_seen`` items by popularity,
        positive only; ties to the lower item row)."""
        depth = min(self.n_items_, self.config.popularity + max_seen)
        if depth <= self._pop_depth_:
            return
        pop = np.asarray(self.recommender_.popularity_, np.float64)
        top = topk_rows(pop[None, :], depth)[0] if depth else np.zeros(0, np.int64)
        self._pop_order, self._pop_depth_ = top[pop[top] > 0], depth

    @classmethod
    def from_engine(cls, engine, config: CandidateConfig | None = None, *, device=None
                    ) -> "CandidateGenerator":
        """Fit on a fitted :class:`~interestflow.InterestEngine`'s recommender and interactions
        (and interests when it has them); keeps its ids for :meth:`generate_ids`."""
        engine._check_fitted()
        inter = engine.interactions_
        gen = cls(config)
        multi = getattr(engine, "interest_offsets_", None) is not None
        gen.fit(engine.recommender_, inter_user=inter["user"], inter_item=inter["item"],
                inter_ts=inter["ts"], inter_weight=inter["weight"],
                half_life_days=float(engine.half_life_days),
                interest_vectors=engine.interest_vectors_ if multi else None,
                interest_offsets=engine.interest_offsets_ if multi else None,
                device=engine.device if device is None else device)
        gen.user_ids_, gen.item_ids_ = engine.user_ids_, engine.item_ids_
        return gen

    # -------------------------------------------------------------- generate
    def _check_fitted(self):
        if not hasattr(self, "recommender_"):
            raise not_fitted("this CandidateGenerator is not fitted; call fit() first")

    def user_rows(self, user_ids) -> np.ndarray:
        """Rows of ``user_ids`` (needs ids: :meth:`from_engine`); raises naming an unknown id."""
        import pandas as pd

        self._check_fitted()
        known = getattr(self, "user_ids_", None)
        if known is None:
            raise ValueError("this CandidateGenerator has no user ids; build it with "
                             "from_engine() or pass user rows to generate()")
        ids = pd.Index(list(user_ids))
        rows = known.get_indexer(ids)
        bad = np.flatnonzero(rows < 0)
        if len(bad):
            raise ValueError(f"user_ids: {len(bad)} unknown user id(s); first is "
                             f"{ids[bad[0]]!r} at position {int(bad[0])}; known users are "
                             "those seen in fit (use generate_cold() for new users)")
        return rows.astype(np.int64)

    def generate_ids(self, user_ids) -> Candidates:
        """:meth:`generate` for user ids."""
        return self.generate(self.user_rows(user_ids))

    def generate(self, user_rows) -> Candidates:
        """Candidates of known users.

        Parameters
        ----------
        user_rows : ndarray of int, shape (m,)

        Returns
        -------
        Candidates
            ``m`` users, in the order given.
        """
        self._check_fitted()
        rows = check_user_rows(user_rows, self.n_users_)
        rec = self.recommender_
        parts = []
        step = self.config.chunk_users
        for a in range(0, len(rows), step):
            r = rows[a:a + step]
            interests = None
            if self.interest_offsets_ is not None:
                iptr, iidx = _rows_csr(self.interest_offsets_, np.arange(
                    len(self.interest_vectors_)), r)
                interests = (iptr, self.interest_vectors_[iidx])
            part = self._chunk(rec.user_vectors_[r], rec.user_segment_weights_[r],
                               _rows_csr(rec.seen_indptr_, rec.seen_indices_, r),
                               self._seeds[r], interests)
            part.user_rows = r
            parts.append(part)
        out = Candidates.concatenate(parts) if parts else _empty(0, rows)
        out.user_rows = rows
        return out

    def content_search(self, user_vectors, seen=None):
        """The content source of users given by their vectors: ``(scores, rows)``, each
        (m, ``config.content``), -inf / -1 padded; ``seen`` (indptr, indices) is left out
        when ``config.exclude_seen``. What :meth:`generate_for` searches per sub-chunk; a
        caller with many users searches them in one call (the exact kernel is faster on
        larger query blocks) and passes slices as ``generate_for(..., content=)``."""
        self._check_fitted()
        U = np.ascontiguousarray(user_vectors, np.float32)
        cut = self.config.content
        if cut == 0 or self._index is None:
            return (np.full((len(U), 0), -np.inf, np.float32), np.full((len(U), 0), -1,
                                                                        np.int64))
        ex = seen if (seen is not None and self.config.exclude_seen) else None
        return self._index.search(U, cut, exclude=ex)

    def generate_for(self, user_vectors, seen, seeds, segment_weights, interests=None, *,
                     content=None) -> Candidates:
        """Candidates of users that are not rows of the fitted model, from their own state.

        Runs the same per-chunk code as :meth:`generate` (every source, the same features),
        with the users' vectors, seen items, item-kNN seeds and segment weights given instead
        of read from the recommender's rows: the batch scorer (:mod:`interestflow.batch`)
        builds them from a chunk's events with the functions ``fit`` uses
        (:func:`~interestflow.recommend.user_seeds`,
        :func:`~interestflow.recommend.segment_weights`), so that a user scored from the
        events the model was fitted on gets exactly the candidates :meth:`generate` gives it.
        Users are processed ``config.chunk_users`` at a time: EASE's dense score block is at
        most ``chunk_users x n_items`` float32 (``n_items <= ease_max_items``).

        Parameters
        ----------
        user_vectors : ndarray, shape (m, dim)
            Unit interest vectors.
        seen : tuple (indptr (m + 1,), indices)
            CSR of the items each user interacted with (item rows, ascending per user).
        seeds : tuple (indptr (m + 1,), indices, weights)
            CSR of the users' item-kNN seed weights (:func:`~interestflow.recommend.user_seeds`).
        segment_weights : ndarray, shape (m, K)
            The users' segment weights, as ``Recommender.user_segment_weights_`` holds them.
        interests : tuple (offsets (m + 1,), vectors (n, dim)), optional
            Per-user interests (the content source searches each).
        content : tuple (scores (m, cut), rows (m, cut)), optional
            The content source already searched (:meth:`content_search` of these users and
            ``seen``); not with ``interests``.

        Returns
        -------
        Candidates
            ``m`` users, in the order given; ``user_rows`` is None.
        """
        import scipy.sparse as sp

        self._check_fitted()
        rec = self.recommender_
        U = np.ascontiguousarray(user_vectors, np.float32)
        if U.ndim != 2 or U.shape[1] != rec.dim_:
            raise ValueError(f"user_vectors must have shape (m, {rec.dim_}), got {U.shape}")
        m, n_items = len(U), self.n_items_
        K = rec.user_segment_weights_.shape[1]
        W = np.asarray(segment_weights, np.float32)
        if W.shape != (m, K):
            raise ValueError(f"segment_weights must have shape ({m}, {K}), got {W.shape}")
        s_ptr, s_idx = (np.asarray(a, np.int64) for a in seen)
        d_ptr, d_idx = (np.asarray(a, np.int64) for a in seeds[:2])
        d_val = np.asarray(seeds[2], np.float64)
        for name, ptr, idx in (("seen", s_ptr, s_idx), ("seeds", d_ptr, d_idx)):
            if ptr.shape != (m + 1,) or ptr[0] != 0 or ptr[-1] != len(idx):
                raise ValueError(f"{name} must be a CSR of {m} users: indptr of shape "
                                 f"({m + 1},) from 0 to len(indices); got indptr {ptr.shape}, "
                                 f"{len(idx)} indices")
            if len(idx) and (idx.min() < 0 or idx.max() >= n_items):
                raise ValueError(f"{name} holds item rows outside [0, {n_items})")
        if len(d_val) != len(d_idx):
            raise ValueError(f"seeds has {len(d_idx)} indices but {len(d_val)} weights")
        if content is not None:
            if interests is not None:
                raise ValueError("pass content= or interests=, not both (content= is the "
                                 "search of the user vectors)")
            cs, ci = content
            want = (m, self.config.content if self._index is not None else 0)
            if np.shape(cs) != want or np.shape(ci) != want:
                raise ValueError(f"content must be (scores, rows) of shape {want} each "
                                 f"(content_search of these users), got {np.shape(cs)}, "
                                 f"{np.shape(ci)}")
        self._pop_depth(int(np.diff(s_ptr).max()) if m else 0)
        parts = []
        step = self.config.chunk_users
        for a in range(0, m, step):
            b = min(m, a + step)
            sub = np.arange(a, b)
            inter = None
            if interests is not None:
                off = np.asarray(interests[0], np.int64)
                iptr, iidx = _rows_csr(off, np.arange(off[-1]), sub)
                inter = (iptr, np.asarray(interests[1], np.float32)[iidx])
            sp_ptr, sp_idx, sp_val = _rows_csr(d_ptr, d_idx, sub, d_val)
            parts.append(self._chunk(U[a:b], W[a:b], _rows_csr(s_ptr, s_idx, sub),
                                     sp.csr_matrix((sp_val, sp_idx, sp_ptr),
                                                   shape=(b - a, n_items)), inter,
                                     content=None if content is None else
                                     (content[0][a:b], content[1][a:b])))
        return Candidates.concatenate(parts) if parts else _empty(0)

    def generate_cold(self, user_vectors, *, segment_weights=None, interest_vectors=None,
                      interest_offsets=None) -> Candidates:
        """Candidates of users with texts but no interactions: content and popularity, and
        the segment sources when ``segment_weights`` (m, K) are given. Nothing is excluded."""
        self._check_fitted()
        rec = self.recommender_
        U = np.ascontiguousarray(user_vectors, np.float32)
        if U.ndim != 2 or U.shape[1] != rec.dim_:
            raise ValueError(f"user_vectors must have shape (m, {rec.dim_}), got {U.shape}")
        if not np.isfinite(U).all():
            raise ValueError("user_vectors hold NaN/inf")
        m = len(U)
        K = rec.user_segment_weights_.shape[1]
        if segment_weights is None:
            Wseg = None
        else:
            Wseg = np.asarray(segment_weights, np.float32)
            if Wseg.shape != (m, K):
                raise ValueError(f"segment_weights must have shape ({m}, {K}), got "
                                 f"{Wseg.shape}")
        if (interest_vectors is None) != (interest_offsets is None):
            raise ValueError("pass interest_vectors and interest_offsets together")
        import scipy.sparse as sp

        parts = []
        step = self.config.chunk_users
        for a in range(0, m, step):
            b = min(m, a + step)
            interests = None
            if interest_vectors is not None:
                off = np.asarray(interest_offsets, np.int64)
                iptr, iidx = _rows_csr(off, np.arange(off[-1]), np.arange(a, b))
                interests = (iptr, np.asarray(interest_vectors, np.float32)[iidx])
            empty = (np.zeros(b - a + 1, np.int64), np.zeros(0, np.int64))
            parts.append(self._chunk(U[a:b], None if Wseg is None else Wseg[a:b], empty,
                                     sp.csr_matrix((b - a, self.n_items_)), interests,
                                     cold=True))
        return Candidates.concatenate(parts) if parts else _empty(0)

    # ---------------------------------------------------------------- chunk
    def _chunk(self, U, Wseg, seen, seeds, interests, cold=False, content=None) -> Candidates:
        """Candidates of one chunk: U (c, dim), Wseg (c, K) or None, seen (indptr, indices),
        seeds a (c, n_items) CSR, interests (indptr, vectors) or None, content the content
        source's (scores, rows) already searched or None."""
        c, n_items = len(U), self.n_items_
        if c == 0 or n_items == 0:
            return _empty(c)
        found, (knn_block, ease_block, recent_block) = self._source_entries(
            U, Wseg, seen, seeds, interests, cold, content)
        indptr, item, row, F, col = _union_of_sources(c, found)
        self._dense_features(F, col, row, item, U, Wseg, interests)
        # behaviour scores of every candidate, not only of those the source proposed (NaN
        # where the source is off or the user is cold)
        F[:, col["item_knn_all"]] = np.nan if knn_block is None else \
            np.asarray(knn_block[row, item]).ravel()
        F[:, col["ease_all"]] = np.nan if ease_block is None else ease_block[row, item]
        F[:, col["ease_recent"]] = np.nan if recent_block is None else recent_block[row, item]
        # n_sources (rank columns > 0) was filled with the sources
        return Candidates(indptr, item, F, FEATURE_NAMES)

    def _source_entries(self, U, Wseg, seen, seeds, interests, cold, content):
        """The entries of every source that is on, ``{source: (row, item, score, rank)}``,
        and the chunk's (item-kNN, EASE, recent EASE) score blocks (None when off)."""
        cfg, rec = self.config, self.recommender_
        c = len(U)
        exclude = cfg.exclude_seen and not cold
        found = {}
        if cfg.content > 0:
            found["content"] = self._content(U, seen if exclude else None, interests) \
                if content is None else _search_entries(*content)
        knn_block = ease_block = recent_block = None
        if cfg.item_knn > 0 and not cold:
            knn_block = (seeds @ self._knn).tocsr()
            knn_block.sum_duplicates()
            found["item_knn"] = self._sparse_source(knn_block, seen if exclude else None,
                                                    cfg.item_knn)
        if cfg.ease > 0 and not cold and self._ease_t is not None:
            ease_block, recent_block = self._ease_blocks(seen, seeds)
            found["ease"] = self._ease(ease_block.copy(), seen, exclude, cfg.ease)
        if cfg.popularity > 0:
            found["popularity"] = self._popularity(seen if exclude else None, c)
        if Wseg is not None:
            for name, M in (("segment_popularity", rec.segment_popularity_),
                            ("segment_trending", self.segment_trend_)):
                if cfg.cut(name) > 0:
                    found[name] = self._segment(name, M, Wseg, seen if exclude else None,
                                                cfg.cut(name))
        return found, (knn_block, ease_block, recent_block)

    def _content(self, U, seen, interests):
        cut = self.config.content
        if interests is None:
            return _search_entries(*self._index.search(U, cut, exclude=seen))
        iptr, V = interests
        owner = np.repeat(np.arange(len(U)), np.diff(iptr))
        ex = None
        if seen is not None:
            ex = _rows_csr(seen[0], seen[1], owner)
        s, i = self._index.search(V, cut, exclude=ex) if len(V) else \
            (np.zeros((0, cut), np.float32), np.zeros((0, cut), np.int64))
        ok = i >= 0
        r = np.repeat(owner, i.shape[1]).reshape(i.shape)[ok]
        it, val = i[ok], s[ok].astype(np.float64)
        # best cosine over the user's interests, then the user's top cut
        n_items = self.n_items_
        key = r * n_items + it
        order = np.lexsort((-val, key))
        key, val = key[order], val[order]
        first = np.concatenate([[True], key[1:] != key[:-1]]) if len(key) else \
            np.zeros(0, bool)
        key, val = key[first], val[first]
        rr, ii = key // n_items, key % n_items
        ptr = np.zeros(len(U) + 1, np.int64)
        np.cumsum(np.bincount(rr, minlength=len(U)), out=ptr[1:])
        return _csr_topk(ptr, ii, val, cut)

    def _sparse_source(self, S, seen, cut):
        """Top ``cut`` positive entries of every row of a CSR score block, seen removed."""
        S.eliminate_zeros()
        if cut == 0 or S.nnz == 0:
            z = np.zeros(0, np.int64)
            return z, z, np.zeros(0), z
        # the entries > 0 that are not seen, then _csr_topk's order and cut
        sp_, si_ = (_NO_SEEN, _NO_SEEN) if seen is None or not len(seen[1]) else \
            (np.asarray(seen[0], np.int64), np.asarray(seen[1], np.int64))
        return _kernels().csr_topk(S.indptr.astype(np.int64), S.indices,
                                   S.data.astype(np.float64), int(cut), True, sp_, si_,
                                   int(S.shape[1]))

    def _ease_blocks(self, seen, seeds):
        """EASE scores of the chunk for every item, two (c, n_items) float32 blocks (n_items
        is bounded by ``ease_max_items``): ``X[u] @ B`` with the binary seen items, and the
        recency-weighted ``(s[u] @ B) / sum(s[u])`` with the item-kNN seed weights ``s`` (each
        interaction decayed with ``seed_half_life_days`` from the user's latest one)."""
        import scipy.sparse as sp

        ptr, idx = seen
        c, n = len(ptr) - 1, self.n_items_
        X = sp.csr_matrix((np.ones(len(idx), np.float32), idx, ptr), shape=(c, n))
        W = sp.csr_matrix(seeds, dtype=np.float32)
        total = np.asarray(W.sum(axis=1)).ravel()
        W = sp.diags(np.where(total > 0, 1.0 / np.where(total > 0, total, 1.0), 0.0)
                     .astype(np.float32)) @ W
        B = self._ease_t
        if B.device.type == "cpu":  # scipy sparse @ dense: no torch sparse (beta) on the CPU
            Bn = B.numpy()
            return np.asarray(X @ Bn), np.asarray(W @ Bn)
        import torch

        def mm(M):
            M = M.tocoo()
            t = torch.sparse_coo_tensor(torch.from_numpy(np.stack([M.row, M.col]).astype(
                np.int64)), torch.from_numpy(M.data.astype(np.float32)), size=(c, n))
            return torch.sparse.mm(t.to(B.device), B).cpu().numpy()

        return mm(X), mm(W)

    def _ease(self, S, seen, exclude, cut):
        """Top ``cut`` of a chunk's EASE block ``S`` (modified in place); users without
        items get none."""
        ptr, idx = seen
        c = len(ptr) - 1
        if exclude and len(idx):
            S[np.repeat(np.arange(c), np.diff(ptr)), idx] = -np.inf
        S[np.diff(ptr) == 0] = -np.inf
        return _dense_topk(S, cut)

    def _popularity(self, seen, c):
        """The ``popularity`` most popular items per user, seen items skipped: a user with
        ``s`` seen items takes the first ``cut`` unseen of the top ``cut + s``. Vectorised
        over users in blocks of at most ~4M (user, position) cells."""
        cut = self.config.popularity
        order = self._pop_order
        pop = np.asarray(self.recommender_.popularity_, np.float64)
        n_seen = np.zeros(c, np.int64) if seen is None else np.diff(seen[0])
        depth = min(len(order), cut + (int(n_seen.max()) if c else 0))
        pos_of = np.full(self.n_items_, -1, np.int64)
        pos_of[order[:depth]] = np.arange(depth)
        cols = np.arange(depth)
        out_r, out_c, out_k = [], [], []
        step = max(1, (1 << 22) // max(depth, 1))
        for a in range(0, c, step):
            b = min(c, a + step)
            ok = cols[None, :] < (cut + n_seen[a:b])[:, None]
            if seen is not None:
                lo, hi = seen[0][a], seen[0][b]
                p = pos_of[seen[1][lo:hi]]
                r = np.repeat(np.arange(b - a), n_seen[a:b])
                hit = p >= 0
                ok[r[hit], p[hit]] = False
            rank = np.cumsum(ok, axis=1)
            rr, cc = np.nonzero(ok & (rank <= cut))
            out_r.append(rr + a)
            out_c.append(cc)
            out_k.append(rank[rr, cc])
        rows = np.concatenate(out_r) if out_r else np.zeros(0, np.int64)
        items = order[np.concatenate(out_c)] if out_c else np.zeros(0, np.int64)
        ranks = np.concatenate(out_k) if out_k else np.zeros(0, np.int64)
        return rows.astype(np.int64), items.astype(np.int64), pop[items], ranks.astype(np.int64)

    def _segment(self, name, M, Wseg, seen, cut):
        pool = self._pools[name]
        c = len(Wseg)
        if len(pool) == 0:
            z = np.zeros(0, np.int64)
            return z, z, np.zeros(0), z
        S = Wseg.astype(np.float64) @ np.asarray(M[:, pool], np.float64)  # (c, pool)
        if seen is not None and len(seen[1]):
            r = np.repeat(np.arange(c), np.diff(seen[0]))
            pos = np.searchsorted(pool, seen[1])
            hit = (pos < len(pool)) & (pool[np.minimum(pos, len(pool) - 1)] == seen[1])
            S[r[hit], pos[hit]] = -np.inf
        # positive values only (the others as -inf: never proposed)
        row, j, val, rank = _dense_topk(S, cut, positive=True)
        return row, pool[j], val, rank

    def _transposed(self, name, M):
        """C-contiguous (n_items, K) copy of a per-segment matrix ``M`` (K, n_items), kept
        while ``M`` is the same object: an entry's K weights are then one contiguous read."""
        cache = self.__dict__.setdefault("_mt_cache", {})
        hit = cache.get(name)
        if hit is None or hit[0] is not M:
            hit = cache[name] = (M, np.ascontiguousarray(np.asarray(M).T))
        return hit[1]

    def _dense_features(self, F, col, row, item, U, Wseg, interests):
        rec = self.recommender_
        V = rec.item_vectors_
        n = len(row)
        K = self.segment_trend_.shape[0]
        F[:, col["content_cosine"]] = _pair_cosines(U, V, row, item)
        if Wseg is not None and K and n:
            # np.einsum("ij,ji->i", Wseg[row] in float64, M[:, item]) per entry, to the bit
            W = np.ascontiguousarray(Wseg)
            kern = _kernels()
            for name, M in (("segment_popularity", rec.segment_popularity_),
                            ("segment_trend", self.segment_trend_)):
                kern.weighted_columns(W, self._transposed(name, M), row, item, F, col[name])
        F[:, col["popularity"]] = np.asarray(rec.popularity_)[item]
        F[:, col["item_trend"]] = self.item_trend_[item]
        if interests is None:
            F[:, col["interest_max_cosine"]] = F[:, col["content_cosine"]]
        else:
            iptr, IV = interests
            c = len(iptr) - 1
            uptr = np.searchsorted(row, np.arange(c + 1))
            for r in range(c):
                lo, hi = uptr[r], uptr[r + 1]
                if hi == lo:
                    continue
                if iptr[r + 1] == iptr[r]:
                    F[lo:hi, col["interest_max_cosine"]] = F[lo:hi, col["content_cosine"]]
                    continue
                F[lo:hi, col["interest_max_cosine"]] = (
                    V[item[lo:hi]] @ IV[iptr[r]:iptr[r + 1]].T).max(axis=1)

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays this generator adds to its recommender's state (safetensors-ready):
        ``segment_trend`` (K, n_items), ``item_trend`` (n_items,), ``item_first_ts``
        (n_items,) and, when EASE was fitted, ``ease_b`` (n_items, n_items)."""
        self._check_fitted()
        state = {"segment_trend": np.ascontiguousarray(self.segment_trend_, np.float32),
                 "item_trend": np.ascontiguousarray(self.item_trend_, np.float32),
                 "item_first_ts": np.ascontiguousarray(self.item_first_ts_, np.float64)}
        if self.ease_b_ is not None:
            b = self.ease_b_
            b = b.cpu().numpy() if hasattr(b, "cpu") else np.asarray(b)
            state["ease_b"] = np.ascontiguousarray(b, np.float32)
        return state

    def config_dict(self) -> dict:
        """JSON-able settings and fitted scalars."""
        self._check_fitted()
        d = {"config": self.config.to_dict(), "trend_window_days": self.trend_window_days_,
             "trend_time": self.trend_time_, "ease_lambda": self.ease_lambda_,
             "ease_selection": self.ease_selection_}
        json.dumps(d)
        return d

    @classmethod
    def from_state(cls, config_dict: Mapping, state_dict: Mapping[str, np.ndarray],
                   recommender, *, interest_vectors=None, interest_offsets=None,
                   device=None) -> "CandidateGenerator":
        """Rebuild from :meth:`config_dict`, :meth:`state_dict` and the fitted recommender."""
        from .resolve import resolve_device

        gen = cls(CandidateConfig.from_dict(config_dict["config"]))
        missing = [k for k in ("segment_trend", "item_trend") if k not in state_dict]
        if missing:
            raise ValueError(f"state_dict is missing array(s) {missing}")
        gen.device_ = resolve_device(device)
        gen.recommender_ = recommender
        gen._set_interests(interest_vectors, interest_offsets, recommender.n_users_,
                           recommender.dim_)
        gen.trend_window_days_ = float(config_dict["trend_window_days"])
        gen.trend_time_ = float(config_dict["trend_time"])
        gen.segment_trend_ = np.asarray(state_dict["segment_trend"], np.float32)
        gen.item_trend_ = np.asarray(state_dict["item_trend"], np.float32)
        first = state_dict.get("item_first_ts")
        if first is None:
            # saved before this array existed: only rankers of that time read the generator,
            # and none of them has the item_age_days feature that uses it
            first = np.full(recommender.n_items_, np.nan)
        gen.item_first_ts_ = np.asarray(first, np.float64)
        b = state_dict.get("ease_b")
        gen.ease_b_ = None if b is None else np.asarray(b, np.float32)
        lam = config_dict.get("ease_lambda")
        gen.ease_lambda_ = None if lam is None else float(lam)
        gen.ease_selection_ = config_dict.get("ease_selection")
        gen._prepare()
        return gen
