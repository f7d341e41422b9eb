"""How useful are the segments? Segment popularity per K on the temporal protocol (issue 14).

A segment is useful to a recommender when its members do next what the segment does. The
simplest measure of that: recommend each user the most popular unseen items *of the user's
segment* (distinct training users of the segment per item; ties broken by global popularity,
then the lower item) and score recall@10 / NDCG@10 on the held-out events, exactly as
``benchmarks/recsys_eval.py`` scores every method (same split, ground truth and scorer).
K = 1 is global popularity.

Two rows per data set, K in ``KS`` = 1, 2, 4, 8, 16, 32, 64:

* ``mean text vector``: K-means (``interestflow.KMeans``, cosine on unit rows, ``n_init=3``,
  seed 0) on each user's plain mean training-event vector (the default encoder): the table
  of issue 14.
* ``engine user vector``: the same on the user vectors of ``InterestEngine(ranker=None)``
  fitted on the training events (time-decayed means, the vectors the engine segments), each K
  through ``interestflow.segments.fit_segments`` with that K (close segments merged as the
  engine merges them). Its ``default`` column is the engine's own segmentation
  (``n_segments="auto"``, whatever K that chose): the bar of issue 14 compares it with the
  best K of this row, measured in the same run.

Usage::

    python benchmarks/segments_eval.py --data ../shared/data [--dataset amazon]

Writes ``benchmarks/results/segments_eval[_<dataset>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import write_results  # noqa: E402

KS = (1, 2, 4, 8, 16, 32, 64)
DATASETS = ("amazon", "movielens_ratings")


def segment_popularity_recs(train: pd.DataFrame, labels: pd.Series, users, k: int = 10):
    """user -> the k most popular unseen items of the user's segment (``labels``: user ->
    segment); popularity = distinct training users of the segment, ties by global popularity,
    then the lower item row. A user outside ``labels`` gets global popularity."""
    pairs = train[["user_id", "item_id"]].drop_duplicates()
    item_ids = np.sort(pairs["item_id"].unique())
    row = pd.Series(np.arange(len(item_ids)), index=item_ids)
    n = len(item_ids)
    glob = np.bincount(row[pairs["item_id"]].to_numpy(), minlength=n).astype(np.int64)
    seg = labels.reindex(pairs["user_id"]).fillna(-1).to_numpy(np.int64)
    n_seg = int(seg.max()) + 1 if len(seg) else 0
    counts = np.zeros((max(n_seg, 1), n), np.int64)
    ok = seg >= 0
    np.add.at(counts, (seg[ok], row[pairs["item_id"][ok]].to_numpy()), 1)
    seen = pairs.groupby("user_id")["item_id"].agg(list)
    big = glob.max() + 1
    out = {}
    for u in users:
        s = int(labels.get(u, -1))
        score = (counts[s] * big + glob) if s >= 0 else glob.copy()
        score = score.astype(np.float64)
        score[row[seen[u]].to_numpy()] = -np.inf
        order = np.lexsort((np.arange(n), -score))[:k]
        out[u] = [item_ids[j] for j in order if np.isfinite(score[j])]
    return out


def _labels_by_k(vectors: np.ndarray, user_ids, ks, *, merge: bool):
    """K -> user -> segment, K-means on unit rows (K = 1: everybody in segment 0)."""
    from interestflow.segments import SegmentConfig, fit_segments

    out = {}
    for k in ks:
        if k == 1:
            out[k] = pd.Series(0, index=user_ids)
            continue
        if k >= len(user_ids):
            continue
        cfg = SegmentConfig(n_segments=int(k), merge_threshold=0.95 if merge else None)
        labels, _, _, _ = fit_segments(vectors, cfg, device="cpu")
        out[k] = pd.Series(labels, index=user_ids)
    return out


def evaluate(name: str, data: Path, encoder) -> dict:
    import recsys_eval as R

    from interestflow import InterestEngine
    from interestflow.synthetic import train_test_split_by_time

    events, _ = R.LOADERS[name](data)
    train, test = train_test_split_by_time(events, frac=0.2)
    train = train.reset_index(drop=True)
    truth = R.ground_truth(train, test)
    users = sorted(truth)
    texts = list(dict.fromkeys(train["text"]))
    t0 = time.perf_counter()
    vecs = encoder.encode(texts)
    t_enc = time.perf_counter() - t0
    memo = R.MemoEncoder(encoder, texts, vecs)
    ev = pd.Series(np.arange(len(texts)), index=texts)[train["text"]].to_numpy()
    # plain mean of each user's training-event vectors, unit rows
    uid, urow = np.unique(train["user_id"].to_numpy(), return_inverse=True)
    M = np.zeros((len(uid), vecs.shape[1]))
    np.add.at(M, urow, vecs[ev])
    M /= np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12)
    print(f"== {name}: {len(train):,} training events, {len(uid):,} users, {len(users):,} "
          f"scored; encoded {len(texts):,} texts in {t_enc:.0f}s", flush=True)
    rows = {}
    t0 = time.perf_counter()
    plain = {}
    for k, lab in _labels_by_k(M, uid, KS, merge=False).items():
        plain[k] = R.score(segment_popularity_recs(train, lab, users), truth)
        print(f"   mean text vector K={k:3d}: recall@10 {plain[k]['recall@10']:.4f} "
              f"NDCG@10 {plain[k]['ndcg@10']:.4f}", flush=True)
    rows["mean text vector"] = plain
    eng = InterestEngine(encoder=memo, ranker=None, show_progress=False, device="cpu")
    eng.fit(train[["user_id", "item_id", "text", "ts"]])
    U = np.asarray(eng.user_vectors_, np.float32)
    eu = np.asarray(eng.user_ids_, dtype=object)
    engine_rows = {}
    for k, lab in _labels_by_k(U, eu, KS, merge=True).items():
        engine_rows[k] = R.score(segment_popularity_recs(train, lab, users), truth)
        engine_rows[k]["k_after_merge"] = int(lab.max()) + 1
        print(f"   engine user vector K={k:3d} (after merging: "
              f"{engine_rows[k]['k_after_merge']}): recall@10 "
              f"{engine_rows[k]['recall@10']:.4f} NDCG@10 {engine_rows[k]['ndcg@10']:.4f}",
              flush=True)
    default = R.score(segment_popularity_recs(
        train, pd.Series(np.asarray(eng.segments_), index=eu), users), truth)
    default["k"] = int(eng.n_segments_)
    print(f"   engine default (n_segments='auto' -> K={default['k']}): recall@10 "
          f"{default['recall@10']:.4f} NDCG@10 {default['ndcg@10']:.4f}", flush=True)
    rows["engine user vector"] = engine_rows
    best_k = max((k for k in engine_rows if k >= 2), key=lambda k: engine_rows[k]["recall@10"])
    ratio = default["recall@10"] / engine_rows[best_k]["recall@10"]
    return {"n_train": len(train), "n_users_scored": len(users), "encode_s": t_enc,
            "rows": {r: {str(k): v for k, v in d.items()} for r, d in rows.items()},
            "default": default, "best_k": best_k, "default_vs_best": ratio,
            "bar_met": bool(ratio >= 0.95), "seconds": time.perf_counter() - t0}


def markdown(results: dict) -> str:
    out = ["Segment popularity (each user gets the most popular unseen items of the user's "
           "segment; K = 1 is global popularity) on the temporal protocol of "
           "`benchmarks/recsys_eval.py`; recall@10 / NDCG@10. Bar (issue 14): the engine's "
           "default segmentation >= 0.95x the best K in {2, ..., 64} of the engine-vector row "
           "on recall@10.", ""]
    for name, r in results.items():
        out += [f"## {name}", "",
                f"{r['n_train']:,} training events; {r['n_users_scored']:,} users scored.", "",
                "| user vectors | " + " | ".join(f"K = {k}" for k in KS) + " | default |",
                "|---|" + "---|" * (len(KS) + 1)]
        for label, d in r["rows"].items():
            cells = []
            for k in KS:
                v = d.get(str(k))
                if v is None:
                    cells.append("")
                    continue
                best = label == "engine user vector" and k == r["best_k"]
                cell = f"{v['recall@10']:.4f} / {v['ndcg@10']:.4f}"
                if "k_after_merge" in v and v["k_after_merge"] != k:
                    cell += f" (K={v['k_after_merge']} merged)"
                cells.append(f"**{cell}**" if best else cell)
            dflt = ""
            if label == "engine user vector":
                dflt = (f"{r['default']['recall@10']:.4f} / {r['default']['ndcg@10']:.4f} "
                        f"(K={r['default']['k']})")
            out.append(f"| {label} | " + " | ".join(cells) + f" | {dflt} |")
        out += ["", f"Default / best K ({r['best_k']}) on recall@10: "
                    f"{r['default_vs_best']:.2f}x (bar 0.95x: "
                    f"{'met' if r['bar_met'] else 'NOT met'}).", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    import recsys_eval as R

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--dataset", choices=[*DATASETS, "all"], default="all")
    a = ap.parse_args(argv)
    wanted = list(DATASETS) if a.dataset == "all" else [a.dataset]
    if R.data_missing("segments_eval", a.data, wanted):
        return 0
    from interestflow import Encoder

    encoder = Encoder()
    results = {name: evaluate(name, a.data, encoder) for name in wanted}
    out = "segments_eval" + ("" if a.dataset == "all" else f"_{a.dataset}")
    jp, mp = write_results(out, {"ks": list(KS), "datasets": results}, markdown(results))
    print(f"\nwrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
