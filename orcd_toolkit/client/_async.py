"""The asyncio client: several jobs over one connection, events routed by ``job_id``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from orcd_toolkit.client._common import (
    TERMINAL,
    Completion,
    execute_message,
    http_get,
    http_url,
)
from orcd_toolkit.server.metrics import parse_exposition


class AsyncJob:
    """One submitted job; iterate it for its events (ends after the terminal event)."""

    def __init__(self, client: AsyncClient, job_id: str, queue_size: int) -> None:
        self.client = client
        self.job_id = job_id
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(queue_size)
        self.done = False

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while not self.done:
            ev = await self._queue.get()
            if ev is None:  # connection lost
                self.done = True
                raise ConnectionError(f"connection closed before job {self.job_id!r} ended")
            if ev.get("type") in TERMINAL:
                self.done = True
            yield ev

    async def result(self) -> Completion:
        """Collect every event into a :class:`Completion` (does not raise on error events)."""
        comp = Completion(self.job_id)
        async for ev in self:
            comp.add(ev)
        return comp

    async def cancel(self) -> None:
        await self.client.cancel(self.job_id)


class AsyncClient:
    """``async with AsyncClient(url) as c: job = await c.submit(prompt="hi")``."""

    def __init__(self, url: str = "ws://127.0.0.1:8080/v1/stream", *,
                 api_key: str | None = None, open_timeout: float = 10.0,
                 queue_size: int = 4096) -> None:
        self.url = url
        self.api_key = api_key
        self.open_timeout = open_timeout
        self.queue_size = queue_size
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._jobs: dict[str, AsyncJob] = {}
        self.unrouted: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.close_code: int | None = None
        self.close_reason: str | None = None

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        self._ws = await connect(self.url, additional_headers=headers,
                                 open_timeout=self.open_timeout, max_size=None,
                                 compression=None)
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for frame in self._ws:
                ev = json.loads(frame)
                job = self._jobs.get(ev.get("job_id")) if isinstance(ev, dict) else None
                if job is None:
                    await self.unrouted.put(ev)
                    continue
                await job._queue.put(ev)
                if ev.get("type") in TERMINAL:
                    self._jobs.pop(job.job_id, None)
        except ConnectionClosed:
            pass
        finally:
            if self._ws.close_code is not None:
                self.close_code = self._ws.close_code
                self.close_reason = self._ws.close_reason
            for job in self._jobs.values():
                job._queue.put_nowait(None)
            self._jobs.clear()

    async def send_raw(self, message: dict[str, Any] | str | bytes) -> None:
        """Send any frame as it is (tests of the server's validation use this)."""
        assert self._ws is not None, "not connected"
        await self._ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def submit(self, prompt: str | None = None, *, messages: list[dict[str, str]] | None =
                     None, job_id: str | None = None, **params: Any) -> AsyncJob:
        """Send an ``execute``; parameters as in docs/protocol.md (max_tokens, seed, ...)."""
        msg = execute_message(prompt, messages, job_id, params)
        job = AsyncJob(self, msg["job_id"], self.queue_size)
        self._jobs[job.job_id] = job
        await self.send_raw(msg)
        return job

    async def generate(self, prompt: str | None = None, **kw: Any) -> Completion:
        """Submit and wait for the whole result."""
        job = await self.submit(prompt, **kw)
        return await job.result()

    async def cancel(self, job_id: str) -> None:
        await self.send_raw({"type": "cancel", "job_id": job_id})

    async def health(self) -> tuple[int, dict[str, Any]]:
        status, _, body = await asyncio.to_thread(http_get, http_url(self.url, "/health"))
        return status, json.loads(body)

    async def metrics(self) -> dict[str, float]:
        status, _, body = await asyncio.to_thread(
            http_get, http_url(self.url, "/metrics"), self.api_key)
        if status != 200:
            raise ConnectionError(f"/metrics answered HTTP {status}")
        return parse_exposition(body.decode())
