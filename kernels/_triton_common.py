"""What the Triton kernels share: the score-tile loop (a ``@triton.jit`` helper, inlined into
each kernel that calls it) and the launchers' input checks.

Imports Triton, so only :mod:`.triton_cosine` and :mod:`.triton_kmeans` import it; the
pure-Python internals shared with the CPU kernels live in :mod:`._common`.
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

__all__ = ["INTERPRET", "DTYPES", "tile_dot", "check_device", "check_input", "check_same",
           "on_device", "n_sm"]

#: True when the kernels were built by Triton's CPU interpreter (``TRITON_INTERPRET=1`` at
#: import time): they then take CPU tensors.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: Input dtypes of the Triton kernels.
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------
# the shared tile loop
# --------------------------------------------------------------------------------------------

@triton.jit
def tile_dot(a_ptr, b_ptr, rows, row_ok, cols, col_ok, dim, stride_a, stride_b,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
             IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """``a[rows] @ b[cols].T`` as a (BLOCK_M, BLOCK_N) float32 tile, ``BLOCK_D`` columns of
    ``dim`` per ``tl.dot`` step; masked rows, columns and dims contribute 0.

    ``IEEE``: fp32 inputs with ``input_precision="ieee"`` (exact fp32 products); otherwise
    the default precision (fp16/bf16 on tensor cores, fp32 accumulation). ``UPCAST``: the
    interpreter's path for half inputs (see below).
    """
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < dim
        at = tl.load(a_ptr + rows[:, None] * stride_a + d[None, :],
                     mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        bt = tl.load(b_ptr + cols[:, None] * stride_b + d[None, :],
                     mask=col_ok[:, None] & d_ok[None, :], other=0.0)
        if UPCAST:
            # Interpreter only: it cannot multiply bf16 (triton-lang/triton#11584) and numpy
            # has no fast fp16 matmul. Half products are exact in fp32, so this is the
            # arithmetic of the tensor cores (fp32 accumulation).
            at = at.to(tl.float32)
            bt = bt.to(tl.float32)
        if IEEE:
            acc = tl.dot(at, tl.trans(bt), acc, input_precision="ieee")
        else:
            acc = tl.dot(at, tl.trans(bt), acc)
    return acc


# --------------------------------------------------------------------------------------------
# launcher checks
# --------------------------------------------------------------------------------------------

def check_device(name: str, t: torch.Tensor) -> None:
    """``t`` is on a device the kernels run on: CUDA, or the CPU under the interpreter."""
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and INTERPRET:
        return
    raise ValueError(
        f"{name} is on {t.device}; the Triton kernels need CUDA tensors (or CPU tensors with "
        "TRITON_INTERPRET=1 set before triton is imported)"
    )


def check_input(name: str, t) -> None:
    """2-D, fp32/fp16/bf16, unit column stride, on a device the kernels can run on."""
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {tuple(t.shape)}")
    if t.dtype not in DTYPES:
        raise TypeError(
            f"{name} has dtype {t.dtype}; the Triton kernels take float32, float16 or bfloat16"
        )
    if t.shape[1] > 1 and t.stride(1) != 1:
        raise ValueError(
            f"{name} must have contiguous rows (stride(1) == 1), got strides {t.stride()}; "
            f"pass {name}.contiguous()"
        )
    check_device(name, t)


def check_same(xname: str, x: torch.Tensor, yname: str, y: torch.Tensor) -> None:
    """``x`` and ``y`` have the same dim, dtype and device."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{xname} has dim {x.shape[1]} but {yname} has dim {y.shape[1]}; they must match"
        )
    if x.dtype != y.dtype:
        raise TypeError(f"{xname} has dtype {x.dtype} but {yname} has dtype {y.dtype}")
    if x.device != y.device:
        raise ValueError(
            f"{xname} is on {x.device} but {yname} is on {y.device}; put them on one device"
        )


def on_device(device: torch.device):
    """Make ``device`` current for a launch (Triton launches on the current CUDA device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def n_sm(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (1 off CUDA)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1
