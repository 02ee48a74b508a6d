"""Block-wide shared-memory reductions shared by the Numba kernels (norms, sampling).

Each helper is a ``@cuda.jit(device=True, inline="always")`` function: Numba inlines its
IR into the calling kernel *before* typing, so the kernel is typed and lowered as one
function. That is what lets the CI check (tests/kernels/test_compile.py) lower every kernel
with ``cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))`` on a machine without a GPU: a
plain device function (or a ``register_jitable`` one) is compiled separately when the
kernel is typed, and that compile asks the driver for the current device's compute
capability (numba-cuda 0.30 ``CUDADispatcher.compile_device``), which fails with no
driver. ``inline="always"`` is numba-cuda's documented IR-level inlining (``cuda.jit``
docstring; used by its own tests, e.g. ``tests/cudapy/test_laplace.py``), and the CUDA
simulator accepts the keyword and runs the helper as an ordinary device function.

Being untyped until inlined, one helper serves float64 and int64 buffers alike. The trees
are plain shared-memory trees (no warp shuffles, which the simulator lacks) over
``nt`` slots, ``nt`` a power of two, in the same order at every call, so results are
deterministic.

Contract for every helper: each of the ``nt`` threads has written its own slot ``tid``
and then calls the helper (all threads, no divergence). The helper opens with a barrier
(so the slots are visible) and ends with one (so the caller may overwrite the buffer
right after reading the result).
"""

from __future__ import annotations

from numba import cuda


@cuda.jit(device=True, inline="always")
def block_sum(sh, tid, nt):  # pragma: no cover - device code
    """Sum of ``sh[0:nt]``, returned to every thread (``sh`` is overwritten)."""
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if tid < s:
            sh[tid] += sh[tid + s]
        cuda.syncthreads()
        s //= 2
    total = sh[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True, inline="always")
def block_max(sh, tid, nt):  # pragma: no cover - device code
    """Maximum of ``sh[0:nt]``, returned to every thread (``sh`` is overwritten)."""
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if tid < s:
            sh[tid] = max(sh[tid], sh[tid + s])
        cuda.syncthreads()
        s //= 2
    best = sh[0]
    cuda.syncthreads()
    return best
