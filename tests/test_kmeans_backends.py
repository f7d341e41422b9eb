"""Every KMeans backend against scikit-learn from the same initial centroids.

Well-separated blobs: the same partition (adjusted Rand index 1). Encoded texts: inertia
within 0.5% of scikit-learn's. The Triton backend runs under TRITON_INTERPRET=1 without a GPU
(set by conftest), on small inputs because the interpreter is slow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.metrics import adjusted_rand_score

from interestflow import KMeans
from interestflow.resolve import module_available

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _backends():
    out = [pytest.param("torch", id="torch"), pytest.param("numba", id="numba")]
    out.append(pytest.param("triton", id="triton", marks=pytest.mark.skipif(
        not module_available("triton"), reason="triton is not installed")))
    out.append(pytest.param("faiss", id="faiss", marks=pytest.mark.skipif(
        not module_available("faiss"), reason="faiss is not installed (interestflow[faiss])")))
    return out


def _blobs(n=240, k=6, dim=24, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * 8.0
    labels = np.repeat(np.arange(k), n // k)
    X = centers[labels] + rng.normal(size=(len(labels), dim))
    return X.astype(np.float32), labels


@pytest.fixture(scope="module")
def encoded_texts():
    from interestflow import Encoder
    from interestflow.synthetic import make_demo_events

    texts = make_demo_events(60, random_state=3).events["text"].tolist()[:400]
    return Encoder(device="cpu").encode(texts)


@pytest.mark.parametrize("backend", _backends())
def test_same_partition_as_sklearn_on_separated_blobs(backend):
    X, truth = _blobs()
    init = X[[0, 40, 80, 120, 160, 200]] + 0.5  # one start per blob, not at a data point
    sk = SKKMeans(6, init=init, n_init=1, max_iter=50, tol=0, algorithm="lloyd").fit(X)
    km = KMeans(6, init=init, max_iter=50, tol=0, backend=backend, device="cpu").fit(X)
    assert km.backend_ == backend
    assert adjusted_rand_score(km.labels_, sk.labels_) == 1.0
    assert adjusted_rand_score(km.labels_, truth) == 1.0
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-4, atol=1e-4)
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-4)
    np.testing.assert_array_equal(km.predict(X), km.labels_)


@pytest.mark.parametrize("backend", _backends())
def test_inertia_within_half_a_percent_of_sklearn_on_encoded_texts(backend, encoded_texts):
    X = encoded_texts
    rng = np.random.default_rng(0)
    init = X[rng.choice(len(X), 8, replace=False)]
    iters = 5 if backend == "triton" else 20
    sk = SKKMeans(8, init=init, n_init=1, max_iter=iters, tol=0, algorithm="lloyd").fit(X)
    km = KMeans(8, init=init, max_iter=iters, tol=0, backend=backend, device="cpu").fit(X)
    assert abs(km.inertia_ / sk.inertia_ - 1) < 0.005
    assert adjusted_rand_score(km.labels_, sk.labels_) > 0.9


@pytest.fixture(scope="module")
def encoded_reviews():
    import pandas as pd

    from interestflow import Encoder

    df = pd.read_csv(DATA / "amazon_musical_instruments_5core" / "Musical_instruments_reviews.csv",
                     nrows=600)
    col = "reviewText" if "reviewText" in df.columns else df.columns[-1]
    texts = [t for t in df[col].astype(str).tolist() if t.strip()][:500]
    return Encoder(device="cpu").encode(texts)


@pytest.mark.skipif(not (DATA / "amazon_musical_instruments_5core").exists(),
                    reason="../shared/data is not on this machine")
@pytest.mark.parametrize("backend", ["numba", "faiss"])
def test_inertia_on_real_encoded_reviews(backend, encoded_reviews):
    if not module_available(backend):
        pytest.skip(f"{backend} is not installed")
    X = encoded_reviews
    init = X[np.random.default_rng(1).choice(len(X), 16, replace=False)]
    sk = SKKMeans(16, init=init, n_init=1, max_iter=30, tol=0, algorithm="lloyd").fit(X)
    km = KMeans(16, init=init, max_iter=30, tol=0, backend=backend, device="cpu").fit(X)
    assert abs(km.inertia_ / sk.inertia_ - 1) < 0.005


def test_triton_backend_is_interpreted_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the Triton backend runs compiled")
    assert os.environ.get("TRITON_INTERPRET") == "1"
