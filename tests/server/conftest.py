"""Fixtures for the server tests: a WorkerServer on a loopback port, in a background thread."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from server_double import DoubleRuntime, factory_for

from orcd_toolkit.server.app import ServerConfig, WorkerServer
from orcd_toolkit.server.logs import EventLog


@dataclass
class RunningServer:
    server: WorkerServer
    runtime: DoubleRuntime | None
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    log: io.StringIO
    result: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.bound_port}/v1/stream"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.bound_port}"

    def shutdown(self, timeout: float = 20.0) -> int:
        self.loop.call_soon_threadsafe(self.server.request_shutdown, "test")
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("server did not stop")
        return self.result.get("rc", -1)


def start_server(runtime: DoubleRuntime | None = None, *, factory=None, wait_ready: bool = True,
                 **cfg) -> RunningServer:
    """Start a WorkerServer on 127.0.0.1 with an ephemeral port; wait until it is ready."""
    runtime = runtime if runtime is not None or factory is not None else DoubleRuntime()
    factory = factory or factory_for(runtime)
    cfg.setdefault("ping_interval_s", None)
    cfg.setdefault("drain_timeout_s", 2.0)
    config = ServerConfig(host="127.0.0.1", port=0, model_name="double-model", **cfg)
    log = io.StringIO()
    server = WorkerServer(config, factory, EventLog("json", stream=log, level="debug"))
    started = threading.Event()
    holder: dict = {}

    def main() -> None:
        async def go() -> None:
            holder["loop"] = asyncio.get_running_loop()
            await server.start()
            started.set()
            holder["rc"] = await server.run(install_signals=False)

        try:
            asyncio.run(go())
        finally:
            started.set()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    if not started.wait(10):
        raise TimeoutError("server did not bind")
    rs = RunningServer(server, runtime, thread, holder["loop"], log, holder)
    if wait_ready:
        deadline = time.monotonic() + 10
        while not server._ready.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("server did not become ready")
            time.sleep(0.01)
    return rs


@pytest.fixture
def serve_double() -> Iterator[Callable[..., RunningServer]]:
    """Factory fixture: ``rs = serve_double(DoubleRuntime(...), max_concurrent=4)``."""
    started: list[RunningServer] = []

    def make(runtime: DoubleRuntime | None = None, **kw) -> RunningServer:
        rs = start_server(runtime, **kw)
        started.append(rs)
        return rs

    yield make
    for rs in started:
        if rs.thread.is_alive():
            rs.shutdown()


@pytest.fixture
def server(serve_double) -> RunningServer:
    return serve_double()
