"""Small stand-ins and helpers shared by tests (imported as a plain module: tests/ is on
sys.path)."""

import hashlib
import importlib.util
import sys

import numpy as np

#: Dimension of :class:`HashEncoder`'s vectors.
DIM = 16


class HashEncoder:
    """Deterministic text -> unit vector (seeded by the text's SHA-256): a tiny, fast model."""

    dim = DIM

    def encode(self, texts, show_progress=None, **kwargs):
        out = np.empty((len(texts), DIM), np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).normal(size=DIM)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def load_script(name: str, path):
    """Import a benchmark script as a module (its folder on sys.path while it loads)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod
