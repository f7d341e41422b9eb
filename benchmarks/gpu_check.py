"""GPU check: every GPU benchmark and check of interestflow in one run on the device machine.

Run through ``bash benchmarks/gpu_check.sh`` (which makes ``interestflow`` importable there and
passes the git revision); it writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out``
(``$OUT`` on the device machine), rewritten after every section so that a run cut short still
leaves what it measured. Sections are independent: one that fails records its error and the
run goes on. Every figure is a ratio against a baseline measured in the same run, and on the
GPU also against the H100's datasheet limits (dense fp16 tensor cores 989 TFLOP/s, HBM
3.35 TB/s):

env
    device, driver, library versions, git revision, how interestflow was imported.
encode
    ``interestflow.Encoder`` (fp16 on CUDA; tokenisation overlapped with the forward pass)
    against sentence-transformers fp16 (``encode(batch_size=32)`` and ``256``) and the seeds'
    one-text-at-a-time float32 loop (as in ``benchmarks/encode.py``, on the device), plus the
    Encoder without the overlap, its tokenisation alone and its device work alone (texts
    tokenised beforehand): texts/s and achieved TFLOP/s, counting the BERT matmul and attention
    FLOPs of the real (unpadded) tokens from the model config. Model: the fp16 export carried
    in ``.gpu_carry/minilm-fp16`` (``benchmarks/export_fp16_model.py``), else a randomly
    initialised BERT of all-MiniLM-L6-v2's configuration with a WordPiece tokenizer trained on
    the texts. Texts: reviews built from ``interestflow.synthetic.make_demo_events`` texts
    (1-6 event texts each, fixed seed), so nothing has to be carried.
cosine_topk
    ``interestflow.kernels.cosine_topk(backend="triton")`` against chunked torch
    ``normalize + mm + topk`` in fp16, recall@k and score error against the float32 exact
    top-k on a subset of queries.
kmeans
    ``interestflow.KMeans(backend="triton")`` against ``backend="torch"`` from the same initial
    centroids (time per Lloyd iteration, inertia ratio), the assign/update kernels alone, and
    cuML / FAISS-GPU k-means rows where those are installed (else "skipped: not installed").
pytest_gpu
    ``pytest -m gpu`` over the test suite: counts and the log.

``--dry-run-cpu`` runs the same code on the CPU with tiny shapes, a tiny random BERT and
Triton's interpreter (``TRITON_INTERPRET=1``); ``tests/test_gpu_check.py`` runs it in CI.

    bash benchmarks/gpu_check.sh                                  # on the device machine
    python benchmarks/gpu_check.py --dry-run-cpu --out /tmp/gc    # anywhere, ~30 s
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from encode import min_cosine  # noqa: E402

H100_FP16_TFLOPS = 989.0  # dense fp16/bf16 tensor-core peak, H100 SXM datasheet
H100_HBM_TBPS = 3.35      # HBM3 bandwidth, H100 SXM datasheet
DEFAULT_MODEL = ROOT / ".gpu_carry" / "minilm-fp16"
SECTIONS = ("env", "encode", "cosine_topk", "kmeans", "pytest_gpu")

# all-MiniLM-L6-v2's configuration, for the random-weight stand-in when no export is carried
MINILM_CONFIG = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                     num_attention_heads=12, intermediate_size=1536, hidden_act="gelu",
                     max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
                     pad_token_id=0)
TINY_CONFIG = dict(MINILM_CONFIG, vocab_size=1000, hidden_size=32, num_hidden_layers=2,
                   num_attention_heads=4, intermediate_size=64)

# Problem sizes. "gpu" fills an H100 for long enough to time and fits the 9-minute budget of
# one device call with room to spare; "dry" checks the logic on a CPU in seconds.
PROFILES = {
    "gpu": dict(
        n_texts=100_000, n_seed=1000, n_st=100_000, warm_texts=2048, demo_users=2000,
        encoder_repeat=2, bert=None, budget_sweep=(16384, 262144),
        topk=[(16384, 1_000_000, 384, 10), (16384, 1_000_000, 384, 100)], topk_check_rows=256,
        kmeans=(1_000_000, 384, 1024, 10), bench_warmup_ms=200, bench_rep_ms=1000,
        pytest_timeout_s=240,
    ),
    "dry": dict(
        n_texts=120, n_seed=6, n_st=120, warm_texts=8, demo_users=20, encoder_repeat=1,
        budget_sweep=(300,),
        bert=TINY_CONFIG, topk=[(37, 300, 24, 5), (5, 70, 3, 70)], topk_check_rows=16,
        kmeans=(500, 16, 7, 3), cpu_repeat=2, pytest_timeout_s=120,
    ),
}
# Rough seconds each section needs at the "gpu" sizes; a section is skipped (and says so) when
# less than this is left of --budget-s, so the run ends inside the device tool's call limit.
SECTION_MIN_S = {"env": 1, "encode": 120, "cosine_topk": 30, "kmeans": 40, "pytest_gpu": 30}


class Context:
    def __init__(self, args):
        import torch

        self.args = args
        self.dry = args.dry_run_cpu
        self.p = PROFILES["dry" if self.dry else "gpu"]
        self.device = torch.device("cpu" if self.dry else "cuda")
        self.t0 = time.monotonic()
        self.budget_s = args.budget_s
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))

    def remaining(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def sync(self):
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)


# ------------------------------------------------------------------------------- timing
def bench(fn, ctx) -> dict:
    """Median time of ``fn()`` with spread: CUDA events (``triton.testing.do_bench``) on GPU."""
    if ctx.device.type == "cuda":
        try:
            from triton.testing import do_bench
        except ImportError:
            do_bench = None
        if do_bench is not None:
            p20, p50, p80 = do_bench(fn, warmup=ctx.p["bench_warmup_ms"],
                                     rep=ctx.p["bench_rep_ms"], quantiles=[0.2, 0.5, 0.8])
            return {"median_ms": p50, "p20_ms": p20, "p80_ms": p80,
                    "timer": "triton.testing.do_bench"}
        return _bench_events(fn, ctx)
    fn()
    times = []
    for _ in range(ctx.p["cpu_repeat"]):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": float(np.median(times)), "p20_ms": float(np.percentile(times, 20)),
            "p80_ms": float(np.percentile(times, 80)), "timer": "perf_counter"}


def _bench_events(fn, ctx) -> dict:
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    deadline = time.perf_counter() + ctx.p["bench_rep_ms"] / 1e3
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 100):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": float(np.median(times)), "p20_ms": float(np.percentile(times, 20)),
            "p80_ms": float(np.percentile(times, 80)), "timer": "cuda events"}


def wall(fn, ctx):
    """One synchronised run of ``fn()``: (result, seconds). For end-to-end host-to-host work."""
    ctx.sync()
    t0 = time.perf_counter()
    out = fn()
    ctx.sync()
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------------- env
def section_env(ctx) -> dict:
    import importlib
    import importlib.metadata as md

    import torch

    versions = {}
    for dist in ("torch", "triton", "transformers", "sentence-transformers", "tokenizers",
                 "safetensors", "numpy", "scikit-learn", "numba", "cupy-cuda13x",
                 "cupy-cuda12x", "faiss-gpu", "faiss-cpu", "faiss-gpu-cu12", "cuml",
                 "cuml-cu12", "cuml-cu13", "interestflow"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    info = {"python": platform.python_version(), "git_rev": ctx.args.git_rev,
            "import_mode": ctx.args.import_mode, "versions": versions,
            "torch_cuda": torch.version.cuda, "dry_run_cpu": ctx.dry,
            "cpu_count": os.cpu_count(), "triton_interpret": os.environ.get("TRITON_INTERPRET")}
    import interestflow

    info["interestflow_file"] = interestflow.__file__
    try:
        importlib.import_module("interestflow._native")
        info["native_module"] = "imported"
    except ImportError as exc:
        info["native_module"] = f"not importable: {exc}"
    if ctx.device.type == "cuda":
        prop = torch.cuda.get_device_properties(ctx.device)
        info.update(device=prop.name, capability=f"{prop.major}.{prop.minor}",
                    multiprocessors=prop.multi_processor_count,
                    memory_gib=round(prop.total_memory / 2**30, 1))
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,"
                 "clocks.max.sm,power.limit", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            info["nvidia_smi"] = f"not run: {exc}"
    else:
        from interestflow.resolve import cpu_name

        info["device"] = f"CPU: {cpu_name()} (dry run)"
    return info


# ------------------------------------------------------------------------------- encode
def make_texts(n: int, n_users: int, seed: int = 0) -> list[str]:
    """``n`` review-like texts, each 1-6 synthetic event texts joined (fixed seed)."""
    from interestflow.synthetic import make_demo_events

    events = make_demo_events(n_users=n_users, seed=seed).events["text"].tolist()
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 7, n)
    picks = rng.integers(0, len(events), int(counts.sum()))
    out, j = [], 0
    for c in counts:
        out.append(" ".join(events[i] for i in picks[j:j + c]))
        j += c
    return out


def make_random_bert(path: Path, config: dict, texts: list[str]) -> Path:
    """A randomly initialised BERT of ``config`` with a WordPiece tokenizer trained on ``texts``.

    Written to ``path`` as a Hugging Face model directory (safetensors, no download). The
    tokenizer's vocabulary has at most ``config["vocab_size"]`` entries, so every id is valid.
    """
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts, vocab_size=config["vocab_size"], min_frequency=1,
                           show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=wp._tokenizer, unk_token="[UNK]",
                                  pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                  mask_token="[MASK]",
                                  model_max_length=config["max_position_embeddings"])
    tok.save_pretrained(path)
    torch.manual_seed(0)
    BertModel(BertConfig(**config)).save_pretrained(path)
    return path


def bert_flops(config, lens: np.ndarray) -> np.ndarray:
    """Matmul + attention FLOPs of one forward pass per text of ``lens`` tokens (no padding)."""
    h, inner = float(config.hidden_size), float(config.intermediate_size)
    n = lens.astype(np.float64)
    # per layer and token: QKV + output projection 8h^2, feed-forward 4h*inner; per layer and
    # text: scores and weighted values 2 * 2 n^2 h
    return config.num_hidden_layers * (n * (8 * h * h + 4 * h * inner) + 4 * n * n * h)


def seed_loop(model_dir: Path, device):
    """The seeds' loop of ``benchmarks/encode.py`` (one text at a time, float32, mean pooling)
    moved to ``device`` as a seed user would, with the result copied back per text."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True,
                                      dtype=torch.float32).eval().to(device)

    def encode(texts):
        vecs = []
        with torch.no_grad():
            for text in texts:
                enc = tok(text, return_tensors="pt", truncation=True, max_length=256).to(device)
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                vecs.append(((hidden * mask).sum(1) / mask.sum(1))[0].cpu().numpy())
        return np.stack(vecs)

    return encode


def sdpa_ops(enc, texts, device) -> dict:
    """Which attention implementations one encode call ran: aten SDPA op name -> calls.

    ``_scaled_dot_product_flash_attention`` is FlashAttention, ``..._efficient_attention`` the
    memory-efficient kernel (taken when a padding mask is passed), ``..._cudnn_attention``
    cuDNN's; a plain ``aten::softmax`` among them would mean the unfused math path.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        enc.encode(texts)
    names = {}
    for ev in prof.events():
        if "scaled_dot_product" in ev.name and ev.name.startswith("aten::_"):
            names[ev.name] = names.get(ev.name, 0) + 1
    return names


def section_encode(ctx) -> dict:
    import torch

    import interestflow.encoder as E
    from interestflow import Encoder

    p, dev = ctx.p, ctx.device
    texts = make_texts(p["n_texts"], p["demo_users"])
    model_dir = Path(ctx.args.model_dir) if ctx.args.model_dir else DEFAULT_MODEL
    if p["bert"] is None and (model_dir / "model.safetensors").is_file():
        model_note = f"fp16 export of all-MiniLM-L6-v2 ({model_dir.name})"
    else:
        why = "dry run" if p["bert"] is not None else f"no export at {model_dir}"
        model_dir = make_random_bert(ctx.tmp / "random_bert", p["bert"] or MINILM_CONFIG,
                                     texts)
        model_note = (f"random-init BERT ({'tiny' if p['bert'] else 'all-MiniLM-L6-v2'} "
                      f"config), WordPiece tokenizer trained on the texts ({why})")
    dtype = "float32" if ctx.dry else "auto"
    enc = Encoder(model_dir, device=dev, dtype=dtype)
    if ctx.dry:
        enc._overlap = True  # the CUDA pipeline, run on the CPU
    cfg = enc._model.config
    lens = np.concatenate([np.fromiter(map(len, enc._tokenize(texts[i:i + 8192])), np.int64)
                           for i in range(0, len(texts), 8192)])
    flops = bert_flops(cfg, lens)
    warm = texts[:p["warm_texts"]]
    n_seed = min(p["n_seed"], len(texts))
    seed_rows = np.linspace(0, len(texts) - 1, n_seed).round().astype(int)
    st_texts = texts[:p["n_st"]]
    info = {"model": model_note, "encoder_dtype": str(enc.dtype).removeprefix("torch."),
            "encoder_dtype_reason": enc.dtype_reason, "forward_backend": enc.forward_backend,
            "token_budget": enc.token_budget, "n_texts": len(texts),
            "tokens_mean": float(lens.mean()), "tokens_p50": float(np.median(lens)),
            "tokens_p95": float(np.percentile(lens, 95)), "tokens_max": int(lens.max()),
            "gflop_per_text_mean": float(flops.mean() / 1e9),
            "pipeline": {"first_texts": E.PIPELINE_FIRST_TEXTS,
                         "piece_texts": E.PIPELINE_PIECE_TEXTS,
                         "threads": E.PIPELINE_THREADS, "depth": E.PIPELINE_DEPTH},
            "torch_threads": torch.get_num_threads(),
            "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "(unset)")}
    info["sdpa_ops"] = sdpa_ops(enc, texts[:p["warm_texts"]], dev)
    rows, vecs = {}, {}

    def record(key, label, fn, rows_idx, repeat=1, n_warm=None, model_work=True):
        fn(warm[:n_warm])
        times = []
        for _ in range(repeat):
            out, sec = wall(lambda: fn([texts[i] for i in rows_idx] if rows_idx is not None
                                       else texts), ctx)
            times.append(sec)
        sec = float(np.median(times))
        n = len(texts) if rows_idx is None else len(rows_idx)
        fl = float(flops.sum() if rows_idx is None else flops[rows_idx].sum())
        tflops = fl / sec / 1e12 if model_work else None
        rows[key] = {"method": label, "texts": n, "seconds": sec, "seconds_all": times,
                     "texts_per_s": n / sec, "tflops": tflops}
        if out is not None:
            vecs[key] = np.asarray(out, dtype=np.float32)  # ST's fp16 model gives fp16
        print(f"  {label}: {n / sec:,.0f} texts/s"
              + (f", {tflops:.2f} TFLOP/s" if model_work else ""), flush=True)

    all_rows = None
    record("encoder", f"Encoder {info['encoder_dtype']}, tokenisation overlapped",
           lambda t: enc.encode(t), all_rows, p["encoder_repeat"])
    saved = enc._overlap
    enc._overlap = False
    record("encoder_serial", f"Encoder {info['encoder_dtype']}, no overlap (tokenise, then "
           "encode each chunk)", lambda t: enc.encode(t), all_rows, p["encoder_repeat"])
    enc._overlap = saved

    pin = dev.type == "cuda"

    def tokenize_only(t, threads):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda b: enc._prepare_piece(t[b[0]:b[1]], enc.token_budget, None,
                                                       pin), E.piece_bounds(len(t))))

    # the pipeline's own thread count, then others: is PIPELINE_THREADS the right choice here?
    for threads in dict.fromkeys((E.PIPELINE_THREADS, 1, 4)):
        key = "tokenize_only" if threads == E.PIPELINE_THREADS else f"tokenize_only_{threads}"
        record(key, f"Encoder tokenise + pack only ({threads} thread{'s' * (threads > 1)}, "
               "no device work)", lambda t, n=threads: tokenize_only(t, n), all_rows,
               model_work=False)

    default_budget = enc.token_budget
    # device work alone at the default token budget, then at others: is the default right?
    for budget in dict.fromkeys((default_budget, *p["budget_sweep"])):
        prepared = {}
        for t in (warm, texts):
            for a, b in E.piece_bounds(len(t)):
                prepared[(b - a, t[a], t[b - 1])] = enc._prepare_piece(t[a:b], budget, None,
                                                                      pin)
        enc._prepare_piece = (lambda t, budget_, batch_size, pin_, prepared=prepared:
                              prepared[(len(t), t[0], t[-1])])
        key = "device_only" if budget == default_budget else f"device_only_budget_{budget}"
        try:
            enc._overlap, enc.token_budget = True, budget
            record(key, f"Encoder device work only (texts tokenised beforehand), token budget "
                   f"{budget}", lambda t: enc.encode(t), all_rows)
        finally:
            del enc._prepare_piece
            enc._overlap, enc.token_budget = saved, default_budget
            prepared.clear()

    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device=str(dev))
    if dev.type == "cuda":
        st.half()
    st.max_seq_length = enc.max_length
    st_rows = np.arange(len(st_texts))
    for bs in (32, 256):
        record(f"st_bs{bs}", f"sentence-transformers {sentence_transformers.__version__} "
               f"{'fp16' if dev.type == 'cuda' else 'fp32'}, encode(batch_size={bs})",
               lambda t, bs=bs: st.encode(t, batch_size=bs, convert_to_numpy=True,
                                          show_progress_bar=False), st_rows)
    st = None  # free its weights before the next model loads
    seed = seed_loop(model_dir, dev)
    record("seed", "seeds' loop, fp32, one text at a time", seed, seed_rows, n_warm=8)
    del seed
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    base = rows["encoder"]["texts_per_s"]
    for row in rows.values():
        row["x_encoder"] = row["texts_per_s"] / base
    for key in ("encoder", "encoder_serial", "device_only"):
        rows[key]["x_st_bs32"] = rows[key]["texts_per_s"] / rows["st_bs32"]["texts_per_s"]
        rows[key]["x_st_bs256"] = rows[key]["texts_per_s"] / rows["st_bs256"]["texts_per_s"]
        rows[key]["x_seed"] = rows[key]["texts_per_s"] / rows["seed"]["texts_per_s"]
    enc_vecs = vecs["encoder"]
    n_st = len(st_texts)
    info["min_cosine"] = {
        "encoder_vs_st_bs32": min_cosine(enc_vecs[:n_st], vecs["st_bs32"]),
        "encoder_vs_seed_fp32": min_cosine(enc_vecs[seed_rows], vecs["seed"]),
        "st_bs32_vs_seed_fp32": min_cosine(vecs["st_bs32"][np.searchsorted(
            st_rows, seed_rows[seed_rows < n_st])], vecs["seed"][seed_rows < n_st]),
        "encoder_serial_vs_encoder": min_cosine(vecs["encoder_serial"], enc_vecs),
        "device_only_vs_encoder": min_cosine(vecs["device_only"], enc_vecs),
    }
    if ctx.device.type == "cuda":
        for row in rows.values():
            if row["tflops"] is not None:
                row["fraction_of_fp16_peak"] = row["tflops"] / H100_FP16_TFLOPS
    info["rows"] = rows
    return info


# -------------------------------------------------------------------------- cosine_topk
def torch_mm_topk(queries, keys, k: int):
    """What a torch user writes: normalise, then ``topk(q @ keys.T)`` over query chunks whose
    score block stays under 4 GiB."""
    import torch
    import torch.nn.functional as F

    qn = F.normalize(queries.float(), dim=1).to(queries.dtype)
    kn = F.normalize(keys.float(), dim=1).to(keys.dtype)
    chunk = max(1, min(len(qn), (4 << 30) // (len(kn) * kn.element_size())))
    scores, idx = [], []
    for a in range(0, len(qn), chunk):
        s, i = torch.topk(qn[a:a + chunk] @ kn.T, k, dim=1)
        scores.append(s)
        idx.append(i)
    return torch.cat(scores).float(), torch.cat(idx)


def topk_agreement(scores, indices, ref_scores, ref_indices) -> dict:
    """Recall@k of ``indices`` against the exact top-k, and the largest score error."""
    import torch

    k = ref_indices.shape[1]
    hits = (indices[:, :, None] == ref_indices[:, None, :]).any(2).sum().item()
    err = (scores.double() - ref_scores.double()).abs().max().item()
    return {"recall": hits / ref_indices.numel(), "max_score_error": err,
            "kth_score_gap_median": float(torch.median(ref_scores[:, 0] - ref_scores[:, k - 1]))}


def section_cosine_topk(ctx) -> dict:
    import torch

    from interestflow import kernels
    from interestflow.kernels import reference

    dev, p = ctx.device, ctx.p
    max_k = kernels.backend_module("triton", "cosine_topk").MAX_K
    dtype = torch.float16
    rows = []
    for nq, nk, d, k in p["topk"]:
        row = {"n_queries": nq, "n_keys": nk, "dim": d, "k": k, "dtype": "float16"}
        rows.append(row)
        if k > max_k:
            row["skipped"] = f"k={k} > the Triton kernel's MAX_K={max_k}"
            continue
        g = torch.Generator(device=dev).manual_seed(0)
        q = torch.randn(nq, d, device=dev, generator=g).to(dtype)
        keys = torch.randn(nk, d, device=dev, generator=g).to(dtype)
        flop = 2.0 * nq * nk * d
        min_bytes = (nq + nk) * d * q.element_size() + nq * k * (4 + 8)
        m = min(nq, p["topk_check_rows"])
        ref_s, ref_i = reference.cosine_topk(q[:m].float(), keys.float(), k)
        for name, fn in (("triton", lambda: kernels.cosine_topk(q, keys, k, backend="triton")),
                         ("torch_mm_topk", lambda: torch_mm_topk(q, keys, k))):
            try:
                s, i = fn()
                t = bench(fn, ctx)
            except Exception as exc:  # one backend failing leaves the other's figures
                row[name] = {"error": _short_error(exc)}
                continue
            sec = t["median_ms"] / 1e3
            row[name] = {**t, **topk_agreement(s[:m], i[:m], ref_s, ref_i),
                         "tflops": flop / sec / 1e12, "gbps_min_bytes": min_bytes / sec / 1e9}
            if dev.type == "cuda":
                row[name]["fraction_of_fp16_peak"] = flop / sec / 1e12 / H100_FP16_TFLOPS
                row[name]["fraction_of_hbm"] = min_bytes / sec / 1e12 / H100_HBM_TBPS
            del s, i
        if "median_ms" in row.get("triton", {}) and "median_ms" in row.get("torch_mm_topk", {}):
            row["speedup_vs_torch"] = (row["torch_mm_topk"]["median_ms"]
                                       / row["triton"]["median_ms"])
        q = keys = None  # free the device memory before the next shape
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return {"max_k": max_k, "rows": rows}


# ------------------------------------------------------------------------------- kmeans
def section_kmeans(ctx) -> dict:
    import torch

    from interestflow import KMeans, kernels
    from interestflow.resolve import module_available

    dev = ctx.device
    n, d, n_clusters, iters = ctx.p["kmeans"]
    g = torch.Generator(device=dev).manual_seed(0)
    # blobs around n_clusters random centres: clusters to find, not a structureless cloud
    # (centre spread 0.5 against unit noise: overlapping, so Lloyd runs all max_iter rounds)
    centres = torch.randn(n_clusters, d, device=dev, generator=g) * 0.5
    pick = torch.randint(0, n_clusters, (n,), device=dev, generator=g)
    x = centres[pick] + torch.randn(n, d, device=dev, generator=g)
    init = x[torch.randperm(n, device=dev, generator=g)[:n_clusters]].clone()
    del centres, pick
    info = {"n": n, "dim": d, "n_clusters": n_clusters, "max_iter": iters, "dtype": "float32",
            "data": "overlapping gaussian blobs (centre spread 0.5, unit noise), init = "
            "random rows"}
    fits, rows = {}, {}
    flop_iter = 2.0 * n * n_clusters * d

    def fit_row(name, make):
        try:
            make(1).fit(x)  # warm-up: kernel compilation, autotuning
            ctx.sync()
            km, sec = wall(lambda: make(iters).fit(x), ctx)
        except Exception as exc:
            return {"error": _short_error(exc)}
        fits[name] = km
        return {"seconds": sec, "n_iter": km.n_iter_, "ms_per_iter": sec / km.n_iter_ * 1e3,
                "inertia": km.inertia_, "assign_tflops_per_iter": flop_iter
                / (sec / km.n_iter_) / 1e12}

    for backend in ("torch", "triton"):
        rows[f"KMeans(backend='{backend}')"] = fit_row(backend, lambda it, b=backend: KMeans(
            n_clusters=n_clusters, init=init, n_init=1, max_iter=it, tol=0.0, backend=b))

    if not module_available("cuml"):
        rows["cuML KMeans"] = {"skipped": "not installed (cuml)"}
    elif dev.type != "cuda":
        rows["cuML KMeans"] = {"skipped": "needs CUDA (dry run on the CPU)"}
    else:
        rows["cuML KMeans"] = fit_row("cuml", lambda it: KMeans(
            n_clusters=n_clusters, init=init, n_init=1, max_iter=it, tol=0.0, backend="cuml"))
    rows["FAISS GPU Kmeans"] = _faiss_gpu_row(ctx, x, init, iters, flop_iter)

    base = rows["KMeans(backend='torch')"]
    for row in rows.values():
        if "ms_per_iter" in row and "ms_per_iter" in base:
            row["speedup_vs_torch"] = base["ms_per_iter"] / row["ms_per_iter"]
            row["inertia_ratio_vs_torch"] = row["inertia"] / base["inertia"]
    if "torch" in fits and "triton" in fits:
        from sklearn.metrics import adjusted_rand_score

        info["ari_triton_vs_torch"] = float(adjusted_rand_score(fits["torch"].labels_,
                                                                fits["triton"].labels_))
    info["rows"] = rows

    # the two kernels of one Lloyd iteration, timed alone from the same centroids
    kern = {}
    labels_by = {}
    for backend in ("torch", "triton"):
        try:
            lab, _ = kernels.kmeans_assign(x, init, backend=backend)
            t_a = bench(lambda b=backend: kernels.kmeans_assign(x, init, backend=b), ctx)
            t_u = bench(lambda b=backend: kernels.kmeans_update(x, lab, n_clusters, backend=b),
                        ctx)
        except Exception as exc:
            kern[backend] = {"error": _short_error(exc)}
            continue
        labels_by[backend] = lab
        kern[backend] = {"assign": {**t_a, "tflops": flop_iter / t_a["median_ms"] / 1e9},
                         "update": {**t_u, "gbps_min_bytes": (x.numel() * 4 + n * 8)
                                    / t_u["median_ms"] / 1e6}}
    if len(labels_by) == 2:
        kern["assign_labels_equal_fraction"] = float(
            (labels_by["torch"] == labels_by["triton"]).double().mean())
        for part in ("assign", "update"):
            kern[f"{part}_speedup_triton_vs_torch"] = (kern["torch"][part]["median_ms"]
                                                       / kern["triton"][part]["median_ms"])
    info["kernels"] = kern
    x = None
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return info


def _faiss_gpu_row(ctx, x, init, iters, flop_iter) -> dict:
    """faiss.Kmeans(gpu=True) from the same init; host arrays in, as FAISS's Python API takes."""
    try:
        import faiss
    except ImportError:
        return {"skipped": "not installed (faiss)"}
    if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() < 1:
        return {"skipped": "faiss installed without GPU support (faiss.get_num_gpus() == 0)"}
    if ctx.device.type != "cuda":
        return {"skipped": "needs CUDA (dry run on the CPU)"}
    xs = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
    cs = np.ascontiguousarray(init.cpu().numpy(), dtype=np.float32)

    def run(niter):
        km = faiss.Kmeans(xs.shape[1], cs.shape[0], niter=niter, gpu=True, seed=0,
                          max_points_per_centroid=xs.shape[0], verbose=False)
        km.train(xs, init_centroids=cs)
        return km

    try:
        run(1)
        km, sec = wall(lambda: run(iters), ctx)
    except Exception as exc:
        return {"error": _short_error(exc)}
    return {"seconds": sec, "n_iter": iters, "ms_per_iter": sec / iters * 1e3,
            "inertia": float(km.obj[-1]), "assign_tflops_per_iter": flop_iter
            / (sec / iters) / 1e12, "note": "includes host-to-device copies of the data"}


# --------------------------------------------------------------------------- pytest_gpu
def section_pytest_gpu(ctx) -> dict:
    target = ctx.args.pytest_target
    timeout = int(max(10, min(ctx.p["pytest_timeout_s"], ctx.remaining() - 15)))
    # a test module that cannot be imported there (e.g. one needing the packaged model) must
    # not stop the GPU tests of the others: it is counted as an error instead
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", *target.split()]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        log, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        log = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        log, rc = log + f"\n[timed out after {timeout} s]", "timeout"
    (ctx.out / "pytest_gpu.log").write_text(log)
    counts = {}
    tail = [ln for ln in log.strip().splitlines() if ln.strip()][-1:] or [""]
    for num, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|"
                                r"xpassed|warnings?)", tail[0]):
        counts[word.rstrip("s") if word.startswith(("error", "warning")) else word] = int(num)
    return {"command": " ".join(cmd[1:]), "returncode": rc, "counts": counts,
            "summary": tail[0], "seconds": time.perf_counter() - t0,
            "log": "pytest_gpu.log"}


# ------------------------------------------------------------------------------ output
def _short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:600]


def _fmt(v, spec=".3g"):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def markdown(results: dict) -> str:
    env = results.get("env", {})
    lines = [f"# gpu_check\n\nDevice: {env.get('device', '?')}; git {results['git_rev']}; "
             f"torch {env.get('versions', {}).get('torch', '?')}; triton "
             f"{env.get('versions', {}).get('triton', '?')}; import: {results['import_mode']}; "
             f"{results['date']}\n"]
    for name in SECTIONS:
        sec = results["sections"].get(name)
        if sec is None:
            continue
        lines.append(f"## {name}: {sec['status']} ({sec.get('seconds', 0):.1f} s)\n")
        if sec["status"] != "ok":
            lines.append(f"{sec.get('reason') or sec.get('error', '')}\n")
            continue
        r = sec["result"]
        if name == "env":
            for key in ("device", "capability", "multiprocessors", "memory_gib", "nvidia_smi",
                        "torch_cuda", "python", "native_module"):
                if key in r:
                    lines.append(f"- {key}: {r[key]}")
            lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()))
            lines.append("")
        elif name == "encode":
            lines.append(f"Model: {r['model']}; Encoder dtype {r['encoder_dtype']}, forward "
                         f"{r['forward_backend']}, token budget {r['token_budget']}; "
                         f"{r['n_texts']:,} texts, tokens mean {r['tokens_mean']:.1f} / p95 "
                         f"{r['tokens_p95']:.0f} / max {r['tokens_max']}; "
                         f"{r['gflop_per_text_mean']:.3f} GFLOP per text.\n")
            lines.append("| method | texts | texts/s | TFLOP/s | x Encoder | x ST bs32 | "
                         "x seeds' loop |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|")
            for row in r["rows"].values():
                lines.append(f"| {row['method']} | {row['texts']:,} | {row['texts_per_s']:,.0f} "
                             f"| {_fmt(row['tflops'] or '-')} | {row['x_encoder']:.2f} | "
                             f"{_fmt(row.get('x_st_bs32', ''), '.2f')} | "
                             f"{_fmt(row.get('x_seed', ''), '.1f')} |")
            lines.append("\nMin cosine: " + ", ".join(f"{k} {v:.6f}"
                                                       for k, v in r["min_cosine"].items()))
            lines.append("\nAttention ops (calls in one encode of the warm-up texts): "
                         + (", ".join(f"{k} {v}" for k, v in r["sdpa_ops"].items()) or "none"))
            lines.append("")
        elif name == "cosine_topk":
            lines.append("| shape (q x keys x dim, k) | method | median ms | TFLOP/s | "
                         "x fp16 peak | GB/s (min bytes) | x HBM | recall@k | max score err |")
            lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
            for row in r["rows"]:
                shape = f"{row['n_queries']:,} x {row['n_keys']:,} x {row['dim']}, k={row['k']}"
                if "skipped" in row:
                    lines.append(f"| {shape} | skipped: {row['skipped']} | | | | | | | |")
                    continue
                for m in ("triton", "torch_mm_topk"):
                    x = row.get(m, {})
                    if "error" in x:
                        lines.append(f"| {shape} | {m}: error {x['error'][:120]} | | | | | | | |")
                        continue
                    lines.append(
                        f"| {shape} | {m} | {x['median_ms']:.3g} | {x['tflops']:.3g} | "
                        f"{_fmt(x.get('fraction_of_fp16_peak', '-'), '.1%')} | "
                        f"{x['gbps_min_bytes']:.3g} | {_fmt(x.get('fraction_of_hbm', '-'), '.1%')}"
                        f" | {x['recall']:.4f} | {x['max_score_error']:.2g} |")
                if "speedup_vs_torch" in row:
                    lines.append(f"| {shape} | triton speed-up vs torch | "
                                 f"{row['speedup_vs_torch']:.2f}x | | | | | | |")
            lines.append("")
        elif name == "kmeans":
            lines.append(f"{r['n']:,} x {r['dim']} float32, K = {r['n_clusters']}, "
                         f"max_iter {r['max_iter']}, tol 0, same init; {r['data']}.\n")
            lines.append("| method | ms / iteration | iterations | x torch | inertia / torch "
                         "| note |")
            lines.append("|---|---:|---:|---:|---:|---|")
            for label, row in r["rows"].items():
                if "ms_per_iter" in row:
                    lines.append(f"| {label} | {row['ms_per_iter']:.3g} | {row['n_iter']} | "
                                 f"{_fmt(row.get('speedup_vs_torch', '-'), '.2f')} | "
                                 f"{_fmt(row.get('inertia_ratio_vs_torch', '-'), '.6f')} | "
                                 f"{row.get('note', '')} |")
                else:
                    lines.append(f"| {label} | | | | | "
                                 f"{row.get('skipped') or 'error: ' + row.get('error', '')} |")
            k = r.get("kernels", {})
            for b in ("torch", "triton"):
                if b in k and "assign" in k[b]:
                    lines.append(f"\nKernels alone, {b}: assign {k[b]['assign']['median_ms']:.3g}"
                                 f" ms ({k[b]['assign']['tflops']:.3g} TFLOP/s), update "
                                 f"{k[b]['update']['median_ms']:.3g} ms")
                elif b in k:
                    lines.append(f"\nKernels alone, {b}: error {k[b].get('error')}")
            if "assign_labels_equal_fraction" in k:
                lines.append(f"\nTriton vs torch: assign labels equal "
                             f"{k['assign_labels_equal_fraction']:.6f}, speed-up assign "
                             f"{k['assign_speedup_triton_vs_torch']:.2f}x, update "
                             f"{k['update_speedup_triton_vs_torch']:.2f}x; fit ARI "
                             f"{r.get('ari_triton_vs_torch', float('nan')):.4f}")
            lines.append("")
        elif name == "pytest_gpu":
            lines.append(f"`{r['command']}` -> rc {r['returncode']}: {r['summary']}\n")
    return "\n".join(lines) + "\n"


def write(ctx, results):
    (ctx.out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (ctx.out / "gpu_check.md").write_text(markdown(results))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "gpu_check_out"),
                    help="output folder (default $OUT, else ./gpu_check_out)")
    ap.add_argument("--git-rev", default="unknown", help="revision to record")
    ap.add_argument("--import-mode", default="as found",
                    help="how interestflow was made importable (recorded only)")
    ap.add_argument("--model-dir", default=None,
                    help=f"encoder model folder (default {DEFAULT_MODEL.relative_to(ROOT)})")
    ap.add_argument("--budget-s", type=float, default=530.0,
                    help="seconds this run may take; sections that would not fit are skipped")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--pytest-target", default="tests",
                    help="paths given to `pytest -m gpu` (space-separated)")
    ap.add_argument("--dry-run-cpu", action="store_true",
                    help="CPU, tiny shapes, tiny random BERT, TRITON_INTERPRET=1 (for CI)")
    args = ap.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        ap.error(f"--sections: unknown {unknown}; valid: {','.join(SECTIONS)}")
    if args.dry_run_cpu:
        os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton
    else:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device visible; pass --dry-run-cpu to check the logic "
                  "on the CPU", file=sys.stderr)
            return 2
    ctx = Context(args)
    if ctx.dry:
        import torch

        # figures of a dry run mean nothing; one intra-op thread keeps it quick on a busy CPU
        torch.set_num_threads(1)
    results = {"benchmark": "gpu_check", "git_rev": args.git_rev,
               "import_mode": args.import_mode, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "budget_s": args.budget_s, "profile": "dry" if ctx.dry else "gpu",
               "sections": {}}
    funcs = {"env": section_env, "encode": section_encode, "cosine_topk": section_cosine_topk,
             "kmeans": section_kmeans, "pytest_gpu": section_pytest_gpu}
    failed = False
    for name in SECTIONS:
        if name not in chosen:
            continue
        left = ctx.remaining()
        need = 1 if ctx.dry else SECTION_MIN_S[name]
        print(f"[gpu_check] {name} ({left:.0f} s of the budget left)", flush=True)
        if left < need:
            sec = {"status": "skipped", "reason": f"time budget: {left:.0f} s left, the section "
                   f"needs about {need} s"}
        else:
            t0 = time.perf_counter()
            try:
                sec = {"status": "ok", "result": funcs[name](ctx)}
            except Exception as exc:
                failed = True
                sec = {"status": "error", "error": _short_error(exc),
                       "traceback": traceback.format_exc()[-4000:]}
                print(sec["traceback"], file=sys.stderr, flush=True)
            sec["seconds"] = time.perf_counter() - t0
            if ctx.device.type == "cuda":
                import torch

                torch.cuda.empty_cache()
        results["sections"][name] = sec
        if name == "env" and sec["status"] == "ok":
            results["env"] = sec["result"]
        write(ctx, results)
    results["seconds"] = time.monotonic() - ctx.t0
    write(ctx, results)
    print(markdown(results), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
