"""Streaming behaviour against the deterministic runtime double: order, multiplexing,
cancel, disconnect, timeouts, bounds, backpressure, engine failures."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

import pytest
from server_double import SPLIT_FIRST, DoubleRuntime
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from orcd_toolkit.client import AsyncClient, Client

# A terminal event must reach the client within 100 ms of a cancel or drop. KV blocks are
# freed when the engine thread applies the abort at its next step boundary; the bound leaves
# room for a 2-core machine shared with other test runs (seen: 143 ms at load average 10).
KV_FREE_BOUND_S = 0.3


def wait_until(predicate, timeout: float = 2.0, interval: float = 0.002) -> float:
    """Poll ``predicate`` until true; returns the seconds it took (bounded loop)."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(interval)
    return time.monotonic() - t0


def kv_used(c: Client) -> float:
    return c.metrics()["orcd_kv_cache_blocks_used"]


def test_event_order_indices_and_utf8(server) -> None:
    with Client(server.url, event_timeout=10) as c:
        comp = c.generate(prompt="Write a haiku about GPU computing", max_tokens=40, seed=42)
    kinds = [e["type"] for e in comp.events]
    assert kinds[0] == "started" and kinds[-1] == "end"
    assert set(kinds[1:-1]) <= {"token", "metrics"}
    assert kinds.index("metrics") > max(i for i, k in enumerate(kinds) if k == "token")
    tokens = [e for e in comp.events if e["type"] == "token"]
    assert [t["i"] for t in tokens] == list(range(40))
    assert comp.end["tokens_out"] == 40 and comp.end["finish_reason"] == "length"
    assert comp.end["decode_time_ms"] > 0
    assert comp.started["prompt_tokens"] == len(b"Write a haiku about GPU computing")
    assert comp.started["model"] == "double-model"
    # every piece is a str that round-trips through UTF-8; a split character arrives whole
    for t in tokens:
        t["t"].encode("utf-8")
    split = [k for k, t in enumerate(tokens) if t["id"] == SPLIT_FIRST]
    assert split, "seed 42 should exercise a UTF-8 split token"
    assert all(tokens[k]["t"] == "" and tokens[k + 1]["t"] == "🧠" for k in split)


def test_same_seed_same_tokens_and_seeds_differ(server) -> None:
    with Client(server.url, event_timeout=10) as c:
        a = c.generate(prompt="p", max_tokens=20, seed=7, temperature=0.7)
        b = c.generate(prompt="p", max_tokens=20, seed=7, temperature=0.7)
        d = c.generate(prompt="p", max_tokens=20, seed=8, temperature=0.7)
    assert a.token_ids == b.token_ids and a.text == b.text
    assert a.token_ids != d.token_ids


def test_parameters_reach_the_runtime(server) -> None:
    with Client(server.url, event_timeout=10) as c:
        c.generate(messages=[{"role": "user", "content": "hi"}], max_tokens=3, top_k=5,
                   top_p=0.9, min_p=0.1, repetition_penalty=1.2, stop=["x"], seed=5,
                   ignore_eos=True, logprobs=True, job_id="params").raise_for_error()
    (_, req), = [s for s in server.runtime.submitted if s[1].job_id == "params"]
    assert req.messages == (("user", "hi"),) and req.prompt is None
    assert (req.top_k, req.top_p, req.min_p, req.repetition_penalty) == (5, 0.9, 0.1, 1.2)
    assert req.stop == ("x",) and req.seed == 5 and req.ignore_eos and req.logprobs == 0


def test_logprobs_are_streamed_when_asked(server) -> None:
    with Client(server.url, event_timeout=10) as c:
        with_lp = c.generate(prompt="p", max_tokens=3, logprobs=True)
        without = c.generate(prompt="p", max_tokens=3)
    assert all(e["logprob"] == -0.5 for e in with_lp.events if e["type"] == "token")
    assert all("logprob" not in e for e in without.events if e["type"] == "token")


def _seeded_jobs() -> list[dict]:
    return [dict(prompt=f"job {k} 並列 🚀", seed=1000 + k, temperature=0.7, max_tokens=12 + k,
                 job_id=f"job{k}") for k in range(6)]


def test_six_jobs_on_one_and_on_six_connections_equal_each_alone(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.002))

    async def alone() -> list[list[int]]:
        out = []
        async with AsyncClient(rs.url) as c:
            for kw in _seeded_jobs():
                out.append((await c.generate(**kw)).token_ids)
        return out

    async def one_connection() -> list[list[int]]:
        async with AsyncClient(rs.url) as c:
            jobs = [await c.submit(**kw) for kw in _seeded_jobs()]
            results = await asyncio.gather(*(j.result() for j in jobs))
        return [r.raise_for_error().token_ids for r in results]

    async def six_connections() -> list[list[int]]:
        async def one(kw):
            async with AsyncClient(rs.url) as c:
                return (await c.generate(**kw)).raise_for_error().token_ids
        return list(await asyncio.gather(*(one(kw) for kw in _seeded_jobs())))

    ref = asyncio.run(alone())
    assert [len(r) for r in ref] == [12 + k for k in range(6)]
    assert asyncio.run(one_connection()) == ref
    assert asyncio.run(six_connections()) == ref
    assert rs.runtime.steps < sum(len(r) for r in ref) * 3  # jobs really were batched


def test_cancel_ends_within_100ms_frees_kv_and_is_idempotent(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.02))
    with Client(rs.url, event_timeout=10) as c:
        job = c.submit(prompt="long " * 40, max_tokens=2000, job_id="c1")
        events = c.events(job)
        assert next(events)["type"] == "started"
        for _ in range(3):
            assert next(events)["type"] == "token"
        wait_until(lambda: kv_used(c) > 0)
        t0 = time.monotonic()
        c.cancel("c1")
        ev = next(e for e in events if e["type"] != "token")
        latency = time.monotonic() - t0
        assert ev["type"] == "error" and ev["code"] == "CANCELLED" and ev["job_id"] == "c1"
        assert ev["retriable"] is False
        assert latency < 0.1, f"cancel took {latency * 1e3:.1f} ms"
        wait_until(lambda: kv_used(c) == 0, timeout=1.0)
        freed = time.monotonic() - t0
        assert freed < KV_FREE_BOUND_S, f"KV freed {freed * 1e3:.1f} ms after the cancel"
        assert rs.runtime.aborted == ["1/1/c1"]
        # idempotent: cancelling again (or an unknown job) sends nothing; the next job works
        c.cancel("c1")
        c.cancel("never-existed")
        comp = c.generate(prompt="next", max_tokens=2)
        assert comp.events[0]["type"] == "started" and comp.end is not None
        assert rs.runtime.aborted == ["1/1/c1"]
    assert rs.server.metrics.requests.value(outcome="cancelled") == 1


def test_cancel_answers_at_once_even_while_a_long_step_runs(serve_double) -> None:
    # A step of 400 ms (a long prefill chunk on the CPU backend): the client's CANCELLED must
    # not wait for it; the engine frees the KV blocks at the step boundary that follows.
    rs = serve_double(DoubleRuntime(step_s=0.4))
    with Client(rs.url, event_timeout=10) as c:
        c.submit(prompt="x", max_tokens=100, job_id="long")
        events = c.events("long")
        assert next(events)["type"] == "started"
        assert next(events)["type"] == "token"
        time.sleep(0.05)  # the engine is inside its next step now
        t0 = time.monotonic()
        c.cancel("long")
        ev = next(e for e in events if e["type"] != "token")
        assert ev["code"] == "CANCELLED"
        assert time.monotonic() - t0 < 0.1
        wait_until(lambda: kv_used(c) == 0, timeout=2.0)
        assert rs.runtime.aborted == ["1/1/long"]


def test_cancel_before_the_engine_has_the_job(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.01))
    with Client(rs.url, event_timeout=10) as c:
        # execute and cancel back to back: the cancel may reach the server while the prompt is
        # still being tokenized; either way exactly one terminal CANCELLED arrives.
        c.send_raw({"type": "execute", "job_id": "fast", "prompt": "x", "max_tokens": 2000})
        c.cancel("fast")
        evs = list(c.events("fast"))
        assert evs[-1]["code"] == "CANCELLED"
        assert sum(e["type"] in ("end", "error") for e in evs) == 1
        assert c.generate(prompt="ok", max_tokens=1).end is not None


def test_disconnect_aborts_all_jobs_and_frees_kv_within_100ms(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.02))
    with Client(rs.url, event_timeout=10) as watcher:
        c = Client(rs.url, event_timeout=10)
        c.connect()
        for k in range(3):
            c.submit(prompt="hold on " * 20, max_tokens=2000, job_id=f"d{k}")
        wait_until(lambda: len(rs.runtime._jobs) == 3)
        c.recv_event()
        wait_until(lambda: kv_used(watcher) > 0)
        t0 = time.monotonic()
        c.ws.socket.shutdown(socket.SHUT_RDWR)  # drop the TCP connection, no close handshake
        c.ws.socket.close()
        elapsed = wait_until(lambda: kv_used(watcher) == 0, timeout=2.0)
        assert elapsed < KV_FREE_BOUND_S, f"KV freed {elapsed * 1e3:.1f} ms after the drop"
        wait_until(lambda: not rs.server._jobs, timeout=1.0)
        assert sorted(a.rsplit("/", 1)[1] for a in rs.runtime.aborted) == ["d0", "d1", "d2"]
        assert time.monotonic() - t0 < 1.0
    assert rs.server.metrics.requests.value(outcome="cancelled") == 3


def test_inference_timeout(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.01), inference_timeout_s=0.15)
    with Client(rs.url, event_timeout=10) as c:
        comp = c.generate(prompt="slow", max_tokens=2000)
        assert comp.error["code"] == "INFERENCE_TIMEOUT"
        assert "0.15 s" in comp.error["message"]
        assert 0 < len(comp.token_ids) < 2000
        assert c.generate(prompt="quick", max_tokens=3).end is not None
    assert rs.server.metrics.requests.value(outcome="timeout") == 1


def test_bounds_per_connection_and_in_total(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.02), max_jobs_per_connection=2, max_concurrent=3)
    with Client(rs.url, event_timeout=10) as a, Client(rs.url, event_timeout=10) as b:
        for k in range(2):
            a.submit(prompt="x", max_tokens=2000, job_id=f"a{k}")
        a.submit(prompt="x", max_tokens=5, job_id="a2")
        ev = next(e for e in a.events("a2"))
        assert ev["type"] == "error" and ev["code"] == "OVERLOADED" and ev["retriable"] is True
        assert "per connection" in ev["message"]
        b.submit(prompt="x", max_tokens=2000, job_id="b0")
        b.submit(prompt="x", max_tokens=5, job_id="b1")
        ev = next(e for e in b.events("b1"))
        assert ev["code"] == "OVERLOADED" and "concurrent" in ev["message"]
        for job_id in ("a0", "a1"):
            a.cancel(job_id)
        b.cancel("b0")
    assert rs.server.metrics.requests.value(outcome="overloaded") == 2


def test_engine_queue_full_is_overloaded(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.02, max_waiting=1))
    with Client(rs.url, event_timeout=10) as c:
        c.submit(prompt="x", max_tokens=2000, job_id="first")
        assert next(c.events("first"))["type"] == "started"
        c.submit(prompt="x", max_tokens=2, job_id="second")
        ev = list(c.events("second"))[-1]
        assert ev["code"] == "OVERLOADED" and ev["retriable"] is True and "queue" in ev["message"]
        c.cancel("first")


def test_duplicate_job_id_is_refused_and_the_first_job_continues(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.01))
    with Client(rs.url, event_timeout=10) as c:
        c.submit(prompt="x", max_tokens=10, job_id="dup")
        c.submit(prompt="y", max_tokens=10, job_id="dup")
        evs = list(c.events("dup"))
        errors = [e for e in evs if e["type"] == "error"]
        assert len(errors) == 1 and errors[0]["code"] == "INVALID_REQUEST"
        assert "already running" in errors[0]["message"]
        rest = list(c.events("dup")) if evs[-1]["type"] == "error" else evs
        assert rest[-1]["type"] == "end" and rest[-1]["tokens_out"] == 10


def test_prompt_token_bounds(serve_double) -> None:
    rs = serve_double(DoubleRuntime(context_length=64), max_tokens_in=16)
    with Client(rs.url, event_timeout=10) as c:
        comp = c.generate(prompt="x" * 17, max_tokens=2)
        assert comp.error["code"] == "INVALID_REQUEST"
        assert "field 'prompt' is 17 tokens; at most 16" in comp.error["message"]
        comp = c.generate(prompt="x" * 16, max_tokens=49)
        assert "exceeds the context length 64" in comp.error["message"]
        assert c.generate(prompt="x" * 16, max_tokens=48).end is not None


def test_step_failure_ends_jobs_with_internal_and_the_worker_lives(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.001, fail_step_at=3))
    with Client(rs.url, event_timeout=10) as c:
        comp = c.generate(prompt="x", max_tokens=50)
        assert comp.error["code"] == "INTERNAL" and "RuntimeError" in comp.error["message"]
        assert len(comp.token_ids) == 2
        assert c.generate(prompt="again", max_tokens=5).end["tokens_out"] == 5
    assert '"event": "engine.step_crashed"' in rs.log.getvalue()


def test_vram_oom_in_a_step_is_retriable_and_the_worker_lives(serve_double) -> None:
    from orcd_toolkit.errors import VramOom

    rs = serve_double(DoubleRuntime(step_s=0.001, fail_step_at=2,
                                    fail_with=VramOom("cudaMalloc of 64 MiB failed")))

    with Client(rs.url, event_timeout=10) as c:
        comp = c.generate(prompt="p", max_tokens=50)
        assert comp.error["code"] == "VRAM_OOM" and comp.error["retriable"] is True
        assert "cudaMalloc" in comp.error["message"] and len(comp.token_ids) == 1
        assert c.generate(prompt="after", max_tokens=3).end is not None


def test_a_tokenizer_crash_is_internal_and_the_connection_lives(server) -> None:
    from server_double import CRASH_ENCODE

    with Client(server.url, event_timeout=10) as c:
        comp = c.generate(prompt=CRASH_ENCODE, max_tokens=3)
        assert comp.error["code"] == "INTERNAL" and "ValueError" in comp.error["message"]
        assert c.generate(prompt="fine", max_tokens=2).end is not None
    assert '"event": "job.encode_crashed"' in server.log.getvalue()


def test_a_submit_crash_is_internal_and_the_engine_keeps_running(server) -> None:
    from server_double import CRASH_SUBMIT

    with Client(server.url, event_timeout=10) as c:
        comp = c.generate(prompt=CRASH_SUBMIT, max_tokens=3)
        assert comp.error["code"] == "INTERNAL" and "KeyError" in comp.error["message"]
        assert c.generate(prompt="fine", max_tokens=2).end is not None
    assert '"event": "engine.submit_crashed"' in server.log.getvalue()


def test_a_dead_engine_thread_stops_the_worker_with_exit_1(serve_double) -> None:
    from server_double import CRASH_THREAD

    rs = serve_double(DoubleRuntime(step_s=0.005))
    with Client(rs.url, event_timeout=10) as c:
        comp = c.generate(prompt=CRASH_THREAD, max_tokens=50)
        assert comp.error["code"] == "INTERNAL" and comp.error["retriable"] is True
    rs.thread.join(10)
    assert not rs.thread.is_alive() and rs.result["rc"] == 1
    assert '"event": "engine.thread_crashed"' in rs.log.getvalue()
    assert rs.server.health.snapshot()["status"] == "failed"


def test_engine_is_driven_from_one_thread(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.001))

    async def many() -> None:
        async with AsyncClient(rs.url) as c:
            jobs = [await c.submit(prompt=f"p{k}", max_tokens=5) for k in range(8)]
            await jobs[3].cancel()
            await asyncio.gather(*(j.result() for j in jobs))

    asyncio.run(many())
    assert len(rs.runtime.thread_ids) == 1


def _raw_ws_handshake(port: int, rcvbuf: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head
    return s


def _masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                              bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_slow_reader_gets_backpressure_then_overloaded_not_unbounded_buffering(
        serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.0, context_length=1 << 20), stream_buffer_events=16,
                      max_tokens_out=100000,
                      send_timeout_s=1.0)
    s = _raw_ws_handshake(rs.server.bound_port, rcvbuf=2048)
    try:
        msg = json.dumps({"type": "execute", "job_id": "slow", "prompt": "x" * 200,
                          "max_tokens": 100000, "ignore_eos": True}).encode()
        s.sendall(_masked_text_frame(msg))
        # The client reads nothing: the engine must end the job once its bounded stream is
        # full, rather than buffer 100k events; the stalled connection is then dropped.
        wait_until(lambda: rs.runtime.aborted, timeout=30.0, interval=0.02)
        assert rs.runtime.aborted[0].endswith("/slow")
        assert rs.server.metrics.generation_tokens.value() < 100000
        assert '"event": "job.slow_reader"' in rs.log.getvalue()
        # the slot is released: the terminal event got through, or the stalled connection
        # was dropped after send_timeout_s
        wait_until(lambda: not rs.server._jobs, timeout=5.0, interval=0.02)
        assert rs.server.metrics.requests.value(outcome="overloaded") == 1
    finally:
        s.close()
    with Client(rs.url, event_timeout=10) as c:
        assert c.generate(prompt="fine", max_tokens=3).end is not None


def test_oversized_frame_closes_with_1009_and_the_next_connection_works(serve_double) -> None:
    rs = serve_double(max_message_bytes=4096)
    with connect(rs.url) as ws:
        ws.send(json.dumps({"type": "execute", "job_id": "big", "prompt": "x" * 5000}))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1009
        assert "exceeds limit of 4096 bytes" in (ws.close_reason or "")
    with Client(rs.url, event_timeout=10) as c:
        assert c.generate(prompt="small", max_tokens=2).end is not None


def test_a_connection_that_accepts_nothing_is_dropped_after_send_timeout() -> None:
    from orcd_toolkit.server.app import ServerConfig, WorkerServer, _Conn
    from orcd_toolkit.server.logs import EventLog

    class StuckTransport:
        aborted = False

        def abort(self) -> None:
            self.aborted = True

    class StuckWs:
        transport = StuckTransport()

        async def send(self, frame: str) -> None:
            await asyncio.sleep(3600)  # the socket's write buffer never drains

    import io

    log = io.StringIO()
    srv = WorkerServer(ServerConfig(send_timeout_s=0.05), factory=None,  # type: ignore[arg-type]
                       log=EventLog("json", stream=log))
    conn = _Conn(ws=StuckWs(), conn_id=9)  # type: ignore[arg-type]
    t0 = time.monotonic()
    assert asyncio.run(srv._send(conn, {"type": "token"})) is False
    assert time.monotonic() - t0 < 1.0
    assert StuckWs.transport.aborted
    assert '"event": "conn.stalled"' in log.getvalue()
