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
two_stage
    The two-stage recommender on synthetic interactions (``make_interactions``: topics, skewed
    item popularity, the latest 10 of 90 days held out as labels). ``fit_ease`` on the device:
    seconds, and TFLOP/s of its Cholesky + inverse from the Gram matrix on the device (n^3
    flops: n^3/3 + 2n^3/3) against the H100's fp32 (67) and TF32 (494 TFLOP/s) peaks; at a
    smaller n also on the CPU, with max |B_device - B_cpu|. ``CandidateGenerator.generate``
    users/s on the device for every user and, for one subset, on the device and on the CPU
    (the same fitted state moved with ``from_state``), with equal candidate items and features
    within float32 tolerance. A LightGBM ``Ranker`` (CPU) trained on some users' candidates
    with the held-out labels, its fit time, scoring users/s and hit@10 ("skipped: lightgbm not
    installed" without it). ``InterestEngine(...).fit`` + ``recommend`` with device CUDA and
    CPU (``tests/_fakes.HashEncoder``, so that both see the same vectors): seconds and the
    fraction of identical top-10 lists.
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
H100_FP32_TFLOPS = 67.0   # fp32 without tensor cores, H100 SXM datasheet (EASE runs in fp32)
H100_TF32_TFLOPS = 494.0  # dense TF32 tensor-core peak, H100 SXM datasheet
DEFAULT_MODEL = ROOT / ".gpu_carry" / "minilm-fp16"
SECTIONS = ("env", "encode", "cosine_topk", "kmeans", "two_stage", "pytest_gpu")

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
        cand_users=100_000, cand_items=20_000, per_user=(10, 40), topics=50, dim=384,
        ease_cpu_items=4000, ease_repeat=3, cand_cpu_users=5000, warm_users=2048,
        ranker_train_users=5000, ranker_score_users=20_000, ranker_rounds=50,
        ranker_min_leaf=50, e2e_users=3000,
        e2e_ranker=dict(n_models=2, n_rounds=100, num_threads=8), e2e_min_s=60,
    ),
    "dry": dict(
        n_texts=120, n_seed=6, n_st=120, warm_texts=8, demo_users=20, encoder_repeat=1,
        budget_sweep=(300,),
        bert=TINY_CONFIG, topk=[(37, 300, 24, 5), (5, 70, 3, 70)], topk_check_rows=16,
        kmeans=(500, 16, 7, 3), cpu_repeat=2, pytest_timeout_s=120,
        cand_users=300, cand_items=400, per_user=(4, 12), topics=6, dim=16,
        ease_cpu_items=150, ease_repeat=1, cand_cpu_users=100, warm_users=50,
        ranker_train_users=200, ranker_score_users=300, ranker_rounds=5, ranker_min_leaf=5,
        e2e_users=40, e2e_ranker=dict(n_models=1, n_rounds=5, min_data_in_leaf=5),
    ),
}
# Rough seconds each section needs at the "gpu" sizes; a section is skipped (and says so) when
# less than this is left of --budget-s, so the run ends inside the device tool's call limit.
SECTION_MIN_S = {"env": 1, "encode": 120, "cosine_topk": 30, "kmeans": 40, "two_stage": 120,
                 "pytest_gpu": 30}


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

    events = make_demo_events(n_users=n_users, random_state=seed).events["text"].tolist()
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


# ---------------------------------------------------------------------------- two_stage
def make_interactions(n_users: int, n_items: int, per_user: tuple[int, int], n_topics: int,
                      dim: int, seed: int = 0) -> dict:
    """A synthetic two-stage data set (fixed seed): item vectors around ``n_topics`` topic
    centres; each user draws ``per_user`` interactions, 85% from their own topic with a
    skewed popularity inside it (rank ~ size * u**3), over 90 days; user vector = normalised
    mean of their items' vectors; hard segments = topics (soft rows 0.8 / 0.2 spread)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_topics, dim)).astype(np.float32)
    item_topic = rng.integers(0, n_topics, n_items)
    V = centres[item_topic] + 0.7 * rng.normal(size=(n_items, dim)).astype(np.float32)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    user_topic = rng.integers(0, n_topics, n_users)
    counts = rng.integers(per_user[0], per_user[1] + 1, n_users)
    iu = np.repeat(np.arange(n_users), counts)
    n = len(iu)
    topic = np.where(rng.random(n) < 0.85, user_topic[iu], rng.integers(0, n_topics, n))
    order = np.argsort(item_topic, kind="stable")
    size = np.bincount(item_topic, minlength=n_topics)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    topic = np.where(size[topic] > 0, topic, item_topic[order[0]])  # no empty topic drawn
    ii = order[start[topic] + (size[topic] * rng.random(n) ** 3).astype(np.int64)]
    ts = 1.7e9 + rng.uniform(0, 90, n) * 86400.0
    X = sp.csr_matrix((np.ones(n, np.float32), (iu, ii)), shape=(n_users, n_items))
    U = np.asarray(X @ V, np.float32)
    U /= np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    soft = np.full((n_users, n_topics), 0.2 / max(n_topics - 1, 1), np.float32)
    soft[np.arange(n_users), user_topic] = 0.8
    return {"user_vectors": U, "item_vectors": V, "inter_user": iu, "inter_item": ii,
            "inter_ts": ts, "user_segment": user_topic, "segment_soft": soft,
            "item_topic": item_topic,
            "n_users": n_users, "n_items": n_items}


def _median_seconds(fn, ctx, repeat: int, warm: bool):
    """(last result, median wall seconds of ``repeat`` synchronised runs), after one untimed
    run when ``warm``."""
    if warm:
        fn()
    out, times = None, []
    for _ in range(repeat):
        out, sec = wall(fn, ctx)
        times.append(sec)
    return out, float(np.median(times))


def _lightgbm_missing():
    try:
        import lightgbm  # noqa: F401
    except ImportError:
        return "skipped: lightgbm not installed"
    except OSError as exc:  # e.g. libgomp missing
        return f"skipped: lightgbm does not load ({exc})"
    return None


def _ease_part(ctx, d) -> dict:
    """fit_ease on the device at the profile's size; device vs CPU at a smaller one."""
    import scipy.sparse as sp
    import torch

    from interestflow.candidates import fit_ease

    p, dev = ctx.p, ctx.device
    X = sp.csr_matrix((np.ones(len(d["inter_user"]), np.float32),
                       (d["inter_user"], d["inter_item"])), shape=(d["n_users"], d["n_items"]))
    n = d["n_items"]
    info = {"n_items": n, "n_users": d["n_users"], "nnz": int(X.nnz),
            "flops_note": "n^3 per fit: Cholesky n^3/3 + cholesky_inverse 2n^3/3 "
                          "(triangular inverse n^3/3, L^-T L^-1 n^3/3)"}
    (B, lam), sec = _median_seconds(lambda: fit_ease(X.indptr, X.indices, d["n_users"], n,
                                                     device=dev), ctx, 1, dev.type == "cuda")
    info.update(lam=lam, fit_seconds=sec, b_device=str(B.device))
    # the dense solve alone, from the Gram matrix already on the device
    G = torch.from_numpy(np.asarray((X.T @ X).toarray(), np.float32)).to(dev)
    G.diagonal().add_(float(lam))
    _, solve = _median_seconds(lambda: torch.cholesky_inverse(torch.linalg.cholesky(G)), ctx,
                               p["ease_repeat"], dev.type == "cuda")
    tflops = float(n) ** 3 / solve / 1e12
    info.update(solve_seconds=solve, solve_tflops=tflops)
    if dev.type == "cuda":
        info.update(fraction_of_fp32_peak=tflops / H100_FP32_TFLOPS,
                    fraction_of_tf32_peak=tflops / H100_TF32_TFLOPS,
                    allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32))
    del G, B
    # same size on both: the CPU baseline, and the largest difference of B
    m = min(p["ease_cpu_items"], n)
    Xs = X[:, :m].tocsr()
    (Bc, _), t_cpu = _median_seconds(lambda: fit_ease(Xs.indptr, Xs.indices, d["n_users"], m,
                                                      lam=lam, device="cpu"), ctx, 1, False)
    (Bd, _), t_dev = _median_seconds(lambda: fit_ease(Xs.indptr, Xs.indices, d["n_users"], m,
                                                      lam=lam, device=dev), ctx, 1,
                                     dev.type == "cuda")
    info["small"] = {"n_items": m, "cpu_seconds": t_cpu, "device_seconds": t_dev,
                     "speedup": t_cpu / t_dev,
                     "max_abs_diff_b": float((Bd.cpu() - Bc).abs().max()),
                     "max_abs_b": float(Bc.abs().max())}
    return info


def _candidate_part(ctx, d, rec, gen_dev) -> tuple[dict, object]:
    """generate() on the device for every user, on the CPU for a subset; same candidates?"""
    from interestflow.candidates import CandidateGenerator

    p = ctx.p
    gen_cpu = CandidateGenerator.from_state(gen_dev.config_dict(), gen_dev.state_dict(), rec,
                                            device="cpu")
    rows = np.arange(d["n_users"])
    sub = np.random.default_rng(1).permutation(d["n_users"])[:p["cand_cpu_users"]]
    sub.sort()
    gen_dev.generate(rows[:p["warm_users"]])  # index, cuBLAS and sparse kernels warmed up
    cand, t_dev = wall(lambda: gen_dev.generate(rows), ctx)
    cand_sub_dev, t_dev_sub = wall(lambda: gen_dev.generate(sub), ctx)
    cand_sub_cpu, t_cpu_sub = wall(lambda: gen_cpu.generate(sub), ctx)
    a, b = cand_sub_dev, cand_sub_cpu
    same_items = bool(np.array_equal(a.indptr, b.indptr) and np.array_equal(a.items, b.items))
    info = {"users": len(rows), "candidates": int(len(cand.items)),
            "candidates_per_user": len(cand.items) / max(len(rows), 1),
            "device_seconds": t_dev, "device_users_per_s": len(rows) / t_dev,
            "subset_users": len(sub), "subset_device_seconds": t_dev_sub,
            "subset_cpu_seconds": t_cpu_sub,
            "subset_device_users_per_s": len(sub) / t_dev_sub,
            "subset_cpu_users_per_s": len(sub) / t_cpu_sub,
            "speedup_vs_cpu": t_cpu_sub / t_dev_sub, "items_identical": same_items,
            "ease_on": gen_dev.ease_b_ is not None}
    if same_items:
        fa, fb = a.features, b.features
        nan_same = bool(np.array_equal(np.isnan(fa), np.isnan(fb)))
        ok = ~np.isnan(fa)
        diff = np.abs(fa[ok] - fb[ok])
        rel = diff / np.maximum(np.abs(fb[ok]), 1.0)
        info.update(features_nan_pattern_identical=nan_same,
                    features_max_abs_diff=float(diff.max()) if diff.size else 0.0,
                    features_max_rel_diff=float(rel.max()) if rel.size else 0.0)
        info["features_within_fp32_tolerance"] = bool(
            nan_same and info["features_max_rel_diff"] <= 1e-4)
        worst = int(np.argmax(np.nanmax(np.abs(fa - fb), axis=0))) if diff.size else 0
        info["features_worst_column"] = a.feature_names[worst]
    else:
        sa = np.split(a.items, a.indptr[1:-1])
        sb = np.split(b.items, b.indptr[1:-1])
        info["users_with_identical_items"] = float(np.mean(
            [np.array_equal(x, y) for x, y in zip(sa, sb)]))
    return info, cand


def _ranker_part(ctx, d, rec, cand, labels_of, item_first_ts) -> dict:
    """A Ranker trained (CPU) on some users' candidates; scoring throughput on all of them."""
    from interestflow.candidates import Candidates
    from interestflow.ranker import Ranker, RankerConfig, ranking_features, user_activity

    p = ctx.p
    count, last = user_activity(d["train_user"], d["train_ts"], d["n_users"])
    r = cand.user_rows
    X, t_feat = wall(lambda: ranking_features(
        cand, rec.popularity_, segment_weights=rec.user_segment_weights_[r], count=count[r],
        last_ts=last[r], t_ref=d["t_split"], item_first_ts=item_first_ts), ctx)
    y = labels_of(X).astype(np.float32)
    m = min(p["ranker_train_users"], X.n_users)
    hi = int(X.indptr[m])
    train = Candidates(X.indptr[:m + 1], X.items[:hi], X.features[:hi], X.feature_names,
                       user_rows=X.user_rows[:m])
    threads = max(1, min(16, os.cpu_count() or 1))
    cfg = RankerConfig(n_rounds=p["ranker_rounds"], n_models=1, validation_fraction=0.0,
                       min_data_in_leaf=p["ranker_min_leaf"], num_threads=threads)
    r, t_fit = wall(lambda: Ranker(cfg).fit(train, y[:hi]), ctx)
    (scores, items), t_score = wall(lambda: r.topk(X, 10), ctx)
    keys = X.user_rows[:, None] * d["n_items"] + np.where(items >= 0, items, 0)
    hit = (np.isin(keys, d["heldout_keys"]) & (items >= 0)).any(axis=1)
    has_pos = np.add.reduceat(y, X.indptr[:-1]) > 0 if len(y) else np.zeros(0, bool)
    return {"features_seconds": t_feat, "rows": int(len(X.items)),
            "n_features": len(X.feature_names), "train_users": m, "train_rows": hi,
            "train_positives": int(y[:hi].sum()), "rounds": p["ranker_rounds"],
            "num_threads": threads, "fit_seconds": t_fit, "score_users": X.n_users,
            "score_seconds": t_score, "score_users_per_s": X.n_users / t_score,
            "users_with_a_positive_candidate": float(has_pos.mean()),
            "hit_at_10_of_those": float(hit[has_pos].mean()) if has_pos.any() else None,
            "note": "LightGBM on the CPU (no GPU build in the wheel); n_models=1"}


def _e2e_part(ctx) -> dict:
    """InterestEngine fit + recommend on the device and on the CPU: time and agreement."""
    import importlib.util

    from interestflow import InterestEngine
    from interestflow.synthetic import make_demo_events

    spec = importlib.util.spec_from_file_location("_fakes", ROOT / "tests" / "_fakes.py")
    fakes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fakes)
    p = ctx.p
    events = make_demo_events(n_users=p["e2e_users"], random_state=0).events
    ranker = dict(p["e2e_ranker"]) if _lightgbm_missing() is None else None
    users = events["user_id"].drop_duplicates().to_numpy()
    info = {"users": len(users), "events": len(events), "ranker": ranker or
            f"None ({_lightgbm_missing()})", "encoder": "tests/_fakes.HashEncoder (dim "
            f"{fakes.DIM}; the same vectors on both devices)"}
    recs = {}
    for name, dev in (("device", ctx.device), ("cpu", "cpu")):
        eng = InterestEngine(encoder=fakes.HashEncoder(), n_segments=8, ranker=ranker,
                             device=dev, random_state=0)
        _, t_fit = wall(lambda: eng.fit(events), ctx)
        rec, t_rec = wall(lambda: eng.recommend(users, k=10), ctx)
        recs[name] = rec
        info[name] = {"fit_seconds": t_fit, "recommend_seconds": t_rec,
                      "recommend_users_per_s": len(users) / t_rec}
    info["fit_speedup"] = info["cpu"]["fit_seconds"] / info["device"]["fit_seconds"]
    info["recommend_speedup"] = (info["cpu"]["recommend_seconds"]
                                 / info["device"]["recommend_seconds"])
    lists = {k: v.groupby("user_id", sort=True)["item_id"].apply(tuple) for k, v in recs.items()}
    a, b = lists["device"].align(lists["cpu"])
    same = np.array([x == y for x, y in zip(a, b)])
    sets = np.array([isinstance(x, tuple) and isinstance(y, tuple) and set(x) == set(y)
                     for x, y in zip(a, b)])
    info.update(identical_top10_fraction=float(same.mean()),
                same_top10_set_fraction=float(sets.mean()), users_compared=len(same))
    return info


def section_two_stage(ctx) -> dict:
    """EASE fit, candidate generation, ranker and the engine end to end, device vs CPU."""
    import torch

    from interestflow.candidates import CandidateConfig, CandidateGenerator
    from interestflow.recommend import Recommender, RecommendConfig

    p = ctx.p
    if ctx.dry:
        torch.manual_seed(0)
    d, t_data = wall(lambda: make_interactions(p["cand_users"], p["cand_items"],
                                               p["per_user"], p["topics"], p["dim"]), ctx)
    # the latest 10 of the 90 days are the ranker's labels; stage 1 sees the rest
    t_split = 1.7e9 + 80 * 86400.0
    train = d["inter_ts"] < t_split
    d.update(train_user=d["inter_user"][train], train_ts=d["inter_ts"][train], t_split=t_split,
             heldout_keys=np.unique(d["inter_user"][~train] * d["n_items"]
                                    + d["inter_item"][~train]))
    info = {"data": f"make_interactions: {d['n_users']:,} users x {d['n_items']:,} items, "
                    f"{len(d['inter_user']):,} interactions ({int(train.sum()):,} before the "
                    f"label split), dim {p['dim']}, {p['topics']} topics",
            "data_seconds": t_data}
    out = {}
    try:
        out["ease"] = _ease_part(ctx, dict(d, inter_user=d["train_user"],
                                           inter_item=d["inter_item"][train]))
    except Exception as exc:
        out["ease"] = {"error": _short_error(exc)}
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    kw = dict(inter_user=d["train_user"], inter_item=d["inter_item"][train],
              inter_ts=d["train_ts"])
    rec, t_rec = wall(lambda: Recommender(RecommendConfig(weights={"content": 1.0})).fit(
        user_vectors=d["user_vectors"], item_vectors=d["item_vectors"],
        inter_weight=np.ones(int(train.sum())), user_segment=d["user_segment"],
        segment_soft=d["segment_soft"], half_life_days=30.0, **kw), ctx)
    cfg = CandidateConfig(index_kind="exact", ease_lambda=out["ease"].get("lam"))
    gen, t_gen = wall(lambda: CandidateGenerator(cfg).fit(rec, half_life_days=30.0,
                                                          device=ctx.device, **kw), ctx)
    info.update(recommender_fit_seconds=t_rec, generator_fit_seconds=t_gen,
                generator_note="CandidateGenerator.fit on the device (EASE with the lambda "
                               "of the EASE part); the CPU generator is the same state moved "
                               "to the CPU (from_state), so only generate() is compared")
    out["candidates"], cand = _candidate_part(ctx, d, rec, gen)
    first_ts = gen.item_first_ts_
    gen = None
    missing = _lightgbm_missing()
    if missing:
        out["ranker"] = {"skipped": missing}
    else:
        def labels_of(X):
            return np.isin(X.user_rows[np.repeat(np.arange(X.n_users), np.diff(X.indptr))]
                           * d["n_items"] + X.items, d["heldout_keys"])

        sub = np.arange(min(p["ranker_score_users"], cand.n_users))
        hi = int(cand.indptr[len(sub)])
        from interestflow.candidates import Candidates

        part = Candidates(cand.indptr[:len(sub) + 1], cand.items[:hi], cand.features[:hi],
                          cand.feature_names, user_rows=cand.user_rows[sub])
        out["ranker"] = _ranker_part(ctx, d, rec, part, labels_of, first_ts)
    cand = d = None
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    # the end-to-end part leaves SECTION_MIN_S["pytest_gpu"] to the last section
    need = 0 if ctx.dry else p["e2e_min_s"] + SECTION_MIN_S["pytest_gpu"]
    if ctx.remaining() < need:
        out["end_to_end"] = {"skipped": f"time budget: {ctx.remaining():.0f} s left, the part "
                                        f"needs about {need} s"}
    else:
        out["end_to_end"] = _e2e_part(ctx)
    info.update(out)
    return info


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
        elif name == "two_stage":
            lines.extend(_two_stage_lines(r))
        elif name == "pytest_gpu":
            lines.append(f"`{r['command']}` -> rc {r['returncode']}: {r['summary']}\n")
    return "\n".join(lines) + "\n"


def _two_stage_lines(r: dict) -> list[str]:
    out = [f"Data: {r['data']}. Recommender fit (CPU) {r['recommender_fit_seconds']:.3g} s; "
           f"CandidateGenerator.fit on the device {r['generator_fit_seconds']:.3g} s.\n"]
    e = r.get("ease", {})
    if "error" in e:
        out.append(f"- fit_ease: error {e['error']}")
    else:
        sm = e["small"]
        out.append(f"- fit_ease, {e['n_items']:,} items ({e['b_device']}): {e['fit_seconds']:.3g}"
                   f" s with the host Gram matrix; Cholesky + inverse alone "
                   f"{e['solve_seconds']:.3g} s = {e['solve_tflops']:.3g} TFLOP/s "
                   f"({e['flops_note']})"
                   + (f", {e['fraction_of_fp32_peak']:.1%} of the fp32 peak "
                      f"{H100_FP32_TFLOPS:g}, {e['fraction_of_tf32_peak']:.1%} of TF32 "
                      f"{H100_TF32_TFLOPS:g}" if "fraction_of_fp32_peak" in e else ""))
        out.append(f"- fit_ease at {sm['n_items']:,} items: CPU {sm['cpu_seconds']:.3g} s, device "
                   f"{sm['device_seconds']:.3g} s ({sm['speedup']:.2f}x); max |B_dev - B_cpu| "
                   f"{sm['max_abs_diff_b']:.2g} (max |B| {sm['max_abs_b']:.3g})")
    c = r["candidates"]
    out.append(f"- generate: {c['users']:,} users on the device {c['device_users_per_s']:,.0f} "
               f"users/s ({c['candidates_per_user']:.0f} candidates/user, EASE "
               f"{'on' if c['ease_on'] else 'off'}); the same {c['subset_users']:,} users: "
               f"device {c['subset_device_users_per_s']:,.0f}, CPU "
               f"{c['subset_cpu_users_per_s']:,.0f} users/s ({c['speedup_vs_cpu']:.2f}x); items "
               f"identical {c['items_identical']}, features within fp32 tolerance "
               f"{c.get('features_within_fp32_tolerance')} (max rel diff "
               f"{_fmt(c.get('features_max_rel_diff', '-'), '.2g')} in "
               f"{c.get('features_worst_column', '-')})")
    k = r["ranker"]
    if "skipped" in k:
        out.append(f"- ranker: {k['skipped']}")
    else:
        out.append(f"- ranker ({k['note']}): fit {k['fit_seconds']:.3g} s on {k['train_rows']:,}"
                   f" rows of {k['train_users']:,} users ({k['rounds']} rounds, "
                   f"{k['num_threads']} threads); features {k['features_seconds']:.3g} s and "
                   f"top-10 of {k['score_users']:,} users {k['score_users_per_s']:,.0f} users/s;"
                   f" hit@10 {_fmt(k['hit_at_10_of_those'])} of the users with a held-out "
                   f"item among their candidates ({k['users_with_a_positive_candidate']:.1%})")
    x = r["end_to_end"]
    if "skipped" in x:
        return out + [f"- InterestEngine end to end: {x['skipped']}", ""]
    out.append(f"- InterestEngine end to end ({x['users']:,} users, {x['events']:,} events, "
               f"{x['encoder']}, ranker {x['ranker']}): fit device {x['device']['fit_seconds']:.3g}"
               f" s vs CPU {x['cpu']['fit_seconds']:.3g} s ({x['fit_speedup']:.2f}x); recommend "
               f"{x['device']['recommend_users_per_s']:,.0f} vs "
               f"{x['cpu']['recommend_users_per_s']:,.0f} users/s; identical top-10 lists "
               f"{x['identical_top10_fraction']:.4f}, same top-10 sets "
               f"{x['same_top10_set_fraction']:.4f} of {x['users_compared']:,} users")
    out.append("")
    return out


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
             "kmeans": section_kmeans, "two_stage": section_two_stage,
             "pytest_gpu": section_pytest_gpu}
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
