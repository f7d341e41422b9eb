"""Internals shared by the CPU kernels (:mod:`.numba_cosine`, :mod:`.numba_kmeans`) and the
Triton launchers: the worker threads, the rounding-error constants and ``gamma`` of the bf16
certificates, the one ``candidates`` option set, the normalisation epsilon.

Private to the package: kernel modules import these names from here instead of from each
other. Imports neither numba nor Triton (the shared ``@triton.jit`` helpers live in
:mod:`._triton_common`), and torch only when workers are started.
"""

from __future__ import annotations

import threading

import numpy as np

from interestflow._utils import TorchWorkers

__all__ = ["NORM_EPS", "U_BF16", "TAU", "EPS32", "EPS64", "gamma", "CANDIDATE_OPTIONS",
           "check_candidates", "KernelWorkers"]

#: ``torch.nn.functional.normalize``'s default eps: a row with a smaller norm (a zero row)
#: is divided by it, so it scores 0 against everything.
NORM_EPS = 1e-12

# Rounding-error constants of the bf16 certificates (module docstrings of numba_cosine and
# numba_kmeans): unit roundoff of bf16 (round to nearest even) and of fp32 / float64, and the
# smallest normal fp32 / bf16 number (the most one flushed-to-zero product or sum can lose).
U_BF16 = 2.0 ** -8
EPS32 = 2.0 ** -24
EPS64 = 2.0 ** -53
TAU = 2.0 ** -126


def gamma(n: int, unit: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: the relative error bound of a sum of ``n``
    rounded operations with unit roundoff ``u`` (``unit``), in any order."""
    return n * unit / (1.0 - n * unit)


#: Valid values of ``candidates`` of the numba kernels: the precision of the matmul that
#: proposes candidates ("float32" is the exact path in the input's dtype).
CANDIDATE_OPTIONS = ("auto", "bfloat16", "float32")


def check_candidates(candidates) -> str:
    """``candidates`` if it is one of :data:`CANDIDATE_OPTIONS`, else a ``ValueError`` listing
    them."""
    if not isinstance(candidates, str) or candidates not in CANDIDATE_OPTIONS:
        raise ValueError(f"candidates={candidates!r} is not valid; pass one of "
                         f"{', '.join(repr(c) for c in CANDIDATE_OPTIONS)}")
    return candidates


class KernelWorkers(TorchWorkers):
    """The numba kernels' worker threads: :class:`interestflow._utils.TorchWorkers` with one
    torch thread each, as many as the caller's ``torch.get_num_threads()``, plus per-thread
    scratch buffers.

    They run whole tasks: a single-threaded ``torch.mm`` (oneDNN) and serial numba code that
    releases the GIL. Why not numba ``prange`` beside torch's own threads: torch (its bundled
    libgomp) and numba's ``omp`` layer (the system libgomp) are two OpenMP runtimes, and after
    each parallel region a runtime's idle threads spin for milliseconds; alternating a torch
    matmul with a numba parallel scan left each beside the other's spinning threads (cosine
    top-k: 3.4 s against 1.9 s for one 4,000 x 100,000 x 384 bf16 pass on 2 cores; a
    20-iteration K-means on the busy 2-core dev machine: 3.2-3.6 s against 1.0 s with
    ``OMP_WAIT_POLICY=PASSIVE``). These threads block when idle. Results never depend on which
    thread runs which task (tasks write disjoint rows; sums are reduced in a fixed order).
    torch's thread setting is restored on :meth:`close` / exit.
    """

    def __init__(self):
        super().__init__(None, threads_each=1, name="interestflow-kernels")
        self._local = threading.local()

    def map(self, fn, items) -> list:
        """``[fn(x) for x in items]`` on the workers; a single item runs in the calling
        thread (no hand-over for one task)."""
        items = list(items)
        if len(items) <= 1:
            return [fn(item) for item in items]
        return super().map(fn, items)

    def scratch(self, name: str, shape, dtype) -> np.ndarray:
        """A buffer of this thread's own, reused across its tasks in one call: the first
        ``shape[0]`` rows of the largest one asked for under ``name`` so far."""
        buf = getattr(self._local, name, None)
        if buf is None or buf.shape[0] < shape[0]:
            buf = np.empty(shape, dtype)
            setattr(self._local, name, buf)
        return buf[:shape[0]]
