"""RMSNorm and LayerNorm, optionally fused with the residual add (Numba CUDA).

One block per row; the reduction is a shared-memory tree in float64 (``_reduce.block_sum``,
inlined into each kernel; the NumPy reference, like ggml, accumulates in double), so the
kernels also run on the CUDA simulator, which has no warp shuffles. Semantics:
``backends.cpu.ops.rms_norm`` / ``add_rms_norm`` / ``layer_norm`` / ``add_layer_norm``. The fused forms write the new residual stream
``x + residual`` and the normalized output in one pass.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import cuda

from orcd_toolkit.kernels._launch import numba_stream
from orcd_toolkit.kernels._reduce import block_sum
from orcd_toolkit.kernels.errors import KernelError

MAX_THREADS = 256  # shared reduction buffer size; launches use a power of two <= this


@cuda.jit(device=True, inline="always")
def _load_sum(x, residual, resid_out, row, i, fused):  # pragma: no cover - device code
    """The norm's input element: ``x``, or ``x + residual`` stored to ``resid_out`` when
    fused (inlined into the kernels; see ``_reduce`` for why)."""
    v = x[row, i]
    if fused:
        v = v + residual[row, i]
        resid_out[row, i] = v
    return v


@cuda.jit(device=True, inline="always")
def _reload(x, resid_out, row, i, fused):  # pragma: no cover - device code
    """The element ``_load_sum`` returned, read back (only by the thread that wrote it)."""
    return resid_out[row, i] if fused else x[row, i]


@cuda.jit
def _rms_norm_kernel(x, residual, weight, out, resid_out, eps, fused):  # pragma: no cover
    row = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    n = x.shape[1]
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    acc = 0.0
    for i in range(tid, n, nt):
        v = _load_sum(x, residual, resid_out, row, i, fused)
        acc += numba.float64(v) * numba.float64(v)
    sh[tid] = acc
    total = block_sum(sh, tid, nt)
    scale = numba.float32(1.0 / math.sqrt(total / n + eps))
    for i in range(tid, n, nt):
        v = _reload(x, resid_out, row, i, fused)
        out[row, i] = (v * scale) * weight[i]


@cuda.jit
def _layer_norm_kernel(x, residual, weight, bias, out, resid_out, eps, fused):  # pragma: no cover
    row = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    n = x.shape[1]
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    acc = 0.0
    for i in range(tid, n, nt):
        v = _load_sum(x, residual, resid_out, row, i, fused)
        acc += numba.float64(v)
    sh[tid] = acc
    mean = block_sum(sh, tid, nt) / n
    acc = 0.0
    for i in range(tid, n, nt):
        v = _reload(x, resid_out, row, i, fused)
        c = numba.float64(v) - mean
        acc += c * c
    sh[tid] = acc
    var = block_sum(sh, tid, nt) / n
    scale = numba.float32(1.0 / math.sqrt(var + eps))
    for i in range(tid, n, nt):
        v = _reload(x, resid_out, row, i, fused)
        c = numba.float32(numba.float64(v) - mean)
        out[row, i] = (c * scale) * weight[i] + bias[i]


def _threads(n: int, max_threads: int) -> int:
    t = 1
    while t < min(n, max_threads):
        t *= 2
    return max(1, min(t, max_threads))


def _check2d(a: Any, name: str, shape: tuple[int, int]) -> None:
    if a.dtype != np.float32 or tuple(a.shape) != shape:
        raise KernelError(f"{name} must be float32 {list(shape)}, got {a.dtype} {list(a.shape)}")


def _residual_args(out: Any, x: Any, residual: Any,
                   residual_out: Any) -> tuple[int, int, bool, Any, Any]:
    """Check shapes; (rows, n, fused, residual, residual_out) as the kernels take them (when
    not fused the kernels never touch the last two, so they get ``x`` and ``out``)."""
    rows, n = x.shape
    _check2d(out, "out", (rows, n))
    fused = residual is not None
    if fused:
        if residual_out is None:
            raise KernelError("residual_out is required with residual")
        _check2d(residual, "residual", (rows, n))
        _check2d(residual_out, "residual_out", (rows, n))
        return rows, n, True, residual, residual_out
    return rows, n, False, x, out


def rms_norm(out: Any, x: Any, weight: Any, eps: float, *, residual: Any = None,
             residual_out: Any = None, stream: Any = None, threads: int = MAX_THREADS) -> None:
    """``out = rms_norm(x (+ residual)) * weight``; with ``residual`` also writes the sum to
    ``residual_out``, which may alias ``x`` or ``residual`` (each thread re-reads only the
    elements it wrote itself)."""
    rows, n, fused, r, ro = _residual_args(out, x, residual, residual_out)
    _rms_norm_kernel[rows, _threads(n, threads), numba_stream(stream)](
        x, r, weight, out, ro, np.float64(eps), fused)


def layer_norm(out: Any, x: Any, weight: Any, bias: Any, eps: float, *, residual: Any = None,
               residual_out: Any = None, stream: Any = None, threads: int = MAX_THREADS) -> None:
    """``out = layer_norm(x (+ residual)) * weight + bias``; fused residual as in rms_norm."""
    rows, n, fused, r, ro = _residual_args(out, x, residual, residual_out)
    _layer_norm_kernel[rows, _threads(n, threads), numba_stream(stream)](
        x, r, weight, bias, out, ro, np.float64(eps), fused)


F32_2D = numba.float32[:, :]
F32_1D = numba.float32[:]
PTX_SIGNATURES = [
    (_rms_norm_kernel, (F32_2D, F32_2D, F32_1D, F32_2D, F32_2D, numba.float64, numba.boolean)),
    (_layer_norm_kernel,
     (F32_2D, F32_2D, F32_1D, F32_1D, F32_2D, F32_2D, numba.float64, numba.boolean)),
]
