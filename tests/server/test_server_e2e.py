"""End to end: the real ``orcd serve --device cpu`` with SmolLM2 as a subprocess.

The NumPy backend is the product path here (no GPU in CI): model, tokenizer, engine, server
and client all real. A decode step takes ~0.1-2 s on a busy 2-core machine, so only the
smoke test runs by default; the rest are ``slow`` (``--run-slow``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orcd_toolkit.client import AsyncClient, Client, http_get
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


@pytest.fixture(scope="module")
def serve(smollm2_path, tmp_path_factory) -> Iterator[ServeProcess]:
    sp = start_serve(smollm2_path, tmp_path_factory.mktemp("serve"))
    yield sp
    sp.stop()


HAIKU = dict(prompt="Write a haiku about GPU computing", seed=42, temperature=0.7)


def test_smoke_real_server_streams_and_reports(serve) -> None:
    status, _, body = http_get(serve.base + "/health")
    h = json.loads(body)
    assert status == 200 and h["status"] == "ready" and h["arch"] == "llama"
    assert h["quant_kind"] == "Q4_1" and h["tokenizer_kind"] and h["vocab_size"] == 49152
    assert h["resident"] == "cpu" and h["context_length"] > 0
    with Client(serve.url, event_timeout=120) as c:
        comp = c.generate(max_tokens=4, **HAIKU).raise_for_error()
    kinds = [e["type"] for e in comp.events]
    assert kinds[0] == "started" and kinds[-1] == "end" and kinds.count("token") >= 1
    assert comp.started["prompt_tokens"] > 3
    assert comp.end["tokens_out"] == kinds.count("token")
    assert "".join(comp.pieces) == comp.text
    progress = [e["progress"] for e in serve.log_events() if e["event"] == "model.load"]
    assert progress == [0, 25, 50, 75, 100]


@pytest.mark.slow
def test_haiku_is_reproducible(serve) -> None:
    with Client(serve.url, event_timeout=300) as c:
        a = c.generate(max_tokens=24, **HAIKU).raise_for_error()
        b = c.generate(max_tokens=24, **HAIKU).raise_for_error()
    assert [e["type"] for e in a.events][0] == "started" and a.end is not None
    assert a.token_ids == b.token_ids and a.text == b.text
    assert a.text.strip()


@pytest.mark.slow
@pytest.mark.parametrize("prompt", [
    "用中文写一首关于显卡的短诗",
    "Emoji story: 🚀🔥🧠 then",
    "Mixed: naïve café, Ελληνικά, русский, 日本語, हिन्दी, עברית 👍🏽",
])
def test_utf8_prompts_stream_valid_pieces_that_concatenate(serve, smollm2_path, prompt) -> None:
    from orcd_toolkit.tokenizer import load_tokenizer

    with Client(serve.url, event_timeout=300) as c:
        comp = c.generate(prompt=prompt, max_tokens=12, seed=7, temperature=0.9).raise_for_error()
    for piece in comp.pieces:
        piece.encode("utf-8")  # a str with no lone surrogates
        assert "\ufffd" not in piece or "\ufffd" in comp.text
    tok = load_tokenizer(smollm2_path)
    assert comp.text == tok.decode(comp.token_ids)


def _jobs() -> list[dict]:
    prompts = ["The GPU", "Once upon a time", "def fib(n):", "Paris is", "1, 2, 3,",
               "Haiku:"]
    return [dict(prompt=p, seed=100 + k, temperature=0.8, max_tokens=5, job_id=f"b{k}")
            for k, p in enumerate(prompts)]


@pytest.mark.slow
def test_batch_invariance_through_the_server(serve) -> None:
    async def alone() -> list[list[int]]:
        out = []
        async with AsyncClient(serve.url) as c:
            for kw in _jobs():
                out.append((await c.generate(**kw)).raise_for_error().token_ids)
        return out

    async def one_connection() -> list[list[int]]:
        async with AsyncClient(serve.url) as c:
            jobs = [await c.submit(**kw) for kw in _jobs()]
            return [(await j.result()).raise_for_error().token_ids for j in jobs]

    async def six_connections() -> list[list[int]]:
        async def one(kw):
            async with AsyncClient(serve.url) as c:
                return (await c.generate(**kw)).raise_for_error().token_ids
        return list(await asyncio.gather(*(one(kw) for kw in _jobs())))

    ref = asyncio.run(alone())
    assert all(ref)
    assert asyncio.run(one_connection()) == ref
    assert asyncio.run(six_connections()) == ref


@pytest.mark.slow
def test_cancel_and_drop_end_jobs_at_once_and_free_kv(serve) -> None:
    with Client(serve.url, event_timeout=300) as c:
        c.submit(prompt="Tell me a long story about a GPU.", max_tokens=500, ignore_eos=True,
                 job_id="cx")
        events = c.events("cx")
        assert next(events)["type"] == "started"
        assert next(events)["type"] == "token"
        assert serve.metric("orcd_kv_cache_blocks_used") > 0
        assert serve.metric("orcd_requests_running") == 1
        t0 = time.monotonic()
        c.cancel("cx")
        ev = next(e for e in events if e["type"] != "token")
        cancel_s = time.monotonic() - t0
        assert ev["code"] == "CANCELLED"
        assert cancel_s < 0.1, f"CANCELLED after {cancel_s * 1e3:.1f} ms"
        while serve.metric("orcd_kv_cache_blocks_used") > 0:
            assert time.monotonic() - t0 < 60
            time.sleep(0.01)
        freed_s = time.monotonic() - t0
    # a dropped connection: abort, KV freed
    d = Client(serve.url, event_timeout=300)
    d.connect()
    d.submit(prompt="Another long story.", max_tokens=500, ignore_eos=True, job_id="dx")
    evs = d.events("dx")
    assert next(evs)["type"] == "started" and next(evs)["type"] == "token"
    t1 = time.monotonic()
    d.ws.socket.close()
    while serve.metric("orcd_kv_cache_blocks_used") > 0:
        assert time.monotonic() - t1 < 60
        time.sleep(0.01)
    drop_freed_s = time.monotonic() - t1
    print(f"\ncancel terminal {cancel_s * 1e3:.1f} ms; KV freed {freed_s * 1e3:.0f} ms after "
          f"cancel, {drop_freed_s * 1e3:.0f} ms after drop (bounded by one NumPy step)")


@pytest.mark.slow
def test_sigterm_with_8_jobs_drains_refuses_and_exits_0(smollm2_path, tmp_path) -> None:
    # KV for 8 x 1000 tokens (f32 on the NumPy backend: 46 KB per token) fits in 512 MiB
    # 30 s: the short jobs finish even on a loaded machine; 1000 tokens never do (>= 0.1 s
    # per NumPy step)
    sp = start_serve(smollm2_path, tmp_path, "--drain-timeout-sec", "30",
                     "--kv-cache-size-mb", "512")
    try:
        async def scenario():
            async with AsyncClient(sp.url) as c:
                jobs = []
                for k in range(8):
                    # four short jobs can finish inside the deadline, four long ones cannot
                    jobs.append(await c.submit(prompt=f"Job {k}:", seed=k, temperature=0.5,
                                               ignore_eos=True,
                                               max_tokens=2 if k < 4 else 1000))
                for j in jobs:
                    it = j.__aiter__()
                    assert (await it.__anext__())["type"] == "started"
                sp.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                late = await (await c.submit(prompt="late", max_tokens=2)).result()
                results = [await j.result() for j in jobs]
                for _ in range(200):
                    if c.close_code is not None:
                        break
                    await asyncio.sleep(0.1)
                return results, late, c.close_code

        t0 = time.monotonic()
        results, late, close_code = asyncio.run(scenario())
        rc = sp.proc.wait(60)
        elapsed = time.monotonic() - t0
    finally:
        if sp.proc.poll() is None:
            sp.proc.kill()
            sp.proc.wait(10)
    assert rc == 0
    assert late.error["code"] == "OVERLOADED" and late.error["retriable"] is True
    for r in results[:4]:
        assert r.end is not None
    for r in results[4:]:
        assert r.error is not None and r.error["code"] == "CANCELLED"
        assert r.error["retriable"] is True and "drain deadline" in r.error["message"]
    assert close_code == 1001
    assert elapsed < 90
    events = [e["event"] for e in sp.log_events()]
    assert "server.shutdown" in events and "server.stopped" in events
