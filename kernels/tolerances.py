"""The one tolerance table every kernel test and benchmark uses.

A kernel result is compared with the float64 torch reference computed from the *same*
(already rounded) inputs, so the tolerance only has to cover the kernel's own arithmetic:
products accumulated in float32 for every input dtype, and the output written in float32.
Half-precision rows are wider because an fp16/bf16 kernel may also normalise in its input
dtype before the dot product.
"""

from __future__ import annotations

import torch

__all__ = ["TOLERANCES", "tolerance"]

#: dtype -> (atol, rtol) for scores and distances against the float64 reference.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """``(atol, rtol)`` for results computed from inputs of ``dtype``.

    Raises
    ------
    ValueError
        For a dtype without an entry (integer or complex dtypes).
    """
    try:
        return TOLERANCES[dtype]
    except KeyError:
        raise ValueError(
            f"no tolerance for dtype {dtype}; known: {', '.join(map(str, TOLERANCES))}"
        ) from None
