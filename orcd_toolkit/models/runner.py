"""A single-sequence driver for tools and tests (perplexity, goldens, parity checks).

Not the engine: no scheduling, one sequence, its KV blocks consecutive (block ids
0..n-1). It builds ``ForwardBatch``es exactly as the contract defines them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from orcd_toolkit.backends.base import single_sequence_batch
from orcd_toolkit.models.base import CausalLM


class SequenceRunner:
    """Feeds one token sequence through a model, keeping its KV cache between calls."""

    def __init__(self, model: CausalLM, max_tokens: int, block_size: int = 16) -> None:
        self.model = model
        self.block_size = block_size
        self.num_blocks = -(-max_tokens // block_size)
        self.max_tokens = self.num_blocks * block_size
        self.kv_cache = model.new_kv_cache(self.num_blocks, block_size)
        self.block_ids = np.arange(self.num_blocks, dtype=np.int32)
        self.length = 0

    def reset(self) -> None:
        """Forget the sequence (stale KV entries are never read: attention stops at length)."""
        self.length = 0

    def feed(
        self, token_ids: Sequence[int], *, all_logits: bool = False, chunk: int = 0
    ) -> np.ndarray:
        """Append tokens; returns logits [n, vocab] for every new token, or [1, vocab] for the
        last. ``chunk > 0`` splits the prompt into prefill chunks of that many tokens."""
        ids = np.asarray(token_ids, dtype=np.int32)
        if self.length + ids.shape[0] > self.max_tokens:
            raise ValueError(
                f"{self.length + ids.shape[0]} tokens exceed the runner's {self.max_tokens}"
            )
        step = chunk if chunk > 0 else max(1, ids.shape[0])
        outs = []
        for s in range(0, ids.shape[0], step):
            part = ids[s : s + step]
            batch = single_sequence_batch(
                part, self.length, self.block_ids, self.block_size, all_logits=all_logits
            )
            logits = self.model.backend.to_host(self.model.forward(batch, self.kv_cache))
            self.length += part.shape[0]
            if all_logits or s + step >= ids.shape[0]:
                outs.append(logits)
        return np.concatenate(outs, axis=0)

    def greedy(
        self, prompt_ids: Sequence[int], max_new_tokens: int
    ) -> tuple[list[int], np.ndarray]:
        """Greedy continuation; returns (new ids, logits of every prompt position)."""
        self.reset()
        prompt_logits = self.feed(prompt_ids, all_logits=True)
        out: list[int] = []
        nxt = int(np.argmax(prompt_logits[-1]))
        for _ in range(max_new_tokens):
            out.append(nxt)
            if len(out) == max_new_tokens:
                break
            nxt = int(np.argmax(self.feed([nxt])[-1]))
        return out, prompt_logits
