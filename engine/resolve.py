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


# ------------------------------------------------------------------------------ backends

#: How to install each optional backend, quoted in the error when one is requested but absent.
BACKEND_INSTALL = {
    "numba": "pip install numba (a dependency of interestflow: reinstall it)",
    "triton": "pip install 'interestflow[gpu]' (Triton ships with CUDA builds of torch on Linux)",
    "cuml": "pip install 'interestflow[rapids]' (cuML needs a CUDA GPU)",
    "faiss": "pip install 'interestflow[faiss]' for faiss-cpu, or faiss-gpu for the GPU build",
}

#: Backends of the kernel ops (``interestflow.kernels``) and of ``interestflow.KMeans``.
KERNEL_BACKENDS = ("auto", "torch", "numba", "triton")
KMEANS_BACKENDS = ("auto", "torch", "numba", "triton", "cuml", "faiss")

#: Below this many multiply-adds an op runs on the torch reference under ``backend="auto"``:
#: numba's threads and the bf16 candidate pass only pay off on larger problems, and torch
#: needs no JIT compilation on first use.
AUTO_MIN_WORK = 1 << 24


class BackendUnavailableError(ImportError):
    """An explicitly requested backend is not installed (the message says how to install it)."""


@dataclass(frozen=True)
class BackendChoice:
    """The backend an op or estimator runs on, and why it was chosen."""

    name: str
    reason: str


@functools.lru_cache(maxsize=None)
def module_available(name: str) -> bool:
    """True when ``import name`` would find the module (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def triton_interpreted() -> bool:
    """True when Triton kernels run on the CPU through its interpreter (``TRITON_INTERPRET=1``)."""
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_logged_choices: set = set()


def _log_choice(what: str, device, choice: BackendChoice, log, detail: str) -> None:
    key = (what, str(device), choice)
    if log is None:
        if key in _logged_choices:
            return  # kernel ops run in loops: one line per distinct choice per process
        _logged_choices.add(key)
        log = logger
    log.info("%s backend='auto' chose %r on %s%s: %s", what, choice.name, device,
             f" ({detail})" if detail else "", choice.reason)


def _require_runnable(name: str, device, what: str) -> None:
    """Raise if the explicitly requested backend ``name`` cannot run ``what`` on ``device``."""
    if name == "torch":
        return
    if not module_available(name):
        raise BackendUnavailableError(
            f"backend={name!r} was requested for {what} but {name} is not installed; "
            f"install it with: {BACKEND_INSTALL[name]}"
        )
    if name == "numba" and device.type != "cpu":
        raise ValueError(
            f"backend='numba' runs on the CPU but the {what} input is on {device}; pass a CPU "
            "input or backend='triton'/'torch'"
        )
    if name == "triton" and device.type != "cuda" and not triton_interpreted():
        raise ValueError(
            f"backend='triton' needs a CUDA input (or TRITON_INTERPRET=1 for the CPU "
            f"interpreter) but the {what} input is on {device}; pass backend='numba' or 'torch'"
        )
    if name == "cuml" and device.type != "cuda":
        raise ValueError(
            f"backend='cuml' runs on a CUDA GPU but {what} was asked to run on {device}; pass "
            "device='cuda' or another backend"
        )


def resolve_backend(what: str, backend, device, *, work: float = float("inf"),
                    valid=KERNEL_BACKENDS, log=None, detail: str = "") -> BackendChoice:
    """The one backend decision for kernel ops and estimators.

    Parameters
    ----------
    what : str
        Name of the op or estimator, used in messages and the log line
        (e.g. ``"cosine_topk"``, ``"KMeans"``).
    backend : str
        ``"auto"`` or one of ``valid``.
    device : torch.device
        Where the data lives / the computation runs.
    work : float, default=inf
        Multiply-adds of the op; ``"auto"`` keeps small problems on the torch reference.
    valid : tuple of str
        Backends this op supports (``KERNEL_BACKENDS`` or ``KMEANS_BACKENDS``).
    log : logging.Logger, optional
        Where an ``"auto"`` choice is logged, every call (estimators log each fit). Default:
        this module's logger, once per distinct choice per process (ops called in loops).
    detail : str, optional
        Why the computation is on ``device``, quoted in the log line.

    Returns
    -------
    BackendChoice

    Raises
    ------
    ValueError
        Unknown backend name, or a backend that cannot run on ``device``.
    BackendUnavailableError
        An explicitly requested backend is not installed (names the extra to install).
    """
    if not isinstance(backend, str) or backend not in valid:
        raise ValueError(
            f"backend={backend!r} is not valid for {what}; pass one of "
            f"{', '.join(repr(b) for b in valid)}"
        )
    if backend != "auto":
        _require_runnable(backend, device, what)
        return BackendChoice(backend, "requested")
    if device.type == "cuda":
        if "cuml" in valid and module_available("cuml"):
            choice = BackendChoice("cuml", "CUDA input and cuML is installed")
        elif module_available("triton"):
            choice = BackendChoice("triton", "CUDA input and Triton is installed")
        else:
            choice = BackendChoice("torch", "CUDA input; Triton is not installed "
                                   f"({BACKEND_INSTALL['triton']})")
    elif device.type == "cpu":
        if work < AUTO_MIN_WORK:
            choice = BackendChoice("torch", f"small problem ({work:.3g} multiply-adds < "
                                   f"{AUTO_MIN_WORK}): the torch reference has no JIT or "
                                   "thread start-up cost")
        elif module_available("numba"):
            choice = BackendChoice("numba", "CPU input and numba is installed")
        else:
            choice = BackendChoice("torch", "CPU input; numba is not installed "
                                   f"({BACKEND_INSTALL['numba']})")
    else:
        choice = BackendChoice("torch", f"no specialised backend for device type "
                               f"{device.type!r}")
    _log_choice(what, device, choice, log, detail)
    return choice
