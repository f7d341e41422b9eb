"""Benchmark of offline batch scoring (`interestflow score`) end to end.

For each size in ``--sizes`` (default 100,000 and 1,000,000 users x 20 events, 100,000 items
x 384; data from ``benchmarks/make_score_data.py``, generated under ``--root`` when missing,
generation not timed) and each path in ``--paths`` one fresh ``interestflow score`` process
scores every user: ``content`` with the content-only model (``model/``: top-k by cosine) and
``two_stage`` with the ranker-bearing model (``model_ranked/``: candidates from every source,
then the LightGBM ranker, as ``InterestEngine.recommend``); then the content job runs on a
2-worker LocalCluster (``--dask local:2``) at ``--dask-size``. ``--big-catalogue
USERS:ITEMS`` (e.g. ``100000:1000000``) adds one two-stage run over a catalogue of that many
items (EASE off above ``ease_max_items``; item-kNN sparse).

Measured per run: wall time of the whole command (process start, catalogue, counting,
staging, chunks, summary), users/s end to end and in the chunk phase, the per-stage sums from
the job's summary, and peak memory: the scoring process's own peak RSS (its ``ru_maxrss``,
reported in the job's summary) and the peak of the summed RSS of its process tree (the Dask
workers included), sampled every 0.2 s. Bars, per path: peak RSS at the largest size <= 1.2x
the peak at the smallest (memory set by the chunk size, not by the number of users); two-stage
users/s (chunk phase) >= 0.5x content-only users/s at every size, measured in the same run;
the Dask run's output has as many users and rows as the single-process run's.

Usage (the full run is about an hour on the shared 2-core CPU)::

    python benchmarks/score.py --root /tmp/ifscore --sizes 100000,1000000 --dask-size 1000000 \
        --big-catalogue 100000:1000000

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


def ensure_data(root: Path, users: int, items: int = 100_000) -> Path:
    data = root / (f"u{users}" if items == 100_000 else f"u{users}-i{items}")
    make = [sys.executable, str(HERE / "make_score_data.py"), "--out", str(data)]
    if not (data / "data.json").is_file():
        shutil.rmtree(data, ignore_errors=True)
        print(f"generating {users} users x {items} items into {data} ...", flush=True)
        subprocess.run(make + ["--users", str(users), "--items", str(items)], check=True)
    elif not (data / "model_ranked" / "meta.json").is_file():  # data made before it existed
        print(f"fitting {data}/model_ranked ...", flush=True)
        subprocess.run(make + ["--models-only"], check=True)
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
              dask: str | None, path: str = "content") -> dict:
    shutil.rmtree(out, ignore_errors=True)
    # content: the items table gives the catalogue; two_stage: the model's own items (the
    # same vectors), since its candidate sources are fitted on them
    model = ["--model-dir", str(data / "model"), "--items", str(data / "items.parquet")] \
        if path == "content" else ["--model-dir", str(data / "model_ranked")]
    cmd = [sys.executable, "-m", "interestflow.cli", "score", "--events", str(data / "events"),
           *model, "--out", str(out), "--k", str(k), "--chunk-users", str(chunk_users),
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
        "path": path, "items": summary["catalogue"]["items"],
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
    p.add_argument("--paths", default="content,two_stage",
                   help="scoring paths, comma-separated: content, two_stage")
    p.add_argument("--dask-size", type=int, default=None,
                   help="users of the Dask run (default: the largest size; 0 skips it)")
    p.add_argument("--dask-workers", type=int, default=2)
    p.add_argument("--big-catalogue", default=None,
                   help="USERS:ITEMS of an extra two-stage run over a large catalogue, e.g. "
                        "100000:1000000")
    p.add_argument("--chunk-users", type=int, default=50_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--index", default="auto")
    p.add_argument("--name", default="score_cpu", help="results file name")
    p.add_argument("--keep", action="store_true", help="keep the scoring outputs")
    a = p.parse_args(argv)
    root = Path(a.root)
    sizes = sorted(int(s) for s in a.sizes.split(",") if s.strip())  # "": none
    paths = [x.strip() for x in a.paths.split(",")]
    bad = [x for x in paths if x not in ("content", "two_stage")]
    if bad:
        p.error(f"--paths: unknown {bad}; valid: content, two_stage")
    dask_size = (sizes[-1] if sizes else 0) if a.dask_size is None else a.dask_size
    runs = []

    def run(data, n, path, dask=None, tag=""):
        out = root / f"run-u{n}{tag}-{path}{'-dask' if dask else ''}"
        r = run_score(data, out, k=a.k, chunk_users=a.chunk_users, index=a.index, dask=dask,
                      path=path)
        print(json.dumps({k: v for k, v in r.items() if k != "job_timings_s"}), flush=True)
        if not a.keep:
            shutil.rmtree(out, ignore_errors=True)
        return r

    for n in sizes:
        data = ensure_data(root, n)
        for path in paths:  # the paths back to back on the same data: comparable figures
            runs.append(run(data, n, path))
    dask_run = None
    if dask_size and "content" in paths:
        dask_run = run(ensure_data(root, dask_size), dask_size, "content",
                       dask=f"local:{a.dask_workers}")
    big_run = None
    if a.big_catalogue:
        bu, bi = (int(x) for x in a.big_catalogue.split(":"))
        big_run = run(ensure_data(root, bu, bi), bu, "two_stage", tag=f"-i{bi}")

    bars, ratios, rss = {}, {}, {}
    for path in paths:
        rp = [r for r in runs if r["path"] == path]
        if len(rp) > 1:
            rss[path] = rp[-1]["peak_rss_mib_process"] / rp[0]["peak_rss_mib_process"]
            bars[f"{path}: peak RSS at {rp[-1]['users']:,} users <= 1.2x at "
                 f"{rp[0]['users']:,}"] = bool(rss[path] <= 1.2)
    if set(paths) == {"content", "two_stage"}:
        for n in sizes:
            c, t = (next(r for r in runs if r["users"] == n and r["path"] == x)
                    for x in ("content", "two_stage"))
            ratios[n] = t["users_per_s_chunks"] / c["users_per_s_chunks"]
            bars[f"two-stage users/s >= 0.5x content-only at {n:,} users"] = \
                bool(ratios[n] >= 0.5)
    same = next((r for r in runs if r["path"] == "content"
                 and r["users"] == (dask_run or {}).get("users")), None)
    if dask_run is not None and same is not None:
        bars["dask run scores the same users and rows as the single-process run"] = bool(
            dask_run["users"] == same["users"]
            and dask_run["recommendations"] == same["recommendations"])
    if big_run is not None:
        bars[f"two-stage run over {big_run['items']:,} items completes"] = bool(
            big_run["users"] > 0 and big_run["recommendations"] > 0)
    payload = {"params": vars(a), "runs": runs, "dask_run": dask_run, "big_catalogue_run":
               big_run, "peak_rss_ratio_largest_vs_smallest": {k: round(v, 3)
                                                               for k, v in rss.items()},
               "two_stage_vs_content_users_per_s": {str(k): round(v, 3)
                                                    for k, v in ratios.items()},
               "bars": bars}

    def stages(r):
        s = r["job_timings_s"]
        c = s.get("chunk_stages_sum_s", {})
        ranked = c.get("two_stage_s", c.get("retrieval_s", 0))
        return (f"{s.get('catalogue_s', 0):.1f} / {s.get('count_users_s', 0):.1f} / "
                f"{s.get('staging_s', 0):.1f} / {c.get('load_s', 0):.1f} / "
                f"{c.get('read_s', 0):.1f} / {c.get('user_vectors_s', 0):.1f} / "
                f"{c.get('segments_s', 0):.1f} / {ranked:.1f} / {c.get('write_s', 0):.1f}")

    rows = runs + ([dask_run] if dask_run else []) + ([big_run] if big_run else [])
    md = [f"`interestflow score` end to end: N users x 20 events (item ids), 384-d item vectors "
          f"(given), k={a.k}, --chunk-users {a.chunk_users}, index {a.index}; one fresh process "
          "per run (data generated beforehand by benchmarks/make_score_data.py). Paths: "
          "content = content-only model (top-k by cosine, items from items.parquet); two_stage "
          "= model_ranked (InterestEngine(ranker='lightgbm') fitted on the first 5,000 users: "
          "candidates from content, item-kNN, popularity, segment popularity and trending "
          "(EASE off above 20,000 items), then the LightGBM ranker). Shared 2-core machine: "
          "times are indicative.", "",
          "| users | items | path | runner | chunks | wall s | users/s end to end | users/s chunks "
          "| peak RSS MiB (process) | peak RSS MiB (process tree) | stages s: catalogue / count "
          "/ staging / load / read / user vectors / segments / retrieval or two stages / write |",
          "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        md.append(f"| {r['users']:,} | {r['items']:,} | {r['path']} | "
                  f"{r['dask'] or 'single process'} | {r['chunks']} | "
                  f"{r['wall_s']:.1f} | {r['users_per_s_end_to_end']:.0f} | "
                  f"{r['users_per_s_chunks'] or 0:.0f} | {r['peak_rss_mib_process']:.0f} | "
                  f"{r['peak_rss_mib_tree_sampled']:.0f} | {stages(r)} |")
    md += [""]
    md += [f"Two-stage / content-only users/s (chunk phase) at {n:,} users: {v:.2f}x."
           for n, v in ratios.items()]
    md += [f"Peak RSS ratio, {p_}, largest vs smallest size (scoring process): {v:.2f}x."
           for p_, v in rss.items()]
    md += ["", "Stage times of a Dask run are sums over the workers' chunks (they overlap in "
           "wall time). Peak RSS (process) of a Dask run is the driver's; the process tree adds "
           "the workers.", "", "| bar | met |", "|---|---|"]
    md += [f"| {k} | {'yes' if v else 'NO'} |" for k, v in bars.items()]
    jp, mp = write_results(a.name, payload, "\n".join(md))
    print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
