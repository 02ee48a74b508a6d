"""``gpt2``: learned absolute positions, LayerNorm, GELU, MHA with fused QKV
(src/models/gpt2.cpp). The GPT-style adapter of the design: no RoPE, every projection biased.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orcd_toolkit.backends.base import ForwardBatch, KVCache
from orcd_toolkit.models.base import CausalLM, logits_rows
from orcd_toolkit.models.errors import InvalidMetadata
from orcd_toolkit.models.weights import WeightLoader


@dataclass(slots=True)
class GPT2Layer:
    attn_norm: Any
    attn_norm_b: Any
    wqkv: Any
    bqkv: Any
    wo: Any
    bo: Any
    ffn_norm: Any
    ffn_norm_b: Any
    w_up: Any
    b_up: Any
    w_down: Any
    b_down: Any


class GPT2(CausalLM):
    architectures = ("gpt2",)

    def _load(self, w: WeightLoader) -> None:
        h = self.hparams
        if h.n_head_kv != h.n_head:
            raise InvalidMetadata(
                "gpt2 uses multi-head attention: head_count_kv must equal head_count"
            )
        d, ff = h.n_embd, h.n_ff
        self.tok_embd = w.embedding("token_embd.weight", (h.vocab_size, d))
        self.pos_embd = w.embedding("position_embd.weight", (h.n_ctx_train, d))
        self.output_norm = w.vector("output_norm.weight", (d,))
        self.output_norm_b = w.vector("output_norm.bias", (d,))
        self._load_output(w)
        self.layers = []
        for i in range(h.n_layer):
            p = f"blk.{i}."
            self.layers.append(
                GPT2Layer(
                    attn_norm=w.vector(p + "attn_norm.weight", (d,)),
                    attn_norm_b=w.vector(p + "attn_norm.bias", (d,)),
                    wqkv=w.matrix(p + "attn_qkv.weight", (3 * d, d)),
                    bqkv=w.vector(p + "attn_qkv.bias", (3 * d,)),
                    wo=w.matrix(p + "attn_output.weight", (d, d)),
                    bo=w.vector(p + "attn_output.bias", (d,)),
                    ffn_norm=w.vector(p + "ffn_norm.weight", (d,)),
                    ffn_norm_b=w.vector(p + "ffn_norm.bias", (d,)),
                    w_up=w.matrix(p + "ffn_up.weight", (ff, d)),
                    b_up=w.vector(p + "ffn_up.bias", (ff,)),
                    w_down=w.matrix(p + "ffn_down.weight", (d, ff)),
                    b_down=w.vector(p + "ffn_down.bias", (d,)),
                )
            )

    def _hidden(self, batch: ForwardBatch, kv_cache: KVCache) -> Any:
        h = self.hparams
        be = self.backend
        t, d, hd = batch.num_tokens, h.n_embd, h.head_dim
        if t and int(batch.positions.max()) >= h.n_ctx_train:
            raise ValueError(f"gpt2 has learned positions up to {h.n_ctx_train - 1}")
        x = be.add(
            be.embed(self.tok_embd, batch.token_ids), be.embed(self.pos_embd, batch.positions)
        )
        residual = None
        for il, layer in enumerate(self.layers):
            if residual is None:
                cur, residual = be.layer_norm(x, layer.attn_norm, layer.attn_norm_b, h.norm_eps), x
            else:
                cur, residual = be.add_layer_norm(
                    x, residual, layer.attn_norm, layer.attn_norm_b, h.norm_eps
                )
            qkv = be.linear(cur, layer.wqkv, layer.bqkv)
            q = qkv[:, :d].reshape(t, h.n_head, hd)
            k = qkv[:, d : 2 * d].reshape(t, h.n_head, hd)
            v = qkv[:, 2 * d :].reshape(t, h.n_head, hd)
            attn = be.linear(self._attend(il, q, k, v, batch, kv_cache), layer.wo, layer.bo)
            cur, residual = be.add_layer_norm(
                attn, residual, layer.ffn_norm, layer.ffn_norm_b, h.norm_eps
            )
            x = be.linear(
                be.gelu(be.linear(cur, layer.w_up, layer.b_up)), layer.w_down, layer.b_down
            )
        rows = logits_rows(batch)
        out, _ = be.add_layer_norm(
            be.take_rows(x, rows),
            be.take_rows(residual, rows),
            self.output_norm,
            self.output_norm_b,
            h.norm_eps,
        )
        return out
