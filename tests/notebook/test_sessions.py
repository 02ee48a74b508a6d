"""Sessions: in-process engine and server, one event stream shape, cancel, readable errors."""

from __future__ import annotations

import time

import pytest

from orcd_toolkit.errors import InvalidRequest, ModelNotFound
from orcd_toolkit.models.runner import SequenceRunner
from orcd_toolkit.notebook.errors import ServerUnreachable
from orcd_toolkit.notebook.server_process import free_port
from orcd_toolkit.notebook.sessions import (
    Generation,
    LocalSession,
    RemoteSession,
    normalize_url,
    run_to_end,
)

PROMPT = "The capital of France is"


def _wait(pred, timeout: float = 30.0, interval: float = 0.005) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(interval)
    return time.monotonic() - t0


def test_local_stream_matches_engine_greedy(smollm2_session):
    job = smollm2_session.start(PROMPT, max_tokens=6, temperature=0.0)
    events = list(job.events(timeout=60))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "end"
    tokens = [e for e in events if e["type"] == "token"]
    assert [e["i"] for e in tokens] == list(range(6))
    assert events[-1]["finish_reason"] == "length" and events[-1]["tokens_out"] == 6
    # the ids C's single-sequence greedy driver gives on the same model (no engine, no
    # scheduler: an independent path; the model is stateless, its KV cache is the runner's)
    prompt_ids = smollm2_session.tokenizer.encode(PROMPT)
    assert events[0]["prompt_tokens"] == len(prompt_ids)
    expected, _ = SequenceRunner(smollm2_session.model, 64).greedy(prompt_ids, 6)
    assert [e["id"] for e in tokens] == expected
    text = "".join(e["t"] for e in tokens)
    assert text == smollm2_session.tokenizer.decode([e["id"] for e in tokens])


def test_local_invalid_parameter_is_one_readable_line(smollm2_session):
    with pytest.raises(InvalidRequest, match=r"field 'temperature' must be in \[0, 2\], got 5"):
        smollm2_session.start(PROMPT, temperature=5.0)
    with pytest.raises(InvalidRequest, match="unknown field 'max_token'"):
        smollm2_session.start(PROMPT, max_token=3)
    with pytest.raises(InvalidRequest, match="'prompt' must not be empty"):
        smollm2_session.start("")


def test_local_model_missing():
    s = LocalSession("no-such-model-xyz")
    with pytest.raises(ModelNotFound, match="no-such-model-xyz.*neither"):
        s.wait_ready(30)
    assert s.load_error is not None and not s.is_ready


def test_local_cancel_ends_stream_at_once_and_frees_the_engine(smollm2_session):
    job = smollm2_session.start("Once upon a time", max_tokens=500, temperature=0.0)
    events = job.events(timeout=60)
    seen = []
    for ev in events:
        seen.append(ev)
        if ev["type"] == "token":
            break
    t0 = time.monotonic()
    assert job.cancel()
    rest = list(events)
    latency = time.monotonic() - t0
    assert latency < 0.1, f"cancel took {latency * 1e3:.1f} ms"
    assert rest[-1]["type"] == "error" and rest[-1]["code"] == "CANCELLED"
    assert all(e["type"] == "token" for e in rest[:-1])
    assert not job.cancel()  # idempotent
    # the engine drops the request at its next step boundary (one NumPy step here)
    _wait(lambda: not smollm2_session.has_work(), timeout=10)
    alloc = smollm2_session.runtime.engine.allocator
    assert alloc.num_free_blocks == alloc.num_blocks


def test_remote_unreachable_names_the_address():
    port = free_port()
    with pytest.raises(ServerUnreachable, match=f"127.0.0.1:{port}/health"):
        RemoteSession(f"ws://127.0.0.1:{port}", timeout=2)


def test_normalize_url():
    assert normalize_url("127.0.0.1:8080") == "ws://127.0.0.1:8080/v1/stream"
    assert normalize_url("http://h:1/") == "ws://h:1/v1/stream"
    assert normalize_url("wss://h:1/v1/stream") == "wss://h:1/v1/stream"
    with pytest.raises(ServerUnreachable, match="not a server address"):
        normalize_url("ftp://x")


def test_remote_and_local_stream_the_same_greedy_text(smollm2_session, smollm2_server):
    remote = RemoteSession(smollm2_server.url)
    assert remote.health["status"] == "ready" and remote.health["arch"] == "llama"
    r = run_to_end(remote.start(PROMPT, max_tokens=6, temperature=0.0), timeout=60)
    loc = run_to_end(smollm2_session.start(PROMPT, max_tokens=6, temperature=0.0), timeout=60)
    assert r.status == loc.status == "done"
    assert r.token_ids == loc.token_ids and r.text == loc.text and r.num_tokens == 6


def test_remote_invalid_parameter_checked_before_connecting(smollm2_server):
    remote = RemoteSession(smollm2_server.url)
    with pytest.raises(InvalidRequest, match="field 'top_p' must be in \\(0, 1\\]"):
        remote.start(PROMPT, top_p=0.0)


def test_remote_server_limit_comes_back_as_error_event(smollm2_server):
    remote = RemoteSession(smollm2_server.url)
    gen = run_to_end(remote.start(PROMPT, max_tokens=100000), timeout=30)
    assert gen.status == "error" and gen.error_code == "INVALID_REQUEST"
    assert "max_tokens" in gen.error_message


def test_remote_cancel_frees_the_server_job(smollm2_server):
    remote = RemoteSession(smollm2_server.url)
    job = remote.start("Once upon a time", max_tokens=500, temperature=0.0)
    events = job.events(timeout=60)
    for ev in events:
        if ev["type"] == "token":
            break
    t0 = time.monotonic()
    job.cancel()
    rest = list(events)
    assert time.monotonic() - t0 < 0.1
    assert rest[-1]["code"] == "CANCELLED"
    _wait(lambda: smollm2_server.health()[1]["running"] == 0, timeout=10)


def test_generation_record_timings():
    class _Job:
        job_id = "j"

    g = Generation(_Job(), started_at=100.0)
    assert g.status == "running" and g.tokens_per_s() is None
    g.feed({"type": "started", "prompt_tokens": 5}, now=100.1)
    g.feed({"type": "token", "t": "a", "id": 1}, now=100.5)
    assert g.ttft_s == pytest.approx(0.5) and g.tokens_per_s(now=101.0) is None
    g.feed({"type": "token", "t": "b", "id": 2}, now=101.0)
    g.feed({"type": "token", "t": "c", "id": 3}, now=101.5)
    assert g.tokens_per_s(now=102.5) == pytest.approx(2 / 2.0)  # live: up to now
    assert g.feed({"type": "end", "finish_reason": "length"}, now=101.6)
    assert g.tokens_per_s(now=200.0) == pytest.approx(2 / 1.0)  # finished: up to last token
    assert g.summary() == "3 tokens · TTFT 500 ms · 2.0 tok/s · finish: length"
    assert g.text == "abc" and g.prompt_tokens == 5 and g.status == "done"
    e = Generation(_Job(), started_at=0.0)
    e.feed({"type": "error", "code": "CANCELLED", "message": "stopped by the user"}, now=1.0)
    assert e.status == "stopped" and e.summary() == "0 tokens · stopped"


def test_load_reports_the_server_progress_milestones(smollm2_path):
    seen: list[tuple[int, str]] = []
    s = LocalSession(str(smollm2_path), kv_cache_size_mb=8,
                     on_progress=lambda pct, detail: seen.append((pct, detail)))
    try:
        s.wait_ready(120)
        assert [p for p, _ in seen] == [0, 25, 50, 75, 100]
        assert s.progress == (100, "engine ready") and s.load_seconds > 0
        assert repr(s).endswith("device=cpu ready>")
    finally:
        s.close()
    assert repr(s).endswith("closed>")
    from orcd_toolkit.notebook.errors import SessionClosed

    with pytest.raises(SessionClosed, match="is closed; load it again"):
        s.start(PROMPT)
