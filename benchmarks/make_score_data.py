"""Synthetic data for the batch-scoring benchmark (benchmarks/score.py).

Writes into ``--out``:

``items.parquet``
    ``n_items`` items (default 100,000): ``item_id`` ("i0000001"...), ``topic`` and ``vector``
    (list<float32>, ``dim`` = 384): a unit vector near its topic's centre (``--topics`` random
    unit centres; cosine to the centre about 0.7, to an item of another topic about 0).
``events/part-NNN.parquet``
    ``users x events_per_user`` events (default 1,000,000 x 20) in files of about 1,000,000
    rows, ordered by time (so every user's events are spread over the files, as in a log):
    ``user_id`` ("u0000001"...), ``ts`` (timestamp[s, UTC]), ``item_id``. No text and no
    vector: each event takes its item's vector at scoring time.
    Each user has a main topic (70% of events), a second topic (20%) and noise (10%); the item
    within a topic follows a skewed popularity (``u ** 3`` of a uniform ``u``). Users are
    generated in blocks of 100,000 with their own seeds, so the first 100,000 users of the
    1,000,000-user data set are exactly the 100,000-user data set.
``model/``
    A fitted :class:`interestflow.InterestEngine`, built from the item vectors: the engine is
    fitted on the first ``--model-users`` users' events (default 5,000) and on the items, with
    an encoder that maps the text ``"item:<item_id>"`` of an event or item to that item's given
    vector (:class:`ItemVectorEncoder`). So its item vectors are the given vectors, its user
    vectors are decayed means of them, its segments K-means of those (``--segments``, default
    32), and its recommender is content-only. Scoring then needs no text encoder.
``model_ranked/``
    The same engine with the two-stage recommender (``ranker="lightgbm"``: candidate
    generator with every source at its default settings -- EASE is off above
    ``ease_max_items`` = 20,000 items -- and a LightGBM ranker trained on the inner temporal
    split), fitted on the first ``--ranked-model-users`` users' events (default 5,000; 0
    skips it). ``interestflow score`` with it runs candidates + ranker per user.
``data.json``
    The parameters.

Usage::

    python benchmarks/make_score_data.py --users 1000000 --out /tmp/ifscore/u1000000
    python benchmarks/make_score_data.py --users 100000 --out /tmp/ifscore/u100000
    # add model_ranked/ to a data set generated before it existed (events regenerated
    # from data.json's seed for the model users only)
    python benchmarks/make_score_data.py --models-only --out /tmp/ifscore/u100000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

BLOCK_USERS = 100_000
FILE_ROWS = 1_000_000
START = np.datetime64("2024-01-01T00:00:00", "s")


def item_ids(n: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    nums = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), 7, "0")
    return pc.binary_join_element_wise("i", nums, "")


def user_ids(idx: np.ndarray):
    import pyarrow as pa
    import pyarrow.compute as pc

    nums = pc.utf8_lpad(pc.cast(pa.array(idx + 1), pa.string()), 7, "0")
    return pc.binary_join_element_wise("u", nums, "")


def make_items(n_items: int, dim: int, n_topics: int, seed: int):
    """(vectors (n_items, dim) float32 unit rows, topic of each item)."""
    rng = np.random.default_rng([seed, 1])
    centres = rng.normal(size=(n_topics, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    topic = rng.integers(0, n_topics, size=n_items)
    vec = centres[topic] + rng.normal(size=(n_items, dim)).astype(np.float32) / np.sqrt(dim)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    return vec.astype(np.float32), topic


def make_block_events(block: int, n_users: int, events_per_user: int, topic_items: list,
                      n_topics: int, seed: int):
    """(user index, ts seconds, item row) of one block of users."""
    rng = np.random.default_rng([seed, 2, block])
    u0 = block * BLOCK_USERS
    main = rng.integers(0, n_topics, size=n_users)
    second = (main + rng.integers(1, n_topics, size=n_users)) % n_topics
    user = np.repeat(np.arange(u0, u0 + n_users), events_per_user)
    n = len(user)
    r = rng.random(n)
    topic = np.where(r < 0.7, np.repeat(main, events_per_user),
                     np.where(r < 0.9, np.repeat(second, events_per_user),
                              rng.integers(0, n_topics, size=n)))
    sizes = np.array([len(t) for t in topic_items])
    pos = (sizes[topic] * rng.random(n) ** 3).astype(np.int64)
    flat = np.concatenate(topic_items)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    item = flat[starts[topic] + pos]
    active_start = rng.uniform(0, 150, size=n_users) * 86400
    ts = np.repeat(active_start, events_per_user) + rng.uniform(0, 30 * 86400, size=n)
    return user, ts.astype(np.int64), item


class ItemVectorEncoder:
    """Encoder for fitting the engine on given item vectors: ``"item:<id>"`` -> that vector."""

    def __init__(self, ids, vectors):
        self.index = {str(i): r for r, i in enumerate(ids)}
        self.vectors = vectors
        self.dim = vectors.shape[1]

    def encode(self, texts, show_progress=None, **kwargs):
        rows = []
        for t in texts:
            if not t.startswith("item:") or t[5:] not in self.index:
                raise ValueError(f"ItemVectorEncoder encodes 'item:<item_id>' texts only, got "
                                 f"{t!r}")
            rows.append(self.index[t[5:]])
        return self.vectors[np.asarray(rows, np.int64)]


def fit_model(out: Path, ids, vectors, ev_user, ev_ts, ev_item, n_segments: int, seed: int,
              ranked: bool = False):
    import pandas as pd

    from interestflow import InterestEngine
    from interestflow.recommend import RecommendConfig

    ids = np.asarray(ids)
    events = pd.DataFrame({"user_id": [f"u{u + 1:07d}" for u in ev_user],
                           "text": [f"item:{ids[i]}" for i in ev_item],
                           "ts": pd.to_datetime(START + ev_ts.astype("timedelta64[s]"),
                                                utc=True),
                           "item_id": ids[ev_item]})
    items = pd.DataFrame({"item_id": ids, "text": [f"item:{i}" for i in ids]})
    if ranked:
        # stage 1 at its defaults (item-kNN with 100 neighbours); the fusion weights are not
        # selected (content only): recommend ranks through candidates + ranker either way
        eng = InterestEngine(encoder=ItemVectorEncoder(ids, vectors), n_segments=n_segments,
                             merge_threshold=None, random_state=seed, ranker="lightgbm",
                             recommend_config=RecommendConfig(weights={"content": 1.0}))
    else:
        eng = InterestEngine(encoder=ItemVectorEncoder(ids, vectors), n_segments=n_segments,
                             merge_threshold=None, random_state=seed, ranker=None,
                             recommend_config=RecommendConfig(weights={"content": 1.0},
                                                              knn_neighbors=10))
    eng.fit(events, items)
    if ranked and eng.ranker_ is None:
        raise RuntimeError("the ranker had nothing to learn from; pass more --ranked-model-users")
    eng.save(out)
    return eng


def model_users_events(a, topic_items: list, n_users: int):
    """(user, ts, item) of the first ``n_users`` users, as the full generation makes them."""
    users, tss, items = [], [], []
    for block in range((min(n_users, a.users) + BLOCK_USERS - 1) // BLOCK_USERS):
        n = min(BLOCK_USERS, a.users - block * BLOCK_USERS)  # the block as generated
        u, t, i = make_block_events(block, n, a.events_per_user, topic_items, a.topics, a.seed)
        users.append(u)
        tss.append(t)
        items.append(i)
    user, ts, item = np.concatenate(users), np.concatenate(tss), np.concatenate(items)
    sel = user < n_users
    return user[sel], ts[sel], item[sel]


def fit_models(a, out: Path, ids, vectors, topic_items, user=None, ts=None, item=None):
    """model/ and model_ranked/ (when missing), fitted on the first users' events."""
    t0 = time.perf_counter()
    for name, n_users, ranked in (("model", a.model_users, False),
                                  ("model_ranked", a.ranked_model_users, True)):
        if n_users <= 0 or (out / name / "meta.json").is_file():
            continue
        if user is None:
            u, t, i = model_users_events(a, topic_items, n_users)
        else:
            sel = user < n_users
            u, t, i = user[sel], ts[sel], item[sel]
        eng = fit_model(out / name, ids, vectors, u, t, i, a.segments, a.seed, ranked=ranked)
        extra = f", ranker {eng.ranker_.training_}" if ranked else ""
        print(f"{name}: fitted on {min(a.users, n_users)} users' {len(u)} events, "
              f"{time.perf_counter() - t0:.1f} s{extra}", flush=True)


def main(argv=None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--events-per-user", type=int, default=20)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--topics", type=int, default=64)
    p.add_argument("--segments", type=int, default=32, help="n_segments of the model")
    p.add_argument("--model-users", type=int, default=5000,
                   help="users whose events the model is fitted on")
    p.add_argument("--ranked-model-users", type=int, default=5000,
                   help="users whose events model_ranked/ is fitted on (0: no such model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models-only", action="store_true",
                   help="only fit the models missing from --out (parameters from its data.json)")
    a = p.parse_args(argv)
    if a.models_only:
        saved = json.loads((Path(a.out) / "data.json").read_text())
        for key in ("users", "events_per_user", "items", "dim", "topics", "segments",
                    "model_users", "seed"):
            setattr(a, key, saved[key])
    if a.users < 1 or a.items < 1 or a.events_per_user < 1:
        p.error("--users, --items and --events-per-user must be >= 1")
    out = Path(a.out)
    (out / "events").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    vectors, topic = make_items(a.items, a.dim, a.topics, a.seed)
    ids = item_ids(a.items)
    if a.models_only:
        topic_items = [np.flatnonzero(topic == t) for t in range(a.topics)]
        topic_items = [t if len(t) else np.array([0]) for t in topic_items]
        fit_models(a, out, ids.to_numpy(zero_copy_only=False), vectors, topic_items)
        saved.update(ranked_model_users=a.ranked_model_users)
        (out / "data.json").write_text(json.dumps(saved, indent=1))
        return 0
    flat = pa.array(vectors.ravel(), pa.float32())
    offsets = pa.array(np.arange(0, (a.items + 1) * a.dim, a.dim, dtype=np.int32))
    pq.write_table(pa.table({"item_id": ids, "topic": pa.array(topic, pa.int32()),
                             "vector": pa.ListArray.from_arrays(offsets, flat)}),
                   out / "items.parquet")
    topic_items = [np.flatnonzero(topic == t) for t in range(a.topics)]
    topic_items = [t if len(t) else np.array([0]) for t in topic_items]
    print(f"items: {a.items} x {a.dim} in {time.perf_counter() - t0:.1f} s", flush=True)

    users, tss, items = [], [], []
    for block in range((a.users + BLOCK_USERS - 1) // BLOCK_USERS):
        n = min(BLOCK_USERS, a.users - block * BLOCK_USERS)
        u, t, i = make_block_events(block, n, a.events_per_user, topic_items, a.topics, a.seed)
        users.append(u.astype(np.int32))
        tss.append(t)
        items.append(i.astype(np.int32))
    user, ts, item = np.concatenate(users), np.concatenate(tss), np.concatenate(items)
    del users, tss, items
    order = np.argsort(ts, kind="stable")  # a log: ordered by time, users interleaved
    n_files = max(1, round(len(order) / FILE_ROWS))
    for f, part in enumerate(np.array_split(order, n_files)):
        t = pa.table({"user_id": user_ids(user[part]),
                      "ts": pa.array((START + ts[part].astype("timedelta64[s]")),
                                     pa.timestamp("s", tz="UTC")),
                      "item_id": ids.take(pa.array(item[part]))})
        pq.write_table(t, out / "events" / f"part-{f:03d}.parquet")
    print(f"events: {len(order)} rows in {n_files} files, {time.perf_counter() - t0:.1f} s",
          flush=True)

    for name in ("model", "model_ranked"):  # a fresh data set gets fresh models
        shutil.rmtree(out / name, ignore_errors=True)
    fit_models(a, out, ids.to_numpy(zero_copy_only=False), vectors, topic_items, user, ts, item)
    (out / "data.json").write_text(json.dumps({**vars(a), "events": int(len(order)),
                                               "files": n_files}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
