"""InterestEngine: events -> interest vectors -> segments -> recommendations."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .interests import _to_seconds
from .segments import (SegmentConfig, _unit, check_n_segments, fit_segments, one_hot,
                       soft_features)

logger = logging.getLogger(__name__)


def _factorize(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes and sorted unique values."""
    codes, uniques = pd.factorize(values, sort=True)  # validation guarantees one id type
    return codes.astype(np.int64), pd.Index(uniques)


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


class InterestEngine:
    """Users' texts to interest vectors, segments and recommendations.

    Parameters
    ----------
    encoder : interestflow.Encoder, optional
        Text encoder; the default all-MiniLM-L6-v2 encoder is created on first use.
    half_life_days : float, default 30.0
        Half-life of the exponential time decay applied to a user's events: an event this
        many days older than the reference time weighs half as much.
    n_segments : int or "auto", default "auto"
        Number of user segments (``segmenter="kmeans"``); ``"auto"`` picks K by cosine
        silhouette on a sample.
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
    random_state : int, default 0
        Seed for sampling and clustering.
    device : str, optional
        Device for clustering (``None`` picks automatically).
    show_progress : bool, optional
        Progress bars on long steps; ``None`` shows them on an interactive terminal.

    Examples
    --------
    >>> engine = InterestEngine(n_segments=3).fit(events)            # doctest: +SKIP
    >>> engine.recommend(["u1", "u2"], k=5)                          # doctest: +SKIP
    """

    def __init__(self, *, encoder=None, half_life_days: float = 30.0, n_segments="auto",
                 segmenter: str = "kmeans", merge_threshold: float | None = 0.95,
                 multi_interest: bool = False, segment_temperature: float = 0.05, recommend_config=None,
                 random_state: int = 0, device=None, show_progress=None):
        self.encoder = encoder
        self.half_life_days = half_life_days
        self.n_segments = n_segments
        self.segmenter = segmenter
        self.merge_threshold = merge_threshold
        self.multi_interest = multi_interest
        self.segment_temperature = segment_temperature
        self.recommend_config = recommend_config
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
        if self.segmenter == "hdbscan" and self.n_segments != "auto":
            raise ValueError(f"n_segments={self.n_segments!r} applies to segmenter='kmeans'; "
                             "segmenter='hdbscan' finds the number of segments itself: leave "
                             "n_segments='auto'")
        enc = self.encoder
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
            if spec and not spec.get("is_default_model", True) and spec.get("model"):
                self.encoder = Encoder(spec["model"], max_length=spec["max_length"],
                                       pooling=spec["pooling"])
            else:
                self.encoder = Encoder()
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
        from .interests import decayed_user_means
        from .recommend import Recommender
        from .validation import validate_events, validate_items

        self._check_params()
        t0 = time.perf_counter()
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
        timings = {}
        if isinstance(now, str):
            try:
                now = pd.Timestamp(now)
            except ValueError as exc:
                raise ValueError(f"now={now!r} is not a parseable time") from exc
        now_s = None if now is None else _to_seconds(now, "now")
        if now_s is not None:
            late = ev["ts"].to_numpy() > now_s
            if late.any():
                i = int(np.argmax(late))
                raise ValueError(
                    f"events column 'ts': {int(late.sum())} event(s) after now={now!r}; first "
                    f"at row {i} (user_id {ev['user_id'].iloc[i]!r}, ts {ev['ts'].iloc[i]} s); "
                    "pass a now at or after the latest event")

        # one encoder pass over every distinct text (events and item descriptions)
        all_texts = ev["text"] if it is None else pd.concat([ev["text"], it["text"]],
                                                          ignore_index=True)
        t = time.perf_counter()
        uvecs, codes = self._encode_unique(all_texts)
        ev_vec_code = codes[: len(ev)]
        timings["encode_s"] = time.perf_counter() - t
        self.n_texts_encoded_ = len(uvecs)

        # users: time-decayed weighted mean of their event vectors
        t = time.perf_counter()
        user_codes, self.user_ids_ = _factorize(ev["user_id"])
        order = np.argsort(user_codes, kind="stable")
        counts = np.bincount(user_codes, minlength=len(self.user_ids_))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        ts = ev["ts"].to_numpy(np.float64)
        w = ev["weight"].to_numpy(np.float64)
        means, log2w = decayed_user_means(
            uvecs[ev_vec_code[order]], offsets, ts[order], w[order],
            half_life_days=float(self.half_life_days), now=now_s)
        empty = ~np.isfinite(log2w)  # every event of the user has weight 0
        if empty.any():
            code = int(np.argmax(empty))
            row = int(np.flatnonzero(user_codes == code)[0])
            raise ValueError(
                f"events column 'weight': {int(empty.sum())} user(s) have only zero-weight "
                f"events; first is user_id {self.user_ids_[code]!r} at row {row}; such a user "
                "carries no interest signal: drop its events or give them weight > 0")
        if self.multi_interest:
            from .multi_interest import user_interests

            sorted_vecs = uvecs[ev_vec_code[order]]
            ui = user_interests(sorted_vecs, offsets, ts[order], w[order],
                                half_life_days=float(self.half_life_days), now=now_s)
            self.interest_offsets_ = np.asarray(ui.offsets, np.int64)
            self.interest_vectors_ = np.ascontiguousarray(sorted_vecs[ui.medoid_rows],
                                                          dtype=np.float32)
            self.interest_importance_ = np.asarray(ui.importance, np.float64)
            self.interest_sizes_ = np.asarray(ui.sizes, np.int64)
            timings["interests_n"] = int(len(ui.importance))
        self.user_vectors_ = _unit(means)
        self.user_mean_ = np.asarray(means, np.float32)  # sufficient statistic for partial_fit
        self.user_log2_weight_ = log2w
        self.reference_time_ = float(ts.max() if now_s is None else now_s)
        timings["user_vectors_s"] = time.perf_counter() - t

        # items: description vector when given, else the mean of the events that mention it
        t = time.perf_counter()
        self._fit_items(ev, it, uvecs, codes)
        timings["item_vectors_s"] = time.perf_counter() - t

        # segments
        t = time.perf_counter()
        cfg = self._segment_config()
        labels, centroids, k, sil = fit_segments(self.user_vectors_, cfg, device=self.device)
        self.segments_ = labels
        self.segment_centroids_ = centroids
        self.n_segments_ = k
        self.silhouette_by_k_ = sil
        self.segment_soft_ = soft_features(self.user_vectors_, centroids, cfg.temperature)
        self.segment_keywords_ = self._keywords(ev, user_codes)
        timings["segments_s"] = time.perf_counter() - t

        # recommender: content + behaviour blend
        t = time.perf_counter()
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
        timings["recommender_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        self.timings_ = timings
        self.n_events_ = len(ev)
        return self

    def partial_fit(self, events, items=None, *, now=None, ts_unit="s"):
        """Add new events to a fitted engine without re-encoding or refitting from scratch.

        Only the new texts are encoded. Each affected user's vector is updated from the
        stored sufficient statistics (decayed weighted mean and log2 weight sum at the
        reference time): moving the reference time scales every old weight by the same
        factor, so unaffected users' vectors do not change and affected ones equal a full
        refit's to float tolerance. Items mentioned by new events get updated (or new) vectors
        the same way; interactions are appended and the recommender's behaviour statistics are
        rebuilt with the component weights chosen at :meth:`fit` (no re-selection).

        Segments are updated on the stored user vectors (no encoding): with
        ``n_segments="auto"`` K is re-chosen on a sample as in :meth:`fit`; when K is
        unchanged, K-means is warm-started from the current centroids so segment ids stay
        stable, otherwise segments are refitted (ids may change; logged). HDBSCAN segments
        are refitted. Keywords keep describing the segments as of the last :meth:`fit` when
        K is unchanged (texts are not stored) and are cleared when K changed.

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

        Returns
        -------
        self
        """
        from dataclasses import replace

        from .interests import SECONDS_PER_DAY, decayed_user_means
        from .recommend import COMPONENTS, Recommender
        from .validation import validate_events, validate_items

        self._check_fitted()
        if self.multi_interest:
            raise ValueError("partial_fit does not update per-user interests: Ward needs all "
                             "of a user's event vectors, which are not stored; call fit() on "
                             "all events for a multi_interest=True engine")
        if not hasattr(self, "user_mean_") or not hasattr(self, "interactions_"):
            raise ValueError("this engine has no incremental state (it was saved by an older "
                             "interestflow); call fit() on all events instead")
        t0 = time.perf_counter()
        ev = validate_events(events, ts_unit=ts_unit)
        it = validate_items(items) if items is not None else None
        if len(ev) == 0:
            raise ValueError("events has no rows; pass at least one new event")
        _check_same_id_type("user_id", ev["user_id"], self.user_ids_)
        if "item_id" in ev.columns:
            _check_same_id_type("item_id", ev["item_id"].dropna(), self.item_ids_)
        if it is not None:
            _check_same_id_type("item_id", it["item_id"], self.item_ids_, where="items")
        ts = ev["ts"].to_numpy(np.float64)
        w = ev["weight"].to_numpy(np.float64)
        ref_old = float(self.reference_time_)
        if isinstance(now, str):
            now = pd.Timestamp(now)
        ref = max(ref_old, float(ts.max())) if now is None else _to_seconds(now, "now")
        if ref < ref_old:
            raise ValueError(f"now={now!r} is before the engine's reference time "
                             f"({ref_old} s); the decay reference can only move forward")
        late = ts > ref
        if late.any():
            i = int(np.argmax(late))
            raise ValueError(f"events column 'ts': {int(late.sum())} event(s) after now={now!r}; "
                             f"first at row {i}; pass a now at or after the latest event")

        all_texts = ev["text"] if it is None else pd.concat([ev["text"], it["text"]],
                                                          ignore_index=True)
        uvecs, codes = self._encode_unique(all_texts)
        ev_vec = uvecs[codes[:len(ev)]]

        # users: decay the stored statistics to the new reference, then add the new events
        hl = float(self.half_life_days)
        new_users = pd.Index(pd.unique(ev["user_id"])).difference(self.user_ids_)
        self.user_ids_ = self.user_ids_.append(new_users)
        n_users, dim = len(self.user_ids_), self.user_mean_.shape[1]
        pad = n_users - len(self.user_mean_)
        mean = np.vstack([self.user_mean_, np.zeros((pad, dim), np.float32)]).astype(np.float64)
        shift = 0.0 if np.isinf(hl) else (ref - ref_old) / (hl * SECONDS_PER_DAY)
        log2w = np.concatenate([np.asarray(self.user_log2_weight_, np.float64) - shift,
                                np.full(pad, -np.inf)])
        user_codes = self.user_ids_.get_indexer(ev["user_id"]).astype(np.int64)
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
                f"events column 'weight': new user_id {self.user_ids_[code]!r} (first at row "
                f"{row}) has only zero-weight events; give them weight > 0 or drop them")
        wa, wb = np.exp2(a - top), np.exp2(b - top)
        mean[aff] = (mean[aff] * wa[:, None] + m_new.astype(np.float64) * wb[:, None]) \
            / (wa + wb)[:, None]
        log2w[aff] = top + np.log2(wa + wb)
        self.user_mean_ = mean.astype(np.float32)
        self.user_log2_weight_ = log2w
        self.user_vectors_ = _unit(self.user_mean_)
        self.reference_time_ = ref

        # items: new ids, new descriptions, and event-built vectors updated from their sums
        self._partial_items(ev, it, uvecs, codes, w)

        # interactions, segments, recommender
        inter = self.interactions_
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
        self._update_segments()
        old = self.recommender_
        weights = {c: float(x) for c, x in zip(COMPONENTS, old.weights_)}
        rec = Recommender(replace(old.config, weights=weights)).fit(
            user_vectors=self.user_vectors_, item_vectors=self.item_vectors_,
            inter_user=self.interactions_["user"], inter_item=self.interactions_["item"],
            inter_ts=self.interactions_["ts"], inter_weight=self.interactions_["weight"],
            user_segment=self.segments_, segment_soft=self.segment_soft_,
            half_life_days=hl, item_from_interactions=(self.item_vector_source_ == "events"))
        rec.config, rec.selection_ = old.config, old.selection_  # weights stay as selected
        self.recommender_ = rec
        self.n_events_ += len(ev)
        self.timings_ = {"partial_fit_s": time.perf_counter() - t0}
        return self

    def track(self, events, *, freq="30D", ts_unit="s", **tracker_params):
        """Segments over time windows: snapshots, stable ids, lifecycle events, paths.

        Encodes every distinct text once (with this engine's encoder) and runs a
        :class:`interestflow.dynamics.SegmentTracker` with this engine's ``half_life_days``,
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
            Other :class:`~interestflow.dynamics.SegmentTracker` parameters (``window``,
            thresholds, ...).

        Returns
        -------
        SegmentTracker
            Fitted; its tables (``snapshots_``, ``assignments_``, ``lifecycle_``,
            ``transitions_``, ``map_``) can be stored or written with ``to_run_dir``.
        """
        from .dynamics import SegmentTracker
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
                    weights=ev["weight"].to_numpy(np.float64), texts=ev["text"].tolist())
        return tracker

    def _partial_items(self, ev, it, uvecs, codes, w):
        ids = []
        if "item_id" in ev.columns:
            ids.append(ev["item_id"].dropna())
        if it is not None:
            ids.append(it["item_id"])
        if not ids:
            return
        cand = pd.Index(pd.unique(pd.concat(ids, ignore_index=True)))
        new_items = cand.difference(self.item_ids_)
        self.item_ids_ = self.item_ids_.append(new_items)
        n_items, dim = len(self.item_ids_), self.user_mean_.shape[1]
        pad = n_items - len(self.item_vectors_)
        vecs = np.vstack([self.item_vectors_, np.zeros((pad, dim), np.float32)])
        sums = np.vstack([self.item_event_sum_, np.zeros((pad, dim), np.float32)]).astype(
            np.float64)
        wsum = np.concatenate([self.item_event_weight_, np.zeros(pad)])
        source = np.concatenate([self.item_vector_source_, np.full(pad, "events")]).astype("U6")
        if it is not None:
            rows = self.item_ids_.get_indexer(it["item_id"])
            vecs[rows] = uvecs[codes[len(ev):]]
            source[rows] = "items"
        if "item_id" in ev.columns:
            has = ev["item_id"].notna().to_numpy()
            rows = self.item_ids_.get_indexer(ev["item_id"][has])
            np.add.at(sums, rows, uvecs[codes[:len(ev)][has]] * w[has][:, None])
            np.add.at(wsum, rows, w[has])
            upd = np.unique(rows[source[rows] == "events"])
            upd = upd[wsum[upd] > 0]
            vecs[upd] = (sums[upd] / wsum[upd][:, None]).astype(np.float32)
        self.item_event_sum_ = sums.astype(np.float32)
        self.item_event_weight_ = wsum
        self.item_vector_source_ = source
        self.item_vectors_ = _unit(vecs)

    def _update_segments(self):
        """Segments after partial_fit (see there): warm start when K is unchanged."""
        from .kmeans import KMeans
        from .segments import choose_n_segments, merge_close_segments

        cfg = self._segment_config()
        U = self.user_vectors_
        k_old = int(self.n_segments_)
        if self.segmenter == "kmeans":
            k = k_old if self.n_segments == "auto" else int(self.n_segments)
            if self.n_segments == "auto":
                k, self.silhouette_by_k_ = choose_n_segments(U, cfg, device=self.device)
        if self.segmenter == "kmeans" and k == k_old:
            km = KMeans(n_clusters=k, init=self.segment_centroids_, n_init=1,
                        random_state=int(self.random_state), device=self.device)
            labels = np.asarray(km.fit_predict(U)).astype(np.int64)
            centroids = _unit(np.asarray(km.cluster_centers_, np.float32))
            if cfg.merge_threshold is not None and k > 1:
                labels, centroids = merge_close_segments(U, labels, centroids,
                                                         float(cfg.merge_threshold))
        else:
            logger.info("partial_fit: segments refitted (segmenter=%r, K %d -> %s); segment "
                        "ids may change and keywords are cleared", self.segmenter, k_old,
                        k if self.segmenter == "kmeans" else "density")
            labels, centroids, _, sil = fit_segments(U, cfg, device=self.device)
            if sil:
                self.silhouette_by_k_ = sil
        if len(centroids) != k_old:
            self.segment_keywords_ = {}
        self.segments_ = labels
        self.segment_centroids_ = centroids
        self.n_segments_ = int(len(centroids))
        self.segment_soft_ = soft_features(U, centroids, cfg.temperature)

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
        self.item_vectors_ = _unit(vecs)
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
    def _check_fitted(self):
        if not hasattr(self, "user_vectors_"):
            raise RuntimeError("this InterestEngine is not fitted yet; call fit(events) first")

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
            fewer only when fewer unseen items exist.
        """
        self._check_fitted()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int, got {type(k).__name__}")
        if k < 1:
            raise ValueError(f"k={k} must be >= 1")
        rows = self.user_rows(user_ids)
        if len(self.item_ids_) == 0:
            raise ValueError("no items to recommend: fit with an item_id column in events or "
                             "an items table")
        # no user can get more than n_items rows: do not allocate (m, k) for a huge k
        k_eff = min(int(k), len(self.item_ids_))
        if self.multi_interest and hasattr(self, "interest_offsets_"):
            item_rows, scores = self._recommend_interests(rows, k_eff, bool(exclude_seen))
        else:
            item_rows, scores = self.recommender_.recommend(rows, k_eff,
                                                            exclude_seen=exclude_seen)
        valid = item_rows >= 0
        n_per = valid.sum(axis=1)
        return pd.DataFrame({
            "user_id": np.repeat(self.user_ids_.to_numpy()[rows], n_per),
            "item_id": self.item_ids_.to_numpy()[item_rows[valid]],
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
        """recommend_multi on the requested users' interests (see multi_interest)."""
        from .multi_interest import recommend_multi

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
        return recommend_multi(self.interest_vectors_[take], self.interest_importance_[take],
                               sub_off, self.item_vectors_, k, exclude=exclude)

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

    def get_params(self) -> dict:
        return {"half_life_days": self.half_life_days, "n_segments": self.n_segments,
                "segmenter": self.segmenter, "merge_threshold": self.merge_threshold,
                "multi_interest": self.multi_interest,
                "segment_temperature": self.segment_temperature,
                "random_state": self.random_state}

