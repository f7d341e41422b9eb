"""A software prefetch for numba kernels that read rows of a large table in a random order.

The re-scoring kernels (the certified top-k's and ``numba_ivf.rescore``) read one item row
(1.5 KB for 384 float32) per (query, candidate) pair from a table of hundreds of MB: each row is a cache miss, and a
kernel that waits for one row at a time is bound by memory latency, not by its arithmetic
(on a Zen 4 core, a 384-d float64 dot over random rows of a 100,000 x 384 float32 table took
~3x as long as over rows already in cache). :func:`prefetch_row` asks the CPU to start
loading a row that the kernel will read a few steps later (LLVM's ``llvm.prefetch``: a hint
that never faults and changes no result).

This module imports numba at import time; only numba kernel modules import it.
"""

from __future__ import annotations

import numba as nb
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["prefetch_row"]

_LINE = 64  # bytes per cache line on the x86-64 and Arm server CPUs this runs on


@intrinsic
def _prefetch(typingctx, arr, row, col):
    """Prefetch the cache line holding ``arr[row, col]`` (read, high locality)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        return None
    sig = types.void(arr, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer2(context, builder, data=ary.data,
                                        shape=cgutils.unpack_tuple(builder, ary.shape),
                                        strides=cgutils.unpack_tuple(builder, ary.strides),
                                        layout=aty.layout, inds=[args[1], args[2]],
                                        wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0),
                          ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(nogil=True, cache=True, inline="always")
def prefetch_row(arr, row):
    """Start loading row ``row`` of the 2-D array ``arr`` into the cache (a hint: no effect on
    any result; a row outside ``arr`` is ignored)."""
    if row < 0 or row >= arr.shape[0]:
        return
    step = max(1, _LINE // arr.itemsize)
    for c in range(0, arr.shape[1], step):
        _prefetch(arr, row, c)
