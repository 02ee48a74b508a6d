"""Attention over a paged KV cache for a ragged batch (CuPy RawModule ``cuda/attention.cu``).

Two implementations behind one interface (DESIGN.md section 3, ``AttentionKernel``):

- :class:`BasicAttention` — the simple reference: one block per (token, query head), plain
  passes over the context through a score buffer. Easy to trust, slow.
- :class:`FlashAttention` — K/V streamed through shared memory 32 keys at a time with an
  online softmax; a block serves all query heads of a GQA group and up to ``qtile`` tokens
  (prefill tiles), and decode splits the keys across ``num_splits`` blocks (split-K, "flash
  decoding"), merged by a combine kernel.

Both take the ForwardBatch arrays (``seq_starts``, ``context_lens``, ``block_tables``), f16
caches [num_blocks, block_size, Hkv, D], f32 q/out [T, Hq, D], a caller-allocated workspace
(``workspace_shape``) and a stream; semantics equal ``backends.cpu.ops.paged_attention``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from orcd_toolkit.kernels import cuda_modules
from orcd_toolkit.kernels._launch import NULL, cdiv, check, on_stream
from orcd_toolkit.kernels.errors import KernelError


@dataclass(frozen=True, slots=True)
class AttentionShape:
    """Static facts of one attention call (python ints, fixed per captured graph)."""

    num_tokens: int  # T
    num_seqs: int  # B
    max_query_len: int  # most new tokens of any sequence in the batch
    max_context_len: int  # longest context_len in the batch (bounds the workspace)
    n_q_heads: int
    n_kv_heads: int
    head_dim: int


class AttentionKernel(Protocol):
    name: str

    def workspace_shape(self, shape: AttentionShape) -> tuple[int, ...]:
        """float32 workspace elements this kernel needs for ``shape``."""
        ...

    def __call__(
        self,
        out: Any,
        q: Any,
        k_cache: Any,
        v_cache: Any,
        block_tables: Any,
        seq_starts: Any,
        context_lens: Any,
        shape: AttentionShape,
        workspace: Any,
        *,
        scale: float,
        sinks: Any = None,
        sliding_window: int = 0,
        stream: Any = None,
    ) -> None: ...


def _check(out: Any, q: Any, k_cache: Any, v_cache: Any, block_tables: Any, seq_starts: Any,
           context_lens: Any, shape: AttentionShape, sinks: Any) -> None:
    t, hq, d = shape.num_tokens, shape.n_q_heads, shape.head_dim
    check(q, "q", np.float32, (t, hq, d))
    check(out, "out", np.float32, (t, hq, d))
    check(k_cache, "k_cache", np.float16, (None, None, shape.n_kv_heads, d))
    check(v_cache, "v_cache", np.float16, tuple(k_cache.shape))
    check(block_tables, "block_tables", np.int32, (shape.num_seqs, None))
    check(seq_starts, "seq_starts", np.int32, (shape.num_seqs + 1,))
    check(context_lens, "context_lens", np.int32, (shape.num_seqs,))
    if sinks is not None:
        check(sinks, "sinks", np.float32, (hq,))
    if hq % shape.n_kv_heads:
        raise KernelError(f"{hq} query heads is not a multiple of {shape.n_kv_heads} KV heads")


class BasicAttention:
    """Reference attention: straightforward, one block per (token, query head)."""

    name = "basic"

    def workspace_shape(self, shape: AttentionShape) -> tuple[int, ...]:
        return (shape.num_tokens, shape.n_q_heads, max(1, shape.max_context_len))

    def __call__(self, out: Any, q: Any, k_cache: Any, v_cache: Any, block_tables: Any,
                 seq_starts: Any, context_lens: Any, shape: AttentionShape, workspace: Any, *,
                 scale: float, sinks: Any = None, sliding_window: int = 0,
                 stream: Any = None) -> None:
        _check(out, q, k_cache, v_cache, block_tables, seq_starts, context_lens, shape, sinks)
        check(workspace, "workspace", np.float32, self.workspace_shape(shape))
        fn = cuda_modules.function("attention", "attention_basic")
        with on_stream(stream):
            fn((shape.num_tokens, shape.n_q_heads, 1), (128,),
               (q, k_cache, v_cache, block_tables, np.int32(block_tables.shape[1]), seq_starts,
                context_lens, NULL if sinks is None else sinks, workspace, out,
                np.int32(shape.num_seqs), np.int32(shape.n_q_heads), np.int32(shape.n_kv_heads),
                np.int32(shape.head_dim), np.int32(k_cache.shape[1]), np.float32(scale),
                np.int32(sliding_window), np.int32(workspace.shape[2])))


class FlashAttention:
    """Tiled online-softmax attention with split-K for long decode contexts.

    ``num_splits`` None picks enough key splits to give the GPU ~2 blocks per SM at decode
    (each split at least 256 keys); prefill uses one split.
    """

    name = "flash"

    def __init__(self, num_splits: int | None = None, num_sms: int = 132) -> None:
        self.fixed_splits = num_splits
        self.num_sms = num_sms

    def _qtile(self, shape: AttentionShape) -> int:
        group = shape.n_q_heads // shape.n_kv_heads
        cap = 4 * cuda_modules.ATTN_ITEMS_PER_WARP
        if group > cap:
            raise KernelError(f"GQA group of {group} query heads per KV head exceeds {cap}")
        return max(1, cap // group)

    def splits(self, shape: AttentionShape) -> int:
        if self.fixed_splits is not None:
            return self.fixed_splits
        if shape.max_query_len > 1:
            return 1
        blocks = shape.num_seqs * shape.n_kv_heads
        want = cdiv(2 * self.num_sms, max(1, blocks))
        return max(1, min(want, cdiv(shape.max_context_len, 256), 64))

    def workspace_shape(self, shape: AttentionShape) -> tuple[int, ...]:
        s = self.splits(shape)
        # partial accumulators [s, T, Hq, D] followed by (max, sum) pairs [s, T, Hq, 2]
        return (s * shape.num_tokens * shape.n_q_heads * (shape.head_dim + 2),)

    def __call__(self, out: Any, q: Any, k_cache: Any, v_cache: Any, block_tables: Any,
                 seq_starts: Any, context_lens: Any, shape: AttentionShape, workspace: Any, *,
                 scale: float, sinks: Any = None, sliding_window: int = 0,
                 stream: Any = None) -> None:
        _check(out, q, k_cache, v_cache, block_tables, seq_starts, context_lens, shape, sinks)
        d = shape.head_dim
        if d not in cuda_modules.HEAD_DIMS:
            raise KernelError(f"head_dim {d} not compiled (have {cuda_modules.HEAD_DIMS})")
        check(workspace, "workspace", np.float32, self.workspace_shape(shape))
        s = self.splits(shape)
        qtile = self._qtile(shape)
        n_acc = s * shape.num_tokens * shape.n_q_heads * d
        part_acc = workspace[:n_acc]
        part_ml = workspace[n_acc:]
        tiles = cdiv(max(1, shape.max_query_len), qtile)
        ipw = cuda_modules.ATTN_ITEMS_PER_WARP
        flash = cuda_modules.function("attention", f"attention_flash<{d},{ipw}>")
        combine = cuda_modules.function("attention", f"attention_combine<{d}>")
        with on_stream(stream):
            flash((shape.num_seqs * tiles, shape.n_kv_heads, s), (128,),
                  (q, k_cache, v_cache, block_tables, np.int32(block_tables.shape[1]), seq_starts,
                   context_lens, part_acc, part_ml, np.int32(shape.num_tokens),
                   np.int32(shape.n_q_heads), np.int32(shape.n_kv_heads),
                   np.int32(k_cache.shape[1]), np.float32(scale), np.int32(sliding_window),
                   np.int32(qtile), np.int32(tiles)))
            warps = shape.num_tokens * shape.n_q_heads
            combine((cdiv(warps * 32, 128),), (128,),
                    (part_acc, part_ml, NULL if sinks is None else sinks, out,
                     np.int32(shape.num_tokens), np.int32(shape.n_q_heads), np.int32(s)))
