"""Benchmark of offline batch scoring (`interestflow score`) end to end.

For each size in ``--sizes`` (default 100,000 and 1,000,000 users x 20 events, 100,000 items
x 384; data from ``benchmarks/make_score_data.py``, generated under ``--root`` when missing,
generation not timed) one fresh ``interestflow score`` process scores every user; then the
same job runs on a 2-worker LocalCluster (``--dask local:2``) at ``--dask-size``.

Measured per run: wall time of the whole command (process start, catalogue, counting,
staging, chunks, summary), users/s end to end and in the chunk phase, the per-stage sums from
the job's summary, and peak memory: the scoring process's own peak RSS (its ``ru_maxrss``,
reported in the job's summary) and the peak of the summed RSS of its process tree (the Dask
workers included), sampled every 0.2 s. Bars: peak RSS at the largest size <= 1.2x the peak at the smallest
(memory set by the chunk size, not by the number of users); the Dask run's output has as many
users and rows as the single-process run's.

Usage (the full run is ~30-40 min on the shared 2-core CPU)::

    python benchmarks/score.py --root /tmp/ifscore --sizes 100000,1000000 --dask-size 1000000

Writes benchmarks/results/score_cpu.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import write_results  # noqa: E402

HERE = Path(__file__).resolve().parent


def ensure_data(root: Path, users: int) -> Path:
    data = root / f"u{users}"
    if not (data / "data.json").is_file():
        shutil.rmtree(data, ignore_errors=True)
        print(f"generating {users} users into {data} ...", flush=True)
        subprocess.run([sys.executable, str(HERE / "make_score_data.py"), "--users", str(users),
                        "--out", str(data)], check=True)
    return data


class TreeRSS:
    """Peak of the summed RSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.2):
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.peak_main = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.proc] + self.proc.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        rss = p.memory_info().rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
                    total += rss
                    if p.pid == self.proc.pid:
                        self.peak_main = max(self.peak_main, rss)
                self.peak = max(self.peak, total)
            except psutil.NoSuchProcess:
                break
            self._stop.wait(self.every)

    def stop(self):
        self._stop.set()
        self._thread.join()


def run_score(data: Path, out: Path, *, k: int, chunk_users: int, index: str,
              dask: str | None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "interestflow.cli", "score", "--events", str(data / "events"),
           "--model-dir", str(data / "model"), "--items", str(data / "items.parquet"),
           "--out", str(out), "--k", str(k), "--chunk-users", str(chunk_users),
           "--index", index, "--no-progress"]
    if dask:
        cmd += ["--dask", dask]
    print("$", " ".join(cmd), flush=True)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeRSS(proc.pid)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"score failed ({proc.returncode}):\n{stderr[-4000:]}")
    summary = json.loads(stdout)
    users = summary["users"]
    return {
        "users": users, "events": summary["events"]["rows"],
        "recommendations": summary["recommendations"], "chunks": summary["chunks"]["total"],
        "chunk_users": summary["chunks"]["chunk_users"], "dask": dask,
        "wall_s": round(wall, 2), "users_per_s_end_to_end": round(users / wall, 1),
        "users_per_s_chunks": summary["users_per_s"],
        "job_timings_s": summary["timings_s"],
        "peak_rss_mib_process": round(summary["peak_rss_mib"], 1),
        "peak_rss_mib_tree_sampled": round(sampler.peak / 2**20, 1),
        "workers": summary["workers"], "index": summary["index"],
        "load_avg_1min_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="/tmp/interestflow-score",
                   help="folder for the generated data and the outputs")
    p.add_argument("--sizes", default="100000,1000000", help="users per run, comma-separated")
    p.add_argument("--dask-size", type=int, default=None,
                   help="users of the Dask run (default: the largest size; 0 skips it)")
    p.add_argument("--dask-workers", type=int, default=2)
    p.add_argument("--chunk-users", type=int, default=50_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--index", default="auto")
    p.add_argument("--keep", action="store_true", help="keep the scoring outputs")
    a = p.parse_args(argv)
    root = Path(a.root)
    sizes = sorted(int(s) for s in a.sizes.split(","))
    dask_size = sizes[-1] if a.dask_size is None else a.dask_size
    runs = []
    for n in sizes:
        data = ensure_data(root, n)
        r = run_score(data, root / f"run-u{n}", k=a.k, chunk_users=a.chunk_users,
                      index=a.index, dask=None)
        print(json.dumps({k: v for k, v in r.items() if k != "job_timings_s"}), flush=True)
        runs.append(r)
        if not a.keep:
            shutil.rmtree(root / f"run-u{n}", ignore_errors=True)
    dask_run = None
    if dask_size:
        data = ensure_data(root, dask_size)
        dask_run = run_score(data, root / f"run-u{dask_size}-dask", k=a.k,
                             chunk_users=a.chunk_users, index=a.index,
                             dask=f"local:{a.dask_workers}")
        print(json.dumps({k: v for k, v in dask_run.items() if k != "job_timings_s"}),
              flush=True)
        if not a.keep:
            shutil.rmtree(root / f"run-u{dask_size}-dask", ignore_errors=True)

    small, large = runs[0], runs[-1]
    rss_ratio = large["peak_rss_mib_process"] / small["peak_rss_mib_process"]
    bars = {"peak RSS at the largest size <= 1.2x at the smallest":
            bool(len(runs) > 1 and rss_ratio <= 1.2)}
    same = next((r for r in runs if r["users"] == (dask_run or {}).get("users")), None)
    if dask_run is not None and same is not None:
        bars["dask run scores the same users and rows as the single-process run"] = bool(
            dask_run["users"] == same["users"]
            and dask_run["recommendations"] == same["recommendations"])
    payload = {"params": vars(a), "runs": runs, "dask_run": dask_run,
               "peak_rss_ratio_largest_vs_smallest": round(rss_ratio, 3), "bars": bars}

    def stages(r):
        s = r["job_timings_s"]
        c = s.get("chunk_stages_sum_s", {})
        return (f"{s.get('catalogue_s', 0):.1f} / {s.get('count_users_s', 0):.1f} / "
                f"{s.get('staging_s', 0):.1f} / {c.get('read_s', 0):.1f} / "
                f"{c.get('user_vectors_s', 0):.1f} / {c.get('segments_s', 0):.1f} / "
                f"{c.get('retrieval_s', 0):.1f} / {c.get('write_s', 0):.1f}")

    rows = [r for r in runs] + ([dask_run] if dask_run else [])
    md = [f"`interestflow score` end to end: N users x 20 events (item ids), 100,000 items x 384 "
          f"(vectors given), k={a.k}, --chunk-users {a.chunk_users}, index {a.index}; one fresh "
          "process per run (data generated beforehand by benchmarks/make_score_data.py). "
          "Shared 2-core machine: times are indicative.", "",
          "| users | runner | chunks | wall s | users/s end to end | users/s chunks | "
          "peak RSS MiB (process) | peak RSS MiB (process tree) | stages s: catalogue / count "
          "/ staging / read / user vectors / segments / retrieval / write |",
          "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        md.append(f"| {r['users']:,} | {r['dask'] or 'single process'} | {r['chunks']} | "
                  f"{r['wall_s']:.1f} | {r['users_per_s_end_to_end']:.0f} | "
                  f"{r['users_per_s_chunks'] or 0:.0f} | {r['peak_rss_mib_process']:.0f} | "
                  f"{r['peak_rss_mib_tree_sampled']:.0f} | {stages(r)} |")
    md += ["", f"Peak RSS ratio {large['users']:,} vs {small['users']:,} users (scoring "
           f"process): {rss_ratio:.2f}x.", "",
           "Stage times of a Dask run are sums over the workers' chunks (they overlap in wall "
           "time). Peak RSS (process) of a Dask run is the driver's; the process tree adds the "
           "workers.", "", "| bar | met |", "|---|---|"]
    md += [f"| {k} | {'yes' if v else 'NO'} |" for k, v in bars.items()]
    jp, mp = write_results("score_cpu", payload, "\n".join(md))
    print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
