"""The Llama family: ``llama``, ``qwen2`` and ``phi3`` (src/models/{llama,qwen2,phi3}.cpp).

One graph covers all three: RMSNorm, RoPE (NORM pairs for llama, NEOX for qwen2/phi3), GQA
attention, SwiGLU FFN, tied or untied output. Per-architecture differences are in the
tensors: qwen2 has Q/K/V biases; phi3 fuses Q/K/V into ``attn_qkv`` and gate/up into
``ffn_up`` ([2*n_ff, n_embd], gate first: ggml_swiglu's first half); llama may carry
``rope_freqs`` (llama3) and phi3 ``rope_factors_short/long`` (longrope).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orcd_toolkit.backends.base import ForwardBatch, KVCache
from orcd_toolkit.models.base import CausalLM, logits_rows
from orcd_toolkit.models.weights import WeightLoader


@dataclass(slots=True)
class DecoderLayer:
    attn_norm: Any
    wq: Any = None
    wk: Any = None
    wv: Any = None
    wqkv: Any = None
    bq: Any = None
    bk: Any = None
    bv: Any = None
    bqkv: Any = None
    wo: Any = None
    bo: Any = None
    ffn_norm: Any = None
    w_gate: Any = None
    w_up: Any = None
    w_gate_up: Any = None
    w_down: Any = None
    b_gate: Any = None
    b_up: Any = None
    b_down: Any = None


class LlamaFamily(CausalLM):
    """llama / qwen2 / phi3 decoder."""

    architectures = ("llama", "qwen2", "phi3")

    def _load(self, w: WeightLoader) -> None:
        h = self.hparams
        d, q_dim, kv_dim, ff = h.n_embd, h.n_embd_q, h.n_embd_kv, h.n_ff
        self.tok_embd = w.embedding("token_embd.weight", (h.vocab_size, d))
        self.output_norm = w.vector("output_norm.weight", (d,))
        self._load_output(w)
        self.output_b = w.optional_vector("output.bias", (h.vocab_size,))
        self.freq_factors = self._rope_factors(w)
        self.layers: list[DecoderLayer] = []
        for i in range(h.n_layer):
            p = f"blk.{i}."
            layer = DecoderLayer(attn_norm=w.vector(p + "attn_norm.weight", (d,)))
            if w.has(p + "attn_qkv.weight"):
                layer.wqkv = w.matrix(p + "attn_qkv.weight", (q_dim + 2 * kv_dim, d))
                layer.bqkv = w.optional_vector(p + "attn_qkv.bias", (q_dim + 2 * kv_dim,))
            else:
                layer.wq = w.matrix(p + "attn_q.weight", (q_dim, d))
                layer.wk = w.matrix(p + "attn_k.weight", (kv_dim, d))
                layer.wv = w.matrix(p + "attn_v.weight", (kv_dim, d))
                layer.bq = w.optional_vector(p + "attn_q.bias", (q_dim,))
                layer.bk = w.optional_vector(p + "attn_k.bias", (kv_dim,))
                layer.bv = w.optional_vector(p + "attn_v.bias", (kv_dim,))
            layer.wo = w.matrix(p + "attn_output.weight", (d, q_dim))
            layer.bo = w.optional_vector(p + "attn_output.bias", (d,))
            layer.ffn_norm = w.vector(p + "ffn_norm.weight", (d,))
            if self.arch == "phi3":
                layer.w_gate_up = w.matrix(p + "ffn_up.weight", (2 * ff, d))
            else:
                layer.w_gate = w.matrix(p + "ffn_gate.weight", (ff, d))
                layer.w_up = w.matrix(p + "ffn_up.weight", (ff, d))
                layer.b_gate = w.optional_vector(p + "ffn_gate.bias", (ff,))
                layer.b_up = w.optional_vector(p + "ffn_up.bias", (ff,))
            layer.w_down = w.matrix(p + "ffn_down.weight", (d, ff))
            layer.b_down = w.optional_vector(p + "ffn_down.bias", (d,))
            self.layers.append(layer)

    def _rope_factors(self, w: WeightLoader) -> Any:
        """llama_model::get_rope_factors: rope_freqs, else long/short by context length."""
        half = (self.hparams.n_rot // 2,)
        if w.has("rope_freqs.weight"):
            return w.vector("rope_freqs.weight", half)
        name = (
            "rope_factors_long.weight"
            if self.n_ctx > self.hparams.n_ctx_orig_yarn
            else "rope_factors_short.weight"
        )
        return w.optional_vector(name, half)

    def _hidden(self, batch: ForwardBatch, kv_cache: KVCache) -> Any:
        h = self.hparams
        be = self.backend
        t = batch.num_tokens
        hd = h.head_dim
        x = be.embed(self.tok_embd, batch.token_ids)
        residual = None
        for il, layer in enumerate(self.layers):
            if residual is None:
                cur, residual = be.rms_norm(x, layer.attn_norm, h.norm_eps), x
            else:
                cur, residual = be.add_rms_norm(x, residual, layer.attn_norm, h.norm_eps)
            if layer.wqkv is not None:
                qkv = be.linear(cur, layer.wqkv, layer.bqkv)
                q = qkv[:, : h.n_embd_q]
                k = qkv[:, h.n_embd_q : h.n_embd_q + h.n_embd_kv]
                v = qkv[:, h.n_embd_q + h.n_embd_kv :]
            else:
                q = be.linear(cur, layer.wq, layer.bq)
                k = be.linear(cur, layer.wk, layer.bk)
                v = be.linear(cur, layer.wv, layer.bv)
            rope = self.rope_params(il, self.freq_factors)
            q = be.rope(q.reshape(t, h.n_head, hd), batch.positions, rope)
            k = be.rope(k.reshape(t, h.n_head_kv, hd), batch.positions, rope)
            v = v.reshape(t, h.n_head_kv, hd)
            attn = self._attend(il, q, k, v, batch, kv_cache)
            attn = be.linear(attn, layer.wo, layer.bo)
            cur, residual = be.add_rms_norm(attn, residual, layer.ffn_norm, h.norm_eps)
            if layer.w_gate_up is not None:
                gate_up = be.linear(cur, layer.w_gate_up)
                act = be.swiglu(gate_up[:, : h.n_ff], gate_up[:, h.n_ff :])
            else:
                gate = be.linear(cur, layer.w_gate, layer.b_gate)
                up = be.linear(cur, layer.w_up, layer.b_up)
                act = be.swiglu(gate, up)
            x = be.linear(act, layer.w_down, layer.b_down)
        rows = logits_rows(batch)
        x = be.take_rows(x, rows)
        residual = be.take_rows(residual, rows)
        out, _ = be.add_rms_norm(x, residual, self.output_norm, h.norm_eps)
        return out
