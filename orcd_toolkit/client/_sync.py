"""The blocking client: one job at a time on a ``websockets.sync`` connection."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from websockets.sync.client import ClientConnection, connect

from orcd_toolkit.client._common import (
    TERMINAL,
    Completion,
    execute_message,
    http_get,
    http_url,
)
from orcd_toolkit.server.metrics import parse_exposition


class Client:
    """``with Client(url) as c: print(c.generate(prompt="hi", max_tokens=8).text)``."""

    def __init__(self, url: str = "ws://127.0.0.1:8080/v1/stream", *,
                 api_key: str | None = None, open_timeout: float = 10.0,
                 event_timeout: float | None = 300.0) -> None:
        self.url = url
        self.api_key = api_key
        self.open_timeout = open_timeout
        self.event_timeout = event_timeout
        self._ws: ClientConnection | None = None
        self._stack = ExitStack()
        # events read while waiting for another job, kept for that job's reader
        self._pending: dict[str, deque[dict[str, Any]]] = {}
        self.unrouted: list[dict[str, Any]] = []

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        # Entered as a context manager: websockets >= 17.1 deprecates bare connect().
        self._ws = self._stack.enter_context(connect(
            self.url, additional_headers=headers, open_timeout=self.open_timeout,
            max_size=None, compression=None))

    def close(self) -> None:
        self._stack.close()

    @property
    def ws(self) -> ClientConnection:
        if self._ws is None:
            raise ConnectionError("not connected: use `with Client(...)` or call connect()")
        return self._ws

    def send_raw(self, message: dict[str, Any] | str | bytes) -> None:
        """Send any frame as it is (tests of the server's validation use this)."""
        self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    def recv_event(self, timeout: float | None = None) -> dict[str, Any]:
        """The next event from the server (TimeoutError after ``timeout`` seconds)."""
        return json.loads(self.ws.recv(timeout=timeout if timeout is not None
                                       else self.event_timeout))

    def submit(self, prompt: str | None = None, *, messages: list[dict[str, str]] | None = None,
               job_id: str | None = None, **params: Any) -> str:
        """Send an ``execute`` and return its job id; read events with :meth:`events`."""
        msg = execute_message(prompt, messages, job_id, params)
        self.send_raw(msg)
        return msg["job_id"]

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Events of ``job_id`` until its terminal event; other jobs' events read meanwhile
        are kept for their own ``events`` call (events with no job go to ``unrouted``)."""
        while True:
            buffered = self._pending.get(job_id)
            if buffered:
                ev = buffered.popleft()
            else:
                ev = self.recv_event()
                owner = ev.get("job_id")
                if owner != job_id:
                    if isinstance(owner, str):
                        self._pending.setdefault(owner, deque()).append(ev)
                    else:
                        self.unrouted.append(ev)
                    continue
            yield ev
            if ev.get("type") in TERMINAL:
                self._pending.pop(job_id, None)
                return

    def stream(self, prompt: str | None = None, **kw: Any) -> Iterator[dict[str, Any]]:
        """Submit and yield the job's events as they arrive."""
        job_id = self.submit(prompt, **kw)
        yield from self.events(job_id)

    def generate(self, prompt: str | None = None, **kw: Any) -> Completion:
        """Submit and collect the whole result (call ``.raise_for_error()`` to raise)."""
        job_id = self.submit(prompt, **kw)
        comp = Completion(job_id)
        for ev in self.events(job_id):
            comp.add(ev)
        return comp

    def cancel(self, job_id: str) -> None:
        self.send_raw({"type": "cancel", "job_id": job_id})

    def health(self) -> tuple[int, dict[str, Any]]:
        status, _, body = http_get(http_url(self.url, "/health"))
        return status, json.loads(body)

    def metrics(self) -> dict[str, float]:
        status, _, body = http_get(http_url(self.url, "/metrics"), self.api_key)
        if status != 200:
            raise ConnectionError(f"/metrics answered HTTP {status}")
        return parse_exposition(body.decode())
