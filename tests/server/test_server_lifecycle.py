"""Startup, load failure, drain on shutdown, logs and the ready callback."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from server_double import DoubleRuntime, factory_for

from orcd_toolkit.client import AsyncClient, Client
from orcd_toolkit.errors import ModelLoadFailed
from orcd_toolkit.server.callback import post_ready_notice
from orcd_toolkit.server.logs import EventLog


def _events(log_text: str) -> list[dict]:
    return [json.loads(line) for line in log_text.splitlines() if line.strip()]


def test_shutdown_drains_jobs_in_flight_refuses_new_ones_and_exits_0(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.01), drain_timeout_s=10.0)

    async def scenario() -> tuple[list, dict, int | None]:
        async with AsyncClient(rs.url) as c:
            jobs = [await c.submit(prompt=f"p{k}", max_tokens=40) for k in range(8)]
            first = [await jobs[k].__aiter__().__anext__() for k in range(8)]
            assert all(ev["type"] == "started" for ev in first)
            rs.loop.call_soon_threadsafe(rs.server.request_shutdown, "SIGTERM")
            await asyncio.sleep(0.05)
            late = await (await c.submit(prompt="late", max_tokens=5)).result()
            results = await asyncio.gather(*(j.result() for j in jobs))
            await asyncio.sleep(0.5)
            return results, late.error, c.close_code

    results, late_error, close_code = asyncio.run(scenario())
    rs.thread.join(10)
    assert not rs.thread.is_alive() and rs.result["rc"] == 0
    assert all(r.end is not None and r.end["tokens_out"] == 40 for r in results)
    assert late_error["code"] == "OVERLOADED" and late_error["retriable"] is True
    assert "shutting down" in late_error["message"]
    assert close_code == 1001
    names = [e["event"] for e in _events(rs.log.getvalue())]
    assert names.index("server.shutdown") < names.index("server.stopped")
    assert rs.runtime.closed


def test_drain_deadline_ends_stragglers_with_a_retriable_error(serve_double) -> None:
    rs = serve_double(DoubleRuntime(step_s=0.01), drain_timeout_s=0.3)
    with Client(rs.url, event_timeout=10) as c:
        c.submit(prompt="forever", max_tokens=2000, job_id="long")
        events = c.events("long")
        assert next(events)["type"] == "started"
        rs.loop.call_soon_threadsafe(rs.server.request_shutdown, "SIGTERM")
        last = list(events)[-1]
    assert last["type"] == "error" and last["code"] == "CANCELLED" and last["retriable"] is True
    assert "drain deadline" in last["message"]
    rs.thread.join(10)
    assert rs.result["rc"] == 0
    assert rs.runtime.aborted == ["1/1/long"]


def test_load_failure_exits_1_with_a_logged_reason(serve_double) -> None:
    rs = serve_double(factory=factory_for(DoubleRuntime(), fail=ModelLoadFailed(
        "tensor blk.0.attn_q.weight has type Q2_K, not supported")), wait_ready=False)
    rs.thread.join(10)
    assert not rs.thread.is_alive() and rs.result["rc"] == 1
    ev = [e for e in _events(rs.log.getvalue()) if e["event"] == "model.load_failed"]
    assert ev and ev[0]["code"] == "MODEL_LOAD_FAILED" and "Q2_K" in ev[0]["error"]
    assert rs.server.health.snapshot()["status"] == "failed"


def test_logs_carry_ids_and_counts_but_never_prompts_unless_asked(serve_double) -> None:
    secret = "my bank password is hunter2"
    rs = serve_double()
    with Client(rs.url, event_timeout=10) as c:
        c.generate(prompt=secret, max_tokens=3).raise_for_error()
        c.generate(messages=[{"role": "user", "content": secret}], max_tokens=2)
    text = rs.log.getvalue()
    assert "hunter2" not in text
    evs = _events(text)
    start = [e for e in evs if e["event"] == "job.start"][0]
    end = [e for e in evs if e["event"] == "job.end"][0]
    assert start["prompt_tokens"] == len(secret.encode()) and "prompt" not in start
    assert end["tokens_out"] == 3 and end["finish_reason"] == "length"
    assert end["decode_time_ms"] > 0 and end["job_id"] == start["job_id"]
    for name in ("server.start", "model.load", "server.ready", "conn.open"):
        assert name in {e["event"] for e in evs}, name
    for _ in range(100):  # the handler logs conn.close after the client has gone: bounded wait
        if '"event": "conn.close"' in rs.log.getvalue():
            break
        time.sleep(0.02)
    assert '"event": "conn.close"' in rs.log.getvalue()
    rs2 = serve_double(log_prompts=True)
    with Client(rs2.url, event_timeout=10) as c:
        c.generate(prompt=secret, max_tokens=1).raise_for_error()
    assert "hunter2" in rs2.log.getvalue()


def test_human_log_format() -> None:
    import io

    buf = io.StringIO()
    log = EventLog("human", stream=buf)
    log.event("job.end", job_id="a b", tokens_out=3, skipped=None)
    log.event("debug.thing", level="debug", x=1)
    line = buf.getvalue().strip()
    assert "INFO" in line and 'job.end job_id="a b" tokens_out=3' in line
    assert "skipped" not in line and "debug.thing" not in buf.getvalue()
    with pytest.raises(ValueError):
        EventLog("xml")


class _Recorder(BaseHTTPRequestHandler):
    answers: list[int] = []
    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        status = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def callback_server():
    class Handler(_Recorder):
        answers: list[int] = []
        bodies: list[dict] = []

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/ready", Handler
    httpd.shutdown()
    httpd.server_close()


def test_callback_retries_transient_failures(callback_server) -> None:
    url, handler = callback_server
    handler.answers[:] = [503, 502]
    sleeps: list[float] = []
    assert post_ready_notice(url, {"event": "ready"}, sleep=sleeps.append) is True
    assert len(handler.bodies) == 3 and sleeps == [0.5, 1.0]
    handler.answers[:] = [400]
    handler.bodies.clear()
    assert post_ready_notice(url, {"event": "ready"}, sleep=sleeps.append) is False
    assert len(handler.bodies) == 1  # a 4xx is final
    # nothing listening: gives up after the bounded number of attempts
    dead = "http://127.0.0.1:9/ready"
    assert post_ready_notice(dead, {}, attempts=3, sleep=lambda s: None, timeout_s=1) is False


def test_ready_notice_is_posted_once_loaded(serve_double, callback_server) -> None:
    url, handler = callback_server
    handler.answers[:] = [503]
    rs = serve_double(callback_url=url, worker_id="6f1c2d0e-8a51-4e1b-9c43-2b1f6f0c9a11")
    for _ in range(200):  # bounded: 20 s; the worker logs callback.sent after the answer
        if len(handler.bodies) >= 2 and '"event": "callback.sent"' in rs.log.getvalue():
            break
        threading.Event().wait(0.1)
    assert len(handler.bodies) == 2, rs.log.getvalue()
    body = handler.bodies[-1]
    assert body["event"] == "ready" and body["worker_id"] == "6f1c2d0e-8a51-4e1b-9c43-2b1f6f0c9a11"
    assert body["endpoint"] == rs.url and body["model"] == "double-model"
    assert body["vram_bytes"] == 0 and body["health_url"].endswith("/health")
    names = [e["event"] for e in _events(rs.log.getvalue())]
    assert "callback.failed" in names and "callback.sent" in names


_SIGNAL_SCRIPT = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from server_double import DoubleRuntime, factory_for
from orcd_toolkit.server.app import ServerConfig, WorkerServer
from orcd_toolkit.server.logs import EventLog

server = WorkerServer(ServerConfig(host="127.0.0.1", port=0, model_name="double-model",
                                   drain_timeout_s=float(sys.argv[2]), ping_interval_s=None),
                      factory_for(DoubleRuntime(step_s=0.01)), EventLog("json", level="debug"))
sys.exit(asyncio.run(server.run()))
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_real_signal_drains_and_exits_0(tmp_path, signame) -> None:
    import os
    import signal
    import subprocess
    import sys

    from orcd_toolkit.client import http_get

    log_path = tmp_path / "server.log"
    here = os.path.dirname(os.path.abspath(__file__))
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", _SIGNAL_SCRIPT, here, "0.5"],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None or http_get(f"http://127.0.0.1:{port}/health")[0] != 200:
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
            time.sleep(0.05)
            for e in _events(log_path.read_text()):
                if e["event"] == "server.start":
                    port = e["port"]
        url = f"ws://127.0.0.1:{port}/v1/stream"
        with Client(url, event_timeout=10) as c:
            c.submit(prompt="x", max_tokens=5, job_id="short")
            c.submit(prompt="x", max_tokens=100000 // 100, job_id="long")
            assert next(c.events("short"))["type"] == "started"
            proc.send_signal(getattr(signal, signame))
            time.sleep(0.1)
            late = c.generate(prompt="late", max_tokens=1)
            short = [e for e in c.events("short")]
            long_ = [e for e in c.events("long")]
        assert late.error["code"] == "OVERLOADED" and late.error["retriable"] is True
        assert short[-1]["type"] == "end"
        assert long_[-1]["code"] == "CANCELLED" and long_[-1]["retriable"] is True
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    names = [e["event"] for e in _events(log_path.read_text())]
    assert names[-1] == "server.stopped"
    assert [e for e in _events(log_path.read_text()) if e["event"] == "server.shutdown"][0][
        "signal"] == signame
