"""Elementwise ops of the feed-forward block and the residual stream (Numba CUDA).

SwiGLU, gpt-oss's clamped SwiGLU, GELU (tanh form), residual add. Inputs may be strided 2-D
views (e.g. the two halves of a fused gate/up projection). Semantics are
``backends.cpu.ops.swiglu`` / ``swiglu_oai`` / ``gelu``, in float32 like the reference.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import cuda

from orcd_toolkit.backends.cpu.ops import SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT
from orcd_toolkit.kernels._launch import cdiv, numba_stream
from orcd_toolkit.kernels.errors import KernelError

_SQRT_2_OVER_PI = 0.79788456080286535587989211986876
_GELU_A = 0.044715
THREADS = 256


@cuda.jit(device=True, inline="always")
def _element(a):  # pragma: no cover - device code
    """(row, column, in range) of this thread's element of the 2-D ``a`` (one thread per
    element, row-major). Inlined into each kernel: see ``_reduce`` for why not a call."""
    i = cuda.grid(1)
    n = a.shape[1]
    return i // n, i % n, i < a.shape[0] * n


@cuda.jit
def _swiglu_kernel(gate, up, out):  # pragma: no cover - device code
    r, c, in_range = _element(gate)
    if in_range:
        g = gate[r, c]
        out[r, c] = g / (numba.float32(1.0) + math.exp(-g)) * up[r, c]


@cuda.jit
def _swiglu_oai_kernel(gate, up, out, alpha, limit):  # pragma: no cover - device code
    r, c, in_range = _element(gate)
    if in_range:
        x = min(gate[r, c], limit)
        y = max(min(up[r, c], limit), -limit)
        glu = x / (numba.float32(1.0) + math.exp(alpha * -x))
        out[r, c] = glu * (y + numba.float32(1.0))


@cuda.jit
def _gelu_kernel(x, out):  # pragma: no cover - device code
    r, c, in_range = _element(x)
    if in_range:
        v = x[r, c]
        inner = numba.float32(_SQRT_2_OVER_PI) * v * (
            numba.float32(1.0) + numba.float32(_GELU_A) * v * v)
        out[r, c] = numba.float32(0.5) * v * (numba.float32(1.0) + math.tanh(inner))


@cuda.jit
def _add_kernel(a, b, out):  # pragma: no cover - device code
    r, c, in_range = _element(a)
    if in_range:
        out[r, c] = a[r, c] + b[r, c]


def _launch(kernel: Any, num_elements: int, stream: Any, *args: Any) -> None:
    """One thread per element; nothing to launch for an empty array."""
    if num_elements:
        kernel[cdiv(num_elements, THREADS), THREADS, numba_stream(stream)](*args)


def _same(*arrs: Any) -> tuple[int, int]:
    shape = tuple(arrs[0].shape)
    for a in arrs:
        if a.ndim != 2 or tuple(a.shape) != shape or a.dtype != np.float32:
            raise KernelError(f"expected float32 arrays of shape {list(shape)}, got "
                              f"{a.dtype} {list(a.shape)}")
    return shape  # type: ignore[return-value]


def swiglu(out: Any, gate: Any, up: Any, *, stream: Any = None) -> None:
    """``out = silu(gate) * up`` over [T, F]."""
    r, c = _same(gate, up, out)
    _launch(_swiglu_kernel, r * c, stream, gate, up, out)


def swiglu_oai(out: Any, gate: Any, up: Any, alpha: float = SWIGLU_OAI_ALPHA,
               limit: float = SWIGLU_OAI_LIMIT, *, stream: Any = None) -> None:
    """gpt-oss clamped SwiGLU: ``min(g, L) * sigmoid(alpha * min(g, L)) * (clamp(u, -L, L) + 1)``."""
    r, c = _same(gate, up, out)
    _launch(_swiglu_oai_kernel, r * c, stream, gate, up, out, np.float32(alpha),
            np.float32(limit))


def gelu(out: Any, x: Any, *, stream: Any = None) -> None:
    """GELU, tanh approximation (ggml_gelu_f32)."""
    r, c = _same(x, out)
    _launch(_gelu_kernel, r * c, stream, x, out)


def add(out: Any, a: Any, b: Any, *, stream: Any = None) -> None:
    """``out = a + b`` (residual add where no norm follows to fuse it into)."""
    r, c = _same(a, b, out)
    _launch(_add_kernel, r * c, stream, a, b, out)


_A = numba.float32[:, :]
PTX_SIGNATURES = [
    (_swiglu_kernel, (_A, _A, _A)),
    (_swiglu_oai_kernel, (_A, _A, _A, numba.float32, numba.float32)),
    (_gelu_kernel, (_A, _A)),
    (_add_kernel, (_A, _A, _A)),
]
