"""Recommendation quality on real data: InterestEngine defaults against tuned baselines.

Protocol (../shared/data/README.md): per user, events sorted by time (ties keep the file's
order), the last ``max(1, round(0.2 * n))`` held out as test (rounded half up;
``interestflow.synthetic.train_test_split_by_time``). User texts and item texts come from
the training part only. recall@10 and NDCG@10 are scored per user over the test items the
user did not interact with in training (items never seen in training still count in the
denominator: no method can find them without an items table), then averaged over users with
at least one such item. One split, one ground truth, one scorer (``score``) and one seen-item
filter (``_top_unseen``) serve every method.

Methods, all from the same split in one run:

* ``popularity``: items ranked by the number of distinct training users, seen items removed.
* ``mean text vector + cosine`` (the seeds' method): user vector = mean of the user's training
  event vectors, item vector = mean of the item's training event vectors, rank by cosine.
* ``item-kNN`` (``item_knn_scores``): cosine similarity between the columns of the binary
  user-item matrix of the training events; each item keeps its N most similar items as
  neighbours and score(u, i) = sum of sim(i, j) over the user's training items j that are
  among i's N neighbours (Dacrema et al., RecSys 2019, ItemKNNCF without shrinkage).
  N from ``KNN_GRID``.
* ``EASE^R`` (``ease_scores``, Steck, WWW 2019): B = I - P / diag(P), P = (X^T X + lambda I)^-1,
  diag(B) = 0, scores = X B, X the binary user-item matrix; lambda from ``EASE_GRID``.
* ``InterestEngine()``: defaults, ``fit(train_events)`` then ``recommend(users, k=10,
  exclude_seen=True)``: two stages (candidates of every source, then one LightGBM
  lambdarank ranker trained inside ``fit`` on inner temporal splits of the training events;
  ``interestflow.ranker``). The engine gets the same default encoder through a memo, so
  texts the baselines already encoded are not encoded twice (same model, same vectors).
* ``InterestEngine(ranker=None)``: the fusion recommender alone (the default before issue 13).
* ``InterestEngine(multi_interest=True)``: per-user interests (issue 5), otherwise defaults.
* Ablations, from the same run: the default engine whose ranker does not see one group of
  features (``RankerConfig(exclude=(group,))``, groups ``interestflow.ranker.FEATURE_GROUPS``:
  ``text``, ``segment``, ``dynamics``); the candidates are the same.
* Single-user latency of ``recommend([u], k=10)`` for ``InterestEngine()`` and
  ``InterestEngine(ranker=None)``: 50 warm-up calls, then 1,000 calls over users drawn with a
  fixed seed (p50/p99, ms).
* Cold slice: every method's metrics on the evaluated users with at most ``COLD_MAX`` (3)
  training events. Amazon 5-core and MovieLens ratings (20+ ratings per user) have none, so
  ``--cold-only`` runs a simulated one instead (``cold_simulation``): a seeded 20% of the
  evaluated users keep only their latest 3 training events, every method is refitted, and
  the default engine is compared with its ranker without text features on those users.
* MovieLens tags only, ``InterestEngine() + items``: the same, with the movies as the items
  table; its candidates are all 9,742 movies, not only those with training events.

Tuning (``tune``) never sees the test part: it receives the training events only, splits them
again with the same rule (per user, the latest 20% of that user's *training* events form the
inner validation), scores every grid value on that inner split and keeps the best inner
NDCG@10 (the first in grid order on a tie). NDCG@10 rather than recall@10 because it also
rewards putting the hits first, and it is one of the two metrics of the bar; the inner scores
of every grid value on both metrics are written to the results. The chosen value is then
refitted on all training events and scored once on the test part.

Data sets: Amazon Musical Instruments 5-core reviews (event text = summary + ". " + review
text); MovieLens latest-small tags (event text = the tag, item = the movie; 58 users tag, so
its figures rest on a few dozen test users and move by several points with one user);
MovieLens latest-small ratings (``load_movielens_ratings``: every rating is an event whatever
its value; event text = the movie's "title. genres. Tags: ..." with tags from the training
period only, see that function).

Bar (issue 13): on each data set ``InterestEngine()`` reaches >= 1.05x the best of
popularity, item-kNN and EASE^R on recall@10 and on NDCG@10, and is not below any of them. Results:
``benchmarks/results/recsys_eval.{json,md}`` (``recsys_eval_<dataset>`` for a single data set).

    python benchmarks/recsys_eval.py --data ../shared/data                  # all data sets
    python benchmarks/recsys_eval.py --data ../shared/data --dataset amazon
    python benchmarks/recsys_eval.py --data ../shared/data --dataset amazon --cold-only
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


def data_missing(script: str, data: Path, names) -> bool:
    """True (after saying what is missing) when a data set in ``names`` is not under
    ``data``: the benchmarks skip rather than fail where the shared data is absent."""
    paths = {"amazon": data / AMAZON, "movielens": data / MOVIELENS / "tags.csv",
             "movielens_ratings": data / MOVIELENS / "ratings.csv"}
    missing = [str(paths[n]) for n in names if not paths[n].exists()]
    if missing:
        print(f"{script}: skipped, data not found: {', '.join(missing)} "
              "(pass --data pointing at the shared data folder)")
    return bool(missing)
K = 10
ABLATIONS = ("text", "segment", "dynamics")  # interestflow.ranker.FEATURE_GROUPS
COLD_MAX = 3  # the cold slice: evaluated users with at most this many training events
BAR = 1.05  # issue 13: engine / best of (popularity, item-kNN, EASE^R), on both metrics
EASE_GRID = (10, 50, 200, 500, 1000, 3000)
KNN_GRID = (20, 50, 100, 200)
REFERENCES = ("popularity", "item-kNN", "EASE^R")  # what the bar compares against


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


def load_movielens_ratings(data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens latest-small ratings as implicit events, with training-period movie texts.

    Every rating is one event ``(user_id, movie, ts)`` whatever its value (the baselines use
    the binary user-item matrix). Event text = the movie's text "title. genres" plus, when
    the movie has tags from the training period, ". Tags: t1, t2, ..." (distinct tags in time
    order). ``items`` = all 9,742 movies with that same text.

    Tags and leakage: the texts are the same for every user, so a tag may enter them only if
    it precedes the test part of the user who wrote it. The outer split (the one ``evaluate``
    makes with the same function on these same events) is computed here; a tag by user u on
    movie m at time t is kept iff t <= u's last training rating and (u, m) is not one of u's
    test ratings. A later tag would tell every method that u's held-out movie was seen
    (MovieLens users mostly tag when they rate) and carry u's own words onto it. 58 of the
    610 raters tag; tags of a tagger's training period stay visible when the engine tunes on
    its own inner split of the training events (a leak within the training period only, as
    for the Amazon item texts built from all training reviews).
    """
    from interestflow.synthetic import train_test_split_by_time

    root = data / MOVIELENS
    ratings = pd.read_csv(root / "ratings.csv")
    events = pd.DataFrame({"user_id": ratings["userId"].astype(np.int64),
                           "item_id": ratings["movieId"].astype(np.int64),
                           "ts": ratings["timestamp"].astype(np.int64)})
    train, test = train_test_split_by_time(events, frac=0.2)
    train_end = train.groupby("user_id")["ts"].max()
    tags = pd.read_csv(root / "tags.csv")
    tags = pd.DataFrame({"user_id": tags["userId"].astype(np.int64),
                         "item_id": tags["movieId"].astype(np.int64),
                         "tag": tags["tag"].astype(str).str.strip(),
                         "ts": tags["timestamp"].astype(np.int64)})
    end = train_end.reindex(tags["user_id"]).to_numpy()  # NaN: user without training ratings
    test_pairs = pd.MultiIndex.from_frame(test[["user_id", "item_id"]])
    in_test = pd.MultiIndex.from_frame(tags[["user_id", "item_id"]]).isin(test_pairs)
    keep = (tags["ts"].to_numpy() <= end) & ~in_test & (tags["tag"] != "").to_numpy()
    print(f"movielens_ratings: {int(keep.sum()):,} of {len(tags):,} tags from the training "
          "period kept in the movie texts")
    kept = tags[keep].sort_values("ts", kind="stable")
    tag_text = kept.groupby("item_id")["tag"].agg(lambda t: ", ".join(dict.fromkeys(t)))
    movies = pd.read_csv(root / "movies.csv")
    ids = movies["movieId"].astype(np.int64)
    text = (movies["title"].astype(str) + ". "
            + movies["genres"].str.replace("|", ", ", regex=False))
    extra = tag_text.reindex(ids).to_numpy()
    has = pd.notna(extra)
    text = np.where(has, text + ". Tags: " + pd.Series(extra).fillna("").to_numpy(), text)
    items = pd.DataFrame({"item_id": ids.to_numpy(), "text": text})
    lookup = pd.Series(items["text"].to_numpy(), index=items["item_id"])
    missing = ~events["item_id"].isin(lookup.index)
    if missing.any():
        raise ValueError(f"movielens_ratings: {int(missing.sum())} ratings of movies absent "
                         "from movies.csv")
    events["text"] = lookup.reindex(events["item_id"]).to_numpy()
    return events[["user_id", "item_id", "text", "ts"]], items


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
def recs_from_scores(scores: np.ndarray, item_ids: np.ndarray, users, train: pd.DataFrame,
                     k: int = K) -> dict:
    """user -> top-k unseen item ids, from one score row per user (rows in ``users`` order).

    ``scores`` has shape (n_users, n_items), columns in ``item_ids`` order; each user's
    training items are removed by ``_top_unseen`` (the filter every method shares).
    """
    row = pd.Series(np.arange(len(item_ids)), index=item_ids)
    seen = train.groupby("user_id")["item_id"].agg(lambda s: sorted(set(s)))
    out = {}
    for r, u in enumerate(users):
        rows = row.reindex(seen[u] if u in seen.index else []).dropna().to_numpy(np.int64)
        out[u] = _top_unseen(scores[r], item_ids, rows, k)
    return out


def popularity(train: pd.DataFrame, users) -> dict:
    item_ids = np.sort(train["item_id"].unique())
    row = pd.Series(np.arange(len(item_ids)), index=item_ids)
    pairs = train[["user_id", "item_id"]].drop_duplicates()
    counts = np.bincount(row[pairs["item_id"]].to_numpy(), minlength=len(item_ids)).astype(float)
    seen = pairs.groupby("user_id")["item_id"].agg(list)
    return {u: _top_unseen(counts, item_ids, row[seen[u]].to_numpy(), K) for u in users}


def interactions(train: pd.DataFrame, users):
    """Binary user-item matrix of ``train`` and the rows of ``users`` in it.

    Returns ``(item_ids, X, X_users)``: ``item_ids`` the sorted training items, ``X`` a
    scipy CSR matrix of shape (n_train_users, n_items) with 1 where the user has at least one
    training event on the item (repeats count once), ``X_users`` the dense float64 rows of
    ``users`` (zeros for a user without training events), shape (len(users), n_items).
    """
    import scipy.sparse as sp

    item_ids = np.sort(train["item_id"].unique())
    pairs = train[["user_id", "item_id"]].drop_duplicates()
    ucodes, uniq = pd.factorize(pairs["user_id"])
    cols = pd.Series(np.arange(len(item_ids)), index=item_ids)[pairs["item_id"]].to_numpy()
    X = sp.csr_matrix((np.ones(len(pairs)), (ucodes, cols)),
                      shape=(len(uniq), len(item_ids)))
    urow = pd.Series(np.arange(len(uniq)), index=uniq).reindex(list(users)).to_numpy()
    X_users = np.zeros((len(urow), len(item_ids)))
    known = ~np.isnan(urow)
    X_users[known] = X[urow[known].astype(np.int64)].toarray()
    return item_ids, X, X_users


def ease_weights(G: np.ndarray, lam: float) -> np.ndarray:
    """EASE^R item-item weights B (n_items, n_items) from the Gram matrix G = X^T X.

    B = I - P diag(1 / diag(P)) with P = (G + lam I)^-1, so B_ij = -P_ij / P_jj and
    diag(B) = 0 (Steck, WWW 2019, eq. 8). Float64, Cholesky inverse (G + lam I is positive
    definite for lam > 0).
    """
    from scipy.linalg import lapack

    if not lam > 0:
        raise ValueError(f"lam={lam!r} is invalid; pass lam > 0")
    A = np.array(G, dtype=np.float64, order="F", copy=True)
    A[np.diag_indices_from(A)] += lam
    c, info = lapack.dpotrf(A, lower=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"ease: Cholesky of X^T X + {lam} I failed (info={info})")
    P, info = lapack.dpotri(c, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"ease: inverse of X^T X + {lam} I failed (info={info})")
    P = np.triu(P)  # dpotri fills the upper triangle only
    P += np.triu(P, 1).T
    B = P / -np.diag(P)[None, :]
    B[np.diag_indices_from(B)] = 0.0
    return B


def ease_scores(train: pd.DataFrame, users, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """EASE^R scores of ``users`` (Steck, WWW 2019) from the binary matrix of ``train``.

    Returns ``(item_ids, scores)``, scores of shape (len(users), n_items) = X_users B, items
    the sorted training items. Memory: G, P and B are dense float64 (n_items, n_items), about
    3 * 8 * n_items**2 bytes at the peak (0.65 GB per matrix at MovieLens' ~9,000 training
    items); time O(n_items**3) for the inverse. Fine to ~20,000 items on one machine, not
    beyond.
    """
    item_ids, X, X_users = interactions(train, users)
    G = (X.T @ X).toarray()
    return item_ids, X_users @ ease_weights(G, lam)


def item_knn_weights(G: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Item-kNN weights W (n_items, n_items) from the Gram matrix G = X^T X of a binary X.

    sim(i, j) = G_ij / sqrt(G_ii G_jj) (cosine of the item columns), sim(i, i) = 0. Column i
    of W holds sim(i, j) for i's ``n_neighbors`` most similar items j and 0 elsewhere, so
    (X W)_ui = sum of sim(i, j) over the user's items j among i's neighbours. Ties at the
    cut-off go to the lower item row (stable sort).
    """
    if isinstance(n_neighbors, bool) or int(n_neighbors) != n_neighbors or n_neighbors < 1:
        raise ValueError(f"n_neighbors={n_neighbors!r} is invalid; pass an integer >= 1")
    d = np.sqrt(np.diag(G).astype(np.float64))
    d[d == 0] = 1.0
    S = G / np.outer(d, d)  # outer(d, d) is exactly symmetric, so S is too
    S[np.diag_indices_from(S)] = 0.0
    n = min(int(n_neighbors), S.shape[0] - 1)
    nbrs = np.argsort(-S, axis=1, kind="stable")[:, :n]  # row i: i's neighbours j
    W = np.zeros_like(S)
    rows = np.repeat(np.arange(S.shape[0]), n)
    W[nbrs.ravel(), rows] = S[rows, nbrs.ravel()]
    return W


def item_knn_scores(train: pd.DataFrame, users, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Item-kNN scores of ``users`` from the binary matrix of ``train`` (see
    ``item_knn_weights``). Returns ``(item_ids, scores)``, scores (len(users), n_items).
    Memory: dense float64 (n_items, n_items) similarity, weights and sort order.
    """
    item_ids, X, X_users = interactions(train, users)
    G = (X.T @ X).toarray()
    return item_ids, X_users @ item_knn_weights(G, n_neighbors)


def tune(scorer, train: pd.DataFrame, grid, *, metric: str = "ndcg@10",
         frac: float = 0.2) -> tuple[object, dict]:
    """Choose ``scorer``'s parameter on an inner temporal split of ``train`` only.

    ``scorer(train, users, param) -> (item_ids, scores)``. Per user, the latest ``frac`` of
    the user's training events (``train_test_split_by_time``, the outer rule) are the inner
    validation; every grid value is fitted on the rest and scored with ``score`` on the
    inner validation. Returns ``(best, inner)``: the value with the highest inner ``metric``
    (the first in grid order on a tie) and ``{value: score(...)}`` for every value. Nothing
    outside ``train`` is read.
    """
    from interestflow.synthetic import train_test_split_by_time

    inner_train, inner_val = train_test_split_by_time(train, frac=frac)
    inner_train = inner_train.reset_index(drop=True)
    truth = ground_truth(inner_train, inner_val)
    users = sorted(truth)
    inner = {}
    for value in grid:
        item_ids, S = scorer(inner_train, users, value)
        inner[value] = score(recs_from_scores(S, item_ids, users, inner_train), truth)
    best = max(grid, key=lambda v: inner[v][metric])  # max keeps the first of equal values
    return best, inner


def tuned(scorer, grid, train: pd.DataFrame, users) -> tuple[dict, dict]:
    """``tune`` on ``train``, refit the chosen value on all of ``train``, recommend to ``users``.

    Returns (user -> item list, facts: chosen value, inner scores per value, times in s).
    """
    t0 = time.perf_counter()
    best, inner = tune(scorer, train, grid)
    tune_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    item_ids, S = scorer(train, users, best)
    fit_s = time.perf_counter() - t0
    recs = recs_from_scores(S, item_ids, users, train)
    return recs, {"chosen": best, "grid": list(grid), "tune_metric": "ndcg@10",
                  "inner": {str(v): r for v, r in inner.items()},
                  "tune_s": tune_s, "fit_s": fit_s}


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


def latency(engine, users, n_calls: int = 1000, warmup: int = 50, seed: int = 0) -> dict:
    """Single-user ``recommend([u], k=10)`` latency (perf_counter): p50/p99/mean in ms."""
    rng = np.random.default_rng(seed)
    pick = [users[i] for i in rng.integers(0, len(users), warmup + n_calls)]
    for u in pick[:warmup]:
        engine.recommend([u], k=K)
    times = np.empty(n_calls)
    for j, u in enumerate(pick[warmup:]):
        t0 = time.perf_counter()
        engine.recommend([u], k=K)
        times[j] = time.perf_counter() - t0
    return {"p50_ms": float(np.percentile(times, 50) * 1e3),
            "p99_ms": float(np.percentile(times, 99) * 1e3),
            "mean_ms": float(times.mean() * 1e3), "calls": n_calls}


def run_engine(train: pd.DataFrame, items, users, encoder, *, measure_latency=False,
               **params) -> tuple[dict, dict]:
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
    if measure_latency:
        facts["latency"] = latency(engine, list(users))
    ranker = getattr(engine, "ranker_", None)
    if ranker is not None:
        facts["ranker"] = dict(ranker.training_)
        facts["ranker_fit_s"] = float(engine.timings_.get("ranker_s", 0.0))
        facts["candidates_fit_s"] = float(engine.timings_.get("candidates_s", 0.0))
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

    rows, fits = {}, {}
    t0 = time.perf_counter()
    recs = popularity(train, users)
    fits["popularity"] = {"fit_s": time.perf_counter() - t0}
    rows["popularity"] = score(recs, truth)
    lists = {"popularity": recs}

    for method, scorer, grid, param in (("item-kNN", item_knn_scores, KNN_GRID, "N"),
                                        ("EASE^R", ease_scores, EASE_GRID, "lambda")):
        recs, facts = tuned(scorer, grid, train, users)
        facts["param"] = param
        rows[method] = score(recs, truth)
        lists[method] = recs
        fits[method] = facts
        inner = ", ".join(f"{v}: {r['ndcg@10']:.4f}" for v, r in facts["inner"].items())
        print(f"   {method}: {param}={facts['chosen']} (inner NDCG@10 {inner}); tune "
              f"{facts['tune_s']:.1f}s, refit + score {facts['fit_s']:.1f}s", flush=True)

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

    t0 = time.perf_counter()
    recs = mean_text_cosine(train, train_vecs, users)
    fits["mean text vector + cosine"] = {"fit_s": time.perf_counter() - t0}
    rows["mean text vector + cosine"] = score(recs, truth)
    lists["mean text vector + cosine"] = recs
    engines = {}
    from interestflow.ranker import RankerConfig

    for method, params, lat in (
            ("InterestEngine()", {}, True),
            ("InterestEngine(ranker=None)", {"ranker": None}, True),
            ("InterestEngine(multi_interest=True)", {"multi_interest": True}, False),
            *[(f"ablation: ranker without {g} features",
               {"ranker": RankerConfig(exclude=(g,))}, False) for g in ABLATIONS]):
        recs_e, facts_e = run_engine(train, None, users, memo, measure_latency=lat, **params)
        rows[method] = score(recs_e, truth)
        lists[method] = recs_e
        engines[method] = facts_e
    if items is not None:
        recs_i, facts_i = run_engine(train, items, users, memo)
        rows["InterestEngine() + items"] = score(recs_i, truth)
        lists["InterestEngine() + items"] = recs_i
        engines["InterestEngine() + items"] = facts_i
    for method, f in engines.items():
        fits[method] = {"fit_s": f["fit_s"], "recommend_s": f["recommend_s"]}
        if "latency" in f:
            fits[method]["latency"] = f["latency"]

    best = {m: max(rows[r][m] for r in REFERENCES) for m in ("recall@10", "ndcg@10")}
    for method, r in rows.items():
        r["ratio_recall"] = r["recall@10"] / best["recall@10"] if best["recall@10"] else None
        r["ratio_ndcg"] = r["ndcg@10"] / best["ndcg@10"] if best["ndcg@10"] else None
    for method, r in rows.items():
        print(f"   {method:36s} recall@10 {r['recall@10']:.4f}  NDCG@10 {r['ndcg@10']:.4f}  "
              f"x{r['ratio_recall']:.2f} / x{r['ratio_ndcg']:.2f} of the best reference")
    for method, f in engines.items():
        on = [c for c, w in f["weights"].items() if w > 0]
        if "interests_per_user" in f:
            print(f"   {method}: {f['interests_per_user']:.2f} interests per user; content "
                  "only, filled per interest by importance")
            continue
        print(f"   {method}: components {on}, K={f['n_segments']}, half-life "
              f"{f['half_life_days']:g} d, fit {f['fit_s']:.1f}s, recommend "
              f"{f['recommend_s']:.1f}s")
        if "ranker" in f:
            print(f"   {method}: ranker trained in {f['ranker_fit_s']:.1f}s on {f['ranker']}")
        if "latency" in f:
            lat = f["latency"]
            print(f"   {method}: recommend([u], k={K}) p50 {lat['p50_ms']:.1f} ms, p99 "
                  f"{lat['p99_ms']:.1f} ms over {lat['calls']} calls")
    # cold slice: evaluated users with at most COLD_MAX training events
    n_train = train.groupby("user_id").size()
    cold = [u for u in users if n_train.get(u, 0) <= COLD_MAX]
    cold_truth = {u: truth[u] for u in cold}
    cold_rows = {m: score(lists[m], cold_truth) for m in lists} if cold else {}
    if cold:
        print(f"   cold slice (<= {COLD_MAX} training events): {len(cold)} users", flush=True)
        for m, r in cold_rows.items():
            print(f"   cold {m:36s} recall@10 {r['recall@10']:.4f}  NDCG@10 "
                  f"{r['ndcg@10']:.4f}", flush=True)
    eng = rows["InterestEngine()"]
    bar = {"ratio": BAR, "against": list(REFERENCES),
           "met": bool(eng["ratio_recall"] >= BAR and eng["ratio_ndcg"] >= BAR)}
    bar["not_below_any"] = bool(all(eng[m] >= rows[r][m] for r in REFERENCES
                                    for m in ("recall@10", "ndcg@10")))
    print(f"   bar >= {BAR}x the best of {', '.join(REFERENCES)} on both metrics: "
          f"InterestEngine() {'met' if bar['met'] else 'NOT met'}", flush=True)
    return {"n_events": len(events), "n_train": len(train), "n_test": len(test),
            "n_eval_users": len(users), "n_train_items": int(train["item_id"].nunique()),
            "encode_s": encode_s, "methods": rows, "fits": fits, "engines": engines,
            "bar": bar, "cold": {"max_train_events": COLD_MAX, "n_users": len(cold),
                                 "methods": cold_rows}}


def cold_simulation(name: str, events: pd.DataFrame, items, encoder, *, frac: float = 0.2,
                    seed: int = 0) -> dict:
    """Simulated cold start on data without cold users (5-core sets): a seeded ``frac`` of
    the evaluated users keep only their latest ``COLD_MAX`` training events (the rest of
    their training events are removed for every method), everything is refitted on that
    training set, and each method is scored on those users only, against their test items
    not among the kept events. Methods: popularity, item-kNN and EASE^R (tuned on the
    inner split of this training set), ``InterestEngine()`` and its ranker without text
    features (``RankerConfig(exclude=("text",))``): what text adds for users with at most
    3 interactions.
    """
    from interestflow.ranker import RankerConfig
    from interestflow.synthetic import train_test_split_by_time

    train, test = train_test_split_by_time(events, frac=0.2)
    train = train.reset_index(drop=True)
    users = sorted(ground_truth(train, test))
    rng = np.random.default_rng(seed)
    cold = sorted(rng.choice(np.array(users, dtype=object), size=max(1, round(frac * len(users))),
                             replace=False).tolist())
    is_cold = train["user_id"].isin(set(cold)).to_numpy()
    # latest COLD_MAX per cold user: by time, ties keep the file's order (the split's rule)
    pos = np.arange(len(train))
    order = np.lexsort((pos, train["ts"].to_numpy()))
    rank_from_end = pd.Series(np.empty(len(train), np.int64))
    ranked = train.iloc[order].groupby("user_id").cumcount(ascending=False)
    rank_from_end.iloc[order] = ranked.to_numpy()
    keep = ~is_cold | (rank_from_end.to_numpy() < COLD_MAX)
    train_c = train[keep].reset_index(drop=True)
    truth_all = ground_truth(train_c, test)
    truth = {u: truth_all[u] for u in cold if u in truth_all}
    cold_users = sorted(truth)
    print(f"\n== {name}, simulated cold slice: {len(cold_users)} users keep their latest "
          f"{COLD_MAX} training events ({int((~keep).sum()):,} training events removed)",
          flush=True)
    rows, facts = {}, {}
    rows["popularity"] = score(popularity(train_c, cold_users), truth)
    for method, scorer, grid in (("item-kNN", item_knn_scores, KNN_GRID),
                                 ("EASE^R", ease_scores, EASE_GRID)):
        recs, f = tuned(scorer, grid, train_c, cold_users)
        rows[method] = score(recs, truth)
        facts[method] = {"chosen": f["chosen"]}
    texts = list(dict.fromkeys(train_c["text"]))
    memo = MemoEncoder(encoder, texts, encoder.encode(texts))  # one encode for both engines
    for method, params in (("InterestEngine()", {}),
                           ("InterestEngine(), ranker without text features",
                            {"ranker": RankerConfig(exclude=("text",))})):
        recs, f = run_engine(train_c, None, cold_users, memo, **params)
        rows[method] = score(recs, truth)
        facts[method] = {"fit_s": f["fit_s"]}
    for method, r in rows.items():
        print(f"   cold {method:48s} recall@10 {r['recall@10']:.4f}  NDCG@10 "
              f"{r['ndcg@10']:.4f}", flush=True)
    return {"n_users": len(cold_users), "kept_events": COLD_MAX, "fraction": frac,
            "seed": seed, "removed_events": int((~keep).sum()), "methods": rows,
            "facts": facts}


def cold_markdown(results: dict) -> str:
    lines = [f"Simulated cold slice (issue 13): a seeded {next(iter(results.values()))['fraction']:.0%} "
             f"of the evaluated users keep only their latest {COLD_MAX} training events; every "
             "method is refitted on that training set (baselines tuned on its inner split) and "
             "scored on those users only.", ""]
    for name, res in results.items():
        lines += [f"## {name}", "", f"{res['n_users']} cold users; {res['removed_events']:,} "
                  "training events removed.", "", "| method | recall@10 | NDCG@10 |",
                  "|---|---|---|"]
        lines += [f"| {m} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} |"
                  for m, r in res["methods"].items()]
        lines.append("")
    return "\n".join(lines)


def markdown(results: dict) -> str:
    lines = [f"Bar (issue 13): `InterestEngine()` >= {BAR}x the best of "
             f"{', '.join(REFERENCES)} on recall@10 and on NDCG@10, per data set. item-kNN "
             "and EASE^R choose their parameter by NDCG@10 on an inner temporal split of the "
             "training events (each user's latest 20% of training events), then are refitted "
             "on all training events. Times: fit + scoring of the evaluated users on all "
             "training events (tuning separately); the text methods exclude encoding.", ""]
    for name, res in results.items():
        lines += [f"## {name}", "",
                  f"{res['n_events']:,} events; train {res['n_train']:,} "
                  f"({res['n_train_items']:,} items), test {res['n_test']:,}; "
                  f"{res['n_eval_users']:,} users scored; {res['encode_s']:.0f} s to encode "
                  "the distinct texts.", "",
                  "| method | recall@10 | NDCG@10 | x best reference (recall / NDCG) "
                  "| chosen | fit s |",
                  "|---|---|---|---|---|---|"]
        for method, r in res["methods"].items():
            f = res["fits"].get(method, {})
            chosen = f"{f['param']}={f['chosen']}" if "chosen" in f else ""
            fit = f"{f['fit_s']:.1f}" if "fit_s" in f else ""
            if "tune_s" in f:
                fit += f" (+ tuning {f['tune_s']:.1f})"
            lines.append(f"| {method} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | "
                         f"{r['ratio_recall']:.2f} / {r['ratio_ndcg']:.2f} | {chosen} | {fit} |")
        for method in ("item-kNN", "EASE^R"):
            f = res["fits"][method]
            lines += ["", f"{method}, inner split (training events only), per "
                          f"{f['param']}: " + "; ".join(
                              f"{v}: recall@10 {r['recall@10']:.4f}, NDCG@10 "
                              f"{r['ndcg@10']:.4f}" for v, r in f["inner"].items())
                      + f" ({next(iter(f['inner'].values()))['n_users']} users)."]
        for method, f in res["engines"].items():
            if "interests_per_user" in f:
                lines.append(f"\n{method}: {f['interests_per_user']:.2f} interests per user; "
                             "each list filled from every interest in proportion to its "
                             "importance (content only, no behaviour components).")
                continue
            if "ranker" in f:
                r = f["ranker"]
                lines.append(f"\n{method}: two stages (candidates of every source, then the "
                             f"LightGBM ranker); K={f['n_segments']}; half-life "
                             f"{f['half_life_days']:g} days; fit {f['fit_s']:.1f} s of which "
                             f"candidates {f['candidates_fit_s']:.1f} s and ranker "
                             f"{f['ranker_fit_s']:.1f} s. Ranker: {r['users']:,} users, "
                             f"{r.get('queries', r['users']):,} queries over "
                             f"{r.get('splits', 1)} label splits ({r['rows']:,} candidate "
                             f"rows, {r['positives']:,} positives; "
                             f"{r['users_dropped_no_positive']:,} queries without a positive "
                             f"candidate dropped); boosting rounds {r['rounds']}.")
            else:
                on = ", ".join(c for c, w in f["weights"].items() if w > 0)
                lines.append(f"\n{method}: fusion recommender, components selected on the "
                             f"training period: {on}; K={f['n_segments']}; half-life "
                             f"{f['half_life_days']:g} days; fit {f['fit_s']:.1f} s.")
            if "latency" in f:
                lat = f["latency"]
                lines.append(f"{method}: `recommend([u], k={K})` p50 {lat['p50_ms']:.1f} ms, "
                             f"p99 {lat['p99_ms']:.1f} ms ({lat['calls']:,} calls after "
                             "warm-up).")
        cold = res.get("cold") or {}
        if cold.get("methods"):
            lines += ["", f"Cold slice: the {cold['n_users']} evaluated users with at most "
                          f"{cold['max_train_events']} training events.", "",
                      "| method | recall@10 | NDCG@10 |", "|---|---|---|"]
            lines += [f"| {m} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} |"
                      for m, r in cold["methods"].items()]
        b = res["bar"]
        lines.append(f"\nBar >= {BAR}x the best of {', '.join(b['against'])} on both "
                     f"metrics: `InterestEngine()` {'met' if b['met'] else 'NOT met'}; not "
                     f"below any reference on either metric: "
                     f"{'yes' if b['not_below_any'] else 'no'}.")
        lines.append("")
    return "\n".join(lines)


LOADERS = {"amazon": load_amazon, "movielens": load_movielens,
           "movielens_ratings": load_movielens_ratings}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"),
                    help="folder holding the evaluation data (README there)")
    ap.add_argument("--dataset", choices=[*LOADERS, "all"], default="all")
    ap.add_argument("--cold-only", action="store_true",
                    help="only the simulated cold slice (cold_simulation); results in "
                         "recsys_eval_cold[_<dataset>]")
    args = ap.parse_args(argv)

    wanted = list(LOADERS) if args.dataset == "all" else [args.dataset]
    if data_missing("recsys_eval", args.data, wanted):
        return 0

    from interestflow import Encoder

    encoder = Encoder()
    results = {}
    if args.cold_only:
        for name in wanted:
            events, items = LOADERS[name](args.data)
            results[name] = cold_simulation(name, events, items, encoder)
        out = "recsys_eval_cold" + ("" if args.dataset == "all" else f"_{args.dataset}")
        jp, mp = write_results(out, {"k": K, "datasets": results}, cold_markdown(results))
        print(f"\nwrote {jp} and {mp}")
        return 0
    for name in wanted:
        events, items = LOADERS[name](args.data)
        results[name] = evaluate(name, events, items, encoder)
    out = "recsys_eval" if args.dataset == "all" else f"recsys_eval_{args.dataset}"
    jp, mp = write_results(out, {"k": K, "protocol": "last max(1, round(0.2 n)) per user",
                                 "tuning": "inner split of the training events, same rule; "
                                           "parameter by inner NDCG@10",
                                 "datasets": results}, markdown(results))
    print(f"\nwrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
