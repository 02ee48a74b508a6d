"""The clients: interleaved jobs on one blocking connection, result helpers, URLs."""

from __future__ import annotations

import asyncio

import pytest
from server_double import DoubleRuntime

from orcd_toolkit.client import AsyncClient, Client, Completion, JobFailed, http_url


def test_blocking_client_keeps_events_of_interleaved_jobs(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.005))
    with Client(rs.url, event_timeout=10) as c:
        alone = {k: c.generate(prompt=f"p{k}", seed=k, max_tokens=6).token_ids for k in range(3)}
        ids = [c.submit(prompt=f"p{k}", seed=k, max_tokens=6, job_id=f"j{k}") for k in range(3)]
        # read them in reverse order, and interleave two readers: nothing is lost
        a, b = c.events("j2"), c.events("j1")
        first_a, first_b = next(a), next(b)
        rest = {"j2": [first_a, *a], "j1": [first_b, *b], "j0": list(c.events("j0"))}
        for k, job in enumerate(ids):
            comp = Completion(job)
            for ev in rest[job]:
                comp.add(ev)
            assert comp.started is not None and comp.end is not None
            assert comp.token_ids == alone[k]
        c.send_raw("{broken")
        assert c.generate(prompt="after", max_tokens=1).end is not None
        assert c.unrouted and c.unrouted[0]["code"] == "INVALID_REQUEST"


def test_async_client_cancel_and_unrouted(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.01))

    async def go():
        async with AsyncClient(rs.url) as c:
            job = await c.submit(prompt="x", max_tokens=1000)
            seen = []
            async for ev in job:
                seen.append(ev)
                if ev["type"] == "token":
                    await job.cancel()
            await c.send_raw({"type": "nope"})
            bad = await asyncio.wait_for(c.unrouted.get(), 5)
            h = await c.health()
            return seen, bad, h

    seen, bad, (status, health) = asyncio.run(go())
    assert seen[-1]["code"] == "CANCELLED"
    assert bad["code"] == "INVALID_REQUEST" and bad["job_id"] is None
    assert status == 200 and health["status"] == "ready"


def test_completion_and_errors() -> None:
    comp = Completion("j")
    for ev in ({"type": "started", "job_id": "j"}, {"type": "token", "t": "a", "id": 1, "i": 0},
               {"type": "token", "t": "b", "id": 2, "i": 1},
               {"type": "error", "job_id": "j", "code": "VRAM_OOM", "message": "m",
                "retriable": True}):
        comp.add(ev)
    assert comp.text == "ab" and comp.token_ids == [1, 2] and comp.finish_reason is None
    with pytest.raises(JobFailed) as info:
        comp.raise_for_error()
    assert info.value.code == "VRAM_OOM" and info.value.retriable
    assert http_url("ws://h:1/v1/stream", "/health") == "http://h:1/health"
    assert http_url("wss://h/v1/stream", "/metrics") == "https://h/metrics"
    from orcd_toolkit.client._common import execute_message

    with pytest.raises(ValueError, match="exactly one"):
        execute_message("a", [{"role": "user", "content": "b"}], None, {})
    msg = execute_message("a", None, None, {"seed": 3, "top_k": None})
    assert msg["seed"] == 3 and "top_k" not in msg and msg["job_id"]
