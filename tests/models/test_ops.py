"""The NumPy reference ops against hand-computed values and naive re-derivations.

These ops are the oracle for the GPU kernels, so each is checked against an independent,
deliberately simple formulation (dense loops, explicit formulas from the llama.cpp source).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from orcd_toolkit.backends.cpu import ops


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_rms_norm_matches_formula() -> None:
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    w = np.array([1.0, 0.5, 2.0, 1.0], np.float32)
    expected = x / math.sqrt((1 + 4 + 9 + 16) / 4 + 1e-6) * w
    np.testing.assert_allclose(ops.rms_norm(x, w, 1e-6), expected, rtol=1e-6)


def test_add_norms_return_residual_sum() -> None:
    rng = _rng()
    x, r = rng.standard_normal((2, 3, 8), dtype=np.float32)
    w, b = rng.standard_normal((2, 8), dtype=np.float32)
    normed, summed = ops.add_rms_norm(x, r, w, 1e-5)
    np.testing.assert_array_equal(summed, x + r)
    np.testing.assert_allclose(normed, ops.rms_norm(x + r, w, 1e-5), rtol=1e-6)
    normed, summed = ops.add_layer_norm(x, r, w, b, 1e-5)
    s = (x + r).astype(np.float64)
    ref = (s - s.mean(-1, keepdims=True)) / np.sqrt(s.var(-1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(normed, ref, rtol=1e-5, atol=1e-5)


def test_rope_norm_and_neox_pairs() -> None:
    # One head of 4 dims, position 1, base 100: pair i rotates by 100^(-2i/4) = 1, 0.1.
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]], np.float32)
    pos = np.array([1])
    t0, t1 = 1.0, 0.1
    c0, s0, c1, s1 = math.cos(t0), math.sin(t0), math.cos(t1), math.sin(t1)
    norm = ops.rope(x, pos, 4, ops.ROPE_NORM, freq_base=100.0)[0, 0]
    # NORM pairs are (x0, x1), (x2, x3)
    expected = [1 * c0 - 2 * s0, 1 * s0 + 2 * c0, 3 * c1 - 4 * s1, 3 * s1 + 4 * c1]
    np.testing.assert_allclose(norm, expected, rtol=1e-6)
    neox = ops.rope(x, pos, 4, ops.ROPE_NEOX, freq_base=100.0)[0, 0]
    # NEOX pairs are (x0, x2), (x1, x3)
    expected = [1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 1 * s0 + 3 * c0, 2 * s1 + 4 * c1]
    np.testing.assert_allclose(neox, expected, rtol=1e-6)


def test_rope_partial_rotation_and_position_zero() -> None:
    x = _rng(1).standard_normal((3, 2, 8), dtype=np.float32)
    out = ops.rope(x, np.array([0, 5, 9]), 4, ops.ROPE_NEOX)
    np.testing.assert_array_equal(out[0], x[0])  # position 0 is the identity
    np.testing.assert_array_equal(out[:, :, 4:], x[:, :, 4:])  # dims past n_rot pass through
    assert not np.allclose(out[1, :, :4], x[1, :, :4])


def test_rope_freq_factors_divide_frequencies() -> None:
    x = _rng(2).standard_normal((1, 1, 4), dtype=np.float32)
    ff = np.array([2.0, 4.0], np.float32)
    a = ops.rope(x, np.array([6]), 4, ops.ROPE_NORM, freq_base=100.0, freq_factors=ff)
    # pos 6 with factors (2, 4) == pos 3 for pair 0 and pos 1.5 for pair 1
    b0 = ops.rope(x, np.array([3]), 4, ops.ROPE_NORM, freq_base=100.0)[0, 0, :2]
    b1 = ops.rope(x, np.array([1.5]), 4, ops.ROPE_NORM, freq_base=100.0)[0, 0, 2:]
    np.testing.assert_allclose(a[0, 0], np.concatenate([b0, b1]), rtol=1e-5)


def test_yarn_corr_dims_gpt_oss() -> None:
    # gpt-oss: head 64, n_ctx_orig 4096, base 150000, beta 32/1 -> worked by hand:
    # 64*ln(4096/(32*2pi))/(2 ln 150000) = 8.09 -> floor 8; with beta 1: 17.40 -> ceil 18.
    assert ops.rope_yarn_corr_dims(64, 4096, 150000.0, 32.0, 1.0) == (8.0, 18.0)


def test_yarn_ramp_and_mscale() -> None:
    pos = np.array([7])
    kw = dict(freq_base=150000.0, n_ctx_orig=4096, beta_fast=32.0, beta_slow=1.0)
    cos, sin = ops.rope_cos_sin(pos, 64, freq_scale=1 / 32, ext_factor=1.0, **kw)
    mscale = 1 + 0.1 * math.log(32)
    inv = 150000.0 ** (-np.arange(32) * 2 / 64)
    # pairs below corr dim 8 extrapolate (full frequency), above 18 interpolate (scaled by 1/32)
    np.testing.assert_allclose(cos[0, :8], np.cos(7 * inv[:8]) * mscale, rtol=1e-5)
    np.testing.assert_allclose(cos[0, 18:], np.cos(7 * inv[18:] / 32) * mscale, rtol=1e-5)
    ramp = 1 - np.clip((12 - 8) / (18 - 8), 0, 1)
    theta = 7 * inv[12] / 32 * (1 - ramp) + 7 * inv[12] * ramp
    np.testing.assert_allclose(sin[0, 12], math.sin(theta) * mscale, rtol=1e-5)
    # without YaRN the magnitude is attn_factor only
    cos2, _ = ops.rope_cos_sin(pos, 64, freq_base=150000.0, freq_scale=0.5, attn_factor=2.0)
    np.testing.assert_allclose(cos2[0], np.cos(7 * inv * 0.5) * 2.0, rtol=1e-5)


def _dense_attention(q, k, v, scale, sinks=None, window=0):
    """Naive per-head loop: q [n, Hq, D], k/v [L, Hkv, D], queries at the last n positions."""
    n, hq, _ = q.shape
    length, hkv, _ = k.shape
    out = np.zeros_like(q, dtype=np.float64)
    for i in range(n):
        qp = length - n + i
        for h in range(hq):
            kh = h // (hq // hkv)
            logits = []
            for j in range(length):
                visible = j <= qp and (window == 0 or qp - j < window)
                logits.append(float(q[i, h] @ k[j, kh]) * scale if visible else -np.inf)
            logits = np.array(logits)
            m = logits.max() if sinks is None else max(logits.max(), sinks[h])
            p = np.exp(logits - m)
            denom = p.sum() + (0.0 if sinks is None else math.exp(sinks[h] - m))
            out[i, h] = (p / denom) @ v[:, kh].astype(np.float64)
    return out


@pytest.mark.parametrize(
    "hq,hkv,window,with_sinks",
    [(4, 4, 0, False), (6, 2, 0, False), (4, 2, 3, True), (2, 1, 0, True)],
)
def test_paged_attention_ragged_batch_matches_dense(hq, hkv, window, with_sinks) -> None:
    rng = _rng(3)
    d, block_size, num_blocks = 8, 4, 16
    # sequence 0: prefill 6 tokens from empty; sequence 1: decode 1 token after 9 cached;
    # sequence 2: a prefill chunk of 3 tokens after 5 cached.
    lens, news = [6, 10, 8], [6, 1, 3]
    perm = rng.permutation(num_blocks)  # paged: arbitrary, non-consecutive block ids
    tables = np.full((3, 4), -1, np.int32)
    k_cache = np.zeros((num_blocks, block_size, hkv, d), np.float32)
    v_cache = np.zeros_like(k_cache)
    full_k, full_v, q_parts, used = [], [], [], 0
    for b, (length, n) in enumerate(zip(lens, news, strict=True)):
        nb = -(-length // block_size)
        tables[b, :nb] = perm[used : used + nb]
        used += nb
        k = rng.standard_normal((length, hkv, d)).astype(np.float32)
        v = rng.standard_normal((length, hkv, d)).astype(np.float32)
        slots = (
            tables[b, np.arange(length) // block_size] * block_size + np.arange(length) % block_size
        )
        ops.write_kv(k_cache, v_cache, k, v, slots)
        full_k.append(k)
        full_v.append(v)
        q_parts.append(rng.standard_normal((n, hq, d)).astype(np.float32))
    q = np.concatenate(q_parts)
    starts = np.concatenate([[0], np.cumsum(news)])
    sinks = rng.standard_normal(hq).astype(np.float32) if with_sinks else None
    out = ops.paged_attention(
        q,
        k_cache,
        v_cache,
        tables,
        starts,
        np.array(lens),
        scale=0.35,
        sinks=sinks,
        sliding_window=window,
    )
    for b in range(3):
        ref = _dense_attention(q_parts[b], full_k[b], full_v[b], 0.35, sinks, window)
        np.testing.assert_allclose(out[starts[b] : starts[b + 1]], ref, rtol=1e-5, atol=1e-5)


def test_write_kv_skips_negative_slots() -> None:
    k_cache = np.zeros((2, 2, 1, 1), np.float32)
    v_cache = np.zeros_like(k_cache)
    k = np.array([[[1.0]], [[2.0]]], np.float32)
    ops.write_kv(k_cache, v_cache, k, -k, np.array([3, -1]))
    assert k_cache[1, 1, 0, 0] == 1.0 and v_cache[1, 1, 0, 0] == -1.0
    assert np.count_nonzero(k_cache) == 1


def test_swiglu_oai_clamps() -> None:
    gate = np.array([10.0, -1.0, 0.5], np.float32)
    up = np.array([9.0, -9.0, 0.25], np.float32)
    out = ops.swiglu_oai(gate, up)

    def sig(z):
        return 1 / (1 + math.exp(-z))

    expected = [7 * sig(1.702 * 7) * 8, -1 * sig(-1.702) * (-6), 0.5 * sig(0.851) * 1.25]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_gelu_silu_swiglu_values() -> None:
    x = np.array([-3.0, -0.5, 0.0, 1.0, 4.0], np.float32)
    ref = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))) for v in x]
    np.testing.assert_allclose(ops.gelu(x), ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ops.silu(x), [v / (1 + math.exp(-v)) for v in x], rtol=1e-6)
    np.testing.assert_allclose(ops.swiglu(x, x + 1), ops.silu(x) * (x + 1), rtol=1e-6)
    assert np.isfinite(ops.silu(np.array([-1000.0], np.float32))).all()


def test_moe_route_softmax_over_selected() -> None:
    logits = np.array([[0.1, 3.0, -1.0, 2.0], [5.0, 5.0, 0.0, 1.0]], np.float32)
    ids, w = ops.moe_route(logits, 2)
    np.testing.assert_array_equal(ids, [[1, 3], [0, 1]])
    e = math.exp(1.0)
    np.testing.assert_allclose(w[0], [e / (e + 1), 1 / (e + 1)], rtol=1e-6)
    np.testing.assert_allclose(w[1], [0.5, 0.5], rtol=1e-6)
    with pytest.raises(ValueError):
        ops.moe_route(logits, 5)


def test_moe_experts_matches_per_token_loop() -> None:
    rng = _rng(4)
    t, d, f, e, k = 5, 6, 4, 3, 2
    x = rng.standard_normal((t, d)).astype(np.float32)
    gw, uw = rng.standard_normal((2, e, f, d)).astype(np.float32)
    dw = rng.standard_normal((e, d, f)).astype(np.float32)
    gb, ub = rng.standard_normal((2, e, f)).astype(np.float32)
    db = rng.standard_normal((e, d)).astype(np.float32)
    ids, w = ops.moe_route(rng.standard_normal((t, e)).astype(np.float32), k)
    out = ops.moe_experts(x, ids, w, gw, uw, dw, gate_b=gb, up_b=ub, down_b=db)
    for i in range(t):
        acc = np.zeros(d)
        for j in range(k):
            ex = ids[i, j]
            h = ops.swiglu_oai(gw[ex] @ x[i] + gb[ex], uw[ex] @ x[i] + ub[ex])
            acc += w[i, j] * (dw[ex] @ h + db[ex])
        np.testing.assert_allclose(out[i], acc, rtol=1e-4, atol=1e-4)


def test_quant_matmul_q8_0_roundtrip() -> None:
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    w = _rng(5).standard_normal((3, 64)).astype(np.float32)
    raw = quantize(w, GGMLQuantizationType.Q8_0)
    x = _rng(6).standard_normal((2, 64)).astype(np.float32)
    deq = ops.dequantize(raw, GGMLQuantizationType.Q8_0, (3, 64))
    assert np.abs(deq - w).max() < np.abs(w).max() / 100  # 8-bit blocks
    np.testing.assert_allclose(ops.quant_matmul(x, raw, 8, (3, 64)), x @ deq.T, rtol=1e-5)


def test_softmax_log_softmax_argmax() -> None:
    x = np.array([[1000.0, 1001.0, 999.0]], np.float32)
    p = ops.softmax(x)
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(ops.log_softmax(x)), p, rtol=1e-6)
    assert ops.argmax(np.array([1.0, 3.0, 3.0])) == 1
