"""``EngineConfig``: the engine's fixed budgets, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from orcd_toolkit.errors import InvalidRequest

ALLOCATORS = ("paged", "contiguous")
POLICIES = ("fcfs", "priority")


@dataclass(slots=True)
class EngineConfig:
    """Budgets fixed at startup: the KV pool never grows, the queues are bounded.

    - ``num_blocks`` x ``block_size`` tokens of KV cache (the pool the backend allocated).
    - ``max_model_len``: the context window; prompt + max_tokens above it is refused.
    - ``max_num_seqs``: running sequences at most (the decode batch size bound).
    - ``max_num_batched_tokens``: tokens per step (prefill chunks + decode tokens).
    - ``max_waiting``: the wait queue bound; a submit past it raises ``Overloaded``.
    - ``watermark``: fraction of the pool kept free when admitting, so running sequences
      can still grow without preempting at once (vLLM's ``watermark``).
    - ``policy``: ``fcfs``, or ``priority`` (lower ``GenerationRequest.priority`` first,
      then arrival; preemption takes the lowest priority, newest first).
    - ``eos_token_ids``: every token that ends a turn (the tokenizer's ``stop_ids``).
    """

    num_blocks: int
    vocab_size: int
    block_size: int = 16
    max_model_len: int = 2048
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    max_waiting: int = 1024
    watermark: float = 0.01
    allocator: str = "paged"
    enable_prefix_caching: bool = True
    policy: str = "fcfs"
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("num_blocks", "vocab_size", "block_size", "max_model_len", "max_num_seqs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidRequest(f"EngineConfig.{name} must be an integer >= 1, got {v!r}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            # every running sequence must be able to decode in one step, or the tail of the
            # running list would starve
            raise InvalidRequest(
                f"EngineConfig.max_num_batched_tokens ({self.max_num_batched_tokens}) must be "
                f">= max_num_seqs ({self.max_num_seqs})"
            )
        if self.max_waiting < 0:
            raise InvalidRequest(f"EngineConfig.max_waiting must be >= 0, got {self.max_waiting}")
        if not 0.0 <= self.watermark < 1.0:
            raise InvalidRequest(f"EngineConfig.watermark must be in [0, 1), got {self.watermark}")
        if self.allocator not in ALLOCATORS:
            raise InvalidRequest(
                f"EngineConfig.allocator must be one of {ALLOCATORS}, got {self.allocator!r}"
            )
        if self.allocator == "contiguous" and self.enable_prefix_caching:
            raise InvalidRequest(
                "EngineConfig.enable_prefix_caching needs the paged allocator (a shared block "
                "cannot sit in two contiguous regions)"
            )
        if self.policy not in POLICIES:
            raise InvalidRequest(f"EngineConfig.policy must be one of {POLICIES}, got {self.policy!r}")
        self.eos_token_ids = tuple(int(t) for t in self.eos_token_ids)
        for t in self.eos_token_ids:
            if not 0 <= t < self.vocab_size:
                raise InvalidRequest(f"EngineConfig.eos_token_ids: {t} is outside the vocabulary")

    @property
    def watermark_blocks(self) -> int:
        return math.ceil(self.watermark * self.num_blocks)

    @property
    def max_blocks_per_seq(self) -> int:
        return -(-self.max_model_len // self.block_size)
