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
