"""Recommendation quality on real data: InterestEngine defaults against two baselines.

Protocol (../shared/data/README.md): per user, events sorted by time (ties keep the file's
order), the last ``max(1, round(0.2 * n))`` held out as test (rounded half up;
``interestflow.synthetic.train_test_split_by_time``). User texts and item texts come from
the training part only. recall@10 and NDCG@10 are scored per user over the test items the
user did not interact with in training (items never seen in training still count in the
denominator: no method can find them without an items table), then averaged over users with
at least one such item.

Methods, all from the same split in one run:

* ``popularity``: items ranked by the number of distinct training users, seen items removed.
* ``mean text vector + cosine`` (the seeds' method): user vector = mean of the user's training
  event vectors, item vector = mean of the item's training event vectors, rank by cosine.
* ``InterestEngine()``: defaults, ``fit(train_events)`` then ``recommend(users, k=10,
  exclude_seen=True)``. The engine gets the same default encoder through a memo, so texts the
  baselines already encoded are not encoded twice (same model, same vectors).
* MovieLens only, ``InterestEngine() + items``: the same, with ``movies.csv`` (title and
  genres) as the items table; its candidates are all 9,742 movies, not only tagged ones.

Data sets: Amazon Musical Instruments 5-core reviews (event text = summary + ". " + review
text); MovieLens latest-small tags (event text = the tag, item = the movie; 58 users tag, so
its figures rest on a few dozen test users and move by several points with one user).

Bar (issue 3): on Amazon the engine reaches >= 1.10x the better baseline on recall@10 and on
NDCG@10. Results: ``benchmarks/results/recsys_eval.{json,md}`` (``recsys_eval_<dataset>``
for a single data set).

    python benchmarks/recsys_eval.py --data ../shared/data                  # both data sets
    python benchmarks/recsys_eval.py --data ../shared/data --dataset amazon
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

AMAZON = Path("amazon_musical_instruments_5core") / "Musical_instruments_reviews.csv"
MOVIELENS = Path("movielens_ml-latest-small")
K = 10
BAR = 1.10


# ----------------------------------------------------------------------------- data
def load_amazon(data: Path) -> tuple[pd.DataFrame, None]:
    df = pd.read_csv(data / AMAZON)
    summary = df["summary"].fillna("").astype(str).str.strip()
    body = df["reviewText"].fillna("").astype(str).str.strip()
    text = np.where((summary != "") & (body != ""), summary + ". " + body, summary + body)
    events = pd.DataFrame({"user_id": df["reviewerID"].astype(str),
                           "item_id": df["asin"].astype(str), "text": text,
                           "ts": df["unixReviewTime"].astype(np.int64)})
    empty = events["text"].str.strip() == ""
    if empty.any():  # counted and reported, never silently dropped
        print(f"amazon: {int(empty.sum())} reviews without summary or text left out")
    return events[~empty].reset_index(drop=True), None


def load_movielens(data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    tags = pd.read_csv(data / MOVIELENS / "tags.csv")
    events = pd.DataFrame({"user_id": tags["userId"].astype(np.int64),
                           "item_id": tags["movieId"].astype(np.int64),
                           "text": tags["tag"].astype(str).str.strip(),
                           "ts": tags["timestamp"].astype(np.int64)})
    empty = events["text"] == ""
    if empty.any():
        print(f"movielens: {int(empty.sum())} empty tags left out")
    movies = pd.read_csv(data / MOVIELENS / "movies.csv")
    genres = movies["genres"].str.replace("|", ", ", regex=False)
    items = pd.DataFrame({"item_id": movies["movieId"].astype(np.int64),
                          "text": movies["title"].astype(str) + ". " + genres})
    return events[~empty].reset_index(drop=True), items


# --------------------------------------------------------------------------- metrics
def ground_truth(train: pd.DataFrame, test: pd.DataFrame) -> dict:
    """user -> set of test items not in the user's training items (users in training)."""
    seen = train.groupby("user_id")["item_id"].agg(set)
    truth = {}
    for user, items in test.groupby("user_id")["item_id"]:
        if user not in seen.index:
            continue
        t = set(items) - seen[user]
        if t:
            truth[user] = t
    return truth


def score(recs: dict, truth: dict, k: int = K) -> dict:
    """Mean recall@k and NDCG@k over the users of ``truth``; ``recs``: user -> item list."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    recall, ndcg = [], []
    for user, t in truth.items():
        got = list(recs.get(user, []))[:k]
        hits = np.array([item in t for item in got], dtype=float)
        recall.append(hits.sum() / len(t))
        ndcg.append((hits * disc[:len(hits)]).sum() / disc[:min(len(t), k)].sum())
    return {"recall@10": float(np.mean(recall)), "ndcg@10": float(np.mean(ndcg)),
            "n_users": len(truth)}


def _top_unseen(scores: np.ndarray, item_ids: np.ndarray, seen_rows: list, k: int):
    """Top-k item ids of one score row, seen rows removed, ties to the lower item row."""
    s = scores.astype(np.float64).copy()
    s[seen_rows] = -np.inf
    order = np.lexsort((np.arange(len(s)), -s))[:k]
    return [item_ids[j] for j in order if np.isfinite(s[j])]


# ------------------------------------------------------------------------- baselines
def popularity(train: pd.DataFrame, users) -> dict:
    item_ids = np.sort(train["item_id"].unique())
    row = pd.Series(np.arange(len(item_ids)), index=item_ids)
    pairs = train[["user_id", "item_id"]].drop_duplicates()
    counts = np.bincount(row[pairs["item_id"]].to_numpy(), minlength=len(item_ids)).astype(float)
    seen = pairs.groupby("user_id")["item_id"].agg(list)
    return {u: _top_unseen(counts, item_ids, row[seen[u]].to_numpy(), K) for u in users}


def mean_text_cosine(train: pd.DataFrame, vectors: np.ndarray, users) -> dict:
    """The seeds' method; ``vectors`` holds one row per row of ``train``."""
    item_ids = np.sort(train["item_id"].unique())
    row = pd.Series(np.arange(len(item_ids)), index=item_ids)
    user_ids = np.asarray(list(users), dtype=object)
    urow = pd.Series(np.arange(len(user_ids)), index=user_ids)
    tu = urow.reindex(train["user_id"]).to_numpy()
    keep = ~np.isnan(tu)
    U = np.zeros((len(user_ids), vectors.shape[1]))
    np.add.at(U, tu[keep].astype(np.int64), vectors[keep])
    item_rows = row[train["item_id"]].to_numpy()
    I = np.zeros((len(item_ids), vectors.shape[1]))
    np.add.at(I, item_rows, vectors)
    U /= np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    I /= np.maximum(np.linalg.norm(I, axis=1, keepdims=True), 1e-12)
    seen = train.groupby("user_id")["item_id"].agg(lambda s: sorted(set(s)))
    out = {}
    for a in range(0, len(user_ids), 1024):
        S = U[a:a + 1024] @ I.T
        for r, u in enumerate(user_ids[a:a + 1024]):
            out[u] = _top_unseen(S[r], item_ids, row[seen[u]].to_numpy(), K)
    return out


# ---------------------------------------------------------------------------- engine
class MemoEncoder:
    """The default encoder with a memo of texts already encoded in this run.

    Only saves time: a text gets the vector the same default Encoder gave it.
    """

    def __init__(self, encoder, texts, vectors):
        self._encoder = encoder
        self._memo = dict(zip(texts, vectors))

    def encode(self, texts, **kwargs):
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            for t, v in zip(missing, self._encoder.encode(missing, **kwargs)):
                self._memo[t] = v
        if not texts:
            return self._encoder.encode(texts, **kwargs)
        return np.stack([self._memo[t] for t in texts]).astype(np.float32, copy=False)

    def __getattr__(self, name):
        return getattr(self._encoder, name)


def run_engine(train: pd.DataFrame, items, users, encoder, **params) -> tuple[dict, dict]:
    """``InterestEngine(**params)`` (defaults otherwise): fit on the training events,
    recommend k=10 unseen items.

    Returns (user -> recommended item ids, facts about the fitted engine).
    """
    from interestflow import InterestEngine

    engine = InterestEngine(encoder=encoder, **params)
    t0 = time.perf_counter()
    engine.fit(train[["user_id", "item_id", "text", "ts"]], items=items)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    recs = engine.recommend(list(users), k=K, exclude_seen=True)
    rec_s = time.perf_counter() - t0
    out = {u: g.sort_values("rank")["item_id"].tolist() for u, g in recs.groupby("user_id")}
    rec = engine.recommender_
    from interestflow.recommend import COMPONENTS
    facts = {"fit_s": fit_s, "recommend_s": rec_s, "n_segments": int(engine.n_segments_),
             "half_life_days": float(engine.half_life_days),
             "weights": {c: float(w) for c, w in zip(COMPONENTS, rec.weights_)},
             "selection": rec.selection_, "n_items": int(len(engine.item_ids_))}
    if params.get("multi_interest"):
        table = engine.interests()
        facts["interests_per_user"] = float(table.groupby("user_id").size().mean())
    return out, facts


# ----------------------------------------------------------------------------- main
def evaluate(name: str, events: pd.DataFrame, items, encoder) -> dict:
    from interestflow.synthetic import train_test_split_by_time

    train, test = train_test_split_by_time(events, frac=0.2)
    train = train.reset_index(drop=True)
    truth = ground_truth(train, test)
    users = sorted(truth)
    print(f"\n== {name}: {len(events):,} events, {events['user_id'].nunique():,} users, "
          f"{events['item_id'].nunique():,} items; train {len(train):,} / test {len(test):,}; "
          f"{len(users):,} users with unseen test items", flush=True)

    t0 = time.perf_counter()
    texts = list(dict.fromkeys(train["text"]))
    if items is not None:
        texts = list(dict.fromkeys(texts + items["text"].tolist()))
    vecs = encoder.encode(texts)
    encode_s = time.perf_counter() - t0
    memo = MemoEncoder(encoder, texts, vecs)
    lookup = dict(zip(texts, range(len(texts))))
    train_vecs = vecs[[lookup[t] for t in train["text"]]]
    print(f"   encoded {len(texts):,} distinct texts in {encode_s:.1f}s", flush=True)

    rows = {}
    rows["popularity"] = score(popularity(train, users), truth)
    rows["mean text vector + cosine"] = score(mean_text_cosine(train, train_vecs, users), truth)
    engine_recs, facts = run_engine(train, None, users, memo)
    rows["InterestEngine()"] = score(engine_recs, truth)
    engines = {"InterestEngine()": facts}
    # multi-interest: each user's list filled from all of their interests (issue 5)
    recs_m, facts_m = run_engine(train, None, users, memo, multi_interest=True)
    rows["InterestEngine(multi_interest=True)"] = score(recs_m, truth)
    engines["InterestEngine(multi_interest=True)"] = facts_m
    if items is not None:
        recs_i, facts_i = run_engine(train, items, users, memo)
        rows["InterestEngine() + items"] = score(recs_i, truth)
        engines["InterestEngine() + items"] = facts_i

    best = {m: max(rows["popularity"][m], rows["mean text vector + cosine"][m])
            for m in ("recall@10", "ndcg@10")}
    for method, r in rows.items():
        r["ratio_recall"] = r["recall@10"] / best["recall@10"] if best["recall@10"] else None
        r["ratio_ndcg"] = r["ndcg@10"] / best["ndcg@10"] if best["ndcg@10"] else None
    for method, r in rows.items():
        print(f"   {method:28s} recall@10 {r['recall@10']:.4f}  NDCG@10 {r['ndcg@10']:.4f}  "
              f"x{r['ratio_recall']:.2f} / x{r['ratio_ndcg']:.2f} of the better baseline")
    for method, f in engines.items():
        on = [c for c, w in f["weights"].items() if w > 0]
        if "interests_per_user" in f:
            print(f"   {method}: {f['interests_per_user']:.2f} interests per user; content "
                  "only, filled per interest by importance")
            continue
        print(f"   {method}: components {on}, K={f['n_segments']}, half-life "
              f"{f['half_life_days']:g} d, fit {f['fit_s']:.1f}s, recommend "
              f"{f['recommend_s']:.1f}s")
    return {"n_events": len(events), "n_train": len(train), "n_test": len(test),
            "n_eval_users": len(users), "encode_s": encode_s, "methods": rows,
            "engines": engines}


def markdown(results: dict) -> str:
    lines = []
    for name, res in results.items():
        lines += [f"## {name}", "",
                  f"{res['n_events']:,} events; train {res['n_train']:,}, test {res['n_test']:,}; "
                  f"{res['n_eval_users']:,} users scored.", "",
                  "| method | recall@10 | NDCG@10 | x better baseline (recall / NDCG) |",
                  "|---|---|---|---|"]
        for method, r in res["methods"].items():
            lines.append(f"| {method} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | "
                         f"{r['ratio_recall']:.2f} / {r['ratio_ndcg']:.2f} |")
        for method, f in res["engines"].items():
            if "interests_per_user" in f:
                lines.append(f"\n{method}: {f['interests_per_user']:.2f} interests per user; "
                             "each list filled from every interest in proportion to its "
                             "importance (content only, no behaviour components).")
                continue
            on = ", ".join(c for c, w in f["weights"].items() if w > 0)
            lines.append(f"\n{method}: components selected on the training period: {on}; "
                         f"K={f['n_segments']}; half-life {f['half_life_days']:g} days.")
        if "bar" in res:
            lines.append(f"\nBar >= {BAR}x on both metrics: "
                         f"{'met' if res['bar']['met'] else 'NOT met'}.")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"),
                    help="folder holding the evaluation data (README there)")
    ap.add_argument("--dataset", choices=["amazon", "movielens", "all"], default="all")
    args = ap.parse_args(argv)

    wanted = ["amazon", "movielens"] if args.dataset == "all" else [args.dataset]
    paths = {"amazon": args.data / AMAZON, "movielens": args.data / MOVIELENS / "tags.csv"}
    missing = [str(paths[n]) for n in wanted if not paths[n].exists()]
    if missing:
        print(f"recsys_eval: skipped, data not found: {', '.join(missing)} "
              f"(pass --data pointing at the shared data folder)")
        return 0

    from interestflow import Encoder

    encoder = Encoder()
    results = {}
    for name in wanted:
        events, items = (load_amazon if name == "amazon" else load_movielens)(args.data)
        res = evaluate(name, events, items, encoder)
        if name == "amazon":
            eng = res["methods"]["InterestEngine()"]
            res["bar"] = {"ratio": BAR, "met": bool(eng["ratio_recall"] >= BAR
                                                    and eng["ratio_ndcg"] >= BAR)}
            print(f"   bar >= {BAR}x on both metrics: {'met' if res['bar']['met'] else 'NOT met'}")
        results[name] = res
    out = "recsys_eval" if args.dataset == "all" else f"recsys_eval_{args.dataset}"
    jp, mp = write_results(out, {"k": K, "protocol": "last max(1, round(0.2 n)) per user",
                                 "datasets": results}, markdown(results))
    print(f"\nwrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
