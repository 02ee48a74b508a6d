"""Request-level value types: ``SamplingParams`` and ``GenerationRequest``.

Validated once in ``__post_init__`` (a clear ``InvalidRequest`` naming the field), so the
scheduler and the sampler never re-check them per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orcd_toolkit.engine.errors import InvalidSamplingParams

MAX_TEMPERATURE = 2.0
MAX_LOGPROBS = 20
MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 256


def _check_number(name: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSamplingParams(name, f"must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise InvalidSamplingParams(name, f"must be in [{lo}, {hi}], got {value}")
    return v


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSamplingParams(name, f"must be an integer, got {type(value).__name__}")
    if value < lo or (hi is not None and value > hi):
        limit = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise InvalidSamplingParams(name, f"must be {limit}, got {value}")
    return value


@dataclass(slots=True)
class SamplingParams:
    """How to pick each next token of one request, and when to stop.

    Sampling order (docs/engine.md, mirrored by the GPU sampler): logit bias and penalties
    on the raw logits, then greedy argmax if ``temperature == 0``; otherwise divide by the
    temperature, softmax, keep the top-k, then the top-p nucleus, then the tokens with
    probability >= min_p * max probability, and draw by inverse CDF in token-id order with
    the request's counter-based uniform (rng.py).
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0  # 0 = disabled
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # llama.cpp / HF: divide positive logits, multiply negative
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] | None = None
    seed: int | None = None  # None: drawn at submit time (still reproducible after preemption)
    stop: Sequence[str] = ()
    stop_token_ids: Sequence[int] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int | None = None  # None: none; N: the sampled token's logprob plus the top N
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        self.max_tokens = _check_int("max_tokens", self.max_tokens, 1)
        self.temperature = _check_number("temperature", self.temperature, 0.0, MAX_TEMPERATURE)
        self.top_k = _check_int("top_k", self.top_k, 0)
        self.top_p = _check_number("top_p", self.top_p, 0.0, 1.0)
        if self.top_p == 0.0:
            raise InvalidSamplingParams("top_p", "must be in (0, 1], got 0")
        self.min_p = _check_number("min_p", self.min_p, 0.0, 1.0)
        self.repetition_penalty = _check_number(
            "repetition_penalty", self.repetition_penalty, 1e-6, 10.0
        )
        self.presence_penalty = _check_number("presence_penalty", self.presence_penalty, -2.0, 2.0)
        self.frequency_penalty = _check_number(
            "frequency_penalty", self.frequency_penalty, -2.0, 2.0
        )
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, Mapping):
                raise InvalidSamplingParams("logit_bias", "must be a mapping token id -> bias")
            bias: dict[int, float] = {}
            for tok, b in self.logit_bias.items():
                tok_id = _check_int("logit_bias", tok, 0)
                bias[tok_id] = _check_number(f"logit_bias[{tok_id}]", b, -100.0, 100.0)
            self.logit_bias = bias or None
        if self.seed is not None:
            self.seed = _check_int("seed", self.seed, 0, (1 << 64) - 1)
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        stops = tuple(self.stop)
        if len(stops) > MAX_STOP_STRINGS:
            raise InvalidSamplingParams("stop", f"at most {MAX_STOP_STRINGS} stop strings")
        for s in stops:
            if not isinstance(s, str) or not s:
                raise InvalidSamplingParams("stop", "each stop string must be a non-empty str")
            if len(s) > MAX_STOP_STRING_CHARS:
                raise InvalidSamplingParams(
                    "stop", f"a stop string is at most {MAX_STOP_STRING_CHARS} characters"
                )
        self.stop = stops
        self.stop_token_ids = tuple(_check_int("stop_token_ids", t, 0) for t in self.stop_token_ids)
        if not isinstance(self.ignore_eos, bool):
            raise InvalidSamplingParams("ignore_eos", "must be a bool")
        self.min_tokens = _check_int("min_tokens", self.min_tokens, 0)
        if self.min_tokens > self.max_tokens:
            raise InvalidSamplingParams(
                "min_tokens", f"must be <= max_tokens ({self.max_tokens}), got {self.min_tokens}"
            )
        if self.logprobs is not None:
            self.logprobs = _check_int("logprobs", self.logprobs, 0, MAX_LOGPROBS)

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )


@dataclass(slots=True)
class GenerationRequest:
    """One generation job: prompt token ids plus how to sample.

    ``priority``: lower runs first (as vLLM); only consulted when the engine's scheduling
    policy is ``"priority"``; ties and the FCFS policy go by arrival order.
    """

    prompt_ids: Sequence[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str | None = None
    priority: int = 0
    arrival_time: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        ids = list(self.prompt_ids)
        if not ids:
            raise InvalidSamplingParams("prompt_ids", "must not be empty")
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                raise InvalidSamplingParams("prompt_ids", f"must be token ids >= 0, got {t!r}")
        self.prompt_ids = ids
        if not isinstance(self.params, SamplingParams):
            raise InvalidSamplingParams("params", "must be a SamplingParams")
        if self.request_id is not None and (
            not isinstance(self.request_id, str) or not self.request_id
        ):
            raise InvalidSamplingParams("request_id", "must be a non-empty str")
        self.priority = _check_int("priority", self.priority, -(1 << 31), (1 << 31) - 1)
