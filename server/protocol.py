"""The streaming protocol's messages and their validation (docs/protocol.md).

Every client frame is parsed and checked here before anything touches the engine, so a bad
request costs one ``error`` event with code ``INVALID_REQUEST`` whose message names the field,
and the connection stays usable. The server never trusts a field it has not checked: types are
exact (``true`` is not an integer, ``1.0`` is not a job id), floats must be finite, unknown
fields are rejected so a typo (``max_token``) does not silently fall back to a default.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from orcd_toolkit.errors import InvalidRequest

# Stable error codes of the protocol (also the ``code`` of each orcd_toolkit.errors class).
ERROR_CODES: tuple[str, ...] = (
    "INVALID_REQUEST",
    "MODEL_LOAD_FAILED",
    "INSUFFICIENT_VRAM",
    "VRAM_OOM",
    "CUDA_ERROR",
    "INFERENCE_TIMEOUT",
    "CANCELLED",
    "OVERLOADED",
    "INTERNAL",
)

MAX_PROMPT_CHARS = 32768
MAX_JOB_ID_CHARS = 256
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 256
MAX_MESSAGES = 256
MAX_LOGPROBS = 20
UINT64_MAX = 2**64 - 1

_EXECUTE_FIELDS = frozenset(
    {
        "type",
        "job_id",
        "prompt",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repetition_penalty",
        "presence_penalty",
        "frequency_penalty",
        "stop",
        "seed",
        "ignore_eos",
        "logprobs",
    }
)
_CANCEL_FIELDS = frozenset({"type", "job_id"})


class ProtocolError(InvalidRequest):
    """A client frame broke the protocol; ``job_id`` is the job it names, when it names one."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class Limits:
    """Server-side bounds a request is checked against (set by ``orcd serve`` arguments)."""

    max_tokens_out: int = 2048
    max_prompt_chars: int = MAX_PROMPT_CHARS


@dataclass(frozen=True, slots=True)
class ExecuteRequest:
    """A validated ``execute`` message. Exactly one of ``prompt`` and ``messages`` is set."""

    job_id: str
    prompt: str | None
    messages: tuple[tuple[str, str], ...] | None
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    logprobs: int | None = None  # None: off; N: the sampled token's logprob plus the top N
    explicit: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """A validated ``cancel`` message."""

    job_id: str


def _reject_constant(name: str) -> float:
    # json.loads accepts NaN/Infinity by default; they are not JSON and not valid parameters.
    raise ValueError(f"{name} is not valid JSON")


def decode_frame(frame: str | bytes) -> dict[str, Any]:
    """Parse one client frame into a JSON object, or raise :class:`ProtocolError`."""
    if isinstance(frame, bytes | bytearray | memoryview):
        raise ProtocolError("binary frames are not part of the protocol: send JSON text frames")
    try:
        obj = json.loads(frame, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame must be a JSON object, got {_json_type(obj)}")
    return obj


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_client_message(obj: dict[str, Any], limits: Limits) -> ExecuteRequest | CancelRequest:
    """Validate a decoded client message by its ``type``."""
    job_id = obj.get("job_id") if isinstance(obj.get("job_id"), str) else None
    kind = obj.get("type")
    if kind is None:
        raise ProtocolError("missing field 'type' (one of 'execute', 'cancel')", job_id)
    if not isinstance(kind, str):
        raise ProtocolError(f"field 'type' must be a string, got {_json_type(kind)}", job_id)
    if kind == "execute":
        return parse_execute(obj, limits)
    if kind == "cancel":
        return parse_cancel(obj)
    raise ProtocolError(
        f"unknown message type {kind[:64]!r}: expected 'execute' or 'cancel'", job_id
    )


def _job_id(obj: dict[str, Any]) -> str:
    if "job_id" not in obj:
        raise ProtocolError("missing field 'job_id'")
    job_id = obj["job_id"]
    if not isinstance(job_id, str):
        raise ProtocolError(f"field 'job_id' must be a string, got {_json_type(job_id)}")
    if not job_id:
        raise ProtocolError("field 'job_id' must be a non-empty string")
    if len(job_id) > MAX_JOB_ID_CHARS:
        raise ProtocolError(
            f"field 'job_id' is {len(job_id)} characters; at most {MAX_JOB_ID_CHARS} allowed"
        )
    return job_id


def parse_cancel(obj: dict[str, Any]) -> CancelRequest:
    """Validate a ``cancel`` message."""
    job_id = _job_id(obj)
    unknown = sorted(set(obj) - _CANCEL_FIELDS)
    if unknown:
        raise ProtocolError(f"unknown field {unknown[0]!r} in 'cancel'", job_id)
    return CancelRequest(job_id=job_id)


def _number(obj: dict[str, Any], name: str, lo: float, hi: float, job_id: str, *,
            lo_open: bool = False) -> float:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"field {name!r} must be a number, got {_json_type(value)}", job_id)
    value = float(value)
    if not math.isfinite(value):
        raise ProtocolError(f"field {name!r} must be finite", job_id)
    low_ok = value > lo if lo_open else value >= lo
    if not low_ok or value > hi:
        bracket = "(" if lo_open else "["
        raise ProtocolError(
            f"field {name!r} must be in {bracket}{lo:g}, {hi:g}], got {value:g}", job_id
        )
    return value


def _integer(obj: dict[str, Any], name: str, lo: int, hi: int, job_id: str) -> int:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int):
        # 3.0 from a JavaScript client is still an integer; 3.5 is not.
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        else:
            raise ProtocolError(
                f"field {name!r} must be an integer, got {_json_type(value)}"
                + (f" {value!r}" if isinstance(value, float) else ""),
                job_id,
            )
    if value < lo or value > hi:
        raise ProtocolError(f"field {name!r} must be in [{lo}, {hi}], got {value}", job_id)
    return value


def _boolean(obj: dict[str, Any], name: str, job_id: str) -> bool:
    value = obj[name]
    if not isinstance(value, bool):
        raise ProtocolError(f"field {name!r} must be true or false, got {_json_type(value)}",
                            job_id)
    return value


def _messages(value: Any, limits: Limits, job_id: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise ProtocolError(f"field 'messages' must be an array, got {_json_type(value)}", job_id)
    if not value:
        raise ProtocolError("field 'messages' must not be empty", job_id)
    if len(value) > MAX_MESSAGES:
        raise ProtocolError(
            f"field 'messages' has {len(value)} entries; at most {MAX_MESSAGES} allowed", job_id
        )
    out: list[tuple[str, str]] = []
    total = 0
    for i, msg in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise ProtocolError(f"{where} must be an object, got {_json_type(msg)}", job_id)
        extra = sorted(set(msg) - {"role", "content"})
        if extra:
            raise ProtocolError(f"unknown field {extra[0]!r} in {where}", job_id)
        role, content = msg.get("role"), msg.get("content")
        if not isinstance(role, str) or not role:
            raise ProtocolError(f"{where}.role must be a non-empty string", job_id)
        if role not in ("system", "user", "assistant", "tool"):
            raise ProtocolError(
                f"{where}.role must be 'system', 'user', 'assistant' or 'tool', got {role[:32]!r}",
                job_id,
            )
        if not isinstance(content, str):
            raise ProtocolError(f"{where}.content must be a string, got {_json_type(content)}",
                                job_id)
        total += len(content)
        out.append((role, content))
    if total > limits.max_prompt_chars:
        raise ProtocolError(
            f"field 'messages' holds {total} characters of content; at most "
            f"{limits.max_prompt_chars} allowed",
            job_id,
        )
    if not any(content for _, content in out):
        raise ProtocolError("field 'messages' has no non-empty content", job_id)
    return tuple(out)


def _stop(value: Any, job_id: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ProtocolError(
            f"field 'stop' must be a string or an array of strings, got {_json_type(value)}",
            job_id,
        )
    if len(value) > MAX_STOP_STRINGS:
        raise ProtocolError(
            f"field 'stop' has {len(value)} strings; at most {MAX_STOP_STRINGS} allowed", job_id
        )
    for i, s in enumerate(value):
        if not isinstance(s, str):
            raise ProtocolError(f"stop[{i}] must be a string, got {_json_type(s)}", job_id)
        if not s:
            raise ProtocolError(f"stop[{i}] must not be empty", job_id)
        if len(s) > MAX_STOP_CHARS:
            raise ProtocolError(f"stop[{i}] is longer than {MAX_STOP_CHARS} characters", job_id)
    return tuple(value)


def parse_execute(obj: dict[str, Any], limits: Limits) -> ExecuteRequest:
    """Validate an ``execute`` message against the protocol and the server's limits."""
    job_id = _job_id(obj)
    unknown = sorted(set(obj) - _EXECUTE_FIELDS)
    if unknown:
        raise ProtocolError(f"unknown field {unknown[0]!r} in 'execute'", job_id)

    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if has_prompt and has_messages:
        raise ProtocolError("give either 'prompt' or 'messages', not both", job_id)
    if not has_prompt and not has_messages:
        raise ProtocolError("missing field 'prompt' (or 'messages')", job_id)
    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None
    if has_prompt:
        prompt = obj["prompt"]
        if not isinstance(prompt, str):
            raise ProtocolError(f"field 'prompt' must be a string, got {_json_type(prompt)}",
                                job_id)
        if not prompt:
            raise ProtocolError("field 'prompt' must not be empty", job_id)
        if len(prompt) > limits.max_prompt_chars:
            raise ProtocolError(
                f"field 'prompt' is {len(prompt)} characters; at most "
                f"{limits.max_prompt_chars} allowed",
                job_id,
            )
    else:
        messages = _messages(obj["messages"], limits, job_id)

    kw: dict[str, Any] = {}
    if "max_tokens" in obj:
        kw["max_tokens"] = _integer(obj, "max_tokens", 1, limits.max_tokens_out, job_id)
    if "temperature" in obj:
        kw["temperature"] = _number(obj, "temperature", 0.0, 2.0, job_id)
    if "top_p" in obj:
        kw["top_p"] = _number(obj, "top_p", 0.0, 1.0, job_id, lo_open=True)
    if "top_k" in obj:
        kw["top_k"] = _integer(obj, "top_k", 0, 2**31 - 1, job_id)
    if "min_p" in obj:
        kw["min_p"] = _number(obj, "min_p", 0.0, 1.0, job_id)
    if "repetition_penalty" in obj:
        kw["repetition_penalty"] = _number(obj, "repetition_penalty", 0.0, 2.0, job_id,
                                           lo_open=True)
    if "presence_penalty" in obj:
        kw["presence_penalty"] = _number(obj, "presence_penalty", -2.0, 2.0, job_id)
    if "frequency_penalty" in obj:
        kw["frequency_penalty"] = _number(obj, "frequency_penalty", -2.0, 2.0, job_id)
    if "stop" in obj:
        kw["stop"] = _stop(obj["stop"], job_id)
    if "seed" in obj and obj["seed"] is not None:
        value = obj["seed"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(
                f"field 'seed' must be an unsigned 64-bit integer, got {_json_type(value)}", job_id
            )
        if value < 0 or value > UINT64_MAX:
            raise ProtocolError(f"field 'seed' must be in [0, 2**64-1], got {value}", job_id)
        kw["seed"] = value
    if "ignore_eos" in obj:
        kw["ignore_eos"] = _boolean(obj, "ignore_eos", job_id)
    if "logprobs" in obj and obj["logprobs"] is not None:
        value = obj["logprobs"]
        if isinstance(value, bool):
            # true: the sampled token's logprob only; N: plus the top N alternatives
            kw["logprobs"] = 0 if value else None
        else:
            kw["logprobs"] = _integer(obj, "logprobs", 0, MAX_LOGPROBS, job_id)
    max_tokens = kw.pop("max_tokens", min(256, limits.max_tokens_out))
    return ExecuteRequest(
        job_id=job_id,
        prompt=prompt,
        messages=messages,
        max_tokens=max_tokens,
        explicit=frozenset(k for k in obj if k not in ("type", "job_id")),
        **kw,
    )


# ---- server -> client events -------------------------------------------------------------

def encode(event: dict[str, Any]) -> str:
    """Serialize one server event as a compact JSON text frame (UTF-8 kept, not escaped)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def started_event(job_id: str, model: str, started_at: float, prompt_tokens: int) -> dict:
    """``started``: the job was accepted by the engine; ``started_at`` is Unix seconds."""
    return {
        "type": "started",
        "job_id": job_id,
        "model": model,
        "started_at": round(started_at, 6),
        "prompt_tokens": prompt_tokens,
    }


def token_event(job_id: str, text: str, index: int, token_id: int,
                logprob: float | None = None, top_logprobs: list | None = None) -> dict:
    """``token``: one generated token; ``t`` is the text it completes (may be empty)."""
    ev: dict[str, Any] = {"type": "token", "job_id": job_id, "t": text, "i": index, "id": token_id}
    if logprob is not None:
        ev["logprob"] = logprob
    if top_logprobs is not None:
        ev["top_logprobs"] = top_logprobs
    return ev


def end_event(job_id: str, tokens_out: int, decode_time_ms: float, finish_reason: str) -> dict:
    """``end``: the job finished normally (``finish_reason`` is ``stop`` or ``length``)."""
    return {
        "type": "end",
        "job_id": job_id,
        "tokens_out": tokens_out,
        "decode_time_ms": round(decode_time_ms, 3),
        "finish_reason": finish_reason,
    }


def error_event(job_id: str | None, code: str, message: str, retriable: bool) -> dict:
    """``error``: the terminal event of a failed job, or a protocol error (job_id may be null)."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return {
        "type": "error",
        "job_id": job_id,
        "code": code,
        "message": message,
        "retriable": retriable,
    }
