"""The seam between architectures and devices: ``Backend``, ``ForwardBatch`` and the KV cache.

An architecture (orcd_toolkit.models) is written once as a sequence of ``Backend`` calls; the
NumPy reference backend (``backends.cpu``) and the GPU backend (``orcd_toolkit.kernels``)
implement the same calls, so every GPU op has a NumPy oracle (CONTRACTS.md §3).

A forward step takes a ragged batch (``ForwardBatch``): the new tokens of B sequences,
flattened to T rows, with their positions and a block table into a paged KV cache. Prefill
chunks and decode tokens travel in the same batch; attention reads K/V only through
``block_tables``, so contiguous and paged allocators are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from orcd_toolkit.errors import InvalidRequest

__all__ = [
    "ForwardBatch",
    "KVCacheLayer",
    "KVCache",
    "RopeParams",
    "Backend",
    "single_sequence_batch",
]


def _as_i32(name: str, value: Any, ndim: int) -> np.ndarray:
    arr = np.ascontiguousarray(value, dtype=np.int32)
    if arr.ndim != ndim:
        raise InvalidRequest(f"ForwardBatch.{name} must be {ndim}-d, got shape {arr.shape}")
    return arr


@dataclass(slots=True)
class ForwardBatch:
    """A ragged batch of B sequences with T new tokens in total (host int32 arrays).

    token_ids [T], positions [T]: the new tokens and their positions in their sequence.
    seq_starts [B+1]: offsets of each sequence's new tokens in the flattened arrays.
    context_lens [B]: KV length of each sequence after this step (new tokens included).
    block_tables [B, max_blocks]: KV block ids of each sequence in order, -1 padded.
    slot_mapping [T]: ``block_id * block_size + offset`` where each token's K/V is written.
    logits_indices [N]: rows of T whose logits ``forward`` returns.
    """

    token_ids: np.ndarray
    positions: np.ndarray
    seq_starts: np.ndarray
    context_lens: np.ndarray
    block_tables: np.ndarray
    slot_mapping: np.ndarray
    logits_indices: np.ndarray

    def __post_init__(self) -> None:
        self.token_ids = _as_i32("token_ids", self.token_ids, 1)
        self.positions = _as_i32("positions", self.positions, 1)
        self.seq_starts = _as_i32("seq_starts", self.seq_starts, 1)
        self.context_lens = _as_i32("context_lens", self.context_lens, 1)
        self.block_tables = _as_i32("block_tables", self.block_tables, 2)
        self.slot_mapping = _as_i32("slot_mapping", self.slot_mapping, 1)
        self.logits_indices = _as_i32("logits_indices", self.logits_indices, 1)
        num_tokens = self.token_ids.shape[0]
        num_seqs = self.context_lens.shape[0]
        if self.positions.shape[0] != num_tokens or self.slot_mapping.shape[0] != num_tokens:
            raise InvalidRequest(
                f"ForwardBatch: token_ids has {num_tokens} rows but positions has "
                f"{self.positions.shape[0]} and slot_mapping {self.slot_mapping.shape[0]}"
            )
        if self.seq_starts.shape[0] != num_seqs + 1:
            raise InvalidRequest(
                f"ForwardBatch: seq_starts must have B+1={num_seqs + 1} entries, "
                f"got {self.seq_starts.shape[0]}"
            )
        if self.block_tables.shape[0] != num_seqs:
            raise InvalidRequest(
                f"ForwardBatch: block_tables has {self.block_tables.shape[0]} rows for "
                f"{num_seqs} sequences"
            )
        if num_seqs and (self.seq_starts[0] != 0 or self.seq_starts[-1] != num_tokens):
            raise InvalidRequest("ForwardBatch: seq_starts must start at 0 and end at T")
        if (np.diff(self.seq_starts) < 0).any():
            raise InvalidRequest("ForwardBatch: seq_starts must be non-decreasing")
        if (np.diff(self.seq_starts) > self.context_lens).any():
            raise InvalidRequest("ForwardBatch: a sequence has more new tokens than context_len")
        if self.logits_indices.size and (
            self.logits_indices.min() < 0 or self.logits_indices.max() >= num_tokens
        ):
            raise InvalidRequest("ForwardBatch: logits_indices out of range [0, T)")

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def num_seqs(self) -> int:
        return int(self.context_lens.shape[0])


def single_sequence_batch(
    token_ids: Any,
    start_pos: int,
    block_ids: Any,
    block_size: int,
    *,
    all_logits: bool = False,
) -> ForwardBatch:
    """A one-sequence batch for tokens at positions ``start_pos..`` stored in ``block_ids``.

    Used by one-shot tools (perplexity, goldens, tests) that do not need a scheduler; the
    engine builds its batches itself.
    """
    ids = np.asarray(token_ids, dtype=np.int32)
    n = int(ids.shape[0])
    positions = np.arange(start_pos, start_pos + n, dtype=np.int32)
    blocks = np.asarray(block_ids, dtype=np.int32)
    needed = -(-(start_pos + n) // block_size)
    if blocks.shape[0] < needed:
        raise InvalidRequest(
            f"{start_pos + n} tokens need {needed} KV blocks of {block_size}, got {blocks.shape[0]}"
        )
    slots = blocks[positions // block_size] * block_size + positions % block_size
    logits_indices = np.arange(n) if all_logits else np.array([n - 1])
    return ForwardBatch(
        token_ids=ids,
        positions=positions,
        seq_starts=np.array([0, n]),
        context_lens=np.array([start_pos + n]),
        block_tables=blocks[None, :],
        slot_mapping=slots,
        logits_indices=logits_indices,
    )


@dataclass(slots=True)
class KVCacheLayer:
    """One layer's caches: k, v [num_blocks, block_size, n_kv_heads, head_dim].

    f32 NumPy arrays on the reference backend, f16 device arrays on the GPU.
    """

    k: Any
    v: Any


@dataclass(slots=True)
class KVCache:
    """Per-layer K/V caches sharing one block numbering (a block id is valid in every layer)."""

    layers: list[KVCacheLayer]
    num_blocks: int
    block_size: int
    n_kv_heads: int
    head_dim: int

    def __len__(self) -> int:
        return len(self.layers)


@dataclass(frozen=True, slots=True)
class RopeParams:
    """Everything ggml_rope_ext takes besides the tensor and positions (llama.cpp semantics).

    ``mode`` is ops.ROPE_NORM (0) or ops.ROPE_NEOX (2); ``freq_factors`` [n_rot/2] divide the
    frequencies (llama3/longrope); ``ext_factor != 0`` switches YaRN on.
    """

    n_rot: int
    mode: int
    freq_base: float = 10000.0
    freq_scale: float = 1.0
    ext_factor: float = 0.0
    attn_factor: float = 1.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    n_ctx_orig: int = 0
    freq_factors: np.ndarray | None = field(default=None, compare=False)


@runtime_checkable
class Backend(Protocol):
    """The ops a forward pass needs. Arrays are backend-native (NumPy or device arrays).

    Weights go through ``load_weight`` once at model load: the NumPy backend dequantizes to
    f32, the GPU backend keeps the GGUF blocks in VRAM; ``linear`` takes whatever
    ``load_weight`` returned. Activations are [T, ...] (tokens first).
    """

    name: str

    def load_weight(self, tensor: Any) -> Any:
        """Prepare a GGUF tensor (TensorInfo) for ``linear``/``embed``."""
        ...

    def load_embedding(self, tensor: Any) -> Any:
        """Prepare an embedding table for ``embed`` (rows may stay quantized)."""
        ...

    def load_vector(self, tensor: Any) -> Any:
        """A small f32 tensor (norm weight, bias, sinks) as a dense backend array."""
        ...

    def to_host(self, x: Any) -> np.ndarray:
        """Copy a backend array to a host float32/int32 NumPy array."""
        ...

    def embed(self, table: Any, token_ids: np.ndarray) -> Any:
        """Rows of the embedding table for ``token_ids`` [T] -> [T, d]."""
        ...

    def rms_norm(self, x: Any, weight: Any, eps: float) -> Any: ...

    def add_rms_norm(self, x: Any, residual: Any, weight: Any, eps: float) -> tuple[Any, Any]:
        """Returns ``(rms_norm(x + residual), x + residual)``."""
        ...

    def layer_norm(self, x: Any, weight: Any, bias: Any, eps: float) -> Any: ...

    def add_layer_norm(
        self, x: Any, residual: Any, weight: Any, bias: Any, eps: float
    ) -> tuple[Any, Any]: ...

    def linear(self, x: Any, weight: Any, bias: Any = None) -> Any:
        """``x @ W.T (+ bias)`` with W as returned by ``load_weight``."""
        ...

    def add(self, a: Any, b: Any) -> Any: ...

    def rope(self, x: Any, positions: np.ndarray, params: RopeParams) -> Any:
        """Rotate ``x`` [T, H, D] in place of llama.cpp's ggml_rope_ext."""
        ...

    def allocate_kv_cache(
        self, num_layers: int, num_blocks: int, block_size: int, n_kv_heads: int, head_dim: int
    ) -> KVCache: ...

    def write_kv(self, layer: KVCacheLayer, k: Any, v: Any, slot_mapping: np.ndarray) -> None: ...

    def attention(
        self,
        q: Any,
        layer: KVCacheLayer,
        batch: ForwardBatch,
        *,
        scale: float,
        sinks: Any = None,
        sliding_window: int = 0,
    ) -> Any:
        """Paged causal attention of q [T, Hq, D] over ``layer`` for ``batch``."""
        ...

    def swiglu(self, gate: Any, up: Any) -> Any: ...

    def swiglu_oai(self, gate: Any, up: Any, alpha: float, limit: float) -> Any: ...

    def gelu(self, x: Any) -> Any: ...

    def moe(
        self,
        x: Any,
        router_logits: Any,
        k: int,
        gate_w: Any,
        up_w: Any,
        down_w: Any,
        *,
        gate_b: Any = None,
        up_b: Any = None,
        down_b: Any = None,
        activation: str = "swiglu_oai",
    ) -> Any:
        """Route (top-k, softmax over the selected) and run the selected experts."""
        ...

    def take_rows(self, x: Any, rows: np.ndarray) -> Any:
        """``x[rows]`` (the rows whose logits are returned)."""
        ...
