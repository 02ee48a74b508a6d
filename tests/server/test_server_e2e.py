"""End to end: the real ``orcd serve --device cpu`` with SmolLM2 as a subprocess.

The NumPy backend is the product path here (no GPU in CI): model, tokenizer, engine, server
and client all real. A decode step takes ~0.1-2 s on a busy 2-core machine, so only the
smoke test runs by default; the rest are ``slow`` (``--run-slow``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from serve_process import (
    ServeProcess,
    batch_invariance_runs,
    sigterm_with_jobs_in_flight,
    start_serve,
    wait_kv_free,
)

from orcd_toolkit.client import Client, http_get


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
    ref, one_connection, six_connections = batch_invariance_runs(serve.url, _jobs())
    assert all(ref)
    assert one_connection == ref
    assert six_connections == ref


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
        freed_s = wait_kv_free(serve, t0, limit_s=60, poll_s=0.01)
    # a dropped connection: abort, KV freed
    d = Client(serve.url, event_timeout=300)
    d.connect()
    d.submit(prompt="Another long story.", max_tokens=500, ignore_eos=True, job_id="dx")
    evs = d.events("dx")
    assert next(evs)["type"] == "started" and next(evs)["type"] == "token"
    t1 = time.monotonic()
    d.ws.socket.close()
    drop_freed_s = wait_kv_free(serve, t1, limit_s=60, poll_s=0.01)
    print(f"\ncancel terminal {cancel_s * 1e3:.1f} ms; KV freed {freed_s * 1e3:.0f} ms after "
          f"cancel, {drop_freed_s * 1e3:.0f} ms after drop (bounded by one NumPy step)")


@pytest.mark.slow
def test_sigterm_with_8_jobs_drains_refuses_and_exits_0(smollm2_path, tmp_path) -> None:
    # KV for 8 x 1000 tokens (f32 on the NumPy backend: 46 KB per token) fits in 512 MiB
    # 30 s: the short jobs finish even on a loaded machine; 1000 tokens never do (>= 0.1 s
    # per NumPy step)
    sp = start_serve(smollm2_path, tmp_path, "--drain-timeout-sec", "30",
                     "--kv-cache-size-mb", "512")
    # four short jobs can finish inside the deadline, four long ones cannot
    jobs = [dict(prompt=f"Job {k}:", seed=k, temperature=0.5, ignore_eos=True,
                 max_tokens=2 if k < 4 else 1000) for k in range(8)]
    out = sigterm_with_jobs_in_flight(sp, jobs, settle_s=0.5, close_wait_s=20.0,
                                      exit_timeout_s=60)
    assert out.rc == 0
    assert out.late.error["code"] == "OVERLOADED" and out.late.error["retriable"] is True
    for r in out.results[:4]:
        assert r.end is not None
    for r in out.results[4:]:
        assert r.error is not None and r.error["code"] == "CANCELLED"
        assert r.error["retriable"] is True and "drain deadline" in r.error["message"]
    assert out.close_code == 1001
    assert out.elapsed_s < 90
    events = [e["event"] for e in sp.log_events()]
    assert "server.shutdown" in events and "server.stopped" in events
