"""Benchmark: per-user time-decayed mean, native C++/OpenMP vs the numpy reference.

Same inputs for every backend (default 1,000,000 events x 384 float32 over ~50,000 users,
~20 events each), timed through the public ``decayed_user_means`` (input checks included),
median of ``--repeat`` runs after one warm-up.  GB/s is bytes of vectors read / median time.

    python benchmarks/native_decay.py                  # 1M x 384, results/native_decay.*
    python benchmarks/native_decay.py --events 200000  # quicker
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import timeit, write_results  # noqa: E402

from interestflow import _native  # noqa: E402
from interestflow.interests import decayed_user_means  # noqa: E402


def make_inputs(n_events: int, n_users: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    # every user has >= 1 event; the rest spread multinomially (~n_events / n_users each)
    counts = rng.multinomial(n_events - n_users, np.full(n_users, 1.0 / n_users)) + 1
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    vectors = rng.standard_normal((n_events, dim), dtype=np.float32)
    ts = 1.6e9 + rng.uniform(0, 2 * 365 * 86400.0, n_events)
    weights = rng.uniform(0.5, 2.0, n_events)
    return vectors, offsets, ts, weights, counts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--half-life-days", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-float16", action="store_true", help="skip the float16-input run")
    p.add_argument("--no-write", action="store_true", help="print only, do not write results/")
    args = p.parse_args(argv)

    vectors, offsets, ts, weights, counts = make_inputs(args.events, args.users, args.dim,
                                                        args.seed)
    kw = dict(half_life_days=args.half_life_days)
    n_cores = os.cpu_count() or 1
    runs = [("numpy", "numpy", vectors, 0), ("native", "native", vectors, 0)]
    if n_cores > 1:
        runs.append(("native 1 thread", "native", vectors, 1))
    if not args.no_float16:
        runs.append(("native float16 input", "native", vectors.astype(np.float16), 0))

    results, outputs = [], {}
    for label, backend, vec, threads in runs:
        out = {}

        def call(vec=vec, backend=backend, threads=threads, out=out):
            out["r"] = decayed_user_means(vec, offsets, ts, weights, backend=backend,
                                          n_threads=threads, **kw)

        t = timeit(call, warmup=1, repeat=args.repeat)
        outputs[label] = out["r"]
        t.update(label=label, backend=backend, n_threads=threads or "all",
                 vector_dtype=str(vec.dtype), gb_per_s=vec.nbytes / t["median_s"] / 1e9)
        results.append(t)
        print(f"{label:24s} median {t['median_s']:.4f} s  (min {t['min_s']:.4f}, "
              f"max {t['max_s']:.4f})  {t['gb_per_s']:.2f} GB/s", flush=True)

    base = results[0]["median_s"]
    ref_means, ref_log2 = outputs["numpy"]
    for r in results:
        r["speedup_vs_numpy"] = base / r["median_s"]
        means, log2s = outputs[r["label"]]
        if r["vector_dtype"] == "float32":
            r["max_abs_diff_vs_numpy"] = float(np.abs(means - ref_means).max())
            r["max_abs_diff_log2_weight_sum"] = float(
                np.abs(log2s - ref_log2)[np.isfinite(ref_log2)].max())
        else:  # float16 input rounds the vectors themselves; compare with numpy on the same
            ref16 = decayed_user_means(vectors.astype(np.float16), offsets, ts, weights,
                                       backend="numpy", **kw)[0]
            r["max_abs_diff_vs_numpy"] = float(np.abs(means - ref16).max())
        print(f"{r['label']:24s} speed-up {r['speedup_vs_numpy']:.2f}x  max |diff| vs numpy "
              f"{r['max_abs_diff_vs_numpy']:.3g}")

    payload = {
        "config": {"n_events": args.events, "n_users": args.users, "dim": args.dim,
                   "events_per_user_mean": float(counts.mean()),
                   "events_per_user_max": int(counts.max()),
                   "half_life_days": args.half_life_days, "repeat": args.repeat,
                   "seed": args.seed, "native_openmp": bool(_native.openmp),
                   "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "results": results,
    }
    rows = "\n".join(
        f"| {r['label']} | {r['vector_dtype']} | {r['n_threads']} | {r['median_s']:.4f} "
        f"({r['min_s']:.4f}-{r['max_s']:.4f}) | {r['gb_per_s']:.2f} | "
        f"{r['speedup_vs_numpy']:.2f}x | {r['max_abs_diff_vs_numpy']:.2g} |" for r in results)
    md = (f"{args.events:,} events x {args.dim} over {args.users:,} users "
          f"(mean {counts.mean():.1f}, max {counts.max()} events per user), half-life "
          f"{args.half_life_days} days; median of {args.repeat} after one warm-up, through "
          "`decayed_user_means` (input checks included). GB/s = bytes of vectors read / time.\n\n"
          "| backend | vectors | threads | median s (min-max) | GB/s | speed-up vs numpy | "
          "max abs diff vs numpy |\n|---|---|---|---|---|---|---|\n" + rows + "\n")
    if not args.no_write:
        jp, mp = write_results("native_decay", payload, md)
        print(f"wrote {jp} and {mp}")
    return payload


if __name__ == "__main__":
    main()
