"""NumPy ports of llama.cpp's reference K-quant quantizers (Q4_K, Q5_K, Q6_K).

``gguf.quants`` cannot quantize K-quants, so these follow ggml ``ggml-quants.c``
(``quantize_row_q{4,5,6}_K_ref`` with ``make_qkx2_quants`` / ``make_qx_quants``) operation by
operation in float32: sums are accumulated element by element in the C order (NumPy's pairwise
``sum`` would round differently), products keep the C association, ``nearest_int`` is
round-half-even like ggml's ``+ 12582912.f`` trick, f16 conversion is round-to-nearest-even.
Every sub-block is independent, so the work is vectorised across sub-blocks and loops only
over the 16/32 positions inside one. The result is byte-identical to the C code of the
llama-cpp-python 0.3.36 build (``scripts/gen_kquant_goldens.py`` records its output; the
library is built without FMA contraction, which this emulation relies on).

Inputs must be finite; rows must be multiples of 256.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)


def _nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml ``nearest_int``: round half to even (valid for |v| < 2^22, as in ggml)."""
    return np.rint(v).astype(np.int32)


def _fp16_round(v: np.ndarray) -> np.ndarray:
    """``GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(v))`` and the f16 bits."""
    h = v.astype(np.float16)
    return h.astype(F32), h


def _make_qkx2_quants(
    x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``make_qkx2_quants`` for many sub-blocks at once: x, w are ``[m, n]`` float32.

    Returns (scale[m], the_min[m] (= -min), L[m, n] uint8)."""
    m, n = x.shape
    mn = x[:, 0].copy()
    mx = x[:, 0].copy()
    sum_w = w[:, 0].copy()
    sum_x = sum_w * x[:, 0]
    for i in range(1, n):
        xi, wi = x[:, i], w[:, i]
        mn = np.where(xi < mn, xi, mn)
        mx = np.where(xi > mx, xi, mx)
        sum_w = sum_w + wi
        sum_x = sum_x + wi * xi
    mn = np.where(mn > 0, F32(0), mn)
    flat = mx == mn
    rng_ = np.where(flat, F32(1), mx - mn)  # avoid 0-division; flat rows are fixed up below
    iscale = F32(nmax) / rng_
    scale = F32(1) / iscale
    L = np.clip(_nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax)
    best_error = np.zeros(m, F32)
    for i in range(n):
        diff = scale * L[:, i].astype(F32) + mn - x[:, i]
        best_error = best_error + w[:, i] * (diff * diff)
    for step in range(nstep + 1):
        # C recomputes (max - min) with the *current* min, which improves as steps succeed
        rng_ = np.where(flat, F32(1), mx - mn)
        iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / rng_
        laux = np.clip(_nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax)
        lf = laux.astype(F32)
        sum_l = np.zeros(m, F32)
        sum_l2 = np.zeros(m, F32)
        sum_xl = np.zeros(m, F32)
        for i in range(n):
            wl = w[:, i] * lf[:, i]
            sum_l = sum_l + wl
            sum_l2 = sum_l2 + wl * lf[:, i]
            sum_xl = sum_xl + wl * x[:, i]
        D = sum_w * sum_l2 - sum_l * sum_l
        ok = D > 0
        Ds = np.where(ok, D, F32(1))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / Ds
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / Ds
        pos = this_min > 0
        safe_l2 = np.where(sum_l2 == 0, F32(1), sum_l2)
        this_scale = np.where(pos, sum_xl / safe_l2, this_scale)
        this_min = np.where(pos, F32(0), this_min)
        cur_error = np.zeros(m, F32)
        for i in range(n):
            diff = this_scale * lf[:, i] + this_min - x[:, i]
            cur_error = cur_error + w[:, i] * (diff * diff)
        better = ok & ~flat & (cur_error < best_error)
        L = np.where(better[:, None], laux, L)
        best_error = np.where(better, cur_error, best_error)
        scale = np.where(better, this_scale, scale)
        mn = np.where(better, this_min, mn)
    L = np.where(flat[:, None], 0, L)
    scale = np.where(flat, F32(0), scale)
    return scale.astype(F32), (-mn).astype(F32), L.astype(np.uint8)


def _k4_scales(x: np.ndarray, nmax: int, rmin: float, nstep: int) -> tuple:
    """Shared part of Q4_K / Q5_K: per-sub-block scales/mins, 6-bit packing, final codes."""
    nb = x.shape[0]
    xs = x.reshape(nb * 8, 32)
    sum_x2 = np.zeros(nb * 8, F32)
    for i in range(32):
        sum_x2 = sum_x2 + xs[:, i] * xs[:, i]
    av_x = np.sqrt(sum_x2 / F32(32))
    w = av_x[:, None] + np.abs(xs)
    scales, mins, L = _make_qkx2_quants(xs, w, nmax, rmin, 0.1, nstep)
    scales = scales.reshape(nb, 8)
    mins = mins.reshape(nb, 8)
    L = L.reshape(nb, 8, 32).astype(np.int32)
    # running maxima with strict '>' from 0, as in C
    max_scale = np.zeros(nb, F32)
    max_min = np.zeros(nb, F32)
    for j in range(8):
        max_scale = np.where(scales[:, j] > max_scale, scales[:, j], max_scale)
        max_min = np.where(mins[:, j] > max_min, mins[:, j], max_min)
    inv_scale = np.where(max_scale > 0, F32(63) / np.where(max_scale > 0, max_scale, 1), F32(0))
    inv_min = np.where(max_min > 0, F32(63) / np.where(max_min > 0, max_min, 1), F32(0))
    # C: uint8_t ls = nearest_int(...) (wraps), then MIN(63, ls)
    ls = np.minimum(_nearest_int(inv_scale[:, None] * scales) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(_nearest_int(inv_min[:, None] * mins) & 0xFF, 63).astype(np.uint8)
    packed = np.zeros((nb, 12), np.uint8)
    packed[:, 0:4] = ls[:, 0:4]
    packed[:, 4:8] = lm[:, 0:4]
    packed[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    packed[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    packed[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    d, d_h = _fp16_round(max_scale / F32(63))
    dmin, dmin_h = _fp16_round(max_min / F32(63))
    # codes from the rounded scales (get_scale_min_k4 gives back ls/lm exactly)
    dd = d[:, None] * ls.astype(F32)
    dm = dmin[:, None] * lm.astype(F32)
    nz = dd != 0
    q = _nearest_int((x.reshape(nb, 8, 32) + dm[:, :, None]) / np.where(nz, dd, 1)[:, :, None])
    L = np.where(nz[:, :, None], np.clip(q, 0, nmax), L)
    return d_h, dmin_h, packed, L


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """``quantize_row_q4_K_ref`` on rows of ``x`` (float32, last axis a multiple of 256)."""
    x2 = np.ascontiguousarray(x, dtype=F32).reshape(-1, 256)
    nb = x2.shape[0]
    d_h, dmin_h, packed, L = _k4_scales(x2, 15, -1.0, 20)
    Lf = L.reshape(nb, 4, 2, 32)  # 64-value groups: low nibble = first 32, high = next 32
    qs = (Lf[:, :, 0, :] | (Lf[:, :, 1, :] << 4)).astype(np.uint8).reshape(nb, 128)
    out = np.empty((nb, 144), np.uint8)
    out[:, 0:2] = d_h.view(np.uint8).reshape(nb, 2)
    out[:, 2:4] = dmin_h.view(np.uint8).reshape(nb, 2)
    out[:, 4:16] = packed
    out[:, 16:144] = qs
    return out.reshape(x.shape[:-1] + (x.shape[-1] // 256 * 144,))


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    """``quantize_row_q5_K_ref`` on rows of ``x`` (float32, last axis a multiple of 256)."""
    x2 = np.ascontiguousarray(x, dtype=F32).reshape(-1, 256)
    nb = x2.shape[0]
    d_h, dmin_h, packed, L = _k4_scales(x2, 31, -0.5, 15)
    Lf = L.reshape(nb, 4, 2, 32)
    lo = Lf & 0xF
    hi = (Lf >> 4) & 1
    qs = (lo[:, :, 0, :] | (lo[:, :, 1, :] << 4)).astype(np.uint8).reshape(nb, 128)
    qh = np.zeros((nb, 32), np.uint8)
    for g in range(4):  # bits 2g / 2g+1 of qh[j] hold the 5th bit of group g's halves
        qh |= (hi[:, g, 0, :] << (2 * g)).astype(np.uint8)
        qh |= (hi[:, g, 1, :] << (2 * g + 1)).astype(np.uint8)
    out = np.empty((nb, 176), np.uint8)
    out[:, 0:2] = d_h.view(np.uint8).reshape(nb, 2)
    out[:, 2:4] = dmin_h.view(np.uint8).reshape(nb, 2)
    out[:, 4:16] = packed
    out[:, 16:48] = qh
    out[:, 48:176] = qs
    return out.reshape(x.shape[:-1] + (x.shape[-1] // 256 * 176,))


def _make_qx_quants_rmse1(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_qx_quants(n, nmax, x, L, rmse_type=1, NULL)`` for many sub-blocks ``[m, n]``."""
    m, n = x.shape
    amax = np.zeros(m, F32)
    mx = np.zeros(m, F32)
    for i in range(n):  # first index of the largest |x| (strict '>')
        ax = np.abs(x[:, i])
        take = ax > amax
        amax = np.where(take, ax, amax)
        mx = np.where(take, x[:, i], mx)
    zero = amax < GROUP_MAX_EPS
    mxs = np.where(zero, F32(1), mx)
    w = x * x

    def sums(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = np.clip(_nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
        lf = q.astype(F32)
        sumlx = np.zeros(m, F32)
        suml2 = np.zeros(m, F32)
        for i in range(n):
            sumlx = sumlx + (w[:, i] * x[:, i]) * lf[:, i]
            suml2 = suml2 + (w[:, i] * lf[:, i]) * lf[:, i]
        return q, sumlx, suml2

    iscale = F32(-nmax) / mxs
    q, sumlx, suml2 = sums(iscale)
    L = q + nmax
    scale = np.where(suml2 != 0, sumlx / np.where(suml2 != 0, suml2, 1), F32(0))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(F32(nmax) + F32(0.1) * F32(step)) / mxs
        q, sumlx, suml2 = sums(iscale)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        L = np.where(better[:, None], q + nmax, L)
        new_scale = sumlx / np.where(suml2 > 0, suml2, 1)
        scale = np.where(better, new_scale, scale)
        best = np.where(better, new_scale * sumlx, best)
    L = np.where(zero[:, None], 0, L)
    scale = np.where(zero, F32(0), scale)
    return scale.astype(F32), L


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """``quantize_row_q6_K_ref`` on rows of ``x`` (float32, last axis a multiple of 256)."""
    x2 = np.ascontiguousarray(x, dtype=F32).reshape(-1, 256)
    nb = x2.shape[0]
    scales, L = _make_qx_quants_rmse1(x2.reshape(nb * 16, 16), 32)
    scales = scales.reshape(nb, 16)
    L = L.reshape(nb, 16, 16)
    max_scale = np.zeros(nb, F32)
    max_abs = np.zeros(nb, F32)
    for ib in range(16):
        a = np.abs(scales[:, ib])
        take = a > max_abs
        max_abs = np.where(take, a, max_abs)
        max_scale = np.where(take, scales[:, ib], max_scale)
    zero_block = max_abs < GROUP_MAX_EPS
    iscale = F32(-128) / np.where(zero_block, F32(1), max_scale)
    d, d_h = _fp16_round(F32(1) / iscale)
    sc = np.minimum(_nearest_int(iscale[:, None] * scales), 127).astype(np.int8)
    dd = d[:, None] * sc.astype(F32)
    nz = dd != 0
    q = _nearest_int(x2.reshape(nb, 16, 16) / np.where(nz, dd, 1)[:, :, None])
    L = np.where(nz[:, :, None], np.clip(q, -32, 31) + 32, L).reshape(nb, 256)
    Lg = L.reshape(nb, 2, 4, 32)  # 128-value halves, four 32-value quarters each
    ql = np.empty((nb, 2, 64), np.uint8)
    ql[:, :, 0:32] = (Lg[:, :, 0] & 0xF) | ((Lg[:, :, 2] & 0xF) << 4)
    ql[:, :, 32:64] = (Lg[:, :, 1] & 0xF) | ((Lg[:, :, 3] & 0xF) << 4)
    qh = (
        (Lg[:, :, 0] >> 4)
        | ((Lg[:, :, 1] >> 4) << 2)
        | ((Lg[:, :, 2] >> 4) << 4)
        | ((Lg[:, :, 3] >> 4) << 6)
    ).astype(np.uint8)
    out = np.empty((nb, 210), np.uint8)
    out[:, 0:128] = ql.reshape(nb, 128)
    out[:, 128:192] = qh.reshape(nb, 64)
    out[:, 192:208] = sc.view(np.uint8)
    out[:, 208:210] = d_h.view(np.uint8).reshape(nb, 2)
    out[zero_block] = 0  # memset(&y[i], 0, ...) with d = 0
    return out.reshape(x.shape[:-1] + (x.shape[-1] // 256 * 210,))
