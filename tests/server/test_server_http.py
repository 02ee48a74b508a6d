"""HTTP GET endpoints on the WebSocket port, and the API key."""

from __future__ import annotations

import hmac
import json
import re
import time

import pytest
from server_double import DoubleRuntime, factory_for
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from orcd_toolkit.client import Client, http_get
from orcd_toolkit.server.metrics import (
    Counter,
    Histogram,
    ServerMetrics,
    parse_exposition,
)

KEY = "s3cret-key-123"


def test_health_reports_the_model_and_cached_state(server) -> None:
    status, ctype, body = http_get(server.base + "/health")
    assert status == 200 and ctype == "application/json"
    h = json.loads(body)
    for key in ("status", "model", "resident", "quant_kind", "vram_bytes_used", "tokenizer_kind",
                "vocab_size", "context_length", "uptime_seconds", "sm", "cuda_runtime_version",
                "load_progress", "worker_id"):
        assert key in h, key
    assert h["status"] == "ready" and h["load_progress"] == 100
    assert (h["model"], h["quant_kind"], h["tokenizer_kind"]) == ("double-model", "F32", "bytes")
    assert h["vocab_size"] == 272 and h["context_length"] == 4096 and h["resident"] == "cpu"
    steps = server.runtime.steps
    for _ in range(20):
        http_get(server.base + "/health")
        http_get(server.base + "/metrics")
    assert server.runtime.steps == steps  # health and metrics never drive the engine


def test_health_is_503_with_progress_while_loading_and_jobs_are_refused(serve_double) -> None:
    runtime = DoubleRuntime()
    rs = serve_double(factory=factory_for(runtime, load_s=1.2), wait_ready=False)
    status, _, body = http_get(rs.base + "/health")
    h = json.loads(body)
    assert status == 503 and h["status"] == "loading" and h["load_progress"] in (0, 25, 50, 75)
    with Client(rs.url, event_timeout=10) as c:
        comp = c.generate(prompt="too early", max_tokens=2)
        assert comp.error["code"] == "OVERLOADED" and comp.error["retriable"] is True
        assert "loading" in comp.error["message"]
    deadline = time.monotonic() + 10
    while http_get(rs.base + "/health")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    progress = [json.loads(line)["progress"] for line in rs.log.getvalue().splitlines()
                if '"event": "model.load"' in line]
    assert progress == [0, 25, 50, 75, 100]


def test_metrics_exposition(server) -> None:
    with Client(server.url, event_timeout=10) as c:
        c.generate(prompt="count me", max_tokens=7).raise_for_error()
        c.generate(prompt="and me", max_tokens=3).raise_for_error()
    status, ctype, body = http_get(server.base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    text = body.decode()
    m = parse_exposition(text)
    assert m['orcd_requests_total{outcome="length"}'] == 2
    assert m['orcd_requests_total{outcome="cancelled"}'] == 0
    assert m["orcd_generation_tokens_total"] == 10
    assert m["orcd_prompt_tokens_total"] == len(b"count me") + len(b"and me")
    for name in ("orcd_time_to_first_token_seconds", "orcd_e2e_request_latency_seconds",
                 "orcd_queue_time_seconds"):
        assert m[f"{name}_count"] == 2
        assert m[f'{name}_bucket{{le="+Inf"}}'] == 2
    assert m["orcd_inter_token_latency_seconds_count"] == 8
    for gauge in ("orcd_requests_running", "orcd_requests_waiting", "orcd_kv_cache_blocks_used",
                  "orcd_kv_cache_usage_ratio", "orcd_vram_bytes_used", "orcd_uptime_seconds",
                  "orcd_preemptions_total", "orcd_prefix_cache_hits_total"):
        assert gauge in m, gauge
    assert m["orcd_kv_cache_blocks_total"] == 512
    # every sample belongs to a metric with HELP and TYPE lines
    declared = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    for key in m:
        base = re.sub(r"(_bucket|_sum|_count)$", "", key.split("{")[0])
        assert base in declared, key


def test_histogram_and_counter_semantics() -> None:
    h = Histogram("x_seconds", "help", buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 2.0, float("nan")):
        h.observe(v)
    m = parse_exposition("\n".join(h.render()))
    assert m['x_seconds_bucket{le="0.1"}'] == 2  # le is inclusive
    assert m['x_seconds_bucket{le="1"}'] == 3
    assert m['x_seconds_bucket{le="+Inf"}'] == 4 and m["x_seconds_count"] == 4
    assert m["x_seconds_sum"] == pytest.approx(2.65)
    c = Counter("y_total", "help", ("outcome",))
    c.inc(outcome='a"b\\c\nd')
    assert 'y_total{outcome="a\\"b\\\\c\\nd"} 1' in c.render()
    with pytest.raises(ValueError):
        c.inc(-1, outcome="a")
    with pytest.raises(ValueError):
        c.inc(other="x")
    c2 = Counter("z_total", "help")
    c2.set_total(5)
    c2.set_total(3)  # mirrored totals never go down
    assert c2.value() == 5
    assert ServerMetrics().render().endswith("\n")


def test_models_page_and_unknown_path(server) -> None:
    status, _, body = http_get(server.base + "/v1/models")
    data = json.loads(body)
    assert status == 200 and data["data"][0]["id"] == "double-model"
    assert data["data"][0]["ready"] is True and data["data"][0]["context_length"] == 4096
    status, ctype, page = http_get(server.base + "/")
    assert status == 200 and ctype.startswith("text/html")
    html = page.decode()
    assert "/v1/stream" in html and "new WebSocket" in html
    # self-contained: no external script, style, font or image
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html
    status, _, body = http_get(server.base + "/nope")
    assert status == 404 and "/health" in json.loads(body)["paths"]


def test_api_key_guards_everything_but_health(serve_double) -> None:
    rs = serve_double(api_key=KEY)
    assert http_get(rs.base + "/health")[0] == 200
    for path in ("/metrics", "/v1/models", "/", "/nope"):
        assert http_get(rs.base + path)[0] == 401, path
        assert http_get(rs.base + path, api_key="wrong-key-0000")[0] == 401, path
        assert http_get(rs.base + path, api_key=KEY)[0] in (200, 404), path
    with pytest.raises(InvalidStatus) as info:
        with connect(rs.url):
            pass
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        with connect(rs.url, additional_headers={"Authorization": "Bearer nope-nope"}):
            pass
    with pytest.raises(InvalidStatus):  # the right key in the wrong scheme
        with connect(rs.url, additional_headers={"Authorization": f"Basic {KEY}"}):
            pass
    with Client(rs.url, api_key=KEY, event_timeout=10) as c:
        assert c.generate(prompt="authorized", max_tokens=2).end is not None
    # browsers cannot set headers on a WebSocket: the page offers the key as a subprotocol
    with connect(rs.url, subprotocols=["orcd.v1", f"orcd-key.{KEY}"]) as ws:
        assert ws.subprotocol == "orcd.v1"
        ws.send(json.dumps({"type": "execute", "job_id": "b", "prompt": "x", "max_tokens": 1}))
        assert json.loads(ws.recv(timeout=10))["type"] == "started"
    with pytest.raises(InvalidStatus):
        with connect(rs.url, subprotocols=["orcd.v1", "orcd-key.wrong"]):
            pass
    # the key never appears in the logs
    assert KEY not in rs.log.getvalue()


def test_api_key_is_compared_in_constant_time(serve_double, monkeypatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    rs = serve_double(api_key=KEY)
    assert http_get(rs.base + "/metrics", api_key="x" * 14)[0] == 401
    assert (b"x" * 14, KEY.encode()) in calls


def test_connection_bound_answers_503_at_the_handshake(serve_double) -> None:
    rs = serve_double(max_connections=1)
    with connect(rs.url) as first:
        with pytest.raises(InvalidStatus) as info:
            with connect(rs.url):
                pass
        assert info.value.response.status_code == 503
        first.send(json.dumps({"type": "execute", "job_id": "a", "prompt": "x",
                               "max_tokens": 1}))
        assert json.loads(first.recv(timeout=10))["type"] == "started"
    for _ in range(100):  # the slot frees once the server has seen the close
        if not rs.server._conns:
            break
        time.sleep(0.02)
    with Client(rs.url, event_timeout=10) as c:
        assert c.generate(prompt="again", max_tokens=1).end is not None
