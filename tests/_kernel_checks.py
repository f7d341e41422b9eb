"""Shared checks for kernel tests: compare a top-k or an assignment with the float64 reference."""

from __future__ import annotations

import torch

from interestflow.kernels import reference
from interestflow.kernels.tolerances import tolerance

#: Shapes every kernel test covers: (n_queries_or_rows, n_keys_or_clusters, dim).
ODD_SHAPES = [(1, 1, 1), (1, 37, 384), (7, 1, 5), (33, 129, 1), (100, 257, 384), (513, 64, 17)]


def reference_topk(queries, keys, k):
    """float64 reference top-k computed from the same (rounded) inputs."""
    return reference.cosine_topk(queries.double(), keys.double(), k)


def assert_topk_matches(queries, keys, k, scores, indices, dtype):
    """Scores within the dtype tolerance of float64; indices equal except within near-ties.

    Where two keys' reference scores differ by less than the tolerance, either order is
    accepted: then the returned index must score within tolerance of the reference score at
    that rank.
    """
    atol, rtol = tolerance(dtype)
    ref_s, ref_i = reference_topk(queries.cpu(), keys.cpu(), k)
    scores = scores.cpu().double()
    indices = indices.cpu()
    assert scores.shape == ref_s.shape == indices.shape, (scores.shape, ref_s.shape)
    assert indices.dtype == torch.int64
    torch.testing.assert_close(scores, ref_s, atol=atol, rtol=rtol)
    # every returned index must really have (about) the score reported at its rank
    q = torch.nn.functional.normalize(queries.cpu().double(), dim=1)
    kk = torch.nn.functional.normalize(keys.cpu().double(), dim=1)
    true_s = (q[:, None, :] * kk[indices]).sum(-1) if indices.numel() else scores
    torch.testing.assert_close(true_s, ref_s, atol=atol, rtol=rtol)
    # no duplicates within a row
    for r in range(indices.shape[0]):
        assert len(set(indices[r].tolist())) == indices.shape[1]
    mismatch = indices != ref_i
    if bool(mismatch.any()):
        # allowed only at near-ties
        gap = (ref_s[mismatch] - true_s[mismatch]).abs()
        assert bool((gap <= atol + rtol * ref_s[mismatch].abs()).all())
