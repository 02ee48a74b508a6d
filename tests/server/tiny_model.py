"""A tiny random-weight llama GGUF with a real vocabulary, for fast end-to-end server tests.

Real GGUF file, real tokenizer (GPT-2's byte-level BPE vocabulary from llama.cpp's vocab-only
test file), real model code, real engine, real ``orcd serve``: only the weights are random
and the shapes small, so a step takes milliseconds on the NumPy backend and the server's
timing properties (cancel, disconnect, drain) can be checked against the real engine.
Random weights sample arbitrary byte tokens, which exercises UTF-8 hold-back in the stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# A minimal chat template so ``messages`` work (the GPT-2 vocabulary has none).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def write_tiny_llama(path: Path, vocab_gguf: Path, *, n_embd: int = 32, n_layer: int = 2,
                     n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128, n_ctx: int = 2048,
                     seed: int = 0) -> Path:
    """Write the model to ``path`` (deterministic for a given seed)."""
    from orcd_toolkit import gguf
    from orcd_toolkit.gguf.types import GGMLType
    from orcd_toolkit.gguf.writer import MetaValue, TensorData, write_gguf

    vocab = gguf.load(vocab_gguf).metadata
    tokens = list(vocab["tokenizer.ggml.tokens"])
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head

    def f32(*shape: int, scale: float = 0.08) -> TensorData:
        return TensorData.from_values(rng.standard_normal(shape).astype(np.float32) * scale,
                                      GGMLType.F32)

    tensors: dict[str, TensorData] = {
        # Q8_0 keeps the big matrices small on disk; an untied, small-scale output makes the
        # next-token distribution flat enough that seeds matter
        "token_embd.weight": TensorData.from_values(
            rng.standard_normal((n_vocab, n_embd)).astype(np.float32) * 0.5, GGMLType.Q8_0),
        "output.weight": TensorData.from_values(
            rng.standard_normal((n_vocab, n_embd)).astype(np.float32) * 0.3, GGMLType.F16),
        "output_norm.weight": TensorData.from_values(np.ones(n_embd, np.float32), GGMLType.F32),
    }
    for i in range(n_layer):
        p = f"blk.{i}."
        tensors[p + "attn_norm.weight"] = TensorData.from_values(np.ones(n_embd, np.float32),
                                                                 GGMLType.F32)
        tensors[p + "attn_q.weight"] = f32(n_head * head_dim, n_embd)
        tensors[p + "attn_k.weight"] = f32(n_head_kv * head_dim, n_embd)
        tensors[p + "attn_v.weight"] = f32(n_head_kv * head_dim, n_embd)
        tensors[p + "attn_output.weight"] = f32(n_embd, n_head * head_dim)
        tensors[p + "ffn_norm.weight"] = TensorData.from_values(np.ones(n_embd, np.float32),
                                                                GGMLType.F32)
        tensors[p + "ffn_gate.weight"] = f32(n_ff, n_embd)
        tensors[p + "ffn_up.weight"] = f32(n_ff, n_embd)
        tensors[p + "ffn_down.weight"] = f32(n_embd, n_ff)

    from orcd_toolkit.gguf.reader import GGUFValueType

    meta = {
        "general.architecture": "llama",
        "general.name": "tiny-llama-test",
        "general.file_type": MetaValue(7, GGUFValueType.UINT32),  # MOSTLY_Q8_0
        "llama.block_count": n_layer,
        "llama.context_length": n_ctx,
        "llama.embedding_length": n_embd,
        "llama.feed_forward_length": n_ff,
        "llama.attention.head_count": n_head,
        "llama.attention.head_count_kv": n_head_kv,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "llama.rope.dimension_count": head_dim,
        "llama.rope.freq_base": 10000.0,
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }
    for key, value in vocab.items():
        if key.startswith("tokenizer.ggml."):
            meta[key] = value
    return write_gguf(path, meta, tensors)
