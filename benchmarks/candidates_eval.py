"""Candidate recall on real data: share of held-out items that enter each source's set.

Protocol: that of ``recsys_eval.py`` (../shared/data/README.md), imported from it: per user the
last ``max(1, round(0.2 n))`` events held out; truth = the held-out items the user did not
interact with in training (items never seen in training stay in the denominator). The engine
is ``InterestEngine()`` with defaults, fitted on the training events (the default encoder
through a memo, so texts are encoded once); candidates come from
``CandidateGenerator.from_engine(engine)`` with ``CandidateConfig()`` defaults.

Reported per data set, per source and for the union: recall@N (N = the source's cut; the union
at its own size), recall@10 of each source's own ranking, candidates per user (mean / max),
and candidate time per 1,000 users (median of 3 after a warm-up, perf_counter).

    python benchmarks/candidates_eval.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import timeit, write_results  # noqa: E402
from recsys_eval import (AMAZON, MOVIELENS, MemoEncoder, ground_truth,  # noqa: E402
                         load_amazon, load_movielens)


def _recall(lists: list, truth: list) -> float:
    return float(np.mean([len(set(got) & t) / len(t) for got, t in zip(lists, truth)]))


def evaluate(name: str, events, encoder) -> dict:
    from interestflow import InterestEngine
    from interestflow.candidates import SOURCES, CandidateConfig, CandidateGenerator
    from interestflow.synthetic import train_test_split_by_time

    train, test = train_test_split_by_time(events, frac=0.2)
    train = train.reset_index(drop=True)
    truth_map = ground_truth(train, test)
    users = sorted(truth_map)
    print(f"\n== {name}: train {len(train):,} / test {len(test):,}; {len(users):,} users "
          f"with unseen test items", flush=True)
    texts = list(dict.fromkeys(train["text"]))
    t0 = time.perf_counter()
    memo = MemoEncoder(encoder, texts, encoder.encode(texts))
    print(f"   encoded {len(texts):,} texts in {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    engine = InterestEngine(encoder=memo).fit(train[["user_id", "item_id", "text", "ts"]])
    fit_s = time.perf_counter() - t0
    cfg = CandidateConfig()
    t0 = time.perf_counter()
    gen = CandidateGenerator.from_engine(engine, cfg)
    cand_fit_s = time.perf_counter() - t0
    rows = gen.user_rows(users)
    cand = gen.generate(rows)
    timing = timeit(lambda: gen.generate(rows), warmup=0, repeat=3)
    item_ids = engine.item_ids_.to_numpy()
    truth = [truth_map[u] for u in users]
    sizes = np.diff(cand.indptr)
    res = {"n_eval_users": len(users), "n_items": int(len(item_ids)),
           "n_segments": int(engine.n_segments_), "engine_fit_s": fit_s,
           "candidate_fit_s": cand_fit_s, "ease_lambda": gen.ease_lambda_,
           "ease_selection": gen.ease_selection_,
           "trend_window_days": gen.trend_window_days_, "config": cfg.to_dict(),
           "candidates_per_user": {"mean": float(sizes.mean()), "max": int(sizes.max())},
           "s_per_1000_users": timing["median_s"] / len(users) * 1000,
           "timing": timing, "sources": {}}
    union = [item_ids[cand.items[cand.indptr[j]:cand.indptr[j + 1]]] for j in range(len(users))]
    res["union"] = {"N": float(sizes.mean()), "recall@N": _recall(union, truth)}
    for s in SOURCES:
        lists = [item_ids[cand.source_items(s, j)] for j in range(len(users))]
        res["sources"][s] = {"N": cfg.cut(s), "recall@N": _recall(lists, truth),
                             "recall@10": _recall([x[:10] for x in lists], truth),
                             "mean_size": float(np.mean([len(x) for x in lists]))}
    for s, r in res["sources"].items():
        print(f"   {s:20s} recall@{r['N']:<4d} {r['recall@N']:.4f}  recall@10 "
              f"{r['recall@10']:.4f}  (mean {r['mean_size']:.1f} items)")
    print(f"   {'union':20s} recall@{res['union']['N']:.0f}  {res['union']['recall@N']:.4f}; "
          f"{res['candidates_per_user']['mean']:.1f} mean / {res['candidates_per_user']['max']} "
          f"max per user; {res['s_per_1000_users']:.3f} s per 1,000 users", flush=True)
    return res


def markdown(results: dict) -> str:
    lines = []
    for name, r in results.items():
        lines += [f"## {name}", "",
                  f"{r['n_eval_users']:,} users scored; {r['n_items']:,} items; "
                  f"K={r['n_segments']}; EASE lambda {r['ease_lambda']:.4g} (picked on the "
                  f"inner split: {(r['ease_selection'] or {}).get('recall@10_by_multiple')}); "
                  f"trend window "
                  f"{r['trend_window_days']:g} days.", "",
                  "| source | N (cut) | recall@N | recall@10 | mean items |", "|---|---|---|---|---|"]
        for s, x in r["sources"].items():
            lines.append(f"| {s} | {x['N']} | {x['recall@N']:.4f} | {x['recall@10']:.4f} | "
                         f"{x['mean_size']:.1f} |")
        u = r["union"]
        lines.append(f"| **union** | {u['N']:.0f} (mean) | **{u['recall@N']:.4f}** | | "
                     f"{r['candidates_per_user']['mean']:.1f} |")
        lines.append(f"\nCandidates per user: mean {r['candidates_per_user']['mean']:.1f}, max "
                     f"{r['candidates_per_user']['max']}. Time per 1,000 users: "
                     f"{r['s_per_1000_users']:.3f} s (median of 3; candidate fit "
                     f"{r['candidate_fit_s']:.2f} s, engine fit {r['engine_fit_s']:.1f} s).\n")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--dataset", choices=["amazon", "movielens", "all"], default="all")
    args = ap.parse_args(argv)
    wanted = ["amazon", "movielens"] if args.dataset == "all" else [args.dataset]
    paths = {"amazon": args.data / AMAZON, "movielens": args.data / MOVIELENS / "tags.csv"}
    missing = [str(paths[n]) for n in wanted if not paths[n].exists()]
    if missing:
        print(f"candidates_eval: skipped, data not found: {', '.join(missing)}")
        return 0
    from interestflow import Encoder

    encoder = Encoder()
    results = {}
    for name in wanted:
        events, _ = (load_amazon if name == "amazon" else load_movielens)(args.data)
        results[name] = evaluate(name, events, encoder)
    out = "candidates_eval" if args.dataset == "all" else f"candidates_eval_{args.dataset}"
    jp, mp = write_results(out, {"protocol": "last max(1, round(0.2 n)) per user",
                                 "datasets": results}, markdown(results))
    print(f"\nwrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
