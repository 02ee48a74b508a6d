"""``gpt-oss`` (src/models/openai-moe.cpp): MoE decoder with attention sinks and alternating
sliding-window attention.

Per layer: RMSNorm -> Q/K/V (biased) -> YaRN NEOX RoPE -> attention with per-head sink logits
(sliding window on even layers, llama-hparams set_swa_pattern(2)) -> biased output projection
-> residual -> ``post_attention_norm`` -> router (biased, top-k, softmax over the selected) ->
experts with the clamped SwiGLU (alpha 1.702, limit 7) and biases -> residual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orcd_toolkit.backends.base import ForwardBatch, KVCache
from orcd_toolkit.models.base import CausalLM, logits_rows
from orcd_toolkit.models.weights import WeightLoader


@dataclass(slots=True)
class GptOssLayer:
    attn_norm: Any
    wq: Any
    bq: Any
    wk: Any
    bk: Any
    wv: Any
    bv: Any
    wo: Any
    bo: Any
    sinks: Any
    post_norm: Any
    router: Any
    router_b: Any
    gate_exps: Any
    gate_exps_b: Any
    up_exps: Any
    up_exps_b: Any
    down_exps: Any
    down_exps_b: Any


class GptOss(CausalLM):
    architectures = ("gpt-oss",)

    def _load(self, w: WeightLoader) -> None:
        h = self.hparams
        d, q_dim, kv_dim = h.n_embd, h.n_embd_q, h.n_embd_kv
        e, f = h.n_expert, h.n_ff_exp
        self.tok_embd = w.embedding("token_embd.weight", (h.vocab_size, d))
        self.output_norm = w.vector("output_norm.weight", (d,))
        # gpt-oss requires an untied output (openai-moe.cpp creates it without NOT_REQUIRED)
        self.output = w.matrix("output.weight", (h.vocab_size, d))
        self.layers = []
        for i in range(h.n_layer):
            p = f"blk.{i}."
            self.layers.append(
                GptOssLayer(
                    attn_norm=w.vector(p + "attn_norm.weight", (d,)),
                    wq=w.matrix(p + "attn_q.weight", (q_dim, d)),
                    bq=w.vector(p + "attn_q.bias", (q_dim,)),
                    wk=w.matrix(p + "attn_k.weight", (kv_dim, d)),
                    bk=w.vector(p + "attn_k.bias", (kv_dim,)),
                    wv=w.matrix(p + "attn_v.weight", (kv_dim, d)),
                    bv=w.vector(p + "attn_v.bias", (kv_dim,)),
                    wo=w.matrix(p + "attn_output.weight", (d, q_dim)),
                    bo=w.vector(p + "attn_output.bias", (d,)),
                    sinks=w.vector(p + "attn_sinks.weight", (h.n_head,)),
                    post_norm=w.vector(p + "post_attention_norm.weight", (d,)),
                    router=w.matrix(p + "ffn_gate_inp.weight", (e, d)),
                    router_b=w.vector(p + "ffn_gate_inp.bias", (e,)),
                    gate_exps=w.matrix(p + "ffn_gate_exps.weight", (e, f, d)),
                    gate_exps_b=w.vector(p + "ffn_gate_exps.bias", (e, f)),
                    up_exps=w.matrix(p + "ffn_up_exps.weight", (e, f, d)),
                    up_exps_b=w.vector(p + "ffn_up_exps.bias", (e, f)),
                    down_exps=w.matrix(p + "ffn_down_exps.weight", (e, d, f)),
                    down_exps_b=w.vector(p + "ffn_down_exps.bias", (e, d)),
                )
            )

    def _hidden(self, batch: ForwardBatch, kv_cache: KVCache) -> Any:
        h = self.hparams
        be = self.backend
        t, hd = batch.num_tokens, h.head_dim
        x = be.embed(self.tok_embd, batch.token_ids)
        residual = None
        for il, layer in enumerate(self.layers):
            if residual is None:
                cur, residual = be.rms_norm(x, layer.attn_norm, h.norm_eps), x
            else:
                cur, residual = be.add_rms_norm(x, residual, layer.attn_norm, h.norm_eps)
            rope = self.rope_params(il)
            q = be.rope(
                be.linear(cur, layer.wq, layer.bq).reshape(t, h.n_head, hd), batch.positions, rope
            )
            k = be.rope(
                be.linear(cur, layer.wk, layer.bk).reshape(t, h.n_head_kv, hd),
                batch.positions,
                rope,
            )
            v = be.linear(cur, layer.wv, layer.bv).reshape(t, h.n_head_kv, hd)
            window = h.sliding_window if h.swa_layers[il] else 0
            attn = self._attend(
                il, q, k, v, batch, kv_cache, sinks=layer.sinks, sliding_window=window
            )
            attn = be.linear(attn, layer.wo, layer.bo)
            cur, residual = be.add_rms_norm(attn, residual, layer.post_norm, h.norm_eps)
            logits = be.linear(cur, layer.router, layer.router_b)
            x = be.moe(
                cur,
                logits,
                h.n_expert_used,
                layer.gate_exps,
                layer.up_exps,
                layer.down_exps,
                gate_b=layer.gate_exps_b,
                up_b=layer.up_exps_b,
                down_b=layer.down_exps_b,
                activation="swiglu_oai",
            )
        rows = logits_rows(batch)
        out, _ = be.add_rms_norm(
            be.take_rows(x, rows), be.take_rows(residual, rows), self.output_norm, h.norm_eps
        )
        return out
