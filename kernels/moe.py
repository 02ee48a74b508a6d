"""Mixture-of-experts routing and combination (Numba CUDA); the expert products themselves
are :func:`orcd_toolkit.kernels.quant.expert_matvec`, which reads only the selected experts.

Routing is gpt-oss's (``backends.cpu.ops.moe_route``): top-k logits per token (ties: lower
expert id first), weights = softmax over the selected logits only (in float64).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import cuda

from orcd_toolkit.kernels._launch import cdiv, numba_stream
from orcd_toolkit.kernels.errors import KernelError

THREADS = 128


@cuda.jit
def _route_kernel(logits, ids, weights):  # pragma: no cover - device code
    t = cuda.grid(1)
    if t >= logits.shape[0]:
        return
    n_exp = logits.shape[1]
    k = ids.shape[1]
    for j in range(k):
        best = numba.float32(0.0)
        bi = -1
        for e in range(n_exp):
            taken = False
            for jj in range(j):
                if ids[t, jj] == e:
                    taken = True
            if taken:
                continue
            v = logits[t, e]
            if bi < 0 or v > best:
                best = v
                bi = e
        ids[t, j] = bi
    m = numba.float64(logits[t, ids[t, 0]])
    s = 0.0
    for j in range(k):
        s += math.exp(numba.float64(logits[t, ids[t, j]]) - m)
    for j in range(k):
        weights[t, j] = numba.float32(math.exp(numba.float64(logits[t, ids[t, j]]) - m) / s)


@cuda.jit
def _combine_kernel(y, weights, out):  # pragma: no cover - device code
    i = cuda.grid(1)
    d = out.shape[1]
    if i >= out.shape[0] * d:
        return
    t = i // d
    c = i % d
    acc = numba.float32(0.0)
    for j in range(weights.shape[1]):
        acc += weights[t, j] * y[t, j, c]
    out[t, c] = acc


def route(ids: Any, weights: Any, router_logits: Any, *, stream: Any = None) -> None:
    """Top-k expert ids int32 [T, k] and their softmax weights f32 [T, k]."""
    t, n_exp = router_logits.shape
    if ids.dtype != np.int32 or weights.dtype != np.float32 or tuple(ids.shape) != tuple(weights.shape):
        raise KernelError("ids must be int32 and weights float32, both [T, k]")
    if ids.shape[0] != t or not 0 < ids.shape[1] <= n_exp:
        raise KernelError(f"ids must be [{t}, k] with 0 < k <= {n_exp}, got {list(ids.shape)}")
    if t:
        _route_kernel[cdiv(t, THREADS), THREADS, numba_stream(stream)](router_logits, ids, weights)


def combine(out: Any, expert_out: Any, weights: Any, *, stream: Any = None) -> None:
    """``out[t] = sum_j weights[t, j] * expert_out[t, j]`` ([T, k, d] -> [T, d])."""
    t, k, d = expert_out.shape
    if tuple(out.shape) != (t, d) or tuple(weights.shape) != (t, k):
        raise KernelError(f"out must be [{t}, {d}] and weights [{t}, {k}]")
    if t * d:
        _combine_kernel[cdiv(t * d, THREADS), THREADS, numba_stream(stream)](expert_out, weights, out)


PTX_SIGNATURES = [
    (_route_kernel, (numba.float32[:, :], numba.int32[:, :], numba.float32[:, :])),
    (_combine_kernel, (numba.float32[:, :, :], numba.float32[:, :], numba.float32[:, :])),
]
