"""Recommendation scorer: content similarity blended with what behaviour knows.

The :class:`Recommender` is a small, array-only component. It receives what the earlier
stages computed (user and item vectors, the user-item interactions, the segments) and
scores every item for a user from four components:

``content``
    cosine of the user's interest vector with the item vector.
``popularity``
    how many distinct users engaged with the item, each user counted with the time-decayed
    weight of their latest interaction (recent popularity predicts the next interactions).
``segment``
    the same popularity measured inside the user's segments: ``segment_soft[u] @ P`` where
    ``P[k]`` is the decayed item distribution of segment ``k``.
``item_knn``
    item-item collaborative filtering: cosine between the items' columns of the binary
    user-item matrix (top ``knn_neighbors`` neighbours per item), summed over the user's own
    items, each weighted by how recent it is relative to the user's latest interaction.

The components live on unrelated scales, so each is standardised per user over the user's
candidate items (z-score) before the weighted sum; reciprocal rank fusion (Cormack, Clarke
and Buettcher, SIGIR 2009) with tie-averaged ranks is the alternative (``fusion="rrf"``).
Which components take part is decided on the training period itself (``weights="auto"``):
the latest 20% of every user's interactions are held out, every component is rebuilt from
the earlier part (user and item vectors too, from the interactions' own text vectors, so
that no held-out text leaks in), and, starting from ``content``, the behaviour component
that raises NDCG@10 on the held-out part the most is added, as long as a one-sided paired
t-test over users accepts the gain at level ``select_alpha``. Selected components get weight
1. The test data of an evaluation is never seen; with too little behaviour to show a
significant gain, the recommender stays with content, the one signal that needs no
behaviour. Explicit weights skip the selection.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ._utils import (TopK, check_indices, check_int, check_matrix, check_user_rows, not_fitted,
                     unit_rows)
from ._topk import topk_row as _topk_row
from ._topk import topk_rows as _topk_rows
from .interests import SECONDS_PER_DAY as _SECONDS_PER_DAY

logger = logging.getLogger(__name__)

COMPONENTS: tuple[str, ...] = ("content", "popularity", "segment", "item_knn")


@dataclass(frozen=True)
class RecommendConfig:
    """Settings of :class:`Recommender`; every default is documented here.

    Parameters
    ----------
    weights : "auto" or mapping of component name to weight, default "auto"
        ``"auto"``: forward selection on an inner temporal split of the training
        interactions (see the module docstring); selected components get weight 1.
        A mapping (e.g. ``{"content": 1.0}``) fixes the weights; missing components get 0.
        Components: ``content``, ``popularity``, ``segment``, ``item_knn``.
    fusion : {"zscore", "rrf"}, default "zscore"
        ``"zscore"``: each component standardised over the user's candidate items (mean 0,
        standard deviation 1; a constant component contributes 0), then the weighted sum.
        ``"rrf"``: reciprocal rank fusion with tie-averaged ranks (scale free; a flat
        component, every item tied, carries no preference).
    rrf_k : float, default 60.0
        ``fusion="rrf"`` only: the constant of reciprocal rank fusion; 60 is the value of
        Cormack et al. (2009).
    rrf_depth : int, default 100
        ``fusion="rrf"`` only: ranks past ``max(rrf_depth, k)`` contribute nothing (the usual
        truncated lists).
    knn_neighbors : int, default 100
        Neighbours kept per item in the item-item similarity.
    popularity_half_life_days : float or None, default None
        Decay of popularity and segment popularity, relative to the latest interaction.
        None uses the ``half_life_days`` given to :meth:`Recommender.fit`.
    seed_half_life_days : float or None, default None
        Decay of the user's own items as ``item_knn`` seeds, relative to that user's latest
        interaction. None uses ``half_life_days`` of :meth:`Recommender.fit`.
    segment_assignment : {"soft", "hard"}, default "soft"
        ``"soft"`` mixes segment popularities with ``segment_soft``; ``"hard"`` uses the
        user's own segment (``user_segment``) only.
    holdout_fraction : float, default 0.2
        Share of each user's interactions held out by ``weights="auto"`` (the same rule as
        the evaluation protocol: the last ``max(1, round(f * n))``, users with n >= 2).
    select_users : int, default 2000
        At most this many held-out users (a seeded sample) score the selection.
    select_k : int, default 10
        Cut-off of the NDCG that the selection maximises.
    select_alpha : float, default 0.05
        Level of the one-sided paired t-test that a component must pass to be added.
    chunk_elements : int, default 4_194_304
        Users are scored in chunks of about ``chunk_elements / n_items`` rows, which bounds
        memory (a few float64 matrices of that many elements).
    random_state : int, default 0
        Seed of the selection's user sample.
    """

    weights: str | Mapping[str, float] = "auto"
    fusion: str = "zscore"
    rrf_k: float = 60.0
    rrf_depth: int = 100
    knn_neighbors: int = 100
    popularity_half_life_days: float | None = None
    seed_half_life_days: float | None = None
    segment_assignment: str = "soft"
    holdout_fraction: float = 0.2
    select_users: int = 2000
    select_k: int = 10
    select_alpha: float = 0.05
    chunk_elements: int = 4_194_304
    random_state: int = 0

    def __post_init__(self):
        w = self.weights
        if isinstance(w, str):
            if w != "auto":
                raise ValueError(f"weights={w!r} is invalid; pass 'auto' or a mapping of "
                                 f"{list(COMPONENTS)} to weights")
        elif isinstance(w, Mapping):
            unknown = [k for k in w if k not in COMPONENTS]
            if unknown:
                raise ValueError(f"weights has unknown component(s) {unknown}; "
                                 f"valid: {list(COMPONENTS)}")
            for name, v in w.items():
                if isinstance(v, bool) or not isinstance(v, (int, float, np.integer,
                                                             np.floating)):
                    raise TypeError(f"weights[{name!r}] must be a number, got {v!r}")
                if not math.isfinite(float(v)) or float(v) < 0:
                    raise ValueError(f"weights[{name!r}]={v} is invalid; pass a finite "
                                     f"weight >= 0")
            if not any(float(v) > 0 for v in w.values()):
                raise ValueError(f"weights={dict(w)} has no positive weight; give at least "
                                 f"one of {list(COMPONENTS)} a weight > 0")
            # stored as a plain dict in component order so that the config is JSON-able
            object.__setattr__(self, "weights",
                               {c: float(w.get(c, 0.0)) for c in COMPONENTS})
        else:
            raise TypeError(f"weights must be 'auto' or a mapping, got {type(w).__name__}")
        _choice("fusion", self.fusion, ("zscore", "rrf"))
        _choice("segment_assignment", self.segment_assignment, ("soft", "hard"))
        _number("rrf_k", self.rrf_k, low=0.0, low_open=False)
        for name in ("rrf_depth", "knn_neighbors", "select_users", "select_k",
                     "chunk_elements"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("random_state", self.random_state, minimum=0)
        for name in ("popularity_half_life_days", "seed_half_life_days"):
            v = getattr(self, name)
            if v is not None:
                _number(name, v, low=0.0, low_open=True, allow_inf=True)
        _number("holdout_fraction", self.holdout_fraction, low=0.0, low_open=True, high=1.0)
        _number("select_alpha", self.select_alpha, low=0.0, low_open=True, high=1.0)

    def to_dict(self) -> dict:
        """JSON-able dict; :meth:`from_dict` restores an equal config."""
        d = dataclasses.asdict(self)
        d["weights"] = self.weights if isinstance(self.weights, str) else dict(self.weights)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "RecommendConfig":
        return config_from_dict(cls, d)


def config_from_dict(cls, d: Mapping):
    """``cls(**d)`` for a config dataclass; a key that is not a field raises naming it (the
    ``from_dict`` of :class:`RecommendConfig`, ``CandidateConfig`` and ``RankerConfig``)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid: {sorted(names)}")
    return cls(**dict(d))


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name}={value!r} is invalid; pass one of {list(options)}")


def _number(name, value, *, low=None, low_open=False, high=None, allow_inf=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name}={value} is invalid; pass a finite number")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name}={value} is invalid; pass a number {'>' if low_open else '>='} "
                         f"{low}")
    if high is not None and v >= high:
        raise ValueError(f"{name}={value} is invalid; pass a number < {high}")


# --------------------------------------------------------------------------- arrays



def _finite(name, x, n, *, nonnegative=False):
    x = np.asarray(x)
    if x.ndim != 1 or x.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {x.shape}")
    if n and not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    bad = ~np.isfinite(x) | ((x < 0) if nonnegative else False)
    if bad.any():
        i = int(np.argmax(bad))
        need = "finite and >= 0" if nonnegative else "finite"
        raise ValueError(f"{name}[{i}]={x[i]} is invalid; every value must be {need}")
    return x


def _decay(age_s: np.ndarray, half_life_days: float) -> np.ndarray:
    if math.isinf(half_life_days):
        return np.ones_like(age_s)
    return np.exp2(-np.maximum(age_s, 0.0) / (half_life_days * _SECONDS_PER_DAY))


def _csr(rows, cols, vals, shape, reduce="max"):
    """CSR (indptr, indices, data) with duplicate (row, col) pairs reduced; sorted columns."""
    n_rows = shape[0]
    if len(rows) == 0:
        return (np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    key = rows.astype(np.int64) * np.int64(shape[1]) + cols.astype(np.int64)
    order = np.lexsort((vals, key)) if reduce == "max" else np.argsort(key, kind="stable")
    key, vals = key[order], vals[order]
    last = np.ones(len(key), bool)
    last[:-1] = key[1:] != key[:-1]
    if reduce == "max":  # sorted by value within a key: the last one is the max
        key, vals = key[last], vals[last]
    else:
        starts = np.flatnonzero(np.concatenate([[True], ~last[:-1]]))
        vals = np.add.reduceat(vals, starts)
        key = key[last]
    r, c = key // shape[1], key % shape[1]
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
    return indptr, c.astype(np.int64), vals.astype(np.float64)


def _scipy_csr(indptr, indices, data, shape):
    import scipy.sparse as sp

    return sp.csr_matrix((data, indices, indptr), shape=shape)


def _item_knn(indptr, indices, n_users, n_items, n_neighbors, chunk_elements, rows=None):
    """Top ``n_neighbors`` cosine neighbours of every item over the binary user-item matrix.

    Returns CSR arrays (indptr, indices, data) of the (n_items, n_items) similarity, the
    diagonal excluded, ties broken towards the lower item row. With ``rows`` (sorted item
    rows) only those rows are computed: a CSR of ``len(rows)`` rows, each equal to the same
    row of the full result.
    """
    X = _scipy_csr(indptr, indices, np.ones(len(indices)), (n_users, n_items))
    XT = X.T.tocsr()
    norms = np.sqrt(np.diff(XT.indptr).astype(np.float64))  # binary: squared norm = count
    inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    rows = np.arange(n_items) if rows is None else np.asarray(rows, np.int64)
    nn = min(n_neighbors, max(n_items - 1, 0))
    out_idx, out_val, counts = [], [], np.zeros(len(rows), np.int64)
    step = max(1, chunk_elements // max(n_items, 1))
    for a in range(0, len(rows) if nn else 0, step):
        block = rows[a:a + step]
        # sparse co-occurrence block: work and memory follow the co-occurrences, not n_items
        C = (XT[block] @ X).tocsr()
        C.sort_indices()
        for r, item in enumerate(block):
            lo, hi = C.indptr[r], C.indptr[r + 1]
            cols = C.indices[lo:hi]
            sims = C.data[lo:hi] * inv[item] * inv[cols]
            sims[cols == item] = 0.0
            top = _topk_row(sims, nn)
            top = top[sims[top] > 0]
            out_idx.append(cols[top])
            out_val.append(sims[top])
            counts[a + r] = len(top)
    ind = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(counts, out=ind[1:])
    idx = np.concatenate(out_idx).astype(np.int64) if out_idx else np.zeros(0, np.int64)
    val = np.concatenate(out_val).astype(np.float64) if out_val else np.zeros(0, np.float64)
    return ind, idx, val


def _replace_rows(indptr, arrays, rows, sub_indptr, sub_arrays, n_rows):
    """CSR arrays with the (sorted, unique) ``rows`` replaced by a sub-CSR's rows.

    ``n_rows`` may exceed the current number of rows: the rows added are empty unless listed
    in ``rows``. Work is linear in the number of stored entries (a copy), none of it sorting.
    """
    old_n = len(indptr) - 1
    counts = np.zeros(n_rows, np.int64)
    counts[:old_n] = np.diff(indptr)
    replaced = np.zeros(n_rows, bool)
    replaced[rows] = True
    row_of = np.repeat(np.arange(old_n), np.diff(indptr))
    keep = np.flatnonzero(~replaced[row_of])
    sub_counts = np.diff(sub_indptr)
    counts[rows] = sub_counts
    out_ptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(counts, out=out_ptr[1:])
    dest_keep = out_ptr[row_of[keep]] + (keep - indptr[row_of[keep]])
    sub_row = np.repeat(np.arange(len(rows)), sub_counts)
    dest_sub = out_ptr[np.asarray(rows, np.int64)[sub_row]] + (np.arange(len(sub_row))
                                                                 - sub_indptr[sub_row])
    out = []
    for a, b in zip(arrays, sub_arrays):
        o = np.empty(out_ptr[-1], dtype=a.dtype)
        o[dest_keep] = a[keep]
        o[dest_sub] = b
        out.append(o)
    return out_ptr, out


def _check_new_interactions(inter_user, inter_item, inter_ts, inter_weight, n_previous,
                            n_users, n_items):
    """Check the interactions of :meth:`Recommender.update` (the new ones in depth)."""
    n_inter = np.asarray(inter_user).shape[0] if np.ndim(inter_user) == 1 else -1
    if n_inter < 0:
        raise ValueError(f"inter_user must be 1-D, got shape {np.shape(inter_user)}")
    check_int("n_previous", n_previous, minimum=0)
    n_prev = int(n_previous)
    if n_prev > n_inter:
        raise ValueError(f"n_previous={n_prev} exceeds the {n_inter} interactions given")
    # the previous interactions were checked when they were added: check the new ones
    new = slice(n_prev, None)
    n_add = n_inter - n_prev
    arrays = []
    for name, x in (("inter_user", inter_user), ("inter_item", inter_item),
                    ("inter_ts", inter_ts), ("inter_weight", inter_weight)):
        x = np.asarray(x)
        if x.shape != (n_inter,):
            raise ValueError(f"{name} must have shape ({n_inter},), got {x.shape}")
        arrays.append(x)
    check_indices("inter_user", arrays[0][new], n_users, n=n_add)
    check_indices("inter_item", arrays[1][new], n_items, n=n_add)
    _finite("inter_ts", arrays[2][new], n_add)
    _finite("inter_weight", arrays[3][new], n_add, nonnegative=True)
    iu, ii = arrays[0].astype(np.int64, copy=False), arrays[1].astype(np.int64, copy=False)
    ts, wt = (arrays[2].astype(np.float64, copy=False),
              arrays[3].astype(np.float64, copy=False))
    return n_prev, iu, ii, ts, wt


def _check_update_segments(segment_soft, user_segment, n_users, k):
    """Check the segments of :meth:`Recommender.update`: ``(soft, seg, noise)``."""
    soft = check_matrix("segment_soft", segment_soft, rows=n_users)
    if soft.shape[1] != k:
        raise ValueError(f"segment_soft has {soft.shape[1]} segments, the recommender was "
                         f"fitted with {k}; call fit() when the segments changed")
    seg = np.asarray(user_segment)
    noise = seg == -1 if seg.ndim == 1 and np.issubdtype(seg.dtype, np.integer) else \
        np.zeros(n_users, bool)
    seg = check_indices("user_segment", np.where(noise, 0, seg), k, n=n_users)
    return soft, seg, noise


def _check_fit_arrays(user_vectors, item_vectors, inter_user, inter_item, inter_ts,
                      inter_weight):
    """Check the vectors and interactions of :meth:`Recommender.fit`: ``(U, I, iu, ii, ts,
    wt)``."""
    U = check_matrix("user_vectors", user_vectors)
    n_users, dim = U.shape
    I = check_matrix("item_vectors", item_vectors)
    if I.shape[1] != dim:
        raise ValueError(f"item_vectors has dimension {I.shape[1]}, user_vectors has {dim}")
    n_items = I.shape[0]
    n_inter = np.asarray(inter_user).shape[0] if np.ndim(inter_user) == 1 else -1
    if n_inter < 0:
        raise ValueError(f"inter_user must be 1-D, got shape {np.shape(inter_user)}")
    iu = check_indices("inter_user", inter_user, n_users, n=n_inter)
    ii = check_indices("inter_item", inter_item, n_items, n=n_inter)
    ts = _finite("inter_ts", inter_ts, n_inter)
    wt = _finite("inter_weight", inter_weight, n_inter, nonnegative=True)
    return U, I, iu, ii, ts, wt


def _check_fit_segments(segment_soft, user_segment, n_users):
    """Check the segments of :meth:`Recommender.fit`: ``(soft, seg, noise)``, noise users
    (``-1``, HDBSCAN) given segment 0 in ``seg``."""
    soft = check_matrix("segment_soft", segment_soft, rows=n_users)
    n_seg = soft.shape[1]
    seg = np.asarray(user_segment)
    noise = np.zeros(n_users, bool)
    if seg.ndim == 1 and np.issubdtype(seg.dtype, np.integer):
        noise = seg == -1  # HDBSCAN noise: no segment of its own
    seg = check_indices("user_segment", np.where(noise, 0, seg) if noise.any() else seg,
                        n_seg, n=n_users)
    return soft, seg, noise


def _check_text_inputs(inter_vectors, item_from_interactions, n_inter, n_items, dim):
    """Check what ``weights="auto"`` needs: ``(inter_vectors or None, from_inter)``, the
    latter all True by default."""
    if inter_vectors is not None:
        inter_vectors = check_matrix("inter_vectors", inter_vectors, rows=n_inter)
        if inter_vectors.shape[1] != dim:
            raise ValueError(f"inter_vectors has dimension {inter_vectors.shape[1]}, "
                             f"user_vectors has {dim}")
    if item_from_interactions is None:
        return inter_vectors, np.ones(n_items, bool)
    from_inter = np.asarray(item_from_interactions)
    if from_inter.shape != (n_items,) or from_inter.dtype != bool:
        raise ValueError(f"item_from_interactions must be a bool array of shape "
                         f"({n_items},), got {from_inter.dtype} {from_inter.shape}")
    return inter_vectors, from_inter


def _changed_pairs(pos, sel, iu, ii, ts, wt, n_prev, m, n_items, t_new, hl_pop):
    """Changed users' decayed pairs now and before, per-pair change, and which are new."""
    old = sel[sel < n_prev]
    p_new = _csr(pos[iu[sel]], ii[sel], wt[sel] * _decay(t_new - ts[sel], hl_pop),
                 (m, n_items), reduce="max")
    p_old = _csr(pos[iu[old]], ii[old], wt[old] * _decay(t_new - ts[old], hl_pop),
                 (m, n_items), reduce="max")
    # the old pairs are a subset of the new ones: per-pair change, exactly 0 where a pair
    # got no new interaction
    row_new = np.repeat(np.arange(m), np.diff(p_new[0]))
    row_old = np.repeat(np.arange(m), np.diff(p_old[0]))
    key_new = row_new * n_items + p_new[1]
    at = np.searchsorted(key_new, row_old * n_items + p_old[1])
    delta = p_new[2].copy()
    delta[at] -= p_old[2]
    added = np.ones(len(key_new), bool)
    added[at] = False  # pairs that did not exist before: the binary matrix changes there
    return p_new, p_old, delta, added


def _tied_ranks_top(row: np.ndarray, depth: int):
    """Items whose tie-averaged rank (0 = best) is below ``depth``, with those ranks.

    ``row`` holds -inf for items that are not candidates; they get no rank.
    """
    finite = np.isfinite(row)
    n_fin = int(finite.sum())
    if n_fin == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    d = min(depth, n_fin)
    part = np.argpartition(-row, d - 1)[:d]
    thr = row[part].min()
    cand = np.flatnonzero(row >= thr)
    vals = row[cand]
    order = np.argsort(-vals, kind="stable")
    cand, vals = cand[order], vals[order]
    # tie groups inside cand are complete: every item equal to a value >= thr is in cand
    starts = np.flatnonzero(np.concatenate([[True], vals[1:] != vals[:-1]]))
    sizes = np.diff(np.append(starts, len(vals)))
    group_rank = starts + (sizes - 1) / 2.0
    ranks = np.repeat(group_rank, sizes)
    keep = ranks < depth
    return cand[keep], ranks[keep]


# --------------------------------------------------------------------------- model
class Recommender:
    """Score items for users from content and behaviour; see the module docstring.

    Parameters
    ----------
    config : RecommendConfig, optional
        Blend settings; ``RecommendConfig()`` when None.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> U = rng.normal(size=(4, 8)).astype(np.float32)
    >>> U /= np.linalg.norm(U, axis=1, keepdims=True)
    >>> I = rng.normal(size=(6, 8)).astype(np.float32)
    >>> I /= np.linalg.norm(I, axis=1, keepdims=True)
    >>> rec = Recommender(RecommendConfig(weights={"content": 1.0})).fit(
    ...     user_vectors=U, item_vectors=I,
    ...     inter_user=np.array([0, 1, 2, 3]), inter_item=np.array([0, 1, 2, 3]),
    ...     inter_ts=np.array([0.0, 1.0, 2.0, 3.0]), inter_weight=np.ones(4),
    ...     user_segment=np.zeros(4, np.int64), segment_soft=np.ones((4, 1), np.float32),
    ...     half_life_days=30.0)
    >>> scores, items = rec.topk(np.array([0, 1]), k=3)
    >>> items.shape
    (2, 3)
    """

    def __init__(self, config: RecommendConfig | None = None):
        if config is None:
            config = RecommendConfig()
        if not isinstance(config, RecommendConfig):
            raise TypeError(f"config must be a RecommendConfig, got {type(config).__name__}")
        self.config = config

    # ------------------------------------------------------------------ fit
    def fit(self, *, user_vectors, item_vectors, inter_user, inter_item, inter_ts,
            inter_weight, user_segment, segment_soft, half_life_days: float,
            inter_vectors=None, item_from_interactions=None) -> "Recommender":
        """Build every component from the training arrays.

        Parameters
        ----------
        user_vectors : ndarray, shape (n_users, dim)
            L2-normalised interest vectors.
        item_vectors : ndarray, shape (n_items, dim)
            L2-normalised item vectors.
        inter_user, inter_item : ndarray of int, shape (n_inter,)
            Row of the user and of the item of every interaction.
        inter_ts : ndarray of float, shape (n_inter,)
            Interaction times, unix seconds.
        inter_weight : ndarray of float, shape (n_inter,)
            Interaction weights, finite and >= 0 (a weight of 0 marks the item as seen and
            adds nothing to popularity or to the seeds).
        user_segment : ndarray of int, shape (n_users,)
            Segment of each user in ``[0, K)``, or ``-1`` for a noise user (HDBSCAN).
        segment_soft : ndarray, shape (n_users, K)
            Soft segment memberships (rows sum to 1).
        half_life_days : float
            Half-life of the decays (popularity, seeds) unless the config overrides it;
            ``inf`` for none.
        inter_vectors : ndarray, shape (n_inter, dim), optional
            Text vector of every interaction. Needed by ``weights="auto"``: the selection
            rebuilds user vectors (and the item vectors that came from interactions) from the
            earlier part of the inner split, so that held-out texts do not leak into it.
        item_from_interactions : ndarray of bool, shape (n_items,), optional
            True for items whose vector is the mean of their interactions' vectors, False for
            items described by an items table. Default: all True. Used by ``weights="auto"``.

        Returns
        -------
        self
        """
        cfg = self.config
        U, I, iu, ii, ts, wt = _check_fit_arrays(user_vectors, item_vectors, inter_user,
                                                 inter_item, inter_ts, inter_weight)
        n_users, dim = U.shape
        n_items = I.shape[0]
        soft, seg, noise = _check_fit_segments(segment_soft, user_segment, n_users)
        _number("half_life_days", half_life_days, low=0.0, low_open=True, allow_inf=True)
        hl = float(half_life_days)
        inter_vectors, from_inter = _check_text_inputs(inter_vectors, item_from_interactions,
                                                       len(iu), n_items, dim)

        self.popularity_half_life_days_ = (hl if cfg.popularity_half_life_days is None
                                           else float(cfg.popularity_half_life_days))
        self.seed_half_life_days_ = (hl if cfg.seed_half_life_days is None
                                     else float(cfg.seed_half_life_days))
        self.n_users_, self.n_items_, self.dim_ = n_users, n_items, dim
        self.user_vectors_, self.item_vectors_ = U, I
        soft = segment_weights(cfg, soft, seg, noise)
        self.user_segment_weights_ = soft
        self._fit_behaviour(iu, ii, ts, wt, n_users, n_items)

        if cfg.weights == "auto":
            if inter_vectors is None:
                raise ValueError("weights='auto' needs inter_vectors (the text vector of every "
                                 "interaction) to select components on an inner temporal "
                                 "split; pass inter_vectors or explicit weights")
            self.weights_, self.selection_ = self._select(
                U, I, iu, ii, ts, wt, inter_vectors, from_inter, soft, hl)
        else:
            self.weights_ = np.array([cfg.weights[c] for c in COMPONENTS], np.float64)
            self.selection_ = None
        logger.info("recommender weights: %s",
                    {c: float(w) for c, w in zip(COMPONENTS, self.weights_)})
        return self

    def _fit_behaviour(self, iu, ii, ts, wt, n_users, n_items):
        """Seen matrix, decayed (segment) popularity, seeds and the item-item neighbours."""
        cfg = self.config
        t_ref = float(ts.max()) if len(ts) else 0.0
        pair = wt * _decay(t_ref - ts, self.popularity_half_life_days_)
        # distinct users per item: each (user, item) pair counts once, at its latest weight
        p_ptr, p_idx, p_val = _csr(iu, ii, pair, (n_users, n_items), reduce="max")
        self.seen_indptr_, self.seen_indices_ = p_ptr, p_idx
        self.popularity_ = np.bincount(p_idx, weights=p_val, minlength=n_items).astype(np.float64)
        P = _scipy_csr(p_ptr, p_idx, p_val, (n_users, n_items))
        soft = self.user_segment_weights_.astype(np.float64)
        seg_pop = np.asarray((P.T @ soft).T)  # (K, n_items)
        tot = seg_pop.sum(axis=1, keepdims=True)
        self.segment_popularity_ = np.where(tot > 0, seg_pop / np.where(tot > 0, tot, 1), 0.0)
        # what update() needs to add interactions without a rebuild
        self.behaviour_time_ = t_ref
        self.segment_popularity_total_ = tot[:, 0]
        self.seed_indptr_, self.seed_indices_, self.seed_weights_ = user_seeds(
            iu, ii, ts, wt, n_users, n_items, self.seed_half_life_days_)
        self._sparse = None
        self.knn_indptr_, self.knn_indices_, self.knn_weights_ = _item_knn(
            p_ptr, p_idx, n_users, n_items, cfg.knn_neighbors, cfg.chunk_elements)

    def can_update(self) -> bool:
        """Whether :meth:`update` can run (a fit or load by this version, not an older save)."""
        return (hasattr(self, "weights_") and getattr(self, "behaviour_time_", None) is not None
                and getattr(self, "segment_popularity_total_", None) is not None)

    def update(self, *, user_vectors, item_vectors, inter_user, inter_item, inter_ts,
               inter_weight, n_previous: int, user_segment, segment_soft,
               changed_users=None) -> "Recommender":
        """Add interactions, recomputing only the statistics they touch.

        Equals :meth:`fit` on all interactions with the same vectors, segments and this
        recommender's weights (no re-selection), to float rounding: popularity and segment
        popularity are rescaled to the new reference time (the decay scales every old weight
        by one factor) and corrected by the changed users' rows; the seen and seed rows of the
        changed users are rebuilt from their interactions; item-item neighbours are
        recomputed for the items that gained a user and the items that co-occur with them.
        The work is that of the changed users and items plus linear-time copies of the sparse
        arrays (no sort, no product over all users).

        Parameters
        ----------
        user_vectors : ndarray, shape (n_users, dim)
            All users; users past the fitted ones are new (appended).
        item_vectors : ndarray, shape (n_items, dim)
            All items; items past the fitted ones are new (appended).
        inter_user, inter_item, inter_ts, inter_weight : ndarray, shape (n_inter,)
            All interactions, as for :meth:`fit`: the first ``n_previous`` are those this
            recommender was fitted (or last updated) with, the rest are new.
        n_previous : int
        user_segment : ndarray of int, shape (n_users,)
        segment_soft : ndarray, shape (n_users, K)
            Same K as at :meth:`fit`.
        changed_users : array-like of int, optional
            Users whose segment memberships changed (users with new interactions are added).

        Returns
        -------
        self
        """
        if not self.can_update():
            raise ValueError("this Recommender has no incremental state (fitted by an older "
                             "interestflow); call fit() on all interactions instead")
        U = check_matrix("user_vectors", user_vectors, dim=self.dim_)
        I = check_matrix("item_vectors", item_vectors, dim=self.dim_)
        n_users, n_items = U.shape[0], I.shape[0]
        n_u0, n_i0 = self.n_users_, self.n_items_
        if n_users < n_u0 or n_items < n_i0:
            raise ValueError(f"user_vectors/item_vectors have {n_users}/{n_items} rows, fewer "
                             f"than the {n_u0}/{n_i0} fitted; rows can only be appended")
        n_prev, iu, ii, ts, wt = _check_new_interactions(
            inter_user, inter_item, inter_ts, inter_weight, n_previous, n_users, n_items)
        k = self.segment_popularity_.shape[0]
        soft, seg, noise = _check_update_segments(segment_soft, user_segment, n_users, k)

        t_new, f = self._update_time(ts, n_prev)
        changed = np.arange(n_u0, n_users, dtype=np.int64)  # new users
        if changed_users is not None:
            changed = np.concatenate([changed, np.asarray(changed_users, np.int64)])
        changed = np.unique(np.concatenate([changed, iu[n_prev:]]))
        m = len(changed)
        pos = np.full(n_users, -1, np.int64)
        pos[changed] = np.arange(m)
        sel = np.flatnonzero(pos[iu] >= 0)  # every interaction of a changed user
        p_new, p_old, delta, added = _changed_pairs(pos, sel, iu, ii, ts, wt, n_prev, m,
                                                    n_items, t_new,
                                                    self.popularity_half_life_days_)
        # popularity: rescaled to t_new, plus the changed pairs
        pop = np.zeros(n_items)
        pop[:n_i0] = self.popularity_ * f
        pop += np.bincount(p_new[1], weights=delta, minlength=n_items)
        self.popularity_ = pop
        self._update_segment_popularity(soft, seg, noise, changed, p_new, p_old, f, n_users,
                                        n_items)
        # seen rows (the popularity pairs) and seed rows of the changed users
        self.seen_indptr_, (self.seen_indices_,) = _replace_rows(
            self.seen_indptr_, [self.seen_indices_], changed, p_new[0], [p_new[1]], n_users)
        s_ptr, s_idx, s_val = user_seeds(pos[iu[sel]], ii[sel], ts[sel], wt[sel], m, n_items,
                                         self.seed_half_life_days_)
        self.seed_indptr_, (self.seed_indices_, self.seed_weights_) = _replace_rows(
            self.seed_indptr_, [self.seed_indices_, self.seed_weights_], changed, s_ptr,
            [s_idx, s_val], n_users)
        self._update_knn(np.unique(p_new[1][added]), n_users, n_items, n_i0)

        self.behaviour_time_ = t_new
        self.n_users_, self.n_items_ = n_users, n_items
        self.user_vectors_, self.item_vectors_ = U, I
        self._sparse = None
        return self

    def _update_time(self, ts, n_prev):
        """New reference time (the latest interaction) and the decay factor of old weights."""
        # popularity decays from the latest interaction (as in fit)
        t_old = float(self.behaviour_time_)
        new = slice(n_prev, None)
        if len(ts) - n_prev == 0:
            t_new = t_old
        else:
            t_new = float(ts[new].max()) if n_prev == 0 else max(t_old, float(ts[new].max()))
        f = (float(_decay(np.array([t_new - t_old]), self.popularity_half_life_days_)[0])
             if n_prev else 0.0)
        return t_new, f

    def _update_segment_popularity(self, soft, seg, noise, changed, p_new, p_old, f, n_users,
                                   n_items):
        """Rescale segment popularity to the new time and correct it by the changed users."""
        cfg = self.config
        k = self.segment_popularity_.shape[0]
        n_u0, n_i0 = self.n_users_, self.n_items_
        m = len(changed)
        # segment popularity (unnormalised: normalised rows times their totals)
        w_new = segment_weights(cfg, soft[changed], seg[changed], noise[changed])
        w_old = np.zeros_like(w_new)
        was = changed < n_u0
        w_old[was] = self.user_segment_weights_[changed[was]]
        tot_old = self.segment_popularity_total_ * f
        seg_pop = np.zeros((k, n_items))
        seg_pop[:, :n_i0] = self.segment_popularity_ * tot_old[:, None]
        cols = np.unique(p_new[1])  # holds every old pair's item too
        tot = tot_old
        if len(cols):
            Pn = _scipy_csr(*p_new, (m, n_items))[:, cols]
            Po = _scipy_csr(*p_old, (m, n_items))[:, cols]
            d = np.asarray((Pn.T @ w_new.astype(np.float64)).T) \
                - np.asarray((Po.T @ w_old.astype(np.float64)).T)
            seg_pop[:, cols] += d
            tot = tot_old + d.sum(axis=1)
        self.segment_popularity_ = np.where(tot[:, None] > 0,
                                            seg_pop / np.where(tot > 0, tot, 1.0)[:, None], 0.0)
        self.segment_popularity_total_ = tot
        weights = np.zeros((n_users, k), np.float32)
        weights[:n_u0] = self.user_segment_weights_
        weights[changed] = w_new
        self.user_segment_weights_ = weights

    def _update_knn(self, gained, n_users, n_items, n_i0):
        """Recompute the item-item neighbour rows that the items which gained a user move."""
        cfg = self.config
        # item-item neighbours: items that gained a user change their column norm and their
        # co-occurrences, which moves their own row and the rows of every item they co-occur with
        rows = gained
        if min(cfg.knn_neighbors, max(n_items - 1, 0)) != min(cfg.knn_neighbors,
                                                               max(n_i0 - 1, 0)):
            rows = np.arange(n_items)  # a small catalogue grew: every row keeps more neighbours
        elif len(gained):
            X = _scipy_csr(self.seen_indptr_, self.seen_indices_,
                           np.ones(len(self.seen_indices_)), (n_users, n_items))
            co = X[:, gained].T.tocsr() @ X
            rows = np.union1d(gained, co.indices)
        k_ptr, k_idx, k_val = _item_knn(self.seen_indptr_, self.seen_indices_, n_users,
                                        n_items, cfg.knn_neighbors, cfg.chunk_elements,
                                        rows=rows)
        self.knn_indptr_, (self.knn_indices_, self.knn_weights_) = _replace_rows(
            self.knn_indptr_, [self.knn_indices_, self.knn_weights_], rows, k_ptr,
            [k_idx, k_val], n_items)

    # ------------------------------------------------------------ selection
    def _select(self, U, I, iu, ii, ts, wt, V, from_inter, soft, hl):
        """Forward selection of components on an inner temporal split of the interactions."""
        cfg = self.config
        n_users, n_items = U.shape[0], I.shape[0]
        hold = _holdout_mask(iu, ts, cfg.holdout_fraction)
        inner, has_text = subset_recommender(
            dataclasses.replace(cfg, weights={c: 1.0 for c in COMPONENTS}), ~hold,
            user_vectors=U, item_vectors=I, inter_user=iu, inter_item=ii, inter_ts=ts,
            inter_weight=wt, inter_vectors=V, item_from_interactions=from_inter,
            user_segment_weights=soft, popularity_half_life_days=self.popularity_half_life_days_,
            seed_half_life_days=self.seed_half_life_days_, half_life_days=hl)
        users, truth = _held_out_truth(inner, iu[hold], ii[hold], n_users, n_items)
        report = {"n_users": len(users), "steps": []}
        if len(users) < 2:
            logger.warning("weights='auto': only %d users to select on; using content only",
                           len(users))
            return np.array([1.0, 0.0, 0.0, 0.0]), report
        rng = np.random.default_rng(cfg.random_state)
        pick = np.sort(rng.choice(len(users), size=min(cfg.select_users, len(users)),
                                  replace=False))
        users = np.asarray(users, np.int64)[pick]
        truth = [truth[p] for p in pick]
        # items with no text in the inner period cannot be candidates
        ndcg = _subset_ndcg(inner, users, truth, cfg.select_k, ~has_text, n_items,
                            cfg.chunk_elements)
        current = _forward_selection(ndcg, cfg.select_alpha, report)
        weights = np.array([1.0 if current >> j & 1 else 0.0 for j in range(len(COMPONENTS))])
        return weights, report

    # ------------------------------------------------------------ scoring
    def _raw(self, rows: np.ndarray, name: str) -> np.ndarray:
        """Raw component scores, shape (len(rows), n_items), float64."""
        if name == "content":
            return (self.user_vectors_[rows].astype(np.float64)
                    @ self.item_vectors_.T.astype(np.float64))
        if name == "popularity":
            return np.broadcast_to(self.popularity_, (len(rows), self.n_items_)).copy()
        if name == "segment":
            return self.user_segment_weights_[rows].astype(np.float64) @ self.segment_popularity_
        if name == "item_knn":
            if getattr(self, "_sparse", None) is None:
                self._sparse = (
                    _scipy_csr(self.seed_indptr_, self.seed_indices_, self.seed_weights_,
                               (self.n_users_, self.n_items_)),
                    _scipy_csr(self.knn_indptr_, self.knn_indices_, self.knn_weights_,
                               (self.n_items_, self.n_items_)))
            seeds, neighbours = self._sparse
            return np.asarray((seeds[rows] @ neighbours).toarray(), np.float64)
        raise ValueError(f"unknown component {name!r}; valid: {list(COMPONENTS)}")

    def _mask(self, rows, exclude_seen, extra_mask=None):
        mask = np.zeros((len(rows), self.n_items_), bool)
        if exclude_seen:
            for r, u in enumerate(rows):
                mask[r, self.seen_indices_[self.seen_indptr_[u]:self.seen_indptr_[u + 1]]] = True
        if extra_mask is not None:
            mask |= extra_mask[None, :]
        return mask

    def _normalised(self, rows, *, exclude_seen, k, extra_mask=None, weights=None):
        """Per-component normalised scores for ``rows``: list of (len(rows), n_items) or None.

        Non-candidate items (seen, masked) hold -inf in every returned matrix.
        """
        cfg = self.config
        mask = self._mask(rows, exclude_seen, extra_mask)
        depth = max(cfg.rrf_depth, k)
        out = []
        for j, name in enumerate(COMPONENTS):
            if weights is not None and weights[j] == 0:
                out.append(None)
                continue
            S = self._raw(rows, name)
            S[mask] = -np.inf
            if cfg.fusion == "rrf":
                Z = np.zeros_like(S)
                for r in range(len(rows)):
                    idx, rank = _tied_ranks_top(S[r], depth)
                    Z[r, idx] = 1.0 / (cfg.rrf_k + rank + 1.0)
            else:
                fin = ~mask
                cnt = np.maximum(fin.sum(axis=1, keepdims=True), 1)
                S0 = np.where(fin, S, 0.0)
                mean = S0.sum(axis=1, keepdims=True) / cnt
                var = (np.where(fin, S - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / cnt
                std = np.sqrt(var)
                Z = np.where(std > 0, (S0 - mean) / np.where(std > 0, std, 1.0), 0.0)
            Z[mask] = -np.inf
            out.append(Z)
        return out

    def topk(self, user_rows, k: int, *, exclude_seen: bool = True) -> TopK:
        """Top-k items for each user row.

        Parameters
        ----------
        user_rows : ndarray of int, shape (m,)
            Rows of the users in ``user_vectors`` given to :meth:`fit`.
        k : int
            Items per user, >= 1.
        exclude_seen : bool, default True
            Leave out the items the user interacted with in the training data.

        Returns
        -------
        TopK
            ``(scores, rows)``, the order of every top-k in interestflow (as ``torch.topk``
            and FAISS). ``scores``: float32 (m, k), fused scores, best first, padded with
            ``-inf``; ``rows``: int64 (m, k), item rows, ties to the lower item row, padded
            with -1 when fewer than ``k`` candidate items exist.
        """
        if not hasattr(self, "weights_"):
            raise not_fitted("this Recommender is not fitted; call fit() or from_state() first")
        k = check_int("k", k, 1)
        if not isinstance(exclude_seen, (bool, np.bool_)):
            raise TypeError(f"exclude_seen must be a bool, got {exclude_seen!r}")
        rows = check_user_rows(user_rows, self.n_users_)
        items = np.full((len(rows), k), -1, np.int64)
        scores = np.full((len(rows), k), -np.inf, np.float32)
        if self.n_items_ == 0:
            return TopK(scores, items)
        if self._content_only():
            self._recommend_content(rows, k, bool(exclude_seen), items, scores)
            return TopK(scores, items)
        step = max(1, self.config.chunk_elements // self.n_items_)
        for a in range(0, len(rows), step):
            chunk = rows[a:a + step]
            comps = self._normalised(chunk, exclude_seen=bool(exclude_seen), k=k,
                                     weights=self.weights_)
            F = _fuse(comps, self.weights_)
            top = _topk_rows(F, k)
            val = np.take_along_axis(F, top, axis=1)
            ok = np.isfinite(val)  # -inf: not a candidate (padding)
            kk = top.shape[1]
            items[a:a + len(chunk), :kk] = np.where(ok, top, -1)
            scores[a:a + len(chunk), :kk] = np.where(ok, val, -np.inf)
        return TopK(scores, items)

    def recommend(self, user_rows, k: int, *, exclude_seen: bool = True):
        """Deprecated: :meth:`topk` in the old order, ``(item_rows, scores)``.

        Every top-k in interestflow now returns ``(scores, rows)`` (:class:`TopK`);
        ``scores, rows = rec.topk(user_rows, k)`` replaces ``rows, scores =
        rec.recommend(user_rows, k)``. Same arrays; a ``DeprecationWarning``.
        """
        warnings.warn("Recommender.recommend() returns (item_rows, scores) and is deprecated; "
                      "use Recommender.topk(), which returns (scores, rows) like every top-k "
                      "in interestflow", DeprecationWarning, stacklevel=2)
        scores, rows = self.topk(user_rows, k, exclude_seen=exclude_seen)
        return rows, scores

    def _content_only(self) -> bool:
        w = self.weights_
        return self.config.fusion == "zscore" and w[0] > 0 and not np.any(w[1:])

    def _recommend_content(self, rows, k, exclude_seen, items, scores):
        """Content-only recommendation through the streaming top-k kernel.

        Same result as the dense path (z-scored dot products over the user's unseen items,
        ties to the lower item row) without the (users, items) score matrix: the kernel
        returns each user's ``k + n_seen`` best items by dot product, seen ones are dropped,
        and the z-score's mean and variance over the unseen items come from the item sum
        ``V.T 1`` and the Gram matrix ``V.T V`` minus the seen items' terms (float64).
        """
        from interestflow.kernels import cosine_topk

        V = self.item_vectors_
        V64 = V.astype(np.float64)
        v_sum = V64.sum(axis=0)
        gram = V64.T @ V64
        n_items = self.n_items_
        ptr, idx = self.seen_indptr_, self.seen_indices_
        n_seen = (ptr[rows + 1] - ptr[rows]) if exclude_seen else np.zeros(len(rows), np.int64)
        # users with many seen items need a deeper top-k: group users of similar depth
        order = np.argsort(n_seen, kind="stable")
        w0 = float(self.weights_[0])
        step = 4096
        for a in range(0, len(order), step):
            sel = order[a:a + step]
            urows = rows[sel]
            depth = int(min(n_items, k + int(n_seen[sel].max())))
            U = np.ascontiguousarray(self.user_vectors_[urows], dtype=np.float32)
            _, top = cosine_topk(U, V, depth, normalized=True)
            U64 = U.astype(np.float64)
            for r, u in enumerate(urows):
                seen = idx[ptr[u]:ptr[u + 1]] if exclude_seen else idx[:0]
                cand = top[r]
                if len(seen):
                    cand = cand[~np.isin(cand, seen)]
                cand = cand[:k]
                if not len(cand):
                    continue
                s = V64[cand] @ U64[r]
                # float64 scores decide the final order (the kernel ranks in float32)
                o = np.lexsort((cand, -s))
                cand, s = cand[o], s[o]
                cnt = n_items - len(seen)
                s_seen = V64[seen] @ U64[r] if len(seen) else np.zeros(0)
                mean = (U64[r] @ v_sum - s_seen.sum()) / cnt
                ex2 = (U64[r] @ gram @ U64[r] - (s_seen ** 2).sum()) / cnt
                var = ex2 - mean * mean
                if var > 1e-12 * max(ex2, 1e-300):
                    z = (s - mean) / np.sqrt(var)
                else:
                    z = np.zeros_like(s)  # every candidate scores the same
                items[sel[r], :len(cand)] = cand
                scores[sel[r], :len(cand)] = w0 * z

    # ---------------------------------------------------------- persistence
    _STATE = ("user_vectors_", "item_vectors_", "user_segment_weights_", "seen_indptr_",
              "seen_indices_", "popularity_", "segment_popularity_", "seed_indptr_",
              "seed_indices_", "seed_weights_", "knn_indptr_", "knn_indices_", "knn_weights_",
              "weights_")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every array needed to recommend again (safetensors-ready, contiguous)."""
        if not hasattr(self, "weights_"):
            raise not_fitted("this Recommender is not fitted; nothing to save")
        state = {name.rstrip("_"): np.ascontiguousarray(getattr(self, name))
                 for name in self._STATE}
        if getattr(self, "segment_popularity_total_", None) is not None:
            state["segment_popularity_total"] = np.ascontiguousarray(
                self.segment_popularity_total_)
        return state

    def config_dict(self) -> dict:
        """JSON-able settings: the config plus the fitted scalars and the selection report."""
        if not hasattr(self, "weights_"):
            raise not_fitted("this Recommender is not fitted; nothing to save")
        d = {"config": self.config.to_dict(),
             "popularity_half_life_days": _json_float(self.popularity_half_life_days_),
             "seed_half_life_days": _json_float(self.seed_half_life_days_),
             "selection": self.selection_}
        if getattr(self, "behaviour_time_", None) is not None:
            d["behaviour_time"] = float(self.behaviour_time_)
        json.dumps(d)  # fail here, not at save time, if something is not JSON-able
        return d

    @classmethod
    def from_state(cls, config_dict: Mapping, state_dict: Mapping[str, np.ndarray]
                   ) -> "Recommender":
        """Rebuild a fitted Recommender from :meth:`config_dict` and :meth:`state_dict`."""
        if not isinstance(config_dict, Mapping) or "config" not in config_dict:
            raise ValueError("config_dict must be the mapping returned by config_dict(), "
                             "with a 'config' entry")
        missing = [n.rstrip("_") for n in cls._STATE if n.rstrip("_") not in state_dict]
        if missing:
            raise ValueError(f"state_dict is missing array(s) {missing}")
        rec = cls(RecommendConfig.from_dict(config_dict["config"]))
        for name in cls._STATE:
            setattr(rec, name, np.asarray(state_dict[name.rstrip("_")]))
        rec._sparse = None
        rec.popularity_half_life_days_ = float(config_dict["popularity_half_life_days"])
        rec.seed_half_life_days_ = float(config_dict["seed_half_life_days"])
        rec.selection_ = config_dict.get("selection")
        # incremental state (update()); absent from saves of older versions
        t = config_dict.get("behaviour_time")
        rec.behaviour_time_ = None if t is None else float(t)
        total = state_dict.get("segment_popularity_total")
        rec.segment_popularity_total_ = None if total is None else np.array(total, np.float64)
        rec.n_users_, rec.dim_ = rec.user_vectors_.shape
        rec.n_items_ = rec.item_vectors_.shape[0]
        return rec


def user_seeds(inter_user, inter_item, inter_ts, inter_weight, n_users: int, n_items: int,
               half_life_days: float):
    """Item-kNN seeds of users from their interactions: CSR ``(indptr, indices, weights)``.

    A user's seed weight of an item is the interaction's weight times
    ``2 ** (-(t_last - ts) / half_life)``, ``t_last`` the user's latest interaction (so
    the seeds do not depend on a global reference time); repeated (user, item) pairs keep
    the largest. Every interacted pair is present (weight 0 included), so ``(indptr,
    indices)`` is also the user's seen-items CSR. Rows are ``inter_user`` values in
    ``[0, n_users)``; used by :meth:`Recommender.fit`, :meth:`Recommender.update` and the
    batch scorer (:mod:`interestflow.batch`) alike.
    """
    iu = np.asarray(inter_user, np.int64)
    ts = np.asarray(inter_ts, np.float64)
    last = np.full(n_users, -np.inf)
    np.maximum.at(last, iu, ts)
    seed = np.asarray(inter_weight, np.float64) * _decay(last[iu] - ts, float(half_life_days))
    return _csr(iu, np.asarray(inter_item, np.int64), seed, (n_users, n_items), reduce="max")


def segment_weights(cfg, soft, seg, noise):
    """Per-user weights over segments for segment popularity: soft, or one-hot (``"hard"``).

    ``cfg`` a :class:`RecommendConfig`, ``soft`` (n, K) soft memberships, ``seg`` (n,)
    segments in ``[0, K)``, ``noise`` (n,) bool (HDBSCAN noise users get no weight)."""
    if cfg.segment_assignment != "hard":
        return np.array(soft, np.float32)  # a copy: update() writes rows of it
    out = np.zeros(soft.shape, np.float32)
    out[np.arange(len(seg)), seg] = 1.0
    out[noise] = 0.0  # a noise user gets no segment popularity
    return out


def _fuse(comps, weights) -> np.ndarray:
    F = None
    for w, Z in zip(weights, comps):
        if w == 0 or Z is None:
            continue
        F = w * Z if F is None else F + w * Z
    return F


def _names(subset: int) -> list[str]:
    return [c for j, c in enumerate(COMPONENTS) if subset >> j & 1]


def _paired_one_sided(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """One-sided paired t-test that mean(a - b) > 0: (t, p)."""
    from scipy import stats

    d = a - b
    n = len(d)
    sd = d.std(ddof=1) if n > 1 else 0.0
    if sd == 0:
        return (math.inf if d.mean() > 0 else 0.0), (0.0 if d.mean() > 0 else 1.0)
    t = float(d.mean() / (sd / math.sqrt(n)))
    return t, float(stats.t.sf(t, df=n - 1))


def _held_out_truth(inner, hold_user, hold_item, n_users: int, n_items: int):
    """Users to select on and their truth: held-out items the user had not seen before (in
    ``inner``, the recommender of the earlier part), for users with an earlier interaction."""
    truth_ptr, truth_idx, _ = _csr(hold_user, hold_item, np.ones(len(hold_user)),
                                   (n_users, n_items), reduce="max")
    users = []
    truth = []
    seen_ptr, seen_idx = inner.seen_indptr_, inner.seen_indices_
    for u in np.flatnonzero(np.diff(truth_ptr) > 0):
        if seen_ptr[u + 1] == seen_ptr[u]:
            continue  # no earlier interaction: nothing to learn the user from
        t = np.setdiff1d(truth_idx[truth_ptr[u]:truth_ptr[u + 1]],
                         seen_idx[seen_ptr[u]:seen_ptr[u + 1]])
        if len(t):
            users.append(u)
            truth.append(t)
    return users, truth


def _subset_ndcg(inner, users, truth, k: int, excluded, n_items: int,
                 chunk_elements: int) -> dict:
    """NDCG@``k`` of every user under every subset of components that has content (bit ``j``
    of the subset: component ``j``): ``{subset: (n_users,) array}``."""
    subsets = [s for s in range(1 << len(COMPONENTS)) if s & 1]  # content always in
    ndcg = {s: np.zeros(len(users)) for s in subsets}
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    step = max(1, chunk_elements // max(n_items, 1))
    for a in range(0, len(users), step):
        rows = users[a:a + step]
        comps = inner._normalised(rows, exclude_seen=True, k=k, extra_mask=excluded)
        for s in subsets:
            w = np.array([1.0 if s >> j & 1 else 0.0 for j in range(len(COMPONENTS))])
            F = _fuse(comps, w)
            tops = _topk_rows(F, k)
            for r in range(len(rows)):
                top = tops[r][np.isfinite(F[r, tops[r]])]
                t = truth[a + r]
                hits = np.isin(top, t)
                ndcg[s][a + r] = (disc[:len(top)] * hits).sum() / disc[:min(len(t), k)].sum()
    return ndcg


def _forward_selection(ndcg: dict, alpha: float, report: dict) -> int:
    """Forward selection from content: add the best component while its gain is significant
    (one-sided paired t-test at ``alpha``); appends each step to ``report["steps"]`` and
    returns the chosen subset."""
    current = 1
    report["steps"].append({"components": _names(current),
                            "ndcg": float(ndcg[current].mean())})
    while True:
        options = [current | (1 << j) for j in range(len(COMPONENTS)) if not current >> j & 1]
        if not options:
            break
        best = max(options, key=lambda s: (ndcg[s].mean(), -s))
        t_stat, p = _paired_one_sided(ndcg[best], ndcg[current])
        report["steps"].append({"components": _names(best), "ndcg": float(ndcg[best].mean()),
                                "t": t_stat if math.isfinite(t_stat) else None, "p": p,
                                "accepted": bool(p < alpha)})
        if not p < alpha:
            break
        current = best
    return current


def subset_recommender(config: RecommendConfig, keep: np.ndarray, *, user_vectors,
                       item_vectors, inter_user, inter_item, inter_ts, inter_weight,
                       inter_vectors, item_from_interactions, user_segment_weights,
                       popularity_half_life_days: float, seed_half_life_days: float,
                       half_life_days: float):
    """A :class:`Recommender`'s behaviour state rebuilt from the interactions ``keep`` only.

    Used by inner temporal splits (``weights="auto"``, the learned ranker): user vectors are
    the decayed weighted means of the kept interactions' vectors (decay from each user's
    latest kept interaction, which cancels in the normalised mean), interaction-built item
    vectors are rebuilt from the kept interactions, described items keep their vectors, and
    segment weights are used as given. No ``weights_`` is set (the caller decides).

    Returns
    -------
    recommender : Recommender
    has_text : ndarray of bool, shape (n_items,)
        Items with a vector in the kept period (described, or in a kept interaction).
    """
    U, I, V = user_vectors, item_vectors, inter_vectors
    iu, ii, ts, wt = inter_user, inter_item, inter_ts, inter_weight
    tr = np.asarray(keep, bool)
    n_users, n_items = U.shape[0], I.shape[0]
    from_inter = np.asarray(item_from_interactions, bool)
    inner = Recommender(config)
    last = np.full(n_users, -np.inf)
    np.maximum.at(last, iu[tr], ts[tr])
    w_tr = wt[tr] * _decay(last[iu[tr]] - ts[tr], half_life_days)
    Ui = np.zeros((n_users, U.shape[1]), np.float64)
    np.add.at(Ui, iu[tr], V[tr] * w_tr[:, None])
    Ui = unit_rows(Ui, dtype=None)
    # only the interaction-built items change: described ones keep I as it is (no copy: with
    # a described catalogue of 1,000,000 x 384 a float64 copy and its rebuild took 9 GB)
    rows = np.flatnonzero(from_inter)
    if not len(rows):
        Ii = np.ascontiguousarray(I, np.float32)
    else:
        Ii = np.array(I, np.float32)  # a copy: the rebuilt rows must not reach I
        pos = np.full(n_items, -1, np.int64)
        pos[rows] = np.arange(len(rows))
        sel = tr & from_inter[ii]
        rebuilt = np.zeros((len(rows), I.shape[1]))
        np.add.at(rebuilt, pos[ii[sel]], V[sel] * wt[sel, None])
        Ii[rows] = unit_rows(rebuilt, dtype=None).astype(np.float32)
    has_text = ~from_inter
    has_text[np.unique(ii[tr])] = True
    inner.popularity_half_life_days_ = float(popularity_half_life_days)
    inner.seed_half_life_days_ = float(seed_half_life_days)
    inner.n_users_, inner.n_items_, inner.dim_ = n_users, n_items, U.shape[1]
    inner.user_vectors_, inner.item_vectors_ = Ui.astype(np.float32), Ii
    inner.user_segment_weights_ = user_segment_weights
    inner._fit_behaviour(iu[tr], ii[tr], ts[tr], wt[tr], n_users, n_items)
    return inner, has_text


def holdout_mask(inter_user, inter_ts, frac: float = 0.2) -> np.ndarray:
    """True for each user's latest ``max(1, round(frac * n))`` interactions (users n >= 2);
    ties in time keep the input order (the evaluation protocol's rule)."""
    return _holdout_mask(np.asarray(inter_user, np.int64), np.asarray(inter_ts, np.float64),
                         frac)


def _holdout_mask(iu: np.ndarray, ts: np.ndarray, frac: float) -> np.ndarray:
    """True for each user's latest ``max(1, round(frac * n))`` interactions (users n >= 2).

    Ties in time keep the input order; rounding is half up, as in the evaluation protocol.
    """
    n = len(iu)
    order = np.lexsort((np.arange(n), ts, iu))
    u_sorted = iu[order]
    starts = np.flatnonzero(np.concatenate([[True], u_sorted[1:] != u_sorted[:-1]])) if n else \
        np.zeros(0, np.int64)
    sizes = np.diff(np.append(starts, n))
    pos = np.arange(n) - np.repeat(starts, sizes)
    size = np.repeat(sizes, sizes)
    n_hold = np.maximum(1, np.floor(frac * size + 0.5).astype(np.int64))
    hold_sorted = (pos >= size - n_hold) & (size >= 2)
    mask = np.zeros(n, bool)
    mask[order] = hold_sorted
    return mask


def _json_float(x: float):
    return "inf" if math.isinf(x) else float(x)
