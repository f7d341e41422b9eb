"""Global user segments: choice of K, clustering, one-hot and soft segment features."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentConfig:
    """Settings for user segmentation.

    Attributes
    ----------
    n_segments : int or "auto"
        Number of segments; ``"auto"`` picks K by silhouette on a sample.
    k_min, k_max : int
        Bounds for ``"auto"``; ``k_max=None`` means ``clip(sqrt(n_users / 2), k_min, 64)``.
    sample_size : int
        Users sampled (without replacement, seeded) to score candidate K values.
    temperature : float
        Softmax temperature over cosine(user, centroid) for the soft segment features.
    random_state : int
        Seed for sampling and K-means.
    """

    n_segments: int | str = "auto"
    k_min: int = 2
    k_max: int | None = None
    sample_size: int = 3000
    temperature: float = 0.05
    random_state: int = 0


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def candidate_ks(n_users: int, k_min: int, k_max: int | None) -> list[int]:
    """Candidate K values for ``"auto"``: every K up to 16, then a geometric grid."""
    hi = k_max if k_max is not None else int(np.clip(round(np.sqrt(n_users / 2)), k_min, 64))
    hi = min(hi, n_users - 1)
    lo = min(k_min, hi)
    if hi < 2:
        return [1]
    ks = list(range(max(lo, 2), min(hi, 16) + 1))
    k = 16
    while k < hi:
        k = int(round(k * 1.25))
        ks.append(min(k, hi))
    return sorted(set(ks))


def choose_n_segments(vectors: np.ndarray, config: SegmentConfig, *, device=None) -> tuple[int, dict]:
    """Pick K by the mean cosine silhouette of K-means solutions on a seeded sample.

    Silhouette compares each user's cohesion with its own segment to its separation from the
    nearest other segment; it needs no labels and no tuning constant, and is bounded in [-1, 1],
    which makes it comparable across K. Returns ``(k, {k: silhouette})``.
    """
    from sklearn.metrics import silhouette_score

    from .kmeans import KMeans

    n = len(vectors)
    ks = candidate_ks(n, config.k_min, config.k_max)
    if ks == [1]:
        return 1, {}
    rng = np.random.default_rng(config.random_state)
    idx = rng.choice(n, size=min(n, config.sample_size), replace=False)
    sample = _unit(vectors[np.sort(idx)])
    scores: dict[int, float] = {}
    for k in ks:
        if k >= len(sample):
            break
        km = KMeans(n_clusters=k, n_init=3, random_state=config.random_state, device=device)
        labels = km.fit_predict(sample)
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(sample, labels, metric="cosine"))
    if not scores:
        return 1, {}
    best = max(scores, key=lambda k: (round(scores[k], 4), -k))
    logger.info("n_segments='auto': chose K=%d (silhouette %.3f) from %s", best, scores[best],
                {k: round(v, 3) for k, v in scores.items()})
    return best, scores


def soft_features(vectors: np.ndarray, centroids: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax over cosine(user, centroid) / temperature, shape (n_users, K), rows sum to 1."""
    sims = _unit(vectors) @ _unit(centroids).T
    z = sims / temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return p.astype(np.float32)


def one_hot(labels: np.ndarray, n_segments: int) -> np.ndarray:
    """One-hot segment features, shape (n_users, n_segments), float32."""
    out = np.zeros((len(labels), n_segments), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def check_n_segments(k, n_users: int | None = None) -> None:
    """Validate ``n_segments`` ('auto' or an int in [1, n_users]); raise naming the value."""
    if isinstance(k, str):
        if k != "auto":
            raise ValueError(f"n_segments={k!r} is not valid; pass 'auto' or an int >= 1")
    elif isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"n_segments must be 'auto' or an int, got {type(k).__name__}")
    elif k < 1:
        raise ValueError(f"n_segments={k} must be >= 1")
    elif n_users is not None and k > n_users:
        raise ValueError(f"n_segments={k} exceeds the number of users ({n_users}); "
                         f"pass n_segments <= {n_users}")


def fit_segments(vectors: np.ndarray, config: SegmentConfig, *, device=None):
    """Cluster users; returns ``(labels, centroids, k, silhouette_by_k)``."""
    from .kmeans import KMeans

    n = len(vectors)
    k = config.n_segments
    scores: dict[int, float] = {}
    check_n_segments(k, n)
    if k == "auto":
        k, scores = choose_n_segments(vectors, config, device=device)
    unit = _unit(vectors)
    km = KMeans(n_clusters=int(k), n_init=3, random_state=config.random_state, device=device)
    labels = km.fit_predict(unit).astype(np.int64)
    centroids = _unit(np.asarray(km.cluster_centers_, dtype=np.float32))
    return labels, centroids, int(k), scores
