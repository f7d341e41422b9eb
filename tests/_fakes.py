"""Small stand-ins shared by tests (imported as a plain module: tests/ is on sys.path)."""

import hashlib

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
