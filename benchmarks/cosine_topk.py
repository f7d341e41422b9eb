"""Benchmark: numba cosine top-k vs the plain torch loop and FAISS IndexFlatIP, on the CPU.

Problem (issue 4): 20,000 queries x 100,000 keys x 384, k = 10, float32 rows. Methods, each in
its own subprocess (so that its peak memory is its own), all starting from the same
un-normalised-by-contract float32 tensors and normalising as a user would:

(a) numba: ``interestflow.kernels.numba_cosine.cosine_topk_numba(q, keys, 10)`` with
    ``candidates="auto"`` (the certified bf16 candidate pass on a CPU with native bf16);
(b) torch: the plain loop ``kn = normalize(keys)``; per 512 queries
    ``topk(normalize(q_chunk) @ kn.T, 10)`` in float32;
(c) FAISS: ``normalize_L2`` on copies, ``IndexFlatIP.add`` + ``search`` (faiss-cpu).

Data (``--data``, comma-separated; every set is generated from a fixed seed, queries and keys
are distinct rows of one draw):

- ``clustered``: unit vectors shaped like sentence embeddings: a shared mean direction (the
  anisotropy of transformer embeddings), 200 topics x 5,000 sub-topics with Zipf-like sizes,
  per-point noise of varying width and 2% exact duplicates. Calibrated against
  all-MiniLM-L6-v2 embeddings of 20,000 Amazon review summaries and MovieLens titles (at
  20,000 rows, synthetic vs real): norm of the mean vector 0.39 vs 0.38, mean pairwise cosine
  0.15 vs 0.15, median cosine of the 1st / 10th / 32nd neighbour 0.78 / 0.60 / 0.54 vs
  0.73 / 0.57 / 0.51.
- ``random``: i.i.d. Gaussian directions: no structure, scores concentrated around 0 (a hard
  case for any pruning; here the top scores are ~0.2).

Each method: one warm-up call on a small slice (JIT compile / thread start-up), then
``--repeat`` timed calls on the full problem (median, min-max; wall clock), the methods taking
turns call by call so that changes in the machine's load hit all of them. Peak extra memory:
the process's peak RSS during the timed calls minus its RSS after the data and the warm-up
(``/proc/self/clear_refs`` resets the peak). Accuracy: recall@10 and the largest score
difference against (b), and against a float64 reference on ``--check`` sampled queries;
recall both plain (shared indices / k) and tie-aware (a returned key counts when its float64
score reaches the reference's k-th score: with exact duplicate keys several index sets are
equally correct and the plain figure depends on each method's tie-breaking).

Bars (issue 4) for (a): recall >= 0.999 (tie-aware) and score error < 1e-4 (vs torch),
time <= 1.2x (b) and <= 1.0x (c), peak extra < 512 MB; the aim is 0.5x (c).

    python benchmarks/cosine_topk.py                          # results/cosine_topk_cpu.*
    python benchmarks/cosine_topk.py --data clustered,random  # both sets, same files
    python benchmarks/cosine_topk.py --quick                  # small smoke run, no files
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import write_results  # noqa: E402

METHODS = ("numba", "torch", "faiss")
BARS = {"recall": 0.999, "score_err": 1e-4, "vs_torch": 1.2, "vs_faiss": 1.0,
        "peak_extra_mb": 512.0, "aim_vs_faiss": 0.5}
TORCH_QUERY_CHUNK = 512


# ------------------------------------------------------------------------------------ data


def make_data(kind: str, n_queries: int, n_keys: int, dim: int, seed: int = 0):
    """(queries, keys) float32 tensors of unit rows; see the module docstring."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = n_queries + n_keys
    if kind == "random":
        x = torch.randn(n, dim, generator=g)
    elif kind == "clustered":
        s = dim ** -0.5
        mu = torch.randn(dim, generator=g)
        mu = mu / mu.norm() * 0.4
        topics = torch.randn(200, dim, generator=g) * (0.6 * s)
        n_sub = 5000
        subs = topics[torch.randint(0, 200, (n_sub,), generator=g)]
        subs = subs + torch.randn(n_sub, dim, generator=g) * (0.5 * s)
        sizes = 1.0 / torch.arange(1, n_sub + 1, dtype=torch.float64) ** 0.8
        label = torch.multinomial(sizes, n, replacement=True, generator=g)
        width = torch.empty(n, 1).uniform_(np.log(0.3), np.log(1.0), generator=g).exp()
        x = mu + subs[label] + torch.randn(n, dim, generator=g) * s * width
        # exact duplicates; distinct rows on both sides so the copy is deterministic
        n_dup = n // 50
        perm = torch.randperm(n, generator=g)
        x[perm[n_dup:2 * n_dup]] = x[perm[:n_dup]]
    else:
        raise SystemExit(f"--data {kind!r}: pass clustered or random")
    x = torch.nn.functional.normalize(x, dim=1)
    return x[:n_queries].contiguous(), x[n_queries:].contiguous()


# ------------------------------------------------------------------------------------ methods


def run_numba(q, keys, k, stats):
    from interestflow.kernels import numba_cosine

    s, i = numba_cosine._topk(q, keys, k, candidates="auto", stats=stats)
    return s.numpy(), i.numpy()


def run_torch(q, keys, k, stats):
    import torch

    kn = torch.nn.functional.normalize(keys, dim=1)
    out_s = torch.empty(q.shape[0], k)
    out_i = torch.empty(q.shape[0], k, dtype=torch.int64)
    for qs in range(0, q.shape[0], TORCH_QUERY_CHUNK):
        s = torch.nn.functional.normalize(q[qs:qs + TORCH_QUERY_CHUNK], dim=1) @ kn.T
        torch.topk(s, k, dim=1, out=(out_s[qs:qs + TORCH_QUERY_CHUNK],
                                     out_i[qs:qs + TORCH_QUERY_CHUNK]))
    return out_s.numpy(), out_i.numpy()


def run_faiss(q, keys, k, stats):
    import faiss

    kn = keys.numpy().copy()
    qn = q.numpy().copy()
    faiss.normalize_L2(kn)
    faiss.normalize_L2(qn)
    index = faiss.IndexFlatIP(kn.shape[1])
    index.add(kn)
    s, i = index.search(qn, k)
    stats["faiss"] = faiss.__version__
    return s, i


RUNNERS = {"numba": run_numba, "torch": run_torch, "faiss": run_faiss}


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(args) -> None:
    """One method in this process, driven over stdin/stdout by the parent.

    Prepares the data and warms up, prints ``ready``; then each ``run`` line times one call
    (wall and process CPU seconds) and ``done`` writes the last result, the peak memory and
    the stats to ``--out`` and exits.
    """
    import torch

    q, keys = make_data(args.data, args.n_queries, args.n_keys, args.dim)
    run = RUNNERS[args.worker]
    stats: dict = {}
    # warm-up: JIT or cache load and thread start-up, with 50 copies of a query among the keys
    # so that numba's fallback path (uncertified queries) is compiled too
    warm_keys = torch.cat([q[:1].repeat(50, 1), keys[:min(args.n_keys, 20_000)]])
    run(q[:256], warm_keys, args.k, {})
    rss0 = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        peak_method = "VmHWM after clear_refs"
    except OSError:
        peak_method = "VmHWM since process start (clear_refs not permitted)"
    print(json.dumps({"ready": True}), flush=True)
    out = None
    for line in sys.stdin:
        if line.strip() == "run":
            w0, c0 = time.perf_counter(), time.process_time()
            out = run(q, keys, args.k, stats)
            print(json.dumps({"wall_s": time.perf_counter() - w0,
                              "cpu_s": time.process_time() - c0}), flush=True)
        elif line.strip() == "done":
            break
    peak = _status_kb("VmHWM")
    s, i = out
    np.save(Path(args.out) / f"{args.worker}_scores.npy", np.asarray(s, np.float32))
    np.save(Path(args.out) / f"{args.worker}_indices.npy", np.asarray(i, np.int64))
    info = {"peak_extra_mb": (peak - rss0) / 1024, "rss_before_mb": rss0 / 1024,
            "peak_method": peak_method, "torch_threads": torch.get_num_threads(), "stats": stats}
    (Path(args.out) / f"{args.worker}.json").write_text(json.dumps(info, default=str))


# ------------------------------------------------------------------------------------ parent


def recall(ref_i: np.ndarray, got_i: np.ndarray) -> float:
    """Plain recall@k: shared indices / k (counts a different pick among tied keys as a miss)."""
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ref_i, got_i))
    return hits / ref_i.size


def tie_aware_recall(qn, kn, ref_kth, got_i, tol) -> float:
    """Fraction of returned keys whose float64 score reaches the reference k-th score - tol.

    With exact duplicate keys (the clustered set has 2%) several index sets are equally
    correct; this counts a returned key as a hit when it truly belongs in the top-k.
    """
    import torch

    gi = torch.from_numpy(got_i)
    true = (qn[:, None, :] * kn[gi]).sum(-1)
    return float((true >= torch.from_numpy(ref_kth)[:, None] - tol).double().mean())


def float64_check(q, keys, k, sample, outs):
    """Recall@k (plain and tie-aware) and max score error of every method vs float64 on
    sampled queries."""
    import torch

    rows = np.random.default_rng(1).choice(q.shape[0], size=min(sample, q.shape[0]),
                                           replace=False)
    rows.sort()
    qn = torch.nn.functional.normalize(q[rows].double(), dim=1)
    kn = torch.nn.functional.normalize(keys.double(), dim=1)
    ref = torch.topk(qn @ kn.T, k, dim=1)
    ref_s, ref_i = ref.values.numpy(), ref.indices.numpy()
    return {m: {"recall_vs_float64": recall(ref_i, i[rows]),
                "tie_recall_vs_float64": tie_aware_recall(qn, kn, ref_s[:, -1], i[rows], 1e-9),
                "max_err_vs_float64": float(np.abs(s[rows].astype(np.float64) - ref_s).max())}
            for m, (s, i) in outs.items()}


def _timing(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeat": len(times), "all_s": times}


def run_dataset(args, kind: str) -> dict:
    """All methods on one data set: their processes take turns, one call at a time.

    Interleaving the repeats (numba, torch, faiss, then the next round in rotated order) makes
    a change in the machine's load hit every method alike, where timing each method's repeats
    back to back would hand a quiet minute to one of them.
    """
    with tempfile.TemporaryDirectory() as tmp:
        procs = {}
        for m in METHODS:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", m, "--out", tmp,
                   "--data", kind, "--n-queries", str(args.n_queries), "--n-keys",
                   str(args.n_keys), "--dim", str(args.dim), "--k", str(args.k)]
            procs[m] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
            # warm-ups one after another, so that none is slowed by another
            if not json.loads(procs[m].stdout.readline()).get("ready"):
                raise SystemExit(f"worker {m} did not start")
        walls = {m: [] for m in METHODS}
        cpus = {m: [] for m in METHODS}
        for r in range(args.repeat):
            for m in METHODS[r % len(METHODS):] + METHODS[:r % len(METHODS)]:
                procs[m].stdin.write("run\n")
                procs[m].stdin.flush()
                res = json.loads(procs[m].stdout.readline())
                walls[m].append(res["wall_s"])
                cpus[m].append(res["cpu_s"])
                print(f"[{kind}] round {r + 1}: {m} {res['wall_s']:.3f} s", flush=True)
        infos, outs = {}, {}
        for m in METHODS:
            procs[m].stdin.write("done\n")
            procs[m].stdin.flush()
            if procs[m].wait() != 0:
                raise SystemExit(f"worker {m} failed")
            infos[m] = json.loads((Path(tmp) / f"{m}.json").read_text())
            infos[m]["timing"] = _timing(walls[m])
            infos[m]["cpu_s_median"] = statistics.median(cpus[m])
            outs[m] = (np.load(Path(tmp) / f"{m}_scores.npy"),
                       np.load(Path(tmp) / f"{m}_indices.npy"))
    import torch

    q, keys = make_data(kind, args.n_queries, args.n_keys, args.dim)
    f64 = float64_check(q, keys, args.k, args.check, outs)
    ref_s, ref_i = outs["torch"]
    qn = torch.nn.functional.normalize(q.double(), dim=1)
    kn = torch.nn.functional.normalize(keys.double(), dim=1)
    rows = {}
    for m in METHODS:
        s, i = outs[m]
        rows[m] = {
            **infos[m],
            "recall_vs_torch": recall(ref_i, i),
            # torch's float32 k-th score is within ~1e-6 of the truth
            "tie_recall_vs_torch": tie_aware_recall(qn, kn, ref_s[:, -1].astype(np.float64),
                                                    i, 2e-6),
            "max_score_err_vs_torch": float(np.abs(s.astype(np.float64) - ref_s).max()),
            **f64[m],
        }
    t = {m: rows[m]["timing"]["median_s"] for m in METHODS}
    flops = 2.0 * args.n_queries * args.n_keys * args.dim
    for m in METHODS:
        rows[m]["ratio_vs_torch"] = t[m] / t["torch"]
        rows[m]["ratio_vs_faiss"] = t[m] / t["faiss"]
        rows[m]["gflops_equiv"] = flops / t[m] / 1e9
    nb = rows["numba"]
    bars = {
        "recall_vs_torch >= 0.999 (tie-aware)": nb["tie_recall_vs_torch"] >= BARS["recall"],
        "max_score_err_vs_torch < 1e-4": nb["max_score_err_vs_torch"] < BARS["score_err"],
        "time <= 1.2x torch": nb["ratio_vs_torch"] <= BARS["vs_torch"],
        "time <= 1.0x faiss": nb["ratio_vs_faiss"] <= BARS["vs_faiss"],
        "peak extra < 512 MB": nb["peak_extra_mb"] < BARS["peak_extra_mb"],
        "aim: time <= 0.5x faiss": nb["ratio_vs_faiss"] <= BARS["aim_vs_faiss"],
    }
    return {"data": kind, "methods": rows, "bars": bars}


def markdown(args, results, load) -> str:
    lines = [
        f"{args.n_queries:,} queries x {args.n_keys:,} keys x {args.dim}, k = {args.k}, float32; "
        f"median of {args.repeat} timed calls after a small warm-up, each method in its own "
        "process, the methods taking turns call by call. Time ratios are against the same "
        "run's torch loop and FAISS `IndexFlatIP`; CPU s = the process's CPU seconds per call "
        "(spinning OpenMP threads count too). "
        f"Recall@{args.k} and max |score difference| against the torch loop (all queries) and "
        f"against float64 ({args.check} sampled queries). Peak extra = peak RSS during the timed "
        f"calls minus RSS after data + warm-up. Load average (1 min) before / after: "
        f"{load[0]:.2f} / {load[1]:.2f} on {os.cpu_count()} cores: other processes share this "
        "machine, so times are indicative.",
        "",
        "Methods: **numba** = `cosine_topk_numba(q, keys, 10)` (candidates='auto'); **torch** = "
        f"normalize + `q_chunk @ kn.T` + `topk` per {TORCH_QUERY_CHUNK} queries (fp32); "
        "**faiss** = `normalize_L2` + `IndexFlatIP` add + search.",
    ]
    for res in results:
        lines += ["", f"## data: {res['data']}", "",
                  "| method | median s (min-max) | CPU s | vs torch | vs FAISS | recall vs torch "
                  "(tie-aware) | max err vs torch | recall vs fp64 (tie-aware) | max err vs "
                  "fp64 | peak extra MB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m, r in res["methods"].items():
            tm = r["timing"]
            lines.append(
                f"| {m} | {tm['median_s']:.2f} ({tm['min_s']:.2f}-{tm['max_s']:.2f}) | "
                f"{r['cpu_s_median']:.2f} | "
                f"{r['ratio_vs_torch']:.2f}x | {r['ratio_vs_faiss']:.2f}x | "
                f"{r['recall_vs_torch']:.5f} ({r['tie_recall_vs_torch']:.5f}) | "
                f"{r['max_score_err_vs_torch']:.1e} | {r['recall_vs_float64']:.5f} "
                f"({r['tie_recall_vs_float64']:.5f}) | {r['max_err_vs_float64']:.1e} | "
                f"{r['peak_extra_mb']:.0f} |")
        st = res["methods"]["numba"]["stats"]
        lines += ["", f"numba: candidates={st.get('candidates')} ({st.get('reason')}); "
                      f"{st.get('n_uncertified')} of {st.get('n_queries')} queries failed the "
                      "certificate and were redone by the exact collection pass.", "",
                  "Bars: " + "; ".join(f"{k}: {'yes' if v else 'NO'}"
                                       for k, v in res["bars"].items())]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="clustered", help="clustered, random or both, comma-separated")
    ap.add_argument("--n-queries", type=int, default=20_000)
    ap.add_argument("--n-keys", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--check", type=int, default=500, help="queries checked against float64")
    ap.add_argument("--quick", action="store_true",
                    help="2,000 x 20,000 x 384, 2 repeats; prints, writes no result files")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.n_queries, args.n_keys, args.repeat = 2000, 20_000, 2
    load0 = os.getloadavg()[0]
    results = [run_dataset(args, kind.strip()) for kind in args.data.split(",")]
    load = (load0, os.getloadavg()[0])
    md = markdown(args, results, load)
    print(md)
    if not args.quick:
        payload = {"problem": {"n_queries": args.n_queries, "n_keys": args.n_keys,
                               "dim": args.dim, "k": args.k, "repeat": args.repeat},
                   "bars": BARS, "load_average_1min": load, "results": results}
        paths = write_results("cosine_topk_cpu", payload, md)
        print("wrote", *paths)


if __name__ == "__main__":
    main()
