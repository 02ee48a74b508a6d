"""``NumpyBackend``: the ``Backend`` protocol over ``backends.cpu.ops``.

It is the oracle, not the product path: every weight is dequantized to f32 once at load
(``gguf.quants`` semantics) and matmuls go to NumPy's BLAS. The KV cache is f32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from orcd_toolkit.backends.base import ForwardBatch, KVCache, KVCacheLayer, RopeParams
from orcd_toolkit.backends.cpu import ops
from orcd_toolkit.gguf.types import LAYOUTS, GGMLType


@dataclass(frozen=True, slots=True)
class QuantizedRows:
    """A row-gatherable table kept in its GGUF blocks (raw [rows, row_bytes])."""

    raw: np.ndarray
    qtype: int
    shape: tuple[int, ...]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        idx = np.asarray(ids, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(
                f"token id out of range [0, {self.shape[0]}): {idx.min()}..{idx.max()}"
            )
        return ops.dequantize(self.raw[idx], self.qtype, (idx.shape[0],) + self.shape[1:])


ACTIVATIONS = ("exact", "ggml-cpu", "gpu")

# The GPU backend's int8 kernels (kernels/quant.py Q8_MAX_BATCH): linear layers of the block
# types round x to q8_1 at up to this many tokens; MoE expert matvecs always do.
GPU_Q8_MAX_BATCH = 8

# Q4_1 = 3 (block: f16 d, f16 m, 16 B), Q5_1 = 7 (f16 d, f16 m, 4 + 16 B): the types whose
# dot with Q8_1 activations has a min term (ggml-common.h block_q4_1 / block_q5_1)
_MIN_BLOCK_BYTES = {3: 20, 7: 24}


def _block_mins(tensor: Any) -> np.ndarray | None:
    """The per-32-block minima ``m`` of a Q4_1 / Q5_1 weight, [..., rows, cols / 32]."""
    nbytes = _MIN_BLOCK_BYTES.get(int(tensor.qtype))
    if nbytes is None:
        return None
    shape = tuple(tensor.shape)
    raw = np.ascontiguousarray(tensor.raw()).reshape(shape[:-1] + (shape[-1] // 32, nbytes))
    return np.ascontiguousarray(raw[..., 2:4]).view(np.float16)[..., 0].astype(np.float32)


class NumpyBackend:
    """Reference implementation of ``orcd_toolkit.backends.base.Backend``.

    ``activations``: "exact" (default) multiplies the dequantized weights by the f32
    activations exactly. "ggml-cpu" first rounds the activations of every matmul the way
    llama.cpp's CPU backend does for that weight's type (Q8_0 / Q8_K blocks, f16; see
    ``ops.round_activations``), so that logits can be compared with llama.cpp's on the same
    quantized file at the level of its arithmetic rather than of that rounding noise. "gpu"
    is the twin of orcd's GPU backend: x rounded to q8_1 (llama.cpp CUDA's quantize_q8_1)
    for block-type weights in linear layers of at most ``GPU_Q8_MAX_BATCH`` tokens and in
    every MoE expert matmul, exact otherwise.
    """

    name = "cpu"

    def __init__(self, activations: str = "exact") -> None:
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
        self.activations = activations

    def load_weight(self, tensor: Any) -> np.ndarray:
        """Dequantize a GGUF tensor (anything with ``raw()``, ``qtype``, ``shape``) to f32."""
        w = ops.dequantize(tensor.raw(), int(tensor.qtype), tuple(tensor.shape))
        if self.activations == "ggml-cpu":
            scheme = ops.ggml_cpu_activation_scheme(int(tensor.qtype))
            if scheme != "exact":
                return ops.LinearWeight(w, scheme, _block_mins(tensor))
        elif self.activations == "gpu" and LAYOUTS[GGMLType(int(tensor.qtype))].is_quantized:
            # block types only: the GPU multiplies F32 / F16 / BF16 weights by x as is
            max_rows = None if w.ndim == 3 else GPU_Q8_MAX_BATCH  # expert stacks: always
            return ops.LinearWeight(w, "q8_1", act_max_rows=max_rows)
        return w

    def load_embedding(self, tensor: Any) -> QuantizedRows:
        """Keep the table quantized and dequantize only the gathered rows: exact, and it
        spares ~0.5 GiB of f32 for a 151k-token vocabulary."""
        return QuantizedRows(tensor.raw(), int(tensor.qtype), tuple(tensor.shape))

    def load_vector(self, tensor: Any) -> np.ndarray:
        # norms and biases are used elementwise, never as a matmul weight: no rounding tag
        return ops.dequantize(tensor.raw(), int(tensor.qtype), tuple(tensor.shape))

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def embed(self, table: QuantizedRows | np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        if isinstance(table, QuantizedRows):
            return table.rows(token_ids)
        return ops.embed(table, token_ids)

    def rms_norm(self, x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
        return ops.rms_norm(x, weight, eps)

    def add_rms_norm(
        self, x: np.ndarray, residual: np.ndarray, weight: np.ndarray | None, eps: float
    ) -> tuple[np.ndarray, np.ndarray]:
        return ops.add_rms_norm(x, residual, weight, eps)

    def layer_norm(
        self, x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float
    ) -> np.ndarray:
        return ops.layer_norm(x, weight, bias, eps)

    def add_layer_norm(
        self,
        x: np.ndarray,
        residual: np.ndarray,
        weight: np.ndarray | None,
        bias: np.ndarray | None,
        eps: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        return ops.add_layer_norm(x, residual, weight, bias, eps)

    def linear(
        self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
    ) -> np.ndarray:
        return ops.matmul(x, weight, bias)

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a + b).astype(np.float32, copy=False)

    def rope(self, x: np.ndarray, positions: np.ndarray, params: RopeParams) -> np.ndarray:
        return ops.rope(
            x,
            positions,
            params.n_rot,
            params.mode,
            freq_base=params.freq_base,
            freq_scale=params.freq_scale,
            ext_factor=params.ext_factor,
            attn_factor=params.attn_factor,
            beta_fast=params.beta_fast,
            beta_slow=params.beta_slow,
            n_ctx_orig=params.n_ctx_orig,
            freq_factors=params.freq_factors,
        )

    def allocate_kv_cache(
        self, num_layers: int, num_blocks: int, block_size: int, n_kv_heads: int, head_dim: int
    ) -> KVCache:
        shape = (num_blocks, block_size, n_kv_heads, head_dim)
        layers = [
            KVCacheLayer(k=np.zeros(shape, np.float32), v=np.zeros(shape, np.float32))
            for _ in range(num_layers)
        ]
        return KVCache(layers, num_blocks, block_size, n_kv_heads, head_dim)

    def write_kv(
        self, layer: KVCacheLayer, k: np.ndarray, v: np.ndarray, slot_mapping: np.ndarray
    ) -> None:
        ops.write_kv(layer.k, layer.v, k, v, slot_mapping)

    def attention(
        self,
        q: np.ndarray,
        layer: KVCacheLayer,
        batch: ForwardBatch,
        *,
        scale: float,
        sinks: np.ndarray | None = None,
        sliding_window: int = 0,
    ) -> np.ndarray:
        return ops.paged_attention(
            q,
            layer.k,
            layer.v,
            batch.block_tables,
            batch.seq_starts,
            batch.context_lens,
            scale=scale,
            sinks=sinks,
            sliding_window=sliding_window,
        )

    def swiglu(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        return ops.swiglu(gate, up)

    def swiglu_oai(
        self, gate: np.ndarray, up: np.ndarray, alpha: float, limit: float
    ) -> np.ndarray:
        return ops.swiglu_oai(gate, up, alpha, limit)

    def gelu(self, x: np.ndarray) -> np.ndarray:
        return ops.gelu(x)

    def moe(
        self,
        x: np.ndarray,
        router_logits: np.ndarray,
        k: int,
        gate_w: np.ndarray,
        up_w: np.ndarray,
        down_w: np.ndarray,
        *,
        gate_b: np.ndarray | None = None,
        up_b: np.ndarray | None = None,
        down_b: np.ndarray | None = None,
        activation: str = "swiglu_oai",
    ) -> np.ndarray:
        ids, weights = ops.moe_route(router_logits, k)
        return ops.moe_experts(
            x,
            ids,
            weights,
            gate_w,
            up_w,
            down_w,
            gate_b=gate_b,
            up_b=up_b,
            down_b=down_b,
            activation=activation,
        )

    def take_rows(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return x[np.asarray(rows, dtype=np.int64)]
