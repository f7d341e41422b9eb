"""The GPU check script and the encoder's CUDA pipeline, exercised on the CPU.

``benchmarks/gpu_check.py --dry-run-cpu`` runs every section of the device-machine check with
tiny shapes (Triton interpreted), so its logic is tested here although CI has no GPU. The
encoder's overlapped tokenise/encode pipeline (the CUDA default) runs here on the CPU through
``Encoder._overlap = True``; the ``gpu``-marked tests run it on CUDA where one is visible.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import interestflow.encoder as E
from interestflow.encoder import Encoder

from _fakes import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SHELL = ROOT / "benchmarks" / "gpu_check.sh"


gc = load_script("gpu_check", SCRIPT)

TEXTS = gc.make_texts(24, 20, seed=3) + ["A", "ok", "Ünïcödé çhàrs — naïve café",
                                         " ".join(["long"] * 400)]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env.update(TOKENIZERS_PARALLELISM="false", **extra)
    return env


# ------------------------------------------------------------------------- the script
@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check_out")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run-cpu", "--out", str(out), "--git-rev", "abc123",
         "--pytest-target", "tests/test_import.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_dry_run_every_section_ok(dry_run):
    res, md = dry_run
    assert res["git_rev"] == "abc123" and res["profile"] == "dry"
    assert list(res["sections"]) == list(gc.SECTIONS)
    for name, sec in res["sections"].items():
        assert sec["status"] == "ok", (name, sec.get("error"), sec.get("traceback"))
        assert f"## {name}: ok" in md
    env = res["sections"]["env"]["result"]
    assert env["triton_interpret"] == "1" and "torch" in env["versions"]


def test_dry_run_encode_rows(dry_run):
    enc = dry_run[0]["sections"]["encode"]["result"]
    rows = enc["rows"]
    assert set(rows) == {"encoder", "encoder_serial", "tokenize_only", "tokenize_only_1",
                         "tokenize_only_4", "device_only", "device_only_budget_300",
                         "st_bs32", "st_bs256", "seed"}
    for key, row in rows.items():
        assert row["texts_per_s"] > 0, key
        assert (row["tflops"] is None) == key.startswith("tokenize_only"), key
        if row["tflops"] is not None:
            assert row["tflops"] > 0, key
        assert row["texts_per_s"] == pytest.approx(row["texts"] / row["seconds"])
    assert rows["encoder"]["texts"] == enc["n_texts"] and rows["seed"]["texts"] < enc["n_texts"]
    assert rows["encoder"]["x_encoder"] == 1.0
    assert rows["encoder"]["x_st_bs32"] == pytest.approx(
        rows["encoder"]["texts_per_s"] / rows["st_bs32"]["texts_per_s"])
    # everything is float32 on the CPU: all methods give the same vectors
    for name, cos in enc["min_cosine"].items():
        assert cos >= 0.9999, name
    assert "token budget 300" in rows["device_only_budget_300"]["method"]
    assert enc["model"].startswith("random-init BERT (tiny config)")
    assert enc["sdpa_ops"] and all("scaled_dot_product" in k for k in enc["sdpa_ops"])
    assert enc["tokens_max"] <= 256 and enc["tokens_mean"] > 10


def test_dry_run_cosine_topk_rows(dry_run):
    res = dry_run[0]["sections"]["cosine_topk"]["result"]
    assert len(res["rows"]) == len(gc.PROFILES["dry"]["topk"])
    for row in res["rows"]:
        if "skipped" in row:
            assert str(res["max_k"]) in row["skipped"]
            continue
        for method in ("triton", "torch_mm_topk"):
            m = row[method]
            assert m["median_ms"] > 0 and m["tflops"] > 0, m
            assert m["recall"] == 1.0
        # Triton accumulates fp16 products in fp32; torch's fp16 scores are rounded to fp16
        assert row["triton"]["max_score_error"] < 1e-5
        assert row["torch_mm_topk"]["max_score_error"] < 2e-3
        assert row["speedup_vs_torch"] == pytest.approx(
            row["torch_mm_topk"]["median_ms"] / row["triton"]["median_ms"])


def test_dry_run_kmeans_rows(dry_run):
    res = dry_run[0]["sections"]["kmeans"]["result"]
    rows = res["rows"]
    for label in ("KMeans(backend='torch')", "KMeans(backend='triton')"):
        assert rows[label]["ms_per_iter"] > 0 and rows[label]["n_iter"] >= 1, rows[label]
        assert rows[label]["inertia_ratio_vs_torch"] == pytest.approx(1.0, rel=1e-4)
    assert rows["cuML KMeans"]["skipped"].startswith(("not installed", "needs CUDA"))
    assert "skipped" in rows["FAISS GPU Kmeans"]
    assert res["ari_triton_vs_torch"] == pytest.approx(1.0)
    kern = res["kernels"]
    assert kern["assign_labels_equal_fraction"] == 1.0
    assert kern["triton"]["assign"]["median_ms"] > 0


def test_dry_run_two_stage(dry_run):
    res, md = dry_run
    r = res["sections"]["two_stage"]["result"]
    ease = r["ease"]
    assert ease["n_items"] == gc.PROFILES["dry"]["cand_items"] and ease["lam"] >= 1
    assert ease["solve_tflops"] > 0 and ease["fit_seconds"] > 0
    assert ease["solve_tflops"] == pytest.approx(
        float(ease["n_items"]) ** 3 / ease["solve_seconds"] / 1e12)
    small = ease["small"]
    assert small["n_items"] == gc.PROFILES["dry"]["ease_cpu_items"]
    assert small["max_abs_diff_b"] < 1e-5 < small["max_abs_b"]  # the same device here
    cand = r["candidates"]
    assert cand["users"] == gc.PROFILES["dry"]["cand_users"] and cand["ease_on"]
    assert cand["subset_users"] == gc.PROFILES["dry"]["cand_cpu_users"]
    assert cand["items_identical"] is True and cand["features_within_fp32_tolerance"] is True
    assert cand["features_nan_pattern_identical"] is True
    assert cand["device_users_per_s"] > 0 and cand["subset_cpu_users_per_s"] > 0
    assert 10 < cand["candidates_per_user"] <= 450
    rk = r["ranker"]
    assert rk["score_users"] == gc.PROFILES["dry"]["ranker_score_users"]
    assert rk["score_users_per_s"] > 0 and rk["fit_seconds"] > 0
    assert 0 < rk["train_positives"] <= rk["train_rows"]
    assert 0 < rk["users_with_a_positive_candidate"] <= 1
    assert 0 <= rk["hit_at_10_of_those"] <= 1
    e2e = r["end_to_end"]
    assert e2e["users"] == e2e["users_compared"] == gc.PROFILES["dry"]["e2e_users"]
    assert e2e["ranker"] == gc.PROFILES["dry"]["e2e_ranker"]
    # the "device" is the CPU in a dry run: the two engines must agree exactly
    assert e2e["identical_top10_fraction"] == 1.0 and e2e["same_top10_set_fraction"] == 1.0
    assert e2e["device"]["recommend_users_per_s"] > 0 and e2e["cpu"]["fit_seconds"] > 0
    assert "- generate: " in md and "identical top-10 lists 1.0000" in md


def test_make_interactions_shapes_and_topics():
    d = gc.make_interactions(50, 80, (3, 6), 4, 8, seed=1)
    n = len(d["inter_user"])
    assert 150 <= n <= 300 and d["inter_item"].max() < 80 and d["inter_user"].max() < 50
    np.testing.assert_allclose(np.linalg.norm(d["user_vectors"], axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(d["segment_soft"].sum(axis=1), 1, rtol=1e-5)
    # 85% of the draws come from the user's own topic, the rest from any topic
    own = d["item_topic"][d["inter_item"]] == d["user_segment"][d["inter_user"]]
    assert 0.8 < own.mean() < 1.0
    again = gc.make_interactions(50, 80, (3, 6), 4, 8, seed=1)
    np.testing.assert_array_equal(again["inter_item"], d["inter_item"])


def test_lightgbm_missing_is_reported(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_lightgbm(name, *args, **kwargs):
        if name == "lightgbm":
            raise ImportError("no lightgbm here")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lightgbm)
    assert gc._lightgbm_missing() == "skipped: lightgbm not installed"


def test_dry_run_pytest_section(dry_run):
    res = dry_run[0]["sections"]["pytest_gpu"]["result"]
    # test_import.py has no gpu tests: all deselected, pytest's "no tests ran" exit code
    assert res["returncode"] == 5 and res["counts"]["deselected"] >= 4
    assert "-m gpu" in res["command"]


def test_bad_sections_argument():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run-cpu", "--sections", "nope"],
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == 2 and "--sections: unknown ['nope']" in proc.stderr


def test_shell_script_syntax():
    subprocess.run(["bash", "-n", str(SHELL)], check=True)


def test_shell_script_pythonpath_fallback(tmp_path):
    """Without the editable install the script imports interestflow from a PYTHONPATH folder.

    ``python -S`` keeps this environment's own editable install (a .pth import hook) out, so
    the import really comes from the folder, as it would on a machine with no install.
    """
    wrapper = tmp_path / "python-S"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    wrapper.chmod(0o755)
    site = os.pathsep.join(dict.fromkeys([sysconfig.get_paths()["purelib"],
                                          sysconfig.get_paths()["platlib"]]))
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SHELL), "--dry-run-cpu", "--sections", "env"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=_env(OUT=str(out), PYTHON=str(wrapper), GPU_CHECK_NO_INSTALL="1",
                                   GPU_CHECK_REV="rev-from-env", PYTHONPATH=site))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads((out / "gpu_check.json").read_text())
    env = res["sections"]["env"]["result"]
    assert res["git_rev"] == "rev-from-env"
    assert res["import_mode"].startswith("pythonpath-shim")
    assert not env["interestflow_file"].startswith(str(ROOT))  # the folder, not the checkout
    assert env["native_module"].startswith("not importable")
    assert {"gpu_check.json", "gpu_check.md", "gpu_check.log", "install.log"} <= {
        p.name for p in out.iterdir()}


def test_bert_flops_by_hand():
    from transformers import BertConfig

    cfg = BertConfig(hidden_size=4, intermediate_size=8, num_hidden_layers=3,
                     num_attention_heads=2)
    got = gc.bert_flops(cfg, np.array([1, 10]))
    # per layer: n * (8*16 + 4*4*8) + 4 * n^2 * 4
    want = 3 * np.array([1 * 256 + 16 * 1, 10 * 256 + 16 * 100])
    np.testing.assert_array_equal(got, want)


def test_make_texts_deterministic():
    a, b = gc.make_texts(50, 20, seed=1), gc.make_texts(50, 20, seed=1)
    assert a == b and len(a) == 50 and len(set(a)) > 45
    assert gc.make_texts(50, 20, seed=2) != a


# ------------------------------------------------------ the encoder's overlapped pipeline
def test_piece_bounds(monkeypatch):
    monkeypatch.setattr(E, "PIPELINE_FIRST_TEXTS", 3)
    monkeypatch.setattr(E, "PIPELINE_PIECE_TEXTS", 10)
    assert E.piece_bounds(0) == []
    assert E.piece_bounds(2) == [(0, 2)]
    assert E.piece_bounds(40) == [(0, 3), (3, 9), (9, 19), (19, 29), (29, 39), (39, 40)]
    monkeypatch.setattr(E, "PIPELINE_FIRST_TEXTS", 1024)
    monkeypatch.setattr(E, "PIPELINE_PIECE_TEXTS", 16384)
    b = E.piece_bounds(100_000)
    assert b[0] == (0, 1024) and b[1] == (1024, 3072) and b[-1][1] == 100_000
    assert all(hi - lo <= 16384 for lo, hi in b) and all(
        b[i][1] == b[i + 1][0] for i in range(len(b) - 1))


@pytest.fixture(scope="module")
def enc32():
    return Encoder(device="cpu", dtype="float32")


@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setattr(E, "PIPELINE_FIRST_TEXTS", 3)
    monkeypatch.setattr(E, "PIPELINE_PIECE_TEXTS", 8)
    monkeypatch.setattr(E, "PIPELINE_THREADS", 2)
    monkeypatch.setattr(E, "PIPELINE_DEPTH", 2)
    # On the CPU the pipeline's forward runs on the calling thread; one intra-op thread keeps
    # these tests quick on a busy 2-core machine (OpenMP barriers stall when a core is taken).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pipeline_gives_the_serial_vectors(enc32, small_pieces, monkeypatch):
    assert enc32._overlap is None  # default: the pipeline on CUDA only
    saved = enc32.token_budget, enc32._overlap
    enc32.token_budget = 200  # several batches per piece
    try:
        serial = enc32.encode(TEXTS)
        raw = enc32.encode(TEXTS, normalize=False)
        calls = []
        prepare = enc32._prepare_piece

        def spy(texts, budget, batch_size, pin):
            calls.append((threading.current_thread().name, len(texts), pin))
            return prepare(texts, budget, batch_size, pin)

        monkeypatch.setattr(enc32, "_prepare_piece", spy)
        enc32._overlap = True
        piped = enc32.encode(TEXTS)
        piped_raw = enc32.encode(TEXTS, normalize=False, batch_size=3)
    finally:
        enc32.token_budget, enc32._overlap = saved
    np.testing.assert_allclose(piped, serial, atol=1e-6)
    np.testing.assert_allclose(piped_raw, raw, atol=1e-5)
    assert np.abs(serial[1:] - serial[:-1]).max() > 0.1  # rows differ: order is checked
    bounds = E.piece_bounds(len(TEXTS))
    assert len(calls) == 2 * len(bounds)
    assert sorted(n for _, n, _ in calls[:len(bounds)]) == sorted(b - a for a, b in bounds)
    assert all(name.startswith("interestflow-tokenize") and not pin for name, _, pin in calls)


def test_pipeline_single_text_and_progress(enc32, small_pieces, capsys):
    enc32._overlap = True
    try:
        one = enc32.encode(["a quiet pedal"], show_progress=True)
        many = enc32.encode(TEXTS[:10], show_progress=True)
    finally:
        enc32._overlap = None
    assert one.shape == (1, 384) and many.shape == (10, 384)
    err = capsys.readouterr().err
    assert "1/1" in err and "10/10" in err
    np.testing.assert_allclose(one[0], enc32.encode(["a quiet pedal"])[0], atol=1e-6)


def test_pipeline_errors_propagate(enc32, small_pieces, monkeypatch):
    prepare, forward = enc32._prepare_piece, enc32._forward_pool
    seen = []

    def bad_prepare(texts, *args):
        seen.append(len(texts))
        if len(seen) == 3:
            raise RuntimeError("tokenizer broke on piece 3")
        return prepare(texts, *args)

    enc32._overlap = True
    try:
        monkeypatch.setattr(enc32, "_prepare_piece", bad_prepare)
        with pytest.raises(RuntimeError, match="tokenizer broke on piece 3"):
            enc32.encode(TEXTS)
        monkeypatch.undo()
        calls = []

        def bad_forward(*args, **kwargs):
            calls.append(1)
            if len(calls) == 4:
                raise RuntimeError("device broke on batch 4")
            return forward(*args, **kwargs)

        monkeypatch.setattr(enc32, "_forward_pool", bad_forward)
        with pytest.raises(RuntimeError, match="device broke on batch 4"):
            enc32.encode(TEXTS)
        monkeypatch.undo()
        # still usable, and no helper thread left behind
        assert enc32.encode(TEXTS[:5]).shape == (5, 384)
    finally:
        enc32._overlap = None
    assert not [t for t in threading.enumerate() if t.name.startswith("interestflow-tokenize")]


# --------------------------------------------------------------------------- fp16 export
def test_fp16_export_loads_and_matches(tmp_path, capsys):
    export = load_script("export_fp16_model", ROOT / "benchmarks" / "export_fp16_model.py")
    out = tmp_path / "minilm-fp16"
    assert export.main(["--out", str(out), "--no-rev", "--no-wheels"]) == 0
    info = json.loads((out / "export_info.json").read_text())
    assert info["min_cosine_vs_fp32"] >= 0.999
    assert info["bytes"] < 48 * 2**20  # fits the 64 MiB carry with the working tree
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(name).get_dtype() for name in f.keys()}
    assert "F16" in dtypes and "F32" not in dtypes
    assert (out / "modules.json").is_file() and (out / "1_Pooling" / "config.json").is_file()
    assert "min cosine vs the float32 model" in capsys.readouterr().out


# ------------------------------------------------------------------------------- on CUDA
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return gc.make_random_bert(tmp_path_factory.mktemp("tiny_bert"), gc.TINY_CONFIG, TEXTS * 3)


@pytest.mark.gpu
def test_cuda_encoder_matches_cpu_float32(tiny_bert):
    cpu = Encoder(tiny_bert, device="cpu", dtype="float32").encode(TEXTS)
    enc = Encoder(tiny_bert, device="cuda")
    assert enc.dtype == torch.float16 and enc._overlap is None
    piped = enc.encode(TEXTS)
    enc._overlap = False
    serial = enc.encode(TEXTS)
    assert piped.dtype == np.float32 and piped.shape == cpu.shape
    assert gc.min_cosine(piped, cpu) >= 0.999
    assert gc.min_cosine(serial, cpu) >= 0.999
    assert gc.min_cosine(piped, serial) >= 0.9999


@pytest.mark.gpu
def test_cuda_pipeline_many_pieces(tiny_bert, monkeypatch):
    monkeypatch.setattr(E, "PIPELINE_FIRST_TEXTS", 5)
    monkeypatch.setattr(E, "PIPELINE_PIECE_TEXTS", 16)
    texts = gc.make_texts(300, 30, seed=5)
    enc = Encoder(tiny_bert, device="cuda")
    enc.token_budget = 512
    piped = enc.encode(texts)
    cpu = Encoder(tiny_bert, device="cpu", dtype="float32").encode(texts)
    assert gc.min_cosine(piped, cpu) >= 0.999
    perm = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_allclose(enc.encode([texts[i] for i in perm]), piped[perm], atol=2e-3)


@pytest.mark.gpu
def test_cuda_encoder_on_carried_export():
    path = gc.DEFAULT_MODEL
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"no fp16 export at {path} (benchmarks/export_fp16_model.py writes it)")
    cpu = Encoder(path, device="cpu", dtype="float32").encode(TEXTS)
    gpu = Encoder(path, device="cuda").encode(TEXTS)
    assert gc.min_cosine(gpu, cpu) >= 0.999
