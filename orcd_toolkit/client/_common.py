"""Pieces both clients share: the result type, the job error, request building, HTTP GET."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from orcd_toolkit.errors import OrcdError

TERMINAL = ("end", "error")


class JobFailed(OrcdError):
    """A job ended with an ``error`` event; ``code`` and ``retriable`` are the server's."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(f"{event.get('code')}: {event.get('message')}")
        self.code = str(event.get("code", "INTERNAL"))
        self.retriable = bool(event.get("retriable", False))
        self.event = event


@dataclass
class Completion:
    """Everything one job streamed, in order; ``error`` is its error event when it failed."""

    job_id: str
    pieces: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    started: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def finish_reason(self) -> str | None:
        return self.end["finish_reason"] if self.end else None

    def add(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)
        kind = ev.get("type")
        if kind == "token":
            self.pieces.append(ev["t"])
            self.token_ids.append(ev["id"])
        elif kind == "started":
            self.started = ev
        elif kind == "end":
            self.end = ev
        elif kind == "error":
            self.error = ev
        elif kind == "metrics":
            self.metrics = ev

    def raise_for_error(self) -> Completion:
        if self.error is not None:
            raise JobFailed(self.error)
        return self


def execute_message(prompt: str | None, messages: list[dict[str, str]] | None,
                    job_id: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """An ``execute`` frame; ``None`` parameters are left out (server defaults apply)."""
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of prompt= and messages=")
    msg: dict[str, Any] = {"type": "execute", "job_id": job_id or uuid.uuid4().hex}
    if prompt is not None:
        msg["prompt"] = prompt
    else:
        msg["messages"] = messages
    msg.update({k: v for k, v in params.items() if v is not None})
    return msg


def http_url(ws_url: str, path: str) -> str:
    """The HTTP URL of ``path`` on the server a WebSocket URL points at."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def http_get(url: str, api_key: str | None = None, timeout: float = 10.0
             ) -> tuple[int, str, bytes]:
    """GET ``url``: (status, content type, body); HTTP error statuses are returned, not raised."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def parse_health(body: bytes) -> dict[str, Any]:
    return json.loads(body)
