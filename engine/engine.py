"""InterestEngine: events -> interest vectors -> segments -> recommendations."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from .validation import now_seconds
from ._utils import check_int, not_fitted, unit_rows
from .segments import (SegmentConfig, check_n_segments, fit_segments, one_hot,
                       soft_features)

logger = logging.getLogger(__name__)


def _factorize(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes and sorted unique values."""
    codes, uniques = pd.factorize(values, sort=True)  # validation guarantees one id type
    return codes.astype(np.int64), pd.Index(uniques)


def _check_some_weight(log2w: np.ndarray, user_codes: np.ndarray, user_ids: pd.Index):
    """Raise naming the first user all of whose events have weight 0 (``log2w`` -inf): such a
    user carries no interest signal."""
    empty = ~np.isfinite(log2w)
    if empty.any():
        code = int(np.argmax(empty))
        row = int(np.flatnonzero(user_codes == code)[0])
        raise ValueError(
            f"events column 'weight': {int(empty.sum())} user(s) have only zero-weight "
            f"events; first is user_id {user_ids[code]!r} at row {row}; such a user "
            "carries no interest signal: drop its events or give them weight > 0")


#: Default ``drift_threshold`` of :meth:`InterestEngine.partial_fit`: segments are refitted
#: when the mean user-to-centroid cosine distance has grown by more than this share.
DRIFT_THRESHOLD = 0.1
#: Valid ``ranker`` values besides None (see :mod:`interestflow.ranker`).
RANKERS = ("lightgbm",)


def _rows(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` with at least ``n`` rows (zero rows appended) and writeable, copied only if needed.

    partial_fit writes the rows it changes in place, so that one event costs the work of the
    rows it touches, not a copy of every user; arrays loaded from a file are read-only and
    are copied once.
    """
    a = np.asarray(a)
    if len(a) >= n and a.flags.writeable:
        return a
    out = np.zeros((n,) + a.shape[1:], a.dtype)
    out[:len(a)] = a
    return out


def _check_same_id_type(column: str, new: pd.Series, known: pd.Index, where: str = "events"):
    """partial_fit: new ids must have the type of the ids seen by fit (so that they match)."""
    if not len(new) or not len(known):
        return
    a, b = new.iloc[0], known[0]
    ints = (int, np.integer)
    if type(a) is not type(b) and not (isinstance(a, ints) and isinstance(b, ints)):
        raise ValueError(
            f"{where} column {column!r} holds {type(a).__name__} ids (row 0: {a!r}) but the "
            f"engine was fitted with {type(b).__name__} ids ({b!r}); cast them to the same type")


class _UserUpdate(NamedTuple):
    """partial_fit's user update, computed before the engine's state changes."""

    user_ids: pd.Index  # every user id, new ones appended
    codes: np.ndarray  # event row -> user row
    n_old: int  # number of users before the update
    aff: np.ndarray  # affected user rows, sorted
    log2w: np.ndarray  # every user's log2 weight sum, decayed to the new reference time
    old_log2w: np.ndarray  # the affected users' stored log2 weight sums, decayed
    new_log2w: np.ndarray  # the affected users' log2 weight sums of the new events
    top: np.ndarray  # max(old_log2w, new_log2w): the scale of the merged weights
    new_mean: np.ndarray  # the affected users' decayed means of the new events


def _stable_segment_ids(match: dict, k_new: int):
    """Ids ``0..k_new-1`` of refitted segments from ``match`` (new -> old id): a matched
    segment keeps its old id when it is below ``k_new``; the others (matched ones first, then
    the unmatched) take the free ids in order. Returns ``(ids, moved, fresh)``."""
    ids = np.full(k_new, -1, np.int64)
    for j, i in match.items():
        if i < k_new:
            ids[j] = i
    free = [i for i in range(k_new) if i not in set(ids.tolist())]
    moved = [j for j in sorted(match) if ids[j] < 0]  # matched, old id >= K now
    fresh = [j for j in range(k_new) if j not in match]
    for j, i in zip(moved + fresh, free):
        ids[j] = i
    return ids, moved, fresh


# n_segments="auto" by usefulness: users sampled (seeded) for the inner split when more
_USE_SAMPLE = 20_000


class InterestEngine(BaseEstimator):
    """Users' texts to interest vectors, segments and recommendations.

    Parameters
    ----------
    encoder : interestflow.Encoder, optional
        Text encoder; the default all-MiniLM-L6-v2 encoder is created on first use.
    half_life_days : float, default 30.0
        Half-life of the exponential time decay applied to a user's events: an event this
        many days older than the reference time weighs half as much.
    n_segments : int or "auto", default "auto"
        Number of user segments (``segmenter="kmeans"``). ``"auto"`` picks K for what
        segments are for when the events name items: K in 2, 3, 4, 6, ..., 48, 64 by how
        well each user's segment's most popular items predict the user's next items on an
        inner temporal split of the training events (each user's latest 20% held out), the
        smallest K within one standard error of the best
        (:func:`interestflow.segments.choose_n_segments_by_use`); without items, by cosine
        silhouette on a sample. ``n_segments_rule_`` says which rule ran.
    segmenter : {"kmeans", "hdbscan"}, default "kmeans"
        ``"hdbscan"`` finds the number of segments from density and reports users in no
        dense region as segment ``-1`` (noise); see :class:`interestflow.segments.SegmentConfig`.
    merge_threshold : float or None, default 0.95
        Segments whose centroids have at least this cosine similarity are merged.
    multi_interest : bool, default False
        Also cluster each user's own events into several interests (Ward, cut at a distance
        threshold; see :func:`interestflow.multi_interest.user_interests`), each with a medoid
        vector and a time-decayed importance (:meth:`interests`); :meth:`recommend` then fills
        each user's list from every interest in proportion to its importance.
    segment_temperature : float, default 0.05
        Softmax temperature of the soft segment features (cosine to each centroid).
    recommend_config : interestflow.recommend.RecommendConfig, optional
        Blend settings of the recommender; defaults documented there.
    ranker : {"lightgbm", None}, default "lightgbm"
        ``"lightgbm"``: recommend with two stages, the candidates of every source
        (:mod:`interestflow.candidates`) ranked by one learned LightGBM lambdarank model
        (an average of :attr:`~interestflow.ranker.RankerConfig.n_models`) that :meth:`fit`
        trains on inner temporal splits of the training events (each user's latest 20% as
        labels; see :mod:`interestflow.ranker`). When there is nothing to learn from (no
        interactions with items, or no user has a held-out item among its candidates) a
        warning says so, ``ranker_`` is None and the fusion recommender serves. ``None``:
        the fusion recommender (:class:`interestflow.recommend.Recommender`) always; fit
        is faster (no ranker training). A :class:`~interestflow.ranker.RankerConfig` (or
        its ``to_dict()``): the LightGBM ranker with those settings (its own
        ``random_state``).
    random_state : int, default 0
        Seed for sampling and clustering (and the ranker's user sample and LightGBM seed).
    device : str, optional
        Device of the stages that run on one: the default encoder, segment clustering
        (K chosen, K-means) and :meth:`track`'s tracker (``None``: each picks a GPU when
        there is one, else the CPU). An ``encoder`` you pass keeps its own device; the
        recommender runs on the CPU (numpy / numba).
    show_progress : bool, optional
        Progress bars on long steps; ``None`` shows them on an interactive terminal.
    embedding_cache : str or os.PathLike, optional
        A persistent embedding store for the default encoder (``Encoder(cache=...)``): every
        text is looked up before it is encoded and written after; saved with the model, so
        ``interestflow score`` chunks of a saved model share it. A saved model whose store
        is gone still loads (an empty store is created on first use). With your own
        ``encoder``, pass ``Encoder(..., cache=PATH)`` instead. Off by default because only
        you know where such a file may live: a service may have no writable disk, a Dask job
        needs it on a file system every worker sees, and it grows with every text (up to its
        ``max_rows``). Without it, :meth:`fit` then :meth:`track` encode the same texts
        twice (:meth:`partial_fit` encodes only its new texts either way).

    Examples
    --------
    >>> engine = InterestEngine(n_segments=3).fit(events)            # doctest: +SKIP
    >>> engine.recommend(["u1", "u2"], k=5)                          # doctest: +SKIP
    """

    def __init__(self, *, encoder=None, half_life_days: float = 30.0, n_segments="auto",
                 segmenter: str = "kmeans", merge_threshold: float | None = 0.95,
                 multi_interest: bool = False, segment_temperature: float = 0.05, recommend_config=None,
                 ranker="lightgbm", random_state: int = 0, device=None,
                 show_progress=None, embedding_cache=None):
        self.encoder = encoder
        self.embedding_cache = embedding_cache
        self.half_life_days = half_life_days
        self.n_segments = n_segments
        self.segmenter = segmenter
        self.merge_threshold = merge_threshold
        self.multi_interest = multi_interest
        self.segment_temperature = segment_temperature
        self.recommend_config = recommend_config
        self.ranker = ranker
        self.random_state = random_state
        self.device = device
        self.show_progress = show_progress

    # ------------------------------------------------------------------ helpers
    def _check_params(self):
        hl = self.half_life_days
        if isinstance(hl, bool) or not isinstance(hl, (int, float, np.integer, np.floating)):
            raise TypeError(f"half_life_days must be a number, got {type(hl).__name__}")
        if not hl > 0:
            raise ValueError(f"half_life_days={hl} must be > 0 (use float('inf') for no decay)")
        t = self.segment_temperature
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)):
            raise TypeError(f"segment_temperature must be a number, got {type(t).__name__}")
        if not (np.isfinite(t) and t > 0):
            raise ValueError(f"segment_temperature={t!r} must be a finite number > 0")
        check_n_segments(self.n_segments)
        self._segment_config()  # validates segmenter and merge_threshold
        if not isinstance(self.multi_interest, (bool, np.bool_)):
            raise TypeError(f"multi_interest must be a bool, got {self.multi_interest!r}")
        self._ranker_config()  # raises on a bad value
        if self.segmenter == "hdbscan" and self.n_segments != "auto":
            raise ValueError(f"n_segments={self.n_segments!r} applies to segmenter='kmeans'; "
                             "segmenter='hdbscan' finds the number of segments itself: leave "
                             "n_segments='auto'")
        cache = self.embedding_cache
        if cache is not None and not isinstance(cache, (str, os.PathLike)):
            raise TypeError(f"embedding_cache must be None or a path, got {type(cache).__name__}")
        enc = self.encoder
        enc_cache = getattr(enc, "cache", None)
        if cache is not None and enc is not None and (
                not isinstance(enc_cache, (str, os.PathLike))
                or Path(enc_cache) != Path(cache).expanduser()):
            raise ValueError("embedding_cache is given with an encoder that does not use it; "
                             "pass encoder=Encoder(..., cache=PATH) (or leave encoder=None)")
        if enc is not None and (isinstance(enc, (str, bytes, Path))
                                or not callable(getattr(enc, "encode", None))):
            raise TypeError("encoder must be an interestflow.Encoder (an object with "
                            f"encode(texts)), got {type(enc).__name__}; for a model directory "
                            "pass encoder=Encoder(path)")

    def _segment_config(self) -> SegmentConfig:
        return SegmentConfig(n_segments=self.n_segments,
                             temperature=float(self.segment_temperature),
                             random_state=int(self.random_state), segmenter=self.segmenter,
                             merge_threshold=self.merge_threshold)

    def _get_encoder(self):
        if self.encoder is None:
            from .encoder import Encoder
            spec = getattr(self, "encoder_spec_", None)  # set by load(): rebuild the same encoder
            cache = self.embedding_cache
            if spec and not spec.get("is_default_model", True) and spec.get("model"):
                self.encoder = Encoder(spec["model"], max_length=spec["max_length"],
                                       pooling=spec["pooling"], cache=cache, device=self.device)
            else:
                self.encoder = Encoder(cache=cache, device=self.device)
        return self.encoder

    def _encode_unique(self, texts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Encode each distinct text once; returns (vectors of uniques, row -> unique code)."""
        codes, uniques = pd.factorize(texts, sort=False)
        vecs = self._get_encoder().encode(list(uniques), show_progress=self.show_progress)
        return vecs, codes

    # --------------------------------------------------------------------- fit
    def fit(self, events, items=None, *, now=None, ts_unit="s"):
        """Fit user vectors, item vectors, segments and the recommender.

        Parameters
        ----------
        events : pandas.DataFrame or pyarrow.Table
            Columns ``user_id``, ``text``, ``ts`` (datetime, ISO 8601 string or a unix time
            in ``ts_unit``, from 1990-01-01 to 2100-01-01 UTC) and optional ``item_id``,
            ``weight``; checked by :func:`~interestflow.validation.validate_events`.
        items : pandas.DataFrame or pyarrow.Table, optional
            Columns ``item_id``, ``text``. Items without a row here get the mean vector of
            the events that mention them.
        now : time, optional
            Reference time of the decay (a number is unix seconds); default the most recent
            event time.
        ts_unit : {"s", "ms", "us", "ns"}, default "s"
            Unit of numeric ``ts`` values.

        Returns
        -------
        self
        """
        self._check_params()
        t0 = time.perf_counter()
        ev, it, now_s = self._check_fit_events(events, items, now, ts_unit)
        timings = {}

        # one encoder pass over every distinct text (events and item descriptions)
        t = time.perf_counter()
        uvecs, codes = self._encode_events_items(ev, it)
        ev_vec_code = codes[: len(ev)]
        timings["encode_s"] = time.perf_counter() - t
        self.n_texts_encoded_ = len(uvecs)

        # users: time-decayed weighted mean of their event vectors
        t = time.perf_counter()
        user_codes, ts, w, n_interests = self._fit_users(ev, uvecs, ev_vec_code, now_s)
        if n_interests is not None:
            timings["interests_n"] = n_interests
        timings["user_vectors_s"] = time.perf_counter() - t

        # items: description vector when given, else the mean of the events that mention it
        t = time.perf_counter()
        self._fit_items(ev, it, uvecs, codes)
        timings["item_vectors_s"] = time.perf_counter() - t

        t = time.perf_counter()
        self._fit_user_segments(ev, uvecs, ev_vec_code, user_codes, ts, w)
        timings["segments_s"] = time.perf_counter() - t

        # recommender: content + behaviour blend
        t = time.perf_counter()
        sel = self._fit_recommender(ev, uvecs, ev_vec_code, user_codes, ts, w)
        timings["recommender_s"] = time.perf_counter() - t
        self._failed_update = None  # every piece of state above is new
        t = time.perf_counter()
        self._fit_candidates()
        timings["candidates_s"] = time.perf_counter() - t
        t = time.perf_counter()
        self._fit_ranker(uvecs[ev_vec_code[sel]])
        timings["ranker_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        self.timings_ = timings
        self.n_events_ = len(ev)
        return self

    def _check_fit_events(self, events, items, now, ts_unit):
        """fit's input checks (before the costly encode): ``(events, items or None, now_s)``."""
        from .validation import validate_events, validate_items

        ev = validate_events(events, ts_unit=ts_unit)
        it = validate_items(items) if items is not None else None
        if len(ev) == 0:
            raise ValueError("events has no rows; pass at least one event")
        if it is not None and "item_id" in ev.columns and len(it):
            a, b = ev["item_id"].iloc[0], it["item_id"].iloc[0]
            if type(a) is not type(b) and not (isinstance(a, (int, np.integer))
                                               and isinstance(b, (int, np.integer))):
                raise ValueError(
                    f"events column 'item_id' holds {type(a).__name__} ids (row 0: {a!r}) but "
                    f"items column 'item_id' holds {type(b).__name__} ids (row 0: {b!r}); "
                    "cast both to the same type (e.g. str) so that they can match")
        check_n_segments(self.n_segments, ev["user_id"].nunique())  # before the costly encode
        now_s = now_seconds(now)
        if now_s is not None:
            late = ev["ts"].to_numpy() > now_s
            if late.any():
                i = int(np.argmax(late))
                raise ValueError(
                    f"events column 'ts': {int(late.sum())} event(s) after now={now!r}; first "
                    f"at row {i} (user_id {ev['user_id'].iloc[i]!r}, ts {ev['ts'].iloc[i]} s); "
                    "pass a now at or after the latest event")
        return ev, it, now_s

    def _encode_events_items(self, ev: pd.DataFrame, it):
        """Encode the distinct texts of events then items: ``(vectors, row -> vector code)``."""
        all_texts = ev["text"] if it is None else pd.concat([ev["text"], it["text"]],
                                                          ignore_index=True)
        return self._encode_unique(all_texts)

    def _fit_users(self, ev, uvecs, ev_vec_code, now_s):
        """User vectors (time-decayed weighted means) and their partial_fit statistics, and
        per-user interests when ``multi_interest``: ``(user_codes, ts, weights,
        n_interests or None)``."""
        from .interests import decayed_user_means

        user_codes, self.user_ids_ = _factorize(ev["user_id"])
        order = np.argsort(user_codes, kind="stable")
        counts = np.bincount(user_codes, minlength=len(self.user_ids_))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        ts = ev["ts"].to_numpy(np.float64)
        w = ev["weight"].to_numpy(np.float64)
        means, log2w = decayed_user_means(
            uvecs[ev_vec_code[order]], offsets, ts[order], w[order],
            half_life_days=float(self.half_life_days), now=now_s)
        _check_some_weight(log2w, user_codes, self.user_ids_)
        n_interests = None
        if self.multi_interest:
            n_interests = self._fit_interests(uvecs[ev_vec_code[order]], offsets, ts[order],
                                              w[order], now_s)
        self.user_vectors_ = unit_rows(means, precision="float32")
        self.user_mean_ = np.asarray(means, np.float32)  # sufficient statistic for partial_fit
        self.user_log2_weight_ = log2w
        self.reference_time_ = float(ts.max() if now_s is None else now_s)
        return user_codes, ts, w, n_interests

    def _fit_interests(self, sorted_vecs, offsets, ts, w, now_s) -> int:
        """Per-user interests (``multi_interest``) from the user-sorted events; returns their
        number."""
        from .multi_interest import user_interests

        ui = user_interests(sorted_vecs, offsets, ts, w,
                            half_life_days=float(self.half_life_days), now=now_s)
        self.interest_offsets_ = np.asarray(ui.offsets, np.int64)
        self.interest_vectors_ = np.ascontiguousarray(sorted_vecs[ui.medoid_rows],
                                                      dtype=np.float32)
        self.interest_importance_ = np.asarray(ui.importance, np.float64)
        self.interest_sizes_ = np.asarray(ui.sizes, np.int64)
        return int(len(ui.importance))

    def _fit_user_segments(self, ev, uvecs, ev_vec_code, user_codes, ts, w):
        """Segments of the user vectors (K by usefulness when it applies), their soft
        features, distance baseline and keywords."""
        cfg = self._segment_config()
        self.segment_use_by_k_ = {}
        self.n_segments_rule_ = ("fixed" if self.n_segments != "auto" else
                                 "hdbscan" if self.segmenter == "hdbscan" else "silhouette")
        if (self.segmenter == "kmeans" and self.n_segments == "auto"
                and "item_id" in ev.columns and ev["item_id"].notna().any()):
            k_use = self._choose_k_by_use(ev, uvecs, ev_vec_code, user_codes, ts, w, cfg)
            if k_use is not None:
                from dataclasses import replace as _replace
                cfg = _replace(cfg, n_segments=int(k_use))
                self.n_segments_rule_ = "use"
        labels, centroids, k, sil = fit_segments(self.user_vectors_, cfg, device=self.device)
        self.segments_ = labels
        self.segment_centroids_ = centroids
        self.n_segments_ = k
        self.silhouette_by_k_ = sil
        self.segment_soft_ = soft_features(self.user_vectors_, centroids, cfg.temperature)
        self._set_segment_distance(baseline=True)  # partial_fit's drift measure
        self.segment_keywords_ = self._keywords(ev, user_codes)

    def _fit_recommender(self, ev, uvecs, ev_vec_code, user_codes, ts, w) -> np.ndarray:
        """The fusion recommender and ``interactions_`` (events that name an item); returns
        those events' rows."""
        from .recommend import Recommender

        if "item_id" in ev.columns:
            sel = np.flatnonzero(ev["item_id"].notna().to_numpy())
            item_rows = self.item_ids_.get_indexer(ev["item_id"].iloc[sel]).astype(np.int64)
        else:
            sel, item_rows = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.recommender_ = Recommender(self.recommend_config).fit(
            user_vectors=self.user_vectors_, item_vectors=self.item_vectors_,
            inter_user=user_codes[sel], inter_item=item_rows, inter_ts=ts[sel],
            inter_weight=w[sel], user_segment=self.segments_, segment_soft=self.segment_soft_,
            half_life_days=float(self.half_life_days), inter_vectors=uvecs[ev_vec_code[sel]],
            item_from_interactions=(self.item_vector_source_ == "events"))
        self.interactions_ = {"user": user_codes[sel].astype(np.int64), "item": item_rows,
                              "ts": ts[sel], "weight": w[sel]}
        return sel

    def partial_fit(self, events, items=None, *, now=None, ts_unit="s", rechoose_k="auto",
                    drift_threshold: float = DRIFT_THRESHOLD):
        """Add new events to a fitted engine without re-encoding or refitting from scratch.

        Only the new texts are encoded. Each affected user's vector is updated from the
        stored sufficient statistics (decayed weighted mean and log2 weight sum at the
        reference time): moving the reference time scales every old weight by the same
        factor, so unaffected users' vectors do not change and affected ones equal a full
        refit's to float tolerance. Items mentioned by new events get updated (or new) vectors
        the same way; interactions are appended and the recommender's behaviour statistics are
        updated for the users and items they touch (:meth:`Recommender.update
        <interestflow.recommend.Recommender.update>`, equal to a rebuild), with the component
        weights chosen at :meth:`fit` (no re-selection).

        Segments (``segmenter="kmeans"``) keep K, their centroids, ids and keywords: only the
        affected users (and new users) are assigned to their most cosine-similar centroid,
        like ``KMeans.predict``; every other user keeps its segment and soft features exactly.
        Segments are refitted only when asked (``rechoose_k=True``) or when they no longer fit
        the users: the *segment drift* (:attr:`segment_drift_`), the relative growth of the
        mean cosine distance of users to their segment's centroid (``segment_distance_``, the
        K-means objective) since the segments were last fitted (``segment_distance_fit_``),
        exceeds ``drift_threshold``. A refit re-chooses K by silhouette (``n_segments="auto"``;
        when fit chose K by usefulness, which needs the events, silhouette may only raise
        it: users of a new interest arrived; a fixed ``n_segments`` is used as it is now),
        warm-starting K-means from the current
        centroids when K is unchanged, then maps the new segments to the old ids by optimal
        matching of centroids and members (:func:`interestflow.tracking.match_segments`, the
        tracker's matching): a matched segment keeps its id and keywords, a new segment gets a
        free id and no keywords (texts of earlier events are not stored). Ids stay
        ``0..K-1``: when K shrinks, a matched segment whose id is no longer below K takes the
        id of a vanished one (its keywords move with it). Every refit is logged with its
        reason. HDBSCAN segments are refitted on every call, with the same id matching.

        The two-stage recommender follows the new events without retraining: the candidate
        state is updated (popularity, segment popularity, trends, item-kNN seeds; EASE's
        matrix is kept, new items get no EASE scores) and the ranker's features are computed
        from it, while the ranker's model is the one :meth:`fit` trained. Recommendations
        therefore differ from a full refit's (which also retrains EASE and the ranker); call
        :meth:`fit` on all events to retrain them.

        Parameters
        ----------
        events : pandas.DataFrame or pyarrow.Table
            New events, same columns as for :meth:`fit`; users and items may be new.
        items : pandas.DataFrame or pyarrow.Table, optional
            New or updated item descriptions (``item_id``, ``text``).
        now : time, optional
            New reference time of the decay; default ``max(previous reference time, latest
            new event)``. Must not be earlier than the previous reference time.
        ts_unit : {"s", "ms", "us", "ns"}, default "s"
            Unit of numeric ``ts`` values (as for :meth:`fit`).
        rechoose_k : {"auto", True, False}, default "auto"
            ``"auto"``: refit segments (re-choosing K) only when the segment drift exceeds
            ``drift_threshold``. ``True``: refit now. ``False``: never (a drift above the
            threshold is logged as a warning).
        drift_threshold : float, default 0.1
            Largest relative growth of the mean user-to-centroid cosine distance tolerated
            without a refit (0.1: 10%). Measured: 25% more events of the same demo users
            -10%, 10% more Amazon reviews +0.4% (no refit); a demo topic's users joining the
            other three topics' +81%, the planted scenario's new segment +38% (refit).

        Returns
        -------
        self
        """
        self._check_partial_fit_args(rechoose_k, drift_threshold)
        t0 = time.perf_counter()
        timings = {}
        ev, it, ts, w, ref = self._check_partial_fit_events(events, items, now, ts_unit)

        t = time.perf_counter()
        uvecs, codes = self._encode_events_items(ev, it)
        ev_vec = uvecs[codes[:len(ev)]]
        timings["encode_s"] = time.perf_counter() - t

        # users: decay the stored statistics to the new reference, then add the new events;
        # only the affected rows are computed (new users are appended)
        t = time.perf_counter()
        upd = self._plan_user_update(ev, ev_vec, ts, w, ref)
        # checks done: from here on the engine's state changes, in place (copying every
        # array to roll back would cost what this update saves); a failure from here on
        # marks the engine unusable instead of leaving a silent mix of old and new state
        try:
            old_vectors = self._apply_user_update(upd, ref)
            timings["user_vectors_s"] = time.perf_counter() - t

            # items: new ids, new descriptions, and event-built vectors updated from their sums
            t = time.perf_counter()
            self._partial_items(ev, it, uvecs, codes, w)
            timings["item_vectors_s"] = time.perf_counter() - t

            # interactions, segments, recommender
            n_inter_old = self._append_interactions(ev, upd.codes, ts, w)
            t = time.perf_counter()
            refitted = self._update_segments(upd.aff, old_vectors, upd.n_old, rechoose_k,
                                             float(drift_threshold))
            timings["segments_s"] = time.perf_counter() - t
            t = time.perf_counter()
            self._update_recommender(refitted, n_inter_old, upd.aff)
            timings["recommender_s"] = time.perf_counter() - t
            t = time.perf_counter()
            self._update_candidates(refitted)
            self._user_activity = None  # the ranker's user features follow the new events
            timings["candidates_s"] = time.perf_counter() - t
            self.n_events_ += len(ev)
            self.segments_refitted_ = bool(refitted)
            timings["partial_fit_s"] = time.perf_counter() - t0
            self.timings_ = timings
            return self
        except BaseException as exc:
            self._failed_update = f"{type(exc).__name__}: {exc}"
            raise

    def _check_partial_fit_args(self, rechoose_k, drift_threshold):
        """partial_fit's checks of the engine's state and of its options."""
        self._check_fitted()
        if self.multi_interest:
            raise ValueError("partial_fit does not update per-user interests: Ward needs all "
                             "of a user's event vectors, which are not stored; call fit() on "
                             "all events for a multi_interest=True engine")
        if not hasattr(self, "user_mean_") or not hasattr(self, "interactions_"):
            raise ValueError("this engine has no incremental state (it was saved by an older "
                             "interestflow); call fit() on all events instead")
        if not (rechoose_k == "auto" or isinstance(rechoose_k, (bool, np.bool_))):
            raise ValueError(f"rechoose_k={rechoose_k!r} is not valid; pass 'auto', True or "
                             "False")
        dt = drift_threshold
        if isinstance(dt, bool) or not isinstance(dt, (int, float, np.integer, np.floating)) \
                or not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"drift_threshold={dt!r} is not valid; pass a finite number > 0 "
                             "(a relative growth: 0.1 = 10%)")

    def _check_partial_fit_events(self, events, items, now, ts_unit):
        """partial_fit's input checks: ``(events, items or None, ts, weights, new reference
        time)``."""
        from .validation import validate_events, validate_items

        ev = validate_events(events, ts_unit=ts_unit)
        it = validate_items(items) if items is not None else None
        if len(ev) == 0:
            raise ValueError("events has no rows; pass at least one new event")
        if getattr(self, "segment_distance_", None) is None:  # saved by an older version
            self._set_segment_distance(baseline=True)
        _check_same_id_type("user_id", ev["user_id"], self.user_ids_)
        if "item_id" in ev.columns:
            _check_same_id_type("item_id", ev["item_id"].dropna(), self.item_ids_)
        if it is not None:
            _check_same_id_type("item_id", it["item_id"], self.item_ids_, where="items")
        ts = ev["ts"].to_numpy(np.float64)
        w = ev["weight"].to_numpy(np.float64)
        ref_old = float(self.reference_time_)
        ref = max(ref_old, float(ts.max())) if now is None else now_seconds(now)
        if ref < ref_old:
            raise ValueError(f"now={now!r} is before the engine's reference time "
                             f"({ref_old} s); the decay reference can only move forward")
        late = ts > ref
        if late.any():
            i = int(np.argmax(late))
            raise ValueError(f"events column 'ts': {int(late.sum())} event(s) after now={now!r}; "
                             f"first at row {i}; pass a now at or after the latest event")
        return ev, it, ts, w, ref

    def _plan_user_update(self, ev, ev_vec, ts, w, ref) -> _UserUpdate:
        """partial_fit's user statistics (new users appended, stored ones decayed to ``ref``,
        the new events' decayed means), computed without changing the engine's state."""
        from .interests import SECONDS_PER_DAY, decayed_user_means

        hl = float(self.half_life_days)
        user_codes = self.user_ids_.get_indexer(ev["user_id"]).astype(np.int64)
        n_old = len(self.user_ids_)
        unknown = user_codes < 0
        new_users = pd.Index(pd.unique(ev["user_id"][unknown])).sort_values()
        user_ids = self.user_ids_.append(new_users) if len(new_users) else self.user_ids_
        user_codes[unknown] = new_users.get_indexer(ev["user_id"][unknown]) + n_old
        n_users = len(user_ids)
        ref_old = float(self.reference_time_)
        shift = 0.0 if np.isinf(hl) else (ref - ref_old) / (hl * SECONDS_PER_DAY)
        log2w = np.concatenate([np.asarray(self.user_log2_weight_, np.float64) - shift,
                                np.full(n_users - n_old, -np.inf)])
        aff, inv = np.unique(user_codes, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        offsets = np.concatenate([[0], np.cumsum(np.bincount(inv))]).astype(np.int64)
        m_new, l_new = decayed_user_means(ev_vec[order], offsets, ts[order], w[order],
                                          half_life_days=hl, now=ref)
        a, b = log2w[aff], np.asarray(l_new, np.float64)
        top = np.maximum(a, b)
        empty = ~np.isfinite(top)
        if empty.any():
            code = int(aff[np.argmax(empty)])
            row = int(np.flatnonzero(user_codes == code)[0])
            raise ValueError(
                f"events column 'weight': new user_id {user_ids[code]!r} (first at row "
                f"{row}) has only zero-weight events; give them weight > 0 or drop them")
        return _UserUpdate(user_ids, user_codes, n_old, aff, log2w, a, b, top, m_new)

    def _apply_user_update(self, upd: _UserUpdate, ref: float) -> np.ndarray:
        """Write partial_fit's user update into the engine (in place); returns the affected
        old users' previous vectors (for the drift bookkeeping)."""
        aff, n_old, log2w, top = upd.aff, upd.n_old, upd.log2w, upd.top
        n_users = len(upd.user_ids)
        self.user_ids_ = upd.user_ids
        wa, wb = np.exp2(upd.old_log2w - top), np.exp2(upd.new_log2w - top)
        self.user_mean_ = _rows(self.user_mean_, n_users)
        old_vectors = self.user_vectors_[aff[aff < n_old]].copy()  # for the drift bookkeeping
        mean = self.user_mean_[aff].astype(np.float64)
        mean = (mean * wa[:, None] + upd.new_mean.astype(np.float64) * wb[:, None]) \
            / (wa + wb)[:, None]
        log2w[aff] = top + np.log2(wa + wb)
        self.user_mean_[aff] = mean
        self.user_log2_weight_ = log2w
        self.user_vectors_ = _rows(self.user_vectors_, n_users)
        self.user_vectors_[aff] = unit_rows(self.user_mean_[aff], precision="float32")
        self.reference_time_ = ref
        return old_vectors

    def _append_interactions(self, ev, user_codes, ts, w) -> int:
        """Append the new events that name an item to ``interactions_``; returns the number
        there was before."""
        inter = self.interactions_
        n_inter_old = len(inter["user"])
        sel = np.flatnonzero(ev["item_id"].notna().to_numpy()) if "item_id" in ev.columns \
            else np.zeros(0, np.int64)
        item_rows = self.item_ids_.get_indexer(ev["item_id"].iloc[sel]).astype(np.int64) \
            if len(sel) else np.zeros(0, np.int64)
        self.interactions_ = {
            "user": np.concatenate([inter["user"], user_codes[sel]]),
            "item": np.concatenate([inter["item"], item_rows]),
            "ts": np.concatenate([inter["ts"], ts[sel]]),
            "weight": np.concatenate([inter["weight"], w[sel]]),
        }
        return n_inter_old

    def _update_recommender(self, segments_refitted: bool, n_inter_old: int, aff: np.ndarray):
        """After partial_fit: update the recommender's statistics for the touched users and
        items, or rebuild it with the same component weights (new segments, or a save
        without incremental state)."""
        rec = self.recommender_
        if not segments_refitted and rec.can_update():
            rec.update(user_vectors=self.user_vectors_, item_vectors=self.item_vectors_,
                       inter_user=self.interactions_["user"],
                       inter_item=self.interactions_["item"],
                       inter_ts=self.interactions_["ts"],
                       inter_weight=self.interactions_["weight"], n_previous=n_inter_old,
                       user_segment=self.segments_, segment_soft=self.segment_soft_,
                       changed_users=aff)
            return
        from dataclasses import replace

        from .recommend import COMPONENTS, Recommender

        weights = {c: float(x) for c, x in zip(COMPONENTS, rec.weights_)}
        new = Recommender(replace(rec.config, weights=weights)).fit(
            user_vectors=self.user_vectors_, item_vectors=self.item_vectors_,
            inter_user=self.interactions_["user"], inter_item=self.interactions_["item"],
            inter_ts=self.interactions_["ts"], inter_weight=self.interactions_["weight"],
            user_segment=self.segments_, segment_soft=self.segment_soft_,
            half_life_days=float(self.half_life_days),
            item_from_interactions=(self.item_vector_source_ == "events"))
        # weights stay as selected
        new.config, new.selection_ = rec.config, rec.selection_
        self.recommender_ = new

    def track(self, events, *, freq="30D", ts_unit="s", **tracker_params):
        """Segments over time windows: snapshots, stable ids, lifecycle events, paths.

        Encodes every distinct text once (with this engine's encoder) and runs a
        :class:`interestflow.tracking.SegmentTracker` with this engine's ``half_life_days``,
        ``n_segments`` and ``random_state`` unless given in ``tracker_params``. The engine's own
        fitted state is not changed (it need not be fitted).

        Parameters
        ----------
        events : pandas.DataFrame or pyarrow.Table
            Columns ``user_id``, ``text``, ``ts`` and optional ``weight`` (as for :meth:`fit`).
        freq : str, default "30D"
            Distance between snapshot ends (a pandas frequency).
        ts_unit : {"s", "ms", "us", "ns"}, default "s"
            Unit of numeric ``ts`` values (as for :meth:`fit`).
        **tracker_params
            Other :class:`~interestflow.tracking.SegmentTracker` parameters (``window``,
            thresholds, ...). With an ``item_id`` column the tracker's ``trends_`` lists the
            items rising inside segments (keywords always); ``lifecycle_`` holds the
            significant events, ``lifecycle_candidates_`` every candidate.

        Returns
        -------
        SegmentTracker
            Fitted; its tables (``snapshots_``, ``assignments_``, ``lifecycle_``,
            ``transitions_``, ``map_``) can be stored or written with ``to_run_dir``.
        """
        from .tracking import SegmentTracker
        from .validation import validate_events

        self._check_params()
        ev = validate_events(events, ts_unit=ts_unit)
        if len(ev) == 0:
            raise ValueError("events has no rows; pass at least one event")
        params = {"half_life_days": float(self.half_life_days), "n_segments": self.n_segments,
                  "random_state": int(self.random_state), "device": self.device}
        params.update(tracker_params)
        params["freq"] = freq
        tracker = SegmentTracker(**params)
        vecs, codes = self._encode_unique(ev["text"])
        tracker.fit(vecs[codes], ev["user_id"].to_numpy(), ev["ts"].to_numpy(np.float64),
                    weights=ev["weight"].to_numpy(np.float64), texts=ev["text"].tolist(),
                    item_ids=ev["item_id"].to_numpy(object) if "item_id" in ev.columns else None)
        return tracker

    def _partial_items(self, ev, it, uvecs, codes, w):
        """Item rows touched by partial_fit: new ids appended, touched rows recomputed."""
        ids = []
        if "item_id" in ev.columns:
            ids.append(ev["item_id"].dropna())
        if it is not None:
            ids.append(it["item_id"])
        if not ids:
            return
        cand = pd.Index(pd.unique(pd.concat(ids, ignore_index=True)))
        new_items = cand.difference(self.item_ids_)
        if len(new_items):
            self.item_ids_ = self.item_ids_.append(new_items)
        n_items = len(self.item_ids_)
        pad = n_items - len(self.item_vectors_)
        self.item_vectors_ = _rows(self.item_vectors_, n_items)
        self.item_event_sum_ = _rows(self.item_event_sum_, n_items)
        self.item_event_weight_ = _rows(np.asarray(self.item_event_weight_, np.float64), n_items)
        source = self.item_vector_source_
        if pad or source.dtype != np.dtype("U6") or not source.flags.writeable:
            source = np.concatenate([source, np.full(pad, "events")]).astype("U6")
        if it is not None:
            rows = self.item_ids_.get_indexer(it["item_id"])
            self.item_vectors_[rows] = unit_rows(uvecs[codes[len(ev):]],
                                                 precision="float32")
            source[rows] = "items"
        if "item_id" in ev.columns:
            has = ev["item_id"].notna().to_numpy()
            rows = self.item_ids_.get_indexer(ev["item_id"][has])
            urows, inv = np.unique(rows, return_inverse=True)
            sums = self.item_event_sum_[urows].astype(np.float64)
            np.add.at(sums, inv, uvecs[codes[:len(ev)][has]] * w[has][:, None])
            self.item_event_sum_[urows] = sums
            np.add.at(self.item_event_weight_, rows, w[has])
            wsum = self.item_event_weight_[urows]
            upd = (source[urows] == "events") & (wsum > 0)
            self.item_vectors_[urows[upd]] = unit_rows(sums[upd] / wsum[upd][:, None],
                                                       precision="float32")
        self.item_vector_source_ = source

    def _update_segments(self, aff, old_vectors, n_old, rechoose_k, drift_threshold) -> bool:
        """Segments after partial_fit (see there); returns whether they were refitted."""
        n_users = len(self.user_vectors_)
        self.segments_ = _rows(self.segments_, n_users)
        self.segment_soft_ = _rows(self.segment_soft_, n_users)
        if self.segmenter == "hdbscan":  # density has no cheap update: refit on every call
            self.segments_[n_old:] = -1  # new users count as noise until then
            self._refit_segments("segmenter='hdbscan' refits on every update")
            return True
        self._assign_affected(aff, old_vectors, n_old)
        reason = self._refit_reason(rechoose_k, drift_threshold)
        if reason is None:
            return False
        self._refit_segments(reason)
        return True

    def _assign_affected(self, aff, old_vectors, n_old):
        """Move the affected users to their most cosine-similar current centroid (the step
        :func:`interestflow.tracking.update_segments` starts with), update their soft
        features, and keep the objective's running sum (``segment_distance_``)."""
        from .tracking.update import assign_to_nearest

        U = self.user_vectors_
        cents = self.segment_centroids_
        old_lab = self.segments_[aff[aff < n_old]]
        n_in = int((self.segments_[:n_old] >= 0).sum())
        cos_sum = n_in * (1.0 - float(self.segment_distance_))
        cos_sum -= float(np.einsum("ij,ij->i", old_vectors.astype(np.float64),
                                   cents[old_lab].astype(np.float64)).sum())
        # a dense product on the host: one update touches few users
        lab = assign_to_nearest(self.segments_, U, cents, aff, backend=None)[aff]
        cos_sum += float(np.einsum("ij,ij->i", U[aff].astype(np.float64),
                                   cents[lab].astype(np.float64)).sum())
        self.segment_soft_[aff] = soft_features(U[aff], cents,
                                                self._segment_config().temperature)
        self.segment_distance_ = 1.0 - cos_sum / len(U)

    def _refit_reason(self, rechoose_k, drift_threshold) -> str | None:
        """Why partial_fit refits the segments now (logged with the refit), or None: not
        asked and no drift past ``drift_threshold`` (or ``rechoose_k=False``: a warning)."""
        drift = self.segment_drift_
        if rechoose_k is True:
            return "rechoose_k=True"
        if not drift > drift_threshold:  # (a NaN drift refits nothing)
            return None
        if rechoose_k == "auto":
            return (f"segment drift {drift:.3f} > drift_threshold={drift_threshold} "
                    f"(mean user-centroid cosine distance {self.segment_distance_fit_:.4f}"
                    f" -> {self.segment_distance_:.4f})")
        logger.warning("partial_fit: segment drift %.3f exceeds drift_threshold=%s "
                       "(rechoose_k=False: segments kept); refit with "
                       "partial_fit(..., rechoose_k=True) or fit()", drift, drift_threshold)
        return None

    def _refit_segments(self, reason: str):
        """Refit segments on all user vectors; new segments take the old ids they match."""
        from .tracking import match_segments

        cfg = self._segment_config()
        U = self.user_vectors_
        old_labels, old_cents = self.segments_, self.segment_centroids_
        k_old = len(old_cents)
        labels, cents = self._refit_labels(cfg, U, old_cents)
        # stable ids: optimal matching of the new segments to the old ones (same users)
        k_new = len(cents)
        match = match_segments(old_cents, cents, old_labels, labels)["match"]  # new -> old
        ids, moved, fresh = _stable_segment_ids(match, k_new)
        old_kw = self.segment_keywords_
        self.segment_keywords_ = {int(ids[j]): old_kw[i] for j, i in match.items()
                                  if i in old_kw}
        order = np.argsort(ids)
        self.segment_centroids_ = np.ascontiguousarray(cents[order])
        self.segments_ = np.where(labels >= 0, ids[np.maximum(labels, 0)], -1).astype(np.int64)
        self.n_segments_ = int(k_new)
        self.segment_soft_ = soft_features(U, self.segment_centroids_, cfg.temperature)
        self._set_segment_distance(baseline=True)
        logger.info("partial_fit: segments refitted (%s): K %d -> %d; %d segment(s) kept their "
                    "id and keywords%s, %d new (no keywords)", reason, k_old, k_new,
                    len(match) - len(moved),
                    f", {len(moved)} matched one moved to a free id" if moved else "",
                    len(fresh))

    def _refit_labels(self, cfg: SegmentConfig, U: np.ndarray, old_cents: np.ndarray):
        """The refit's ``(labels, centroids)``: K re-chosen as partial_fit documents, K-means
        warm-started from the current centroids when K is unchanged; HDBSCAN afresh."""
        from dataclasses import replace

        from .segments import choose_n_segments, merge_close_segments
        from .tracking.update import warm_lloyd

        k_old = len(old_cents)
        if self.segmenter != "kmeans":
            labels, cents, _, sil = fit_segments(U, cfg, device=self.device)
            if sil:
                self.silhouette_by_k_ = sil
            return labels, cents
        if self.n_segments == "auto" and getattr(self, "n_segments_rule_", "") == "use":
            # the usefulness rule needs the events (not kept): K may grow by silhouette
            # (users of a new interest arrived) but not fall below the chosen K
            k, self.silhouette_by_k_ = choose_n_segments(
                U, replace(cfg, k_min=max(int(cfg.k_min), k_old),
                           k_max=None if cfg.k_max is None else max(cfg.k_max, k_old)),
                device=self.device)
        elif self.n_segments == "auto":
            k, self.silhouette_by_k_ = choose_n_segments(U, cfg, device=self.device)
        else:
            k = int(self.n_segments)
        if k != k_old:
            labels, cents, _, _ = fit_segments(U, replace(cfg, n_segments=int(k)),
                                               device=self.device)
            return labels, cents
        # warm start: Lloyd from the current centroids (update_segments' last step)
        labels, cents = warm_lloyd(U, old_cents, random_state=int(self.random_state),
                                   device=self.device)
        if cfg.merge_threshold is not None and k > 1:
            labels, cents = merge_close_segments(U, labels, cents, float(cfg.merge_threshold))
        return labels, cents

    def _choose_k_by_use(self, ev, uvecs, ev_vec_code, user_codes, ts, w, cfg):
        """K for ``n_segments="auto"`` by usefulness (see
        :func:`interestflow.segments.choose_n_segments_by_use`): each user's latest 20% of
        the events with an item held out, user vectors from the rest; over a seeded sample
        of ``_USE_SAMPLE`` users when there are more. None when no user has a held-out item
        it had not seen before."""
        from .interests import decayed_user_means
        from .recommend import holdout_mask
        from .segments import choose_n_segments_by_use

        n_users = len(self.user_ids_)
        if n_users > _USE_SAMPLE:  # a seeded sample of users (and all their events)
            pick = np.random.default_rng(int(self.random_state)).choice(
                n_users, _USE_SAMPLE, replace=False)
            recode = np.full(n_users, -1, np.int64)
            recode[np.sort(pick)] = np.arange(_USE_SAMPLE)
            user_codes = recode[user_codes]
            n_users = _USE_SAMPLE
        has_item = ev["item_id"].notna().to_numpy() & (user_codes >= 0)
        sel = np.flatnonzero(has_item)
        items = pd.Index(ev["item_id"].iloc[sel].unique())
        irow = items.get_indexer(ev["item_id"].iloc[sel])
        hold = np.zeros(len(ev), bool)
        hold[sel[holdout_mask(user_codes[sel], ts[sel], 0.2)]] = True
        keep = ~hold & (user_codes >= 0)
        order = np.flatnonzero(keep)[np.argsort(user_codes[keep], kind="stable")]
        counts = np.bincount(user_codes[order], minlength=n_users)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        means, _ = decayed_user_means(uvecs[ev_vec_code[order]], offsets, ts[order], w[order],
                                      half_life_days=float(self.half_life_days))
        kept = keep[sel]
        n_items = len(items)
        seen = set((user_codes[sel][kept] * n_items + irow[kept]).tolist())
        tk = user_codes[sel][~kept] * n_items + irow[~kept]
        tk = np.unique(tk[~np.isin(tk, list(seen))])
        if not len(tk):
            return None
        k, self.segment_use_by_k_ = choose_n_segments_by_use(
            unit_rows(means, precision="float32"), user_codes[sel][kept], irow[kept],
            tk // n_items, tk % n_items, n_items, cfg, device=self.device)
        return k

    def _set_segment_distance(self, *, baseline: bool):
        """Mean cosine distance of users to their segment's centroid (noise left out)."""
        seg = np.asarray(self.segments_)
        ok = seg >= 0
        cos = np.einsum("ij,ij->i", self.user_vectors_[ok].astype(np.float64),
                        self.segment_centroids_[seg[ok]].astype(np.float64))
        self.segment_distance_ = float(1.0 - cos.mean()) if len(cos) else 0.0
        if baseline:
            self.segment_distance_fit_ = self.segment_distance_

    @property
    def segment_drift_(self) -> float:
        """Relative growth of ``segment_distance_`` since the segments were last fitted.

        ``(segment_distance_ - segment_distance_fit_) / max(segment_distance_fit_, 1e-3)``:
        the K-means objective (mean cosine distance of users to their segment centroid) as
        a share of its value after the last fit; :meth:`partial_fit` refits segments when it
        exceeds ``drift_threshold``.
        """
        self._check_fitted()
        if getattr(self, "segment_distance_", None) is None:
            self._set_segment_distance(baseline=True)
        base = float(self.segment_distance_fit_)
        return (float(self.segment_distance_) - base) / max(base, 1e-3)

    def _fit_items(self, ev: pd.DataFrame, it, uvecs: np.ndarray, codes: np.ndarray):
        from .interests import decayed_user_means

        ids = []
        if "item_id" in ev.columns:
            ids.append(ev["item_id"])
        if it is not None:
            ids.append(it["item_id"])
        if not ids:
            self.item_ids_ = pd.Index([])
            self.item_vectors_ = np.zeros((0, uvecs.shape[1]), np.float32)
            self.item_vector_source_ = np.zeros(0, dtype="U5")
            self.item_event_sum_ = np.zeros((0, uvecs.shape[1]), np.float32)
            self.item_event_weight_ = np.zeros(0, np.float64)
            return
        _, self.item_ids_ = _factorize(pd.concat(ids, ignore_index=True))
        n_items, dim = len(self.item_ids_), uvecs.shape[1]
        vecs = np.zeros((n_items, dim), np.float32)
        item_w = np.zeros(n_items, np.float64)
        have = np.zeros(n_items, bool)
        if it is not None:
            rows = self.item_ids_.get_indexer(it["item_id"])
            vecs[rows] = uvecs[codes[len(ev):]]
            have[rows] = True
        if "item_id" in ev.columns:
            ev_rows = self.item_ids_.get_indexer(ev["item_id"])
            need = ~have[ev_rows]
            if need.any():
                r = ev_rows[need]
                order = np.argsort(r, kind="stable")
                r_sorted = r[order]
                uniq, start = np.unique(r_sorted, return_index=True)
                offsets = np.append(start, len(r_sorted)).astype(np.int64)
                v = uvecs[codes[: len(ev)][need][order]]
                wts = ev["weight"].to_numpy(np.float64)[need][order]
                means, log2w = decayed_user_means(v, offsets, np.zeros(len(v)), wts,
                                                  half_life_days=float("inf"), now=0.0)
                vecs[uniq] = means
                item_w[uniq] = np.exp2(log2w)
        # an event-built item vector is a weighted mean: keep its sum for partial_fit
        self.item_event_sum_ = (vecs.astype(np.float64) * item_w[:, None]).astype(np.float32)
        self.item_event_weight_ = item_w
        self.item_vectors_ = unit_rows(vecs, precision="float32")
        self.item_vector_source_ = np.where(have, "items", "events")

    def _keywords(self, ev: pd.DataFrame, user_codes: np.ndarray, top_n: int = 8):
        from .labels import segment_keywords

        try:
            kw = segment_keywords(ev["text"].tolist(), self.segments_[user_codes], top_n=top_n)
        except ValueError as exc:  # e.g. a vocabulary that is empty after stop words
            logger.warning("segment keywords unavailable: %s", exc)
            return {}
        return {int(k): [(str(w), float(s)) for w, s in v] for k, v in kw.items()}

    # ----------------------------------------------------------------- outputs
    def _fit_candidates(self):
        """Candidate state (:mod:`interestflow.candidates`) from the fitted recommender."""
        from .candidates import CandidateGenerator

        old = getattr(self, "candidates_", None)
        self.candidates_ = CandidateGenerator.from_engine(
            self, None if old is None else old.config)

    def _update_candidates(self, segments_refitted: bool):
        """After partial_fit: :meth:`CandidateGenerator.update` (trends recomputed, EASE kept;
        no O(n_items**3) refit per update); a save without candidate state, or new segments
        (the trend matrix is per segment), fits it afresh."""
        gen = getattr(self, "candidates_", None)
        if gen is None or segments_refitted:
            self._fit_candidates()
            return
        inter = self.interactions_
        gen.update(self.recommender_, inter_user=inter["user"], inter_item=inter["item"],
                   inter_ts=inter["ts"], inter_weight=inter["weight"])
        gen.user_ids_, gen.item_ids_ = self.user_ids_, self.item_ids_

    def _ranker_config(self):
        """The :class:`~interestflow.ranker.RankerConfig` of ``ranker`` (None: no ranker)."""
        from collections.abc import Mapping

        r = self.ranker
        if r is None:
            return None
        from .ranker import RankerConfig

        if isinstance(r, str) and r in RANKERS:
            return RankerConfig(random_state=int(self.random_state))
        if isinstance(r, RankerConfig):
            return r
        if isinstance(r, Mapping):
            return RankerConfig.from_dict(r)
        raise ValueError(f"ranker={r!r} is invalid; pass one of {[None] + list(RANKERS)}, "
                         "a RankerConfig or its to_dict()")

    def _fit_ranker(self, inter_vectors: np.ndarray):
        """Train the ranker (``ranker="lightgbm"``) on an inner temporal split of the
        interactions; ``ranker_`` is None when it is off or had nothing to learn from."""
        self.ranker_ = None
        self._user_activity = None
        config = self._ranker_config()
        if config is None:
            return
        from .ranker import train_ranker

        inter = self.interactions_
        if len(inter["user"]) == 0 or len(self.item_ids_) == 0:
            logger.warning("ranker: no interactions with items; recommending with the fusion "
                           "recommender")
            return
        self.ranker_, _ = train_ranker(
            self.recommender_, self.candidates_, inter_user=inter["user"],
            inter_item=inter["item"], inter_ts=inter["ts"], inter_weight=inter["weight"],
            inter_vectors=inter_vectors,
            item_from_interactions=(self.item_vector_source_ == "events"),
            half_life_days=float(self.half_life_days),
            config=config)

    def _recommend_ranked(self, rows: np.ndarray, k: int, exclude_seen: bool):
        """Candidates, then the ranker: ``(scores, item_rows)``, each (m, k), -inf / -1
        padded where a user has fewer than ``k`` candidates."""
        import dataclasses

        from .ranker import ranking_features, user_activity

        gen = self.candidates_
        if not exclude_seen and gen.config.exclude_seen:
            import copy

            gen = copy.copy(gen)  # shares the fitted state; only the config differs
            gen.config = dataclasses.replace(gen.config, exclude_seen=False)
        rec = self.recommender_
        act = getattr(self, "_user_activity", None)
        if act is None or len(act[0]) != rec.n_users_:
            inter = self.interactions_
            act = user_activity(inter["user"], inter["ts"], rec.n_users_)
            self._user_activity = act
        X = ranking_features(gen.generate(rows), rec.popularity_,
                             segment_weights=rec.user_segment_weights_[rows],
                             count=act[0][rows], last_ts=act[1][rows], t_ref=rec.behaviour_time_,
                             item_first_ts=gen.item_first_ts_)
        return self.ranker_.topk(X, k)

    def _check_fitted(self):
        if not hasattr(self, "user_vectors_"):
            raise not_fitted("this InterestEngine is not fitted yet; call fit(events) first")
        failed = getattr(self, "_failed_update", None)
        if failed:
            raise RuntimeError(
                f"this InterestEngine is unusable: a partial_fit failed part-way ({failed}) "
                "and left its state half-updated; load the last saved engine or call "
                "fit() on all events")

    def user_rows(self, user_ids) -> np.ndarray:
        """Row of each user id; raises ValueError naming the first unknown id and position."""
        self._check_fitted()
        if isinstance(user_ids, (str, bytes)) or np.isscalar(user_ids):
            user_ids = [user_ids]
        ids = pd.Index(list(user_ids))
        rows = self.user_ids_.get_indexer(ids)
        bad = np.flatnonzero(rows < 0)
        if len(bad):
            raise ValueError(
                f"user_ids: {len(bad)} unknown user id(s); first is {ids[bad[0]]!r} at position "
                f"{int(bad[0])}; recommend only for users seen in fit")
        return rows.astype(np.int64)

    def user_features(self) -> pd.DataFrame:
        """Per-user segment features for a downstream ranker.

        Columns ``user_id``, ``segment`` (``-1``: noise under ``segmenter="hdbscan"``),
        ``segment_0..K-1`` (soft, rows sum to 1; noise users too).
        """
        self._check_fitted()
        df = pd.DataFrame(self.segment_soft_,
                          columns=[f"segment_{j}" for j in range(self.n_segments_)])
        df.insert(0, "segment", self.segments_)
        df.insert(0, "user_id", self.user_ids_)
        return df

    @property
    def segment_onehot_(self) -> np.ndarray:
        """One-hot segment features, shape (n_users, n_segments)."""
        self._check_fitted()
        return one_hot(self.segments_, self.n_segments_)

    def segment_summary(self) -> pd.DataFrame:
        """One row per segment: ``segment``, ``size``, ``keywords``.

        Noise users (``segmenter="hdbscan"``) are counted in a last row with segment ``-1``.
        """
        self._check_fitted()
        seg = np.asarray(self.segments_)
        ids = list(range(self.n_segments_)) + ([-1] if (seg == -1).any() else [])
        return pd.DataFrame({
            "segment": np.asarray(ids, np.int64),
            "size": np.asarray([int((seg == s).sum()) for s in ids], np.int64),
            "keywords": [", ".join(w for w, _ in self.segment_keywords_.get(s, []))
                         for s in ids],
        })

    def recommend(self, user_ids, k: int = 10, *, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` items per user.

        Returns
        -------
        pandas.DataFrame
            Columns ``user_id, item_id, score, rank`` (rank 1 is best); ``k`` rows per user,
            fewer only when fewer unseen items exist. With ``ranker="lightgbm"`` the items
            are the user's candidates (at most the sum of the source cuts, 450 by default)
            ordered by the ranker's score (ties to the lower item row), so fewer than ``k``
            rows come back only when the user has fewer candidates; ``exclude_seen=False``
            then adds the user's seen items to the candidates.
        """
        self._check_fitted()
        k = check_int("k", k, 1)
        rows = self.user_rows(user_ids)
        if len(self.item_ids_) == 0:
            raise ValueError("no items to recommend: fit with an item_id column in events or "
                             "an items table")
        # no user can get more than n_items rows: do not allocate (m, k) for a huge k
        k_eff = min(int(k), len(self.item_ids_))
        if getattr(self, "ranker_", None) is not None and self.candidates_ is not None:
            scores, item_rows = self._recommend_ranked(rows, k_eff, bool(exclude_seen))
        elif self.multi_interest and hasattr(self, "interest_offsets_"):
            scores, item_rows = self._recommend_interests(rows, k_eff, bool(exclude_seen))
        else:
            scores, item_rows = self.recommender_.topk(rows, k_eff, exclude_seen=exclude_seen)
        valid = item_rows >= 0
        n_per = valid.sum(axis=1)
        return pd.DataFrame({
            "user_id": np.repeat(self.user_ids_.to_numpy()[rows], n_per),
            "item_id": self.item_ids_.to_numpy()[item_rows[valid]],
            "score": scores[valid].astype(np.float32),
            "rank": (np.cumsum(valid, axis=1)[valid]).astype(np.int64),
        })

    def recommend_from_events(self, events, k: int = 10, *, ts_unit="s") -> pd.DataFrame:
        """Top-``k`` items for users given by their events, not by the fitted state: new
        users (cold start), or known users seen through other events. Nothing is fitted or
        stored; the engine is unchanged.

        Each user's vector is the time-decayed weighted mean of its events' encoded texts
        (the engine's half-life; unit length), its soft segment features come from the
        fitted centroids, and the items of its events that are in the catalogue are its
        interactions (seen items, item-kNN and EASE seeds, activity). Then the same two
        stages as :meth:`recommend` (:func:`interestflow.ranker.rank_users`; recency
        relative to the later of the fitted latest interaction and these events' latest
        one). A user whose events carry texts only gets a cold-start list: content,
        popularity and segment candidates ranked by the same model. Items of the events
        that are not in the catalogue count only through their texts.

        Parameters
        ----------
        events : pandas.DataFrame or pyarrow.Table
            Columns ``user_id``, ``text``, ``ts`` and optional ``item_id``, ``weight``;
            checked like :meth:`fit`'s (a bad row raises naming the column and the row).
        k : int, default 10
        ts_unit : {"s", "ms", "us", "ns"}, default "s"

        Returns
        -------
        pandas.DataFrame
            Columns ``user_id, item_id, score, rank``, users sorted by id; the items of a
            user's own events are left out.
        """
        from .interests import decayed_user_means
        from .ranker import rank_users
        from .segments import soft_features
        from .validation import validate_events

        self._check_fitted()
        if getattr(self, "ranker_", None) is None or getattr(self, "candidates_", None) is None:
            raise ValueError("recommend_from_events needs the two-stage engine (ranker="
                             "'lightgbm' with a trained ranker_); this engine has none")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k={k!r} is invalid; pass an int >= 1")
        ev = validate_events(events, ts_unit=ts_unit)
        if len(ev) == 0:
            raise ValueError("events has no rows; pass at least one event")
        if "item_id" in ev.columns:
            _check_same_id_type("item_id", ev["item_id"], self.item_ids_)
        uvecs, codes = self._encode_unique(ev["text"])
        user_codes, user_ids = _factorize(ev["user_id"])
        order = np.argsort(user_codes, kind="stable")
        counts = np.bincount(user_codes, minlength=len(user_ids))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        ts = ev["ts"].to_numpy(np.float64)
        w = ev["weight"].to_numpy(np.float64)
        means, log2w = decayed_user_means(uvecs[codes[order]], offsets, ts[order], w[order],
                                          half_life_days=float(self.half_life_days), now=None)
        _check_some_weight(log2w, user_codes, user_ids)
        U = unit_rows(np.asarray(means, np.float32), precision="float32")
        cents = np.asarray(self.segment_centroids_, np.float32)
        soft = soft_features(U, cents, float(self.segment_temperature))
        seg = np.argmax(U @ cents.T, axis=1).astype(np.int64) if len(cents) else \
            np.zeros(len(U), np.int64)
        if "item_id" in ev.columns:
            irow = self.item_ids_.get_indexer(pd.Index(ev["item_id"]))
        else:
            irow = np.full(len(ev), -1, np.int64)
        has = irow >= 0
        rec = self.recommender_
        t_ref = float(rec.behaviour_time_)
        if has.any():
            t_ref = max(t_ref, float(ts[has].max()))
        k_eff = min(int(k), len(self.item_ids_))
        scores, items = rank_users(self.candidates_, self.ranker_, U, soft, seg,
                                   user_codes[has], irow[has], ts[has], w[has], k_eff,
                                   t_ref=t_ref)
        valid = items >= 0
        n_per = valid.sum(axis=1)
        return pd.DataFrame({
            "user_id": np.repeat(user_ids.to_numpy(), n_per),
            "item_id": self.item_ids_.to_numpy()[items[valid]],
            "score": scores[valid].astype(np.float32),
            "rank": (np.cumsum(valid, axis=1)[valid]).astype(np.int64),
        })

    def interests(self) -> pd.DataFrame:
        """Per-user interests (``multi_interest=True``): one row per interest.

        Columns ``user_id``, ``interest`` (0 = most important), ``importance`` (decayed
        weight sum of its events), ``size`` (events).
        """
        self._check_fitted()
        if not hasattr(self, "interest_offsets_"):
            raise ValueError("this engine was fitted with multi_interest=False; no interests")
        off = self.interest_offsets_
        counts = np.diff(off)
        return pd.DataFrame({
            "user_id": np.repeat(self.user_ids_.to_numpy(), counts),
            "interest": (np.arange(off[-1]) - np.repeat(off[:-1], counts)).astype(np.int64),
            "importance": self.interest_importance_,
            "size": self.interest_sizes_,
        })

    def _recommend_interests(self, rows: np.ndarray, k: int, exclude_seen: bool):
        """multi_interest_topk on the requested users' interests (see multi_interest)."""
        from .multi_interest import multi_interest_topk

        off = self.interest_offsets_
        counts = off[rows + 1] - off[rows]
        sub_off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        take = np.concatenate([np.arange(off[r], off[r + 1]) for r in rows]) if len(rows) \
            else np.zeros(0, np.int64)
        rec = self.recommender_
        if exclude_seen:
            ptr, idx = rec.seen_indptr_, rec.seen_indices_
            n_seen = ptr[rows + 1] - ptr[rows]
            ex_ptr = np.concatenate([[0], np.cumsum(n_seen)]).astype(np.int64)
            ex_idx = np.concatenate([idx[ptr[r]:ptr[r + 1]] for r in rows]).astype(np.int64) \
                if len(rows) else np.zeros(0, np.int64)
            exclude = (ex_ptr, ex_idx)
        else:
            exclude = None
        return multi_interest_topk(self.interest_vectors_[take],
                                   self.interest_importance_[take], sub_off, self.item_vectors_,
                                   k, exclude=exclude)

    # ------------------------------------------------------------- persistence
    def save(self, path) -> Path:
        """Save to a directory: ``arrays.safetensors``, ``ids_*.parquet``, ``meta.json`` (which
        records the SHA-256 of the other three). Files are written beside the target and
        moved in: an interrupted save leaves no half-written file, and :meth:`load` refuses
        a folder that mixes files of two saves."""
        from .persistence import save_engine
        self._check_fitted()
        return save_engine(self, Path(path))

    @classmethod
    def load(cls, path, *, encoder=None) -> "InterestEngine":
        """Load an engine saved by :meth:`save`; it recommends exactly what the saved one did.

        The folder is checked before anything is built from it: the saved parameters (as
        :meth:`fit` checks them), every array's shape against the id tables, unique non-null
        ids, and the SHA-256 of each data file recorded at save time.

        Raises
        ------
        interestflow.ModelLoadError
            (a ``ValueError``) A file is missing, unreadable, inconsistent with the others or
            changed since the save; the message starts with its path.
        """
        from .persistence import load_engine
        return load_engine(cls, Path(path), encoder=encoder)

    def get_params(self, deep: bool = True) -> dict:
        """Every constructor parameter, by name (scikit-learn's contract: ``clone``,
        ``set_params`` and ``repr`` work from it).

        ``ranker`` and ``recommend_config`` given as config objects come back as their plain
        dicts and ``embedding_cache`` as a str: the form :meth:`save` keeps, which the
        constructor takes back. ``deep`` is accepted for scikit-learn; no parameter is itself
        an estimator with parameters of its own.
        """
        params = super().get_params(deep=False)
        for name in ("ranker", "recommend_config"):
            value = params[name]
            if hasattr(value, "to_dict"):
                params[name] = value.to_dict()
        if params["embedding_cache"] is not None:
            params["embedding_cache"] = str(params["embedding_cache"])
        return params

    def _saved_params(self) -> dict:
        """The parameters a saved model keeps (JSON): not the encoder (saved as its spec),
        ``device`` or ``show_progress`` (the loading machine's), nor ``recommend_config``
        (saved with the fitted recommender)."""
        params = self.get_params()
        return {name: params[name] for name in (
            "half_life_days", "n_segments", "segmenter", "merge_threshold", "multi_interest",
            "segment_temperature", "ranker", "random_state", "embedding_cache")}

