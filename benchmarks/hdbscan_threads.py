"""fast-hdbscan on one numba thread (what ``segments.hdbscan_labels`` does) against the
default thread count: how often repeated runs on the same input disagree, and the time.

    python benchmarks/hdbscan_threads.py [--sizes 2000,20000,100000] [--repeats 30]
        [--demo-low FILE.npy] [--load N]

Inputs: ``hdbscan_dims`` (16) principal components of unit vectors drawn around 8 topics
(as user vectors cluster), min_cluster_size as the engine picks it (max(5, n // 100)). The
repeat check runs each input ``--repeats`` times and counts runs whose labels differ from
the first. ``--load N`` keeps N busy-looping processes running meanwhile (thread timing
under a loaded machine, where the disagreements showed). Prints a Markdown table; name the
CPU beside it (``lscpu``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: 81 users of an InterestEngine(segmenter="hdbscan", ranker=None) fitted on the earliest 60%
#: of make_demo_events(n_users=90, n_topics=4, random_state=2) (9 random users held out), as
#: hdbscan_labels projects them (16 components): the case where repeated fits disagreed.
DEMO = Path(__file__).parent / "data" / "hdbscan_demo_users.npy"


def _inputs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(8, 384))
    x = topics[rng.integers(0, 8, n)] + 1.2 * rng.normal(size=(n, 384))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = x - x.mean(0)
    _, _, vt = np.linalg.svd(c[: min(n, 20000)], full_matrices=False)
    return np.ascontiguousarray(c @ vt[:16].T, dtype=np.float32)


def _run(low, mcs, threads, repeats):
    import fast_hdbscan
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        fast_hdbscan.HDBSCAN(min_cluster_size=mcs).fit_predict(low[:200])  # compile
        times, labels = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            labels.append(fast_hdbscan.HDBSCAN(min_cluster_size=mcs).fit_predict(low))
            times.append(time.perf_counter() - t)
    finally:
        numba.set_num_threads(before)
    differ = sum(not np.array_equal(lab, labels[0]) for lab in labels[1:])
    return float(np.median(times)), differ


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="2000,20000,100000")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--demo-low", default=str(DEMO), help="a .npy of projected users to repeat "
                   "as well ('' for none); default: one demo engine's (see DEMO)")
    p.add_argument("--load", type=int, default=0, help="busy processes beside the runs")
    a = p.parse_args()
    import numba

    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(a.load)]
    try:
        _table(a, numba.config.NUMBA_NUM_THREADS)
    finally:
        for b in burners:
            b.kill()


def _table(a, n_max):
    """Time and repeat each input on the default thread count and on one thread."""
    cases = [(f"{n:,} users", _inputs(n)) for n in map(int, a.sizes.split(","))]
    if a.demo_low:
        cases.insert(0, ("demo engine users (81)", np.load(a.demo_low)))
    print(f"load: {a.load} busy processes\n")
    print("| input | threads | median s | runs differing from the first |")
    print("|---|---:|---:|---:|")
    for name, low in cases:
        mcs = max(5, len(low) // 100)
        reps = a.repeats if len(low) <= 20000 else max(3, a.repeats // 10)
        for threads in (n_max, 1):
            t, differ = _run(low, mcs, threads, reps)
            print(f"| {name} | {threads} | {t:.3f} | {differ} of {reps - 1} |", flush=True)


if __name__ == "__main__":
    main()
