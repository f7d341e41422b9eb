"""Compute kernels: Triton (GPU), numba (CPU) and the plain torch reference of each.

Only ``reference`` is imported eagerly-free here; Triton and numba modules are imported by
the backend that needs them.
"""
