"""RoPE (normal, NEOX, YaRN) fused with the K/V write into paged cache blocks (Numba CUDA).

The rotation angle of pair ``i`` at position ``p`` is linear in ``p`` for every variant
llama.cpp implements (ggml rope_yarn: the YaRN ramp mixes two angles that are both
``p * base_i`` multiples), so the host folds base, ``freq_scale``, ``freq_factors`` and the
YaRN ramp into one float64 frequency per pair plus one magnitude ``mscale``; the kernel then
computes ``cos/sin(p * f_i) * mscale`` in float64 like ``backends.cpu.ops.rope_cos_sin``.

One block per (token, head) over the q heads then the k heads; a k-head block, after
rotating, stores its row and the matching v row as f16 at ``slot_mapping[token]``
(negative slot: padding, skipped) — the cache write of ``ops.write_kv``.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import cuda

from orcd_toolkit.backends.cpu.ops import (
    ROPE_NEOX,
    ROPE_NORM,
    rope_inv_freq,
    rope_yarn_ramp,
)
from orcd_toolkit.kernels._launch import numba_stream
from orcd_toolkit.kernels.errors import KernelError


def rope_frequencies(
    n_rot: int,
    *,
    freq_base: float = 10000.0,
    freq_scale: float = 1.0,
    ext_factor: float = 0.0,
    attn_factor: float = 1.0,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    n_ctx_orig: int = 0,
    freq_factors: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """(float64 per-pair angular frequency [n_rot/2], mscale): theta_i(p) = p * f_i."""
    if n_rot % 2:
        raise KernelError(f"n_rot must be even, got {n_rot}")
    try:
        inv_freq = rope_inv_freq(n_rot, freq_base, freq_factors)
    except ValueError as exc:
        raise KernelError(str(exc)) from None
    mscale = float(attn_factor)
    if ext_factor != 0.0:
        ramp_mix = rope_yarn_ramp(n_rot, n_ctx_orig, freq_base, beta_fast, beta_slow) * ext_factor
        freqs = inv_freq * (freq_scale * (1.0 - ramp_mix) + ramp_mix)
        mscale *= 1.0 + 0.1 * math.log(1.0 / freq_scale)
    else:
        freqs = inv_freq * freq_scale
    return np.ascontiguousarray(freqs), mscale


@cuda.jit
def _rope_kv_kernel(q, k, v, positions, freqs, mscale, neox, slot_mapping, k_cache, v_cache,
                    write_kv):  # pragma: no cover - device code
    t = cuda.blockIdx.x
    h = cuda.blockIdx.y
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    hq = q.shape[1]
    half = freqs.shape[0]
    pos = numba.float64(positions[t])
    is_k = h >= hq
    hk = h - hq
    for i in range(tid, half, nt):
        theta = pos * freqs[i]
        c = numba.float32(math.cos(theta) * mscale)
        s = numba.float32(math.sin(theta) * mscale)
        if neox:
            i0 = i
            i1 = i + half
        else:
            i0 = 2 * i
            i1 = 2 * i + 1
        if is_k:
            x0 = k[t, hk, i0]
            x1 = k[t, hk, i1]
            k[t, hk, i0] = x0 * c - x1 * s
            k[t, hk, i1] = x0 * s + x1 * c
        else:
            x0 = q[t, h, i0]
            x1 = q[t, h, i1]
            q[t, h, i0] = x0 * c - x1 * s
            q[t, h, i1] = x0 * s + x1 * c
    if is_k and write_kv:
        cuda.syncthreads()
        slot = slot_mapping[t]
        if slot >= 0:
            bs = k_cache.shape[1]
            blk = slot // bs
            off = slot % bs
            for d in range(tid, k.shape[2], nt):
                k_cache[blk, off, hk, d] = k[t, hk, d]
                v_cache[blk, off, hk, d] = v[t, hk, d]


def rope_kv_write(
    q: Any,
    k: Any,
    v: Any,
    positions: Any,
    freqs: Any,
    mscale: float,
    mode: int,
    *,
    slot_mapping: Any = None,
    k_cache: Any = None,
    v_cache: Any = None,
    stream: Any = None,
    threads: int = 64,
) -> None:
    """Rotate q [T, Hq, D] and k [T, Hkv, D] in place; with a cache, store k and v there.

    ``freqs``/``mscale`` from :func:`rope_frequencies` (freqs as a float64 device array).
    Pass ``freqs`` of length 0 to skip the rotation and only write the cache (learned
    positions, gpt2). Caches are f16 [num_blocks, block_size, Hkv, D].
    """
    if mode not in (ROPE_NORM, ROPE_NEOX):
        raise KernelError(f"unsupported rope mode {mode} (ROPE_NORM=0, ROPE_NEOX=2)")
    t, hq, d = q.shape
    if k.shape[0] != t or k.shape[2] != d or tuple(v.shape) != tuple(k.shape):
        raise KernelError(f"k/v must be [{t}, Hkv, {d}], got {list(k.shape)} / {list(v.shape)}")
    if 2 * freqs.shape[0] > d:
        raise KernelError(f"{2 * freqs.shape[0]} rotary dims exceed head size {d}")
    write = k_cache is not None
    if write and (slot_mapping is None or v_cache is None):
        raise KernelError("k_cache needs v_cache and slot_mapping")
    if write and (k_cache.dtype != np.float16 or tuple(k_cache.shape[2:]) != tuple(k.shape[1:])):
        raise KernelError(f"caches must be f16 [blocks, block_size, {k.shape[1]}, {d}]")
    if t == 0:
        return
    sm = slot_mapping if write else positions
    # without a cache the write branch never runs; a 4-D view of k stands in for the caches
    # (no allocation, so this is safe inside graph capture)
    kc = k_cache if write else k.reshape((1,) + tuple(k.shape))
    vc = v_cache if write else kc
    _rope_kv_kernel[(t, hq + k.shape[1]), threads, numba_stream(stream)](
        q, k, v, positions, freqs, np.float64(mscale), mode == ROPE_NEOX, sm, kc, vc, write)


F32_3D = numba.float32[:, :, :]
_F16_4D = numba.types.Array(numba.types.float16, 4, "C")
PTX_SIGNATURES = [
    (_rope_kv_kernel,
     (F32_3D, F32_3D, F32_3D, numba.int32[:], numba.float64[:], numba.float64, numba.boolean,
      numba.int32[:], _F16_4D, _F16_4D, numba.boolean)),
]
