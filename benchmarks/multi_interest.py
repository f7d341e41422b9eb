"""Benchmark: per-user multi-interest (Ward per user), native C++/OpenMP vs the scipy reference.

Synthetic unit vectors (default 100,000 users x 30 events x 384 float32), each user with 1-4
planted interests: an event is ``unit(center + noise)`` with per-dimension noise
``1 / sqrt(dim)``, so two events of one interest have cosine ~0.5 and of two interests ~0.
The data is generated and clustered in chunks of ``--chunk`` users (users are independent, so
the native time is the sum of the chunk calls; generation is not timed), which keeps memory at
one chunk (~0.5 GB for 10,000 users) instead of 4.6 GB.

The scipy reference (``linkage(method="ward")`` + ``fcluster`` per user, the same public
function with ``backend="reference"``) is timed on the first ``--ref-users`` users only and
its time extrapolated linearly to all users (every user has the same number of events, so the
per-user cost is the same); the native backend is timed on that same subsample too, and both
outputs are checked to be identical there.  Derived figures: users/s, and how often the
default threshold recovers the planted interests (count and adjusted Rand index).

    python benchmarks/multi_interest.py                       # full size, writes results/
    python benchmarks/multi_interest.py --users 20000 --no-write   # quicker
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import write_results  # noqa: E402

from interestflow.multi_interest import DEFAULT_THRESHOLD, user_interests  # noqa: E402

DAY = 86_400.0


def make_chunk(n_users: int, n_events: int, dim: int, rng: np.random.Generator):
    """(vectors float32 (n_users * n_events, dim), offsets, ts, weights, planted labels)."""
    k = rng.integers(1, 5, n_users)  # planted interests per user
    centers = rng.standard_normal((n_users, 4, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=2, keepdims=True)
    planted = (rng.random((n_users, n_events)) * k[:, None]).astype(np.int64)
    x = centers[np.arange(n_users)[:, None], planted].reshape(-1, dim)
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(1.0 / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    offsets = np.arange(0, n_users * n_events + 1, n_events, dtype=np.int64)
    ts = 1.7e9 + rng.uniform(0, 180 * DAY, n_users * n_events)
    weights = rng.uniform(0.5, 2.0, n_users * n_events)
    return x, offsets, ts, weights, planted.reshape(-1)


def n_distinct_per_user(labels: np.ndarray, n_users: int, n_events: int) -> np.ndarray:
    s = np.sort(labels.reshape(n_users, n_events), axis=1)
    return 1 + (np.diff(s, axis=1) != 0).sum(axis=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--events", type=int, default=30)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--chunk", type=int, default=10_000)
    p.add_argument("--ref-users", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3, help="timed passes over all users")
    p.add_argument("--threads", type=int, default=0, help="native threads (0: all cores)")
    p.add_argument("--half-life-days", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="print only, do not write results/")
    args = p.parse_args(argv)
    kw = dict(half_life_days=args.half_life_days, threshold=DEFAULT_THRESHOLD)

    # ---- scipy reference vs native on the same subsample (first users of the first chunk)
    rng = np.random.default_rng(args.seed)
    first = make_chunk(min(args.chunk, args.users), args.events, args.dim, rng)
    n_ref = min(args.ref_users, args.users)
    sub = (first[0][: n_ref * args.events], first[1][: n_ref + 1], first[2][: n_ref * args.events],
           first[3][: n_ref * args.events])
    user_interests(*sub, backend="native", n_threads=args.threads, **kw)  # warm-up
    t0 = time.perf_counter()
    ref = user_interests(*sub, backend="reference", **kw)
    ref_s = time.perf_counter() - t0
    sub_native = []
    for _ in range(max(args.repeat, 3)):
        t0 = time.perf_counter()
        nat = user_interests(*sub, backend="native", n_threads=args.threads, **kw)
        sub_native.append(time.perf_counter() - t0)
    same = all(np.array_equal(getattr(nat, f), getattr(ref, f))
               for f in ("offsets", "medoid_rows", "sizes", "labels"))
    same = same and np.allclose(nat.importance, ref.importance, rtol=1e-9, atol=0)
    from sklearn.metrics import adjusted_rand_score

    planted_sub = first[4][: n_ref * args.events].reshape(n_ref, args.events)
    ari = [adjusted_rand_score(planted_sub[u], nat.labels[u * args.events:(u + 1) * args.events])
           for u in range(n_ref)]

    # ---- native on all users, chunk by chunk; generation not timed
    passes, counts_hit, n_interests = [], 0, 0
    for rep in range(args.repeat):
        rng = np.random.default_rng(args.seed)
        total = 0.0
        for start in range(0, args.users, args.chunk):
            n = min(args.chunk, args.users - start)
            vec, off, ts, w, planted = make_chunk(n, args.events, args.dim, rng)
            t0 = time.perf_counter()
            ui = user_interests(vec, off, ts, w, backend="native", n_threads=args.threads, **kw)
            total += time.perf_counter() - t0
            if rep == 0:
                n_interests += ui.n_interests
                counts_hit += int((ui.counts() == n_distinct_per_user(planted, n, args.events))
                                  .sum())
            del vec, ts, w, planted, ui
        passes.append(total)
        print(f"pass {rep + 1}: native {total:.2f} s for {args.users} users", flush=True)

    native_s = statistics.median(passes)
    ref_extrapolated = ref_s * args.users / n_ref
    sub_native_s = statistics.median(sub_native)
    payload = {
        "config": vars(args) | {"threshold": DEFAULT_THRESHOLD},
        "native_s": {"median": native_s, "min": min(passes), "max": max(passes),
                     "repeat": len(passes)},
        "users_per_s": args.users / native_s,
        "reference_subsample": {"users": n_ref, "scipy_s": ref_s,
                                "native_s_median": sub_native_s,
                                "ratio_measured": ref_s / sub_native_s,
                                "identical_outputs": bool(same)},
        "reference_extrapolated_s": ref_extrapolated,
        "speedup_vs_reference_extrapolated": ref_extrapolated / native_s,
        "bar_s": 60.0,
        "bar_met": native_s < 60.0,
        "interests_per_user": n_interests / args.users,
        "planted_count_recovered": counts_hit / args.users,
        "planted_ari_subsample_mean": float(np.mean(ari)),
    }
    md = f"""
Per-user Ward multi-interest, {args.users:,} users x {args.events} events x {args.dim} float32
(synthetic unit vectors, 1-4 planted interests per user), threshold sqrt(2), half-life
{args.half_life_days:g} days, native threads {args.threads or 'all'}.

| backend | time | users/s |
|---|---|---|
| native, all users (median of {len(passes)}) | {native_s:.2f} s | {args.users / native_s:,.0f} |
| scipy reference, {n_ref} users measured | {ref_s:.2f} s | {n_ref / ref_s:,.0f} |
| scipy reference, extrapolated to all users | {ref_extrapolated:.1f} s | - |

- Native passes: min {min(passes):.2f} s, max {max(passes):.2f} s.
- Speed-up vs scipy: {ref_s / sub_native_s:.1f}x measured on the same {n_ref} users
  (native {sub_native_s * 1e3:.1f} ms), {ref_extrapolated / native_s:.1f}x against the
  extrapolated reference. Outputs identical on the subsample: {same}.
- Bar (< 60 s): {'met' if native_s < 60 else 'NOT met'}.
- Interests per user: {n_interests / args.users:.2f}; planted count recovered for
  {100 * counts_hit / args.users:.1f}% of users; mean ARI vs planted on the subsample
  {np.mean(ari):.3f}.

Command: `python benchmarks/multi_interest.py`
"""
    print(md)
    if not args.no_write:
        jp, mp = write_results("multi_interest", payload, md)
        print(f"wrote {jp} and {mp}")


if __name__ == "__main__":
    main()
