"""One Qwen2-style decoder layer at batch 1 built from the kernel library.

Mixed Numba (norms, RoPE + KV write, SwiGLU) and CuPy (quantized matvec, flash attention)
launches on one stream with every buffer preallocated: exactly the shape of a captured
decode step. Used by the graph-capture test and by scripts/kernel_graph.py. Weights are
random GGUF blocks of the real file's types (Qwen2.5-0.5B Q4_K_M: Q5_0 attention and
gate/up, Q8_0 V, Q6_K down), shapes from the real model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from orcd_toolkit.backends.cpu import ops
from orcd_toolkit.gguf.quants import random_blocks
from orcd_toolkit.gguf.types import GGMLType
from orcd_toolkit.kernels import activations, attention, norms, quant, rope


@dataclass
class LayerConfig:
    d_model: int = 896
    n_heads: int = 14
    n_kv_heads: int = 2
    head_dim: int = 64
    d_ff: int = 4864
    context_len: int = 300  # KV length after this step (the new token included)
    block_size: int = 16
    rope_base: float = 1e6
    eps: float = 1e-6


class DecoderLayerDemo:
    """Buffers and weights of one layer; ``step()`` launches the whole layer on ``stream``."""

    def __init__(self, cp: Any, stream: Any, cfg: LayerConfig | None = None, seed: int = 0) -> None:
        from numba import cuda

        self.cp, self.stream = cp, stream
        cfg = self.cfg = cfg or LayerConfig()
        rng = np.random.default_rng(seed)
        d, hq, hkv, hd, f = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff

        def weight(qt: GGMLType, rows: int, cols: int) -> quant.QuantWeight:
            return quant.QuantWeight(cp.asarray(random_blocks(qt, (rows, cols), rng)), qt, rows, cols)

        def vec(n: int, mean: float = 0.0, std: float = 0.1) -> Any:
            return cp.asarray(rng.normal(mean, std, n).astype(np.float32))

        self.wq, self.wk = weight(GGMLType.Q5_0, hq * hd, d), weight(GGMLType.Q5_0, hkv * hd, d)
        self.wv, self.wo = weight(GGMLType.Q8_0, hkv * hd, d), weight(GGMLType.Q5_0, d, hq * hd)
        self.wg, self.wu = weight(GGMLType.Q5_0, f, d), weight(GGMLType.Q5_0, f, d)
        self.wd = weight(GGMLType.Q6_K, d, f)
        self.bq, self.bk, self.bv = vec(hq * hd), vec(hkv * hd), vec(hkv * hd)
        self.attn_norm, self.ffn_norm = vec(d, 1.0), vec(d, 1.0)
        nblk = -(-cfg.context_len // cfg.block_size) + 2
        self.k_cache = cp.asarray(rng.normal(0, 1, (nblk, cfg.block_size, hkv, hd)).astype(np.float16))
        self.v_cache = cp.asarray(rng.normal(0, 1, (nblk, cfg.block_size, hkv, hd)).astype(np.float16))
        table = rng.permutation(nblk).astype(np.int32)[None, : nblk - 2]
        pos = cfg.context_len - 1
        slot = table[0, pos // cfg.block_size] * cfg.block_size + pos % cfg.block_size
        self.block_tables = cp.asarray(table)
        self.seq_starts = cp.asarray(np.array([0, 1], np.int32))
        self.context_lens = cp.asarray(np.array([cfg.context_len], np.int32))
        self.positions = cp.asarray(np.array([pos], np.int32))
        self.slot_mapping = cp.asarray(np.array([slot], np.int32))
        freqs, self.mscale = rope.rope_frequencies(hd, freq_base=cfg.rope_base)
        self.freqs = cp.asarray(freqs)
        # inputs and activations
        self.x_in = cp.asarray(rng.normal(0, 1, (1, d)).astype(np.float32))
        self.residual = cp.empty((1, d), cp.float32)  # x + attn out, then + ffn out
        self.x = cp.empty((1, d), cp.float32)
        self.h = cp.empty((1, d), cp.float32)
        self.q = cp.empty((1, hq * hd), cp.float32)
        self.k = cp.empty((1, hkv * hd), cp.float32)
        self.v = cp.empty((1, hkv * hd), cp.float32)
        self.attn = cp.empty((1, hq, hd), cp.float32)
        self.o = cp.empty((1, d), cp.float32)
        self.g = cp.empty((1, f), cp.float32)
        self.u = cp.empty((1, f), cp.float32)
        self.act = cp.empty((1, f), cp.float32)
        self.out = cp.empty((1, d), cp.float32)
        self.zero = cp.zeros((1, d), cp.float32)
        self.shape = attention.AttentionShape(1, 1, 1, cfg.context_len, hq, hkv, hd)
        self.flash = attention.FlashAttention()
        self.ws = cp.empty(self.flash.workspace_shape(self.shape), cp.float32)
        # Numba views converted once (DESIGN.md section 9)
        nb = cuda.as_cuda_array
        self.nb = {name: nb(getattr(self, name)) for name in (
            "x_in", "zero", "x", "residual", "h", "o", "attn_norm", "ffn_norm", "positions",
            "freqs", "slot_mapping", "k_cache", "v_cache", "g", "u", "act", "out")}
        self.nb["q3"] = nb(self.q.reshape(1, hq, hd))
        self.nb["k3"] = nb(self.k.reshape(1, hkv, hd))
        self.nb["v3"] = nb(self.v.reshape(1, hkv, hd))
        # the uploads above ran on the default stream; ``stream`` may be non-blocking and
        # would not wait for them
        cp.cuda.Device().synchronize()

    def step(self) -> None:
        """The layer: norm -> qkv -> rope+KV write -> attention -> o -> add+norm -> FFN -> add."""
        c, s, nb = self.cfg, self.stream, self.nb
        norms.rms_norm(nb["h"], nb["x_in"], nb["attn_norm"], c.eps, residual=nb["zero"],
                       residual_out=nb["residual"], stream=s)
        quant.matvec(self.q, self.h, self.wq, self.bq, stream=s)
        quant.matvec(self.k, self.h, self.wk, self.bk, stream=s)
        quant.matvec(self.v, self.h, self.wv, self.bv, stream=s)
        rope.rope_kv_write(nb["q3"], nb["k3"], nb["v3"], nb["positions"], nb["freqs"], self.mscale,
                           ops.ROPE_NEOX, slot_mapping=nb["slot_mapping"], k_cache=nb["k_cache"],
                           v_cache=nb["v_cache"], stream=s)
        self.flash(self.attn, self.q.reshape(1, c.n_heads, c.head_dim), self.k_cache, self.v_cache,
                   self.block_tables, self.seq_starts, self.context_lens, self.shape, self.ws,
                   scale=1.0 / np.sqrt(c.head_dim), stream=s)
        quant.matvec(self.o, self.attn.reshape(1, -1), self.wo, stream=s)
        norms.rms_norm(nb["x"], nb["o"], nb["ffn_norm"], c.eps, residual=nb["residual"],
                       residual_out=nb["residual"], stream=s)
        quant.matvec(self.g, self.x, self.wg, stream=s)
        quant.matvec(self.u, self.x, self.wu, stream=s)
        activations.swiglu(nb["act"], nb["g"], nb["u"], stream=s)
        quant.matvec(self.out, self.act, self.wd, stream=s)
        activations.add(nb["out"], nb["out"], nb["residual"], stream=s)

    @property
    def num_kernels(self) -> int:
        return 14  # norm, 3 qkv, rope, flash+combine, o, norm, gate, up, swiglu, down, add
