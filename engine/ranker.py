"""Stage 2 of the two-stage recommender: one learned ranker over the candidates.

Stage 1 (:mod:`interestflow.candidates`) proposes a bounded union of items per user with one
feature row per (user, candidate). This module adds user-level and relative features
(:data:`RANKER_FEATURES`), trains one LightGBM lambdarank model on an inner temporal split
of the training interactions, and ranks candidates with it.

Why LightGBM (lambdarank) rather than XGBoost (``rank:ndcg``): one package name and a
3.5 MB wheel (XGBoost ships as ``xgboost`` with CUDA, ~300 MB, or ``xgboost-cpu``; both
provide the module ``xgboost``, as faiss-cpu/faiss-gpu do, so a core dependency would clash
on GPU machines), ``lightgbm.dask`` for clusters, a text model format
(``Booster.model_to_string`` / ``Booster(model_str=...)``; no pickle), and bit-reproducible
training with ``deterministic=True``, a fixed ``seed`` and a fixed ``num_threads``.
Training rows are bounded (:attr:`RankerConfig.max_train_users`), so CPU training is fine
on any machine; inference is trees over the candidates' features.

Features (:data:`RANKER_FEATURES`), one row per (user, candidate):

* every column of :data:`~interestflow.candidates.FEATURE_NAMES`: each source's score and
  rank (score NaN, rank 0 where the source did not propose the item: LightGBM treats NaN as
  missing), content cosine to the user vector and best cosine over the user's interests,
  recent popularity and its trend, segment popularity and segment trend of the user's soft
  segments, the number of sources;
* ``segment_lift``: ``segment_popularity / (popularity / sum(popularity))``, how much more
  the user's segments like the item than everybody does (NaN for an item without
  popularity);
* ``content_cosine_gap``: ``content_cosine`` minus the user's best ``content_cosine`` over
  the candidates (<= 0; a per-user normalisation that trees cannot learn themselves; the
  same gap of ``item_knn_all``, ``ease_all`` and ``ease_recent`` was tried and left out: no
  gain on Amazon, MovieLens NDCG@10 0.1363 -> 0.1337 in the dev harness);
* ``item_age_days``: days from the item's first interaction (in the events stage 1 was
  fitted on; :attr:`~interestflow.candidates.CandidateGenerator.item_first_ts_`) to the
  user's latest interaction; negative when the item appeared after the user's latest event,
  NaN for an item without interactions or a user without any. Popularity is measured at one
  reference time for everybody; this places the item on the user's own timeline (a user
  whose history ends in 2003 does not take up a film that first appeared in 2010). With it
  (dev harness, the temporal protocol, defaults otherwise): MovieLens recall@10 / NDCG@10
  0.0741 / 0.1363 -> 0.0800 / 0.1454, Amazon 0.1376 / 0.0740 -> 0.1349 / 0.0756; adding
  the item's share of all interactions in the 90 or 365 days around or before the user's
  latest event as well did not help MovieLens (0.0768 / 0.1422 with the 365-day share);
* user features, the same for all of a user's candidates: ``user_log_interactions``
  (``log(1 + n)``, n the user's interactions), ``user_recency_days`` (days from the user's
  latest interaction to the reference time, the latest interaction of anybody; NaN for a
  user without interactions), ``user_segment_entropy`` and ``user_segment_max`` (entropy in
  nats and largest weight of the user's segment weights).

Training protocol (:func:`train_ranker`):

1. Each user's latest ``holdout_fraction`` (20%) of the training interactions is held out
   (:func:`interestflow.recommend.holdout_mask`, the evaluation protocol's rule: users with
   at least 2 interactions, ``max(1, round(0.2 n))`` held out). Evaluation data never enters:
   this split is inside the events given to ``fit``.
2. Stage 1 is rebuilt on the earlier 80% only: the recommender's behaviour state, user
   vectors and interaction-built item vectors from those interactions
   (:func:`~interestflow.recommend.subset_recommender`; segment weights and described items
   are kept as fitted), and a :class:`~interestflow.candidates.CandidateGenerator` with the
   same settings (EASE's lambda the fitted multiple of the mean item degree, no reselection;
   per-user interests are not rebuilt, so ``interest_max_cosine`` equals ``content_cosine``
   during training).
3. Users with a held-out item they had not interacted with earlier are candidates for
   training; at most ``max_train_users`` of them (a sample seeded with ``random_state``).
   Label 1: the candidate is one of the user's held-out items; else 0. Users none of whose
   candidates is positive are dropped (a lambdarank query without a positive has no pair
   to learn from; their count is reported in ``training_``).
   With ``label_splits=2`` (the default) steps 1-3 are repeated inside the earlier 80%
   (each user's latest 20% of it as labels, stage 1 refitted on the rest): twice the
   queries, one per user and split.
4. ``n_models`` (4) lambdarank models are fitted, seeds ``random_state + j``, and their
   scores averaged; each one's boosting stops early on a seeded 20% of those users
   (``validation_fraction``; their NDCG@10, training events only) and keeps the best round,
   since the queries are few on small data (Amazon 5-core: ~850 users, ~1,000 positives)
   and a fixed 300 rounds overfit them. For serving, features are computed from stage 1 fitted on
   all training events (``InterestEngine.candidates_``).

Reproducibility: the same data, settings and thread count give the same models, in one
process (tested) and across processes (checked on a 120-user case: identical model text).

Memory of training: the candidates of the training users, at most ``max_train_users x
total cut`` rows (20,000 x 450 at the defaults) of ``len(RANKER_FEATURES)`` float32 values,
about 1.4 GB at most; LightGBM bins them into one byte per value. No array of users x
catalogue is allocated.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .candidates import FEATURE_NAMES, Candidates
from ._utils import TopK, check_int, not_fitted
from .recommend import config_from_dict

logger = logging.getLogger(__name__)

_SECONDS_PER_DAY = 86400.0
#: Features derived from the candidate columns.
PAIR_FEATURES: tuple[str, ...] = ("segment_lift", "content_cosine_gap", "item_age_days")
#: Features of the user, repeated on each of the user's candidates.
USER_FEATURES: tuple[str, ...] = ("user_log_interactions", "user_recency_days",
                                  "user_segment_entropy", "user_segment_max")
#: Columns the ranker sees, in order.
RANKER_FEATURES: tuple[str, ...] = FEATURE_NAMES + PAIR_FEATURES + USER_FEATURES
#: Named groups of features that :attr:`RankerConfig.exclude` can leave out (ablations):
#: ``text`` what comes from the encoder's vectors, ``segment`` what comes from the users'
#: segments, ``dynamics`` what measures change over time (trends, recency).
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "text": ("content_score", "content_rank", "content_cosine", "interest_max_cosine",
             "content_cosine_gap"),
    "segment": ("segment_popularity_score", "segment_popularity_rank",
                "segment_trending_score", "segment_trending_rank", "segment_popularity",
                "segment_trend", "segment_lift", "user_segment_entropy", "user_segment_max"),
    "dynamics": ("segment_trending_score", "segment_trending_rank", "segment_trend",
                 "item_trend", "ease_recent", "user_recency_days", "item_age_days"),
}


@dataclass(frozen=True)
class RankerConfig:
    """Settings of :class:`Ranker` and :func:`train_ranker`; every default is stated here.

    Parameters
    ----------
    n_rounds : int, default 300
        Most boosting rounds (trees).
    validation_fraction : float, default 0.2
        Share of the training users (a seeded sample) held out of the trees to stop boosting
        once their NDCG@10 has not improved for ``early_stopping_rounds`` rounds; the model
        keeps the best round. 0 (or fewer than 20 users with a positive): all ``n_rounds``.
    early_stopping_rounds : int, default 30
    learning_rate : float, default 0.05
    num_leaves : int, default 7
        Leaves per tree (small trees: the queries are few).
    min_data_in_leaf : int, default 200
        Fewest training rows in a leaf.
    max_train_users : int, default 20_000
        At most this many users (a seeded sample) give the training queries; bounds the
        memory of training (see the module docstring).
    holdout_fraction : float, default 0.2
        Share of each user's latest interactions whose items are the labels.
    num_threads : int, default 2
        LightGBM threads while training; fixed, as reproducibility needs (the model may
        differ in the last bits with another thread count). Measured on 2 shared cores:
        4 threads took 4.6x as long as 2 (oversubscription).
    random_state : int, default 0
        Seed of the user sample and of LightGBM.
    prior : str or None, default "ease"
        Source whose rank is the boosting's starting score (LightGBM ``init_score``):
        ``-log(1 + rank)``, and ``-log(2 + largest rank seen in training)`` for a candidate
        that source did not propose. The trees learn corrections to that source's order
        instead of an order from scratch; on ~800 training queries (Amazon 5-core) the
        ranker from scratch lost to EASE's order alone (inner split: NDCG@10 0.050 vs 0.068),
        with the prior it matches it. Falls back to no prior when the candidates carry no
        rank of that source (the source is off). None: no prior.
    label_splits : int, default 2
        Inner temporal splits that give training queries: split 1 holds out each user's
        latest ``holdout_fraction`` of the training interactions, split 2 the latest
        ``holdout_fraction`` of what split 1 kept, and so on; each split's features come
        from stage 1 refitted on what it kept. Two splits double the queries of small data
        (MovieLens small: 588 -> 1,155).
    n_models : int, default 4
        Models averaged (bagging): model ``j`` uses seed ``random_state + j`` for its
        validation users, row bagging and feature sampling. On ~1,000 positives the early
        stopping of one model is noisy (its best round ranged 30 to 212 over four seeds on
        Amazon 5-core); the average of four is steadier and better than a typical one.
        Training and scoring cost grow linearly with it.
    exclude : tuple of str, default ()
        Groups of :data:`FEATURE_GROUPS` or single names of :data:`RANKER_FEATURES` the
        models do not see (for ablations; the candidates are the same). A prior source's
        rank stays the starting score.
    """

    n_rounds: int = 300
    validation_fraction: float = 0.2
    early_stopping_rounds: int = 30
    learning_rate: float = 0.05
    num_leaves: int = 7
    min_data_in_leaf: int = 200
    max_train_users: int = 20_000
    holdout_fraction: float = 0.2
    num_threads: int = 2
    random_state: int = 0
    prior: str | None = "ease"
    label_splits: int = 2
    n_models: int = 4
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        ex = self.exclude
        if isinstance(ex, str) or not all(isinstance(e, str) for e in ex):
            raise TypeError(f"exclude must be a tuple of names, got {ex!r}")
        bad = [e for e in ex if e not in FEATURE_GROUPS and e not in RANKER_FEATURES]
        if bad:
            raise ValueError(f"exclude: unknown name(s) {bad}; valid: groups "
                             f"{sorted(FEATURE_GROUPS)} or names of RANKER_FEATURES")
        object.__setattr__(self, "exclude", tuple(ex))
        if not self.used_features():
            raise ValueError("exclude leaves no feature")
        if self.prior is not None and not isinstance(self.prior, str):
            raise TypeError(f"prior must be a source name or None, got {self.prior!r}")
        for name, low in (("n_rounds", 1), ("num_leaves", 2), ("min_data_in_leaf", 1),
                          ("max_train_users", 1), ("num_threads", 1), ("random_state", 0),
                          ("early_stopping_rounds", 1), ("label_splits", 1),
                          ("n_models", 1)):
            check_int(name, getattr(self, name), minimum=low)
        v = self.validation_fraction
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not 0 <= float(v) < 1:
            raise ValueError(f"validation_fraction={v!r} is invalid; pass a number in [0, 1)")
        for name in ("learning_rate", "holdout_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number, got {v!r}")
            if not (math.isfinite(float(v)) and 0 < float(v) < (1 if name == "holdout_fraction"
                                                                else math.inf)):
                raise ValueError(f"{name}={v} is invalid; pass a finite number > 0"
                                 + (" and < 1" if name == "holdout_fraction" else ""))

    def used_features(self, names=RANKER_FEATURES) -> tuple[str, ...]:
        """``names`` (default :data:`RANKER_FEATURES`) without the excluded ones, in order:
        the columns the models see."""
        gone = {n for e in self.exclude for n in FEATURE_GROUPS.get(e, (e,))}
        return tuple(n for n in names if n not in gone)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["exclude"] = list(self.exclude)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "RankerConfig":
        return config_from_dict(cls, d)

    def lightgbm_params(self) -> dict:
        """The LightGBM parameters of training (binary labels: gain 0 and 1)."""
        return {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10],
                "learning_rate": float(self.learning_rate), "num_leaves": int(self.num_leaves),
                "min_data_in_leaf": int(self.min_data_in_leaf), "label_gain": [0.0, 1.0],
                "lambdarank_truncation_level": 20, "lambda_l2": 10.0,
                "feature_fraction": 0.7, "feature_fraction_seed": int(self.random_state),
                "bagging_fraction": 0.8, "bagging_freq": 1,
                "bagging_seed": int(self.random_state), "use_missing": True,
                "zero_as_missing": False,
                "deterministic": True, "force_row_wise": True,
                "num_threads": int(self.num_threads), "seed": int(self.random_state),
                "verbosity": -1}


# ------------------------------------------------------------------------- features
def user_activity(inter_user, inter_ts, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user: number of interactions and time of the latest one (``-inf`` for none).

    Returns
    -------
    count : ndarray of float64, shape (n_users,)
    last_ts : ndarray of float64, shape (n_users,)
    """
    iu = np.asarray(inter_user, np.int64)
    ts = np.asarray(inter_ts, np.float64)
    count = np.bincount(iu, minlength=n_users).astype(np.float64)
    last = np.full(n_users, -np.inf)
    np.maximum.at(last, iu, ts)
    return count, last


def ranking_features(candidates: Candidates, popularity, *, segment_weights, count, last_ts,
                     t_ref: float, item_first_ts) -> Candidates:
    """The candidates with the ranker's extra columns appended (:data:`RANKER_FEATURES`).

    Every per-user argument has one row per user of ``candidates`` (row ``j`` for the
    candidates' user ``j``), whether the users are rows of a fitted model
    (``InterestEngine.recommend``, training: index the model's arrays by the rows) or users
    of a batch chunk (:mod:`interestflow.batch`); one code path serves both.

    Parameters
    ----------
    candidates : Candidates
        Columns :data:`FEATURE_NAMES`, ``m`` users.
    popularity : ndarray, shape (n_items,)
        The recommender's popularity (``Recommender.popularity_``) the candidates came from.
    segment_weights : ndarray, shape (m, K)
        The users' segment weights (``Recommender.user_segment_weights_`` of their rows).
    count, last_ts : ndarray, shape (m,)
        :func:`user_activity` of the users' interactions (count, latest time).
    t_ref : float
        Reference time of ``user_recency_days``, unix seconds.
    item_first_ts : ndarray, shape (n_items,)
        Time of each item's first interaction, unix seconds, NaN for none
        (:attr:`~interestflow.candidates.CandidateGenerator.item_first_ts_` of the generator
        the candidates came from).
    """
    if tuple(candidates.feature_names) != FEATURE_NAMES:
        raise ValueError("candidates must carry the columns of interestflow.candidates."
                         f"FEATURE_NAMES; got {list(candidates.feature_names)}")
    m = candidates.n_users
    W = np.asarray(segment_weights, np.float64)
    c = np.asarray(count, np.float64)
    last = np.asarray(last_ts, np.float64)
    if W.ndim != 2 or len(W) != m or c.shape != (m,) or last.shape != (m,):
        raise ValueError(f"segment_weights, count and last_ts must have one row per user of "
                         f"the candidates ({m}); got shapes {W.shape}, {c.shape}, {last.shape}")
    first = np.asarray(item_first_ts, np.float64)
    if first.ndim != 1 or (len(candidates.items) and candidates.items.max() >= len(first)):
        raise ValueError(f"item_first_ts must have one value per item of the catalogue; got "
                         f"shape {first.shape} for candidate item rows up to "
                         f"{int(candidates.items.max()) if len(candidates.items) else 0}")
    nnz = len(candidates.items)
    sizes = np.diff(candidates.indptr)
    owner = np.repeat(np.arange(m), sizes)
    F = candidates.features
    col = {n: j for j, n in enumerate(FEATURE_NAMES)}
    extra = np.empty((nnz, len(PAIR_FEATURES) + len(USER_FEATURES)), np.float32)
    # pair features
    pop = np.asarray(popularity, np.float64)
    total = pop.sum()
    share = pop[candidates.items] / total if total > 0 else np.zeros(nnz)
    with np.errstate(divide="ignore", invalid="ignore"):
        extra[:, 0] = np.where(share > 0, F[:, col["segment_popularity"]] / share, np.nan)
    cos = F[:, col["content_cosine"]]
    extra[:, 1] = cos - np.repeat(_user_max(cos, candidates.indptr), sizes)
    # a user without interactions (latest time -inf) or an item without any: NaN
    extra[:, 2] = (np.repeat(np.where(np.isfinite(last), last, np.nan), sizes)
                   - first[candidates.items]) / _SECONDS_PER_DAY
    # user features
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(W > 0, W * np.log(np.where(W > 0, W, 1.0)), 0.0).sum(axis=1)
        recency = np.where(np.isfinite(last), (float(t_ref) - last) / _SECONDS_PER_DAY, np.nan)
    user = np.stack([np.log1p(c), recency, ent,
                     W.max(axis=1) if W.shape[1] else np.zeros(m)], axis=1)
    extra[:, len(PAIR_FEATURES):] = user[owner]
    return Candidates(candidates.indptr, candidates.items,
                      np.concatenate([F, extra], axis=1), RANKER_FEATURES,
                      candidates.user_rows)


def _user_max(v, indptr) -> np.ndarray:
    """Largest non-NaN value of each user's rows ``v[indptr[u]:indptr[u + 1]]`` (NaN for a
    user with none)."""
    m = len(indptr) - 1
    best = np.full(m, np.nan, np.float32)
    has = np.diff(indptr) > 0
    if has.any():  # the starts of non-empty users delimit their rows
        best[has] = np.fmax.reduceat(v, indptr[:-1][has])
    return best


# --------------------------------------------------------------------------- ranker
def _prior(candidates: Candidates, source, missing_rank=None):
    """``(init_score, missing_rank)`` of :attr:`RankerConfig.prior`: ``-log(1 + rank)`` of
    the source's rank, ``-log(1 + missing_rank)`` where it did not propose the candidate;
    ``(None, None)`` without that source's ranks."""
    name = f"{source}_rank"
    if source is None or name not in candidates.feature_names:
        return None, None
    r = np.asarray(candidates.column(name), np.float64)
    if missing_rank is None:
        if not (r > 0).any():
            return None, None
        missing_rank = float(r.max()) + 1.0
    return -np.log1p(np.where(r > 0, r, float(missing_rank))), float(missing_rank)


def _lightgbm():
    try:
        import lightgbm
    except ImportError as exc:  # a core dependency; a broken install says how to fix it
        raise ImportError("the learned ranker needs lightgbm>=4: pip install 'lightgbm>=4' "
                          "(a dependency of interestflow)") from exc
    return lightgbm


class Ranker:
    """LightGBM lambdarank models over (user, candidate) features, their scores averaged.

    Parameters
    ----------
    config : RankerConfig, optional
        ``RankerConfig()`` when None.

    Attributes
    ----------
    boosters_ : list of lightgbm.Booster
        :attr:`RankerConfig.n_models` models; the score is their mean (plus the prior).
    feature_names_ : tuple of str
    training_ : dict
        Rows, users, positives and users dropped for having no positive candidate.

    Examples
    --------
    >>> import numpy as np
    >>> from interestflow.candidates import Candidates
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 3)).astype(np.float32)
    >>> cand = Candidates(np.arange(0, 41, 10), np.tile(np.arange(10), 4), X, ("a", "b", "c"))
    >>> y = (X[:, 0] > 0.5).astype(np.float32)
    >>> r = Ranker(RankerConfig(n_rounds=5, min_data_in_leaf=2)).fit(cand, y)
    >>> scores, items = r.topk(cand, 3)
    >>> items.shape
    (4, 3)
    """

    def __init__(self, config: RankerConfig | None = None):
        if config is None:
            config = RankerConfig()
        if not isinstance(config, RankerConfig):
            raise TypeError(f"config must be a RankerConfig, got {type(config).__name__}")
        self.config = config

    def fit(self, candidates: Candidates, labels) -> "Ranker":
        """Train on candidates with binary labels (one lambdarank query per user).

        Parameters
        ----------
        candidates : Candidates
            Training candidates; every feature column is used.
        labels : ndarray, shape (nnz,)
            1 for a relevant candidate, 0 otherwise. Users without a 1 are dropped.

        Returns
        -------
        self
        """
        lgb = _lightgbm()
        y = np.asarray(labels)
        nnz = len(candidates.items)
        if y.shape != (nnz,):
            raise ValueError(f"labels must have shape ({nnz},), got {y.shape}")
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be 0 or 1")
        sizes = np.diff(candidates.indptr)
        owner = np.repeat(np.arange(candidates.n_users), sizes)
        pos = np.bincount(owner, weights=y.astype(np.float64), minlength=candidates.n_users)
        keep_user = (pos > 0) & (sizes > 0)
        if not keep_user.any():
            raise ValueError("no user has a positive candidate; the ranker has nothing to "
                             "learn from (more interactions per user are needed)")
        cfg = self.config
        # what every model shares: its columns, the prior and the users validation samples
        names = list(cfg.used_features(candidates.feature_names))
        cols = [list(candidates.feature_names).index(n) for n in names]
        X = np.ascontiguousarray(candidates.features[:, cols], np.float32)
        init, missing_rank = _prior(candidates, cfg.prior)
        self.prior_ = None if init is None else {"source": cfg.prior,
                                                 "missing_rank": missing_rank}
        # queries are sampled for validation by user (``user_rows``; one query per row
        # without them), so one user's queries of several label splits stay on one side
        who = np.arange(candidates.n_users) if candidates.user_rows is None else \
            np.asarray(candidates.user_rows, np.int64)
        kept = np.unique(who[keep_user])
        n_valid = int(round(cfg.validation_fraction * len(kept))) if len(kept) >= 20 else 0
        y32 = y.astype(np.float32)

        def dataset(users, reference=None):
            rows = users[owner]
            return lgb.Dataset(X[rows], label=y32[rows], group=sizes[users],
                               init_score=None if init is None else init[rows],
                               feature_name=names, free_raw_data=True, reference=reference,
                               params={"verbosity": -1})

        rounds = []
        self.boosters_ = []
        for j in range(int(cfg.n_models)):
            seed = int(cfg.random_state) + j
            b, best = self._fit_one(lgb, dataset, who, kept, n_valid, keep_user, seed)
            self.boosters_.append(b)
            rounds.append(best)
        self.feature_names_ = tuple(names)
        keep = keep_user[owner]
        self.training_ = {"rows": int(keep.sum()), "users": int(len(kept)),
                          "queries": int(keep_user.sum()), "validation_users": int(n_valid),
                          "rounds": rounds, "positives": int(y[keep].sum()),
                          "prior": self.prior_,
                          "users_dropped_no_positive": int((~keep_user & (sizes > 0)).sum())}
        return self

    def _fit_one(self, lgb, dataset, who, kept, n_valid, keep_user, seed):
        """One booster with ``seed`` for its validation users and LightGBM's sampling:
        ``(booster of the kept rounds, rounds)``."""
        cfg = dataclasses.replace(self.config, random_state=seed)
        valid_user = np.zeros(len(keep_user), bool)
        if n_valid:
            rng = np.random.default_rng(cfg.random_state)
            valid_user = np.isin(who, rng.choice(kept, size=n_valid, replace=False)) & \
                keep_user
        train_ds = dataset(keep_user & ~valid_user)
        kw = {}
        if n_valid:
            kw = {"valid_sets": [dataset(valid_user, train_ds)], "valid_names": ["valid"],
                  "callbacks": [lgb.early_stopping(int(cfg.early_stopping_rounds),
                                                   first_metric_only=True, verbose=False)]}
        booster = lgb.train(cfg.lightgbm_params(), train_ds,
                            num_boost_round=int(cfg.n_rounds), **kw)
        best = int(booster.best_iteration) if n_valid and booster.best_iteration > 0 \
            else int(booster.current_iteration())
        # the kept rounds only, through the text format: what is saved is what scores
        return lgb.Booster(model_str=booster.model_to_string(num_iteration=best)), best

    def _check_fitted(self):
        if not hasattr(self, "boosters_"):
            raise not_fitted("this Ranker is not fitted; call fit() first")

    def score(self, candidates: Candidates, *, threads: int | None = None) -> np.ndarray:
        """Score of every candidate, shape (nnz,), float64 (higher is better).

        ``threads``: threads of the tree walk (None: ``config.num_threads`` from 20,000
        candidates on, else 1); the scores do not depend on it."""
        self._check_fitted()
        have = list(candidates.feature_names)
        missing = [n for n in self.feature_names_ if n not in have]
        if missing:
            raise ValueError(f"candidates have columns {have}; the ranker was trained on "
                             f"{list(self.feature_names_)} (missing {missing})")
        if len(candidates.items) == 0:
            return np.zeros(0)
        cols = [have.index(n) for n in self.feature_names_]
        X = candidates.features if cols == list(range(len(have))) else \
            np.ascontiguousarray(candidates.features[:, cols])
        # the models' mean, equal to the bit to summing Booster.predict of each in order and
        # dividing (interestflow.kernels.numba_rank; a sum over trees per row, so the thread
        # count does not change it)
        if threads is None:
            threads = 1 if len(candidates.items) < 20_000 else int(self.config.num_threads)
        s = self._trees().predict(X, threads=int(threads))
        prior = getattr(self, "prior_", None)
        if prior:
            s = s + _prior(candidates, prior["source"], prior["missing_rank"])[0]
        return s

    def _trees(self):
        """The boosters as one :class:`~interestflow.kernels.numba_rank.TreeEnsemble` (parsed
        from their text once; what :meth:`score` evaluates)."""
        from interestflow.kernels.numba_rank import parse_lightgbm

        key = tuple(id(b) for b in self.boosters_)
        cached = getattr(self, "_ensemble", None)
        if cached is None or cached[0] != key:
            cached = (key, parse_lightgbm(self._model_strings()))
            self._ensemble = cached
        return cached[1]

    def topk(self, candidates: Candidates, k: int, *, threads: int | None = None) -> TopK:
        """Best ``k`` candidates per user: ``TopK(scores, rows)`` (the order of every top-k in
        interestflow), each shape (n_users, k); rows are item rows.

        Ties go to the lower item row. A user with fewer than ``k`` candidates is padded with
        item ``-1`` and score ``-inf``. ``threads`` as in :meth:`score`.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k={k!r} is invalid; pass an int >= 1")
        from interestflow.kernels.numba_rank import user_topk

        s = self.score(candidates, threads=threads)
        return TopK(*user_topk(candidates.indptr, candidates.items, s, int(k),
                               threads=int(self.config.num_threads if threads is None
                                           else threads)))

    # ------------------------------------------------------------ persistence
    def model_string(self) -> str:
        """The models in LightGBM's text format (``Booster.model_to_string``), one after the
        other; :meth:`to_dict`'s ``model_lengths`` gives each one's length in characters."""
        self._check_fitted()
        return "".join(self._model_strings())

    def _model_strings(self) -> list[str]:
        return [b.model_to_string() for b in self.boosters_]

    def to_dict(self) -> dict:
        """JSON-able settings and training report (the models themselves:
        :meth:`model_string`)."""
        self._check_fitted()
        return {"config": self.config.to_dict(), "feature_names": list(self.feature_names_),
                "training": self.training_,
                "model_lengths": [len(m) for m in self._model_strings()]}

    @classmethod
    def from_model_string(cls, model: str, d: Mapping) -> "Ranker":
        """Rebuild from :meth:`model_string` and :meth:`to_dict`."""
        lgb = _lightgbm()
        r = cls(RankerConfig.from_dict(d["config"]))
        lengths = [int(n) for n in d.get("model_lengths") or [len(model)]]
        if sum(lengths) != len(model) or any(n <= 0 for n in lengths):
            raise ValueError(f"model_lengths {lengths} do not split the model text of "
                             f"{len(model)} characters")
        ends = np.cumsum(lengths)
        r.boosters_ = [lgb.Booster(model_str=model[e - n:e]) for n, e in zip(lengths, ends)]
        r.feature_names_ = tuple(d["feature_names"])
        for b in r.boosters_:
            if tuple(b.feature_name()) != r.feature_names_:
                raise ValueError(f"the model's features {b.feature_name()} differ from "
                                 f"feature_names {list(r.feature_names_)}")
        r.training_ = dict(d.get("training") or {})
        r.prior_ = r.training_.get("prior")
        return r


# ------------------------------------------------------------------- users by state
def rank_users(generator, ranker, U, soft, segment, iu, ii, ts, w, k: int, *, t_ref: float):
    """Candidates, then the ranker, for users given by their own state rather than as rows of
    the fitted model (batch chunks, :meth:`InterestEngine.recommend_from_events`):
    ``(scores, item rows)``, each (m, k), padded with -inf / -1 as :meth:`Ranker.topk` pads.

    Stage 1's per-user inputs come from the users' events through the functions ``fit``
    uses: seen items and item-kNN seeds (:func:`~interestflow.recommend.user_seeds` of the
    events with a catalogue item: ``iu`` user (0..m-1), ``ii`` item row, ``ts``, ``w``),
    segment weights (:func:`~interestflow.recommend.segment_weights` of the soft features
    ``soft`` (m, K), or of the nearest centroid ``segment`` for hard assignment) and the user
    activity (:func:`user_activity`; recency relative to ``t_ref``). Users go through both
    stages ``CandidateConfig.chunk_users`` at a time, ``RankerConfig.num_threads`` sub-chunks
    side by side, so the largest arrays are that many sub-chunks' candidates (``chunk_users x
    total cut`` rows of ``len(RANKER_FEATURES)`` float32) and EASE's ``chunk_users x
    n_items`` blocks. A user without events with a
    catalogue item (texts only) is a cold start: content, popularity and segment candidates,
    ranked by the same model with zero behaviour scores.
    """
    from .recommend import segment_weights, user_seeds

    rec = generator.recommender_
    m = len(U)
    W = segment_weights(rec.config, soft, segment, np.zeros(m, bool))
    s_ptr, s_idx, s_val = user_seeds(iu, ii, ts, w, m, generator.n_items_,
                                     rec.seed_half_life_days_)
    count, last = user_activity(iu, ts, m)
    scores = np.full((m, k), -np.inf)
    items = np.full((m, k), -1, np.int64)
    # the content source for all users in one search (m x cut rows: bounded like the
    # output): the exact kernel is ~1.4x faster on 8k-query blocks than on 1k
    content = generator.content_search(U, (s_ptr, s_idx))
    step = generator.config.chunk_users
    starts = range(0, m, step)
    threads = max(1, min(int(ranker.config.num_threads), len(starts)))
    # the popularity order deep enough for every sub-chunk before they run side by side
    # (generate_for would deepen this shared state)
    generator._pop_depth(int(np.diff(s_ptr).max()) if m else 0)

    def part(a):
        """Both stages for users [a, b): each sub-chunk writes only its own rows."""
        b = min(m, a + step)
        lo, hi = s_ptr[a], s_ptr[b]
        ptr = s_ptr[a:b + 1] - lo
        cand = generator.generate_for(U[a:b], (ptr, s_idx[lo:hi]),
                                      (ptr, s_idx[lo:hi], s_val[lo:hi]), W[a:b],
                                      content=(content[0][a:b], content[1][a:b]))
        X = ranking_features(cand, rec.popularity_, segment_weights=W[a:b],
                             count=count[a:b], last_ts=last[a:b], t_ref=t_ref,
                             item_first_ts=generator.item_first_ts_)
        scores[a:b], items[a:b] = ranker.topk(X, k, threads=1 if threads > 1 else None)

    if threads == 1:
        for a in starts:
            part(a)
    else:
        # sub-chunks on ranker.config.num_threads threads: the candidate kernels are serial
        # and release the GIL, so one thread per core runs its own sub-chunk (the results
        # do not depend on which thread ran which)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(part, starts))
    return scores, items


# ------------------------------------------------------------------------- training
def train_ranker(recommender, generator, *, inter_user, inter_item, inter_ts, inter_weight,
                 inter_vectors, item_from_interactions, half_life_days: float,
                 config: RankerConfig | None = None, device=None):
    """Fit a :class:`Ranker` on an inner temporal split of the training interactions.

    See the module docstring for the protocol. ``recommender`` and ``generator`` are stage 1
    fitted on all training interactions (their settings and fitted weights are reused; their
    state is not: stage 1 is rebuilt on the inner 80%).

    Returns
    -------
    ranker : Ranker or None
        None (with a warning) when no user has a held-out item among its candidates.
    labels : dict
        ``holdout`` (bool mask over the interactions) and ``users`` (rows of the training
        users), for inspection and tests.
    """
    from .recommend import holdout_mask

    cfg = config or RankerConfig()
    rec = recommender
    iu = np.asarray(inter_user, np.int64)
    ii = np.asarray(inter_item, np.int64)
    ts = np.asarray(inter_ts, np.float64)
    wt = np.asarray(inter_weight, np.float64)
    inter = (iu, ii, ts, wt)
    n_users = rec.n_users_
    parts, label_parts, n_eligible, n_held = [], [], 0, 0
    keep = np.ones(len(iu), bool)
    info = {"holdout": [], "users": []}
    for split in range(int(cfg.label_splits)):
        # split s holds out each user's latest holdout_fraction of what the earlier splits kept
        hold = np.zeros(len(iu), bool)
        where = np.flatnonzero(keep)
        hold[where[holdout_mask(iu[where], ts[where], cfg.holdout_fraction)]] = True
        keep = keep & ~hold
        if not hold.any() or not keep.any():
            break
        inner, gen = _inner_stage1(rec, generator, keep, inter, inter_vectors,
                                   item_from_interactions, half_life_days, device)
        truth, users = _label_users(inter, hold, inner, n_users, rec.n_items_)
        n_eligible += len(users)
        n_held += int(hold.sum())
        if len(users) > cfg.max_train_users:
            rng = np.random.default_rng(cfg.random_state + split)
            users = np.sort(rng.choice(users, size=cfg.max_train_users, replace=False))
        info["holdout"].append(hold)
        info["users"].append(users)
        if not len(users):
            continue
        cand = gen.generate(users)
        owner = np.repeat(cand.user_rows, np.diff(cand.indptr))
        label_parts.append(np.isin(owner * np.int64(rec.n_items_) + cand.items,
                                   truth).astype(np.float32))
        count, last = user_activity(iu[keep], ts[keep], n_users)
        r = cand.user_rows
        parts.append(ranking_features(cand, inner.popularity_,
                                      segment_weights=inner.user_segment_weights_[r],
                                      count=count[r], last_ts=last[r],
                                      t_ref=inner.behaviour_time_,
                                      item_first_ts=gen.item_first_ts_))
    labels = np.concatenate(label_parts) if label_parts else np.zeros(0, np.float32)
    if not labels.any():
        logger.warning("ranker: no user has a held-out item among its candidates (%d users "
                       "with held-out items); no ranker trained", n_eligible)
        return None, info
    X = Candidates.concatenate(parts)
    ranker = Ranker(cfg).fit(X, labels)
    ranker.training_.update({"eligible_users": int(n_eligible), "splits": len(parts),
                             "held_out_interactions": int(n_held)})
    logger.info("ranker: trained on %s", ranker.training_)
    return ranker, info


def _inner_stage1(rec, generator, keep, inter, inter_vectors, item_from_interactions,
                  half_life_days, device):
    """Stage 1 (recommender and candidate generator) rebuilt on the kept interactions."""
    from .candidates import CandidateGenerator
    from .recommend import subset_recommender

    iu, ii, ts, wt = inter
    n_items = rec.n_items_
    gcfg = generator.config
    inner, _ = subset_recommender(
        rec.config, keep, user_vectors=rec.user_vectors_, item_vectors=rec.item_vectors_,
        inter_user=iu, inter_item=ii, inter_ts=ts, inter_weight=wt,
        inter_vectors=inter_vectors, item_from_interactions=item_from_interactions,
        user_segment_weights=rec.user_segment_weights_,
        popularity_half_life_days=rec.popularity_half_life_days_,
        seed_half_life_days=rec.seed_half_life_days_, half_life_days=float(half_life_days))
    inner.weights_ = np.asarray(rec.weights_, np.float64).copy()
    inner.selection_ = None
    scfg = gcfg
    if generator.ease_lambda_ is not None:
        # the fitted multiple of the mean item degree, applied to the inner matrix
        scale = generator.ease_lambda_ / max(1.0, len(rec.seen_indices_) / max(n_items, 1))
        scfg = dataclasses.replace(
            gcfg, ease_lambda=scale * max(1.0, len(inner.seen_indices_) / max(n_items, 1)))
    gen = CandidateGenerator(scfg).fit(
        inner, inter_user=iu[keep], inter_item=ii[keep], inter_ts=ts[keep],
        inter_weight=wt[keep], half_life_days=float(half_life_days),
        device=generator.device_ if device is None else device,
        # the same item vectors (no item rebuilt from interactions): the same index
        index=(generator.index_ if inner.item_vectors_ is rec.item_vectors_
               and device is None else None))
    return inner, gen


def _label_users(inter, hold, inner, n_users, n_items):
    """Held-out (user, item) keys not seen before, and the users (with history) holding one."""
    iu, ii = inter[0], inter[1]
    n = np.int64(n_items)
    # users with a held-out item they had not interacted with before
    truth = np.unique(iu[hold] * n + ii[hold])
    seen = np.repeat(np.arange(n_users), np.diff(inner.seen_indptr_)) * n + \
        inner.seen_indices_
    truth = truth[~np.isin(truth, seen)]
    users = np.unique(truth // n)
    users = users[np.diff(inner.seen_indptr_)[users] > 0]
    return truth, users
