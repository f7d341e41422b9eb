"""Benchmark: ItemIndex IVF vs the exact path and FAISS at catalogue scale, on the CPU.

Problem (issue 6): 1,000,000 items x 384 and 100,000 queries, k = 10. Bar: IVF with its
default ``nlist``/``nprobe`` reaches recall@10 >= 0.95 against the exact path at >= 5x the
exact path's queries/s.

Data (synthetic, generated in chunks of 65,536 rows from fixed seeds; nothing is downloaded).
``--data minilm`` (default): unit vectors ``mu + R (w * (t + s + width * a_n * g))``
normalised, with 200 topics ``t``, 5,000 sub-topics ``s`` (Zipf(0.8) sizes), per-point
Gaussian noise ``g`` of log-uniform width in [0.3, 1], all in a basis whose variances decay
like ``j ** -0.85`` (``w``; a fixed random rotation ``R``), a shared mean direction ``mu``
(the anisotropy of transformer embeddings) and 2% exact duplicates. Calibrated against
all-MiniLM-L6-v2 embeddings of 70,435 texts of the shared evaluation data (Amazon review
sentences and summaries, MovieLens titles and tags), at the same size (synthetic vs real):

- IVF recall@10 of item queries, nlist 1024, nprobe 1/4/8/16/32/64: 0.48/0.74/0.82/0.88/0.94/
  0.97 vs 0.48/0.73/0.82/0.88/0.93/0.96 (what matters here: isotropic-noise models such as
  ``--data isotropic``, the model of ``benchmarks/cosine_topk.py``, reach 0.99 at nprobe 4 and
  make any IVF look good);
- spectrum: power-law slope of the covariance eigenvalues -0.90 vs -0.83, share of the top 10
  components 0.32 vs 0.26; norm of the mean 0.35 vs 0.33; mean pairwise cosine 0.12 vs 0.11;
  median cosine of the 1st / 10th / 32nd / 100th neighbour 0.62/0.54/0.50/0.45 vs
  0.72/0.60/0.55/0.49 (real text has more near-paraphrases).

Queries ("users", what interestflow retrieves for): the normalised time-decayed mean
(weights 2^-U(0,3)) of 20-60 event vectors drawn from 3-10 of the user's sub-topics. At the
calibration size their recall curve is 0.33/0.64/0.76/0.86/0.92/0.96 vs 0.23/0.53/0.69/0.84/
0.93/0.98 for the real Amazon reviewers (mean of each reviewer's review sentences). Item-like
queries (fresh item draws: similar-item lookups) are scored too. ``--data hard``: 20,000
sub-topics with wider spread (recall 0.94/0.89 at nprobe 64 of 1024), a stress case.

Methods, all in this process, one after the other (each index is dropped before the next
one is built, to bound memory):

- **exact**: ``ItemIndex(kind="exact")`` (numba cosine top-k on this CPU + exact re-score);
  timed on ``--exact-queries`` of the queries (5,000 by default) and extrapolated linearly to
  all queries (each query costs the same: a full scan of the items); its results are the
  ground truth for recall.
- **ivf**: ``ItemIndex(kind="ivf")`` with default ``nlist``/``nprobe`` and its default CPU
  scan (``scan="batched"``): build (train + add) time, search time of all queries, recall@10
  against exact on the subset (plain: shared rows / k; tie-aware: returned rows whose exact
  score reaches the exact 10th score, which counts the other copy of a duplicated item as a
  hit), and an ``nprobe`` sweep on the subset.
- **ivf, scan='faiss'**: the same index searched by FAISS's own ``index.search`` on the subset.
- **faiss IndexFlatIP**: FAISS brute force (float32) on the subset, a reference row.

Rule check (``--rule-sizes``, ``--rule-data``): the default ``nlist``/``nprobe`` on smaller
catalogues of each synthetic variant and, with ``--real``, on the real MiniLM embeddings
above (encoded here with the packaged model, or read from ``--real-cache``; the whole set
and random quarters and halves of it), with recall at
``nprobe / 2``, ``nprobe`` and ``2 nprobe`` and the exact and IVF queries/s (this is the
evidence for ``AUTO_IVF_MIN_ITEMS``).

    python benchmarks/retrieval.py --real --real-cache /tmp/if_real.npy   # results/retrieval_cpu.*
    python benchmarks/retrieval.py --quick             # small smoke run, no result files
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import write_results  # noqa: E402

BARS = {"recall_at_10": 0.95, "speedup_vs_exact": 5.0}
#: name: (topics, sub-topics, topic scale, sub-topic scale, noise scale, noise width low, high,
#: spectrum exponent beta, norm of the mean direction)
VARIANTS = {
    "minilm": (200, 5000, 0.6, 0.5, 2.0, 0.3, 1.0, 0.85, 0.5),
    "hard": (200, 20_000, 0.6, 0.8, 2.0, 0.3, 1.0, 0.85, 0.5),
    "isotropic": (200, 5000, 0.6, 0.5, 1.0, 0.3, 1.0, 0.0, 0.4),
}
CHUNK = 1 << 16
USER_CHUNK = 2048
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ------------------------------------------------------------------------------------ data


class Corpus:
    """Sentence-embedding-like unit vectors, generated chunk by chunk from fixed seeds.

    ``x = mu + R (w * (t + s + width * a_n * g))``: ``t`` a topic and ``s`` a sub-topic
    offset (Gaussian, scales ``a_t``, ``a_s``), ``g`` per-point Gaussian noise of log-uniform
    width, all in a basis whose variances decay like ``j ** -beta`` (``w``), turned by a
    fixed random rotation ``R``; then L2-normalised. See the module docstring for the
    calibration.
    """

    def __init__(self, variant: str = "minilm", dim: int = 384, seed: int = 0):
        if variant not in VARIANTS:
            raise SystemExit(f"--data {variant!r}: pass one of {', '.join(VARIANTS)}")
        (n_topics, n_sub, a_t, a_s, self.a_n, self.wlo, self.whi, beta,
         mu_norm) = VARIANTS[variant]
        self.dim, self.seed = dim, seed
        rng = np.random.default_rng([seed, 0])
        w = np.arange(1, dim + 1) ** (-beta / 2)
        self.w = (w * np.sqrt(1.0 / (w ** 2).sum())).astype(np.float32)  # dim^-1/2 when flat
        self.rot = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
        mu = rng.standard_normal(dim)
        self.mu = (mu / np.linalg.norm(mu) * mu_norm).astype(np.float32)
        topics = rng.standard_normal((n_topics, dim)) * a_t
        subs = topics[rng.integers(0, n_topics, n_sub)] + rng.standard_normal((n_sub, dim)) * a_s
        self.subs = subs.astype(np.float32)
        p = 1.0 / np.arange(1, n_sub + 1) ** 0.8
        self.cdf = np.cumsum(p / p.sum())

    def _labels(self, rng, n):
        return np.minimum(np.searchsorted(self.cdf, rng.random(n)), len(self.cdf) - 1)

    def _points(self, rng, labels):
        width = np.exp(rng.uniform(np.log(self.wlo), np.log(self.whi),
                                   (len(labels), 1))).astype(np.float32)
        z = self.subs[labels] + rng.standard_normal((len(labels), self.dim),
                                                     dtype=np.float32) * (self.a_n * width)
        x = self.mu + (z * self.w) @ self.rot.T
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def items(self, n: int, stream: int = 1) -> np.ndarray:
        """(n, dim) float32 unit rows; 2% of each chunk are exact copies of other rows."""
        out = np.empty((n, self.dim), np.float32)
        for c, a in enumerate(range(0, n, CHUNK)):
            b = min(n, a + CHUNK)
            rng = np.random.default_rng([self.seed, stream, c])
            x = self._points(rng, self._labels(rng, b - a))
            nd = (b - a) // 50
            perm = rng.permutation(b - a)
            x[perm[nd:2 * nd]] = x[perm[:nd]]
            out[a:b] = x
        return out

    def users(self, n: int, stream: int = 2) -> np.ndarray:
        """(n, dim) float32: normalised time-decayed means (weights 2^-U(0,3)) of 20-60 event
        vectors drawn from 3-10 interests (sub-topics) of the user."""
        out = np.empty((n, self.dim), np.float32)
        for c, a in enumerate(range(0, n, USER_CHUNK)):
            m = min(n, a + USER_CHUNK) - a
            rng = np.random.default_rng([self.seed, stream, c])
            n_int = rng.integers(3, 11, m)
            n_ev = rng.integers(20, 61, m)
            interests = self._labels(rng, int(n_int.sum()))
            int_off = np.concatenate([[0], np.cumsum(n_int)[:-1]])
            owner = np.repeat(np.arange(m), n_ev)
            pick = int_off[owner] + (rng.random(len(owner)) * n_int[owner]).astype(np.int64)
            x = self._points(rng, interests[pick])
            x *= (0.5 ** rng.uniform(0, 3, len(owner))).astype(np.float32)[:, None]
            v = np.add.reduceat(x, np.concatenate([[0], np.cumsum(n_ev)[:-1]]), axis=0)
            out[a:a + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out


def real_texts():
    """Texts of the shared evaluation data and, per text, the Amazon reviewer who wrote it
    (None for summaries' duplicates, titles and tags)."""
    import pandas as pd

    df = pd.read_csv(DATA / "amazon_musical_instruments_5core" / "Musical_instruments_reviews.csv")
    texts, owners = [], []
    for user, t in zip(df.reviewerID, df.reviewText):
        if isinstance(t, str):
            for s in re.split(r"(?<=[.!?])\s+", t):
                if len(s.strip()) > 15:
                    texts.append(s.strip())
                    owners.append(user)
    texts += df.summary.dropna().astype(str).tolist()
    ml = DATA / "movielens_ml-latest-small"
    texts += pd.read_csv(ml / "movies.csv").title.tolist()
    texts += pd.read_csv(ml / "tags.csv").tag.astype(str).unique().tolist()
    owners += [None] * (len(texts) - len(owners))
    first = {}
    for t, o in zip(texts, owners):
        if t.strip() and t not in first:
            first[t] = o
    return list(first), list(first.values())


def real_embeddings(cache: str | None):
    """(vectors (n, 384), owners) of :func:`real_texts` with all-MiniLM-L6-v2 (local files)."""
    texts, owners = real_texts()
    if cache and Path(cache).is_file():
        vec = np.load(cache)
        if vec.shape[0] != len(texts):
            raise SystemExit(f"--real-cache {cache} has {vec.shape[0]} rows, expected "
                             f"{len(texts)}; delete it to re-encode")
        return vec, owners
    from interestflow import Encoder

    t0 = time.perf_counter()
    vec = Encoder().encode(texts)
    print(f"encoded {len(texts)} texts in {time.perf_counter() - t0:.0f} s", flush=True)
    if cache:
        np.save(cache, vec)
    return vec, owners


# ------------------------------------------------------------------------------------ helpers


def recall(ref_i, got_i) -> float:
    """Shared rows / k."""
    return float(np.mean([len(set(a) & set(b)) for a, b in
                          zip(ref_i.tolist(), got_i.tolist())]) / ref_i.shape[1])


def tie_recall(ref_s, got_s) -> float:
    """Returned rows whose exact score reaches the exact k-th score (scores are exact cosines
    on both sides), so a duplicate of a top-k item counts as a hit."""
    return float(np.mean(got_s >= ref_s[:, -1:]))


def timed(fn):
    """(result, wall seconds); the process CPU seconds of the call go to ``timed.cpu``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    timed.cpu = time.process_time() - c0
    return out, time.perf_counter() - t0


timed.cpu = 0.0


def peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def ivf_at(index, nprobe, queries, k):
    """Search with another nprobe (the benchmark's sweep), restoring the default after."""
    default = index.nprobe_
    index.set_nprobe(nprobe)
    try:
        return timed(lambda: index.search(queries, k))
    finally:
        index.set_nprobe(default)


# ------------------------------------------------------------------------------------ main run


def main_run(args) -> dict:
    import faiss

    from interestflow.retrieval import ItemIndex

    corpus = Corpus(args.data, args.dim)
    items, t_gen_items = timed(lambda: corpus.items(args.n_items))
    users, t_gen_q = timed(lambda: corpus.users(args.n_queries))
    item_q = corpus.items(args.exact_queries, stream=3)
    sub = users[:args.exact_queries]
    print(f"data: {args.n_items:,} items in {t_gen_items:.1f} s, {args.n_queries:,} user "
          f"queries in {t_gen_q:.1f} s", flush=True)
    k = args.k
    rows = {}

    def row(n_timed, wall, cpu, build, extrapolated, **extra):
        return {"queries_timed": n_timed, "search_s": wall, "cpu_s": cpu, "qps": n_timed / wall,
                "cpu_ms_per_query": 1e3 * cpu / n_timed, "build_s": build,
                "all_queries_s": wall * len(users) / n_timed, "extrapolated": extrapolated,
                **extra}

    # exact: the ground truth on the subset
    exact, t_fit = timed(lambda: ItemIndex("exact", device="cpu").fit(items))
    exact.search(sub[:64], k)  # JIT compile / thread start-up
    (ex_s, ex_i), _ = timed(lambda: exact.search(sub, k))
    (exi_s, exi_i), _ = timed(lambda: exact.search(item_q, k))

    # IVF, default nlist / nprobe, default CPU scan
    ivf, t_build = timed(lambda: ItemIndex("ivf", device="cpu").fit(items))
    print(f"ivf: built in {t_build:.1f} s (nlist={ivf.nlist_}, nprobe={ivf.nprobe_}, "
          f"scan={ivf.scan_!r})", flush=True)
    ivf.search(users[:256], k)  # warm-up (numba compile or cache load)
    # paired timings on the subset, alternating, so that both see the same machine load
    paired = {"exact": [], "ivf": []}
    for _ in range(args.pairs):
        for name, index in (("exact", exact), ("ivf", ivf)):
            _, wall = timed(lambda: index.search(sub, k))
            paired[name].append((wall, timed.cpu))
    med = {name: sorted(v)[len(v) // 2] for name, v in paired.items()}
    rows["exact"] = row(len(sub), *med["exact"], t_fit, True, recall_at_k=1.0,
                        tie_recall_at_k=1.0, paired_runs=paired["exact"])
    exact_qps = rows["exact"]["qps"]
    print(f"exact: {exact_qps:.0f} q/s on {len(sub):,} user queries (median of "
          f"{args.pairs})", flush=True)
    exact = None
    gc.collect()
    (iv_s, iv_i), t_ivf = timed(lambda: ivf.search(users, k))
    cpu_ivf = timed.cpu
    (ivi_s, ivi_i), _ = timed(lambda: ivf.search(item_q, k))
    rows["ivf"] = row(len(users), t_ivf, cpu_ivf, t_build, False,
                      nlist=ivf.nlist_, nprobe=ivf.nprobe_, scan=ivf.scan_,
                      recall_at_k=recall(ex_i, iv_i[:len(sub)]),
                      tie_recall_at_k=tie_recall(ex_s, iv_s[:len(sub)]),
                      item_queries_recall_at_k=recall(exi_i, ivi_i),
                      item_queries_tie_recall_at_k=tie_recall(exi_s, ivi_s),
                      paired_runs=paired["ivf"],
                      paired_speedup=med["exact"][0] / med["ivf"][0],
                      paired_cpu_speedup=med["exact"][1] / med["ivf"][1])
    print(f"ivf: {rows['ivf']['qps']:.0f} q/s on all queries, recall "
          f"{rows['ivf']['recall_at_k']:.4f}; paired on the subset: "
          f"{rows['ivf']['paired_speedup']:.1f}x exact (CPU time "
          f"{rows['ivf']['paired_cpu_speedup']:.1f}x)", flush=True)
    sweep = []
    default = ivf.nprobe_
    for p in sorted({max(1, default // 4), max(1, default // 2), default, default * 2}):
        if p > ivf.nlist_:
            continue
        (s, i), t = ivf_at(ivf, p, sub, k)
        cpu = timed.cpu
        (si, ii), _ = ivf_at(ivf, p, item_q, k)
        sweep.append({"nprobe": p, "qps": len(sub) / t, "cpu_ms_per_query": 1e3 * cpu / len(sub),
                      "recall_at_k": recall(ex_i, i), "tie_recall_at_k": tie_recall(ex_s, s),
                      "item_queries_recall_at_k": recall(exi_i, ii)})
        print(f"  nprobe={p}: {sweep[-1]['qps']:.0f} q/s, recall {sweep[-1]['recall_at_k']:.4f}"
              f" (items {sweep[-1]['item_queries_recall_at_k']:.4f})", flush=True)

    # the same index searched by FAISS's own (per query) scan, on the subset
    ivf.scan_ = "faiss"
    ivf.search(sub[:256], k)
    (fs_s, fs_i), t_fs = timed(lambda: ivf.search(sub, k))
    rows["ivf, scan='faiss'"] = row(len(sub), t_fs, timed.cpu, t_build, True,
                                    recall_at_k=recall(ex_i, fs_i),
                                    tie_recall_at_k=tie_recall(ex_s, fs_s))
    print(f"ivf scan='faiss': {len(sub) / t_fs:.0f} q/s", flush=True)
    ivf = None
    gc.collect()

    # FAISS brute force reference (float32 scores: tie-aware with a 1e-6 slack)
    def flat():
        f = faiss.IndexFlatIP(args.dim)
        f.add(items)
        return f

    index, t_flat_add = timed(flat)
    index.search(sub[:64], k)
    (fl_s, fl_i), t_flat = timed(lambda: index.search(sub, k))
    rows["faiss IndexFlatIP"] = row(len(sub), t_flat, timed.cpu, t_flat_add, True,
                                    recall_at_k=recall(ex_i, fl_i),
                                    tie_recall_at_k=float(np.mean(fl_s >= ex_s[:, -1:] - 1e-6)))
    index = None
    for r in rows.values():
        r["speedup_vs_exact"] = r["qps"] / exact_qps
        r["cpu_speedup_vs_exact"] = rows["exact"]["cpu_ms_per_query"] / r["cpu_ms_per_query"]
    iv = rows["ivf"]
    bars = {"IVF recall@10 >= 0.95 (default nlist/nprobe)":
            iv["recall_at_k"] >= BARS["recall_at_10"],
            "IVF queries/s >= 5x exact": iv["speedup_vs_exact"] >= BARS["speedup_vs_exact"]}
    return {"rows": rows, "sweep": sweep, "bars": bars,
            "data_s": {"items": t_gen_items, "queries": t_gen_q}, "faiss": faiss.__version__,
            "faiss_threads": faiss.omp_get_max_threads()}


# ------------------------------------------------------------------------------------ rule check


def rule_case(name, items, queries_by_kind, k):
    """Default nlist/nprobe on one catalogue: recall at nprobe/2, nprobe, 2 nprobe and the
    exact and IVF queries/s (all query kinds together)."""
    from interestflow.retrieval import ItemIndex

    allq = np.concatenate(list(queries_by_kind.values()))
    index = ItemIndex("exact", device="cpu").fit(items)
    index.search(allq[:64], k)
    _, t_exact = timed(lambda: index.search(allq, k))
    c_exact = timed.cpu
    truth = {q: index.search(v, k) for q, v in queries_by_kind.items()}
    index = None
    index, t_build = timed(lambda: ItemIndex("ivf", device="cpu").fit(items))
    index.search(allq[:64], k)
    _, t_ivf = timed(lambda: index.search(allq, k))
    out = {"case": name, "n_items": len(items), "nlist": index.nlist_, "nprobe": index.nprobe_,
           "build_s": t_build, "exact_qps": len(allq) / t_exact, "ivf_qps": len(allq) / t_ivf,
           "cpu_speedup": c_exact / timed.cpu,
           "n_queries": {q: len(v) for q, v in queries_by_kind.items()}, "by_nprobe": []}
    default = index.nprobe_
    for p in sorted({max(1, default // 2), default, min(index.nlist_, 2 * default)}):
        row = {"nprobe": p}
        for q, v in queries_by_kind.items():
            (s, i), _ = ivf_at(index, p, v, k)
            row[q] = {"recall_at_k": recall(truth[q][1], i),
                      "tie_recall_at_k": tie_recall(truth[q][0], s)}
        out["by_nprobe"].append(row)
    d = next(r for r in out["by_nprobe"] if r["nprobe"] == default)
    print(f"rule {name} n={len(items):,} nlist={index.nlist_} nprobe={default}: " + ", ".join(
        f"{q} recall {d[q]['recall_at_k']:.4f}" for q in queries_by_kind)
        + f"; exact {out['exact_qps']:.0f} q/s, ivf {out['ivf_qps']:.0f} q/s", flush=True)
    return out


def rule_check(args) -> list:
    cases = []
    for variant in args.rule_data.split(","):
        corpus = Corpus(variant.strip(), args.dim, seed=1)
        users = corpus.users(args.rule_queries)
        item_q = corpus.items(args.rule_queries, stream=3)
        for n in args.rule_sizes:
            cases.append(rule_case(variant.strip(), corpus.items(n),
                                   {"users": users, "items": item_q}, args.k))
    if args.real:
        vec, owners = real_embeddings(args.real_cache)
        rng = np.random.default_rng(0)
        held = np.zeros(len(vec), bool)
        held[rng.choice(len(vec), args.rule_queries, replace=False)] = True
        owners = np.array([o if o is not None else "" for o in owners], object)
        users = []
        for o in np.unique(owners[owners != ""]):
            v = vec[owners == o].astype(np.float64).mean(0)
            users.append(v / np.linalg.norm(v))
        pool = vec[~held]
        queries = {"users": np.asarray(users, np.float32), "items": vec[held]}
        # the whole set and random quarters / halves of it: how nprobe must grow with nlist
        for frac in (0.25, 0.5, 1.0):
            n = int(len(pool) * frac)
            rows = np.sort(rng.choice(len(pool), n, replace=False)) if frac < 1 else slice(None)
            cases.append(rule_case("real MiniLM", pool[rows], queries, args.k))
    return cases


# ------------------------------------------------------------------------------------ report


def markdown(args, res, load) -> str:
    lines = [f"Load average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f} on "
             f"{os.cpu_count()} cores shared with other processes: times are indicative."]
    if res.get("main"):
        m = res["main"]
        r = m["rows"]
        iv = r["ivf"]
        lines += [
            "", f"## {args.n_items:,} items x {args.dim}, {args.n_queries:,} queries, "
            f"k = {args.k}", "",
            f"Data: `{args.data}` synthetic sentence-embedding-like unit vectors (see the "
            "script's docstring: calibrated against all-MiniLM-L6-v2 embeddings, including "
            "their IVF recall curve); queries are user-like (decayed means of 20-60 event "
            f"vectors from 3-10 interests). FAISS {m['faiss']}, {m['faiss_threads']} OpenMP "
            f"threads. IVF (`ItemIndex(kind='ivf')`, default nlist = {iv['nlist']}, nprobe = "
            f"{iv['nprobe']}, scan = {iv['scan']!r}) is timed on all {args.n_queries:,} "
            f"queries; the exact path (`ItemIndex(kind='exact')`), the same IVF index searched "
            f"by FAISS's own per-query scan and FAISS IndexFlatIP are timed on the first "
            f"{args.exact_queries:,} and **extrapolated** linearly to all queries (the first "
            "two scan every item per query). Recall@10 against the exact path on those "
            f"{args.exact_queries:,} queries (tie-aware: a returned row counts when its exact "
            "score reaches the exact 10th score; the data hold 2% exact duplicates). One "
            "timed run each after a warm-up call, except the paired subset timings below.",
            "",
            "| method | queries timed | search s | queries/s | vs exact | CPU ms / query | "
            f"vs exact (CPU) | build s | all {args.n_queries:,} queries s | recall@10 | "
            "tie-aware |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, row in r.items():
            ext = " (extrapolated)" if row["extrapolated"] else ""
            lines.append(
                f"| {name} | {row['queries_timed']:,} | {row['search_s']:.1f} | "
                f"{row['qps']:.0f} | {row['speedup_vs_exact']:.1f}x | "
                f"{row['cpu_ms_per_query']:.2f} | {row['cpu_speedup_vs_exact']:.1f}x | "
                f"{row['build_s']:.1f} | {row['all_queries_s']:.0f}{ext} | "
                f"{row['recall_at_k']:.4f} | {row['tie_recall_at_k']:.4f} |")
        lines += ["", f"Exact: median of {args.pairs} runs on the subset, alternating with "
                  f"{args.pairs} IVF runs on the same queries; paired IVF / exact speed-up on "
                  f"the subset: {iv['paired_speedup']:.1f}x wall, {iv['paired_cpu_speedup']:.1f}x "
                  "process CPU time (CPU time is less sensitive to other processes on a shared "
                  "machine). CPU ms / query: process CPU time (both threads) per query.",
                  "", f"Item-like queries ({args.exact_queries:,} fresh item draws), IVF: "
                  f"recall@10 {iv['item_queries_recall_at_k']:.4f} (tie-aware "
                  f"{iv['item_queries_tie_recall_at_k']:.4f}).", "",
                  "nprobe sweep of the IVF index on the subset:", "",
                  "| nprobe | queries/s | CPU ms / query | recall@10 users | tie-aware | "
                  "recall@10 items |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for s in m["sweep"]:
            lines.append(f"| {s['nprobe']} | {s['qps']:.0f} | {s['cpu_ms_per_query']:.2f} | "
                         f"{s['recall_at_k']:.4f} | {s['tie_recall_at_k']:.4f} | "
                         f"{s['item_queries_recall_at_k']:.4f} |")
        lines += ["", "Bars: " + "; ".join(f"{k}: {'yes' if v else 'NO'}"
                                          for k, v in m["bars"].items())]
    if res.get("rule"):
        lines += ["", "## Default nlist / nprobe on other catalogues", "",
                  f"{args.rule_queries:,} user-like and {args.rule_queries:,} item-like queries "
                  "per synthetic case (real MiniLM: one query per Amazon reviewer, the mean of "
                  f"their review sentence vectors, and {args.rule_queries:,} held-out texts); "
                  "recall@10 against the exact path; queries/s over both query sets.", "",
                  "| data | items | nlist | nprobe | recall users | recall items | "
                  "users / items at nprobe/2 | at 2 nprobe | exact q/s | IVF q/s | IVF / exact "
                  "CPU time | IVF build s |",
                  "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|"]
        for c in res["rule"]:
            by = {r["nprobe"]: r for r in c["by_nprobe"]}
            d = by[c["nprobe"]]

            def pair(r):
                if r is None:
                    return "-"
                return f"{r['users']['recall_at_k']:.3f} / {r['items']['recall_at_k']:.3f}"

            lo = by.get(max(1, c["nprobe"] // 2)) if c["nprobe"] > 1 else None
            hi = by.get(min(c["nlist"], 2 * c["nprobe"])) if c["nprobe"] < c["nlist"] else None
            lines.append(f"| {c['case']} | {c['n_items']:,} | {c['nlist']} | {c['nprobe']} | "
                         f"{d['users']['recall_at_k']:.4f} | {d['items']['recall_at_k']:.4f} | "
                         f"{pair(lo)} | {pair(hi)} | {c['exact_qps']:.0f} | "
                         f"{c['ivf_qps']:.0f} | {c['cpu_speedup']:.1f}x | {c['build_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="minilm", help=f"one of {', '.join(VARIANTS)}")
    ap.add_argument("--n-items", type=int, default=1_000_000)
    ap.add_argument("--n-queries", type=int, default=100_000)
    ap.add_argument("--exact-queries", type=int, default=5000,
                    help="queries the exact path and IndexFlatIP are timed on (and recall uses)")
    ap.add_argument("--pairs", type=int, default=3,
                    help="alternating exact / IVF timings on the subset (median)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rule-sizes", default="30000,100000,300000",
                    help="catalogue sizes of the rule check, comma-separated ('' to skip)")
    ap.add_argument("--rule-data", default="minilm,hard,isotropic")
    ap.add_argument("--rule-queries", type=int, default=1000)
    ap.add_argument("--real", action="store_true",
                    help="add real all-MiniLM-L6-v2 embeddings of ../shared/data to the rule check")
    ap.add_argument("--real-cache", help=".npy file holding / receiving those embeddings")
    ap.add_argument("--skip-main", action="store_true", help="only the rule check")
    ap.add_argument("--quick", action="store_true",
                    help="50,000 items, 5,000 queries, exact on 1,000; rule check at 20,000; "
                         "prints, writes no result files")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_items, args.n_queries, args.exact_queries = 50_000, 5000, 1000
        args.rule_sizes, args.rule_queries = "20000", 300
    args.rule_sizes = [int(s) for s in args.rule_sizes.split(",") if s.strip()]
    if args.real and not DATA.is_dir():
        raise SystemExit(f"--real: {DATA} does not exist (the shared evaluation data)")
    load0 = os.getloadavg()[0]
    res = {}
    if not args.skip_main:
        res["main"] = main_run(args)
    if args.rule_sizes or args.real:
        res["rule"] = rule_check(args)
    res["peak_rss_mb"] = peak_rss_mb()
    load = (load0, os.getloadavg()[0])
    md = markdown(args, res, load)
    print(md)
    if not args.quick:
        payload = {"problem": {"n_items": args.n_items, "n_queries": args.n_queries,
                               "exact_queries": args.exact_queries, "dim": args.dim,
                               "k": args.k, "data": args.data},
                   "bars": BARS, "load_average_1min": load, "command": sys.argv, **res}
        paths = write_results("retrieval_cpu", payload, md)
        print("wrote", *paths)


if __name__ == "__main__":
    main()
