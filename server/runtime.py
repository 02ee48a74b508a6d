"""What the server needs from a loaded model: the ``ServingRuntime`` seam.

The server never imports the engine's internals. A runtime owns the tokenizer (prompt →
ids, chat template) and the engine (``submit`` / ``abort`` / ``step``), and reports what
``/health`` and ``/metrics`` show. ``encode`` may run on any thread (tokenizers are pure);
``submit``, ``abort``, ``step`` and ``stats`` are called only from the one engine thread
(DESIGN.md §4), so the engine never needs a lock.

The product runtime (``orcd_toolkit.server.engine_runtime``) adapts ``orcd_toolkit.engine``;
the tests of the protocol layer plug in a deterministic double with the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from orcd_toolkit.server.protocol import ExecuteRequest


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Facts about the loaded model, fixed after load (``/health``, ``/v1/models``)."""

    name: str
    path: str = ""
    arch: str = ""
    quant_kind: str = ""
    tokenizer_kind: str = ""
    vocab_size: int = 0
    context_length: int = 0
    resident: str = "cpu"  # "gpu" when weights live in VRAM, "cpu" on the NumPy backend
    vram_bytes_used: int = 0
    sm: str | None = None
    cuda_runtime_version: str | None = None


@dataclass(slots=True)
class EngineStats:
    """Engine counters read by the engine thread after each step (cached for HTTP)."""

    num_running: int = 0
    num_waiting: int = 0
    kv_blocks_used: int = 0
    kv_blocks_total: int = 0
    prefix_cache_hits: int = 0  # tokens
    prefix_cache_queries: int = 0  # tokens
    preemptions: int = 0
    vram_bytes_used: int = 0
    queue_times_s: list[float] = field(default_factory=list)  # finished since the last read


@dataclass(slots=True)
class JobOutput:
    """What one ``step`` produced for one job.

    ``token_ids`` are the tokens sampled this step, ``texts`` the text each completes (same
    length; a token whose bytes are held back for UTF-8 or stop-string matching has ``""``).
    ``finished`` with ``finish_reason`` ``"stop"`` / ``"length"``, or ``error`` set when the
    engine failed the job. ``first_scheduled`` is the monotonic time the engine first ran the
    job (queue-time metric), when known.
    """

    job_id: str
    token_ids: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    logprobs: list[float] | None = None
    top_logprobs: list[list] | None = None
    finished: bool = False
    finish_reason: str | None = None
    error: Exception | None = None
    first_scheduled: float | None = None


class ServingRuntime(Protocol):
    """A loaded model behind the engine's submit / abort / step interface."""

    info: ModelInfo

    def encode(self, request: ExecuteRequest) -> list[int]:
        """Prompt token ids (chat template applied for ``messages``); thread-safe."""
        ...

    def submit(self, job_id: str, prompt_ids: list[int], request: ExecuteRequest) -> None:
        """Queue a job in the engine; raises an ``OrcdError`` (InvalidRequest, Overloaded)."""
        ...

    def abort(self, job_id: str) -> None:
        """Drop a job and free its KV blocks (unknown or finished ids are ignored)."""
        ...

    def step(self) -> list[JobOutput]:
        """Advance every admitted job by one scheduling step."""
        ...

    def has_work(self) -> bool:
        """True while the engine holds requests, including aborts not yet applied (the
        engine frees an aborted job's KV blocks in its next ``step``)."""
        ...

    def stats(self) -> EngineStats:
        """Current engine counters (host-side state only)."""
        ...

    def close(self) -> None:
        """Release device memory and threads; the runtime is unusable afterwards."""
        ...


ProgressFn = Callable[[int, str], None]
"""Load progress callback: (percent in {0, 25, 50, 75, 100}, what is happening)."""

RuntimeFactory = Callable[[ProgressFn], ServingRuntime]
"""Builds and loads a runtime, reporting progress; called once, on the engine thread."""
