"""The real ``orcd serve`` as a subprocess, and the scenarios both end-to-end suites run on it.

test_server_e2e.py (SmolLM2, mostly slow) and test_server_e2e_tiny.py (a tiny random-weight
model, default suite) check the same properties of the real stack at different speeds; the
process handling and the multi-job scenarios live here once, the assertions and the bounds
that depend on the model stay in each test. Not collected: the name does not start with
``test_``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orcd_toolkit.client import AsyncClient, Completion, http_get
from orcd_toolkit.server.metrics import parse_exposition

LOAD_TIMEOUT_S = 300.0


@dataclass
class ServeProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def metric(self, name: str) -> float:
        status, _, body = http_get(self.base + "/metrics")
        assert status == 200
        return parse_exposition(body.decode())[name]

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
        return self.proc.returncode


def start_serve(model: Path, tmp: Path, *extra: str) -> ServeProcess:
    """Start ``orcd serve`` on a free loopback port; wait (bounded) until /health is 200."""
    log_path = tmp / f"serve-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-m", "orcd_toolkit", "serve", "--model", str(model),
           "--device", "cpu", "--host", "127.0.0.1", "--port", "0", "--log-format", "json",
           "--kv-cache-size-mb", "64", *extra]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "ORCD_OFFLINE": "1"})
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    port = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"orcd serve exited {proc.returncode}:\n{log_path.read_text()}")
        if port is None:
            for line in log_path.read_text().splitlines():
                if '"server.start"' in line:
                    port = json.loads(line)["port"]
        elif http_get(f"http://127.0.0.1:{port}/health")[0] == 200:
            return ServeProcess(proc, port, log_path)
        time.sleep(0.2)
    proc.kill()
    proc.wait(10)
    raise TimeoutError(f"orcd serve not ready in {LOAD_TIMEOUT_S} s:\n{log_path.read_text()}")


def wait_kv_free(sp: ServeProcess, t0: float, limit_s: float, poll_s: float) -> float:
    """Seconds from ``t0`` until the server reports no KV block in use (asserts < limit_s)."""
    while sp.metric("orcd_kv_cache_blocks_used") > 0:
        assert time.monotonic() - t0 < limit_s, "KV blocks never freed"
        time.sleep(poll_s)
    return time.monotonic() - t0


def batch_invariance_runs(url: str, jobs: list[dict]) -> tuple[list, list, list]:
    """Token ids of ``jobs`` run one after another, all on one connection, and each on its
    own connection at once (in that order): batching must not change a seeded job."""
    async def alone() -> list[list[int]]:
        out = []
        async with AsyncClient(url) as c:
            for kw in jobs:
                out.append((await c.generate(**kw)).raise_for_error().token_ids)
        return out

    async def one_connection() -> list[list[int]]:
        async with AsyncClient(url) as c:
            submitted = [await c.submit(**kw) for kw in jobs]
            results = await asyncio.gather(*(j.result() for j in submitted))
        return [r.raise_for_error().token_ids for r in results]

    async def many_connections() -> list[list[int]]:
        async def one(kw):
            async with AsyncClient(url) as c:
                return (await c.generate(**kw)).raise_for_error().token_ids
        return list(await asyncio.gather(*(one(kw) for kw in jobs)))

    return asyncio.run(alone()), asyncio.run(one_connection()), asyncio.run(many_connections())


@dataclass
class DrainOutcome:
    results: list[Completion]
    late: Completion
    close_code: int | None
    rc: int
    elapsed_s: float


def sigterm_with_jobs_in_flight(sp: ServeProcess, jobs: list[dict], *, settle_s: float,
                                close_wait_s: float, exit_timeout_s: float) -> DrainOutcome:
    """Submit ``jobs`` on one connection, wait until each has started, SIGTERM the server,
    submit one more job ``settle_s`` later, collect every result and the close code (waiting
    up to ``close_wait_s``), then the exit status. The process is killed if anything fails."""
    async def scenario():
        async with AsyncClient(sp.url) as c:
            submitted = [await c.submit(**kw) for kw in jobs]
            for j in submitted:
                assert (await j.__aiter__().__anext__())["type"] == "started"
            sp.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(settle_s)
            late = await (await c.submit(prompt="late", max_tokens=2)).result()
            results = await asyncio.gather(*(j.result() for j in submitted))
            deadline = time.monotonic() + close_wait_s
            while c.close_code is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return list(results), late, c.close_code

    try:
        t0 = time.monotonic()
        results, late, close_code = asyncio.run(scenario())
        rc = sp.proc.wait(exit_timeout_s)
        elapsed = time.monotonic() - t0
    finally:
        if sp.proc.poll() is None:
            sp.proc.kill()
            sp.proc.wait(10)
    return DrainOutcome(results, late, close_code, rc, elapsed)
