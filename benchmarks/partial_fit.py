"""Cost of InterestEngine.partial_fit against a full refit, on the Amazon reviews.

Data: Amazon Musical Instruments 5-core reviews (``../shared/data``, loaded as in
``recsys_eval.py``: event text = summary + ". " + review text, item = the product), all
1,429 users (no subsampling). Events are sorted by time; the engine (defaults) is fitted on
the first 90% and the last 10% arrive as new events.

Timed in the same run, interleaved round by round (the order rotates every round), each on
a fresh copy of the fitted engine (the copy is not timed):

* ``one event``: ``partial_fit`` with the first new event (K kept unless the drift says so);
* ``10% of the events``: ``partial_fit`` with all new events in one call;
* ``full refit``: ``InterestEngine().fit`` on all events;
* the per-call work of the previous algorithm (silhouette K choice, K-means over all users,
  recommender rebuild), which ``partial_fit(..., rechoose_k=True)`` still does, for one
  event and for 10%.

Encoding is separated out: every distinct text is encoded once up front with the default
``Encoder`` (timed: the one new text, the new 10% and the fitted 90% separately), then all
timed paths use the same memo encoder (``recsys_eval.MemoEncoder``), so the figures compare
the update itself. Encoding a new text costs the same in every path and is reported beside.

Also from the same run: the K-means objective drift that decides re-choosing K, and the 10%
update's agreement with the full refit (user vectors, segments, recommendations).
Results: ``benchmarks/results/partial_fit_cpu.{json,md}``.

    python benchmarks/partial_fit.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import write_results  # noqa: E402
from recsys_eval import AMAZON, MemoEncoder, load_amazon  # noqa: E402

NEW_SHARE = 0.10


def _stats(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeat": len(times), "runs_s": times}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"),
                   help="folder holding amazon_musical_instruments_5core/ (default "
                        "../shared/data)")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per path (default 7)")
    p.add_argument("--no-write", action="store_true", help="print only, write no results")
    args = p.parse_args(argv)
    if not (args.data / AMAZON).is_file():
        print(f"skipped: {args.data / AMAZON} not found; pass --data <folder with the data>")
        return 0

    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    from interestflow import Encoder, InterestEngine

    events, _ = load_amazon(args.data)
    events = events.sort_values("ts", kind="stable").reset_index(drop=True)
    cut = int(round(len(events) * (1 - NEW_SHARE)))
    old, new = events.iloc[:cut], events.iloc[cut:]
    one = new.iloc[[0]]
    print(f"amazon: {len(events):,} events, {events['user_id'].nunique():,} users, "
          f"{events['item_id'].nunique():,} items; fit on {len(old):,} (to "
          f"{pd.to_datetime(old['ts'].iloc[-1], unit='s').date()}), {len(new):,} new",
          flush=True)

    # encoding, separated out: once per distinct text
    encoder = Encoder()
    encoder.encode(["warm-up text for the encoder"] * 8)
    enc_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        encoder.encode(one["text"].tolist())
        enc_times.append(time.perf_counter() - t0)
    t_old = list(dict.fromkeys(old["text"]))
    t_new = [t for t in dict.fromkeys(new["text"]) if t not in set(t_old)]
    t0 = time.perf_counter()
    v_old = encoder.encode(t_old)
    enc_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    v_new = encoder.encode(t_new)
    enc_new = time.perf_counter() - t0
    memo = MemoEncoder(encoder, t_old + t_new, np.vstack([v_old, v_new]))
    encode = {"one_text": _stats(enc_times), "new_10pct_s": enc_new, "new_10pct_texts": len(t_new),
              "fit_90pct_s": enc_old, "fit_90pct_texts": len(t_old)}
    print(f"encode: one text {statistics.median(enc_times) * 1e3:.1f} ms, {len(t_new):,} new "
          f"texts {enc_new:.1f} s, {len(t_old):,} fitted texts {enc_old:.1f} s", flush=True)

    cols = ["user_id", "item_id", "text", "ts"]
    base = InterestEngine(encoder=memo).fit(old[cols])
    print(f"fitted: K={base.n_segments_}, segment distance {base.segment_distance_:.4f}, "
          f"fit {base.timings_['total_s']:.1f} s", flush=True)

    def partial(batch, **kw):
        eng = copy.deepcopy(base, {id(memo): memo})  # every copy shares the one encoder
        t0 = time.perf_counter()
        eng.partial_fit(batch[cols], **kw)
        return time.perf_counter() - t0, eng

    def refit():
        t0 = time.perf_counter()
        eng = InterestEngine(encoder=memo).fit(events[cols])
        return time.perf_counter() - t0, eng

    paths = {
        "one event": lambda: partial(one),
        "10% of the events": lambda: partial(new),
        "full refit": refit,
        "one event, rechoose_k=True": lambda: partial(one, rechoose_k=True),
        "10% of the events, rechoose_k=True": lambda: partial(new, rechoose_k=True),
    }
    for fn in paths.values():  # warm-up: first calls import and compile
        fn()
    times = {name: [] for name in paths}
    last = {}
    names = list(paths)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            dt, eng = paths[name]()
            times[name].append(dt)
            last[name] = eng
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{n} {times[n][-1] * 1e3:.1f} ms" for n in names), flush=True)

    full = last["full refit"]
    rows = []
    for name in names:
        eng = last[name]
        s = _stats(times[name])
        row = {"path": name, **s, "vs_full_refit": s["median_s"] / _stats(
            times["full refit"])["median_s"], "K": int(eng.n_segments_)}
        prev = f"{name.split(',')[0]}, rechoose_k=True"
        if prev in times and prev != name:
            row["vs_rechoose_k"] = s["median_s"] / statistics.median(times[prev])
        if name != "full refit":
            row.update(segments_refitted=bool(eng.segments_refitted_),
                       drift=float(eng.segment_drift_) if not eng.segments_refitted_ else None,
                       stages_s={k: v for k, v in eng.timings_.items()})
        rows.append(row)
    one_eng, ten_eng = last["one event"], last["10% of the events"]
    # drift measured before any refit (the paths above that refit reset it to 0)
    checks = {"drift_one_event": float(one_eng.segment_drift_),
              "drift_10pct": float(ten_eng.segment_drift_)}
    rows_f = ten_eng.user_ids_.get_indexer(full.user_ids_)
    checks["max_abs_user_vector_diff_10pct_vs_refit"] = float(
        np.abs(ten_eng.user_vectors_[rows_f] - full.user_vectors_).max())
    checks["segments_ari_10pct_vs_refit"] = float(adjusted_rand_score(
        ten_eng.segments_[rows_f], full.segments_))
    users = list(full.user_ids_[::7])
    a = ten_eng.recommend(users, k=10)
    b = full.recommend(users, k=10)
    overlap = [len(set(x) & set(y)) / 10 for (_, x), (_, y) in zip(
        a.groupby("user_id")["item_id"], b.groupby("user_id")["item_id"])]
    checks["recommend_overlap_at_10_10pct_vs_refit"] = float(np.mean(overlap))
    checks["recommend_users_compared"] = len(users)
    for k, v in checks.items():
        print(f"{k}: {v}")

    md = markdown(rows, encode, checks, len(events), len(old), len(new), base, args.rounds)
    print(md)
    if not args.no_write:
        payload = {"data": "amazon_musical_instruments_5core", "n_events": len(events),
                   "n_fit": len(old), "n_new": len(new), "rounds": args.rounds,
                   "encode": encode, "paths": rows, "checks": checks,
                   "encoder_note": "all timed paths use a memo of the default Encoder's "
                                   "vectors; encoding is reported in 'encode'"}
        jp, mp = write_results("partial_fit_cpu", payload, md)
        print(f"wrote {jp} and {mp}")
    return 0


def _ms(s: float) -> str:
    return f"{s * 1e3:,.1f}"


def markdown(rows, encode, checks, n_events, n_fit, n_new, base, rounds) -> str:
    one = encode["one_text"]
    lines = [
        f"Amazon Musical Instruments 5-core: {n_events:,} events, all users; fitted on the "
        f"first {n_fit:,} by time (K={base.n_segments_}), {n_new:,} new (10%). Each path on "
        f"a fresh copy of the fitted engine, interleaved over {rounds} rounds; median "
        "(min-max). Texts come from a memo of the default encoder's vectors in every path, "
        "so the times are the update itself; encoding is listed separately below.",
        "",
        "| path | time ms (min-max) | vs full refit | vs rechoose_k=True | K after | "
        "segments refitted |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        refit = "-" if r["path"] == "full refit" else ("yes" if r["segments_refitted"] else "no")
        prev = f"{r['vs_rechoose_k']:.4f}" if "vs_rechoose_k" in r else "-"
        lines.append(f"| {r['path']} | {_ms(r['median_s'])} ({_ms(r['min_s'])}-"
                     f"{_ms(r['max_s'])}) | {r['vs_full_refit']:.4f} | {prev} | {r['K']} | "
                     f"{refit} |")
    lines += [
        "",
        "`rechoose_k=True` does the per-call work of the previous `partial_fit` (silhouette "
        "choice of K on a sample, K-means over all users, recommender rebuild) plus the id "
        "matching.",
        "",
        f"Encoding with the default `Encoder` (not in the times above): one new text "
        f"{_ms(one['median_s'])} ms ({_ms(one['min_s'])}-{_ms(one['max_s'])}); the "
        f"{encode['new_10pct_texts']:,} new distinct texts {encode['new_10pct_s']:.1f} s; "
        f"the {encode['fit_90pct_texts']:,} fitted ones {encode['fit_90pct_s']:.1f} s.",
        "",
        f"Segment drift (relative growth of the mean user-centroid cosine distance; refit "
        f"above 0.1): one event {checks['drift_one_event']:+.5f}, 10% of the events "
        f"{checks['drift_10pct']:+.4f}.",
        "",
        f"10% update vs full refit: max |user vector difference| "
        f"{checks['max_abs_user_vector_diff_10pct_vs_refit']:.1e}, segment ARI "
        f"{checks['segments_ari_10pct_vs_refit']:.4f}, recommendation overlap@10 "
        f"{checks['recommend_overlap_at_10_10pct_vs_refit']:.3f} "
        f"({checks['recommend_users_compared']} users).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
