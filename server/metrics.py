"""Prometheus text exposition (format 0.0.4) for ``GET /metrics``, without a client library.

The worker's metrics are few and fixed, so a small registry is simpler than a dependency:
counters, gauges and cumulative histograms, each updated under one lock (the engine thread
and the asyncio thread both write) and rendered from memory — rendering never touches the
engine or the GPU.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence

# Latency buckets in seconds: 1 ms .. 60 s, dense where interactive serving lives.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)


class Counter(_Metric):
    """A monotonically increasing count (``*_total``)."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = (),
                 initial: Iterable[dict[str, str]] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        for labels in initial:
            self._values[self._key(labels)] = 0.0
        if not self.labelnames:
            self._values[()] = 0.0

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set_total(self, total: float, **labels: str) -> None:
        """Mirror a count kept elsewhere (e.g. the engine's preemptions); never goes down."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = max(self._values.get(key, 0.0), float(total))

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [
            f"{self.name}{_labels(self.labelnames, k)} {_fmt(v)}" for k, v in items
        ]


class Gauge(_Metric):
    """A value that goes up and down."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._value = 0.0

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def value(self) -> float:
        with self._lock:
            return self._value

    def render(self) -> list[str]:
        return self.header() + [f"{self.name} {_fmt(self.value())}"]


class Histogram(_Metric):
    """Cumulative buckets, ``_sum`` and ``_count`` (Prometheus histogram semantics)."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str,
                 buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help_text)
        if list(buckets) != sorted(buckets) or len(set(buckets)) != len(buckets):
            raise ValueError("histogram buckets must be strictly increasing")
        self.buckets = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        if not math.isfinite(value):
            return
        i = 0
        while i < len(self.buckets) and value > self.buckets[i]:
            i += 1
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def count(self) -> int:
        with self._lock:
            return sum(self._counts)

    def render(self) -> list[str]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        lines = self.header()
        running = 0
        for bound, c in zip(self.buckets, counts, strict=False):
            running += c
            lines.append(f'{self.name}_bucket{{le="{_fmt(bound)}"}} {running}')
        running += counts[-1]
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {running}')
        lines.append(f"{self.name}_sum {_fmt(total)}")
        lines.append(f"{self.name}_count {running}")
        return lines


OUTCOMES = ("stop", "length", "cancelled", "timeout", "error", "rejected", "overloaded")


class ServerMetrics:
    """The worker's metrics (names follow Prometheus conventions, prefix ``orcd_``)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "orcd_requests_total", "Jobs by outcome (stop, length, cancelled, timeout, error, "
            "rejected = invalid request, overloaded).", ("outcome",),
            initial=[{"outcome": o} for o in OUTCOMES],
        )
        self.prompt_tokens = Counter("orcd_prompt_tokens_total", "Prompt tokens admitted.")
        self.generation_tokens = Counter("orcd_generation_tokens_total",
                                         "Tokens generated and streamed.")
        self.preemptions = Counter("orcd_preemptions_total",
                                   "Sequences preempted by the engine to free KV blocks.")
        self.prefix_cache_hits = Counter("orcd_prefix_cache_hits_total",
                                         "Prompt tokens served from the prefix cache.")
        self.prefix_cache_queries = Counter("orcd_prefix_cache_queries_total",
                                            "Prompt tokens looked up in the prefix cache.")
        self.running = Gauge("orcd_requests_running", "Sequences the engine is running.")
        self.waiting = Gauge("orcd_requests_waiting", "Sequences waiting for admission.")
        self.in_flight = Gauge("orcd_jobs_in_flight", "Jobs accepted and not yet terminal.")
        self.connections = Gauge("orcd_connections", "Open WebSocket connections.")
        self.kv_used = Gauge("orcd_kv_cache_blocks_used", "KV cache blocks in use.")
        self.kv_total = Gauge("orcd_kv_cache_blocks_total", "KV cache blocks in the pool.")
        self.kv_usage = Gauge("orcd_kv_cache_usage_ratio", "Fraction of KV cache blocks in use.")
        self.vram = Gauge("orcd_vram_bytes_used", "Device memory held by the worker (bytes).")
        self.uptime = Gauge("orcd_uptime_seconds", "Seconds since the worker started.")
        self.queue_time = Histogram("orcd_queue_time_seconds",
                                    "Time from submission to the first scheduled step.")
        self.ttft = Histogram("orcd_time_to_first_token_seconds",
                              "Time from submission to the first streamed token.")
        self.itl = Histogram("orcd_inter_token_latency_seconds",
                             "Time between consecutive streamed tokens of a job.")
        self.e2e = Histogram("orcd_e2e_request_latency_seconds",
                             "Time from submission to the terminal event.")
        # Rendered in the order defined above; every metric attribute is exposed, so a new
        # one cannot be forgotten in a second list.
        self._all: list[_Metric] = [m for m in vars(self).values() if isinstance(m, _Metric)]

    def render(self) -> str:
        """The whole exposition as text (ends with a newline, as the format requires)."""
        lines: list[str] = []
        for metric in self._all:
            lines.extend(metric.render())  # type: ignore[attr-defined]
        return "\n".join(lines) + "\n"


def parse_exposition(text: str) -> dict[str, float]:
    """Parse Prometheus text into ``{'name{labels}': value}`` (used by tests and the client)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out
