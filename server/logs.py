"""Structured event logs: one line per event, human-readable or JSON (``--log-format json``).

Events are named (``server.start``, ``model.load``, ``server.ready``, ``job.start``,
``job.end``, ``job.error``, ``server.shutdown`` ...) and carry key/value fields, so an
orchestrator can parse them and a person can read them. Prompt text is never a field unless
the operator asked for it (``--log-prompts``): the server passes it only then.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")


class EventLog:
    """Thread-safe line logger; the engine thread and the asyncio thread both write."""

    def __init__(self, fmt: str = "human", stream: TextIO | None = None,
                 level: str = "info") -> None:
        if fmt not in ("human", "json"):
            raise ValueError(f"log format must be 'human' or 'json', got {fmt!r}")
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {LEVELS}, got {level!r}")
        self.fmt = fmt
        self._stream = stream
        self._min = LEVELS.index(level)
        self._lock = threading.Lock()

    def event(self, name: str, level: str = "info", **fields: Any) -> None:
        """Write one event (dropped below the configured level)."""
        if LEVELS.index(level) < self._min:
            return
        now = time.time()
        if self.fmt == "json":
            record = {"ts": _iso(now), "level": level, "event": name}
            record.update(fields)
            line = json.dumps(record, ensure_ascii=False, default=str)
        else:
            parts = [_iso(now), level.upper().ljust(7), name]
            for k, v in fields.items():
                if v is None:
                    continue
                text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
                if isinstance(v, str) and (not v or any(c in v for c in ' "=\n')):
                    text = json.dumps(v, ensure_ascii=False)
                parts.append(f"{k}={text}")
            line = " ".join(parts)
        stream = self._stream if self._stream is not None else sys.stderr
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                # A closed or broken log stream must not take the worker down.
                pass


def _iso(t: float) -> str:
    ms = int((t % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ms:03d}Z"
