"""The backend resolver and the public kernel entry points (type in = type out, errors)."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch

import interestflow.kernels as K
from interestflow import resolve
from interestflow.kernels import reference
from interestflow.resolve import BackendUnavailableError, resolve_backend

CPU = torch.device("cpu")


def test_auto_keeps_small_cpu_problems_on_torch_and_large_on_numba(monkeypatch):
    small = resolve_backend("op", "auto", CPU, work=10.0)
    assert small.name == "torch" and "small problem" in small.reason
    monkeypatch.setattr(resolve, "module_available", lambda name: name == "numba")
    assert resolve_backend("op", "auto", CPU, work=1e12).name == "numba"
    monkeypatch.setattr(resolve, "module_available", lambda name: False)
    big = resolve_backend("op", "auto", CPU, work=1e12)
    assert big.name == "torch" and "numba is not installed" in big.reason


def test_auto_on_cuda_prefers_cuml_then_triton(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(resolve, "module_available", lambda name: True)
    assert resolve_backend("KMeans", "auto", cuda, valid=resolve.KMEANS_BACKENDS).name == "cuml"
    assert resolve_backend("cosine_topk", "auto", cuda).name == "triton"  # no cuml for ops
    monkeypatch.setattr(resolve, "module_available", lambda name: False)
    assert resolve_backend("cosine_topk", "auto", cuda).name == "torch"


def test_auto_logs_once_per_distinct_choice(caplog, monkeypatch):
    monkeypatch.setattr(resolve, "_logged_choices", set())
    with caplog.at_level(logging.INFO, logger="interestflow.resolve"):
        for _ in range(3):
            resolve_backend("some_op", "auto", CPU, work=1.0)
    lines = [r.getMessage() for r in caplog.records if "some_op" in r.getMessage()]
    assert len(lines) == 1 and "'torch'" in lines[0] and "small problem" in lines[0]


@pytest.mark.parametrize("name,extra", [("numba", "numba"), ("triton", "interestflow[gpu]"),
                                        ("cuml", "interestflow[rapids]"),
                                        ("faiss", "interestflow[faiss]")])
def test_requested_backend_not_installed_names_the_extra(monkeypatch, name, extra):
    monkeypatch.setattr(resolve, "module_available", lambda mod: False)
    with pytest.raises(BackendUnavailableError, match=rf"backend='{name}'.*{re.escape(extra)}") as info:
        resolve_backend("KMeans", name, CPU, valid=resolve.KMEANS_BACKENDS)
    assert isinstance(info.value, ImportError)


def test_requested_backend_on_the_wrong_device_raises(monkeypatch):
    monkeypatch.setattr(resolve, "module_available", lambda mod: True)
    with pytest.raises(ValueError, match="numba.*CPU.*cuda"):
        resolve_backend("cosine_topk", "numba", torch.device("cuda"))
    with pytest.raises(ValueError, match="cuml.*CUDA"):
        resolve_backend("KMeans", "cuml", CPU, valid=resolve.KMEANS_BACKENDS)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="triton.*TRITON_INTERPRET"):
        resolve_backend("cosine_topk", "triton", CPU)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("cosine_topk", "triton", CPU).name == "triton"


@pytest.mark.parametrize("bad", ["gpu", "cuml", 3])
def test_unknown_backend_for_an_op(bad):
    with pytest.raises(ValueError, match="backend=.*not valid for cosine_topk"):
        K.cosine_topk(np.ones((1, 2), np.float32), np.ones((2, 2), np.float32), 1, backend=bad)


@pytest.mark.parametrize("backend", ["torch", "numba", "auto"])
def test_cosine_topk_output_type_follows_input(backend):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(9, 12)).astype(np.float32)
    keys = rng.normal(size=(41, 12)).astype(np.float32)
    s, i = K.cosine_topk(q, keys, 5, backend=backend)
    assert isinstance(s, np.ndarray) and isinstance(i, np.ndarray) and i.dtype == np.int64
    rs, ri = reference.cosine_topk(torch.from_numpy(q).double(), torch.from_numpy(keys).double(), 5)
    np.testing.assert_array_equal(i, ri.numpy())
    np.testing.assert_allclose(s, rs.numpy(), atol=1e-5)
    st, it = K.cosine_topk(torch.from_numpy(q), torch.from_numpy(keys), 5, backend=backend)
    assert torch.is_tensor(st) and torch.equal(it, torch.from_numpy(i))
    with pytest.raises(TypeError, match="must both be numpy arrays or both torch tensors"):
        K.cosine_topk(q, torch.from_numpy(keys), 5, backend=backend)
    with pytest.raises(TypeError, match="queries must be a numpy array or a torch tensor"):
        K.cosine_topk(q.tolist(), keys, 5, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_kmeans_ops_follow_input_type_and_match_reference(backend):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 7))
    c = rng.normal(size=(13, 7))
    lab, d = K.kmeans_assign(x, c, backend=backend)
    rl, rd = reference.kmeans_assign(torch.from_numpy(x), torch.from_numpy(c))
    assert isinstance(lab, np.ndarray)
    np.testing.assert_array_equal(lab, rl.numpy())
    np.testing.assert_allclose(d, rd.numpy(), rtol=1e-9, atol=1e-9)
    w = rng.uniform(size=300)
    sums, counts = K.kmeans_update(x, lab, 13, sample_weight=w, backend=backend)
    rs, rc = reference.kmeans_update(torch.from_numpy(x), rl, 13, torch.from_numpy(w))
    np.testing.assert_allclose(sums, rs.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(counts, rc.numpy(), rtol=1e-9, atol=1e-9)


def test_kernels_package_imports_no_backend(tmp_path):
    import subprocess
    import sys

    code = ("import sys, interestflow.kernels\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('triton', 'numba', 'faiss', 'cupy', 'cuml')))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"
