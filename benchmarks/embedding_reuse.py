"""What the embedding store saves end to end (issue 15): texts encoded and time, with and
without the store, on real data.

Part 1 -- ``fit`` then ``track`` then ``partial_fit`` on the Amazon reviews (the earliest 80%
of the events fitted, the tracker run on all events with 365-day windows, then
the last 20% added by ``partial_fit``), once with ``InterestEngine()`` as is (no store) and
once with ``InterestEngine(embedding_cache=<fresh file>)``. Per call: the texts the call
looked up (its distinct texts), the texts the model encoded, and the call's wall time.

Part 2 -- ``interestflow.batch.score`` on the MovieLens ratings (every rating an event whose
text is the movie's "title. genres" plus its training-period tags, as in
``benchmarks/recsys_eval.py``: users share texts, as a catalogue's users do), with a
content-only model fitted on the first 100 users' events. Runs, one process, in this order:
one chunk without a store; ``--chunks`` chunks without a store (``embedding_cache=False``:
each chunk encodes its own texts, the behaviour before the store); the same chunks with the
job's own store (the default); with a fresh persistent store; again with that store, now warm
(a second run of the same job); and on a 2-worker Dask LocalCluster with the job's store.
Per run: users/s in the chunk phase and end to end, distinct texts looked up over the chunks,
texts encoded.

The texts encoded are counted by wrapping ``Encoder._encode_all`` (the one place the model
runs) in this process; the Dask run's count is the job summary's (each worker counts its own
misses).

Usage::

    python benchmarks/embedding_reuse.py --data ../shared/data [--chunks 9] [--part 1,2]
        [--runs 0,5] [--name embedding_reuse]

Writes ``benchmarks/results/embedding_reuse.json`` and ``.md`` (or ``NAME``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import write_results  # noqa: E402
from recsys_eval import load_amazon, load_movielens_ratings  # noqa: E402

COUNT = {"texts": 0, "s": 0.0}


def _count_encodes():
    """Wrap Encoder._encode_all: COUNT holds the texts the model encoded and its time."""
    from interestflow.encoder import Encoder

    real = Encoder._encode_all

    def counted(self, texts, *a, **k):
        t = time.perf_counter()
        try:
            return real(self, texts, *a, **k)
        finally:
            COUNT["texts"] += len(texts)
            COUNT["s"] += time.perf_counter() - t

    Encoder._encode_all = counted


def _call(name, fn, ev):
    COUNT.update(texts=0, s=0.0)
    t = time.perf_counter()
    out = fn()
    row = {"call": name, "events": len(ev), "distinct_texts": int(ev["text"].nunique()),
           "encoded": COUNT["texts"], "encode_s": round(COUNT["s"], 1),
           "wall_s": round(time.perf_counter() - t, 1)}
    print(f"  {name}: {row['distinct_texts']:,} distinct texts, {row['encoded']:,} encoded "
          f"({row['encode_s']} s), {row['wall_s']} s", flush=True)
    return out, row


def part1(data: Path, tmp: Path) -> list[dict]:
    from interestflow import InterestEngine

    events, _ = load_amazon(data)
    cut = events["ts"].quantile(0.8)
    early, late = events[events["ts"] <= cut], events[events["ts"] > cut]
    print(f"amazon: {len(events):,} events ({len(early):,} fitted, {len(late):,} added by "
          f"partial_fit), {events['text'].nunique():,} distinct texts", flush=True)
    rows = []
    for variant in ("no store", "store"):
        print(variant, flush=True)
        cache = tmp / "amazon_store.sqlite" if variant == "store" else None
        eng = InterestEngine(embedding_cache=cache, show_progress=False)
        _, r1 = _call("fit", lambda: eng.fit(early), early)
        tracker, r2 = _call("track", lambda: eng.track(events, freq="365D"), events)
        _, r3 = _call("partial_fit", lambda: eng.partial_fit(late), late)
        r2["lifecycle_events"] = len(tracker.lifecycle_)
        r3["segments"] = int(eng.n_segments_)
        rows += [{"variant": variant, **r} for r in (r1, r2, r3)]
    return rows


def part2(data: Path, tmp: Path, chunks: int, which=None) -> list[dict]:
    from interestflow import InterestEngine
    from interestflow.batch import score

    events, _ = load_movielens_ratings(data)
    users = np.sort(events["user_id"].unique())
    ev_path = tmp / "ml_events.parquet"
    events[["user_id", "item_id", "text", "ts"]].to_parquet(ev_path, index=False)
    sample = events[events["user_id"].isin(users[:100])]
    print(f"movielens: {len(events):,} events, {len(users):,} users, "
          f"{events['text'].nunique():,} distinct texts; model fitted on {len(sample):,} "
          "events of 100 users", flush=True)
    InterestEngine(ranker=None, show_progress=False).fit(sample).save(tmp / "model")
    per_chunk = -(-len(users) // chunks)
    store = tmp / "ml_store.sqlite"
    runs = [("1 chunk, no store", dict(chunk_users=len(users), embedding_cache=False)),
            (f"{chunks} chunks, no store", dict(chunk_users=per_chunk, embedding_cache=False)),
            (f"{chunks} chunks, job's store (default)", dict(chunk_users=per_chunk)),
            (f"{chunks} chunks, persistent store, cold",
             dict(chunk_users=per_chunk, embedding_cache=store)),
            (f"{chunks} chunks, persistent store, warm (second run)",
             dict(chunk_users=per_chunk, embedding_cache=store)),
            (f"{chunks} chunks, Dask local:2, job's store",
             dict(chunk_users=per_chunk, dask="local:2"))]
    rows = []
    for i, (name, kw) in enumerate(runs):
        if which is not None and i not in which:
            continue
        COUNT.update(texts=0, s=0.0)
        t = time.perf_counter()
        s = score(ev_path, tmp / "model", tmp / f"out{i}", k=10, show_progress=False, **kw)
        wall = time.perf_counter() - t
        texts = s["texts"]
        row = {"run": name, "users": s["users"], "chunks": s["chunks"]["total"],
               "users_per_s_chunks": s["users_per_s"],
               "users_per_s_end_to_end": round(s["users"] / wall, 1), "wall_s": round(wall, 1),
               "looked_up": texts["looked_up"], "encoded": texts["encoded"],
               "encoded_here": COUNT["texts"], "store": texts["store"],
               "encode_s_sum": s["timings_s"]["chunk_stages_sum_s"].get("encode_s")}
        print(f"  {name}: {row['users_per_s_chunks']} users/s (chunks), "
              f"{row['users_per_s_end_to_end']} end to end, {texts['looked_up']:,} looked up, "
              f"{texts['encoded']:,} encoded", flush=True)
        rows.append(row)
        shutil.rmtree(tmp / f"out{i}", ignore_errors=True)
    rows.append({"run": "distinct texts of the job", "looked_up": int(events["text"].nunique())})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--chunks", type=int, default=9)
    ap.add_argument("--part", default="1,2")
    ap.add_argument("--runs", default=None,
                    help="part 2's runs to do, by position (0-5, comma-separated; default all)")
    ap.add_argument("--name", default="embedding_reuse",
                    help="results file name (benchmarks/results/NAME.json and .md)")
    a = ap.parse_args(argv)
    if not (a.data / "amazon_musical_instruments_5core").is_dir():
        print(f"skipped: {a.data} does not hold the shared data sets (see its README)")
        return 0
    _count_encodes()
    parts = {p.strip() for p in a.part.split(",")}
    result, md = {}, []
    with tempfile.TemporaryDirectory(prefix="if-reuse-") as d:
        tmp = Path(d)
        if "1" in parts:
            rows = result["fit_track_partial_fit"] = part1(a.data, tmp)
            md += ["## fit, track, partial_fit on Amazon", "",
                   "| store | call | events | distinct texts | encoded | encode s | wall s |",
                   "|---|---|---:|---:|---:|---:|---:|"]
            md += [f"| {r['variant']} | {r['call']} | {r['events']:,} | "
                   f"{r['distinct_texts']:,} | {r['encoded']:,} | {r['encode_s']} | "
                   f"{r['wall_s']} |" for r in rows]
            tot = {v: (sum(r["encoded"] for r in rows if r["variant"] == v),
                       sum(r["wall_s"] for r in rows if r["variant"] == v))
                   for v in ("no store", "store")}
            md += ["", f"Whole sequence: {tot['no store'][0]:,} texts encoded in "
                   f"{tot['no store'][1]:.1f} s without the store, {tot['store'][0]:,} in "
                   f"{tot['store'][1]:.1f} s with it "
                   f"({tot['no store'][1] / tot['store'][1]:.2f}x).", ""]
        if "2" in parts:
            which = None if a.runs is None else {int(r) for r in a.runs.split(",")}
            rows = result["score_chunked"] = part2(a.data, tmp, a.chunks, which)
            md += ["## interestflow score on MovieLens ratings, chunks sharing texts", "",
                   "| run | chunks | users/s (chunks) | users/s (end to end) | texts looked up "
                   "| encoded |", "|---|---:|---:|---:|---:|---:|"]
            md += [f"| {r['run']} | {r['chunks']} | {r['users_per_s_chunks']} | "
                   f"{r['users_per_s_end_to_end']} | {r['looked_up']:,} | {r['encoded']:,} |"
                   for r in rows[:-1]]
            md += ["", f"The job's distinct texts: {rows[-1]['looked_up']:,}.", ""]
    jp, mp = write_results(a.name, result,
                           "What the embedding store saves end to end "
                           "(`python benchmarks/embedding_reuse.py --data ../shared/data`).\n\n"
                           + "\n".join(md))
    print(f"\nwrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
