"""Import the compiled extension with an actionable message when it is missing."""

from __future__ import annotations


def native():
    try:
        from interestflow import _native
    except ImportError as exc:  # pragma: no cover - only on a broken install
        raise ImportError(
            "interestflow._native is not built. Rebuild the package from the repository root "
            "with `pip install -e .` (needs CMake >= 3.18 and a C++17 compiler)."
        ) from exc
    return _native
