"""Clients for a worker's streaming protocol (docs/protocol.md): asyncio and blocking.

    from orcd_toolkit.client import Client
    with Client("ws://127.0.0.1:8080/v1/stream") as c:
        for ev in c.stream(prompt="Write a haiku about GPU computing", seed=42,
                           temperature=0.7, max_tokens=48):
            if ev["type"] == "token":
                print(ev["t"], end="", flush=True)

``AsyncClient`` multiplexes several jobs over one connection (one reader task routes events
by ``job_id``); ``Client`` runs one job at a time on a blocking connection. Both read
``/health`` and ``/metrics`` over plain HTTP on the same port.
"""

from __future__ import annotations

from orcd_toolkit.client._async import AsyncClient, AsyncJob
from orcd_toolkit.client._common import Completion, JobFailed, http_get, http_url
from orcd_toolkit.client._sync import Client

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "Client",
    "Completion",
    "JobFailed",
    "http_get",
    "http_url",
]
