"""NumPy reference ops: the oracle every GPU kernel is tested against.

Pure functions on float32 arrays (no state, no in-place mutation except the explicit KV
cache write). Each op follows the semantics of the ggml CPU op that llama.cpp uses for the
same step of the graph, cited per function (paths are inside the llama-cpp-python 0.3.36
sdist, ``vendor/llama.cpp``). Reductions are done in float64 where ggml accumulates in
``ggml_float`` (double) so the reference is at least as accurate as llama.cpp.

Shapes use the "tokens first" convention of a ragged batch: ``T`` flattened tokens of ``B``
sequences, ``H`` heads, ``D`` head size. Weights are in numpy order, ``[out, in]`` (GGUF's
``ne`` reversed), so a linear layer is ``x @ w.T``.

Signatures are a contract with the GPU kernels (engineer E): extend with keyword arguments,
never reorder or rename.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "ROPE_NORM",
    "ROPE_NEOX",
    "SWIGLU_OAI_ALPHA",
    "SWIGLU_OAI_LIMIT",
    "embed",
    "rms_norm",
    "add_rms_norm",
    "layer_norm",
    "add_layer_norm",
    "rope_yarn_corr_dims",
    "rope_cos_sin",
    "rope",
    "matmul",
    "round_activations",
    "ACTIVATION_SCHEMES",
    "ggml_cpu_activation_scheme",
    "LinearWeight",
    "dequantize",
    "quant_matmul",
    "write_kv",
    "paged_attention",
    "silu",
    "swiglu",
    "swiglu_oai",
    "gelu",
    "moe_route",
    "moe_experts",
    "softmax",
    "log_softmax",
    "argmax",
]

# ggml rope modes (ggml.h: GGML_ROPE_TYPE_NORMAL = 0, GGML_ROPE_TYPE_NEOX = 2).
ROPE_NORM = 0
ROPE_NEOX = 2

# gpt-oss clamped SwiGLU constants (src/llama-graph.cpp, LLM_FFN_SWIGLU_OAI_MOE).
SWIGLU_OAI_ALPHA = 1.702
SWIGLU_OAI_LIMIT = 7.0

_F32 = np.float32


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=_F32)


# --------------------------------------------------------------------------- embeddings


def embed(table: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    """Rows of ``table`` [vocab, d] for ``token_ids`` [T] -> [T, d] (ggml_get_rows)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        raise IndexError(f"token id out of range [0, {table.shape[0]}): {ids.min()}..{ids.max()}")
    return _f32(table[ids])


# --------------------------------------------------------------------------- norms


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """RMSNorm over the last axis, then scale by ``weight`` (ggml_rms_norm + ggml_mul).

    ggml computes the mean of squares in double (ggml_compute_forward_rms_norm_f32), then
    ``scale = 1/sqrt(mean + eps)`` in float.
    """
    x64 = np.asarray(x, dtype=np.float64)
    mean = np.mean(x64 * x64, axis=-1, keepdims=True)
    scale = (1.0 / np.sqrt(mean + eps)).astype(_F32)
    out = _f32(x) * scale
    if weight is not None:
        out = out * _f32(weight)
    return _f32(out)


def add_rms_norm(
    x: np.ndarray, residual: np.ndarray, weight: np.ndarray | None, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fused residual add then RMSNorm: returns ``(rms_norm(x + residual), x + residual)``.

    The sum is the new residual stream; GPU kernels fuse both to save one pass over memory.
    """
    summed = _f32(_f32(x) + _f32(residual))
    return rms_norm(summed, weight, eps), summed


def layer_norm(
    x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float
) -> np.ndarray:
    """LayerNorm over the last axis (ggml_norm, then ``* weight + bias``)."""
    x64 = np.asarray(x, dtype=np.float64)
    mean = np.mean(x64, axis=-1, keepdims=True)
    centered = x64 - mean
    var = np.mean(centered * centered, axis=-1, keepdims=True)
    out = _f32(centered) * (1.0 / np.sqrt(var + eps)).astype(_F32)
    if weight is not None:
        out = out * _f32(weight)
    if bias is not None:
        out = out + _f32(bias)
    return _f32(out)


def add_layer_norm(
    x: np.ndarray,
    residual: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fused residual add then LayerNorm: ``(layer_norm(x + residual), x + residual)``."""
    summed = _f32(_f32(x) + _f32(residual))
    return layer_norm(summed, weight, bias, eps), summed


# --------------------------------------------------------------------------- RoPE


def rope_yarn_corr_dims(
    n_dims: int, n_ctx_orig: int, freq_base: float, beta_fast: float, beta_slow: float
) -> tuple[float, float]:
    """YaRN correction range (ggml.c: ggml_rope_yarn_corr_dims), in rotary-pair units."""

    def corr_dim(n_rot: float) -> float:
        return n_dims * math.log(n_ctx_orig / (n_rot * 2 * math.pi)) / (2 * math.log(freq_base))

    start = math.floor(corr_dim(beta_fast))
    end = math.ceil(corr_dim(beta_slow))
    return float(max(0, start)), float(min(n_dims - 1, end))


def rope_inv_freq(
    n_rot: int, freq_base: float, freq_factors: np.ndarray | None = None
) -> np.ndarray:
    """float64 ``base^(-2i/n_rot) / freq_factors[i]`` per rotary pair ``i`` (n_rot even).

    Shared by the reference tables below and the GPU RoPE wrapper, so both rotate by the same
    frequencies. ggml builds theta by repeated float multiplication; computing the power in
    double is within a few ulp of it and deterministic across backends.
    """
    half = n_rot // 2
    inv_freq = (np.float64(freq_base) ** (-2.0 / n_rot)) ** np.arange(half, dtype=np.float64)
    if freq_factors is not None:
        ff = np.asarray(freq_factors, dtype=np.float64)
        if ff.shape[0] < half:
            raise ValueError(f"freq_factors has {ff.shape[0]} entries, need {half}")
        inv_freq = inv_freq / ff[:half]
    return inv_freq


def rope_yarn_ramp(
    n_rot: int, n_ctx_orig: int, freq_base: float, beta_fast: float, beta_slow: float
) -> np.ndarray:
    """YaRN's extrapolation weight per rotary pair (1 - ramp over the correction dims).

    ggml-cpu/ops.cpp rope_yarn_ramp works on i0/2, i0 the even element index: the pair index.
    """
    low, high = rope_yarn_corr_dims(n_rot, n_ctx_orig, freq_base, beta_fast, beta_slow)
    y = (np.arange(n_rot // 2, dtype=np.float64) - low) / max(0.001, high - low)
    return 1.0 - np.minimum(1.0, np.maximum(0.0, y))


def rope_cos_sin(
    positions: np.ndarray,
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
) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin tables [T, n_rot/2] for the rotary pairs, as ggml_rope_cache_init builds them.

    Pair ``i`` has ``theta = pos * base^(-2i/n_rot) / freq_factors[i]``. With YaRN
    (``ext_factor != 0``) the angle mixes the interpolated (``freq_scale * theta``) and the
    extrapolated angle by a ramp over the correction dims, and the magnitude is scaled by
    ``attn_factor * (1 + 0.1 ln(1/freq_scale))`` (ggml-cpu/ops.cpp: rope_yarn).
    """
    if n_rot % 2:
        raise ValueError(f"n_rot must be even, got {n_rot}")
    inv_freq = rope_inv_freq(n_rot, freq_base, freq_factors)
    theta_extrap = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    theta_interp = freq_scale * theta_extrap
    mscale = float(attn_factor)
    if ext_factor != 0.0:
        ramp_mix = rope_yarn_ramp(n_rot, n_ctx_orig, freq_base, beta_fast, beta_slow) * ext_factor
        theta = theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix
        mscale *= 1.0 + 0.1 * math.log(1.0 / freq_scale)
    else:
        theta = theta_interp
    return _f32(np.cos(theta) * mscale), _f32(np.sin(theta) * mscale)


def rope(
    x: np.ndarray,
    positions: np.ndarray,
    n_rot: int,
    mode: int = ROPE_NORM,
    *,
    freq_base: float = 10000.0,
    freq_scale: float = 1.0,
    ext_factor: float = 0.0,
    attn_factor: float = 1.0,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    n_ctx_orig: int = 0,
    freq_factors: np.ndarray | None = None,
) -> np.ndarray:
    """Rotary embedding of ``x`` [T, H, D] at ``positions`` [T] (ggml_rope_ext).

    ``mode`` ROPE_NORM rotates adjacent pairs (x[2i], x[2i+1]) (llama); ROPE_NEOX rotates
    (x[i], x[i + n_rot/2]) (qwen2, phi3, gpt-oss). Only the first ``n_rot`` dims rotate; the
    rest pass through.
    """
    x = _f32(x)
    if x.ndim != 3:
        raise ValueError(f"rope expects [T, H, D], got shape {x.shape}")
    if n_rot > x.shape[-1]:
        raise ValueError(f"n_rot {n_rot} > head size {x.shape[-1]}")
    cos, sin = rope_cos_sin(
        positions,
        n_rot,
        freq_base=freq_base,
        freq_scale=freq_scale,
        ext_factor=ext_factor,
        attn_factor=attn_factor,
        beta_fast=beta_fast,
        beta_slow=beta_slow,
        n_ctx_orig=n_ctx_orig,
        freq_factors=freq_factors,
    )
    cos = cos[:, None, :]
    sin = sin[:, None, :]
    out = x.copy()
    if mode == ROPE_NORM:
        x0 = x[..., 0:n_rot:2]
        x1 = x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = x0 * cos - x1 * sin
        out[..., 1:n_rot:2] = x0 * sin + x1 * cos
    elif mode == ROPE_NEOX:
        half = n_rot // 2
        x0 = x[..., :half]
        x1 = x[..., half:n_rot]
        out[..., :half] = x0 * cos - x1 * sin
        out[..., half:n_rot] = x0 * sin + x1 * cos
    else:
        raise ValueError(f"unsupported rope mode {mode} (ROPE_NORM=0, ROPE_NEOX=2)")
    return out


# --------------------------------------------------------------------------- matmul


def matmul(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Linear layer ``x [..., K] @ w[N, K].T (+ bias[N])`` (ggml_mul_mat; BLAS sgemm).

    When ``w`` is a ``LinearWeight`` whose ``act_scheme`` is not "exact", ``x`` is first
    rounded the way that scheme quantizes a matmul's activations (``round_activations``).
    """
    scheme = getattr(w, "act_scheme", "exact")
    mins = getattr(w, "block_mins", None)
    max_rows = getattr(w, "act_max_rows", None)
    if max_rows is not None and int(np.prod(np.shape(x)[:-1])) > max_rows:
        scheme, mins = "exact", None  # the rounding applies to small batches only
    if mins is not None:
        # Q4_1 / Q5_1 dot Q8_1: llama.cpp adds min * s with s = f16(d * sum(q)) per block;
        # the rounded activations carry d' * sum(q) with d' = f16(d). Add the difference so
        # the min term is rounded as llama.cpp rounds it.
        xr, sum_err = _q8_1_cpu(x)
        out = _f32(xr) @ _f32(w).T + sum_err @ _f32(mins).T
    else:
        xr = round_activations(x, scheme) if scheme != "exact" else x
        out = _f32(xr) @ _f32(w).T
    if bias is not None:
        out = out + _f32(bias)
    return _f32(out)


# How llama.cpp rounds the activations of a matmul before the dot products. ggml does not
# multiply a quantized weight by f32 activations: it converts them to the weight type's
# ``vec_dot_type`` first (type_traits_cpu in ggml-cpu/ggml-cpu.c; quantize_q8_1 in
# ggml-cuda/quantize.cu), then dots integers. The reference can reproduce that rounding so that
# its logits can be compared with llama.cpp's at the level of llama.cpp's own arithmetic, not
# only at the level of the (larger) Q8 activation noise.
#   "exact"  no rounding (the default: the reference is the exact product)
#   "q8_0"   ggml-cpu x86 AVX quantize_row_q8_0 / _q8_1: blocks of 32, amax = max |x|,
#            q = round-half-even(x * (127 / amax)), value q * f16(amax / 127)
#   "q8_K"   quantize_row_q8_K_ref: blocks of 256, m = the x of largest |x| (first one),
#            iscale = -127 / m, q = min(127, round-half-even(iscale * x)), value q * (1 / iscale)
#   "q8_1"   ggml-cuda quantize_q8_1 (what int8 GPU matvec kernels do): blocks of 32,
#            d = amax / 127, q = round-half-away(x / d), value q * f16(d)
#   "f16", "bf16"  the F16 / BF16 weight types: x rounded to that float type
ACTIVATION_SCHEMES = ("exact", "q8_0", "q8_K", "q8_1", "f16", "bf16")


def round_activations(x: np.ndarray, scheme: str) -> np.ndarray:
    """``x`` [..., K] as a quantized matmul sees it under ``scheme`` (ACTIVATION_SCHEMES).

    Returns float32 values (quantize, then dequantize). The Q8 schemes need K to be a multiple
    of their block size (32 or 256), as ggml does.
    """
    x = _f32(x)
    if scheme == "exact":
        return x
    if scheme == "f16":
        return x.astype(np.float16).astype(_F32)
    if scheme == "bf16":
        # GGML_FP32_TO_BF16: round to nearest even on the upper 16 bits; NaN stays NaN
        u = np.ascontiguousarray(x).view(np.uint32).astype(np.uint64)
        r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
        out = r.astype(np.uint32).view(_F32)
        return np.where(np.isnan(x), x, out).astype(_F32)
    if scheme not in ("q8_0", "q8_K", "q8_1"):
        raise ValueError(f"unknown activation scheme {scheme!r}; expected one of {ACTIVATION_SCHEMES}")
    block = 256 if scheme == "q8_K" else 32
    k = x.shape[-1]
    if k % block:
        raise ValueError(f"{scheme} activations need a row length divisible by {block}, got {k}")
    b = x.reshape(-1, k // block, block)
    with np.errstate(divide="ignore", invalid="ignore"):
        if scheme == "q8_K":
            idx = np.abs(b).argmax(-1)[..., None]  # first index of the largest |x|
            m = np.take_along_axis(b, idx, -1)
            iscale = np.where(m != 0, _F32(-127.0) / m, _F32(0)).astype(_F32)
            # via int32 as ggml's int8 q: a zero is +0, so 0 * negative d gives -0 like C
            q = np.minimum(np.rint(iscale * b), 127).astype(np.int32).astype(_F32)
            d = np.where(m != 0, _F32(1.0) / iscale, _F32(0)).astype(_F32)
            out = (q * d).astype(_F32)
        elif scheme == "q8_0":
            q, d = _q8_0_cpu_blocks(b)
            out = (q * d.astype(np.float16).astype(_F32)).astype(_F32)
        else:
            amax = np.abs(b).max(-1, keepdims=True)
            d = (amax / _F32(127.0)).astype(_F32)
            v = np.where(amax != 0, b / d, _F32(0)).astype(_F32).astype(np.float64)
            q = np.sign(v) * np.floor(np.abs(v) + 0.5)  # roundf: halves away from zero
            q = q.astype(np.int32).astype(_F32)
            out = (q * d.astype(np.float16).astype(_F32)).astype(_F32)
    return out.reshape(x.shape)


def _q8_0_cpu_blocks(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml-cpu x86 quantize_row_q8_0 / _q8_1 of blocks ``b`` [..., 32]: the q values (as
    f32; via int32 so a zero is +0 like C's int8) and the f32 scale d [..., 1]."""
    amax = np.abs(b).max(-1, keepdims=True)
    d = (amax / _F32(127.0)).astype(_F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(amax != 0, _F32(127.0) / amax, _F32(0)).astype(_F32)
    return np.rint(b * inv).astype(np.int32).astype(_F32), d


def _q8_1_cpu(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One ggml-cpu Q8_1 quantization of ``x`` [..., K]: the rounded values (those of
    "q8_0") and, per 32-block, ``f16(d * sum(q)) - f16(d) * sum(q)``: the rounding of the
    block sum ``s`` that the min term of a Q4_1 / Q5_1 dot uses."""
    x = _f32(x)
    nb = x.shape[-1] // 32
    q, d = _q8_0_cpu_blocks(x.reshape(-1, nb, 32))
    d16 = d.astype(np.float16).astype(_F32)
    qsum = q.sum(-1, keepdims=True)
    err = (d * qsum).astype(np.float16).astype(_F32) - d16 * qsum
    values = (q * d16).astype(_F32).reshape(x.shape)
    return values, err.reshape(x.shape[:-1] + (nb,)).astype(_F32)


def ggml_cpu_activation_scheme(qtype: int) -> str:
    """The ``round_activations`` scheme llama.cpp's CPU backend applies to the activations
    multiplied by a weight of ggml type ``qtype`` (its ``vec_dot_type``)."""
    from orcd_toolkit.gguf.types import GGMLType

    qt = GGMLType(int(qtype))
    if qt == GGMLType.F32:
        return "exact"
    if qt == GGMLType.F16:
        return "f16"
    if qt == GGMLType.BF16:
        return "bf16"
    if qt in (GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K):
        return "q8_K"
    # Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, MXFP4: Q8_0 / Q8_1 (the same q values and scale; Q8_1's
    # extra f16 block sum only feeds the min term of Q4_1 / Q5_1, see docs/models.md)
    return "q8_0"


class LinearWeight(np.ndarray):
    """A dequantized f32 weight matrix that remembers how its activations are rounded.

    An ndarray subclass so that the models' slicing (fused QKV, expert stacks) keeps the
    tag; ``matmul`` reads ``act_scheme`` and strips the subclass from its result.
    """

    act_scheme: str
    block_mins: np.ndarray | None
    act_max_rows: int | None

    def __new__(
        cls,
        array: np.ndarray,
        act_scheme: str,
        block_mins: np.ndarray | None = None,
        act_max_rows: int | None = None,
    ) -> LinearWeight:
        """``act_max_rows``: round only when x has at most this many rows (None: always), as
        a GPU that uses int8 kernels for decode-sized batches only."""
        if act_scheme not in ACTIVATION_SCHEMES:
            raise ValueError(f"unknown activation scheme {act_scheme!r}")
        obj = np.asarray(array, dtype=_F32).view(cls)
        obj.act_scheme = act_scheme
        obj.act_max_rows = act_max_rows
        if block_mins is not None and block_mins.shape[:-1] != obj.shape[:-1]:
            raise ValueError(f"block_mins {block_mins.shape} do not match rows of {obj.shape}")
        obj.block_mins = block_mins
        return obj

    def __array_finalize__(self, obj: object) -> None:
        self.act_scheme = getattr(obj, "act_scheme", "exact")
        self.act_max_rows = getattr(obj, "act_max_rows", None)
        self.block_mins = None  # valid only for the array it was made for (see __getitem__)

    def __getitem__(self, key: object) -> Any:
        out = super().__getitem__(key)
        # an expert of a stack (w[e]) keeps its own rows' block minima; any other view
        # drops them (the models never slice a weight otherwise)
        if (
            isinstance(out, LinearWeight)
            and self.block_mins is not None
            and isinstance(key, int | np.integer)
        ):
            out.block_mins = self.block_mins[key]
        return out


def dequantize(raw: np.ndarray, qtype: int, shape: tuple[int, ...]) -> np.ndarray:
    """Raw GGUF blocks (uint8 [..., row_bytes]) of ggml type ``qtype`` -> float32 ``shape``.

    ``gguf.quants.dequantize`` defines the bit-exact meaning of every type (DESIGN.md §5).
    """
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as _gguf_dequantize

    qt = GGMLQuantizationType(int(qtype))
    data = np.ascontiguousarray(raw)
    if qt == GGMLQuantizationType.F32:
        out = data.view(np.float32)
    elif qt == GGMLQuantizationType.F16:
        out = data.view(np.float16).astype(np.float32)
    else:
        out = _gguf_dequantize(data, qt)
    return _f32(out).reshape(shape)


def quant_matmul(
    x: np.ndarray,
    raw: np.ndarray,
    qtype: int,
    shape: tuple[int, int],
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """``x @ W.T`` where ``W`` [N, K] is given as raw GGUF blocks of type ``qtype``.

    The reference dequantizes exactly and multiplies in f32; llama.cpp's CPU path instead
    quantizes ``x`` to Q8 per block first, which is one source of the measured logit gap.
    """
    return matmul(x, dequantize(raw, qtype, shape), bias)


# --------------------------------------------------------------------------- attention


def write_kv(
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    slot_mapping: np.ndarray,
) -> None:
    """Store new K/V [T, Hkv, D] into the caches [num_blocks, block_size, Hkv, D] in place.

    ``slot_mapping[t] = block_id * block_size + offset``; a negative slot skips the token
    (padding), as in vLLM's reshape_and_cache.
    """
    slots = np.asarray(slot_mapping, dtype=np.int64)
    keep = slots >= 0
    block_size = k_cache.shape[1]
    blocks, offsets = np.divmod(slots[keep], block_size)
    k_cache[blocks, offsets] = k[keep]
    v_cache[blocks, offsets] = v[keep]


def paged_attention(
    q: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    block_tables: np.ndarray,
    seq_starts: np.ndarray,
    context_lens: np.ndarray,
    *,
    scale: float,
    sinks: np.ndarray | None = None,
    sliding_window: int = 0,
) -> np.ndarray:
    """Causal attention of the new tokens of a ragged batch over a paged KV cache.

    q: [T, Hq, D]; caches: [num_blocks, block_size, Hkv, D] (already holding this step's
    K/V); block_tables: [B, max_blocks] (-1 padded); seq_starts: [B+1] offsets of each
    sequence's new tokens in q; context_lens: [B] KV length after this step. The i-th new
    token of a sequence with n new tokens sits at KV index ``context_len - n + i`` and sees
    indices ``j <= that``; with ``sliding_window = W > 0`` also only ``qpos - j < W``
    (llama-hparams.h, LLAMA_SWA_TYPE_STANDARD masks ``p1 - p0 >= n_swa``).
    GQA: query head ``h`` reads KV head ``h // (Hq // Hkv)``.
    ``sinks`` [Hq]: one extra logit per head that joins the softmax max and denominator but
    carries no value (ggml_soft_max_add_sinks; gpt-oss). ``scale`` multiplies q·k.
    Returns [T, Hq, D].
    """
    q = _f32(q)
    num_tokens, n_q_heads, head_dim = q.shape
    n_kv_heads = k_cache.shape[2]
    if n_q_heads % n_kv_heads:
        raise ValueError(f"{n_q_heads} query heads not a multiple of {n_kv_heads} KV heads")
    group = n_q_heads // n_kv_heads
    block_size = k_cache.shape[1]
    starts = np.asarray(seq_starts, dtype=np.int64)
    lens = np.asarray(context_lens, dtype=np.int64)
    tables = np.asarray(block_tables, dtype=np.int64)
    out = np.zeros((num_tokens, n_q_heads, v_cache.shape[3]), dtype=_F32)
    for b in range(len(lens)):
        s0, s1 = int(starts[b]), int(starts[b + 1])
        n_new = s1 - s0
        if n_new == 0:
            continue
        ctx = int(lens[b])
        if n_new > ctx:
            raise ValueError(f"sequence {b}: {n_new} new tokens but context_len {ctx}")
        n_blocks = -(-ctx // block_size)
        ids = tables[b, :n_blocks]
        if (ids < 0).any():
            raise ValueError(f"sequence {b}: block table has no block for {ctx} tokens")
        keys = k_cache[ids].reshape(-1, n_kv_heads, head_dim)[:ctx]
        vals = v_cache[ids].reshape(-1, n_kv_heads, v_cache.shape[3])[:ctx]
        # [Hkv, group, n_new, D] x [Hkv, ctx, D] -> [Hkv, group, n_new, ctx]
        qh = q[s0:s1].reshape(n_new, n_kv_heads, group, head_dim).transpose(1, 2, 0, 3)
        kh = _f32(keys).transpose(1, 0, 2)
        vh = _f32(vals).transpose(1, 0, 2)
        scores = np.matmul(qh, kh[:, None].transpose(0, 1, 3, 2)) * _F32(scale)
        qpos = ctx - n_new + np.arange(n_new)
        kpos = np.arange(ctx)
        masked = kpos[None, :] > qpos[:, None]
        if sliding_window > 0:
            masked |= (qpos[:, None] - kpos[None, :]) >= sliding_window
        scores = np.where(masked[None, None], -np.inf, scores).astype(np.float64)
        row_max = scores.max(axis=-1, keepdims=True)
        if sinks is not None:
            sk = np.asarray(sinks, dtype=np.float64).reshape(n_kv_heads, group, 1, 1)
            row_max = np.maximum(row_max, sk)
        probs = np.exp(scores - row_max)
        denom = probs.sum(axis=-1, keepdims=True)
        if sinks is not None:
            denom = denom + np.exp(sk - row_max)
        probs = _f32(probs / denom)
        ctx_out = np.matmul(probs, vh[:, None])  # [Hkv, group, n_new, Dv]
        out[s0:s1] = ctx_out.transpose(2, 0, 1, 3).reshape(n_new, n_q_heads, -1)
    return out


# --------------------------------------------------------------------------- activations


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x) (ggml_silu_f32: x / (1 + exp(-x)))."""
    x = _f32(x)
    with np.errstate(over="ignore"):
        return _f32(x / (_F32(1.0) + np.exp(-x)))


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up (ggml_swiglu_split; for a fused [.., 2F] tensor gate is the first half)."""
    return _f32(silu(gate) * _f32(up))


def swiglu_oai(
    gate: np.ndarray,
    up: np.ndarray,
    alpha: float = SWIGLU_OAI_ALPHA,
    limit: float = SWIGLU_OAI_LIMIT,
) -> np.ndarray:
    """gpt-oss clamped SwiGLU (ggml-cpu/ops.cpp: ggml_compute_forward_swiglu_oai_f32).

    ``x = min(gate, limit)``, ``y = clamp(up, -limit, limit)``,
    ``out = x * sigmoid(alpha * x) * (y + 1)``.
    """
    x = np.minimum(_f32(gate), _F32(limit))
    y = np.clip(_f32(up), -_F32(limit), _F32(limit))
    with np.errstate(over="ignore"):
        glu = x / (_F32(1.0) + np.exp(_F32(alpha) * -x))
    return _f32(glu * (y + _F32(1.0)))


_SQRT_2_OVER_PI = 0.79788456080286535587989211986876
_GELU_COEF_A = 0.044715


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (ggml-cpu/vec.h: ggml_gelu_f32).

    Note: ggml's CPU build looks this up in an f16 table (GGML_GELU_FP16), so llama.cpp's
    CPU result differs from this exact form by f16 rounding of input and output.
    """
    x = _f32(x)
    inner = _F32(_SQRT_2_OVER_PI) * x * (_F32(1.0) + _F32(_GELU_COEF_A) * x * x)
    return _f32(_F32(0.5) * x * (_F32(1.0) + np.tanh(inner)))


# --------------------------------------------------------------------------- mixture of experts


def moe_route(router_logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` experts per token, weights = softmax over the selected logits only.

    This is gpt-oss's gating (LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX_WEIGHT in
    llama-graph.cpp build_moe_ffn). Returns ``(ids int32 [T, k], weights f32 [T, k])``,
    ids ordered by descending logit (ties: lower expert id first).
    """
    logits = _f32(router_logits)
    n_expert = logits.shape[-1]
    if not 0 < k <= n_expert:
        raise ValueError(f"k={k} must be in [1, {n_expert}]")
    order = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    picked = np.take_along_axis(logits, order, axis=-1)
    return order.astype(np.int32), softmax(picked)


def moe_experts(
    x: np.ndarray,
    expert_ids: np.ndarray,
    expert_weights: np.ndarray,
    gate_w: np.ndarray,
    up_w: np.ndarray,
    down_w: np.ndarray,
    *,
    gate_b: np.ndarray | None = None,
    up_b: np.ndarray | None = None,
    down_b: np.ndarray | None = None,
    activation: str = "swiglu_oai",
) -> np.ndarray:
    """Weighted sum of the selected experts' FFNs for each token.

    x [T, d]; expert_ids / expert_weights [T, k]; gate_w, up_w [E, F, d]; down_w [E, d, F];
    biases [E, F] / [E, d]. ``activation`` is "swiglu_oai" (gpt-oss) or "swiglu".
    out[t] = sum_j w[t,j] * (down_e(act(gate_e(x_t), up_e(x_t))) + down_b[e]).
    """
    x = _f32(x)
    ids = np.asarray(expert_ids, dtype=np.int64)
    weights = _f32(expert_weights)
    if activation == "swiglu_oai":
        act = swiglu_oai
    elif activation == "swiglu":
        act = swiglu
    else:
        raise ValueError(f"unsupported MoE activation {activation!r}")
    out = np.zeros((x.shape[0], down_w.shape[1]), dtype=np.float32)
    for e in np.unique(ids):
        tok, slot = np.nonzero(ids == e)
        xe = x[tok]
        g = matmul(xe, gate_w[e], None if gate_b is None else gate_b[e])
        u = matmul(xe, up_w[e], None if up_b is None else up_b[e])
        y = matmul(act(g, u), down_w[e], None if down_b is None else down_b[e])
        np.add.at(out, tok, y * weights[tok, slot][:, None])
    return out


# --------------------------------------------------------------------------- output


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (sum in float64 like ggml_vec_soft_max_f32)."""
    x64 = np.asarray(x, dtype=np.float64)
    e = np.exp(x64 - x64.max(axis=axis, keepdims=True))
    return _f32(e / e.sum(axis=axis, keepdims=True))


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(softmax(x)) computed as x - max - log(sum(exp(x - max))), in float64."""
    x64 = np.asarray(x, dtype=np.float64)
    shifted = x64 - x64.max(axis=axis, keepdims=True)
    return _f32(shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True)))


def argmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Index of the largest value (first on ties, as llama.cpp's greedy sampler)."""
    return np.argmax(np.asarray(x), axis=axis).astype(np.int32)
