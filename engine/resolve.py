"""The one place that decides devices, dtypes and backends.

Every stage asks this module instead of calling ``torch.cuda.is_available()`` itself, so the
choice (and the reason for it) is made, logged and recorded in one place.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX-BF16 or AVX512-BF16, where oneDNN runs bf16 matmuls natively."""
    flags = cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def resolve_device(device=None):
    """Map ``None``/``"auto"``/a string/a ``torch.device`` to a ``torch.device``.

    ``None`` and ``"auto"`` pick CUDA when a device is visible, else the CPU. An explicit
    CUDA request without a visible device raises instead of silently running on the CPU.
    """
    import torch

    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a valid device; pass None, 'auto', 'cpu' or 'cuda[:N]'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but no CUDA device is visible; pass device='cpu' "
            "or device=None to choose automatically"
        )
    return dev


@dataclass(frozen=True)
class DtypeChoice:
    dtype: object  # torch.dtype
    reason: str


def resolve_dtype(dtype, device) -> DtypeChoice:
    """Resolve the compute dtype for ``device``.

    ``"auto"``: float16 on CUDA, bfloat16 on a CPU with AMX/AVX512-BF16, float32 otherwise.
    Explicit names (``"float32"``, ``"float16"``, ``"bfloat16"`` and short forms) or
    ``torch.dtype`` objects are honoured as given.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype={dtype} is not supported; pass float32, float16 or bfloat16")
        return DtypeChoice(dtype, "requested")
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be a string or torch.dtype, got {type(dtype).__name__}")
    key = dtype.lower()
    if key == "auto":
        if device.type == "cuda":
            return DtypeChoice(torch.float16, "auto: CUDA device")
        if device.type == "cpu" and cpu_has_fast_bf16():
            found = sorted({"amx_bf16", "avx512_bf16"} & cpu_flags())
            return DtypeChoice(torch.bfloat16, f"auto: CPU has {'/'.join(found)}")
        return DtypeChoice(torch.float32, f"auto: {device.type} without fast half precision")
    if key not in _DTYPE_ALIASES:
        raise ValueError(
            f"dtype={dtype!r} is not supported; pass 'auto', 'float32', 'float16' or 'bfloat16'"
        )
    return DtypeChoice(getattr(torch, _DTYPE_ALIASES[key]), "requested")
