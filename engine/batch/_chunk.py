"""Scoring one chunk (a bucket of staged users): the job's resources, loaded once per
process, then events -> user vectors -> segments -> top-k items -> two part files.

:func:`score_chunk` is the task Dask workers run (pickled by reference, so it stays at this
path; ``interestflow.batch.score_chunk`` is the same function).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import unit_rows
from ._common import GATHER_ROWS, REASON_ZERO_WEIGHT, is_int_index, py_scalar, staging_dir
from ._model import job_encoder, load_index, load_two_stage, read_model


@dataclass(frozen=True)
class Job:
    """What a chunk process needs (small, sent to Dask workers): paths and parameters."""

    out: str
    model_dir: str
    save_id: str
    k: int
    n_buckets: int
    reference_time: float
    has_text: bool
    has_vector: bool
    has_weight: bool
    has_item: bool
    user_kind: str
    index_id: str
    two_stage: bool = False
    behaviour_time: float | None = None
    embedding_cache: str | bool | None = None  # a path, None (model's or job's), False (none)


#: The resources of this process's current job (one job at a time), by job key.
RESOURCES: dict = {}
#: How many times this process loaded a job's resources (tests check: once per process).
LOADS = {"count": 0}


def load_resources(job: Job) -> dict:
    """Model state, catalogue, index and (lazily) encoder, loaded once per process."""
    key = (job.out, job.model_dir, job.save_id, job.index_id)
    res = RESOURCES.get(key)
    if res is None:
        model = read_model(job.model_dir, verify_hashes=False)  # the driver hashed it
        if model["save_id"] != job.save_id:
            raise ValueError(f"the model in {job.model_dir} was saved again while scoring "
                             f"(save id {model['save_id']} != {job.save_id}); restart the job "
                             "with a new out")
        st = staging_dir(Path(job.out))
        index = load_index(st / "index")
        cat = {"ids": index.item_ids_, "vectors": index.vectors_}  # unit rows
        res = {"model": model, "catalogue": cat, "index": index,
               "encoder": None, "generator": None, "ranker": None}
        if job.two_stage:
            res["generator"], res["ranker"] = load_two_stage(job.model_dir, cat["ids"])
        RESOURCES.clear()  # one job per process at a time: drop an earlier job's arrays
        RESOURCES[key] = res
        LOADS["count"] += 1
    return res


def _part_name(b: int) -> str:
    """File name of chunk ``b``'s part in ``users/`` and ``recommendations/``."""
    return f"part-{b:05d}.parquet"


def score_chunk(job: Job, b: int) -> dict:
    """Score bucket ``b`` of a staged job and write its two part files atomically.

    Idempotent: running it again (after a crash, or twice at once on two workers) writes the
    same files. Returns the chunk's counts and stage timings.
    """
    t_all = time.perf_counter()
    tm = {}
    t = time.perf_counter()
    res = load_resources(job)
    tm["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    table = _read_bucket(Path(job.out), b)
    tm["read_s"] = time.perf_counter() - t
    n_rows = 0 if table is None else table.num_rows
    stats = {"bucket": b, "events": n_rows, "users": 0, "recommendations": 0,
             "rejected": {}, "pid": os.getpid()}
    if n_rows:
        scored = _score_events(res, job, table, stats, tm)
    else:
        scored = _no_users(res, job)
    t = time.perf_counter()
    n_recs = _write_parts(Path(job.out), b, job, res, scored)
    tm["write_s"] = time.perf_counter() - t
    stats["users"] = int(len(scored["vectors"]))
    stats["recommendations"] = n_recs
    tm["chunk_s"] = time.perf_counter() - t_all
    stats["timings_s"] = tm
    stats["resource_loads"] = LOADS["count"]
    return stats


def _read_bucket(out: Path, b: int):
    """The staged events of bucket ``b`` as one table sorted by (user, input row), or None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = staging_dir(out) / f"b{b:05d}"
    files = sorted(folder.glob("f*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    table = pa.concat_tables([pq.read_table(f) for f in files])
    # deterministic order whatever the spill order: by user, then input row
    return table.sort_by([("user_id", "ascending"), ("row", "ascending")])


def _score_events(res: dict, job: Job, table, stats: dict, tm: dict) -> dict:
    """A bucket's events -> its users' ids, unit vectors, segments, soft segment features
    and top-k (scores, catalogue rows); ``stats`` and the timings ``tm`` are filled in."""
    from ..segments import soft_features

    ev = _group_users(table, job)
    t = time.perf_counter()
    src = _event_sources(res, job, table, stats)
    tm["encode_s"] = time.perf_counter() - t
    t = time.perf_counter()
    users = _user_vectors(res, job, ev, src, stats)
    tm["user_vectors_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model = res["model"]
    U, centroids = users["vectors"], model["centroids"]
    sims = U @ centroids.T
    users["segment"] = np.argmax(sims, axis=1).astype(np.int64) if len(centroids) else \
        np.zeros(len(U), np.int64)
    users["soft"] = soft_features(U, centroids, model["temperature"])
    tm["segments_s"] = time.perf_counter() - t
    t = time.perf_counter()
    users["scores"], users["rows"] = _top_items(res, job, users, ev)
    tm["two_stage_s" if job.two_stage else "retrieval_s"] = time.perf_counter() - t
    return users


def _group_users(table, job: Job) -> dict:
    """The bucket's events (sorted by user) as arrays: ``offsets`` (n_users + 1) of each
    user's events, ``user_ids``, ``ts``, weights ``w`` (1 without a weight column) and the
    catalogue row ``item_row`` of each event's item (-1: none)."""
    n_rows = table.num_rows
    uid = table.column("user_id").to_numpy()
    if uid.dtype == object:
        change = np.flatnonzero(uid[1:] != uid[:-1]) + 1
    else:
        change = np.flatnonzero(np.diff(uid) != 0) + 1
    offsets = np.concatenate([[0], change, [n_rows]]).astype(np.int64)
    return {"offsets": offsets, "user_ids": uid[offsets[:-1]],
            "ts": table.column("ts").to_numpy(),
            "w": table.column("weight").to_numpy() if job.has_weight else np.ones(n_rows),
            "item_row": table.column("item_row").to_numpy() if job.has_item else
            np.full(n_rows, -1, np.int64)}


def _event_sources(res: dict, job: Job, table, stats: dict) -> dict:
    """Where each event's vector comes from: its vector > its text > its item. Masks
    ``vec``, ``text``, ``item``; the vector column's rows (``vectors``, indexed by
    ``vec_pos``); the encoded distinct texts (``text_vectors``, indexed by ``text_pos``;
    ``stats["texts"]`` counts them)."""
    import pyarrow as pa

    n_rows = table.num_rows
    src = {"vec": np.zeros(n_rows, bool), "vec_pos": None, "vectors": None,
           "text": np.zeros(n_rows, bool), "text_pos": None, "text_vectors": None}
    if job.has_vector:
        vcol = table.column("vector").combine_chunks()
        src["vec"] = ~vcol.is_null().to_numpy(zero_copy_only=False)
        src["vec_pos"] = np.cumsum(src["vec"]) - 1
        src["vectors"] = vcol.filter(pa.array(src["vec"])).flatten().to_numpy().reshape(
            -1, res["model"]["dim"])
    if job.has_text:
        tcol = table.column("text")
        src["text"] = ~tcol.is_null().to_numpy(zero_copy_only=False) & ~src["vec"]
        codes, uniques = pd.factorize(pd.Series(tcol.filter(pa.array(src["text"])).to_numpy(
            zero_copy_only=False), dtype=object), sort=False)
        src["text_pos"] = np.full(n_rows, -1, np.int64)
        src["text_pos"][src["text"]] = codes
        src["text_vectors"] = (_encode_texts(res, job, list(uniques), stats) if len(uniques)
                               else np.zeros((0, res["model"]["dim"]), np.float32))
    src["item"] = ~src["vec"] & ~src["text"]
    return src


def _encode_texts(res: dict, job: Job, texts: list, stats: dict) -> np.ndarray:
    """The chunk's distinct texts encoded by the job's encoder (built on first use), and
    ``stats["texts"]``: how many, how many were encoded (not in the store), which store."""
    if res["encoder"] is None:
        res["encoder"] = job_encoder(res["model"], job)
    enc = res["encoder"]
    vectors = np.asarray(enc.encode(texts, show_progress=False), np.float32)
    cache = getattr(enc, "cache", None)
    stats["texts"] = {
        "distinct": len(texts),
        "encoded": int(enc.cache_encoded_ if cache is not None else len(texts)),
        "store": ("none" if cache is None else "job" if Path(cache) ==
                  staging_dir(Path(job.out)) / "embeddings.sqlite" else "persistent")}
    return vectors


def _user_vectors(res: dict, job: Job, ev: dict, src: dict, stats: dict) -> dict:
    """Unit time-decayed mean vectors of the users with a positive total weight: their
    ``user_ids``, ``vectors``, event ``counts`` and the mask ``keep_row`` of their events.
    Users whose every event has weight 0 carry no interest signal: they are left out and
    counted in ``stats``."""
    offsets = ev["offsets"]
    means, log2w = _decayed_means(res, job, ev, src)
    alive = np.isfinite(log2w)
    if not alive.all():  # only zero-weight events: no interest signal, reported
        dead_rows = int(np.diff(offsets)[~alive].sum())
        stats["rejected"][REASON_ZERO_WEIGHT] = dead_rows
        stats["zero_weight_users"] = int((~alive).sum())
        stats["zero_weight_examples"] = [py_scalar(x) for x in ev["user_ids"][~alive][:5]]
    return {"user_ids": ev["user_ids"][alive], "vectors": unit_rows(means[alive]),
            "counts": np.diff(offsets)[alive], "keep_row": np.repeat(alive, np.diff(offsets))}


def _decayed_means(res: dict, job: Job, ev: dict, src: dict):
    """(means (n_users, dim) float32, log2 of total decayed weights) of every user, by
    :func:`~interestflow.interests.decayed_user_means` (the model's half-life) over blocks
    of at most ``GATHER_ROWS`` gathered event vectors (or one user, however many)."""
    from ..interests import decayed_user_means

    model, offsets = res["model"], ev["offsets"]
    n_users = len(offsets) - 1
    means = np.empty((n_users, model["dim"]), np.float32)
    log2w = np.empty(n_users)
    gather = np.empty((min(int(offsets[-1]), max(GATHER_ROWS, int(np.diff(offsets).max()))),
                       model["dim"]), np.float32)
    u0 = 0
    while u0 < n_users:
        # users [u0, u1) with at most GATHER_ROWS rows (or one user, however many)
        u1 = int(np.searchsorted(offsets, offsets[u0] + GATHER_ROWS, side="right")) - 1
        u1 = min(max(u1, u0 + 1), n_users)
        r0, r1 = int(offsets[u0]), int(offsets[u1])
        block = gather[: r1 - r0]
        _gather(block, slice(r0, r1), res["catalogue"]["vectors"], ev["item_row"], src, job)
        mu, lw = decayed_user_means(block, offsets[u0:u1 + 1] - r0, ev["ts"][r0:r1],
                                    ev["w"][r0:r1], half_life_days=model["half_life_days"],
                                    now=job.reference_time)
        means[u0:u1], log2w[u0:u1] = mu, lw
        u0 = u1
    return means, log2w


def _gather(block: np.ndarray, sl: slice, cat_vectors: np.ndarray, item_row: np.ndarray,
            src: dict, job: Job) -> None:
    """Fill ``block`` with the vectors of the events ``sl``, each from its source."""
    m = src["item"][sl]
    if m.all():  # one source (the usual case): a plain take, half the copies
        np.take(cat_vectors, item_row[sl], axis=0, out=block)
        return
    block[m] = cat_vectors[item_row[sl][m]]
    if job.has_vector:
        m = src["vec"][sl]
        block[m] = src["vectors"][src["vec_pos"][sl][m]]
    if job.has_text:
        m = src["text"][sl]
        block[m] = src["text_vectors"][src["text_pos"][sl][m]]


def _top_items(res: dict, job: Job, users: dict, ev: dict):
    """(scores, catalogue rows) (n_users, k) of each user's top-k items: the model's two
    stages when it has a ranker, else the nearest catalogue items by cosine, leaving out
    the items the user's events mention (rows -1 where fewer than k remain)."""
    cat = res["catalogue"]
    U = users["vectors"]
    keep_row = users["keep_row"]
    user_of_row = np.repeat(np.arange(len(U), dtype=np.int64), users["counts"])
    ir = ev["item_row"][keep_row]
    has = ir >= 0
    if job.two_stage:
        return _rank_two_stage(
            res, job, U, users["soft"], users["segment"], user_of_row[has], ir[has],
            ev["ts"][keep_row][has], ev["w"][keep_row][has], min(job.k, len(cat["ids"])))
    # exclude the catalogue items each user's events mention
    pairs = np.unique(user_of_row[has] * len(cat["ids"]) + ir[has])
    ex_user = pairs // len(cat["ids"])
    ex_item = pairs % len(cat["ids"])
    indptr = np.concatenate([[0], np.cumsum(np.bincount(ex_user, minlength=len(U)))])
    return res["index"].search(U, job.k, exclude=(indptr.astype(np.int64), ex_item))


def _rank_two_stage(res, job: Job, U, soft, segment, iu, ii, ts, w, k: int):
    """Candidates, then the ranker, for the users of one chunk
    (:func:`interestflow.ranker.rank_users`; recency relative to ``job.behaviour_time``, the
    job's latest event with a catalogue item, as ``fit``'s ``behaviour_time_``)."""
    from ..ranker import rank_users

    t_ref = job.behaviour_time if job.behaviour_time is not None else job.reference_time
    return rank_users(res["generator"], res["ranker"], U, soft, segment, iu, ii, ts, w, k,
                      t_ref=t_ref)


def _no_users(res: dict, job: Job) -> dict:
    """The empty result of a bucket without events."""
    dim = res["model"]["dim"]
    n_seg = len(res["model"]["centroids"])
    k_eff = min(job.k, len(res["catalogue"]["ids"]))
    return {"user_ids": np.zeros(0, np.int64 if job.user_kind == "int" else object),
            "vectors": np.zeros((0, dim), np.float32), "segment": np.zeros(0, np.int64),
            "soft": np.zeros((0, n_seg), np.float32),
            "scores": np.zeros((0, k_eff), np.float32), "rows": np.zeros((0, k_eff), np.int64)}


def _write_parts(out: Path, b: int, job: Job, res: dict, scored: dict) -> int:
    """Write ``users/part-b`` (id, vector, segment, soft features) and
    ``recommendations/part-b`` (id, item, score, rank) atomically; returns the number of
    recommendations."""
    import pyarrow as pa

    from ..io import write_parquet

    U, user_ids, rows, soft = scored["vectors"], scored["user_ids"], scored["rows"], \
        scored["soft"]
    dim = res["model"]["dim"]
    item_ids = res["catalogue"]["ids"]
    id_type = pa.string() if job.user_kind == "str" else pa.int64()
    users = {"user_id": pa.array(user_ids, id_type),
             "vector": pa.ListArray.from_arrays(
                 pa.array(np.arange(0, (len(U) + 1) * dim, dim, dtype=np.int32)),
                 pa.array(U.ravel(), pa.float32())),
             "segment": pa.array(scored["segment"], pa.int64())}
    for j in range(len(res["model"]["centroids"])):
        users[f"segment_{j}"] = pa.array(soft[:, j], pa.float32())
    valid = rows >= 0
    n_per = valid.sum(axis=1)
    recs = pa.table({
        "user_id": pa.array(np.repeat(user_ids, n_per), id_type),
        "item_id": pa.array(item_ids.to_numpy()[rows[valid]],
                            pa.int64() if is_int_index(item_ids) else pa.string()),
        "score": pa.array(scored["scores"][valid].astype(np.float32), pa.float32()),
        "rank": pa.array(np.cumsum(valid, axis=1)[valid].astype(np.int64), pa.int64()),
    })
    write_parquet(pa.table(users), out / "users" / _part_name(b))
    write_parquet(recs, out / "recommendations" / _part_name(b))
    return int(recs.num_rows)
