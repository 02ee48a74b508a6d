"""The engine's seams as ``typing.Protocol``s (DESIGN.md §3).

- ``InferenceEngine``: what the server, the widgets and ``orcd run`` use: submit / abort /
  step, plus the one-shot ``run``.
- ``KVCacheAllocator``: block bookkeeping for the KV cache (paged or contiguous).
- ``MetricsHook``: observations after each step and per request (no-op by default).
- ``ModelRunner``: the one call the engine makes into a model,
  ``forward(batch, kv_cache) -> logits[N, vocab]`` (CONTRACTS.md §3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from orcd_toolkit.backends.base import ForwardBatch
    from orcd_toolkit.engine.outputs import RequestHandle, RequestOutput
    from orcd_toolkit.engine.params import GenerationRequest


@runtime_checkable
class ModelRunner(Protocol):
    """A model bound to a backend: one ragged forward step over the paged KV cache."""

    def forward(self, batch: ForwardBatch, kv_cache: Any) -> np.ndarray:
        """Logits float32 ``[len(batch.logits_indices), vocab]`` (host or device array)."""
        ...


@dataclass(slots=True)
class SamplingBatch:
    """Per-row sampling inputs for a ``TokenSampler`` (host NumPy arrays, N rows).

    Row i samples the next token of one sequence; ``draw_index`` is the index of that
    output token (the Philox counter, CONTRACTS.md §4). ``history`` (prompt then output
    ids, int32 [N, L]), ``history_len`` and ``num_prompt`` are given only when some row has
    a repetition / presence / frequency penalty.
    """

    temperature: np.ndarray  # float32 [N]; 0 = greedy
    top_k: np.ndarray  # int32 [N]; 0 = off
    top_p: np.ndarray  # float32 [N]
    min_p: np.ndarray  # float32 [N]
    repetition_penalty: np.ndarray  # float32 [N]
    presence_penalty: np.ndarray  # float32 [N]
    frequency_penalty: np.ndarray  # float32 [N]
    seeds: np.ndarray  # uint64 [N]
    draw_index: np.ndarray  # int64 [N]
    history: np.ndarray | None = None
    history_len: np.ndarray | None = None
    num_prompt: np.ndarray | None = None


@runtime_checkable
class TokenSampler(Protocol):
    """Samples on the device where the logits are (the GPU backend's sampler), so the
    [N, vocab] logits never cross to the host. It must choose what ``engine.sampling``
    chooses (docs/engine.md). The engine uses it for rows without ``logit_bias``,
    ``logprobs`` or an active ``min_tokens`` mask, and samples the rest on the host."""

    def sample(self, logits: Any, batch: SamplingBatch) -> np.ndarray:
        """Token ids int32 [N] (host)."""
        ...


@runtime_checkable
class KVCacheAllocator(Protocol):
    """Hands out KV blocks of one pool budgeted at startup; never grows it."""

    num_blocks: int
    block_size: int
    supports_prefix_caching: bool
    enable_prefix_caching: bool
    prefix_queries: int
    prefix_hits: int

    @property
    def num_free_blocks(self) -> int: ...

    def num_blocks_needed(self, num_tokens: int, reserve_tokens: int) -> int:
        """Blocks a new sequence of ``num_tokens`` (and at most ``reserve_tokens``) takes."""
        ...

    def block_table(self, seq_id: int) -> list[int]: ...

    def match_prefix(self, seq_id: int, token_ids: Sequence[int], max_tokens: int) -> int:
        """Share cached blocks of the prompt prefix; returns the tokens already computed."""
        ...

    def cache_blocks(self, seq_id: int, token_ids: Sequence[int], num_tokens: int) -> None:
        """Publish the full blocks among the first ``num_tokens`` (computed) tokens."""
        ...

    def allocate(
        self, seq_id: int, num_tokens: int, reserve_tokens: int = 0, watermark: int = 0
    ) -> list[int] | None:
        """Cover ``num_tokens`` tokens; returns the new block ids, or None (nothing changed)."""
        ...

    def allocate_many(self, seq_ids: list[int], num_tokens: list[int]) -> list[int] | None:
        """Grow several running sequences at once; all new block ids in order, or None."""
        ...

    def free(self, seq_id: int) -> None: ...

    def check_invariants(self) -> None: ...


@dataclass(slots=True)
class StepStats:
    """What one ``step()`` did (handed to ``MetricsHook.on_step``).

    Not frozen: a frozen dataclass's ``__init__`` costs ~10 fields x object.__setattr__ on
    every step; hooks must treat it as read-only.
    """

    step_time_s: float
    num_running: int
    num_waiting: int
    num_prefill_tokens: int
    num_decode_tokens: int
    num_preempted: int
    num_kv_blocks_used: int
    num_kv_blocks_total: int
    prefix_queries: int  # cumulative, in blocks
    prefix_hits: int  # cumulative, in blocks


@dataclass(slots=True, frozen=True)
class RequestStats:
    """One finished request (handed to ``MetricsHook.on_request_finished``).

    ``outcome`` is the finish reason: ``stop``, ``length``, ``abort`` or ``error``.
    Times are seconds; ``ttft_s`` is None when no token was produced.
    """

    request_id: str
    outcome: str
    queue_time_s: float
    ttft_s: float | None
    e2e_s: float
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    num_preemptions: int

    @property
    def time_per_output_token_s(self) -> float | None:
        """Mean inter-token latency after the first token (TPOT)."""
        if self.ttft_s is None or self.num_output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.num_output_tokens - 1)


@runtime_checkable
class MetricsHook(Protocol):
    """Receives observations from the engine thread; must be cheap and never block."""

    def on_request_queued(self, request_id: str, num_prompt_tokens: int) -> None: ...

    def on_first_token(self, request_id: str, ttft_s: float) -> None: ...

    def on_request_finished(self, stats: RequestStats) -> None: ...

    def on_step(self, stats: StepStats) -> None: ...


@runtime_checkable
class InferenceEngine(Protocol):
    """The incremental API (server, widgets) plus the one-shot ``run`` (tests, ``orcd run``)."""

    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Validate and queue a request; raises InvalidRequest / Overloaded up front."""
        ...

    def abort(self, request_id: str) -> None:
        """Cancel at the next step boundary; the sequence's blocks are freed at once then."""
        ...

    def step(self) -> list[RequestOutput]:
        """One scheduling step over all admitted sequences; outputs per request."""
        ...

    def has_unfinished(self) -> bool: ...

    def run(self, prompt_ids: Sequence[int], max_tokens: int) -> list[int]:
        """Greedy one-shot generation (the seed's API)."""
        ...
