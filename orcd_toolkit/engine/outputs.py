"""What the engine hands back: per-step ``RequestOutput`` events and a ``RequestHandle``."""

from __future__ import annotations

from dataclasses import dataclass, field

TokenLogprobs = tuple[float, list[tuple[int, float]]]

FINISH_STOP = "stop"  # EOS / end-of-turn / stop token / stop string
FINISH_LENGTH = "length"  # max_tokens reached
FINISH_ABORT = "abort"  # cancelled through abort()
FINISH_ERROR = "error"


@dataclass(slots=True)
class RequestOutput:
    """One request's news from one step.

    ``new_text`` is safe to stream: valid UTF-8, never part of a stop string. A finished
    request's last output has ``finished=True`` and its ``finish_reason``; ``stop_reason`` is
    the stop string or token id that ended it, if any.
    """

    request_id: str
    new_token_ids: list[int]
    new_text: str = ""
    finished: bool = False
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    error: str | None = None
    logprobs: list[TokenLogprobs] | None = None


@dataclass(slots=True)
class RequestHandle:
    """Accumulated state of a submitted request, updated by ``step()`` (engine thread only)."""

    request_id: str
    prompt_ids: list[int]
    seed: int
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finished: bool = False
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    logprobs: list[TokenLogprobs] = field(default_factory=list)
