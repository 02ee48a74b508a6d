"""Metrics hooks: ``NoopMetrics`` (default) and ``MetricsRecorder`` (in memory, Prometheus text).

The engine calls the hook from its thread after each step; the recorder only updates
counters and histogram buckets (no I/O), and ``render_prometheus()`` / ``snapshot()`` may be
called from another thread (the server's /metrics), under a lock.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

from orcd_toolkit.engine.interfaces import RequestStats, StepStats


class NoopMetrics:
    """Discards every observation (the default hook)."""

    def on_request_queued(self, request_id: str, num_prompt_tokens: int) -> None:
        return None

    def on_first_token(self, request_id: str, ttft_s: float) -> None:
        return None

    def on_request_finished(self, stats: RequestStats) -> None:
        return None

    def on_step(self, stats: StepStats) -> None:
        return None


# Prometheus-style cumulative bucket bounds, seconds.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


@dataclass(slots=True)
class Histogram:
    """Fixed buckets, as Prometheus exposes them (cumulative on render)."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1


class MetricsRecorder:
    """In-memory counters, gauges and histograms; ``render_prometheus`` for /metrics."""

    HISTOGRAMS = ("queue_time_seconds", "time_to_first_token_seconds",
                  "time_per_output_token_seconds", "e2e_request_latency_seconds",
                  "step_time_seconds")

    def __init__(self, prefix: str = "orcd_") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self.requests_queued = 0
        self.requests_finished: dict[str, int] = {}
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.prefill_tokens_computed = 0
        self.preemptions = 0
        self.steps = 0
        self.num_running = 0
        self.num_waiting = 0
        self.kv_blocks_used = 0
        self.kv_blocks_total = 0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.hist = {name: Histogram() for name in self.HISTOGRAMS}

    def on_request_queued(self, request_id: str, num_prompt_tokens: int) -> None:
        with self._lock:
            self.requests_queued += 1

    def on_first_token(self, request_id: str, ttft_s: float) -> None:
        with self._lock:
            self.hist["time_to_first_token_seconds"].observe(ttft_s)

    def on_request_finished(self, stats: RequestStats) -> None:
        with self._lock:
            self.requests_finished[stats.outcome] = self.requests_finished.get(stats.outcome, 0) + 1
            self.prompt_tokens += stats.num_prompt_tokens
            self.generation_tokens += stats.num_output_tokens
            self.hist["queue_time_seconds"].observe(stats.queue_time_s)
            self.hist["e2e_request_latency_seconds"].observe(stats.e2e_s)
            tpot = stats.time_per_output_token_s
            if tpot is not None:
                self.hist["time_per_output_token_seconds"].observe(tpot)

    def on_step(self, stats: StepStats) -> None:
        with self._lock:
            self.steps += 1
            self.prefill_tokens_computed += stats.num_prefill_tokens
            self.preemptions += stats.num_preempted
            self.num_running = stats.num_running
            self.num_waiting = stats.num_waiting
            self.kv_blocks_used = stats.num_kv_blocks_used
            self.kv_blocks_total = stats.num_kv_blocks_total
            self.prefix_queries = stats.prefix_queries
            self.prefix_hits = stats.prefix_hits
            self.hist["step_time_seconds"].observe(stats.step_time_s)

    def snapshot(self) -> dict[str, object]:
        """A plain dict of the current values (JSON-ready; notebook widgets read it)."""
        with self._lock:
            return {
                "requests_queued": self.requests_queued,
                "requests_finished": dict(self.requests_finished),
                "prompt_tokens": self.prompt_tokens,
                "generation_tokens": self.generation_tokens,
                "preemptions": self.preemptions,
                "steps": self.steps,
                "num_running": self.num_running,
                "num_waiting": self.num_waiting,
                "kv_usage": (self.kv_blocks_used / self.kv_blocks_total
                             if self.kv_blocks_total else 0.0),
                "prefix_cache_hit_rate": (self.prefix_hits / self.prefix_queries
                                          if self.prefix_queries else 0.0),
                "histograms": {k: {"count": h.count, "sum": h.total} for k, h in self.hist.items()},
            }

    def render_prometheus(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        p = self.prefix
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {p}{name} {help_}")
            lines.append(f"# TYPE {p}{name} {kind}")
            for labels, value in samples:
                lines.append(f"{p}{name}{labels} {value:g}")

        with self._lock:
            metric("requests_queued_total", "counter", "Requests accepted.",
                   [("", self.requests_queued)])
            metric("requests_finished_total", "counter", "Requests finished, by outcome.",
                   [(f'{{outcome="{k}"}}', v) for k, v in sorted(self.requests_finished.items())])
            metric("prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
                   [("", self.prompt_tokens)])
            metric("generation_tokens_total", "counter", "Generated tokens of finished requests.",
                   [("", self.generation_tokens)])
            metric("preemptions_total", "counter", "Sequences preempted (recompute).",
                   [("", self.preemptions)])
            metric("prefix_cache_queries_total", "counter", "Prompt blocks looked up.",
                   [("", self.prefix_queries)])
            metric("prefix_cache_hits_total", "counter", "Prompt blocks found cached.",
                   [("", self.prefix_hits)])
            metric("num_requests_running", "gauge", "Sequences running.", [("", self.num_running)])
            metric("num_requests_waiting", "gauge", "Requests waiting.", [("", self.num_waiting)])
            usage = self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0
            metric("kv_cache_usage_ratio", "gauge", "Fraction of KV blocks in use.",
                   [("", usage)])
            for name, h in self.hist.items():
                lines.append(f"# HELP {p}{name} {name.replace('_', ' ')}.")
                lines.append(f"# TYPE {p}{name} histogram")
                cum = 0
                for bound, c in zip(h.bounds, h.counts, strict=False):
                    cum += c
                    lines.append(f'{p}{name}_bucket{{le="{bound:g}"}} {cum}')
                lines.append(f'{p}{name}_bucket{{le="+Inf"}} {h.count}')
                lines.append(f"{p}{name}_sum {h.total:g}")
                lines.append(f"{p}{name}_count {h.count}")
        return "\n".join(lines) + "\n"
