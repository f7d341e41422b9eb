"""Overhead of the persistent embedding store (issue 15): bytes per vector, writes/s,
lookups/s, and a large store's open and first-lookup time.

Random unit vectors (dim 384, as all-MiniLM-L6-v2) under texts ``"text {i}"`` are written
in batches of 10,000 into a fresh store (``interestflow.embedding_store.EmbeddingStore``),
then looked up: batches of 10,000 random stored texts (hits) and of 10,000 unknown texts
(misses). The store is reopened to time its open and one 1,000-text lookup. The encoder it
saves is the point of comparison: all-MiniLM-L6-v2 encodes ~100-300 texts/s on this CPU.

Usage::

    python benchmarks/embedding_store.py [--rows 1000000] [--dir /tmp/if-store]

Writes ``benchmarks/results/embedding_store.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import write_results  # noqa: E402

DIM = 384
BATCH = 10_000
IDENT = {"files_sha256": "benchmark", "pooling": "mean", "max_length": 256,
         "dtype": "float32", "normalize": True, "dim": DIM}


def run(rows: int, folder: Path) -> dict:
    from interestflow.embedding_store import EmbeddingStore

    if folder.exists():
        shutil.rmtree(folder)
    path = folder / "store.sqlite"
    rng = np.random.default_rng(0)
    t_put = 0.0
    with EmbeddingStore(path, IDENT, max_rows=rows) as st:
        for s in range(0, rows, BATCH):
            n = min(BATCH, rows - s)
            v = rng.standard_normal((n, DIM)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            texts = [f"text {i}" for i in range(s, s + n)]
            t = time.perf_counter()
            st.put(texts, v)
            t_put += time.perf_counter() - t
    size = sum(p.stat().st_size for p in folder.iterdir())
    t0 = time.perf_counter()
    st = EmbeddingStore(path, IDENT, max_rows=rows)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, found = st.get([f"text {i}" for i in rng.integers(0, rows, 1000)])
    t_first = time.perf_counter() - t0
    assert found.all()
    hits = []
    for _ in range(5):
        q = [f"text {i}" for i in rng.integers(0, rows, BATCH)]
        t = time.perf_counter()
        _, found = st.get(q)
        hits.append(time.perf_counter() - t)
        assert found.all()
    t = time.perf_counter()
    _, found = st.get([f"unknown {i}" for i in range(BATCH)])
    t_miss = time.perf_counter() - t
    assert not found.any()
    st.close()
    return {"rows": rows, "file_bytes": size, "bytes_per_vector": size / rows,
            "raw_bytes_per_vector": DIM * 4, "writes_per_s": rows / t_put,
            "open_s": t_open, "first_1000_lookup_s": t_first,
            "hit_lookups_per_s": BATCH / float(np.median(hits)),
            "miss_lookups_per_s": BATCH / t_miss}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="100000,1000000",
                    help="store sizes, comma-separated (default 100000,1000000)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/if-store-bench"))
    a = ap.parse_args(argv)
    results = []
    for rows in (int(r) for r in a.rows.split(",") if r.strip()):
        r = run(rows, a.dir / str(rows))
        print(f"{rows:,} vectors: {r['bytes_per_vector']:.0f} B/vector (raw {DIM * 4}), "
              f"writes {r['writes_per_s']:,.0f}/s, open {r['open_s'] * 1e3:.1f} ms, first "
              f"1,000 lookups {r['first_1000_lookup_s'] * 1e3:.0f} ms, hits "
              f"{r['hit_lookups_per_s']:,.0f}/s, misses {r['miss_lookups_per_s']:,.0f}/s",
              flush=True)
        results.append(r)
        shutil.rmtree(a.dir / str(rows), ignore_errors=True)
    md = ["| vectors | bytes/vector (raw 1,536) | writes/s | open | first 1,000 lookups | "
          "hit lookups/s | miss lookups/s |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        md.append(f"| {r['rows']:,} | {r['bytes_per_vector']:.0f} | {r['writes_per_s']:,.0f} | "
                  f"{r['open_s'] * 1e3:.1f} ms | {r['first_1000_lookup_s'] * 1e3:.0f} ms | "
                  f"{r['hit_lookups_per_s']:,.0f} | {r['miss_lookups_per_s']:,.0f} |")
    jp, mp = write_results("embedding_store", {"dim": DIM, "batch": BATCH, "runs": results},
                           "Embedding store overhead (`python benchmarks/embedding_store.py`; "
                           "random unit vectors, dim 384, batches of 10,000).\n\n"
                           + "\n".join(md))
    print(f"\nwrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
