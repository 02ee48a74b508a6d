"""The engine thread and the bridge between it and the asyncio server.

One thread owns the runtime (on the GPU: the CUDA context, stream and graphs) and is the only
caller of ``submit`` / ``abort`` / ``step``. The asyncio side talks to it through a FIFO
command queue (submit, abort, stop); the thread answers through one bounded
:class:`JobStream` per job. Because commands are applied in order between steps, a cancel
or a disconnect takes effect at the next step boundary, and a job's terminal event is
always the last thing its stream carries.

Backpressure: a job's stream holds at most ``capacity`` events. The relay task that sends
them waits on the WebSocket's write buffer, so a client that stops reading fills the stream;
the engine thread cannot wait for one client without stalling every other job, so it ends
that job with ``OVERLOADED`` (retriable) instead of buffering without bound.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orcd_toolkit.errors import OrcdError, Overloaded
from orcd_toolkit.server import protocol
from orcd_toolkit.server.logs import EventLog
from orcd_toolkit.server.metrics import ServerMetrics
from orcd_toolkit.server.protocol import ExecuteRequest
from orcd_toolkit.server.runtime import (
    EngineStats,
    JobOutput,
    ModelInfo,
    RuntimeFactory,
    ServingRuntime,
)

# How long the idle engine thread sleeps between checks of its command queue.
_IDLE_POLL_S = 0.25


class JobStream:
    """Bounded, thread-safe event buffer from the engine thread to one job's relay task."""

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int) -> None:
        if capacity < 2:
            raise ValueError("a job stream needs room for at least two events")
        self.capacity = capacity
        self._loop = loop
        self._items: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self.high_water = 0

    def push(self, event: dict[str, Any], *, force: bool = False) -> bool:
        """Append an event (engine thread); False when full unless ``force`` (terminals)."""
        with self._lock:
            if len(self._items) >= self.capacity and not force:
                return False
            self._items.append(event)
            n = len(self._items)
            self.high_water = max(self.high_water, n)
        if n == 1:
            try:
                self._loop.call_soon_threadsafe(self._ready.set)
            except RuntimeError:
                # The event loop is closed (process exiting); nobody is left to read.
                return True
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    async def take(self) -> list[dict[str, Any]]:
        """Wait for events and take all of them (asyncio side); may return [] spuriously."""
        await self._ready.wait()
        self._ready.clear()
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items


@dataclass(eq=False)
class Job:
    """One accepted ``execute``. ``key`` is unique in the process (engine request id)."""

    key: str
    job_id: str
    request: ExecuteRequest
    stream: JobStream
    conn_id: int
    accepted_at: float = field(default_factory=time.monotonic)
    prompt_ids: list[int] = field(default_factory=list)
    # Engine-thread state.
    submitted_at: float = 0.0
    first_token_at: float = 0.0
    last_token_at: float = 0.0
    tokens_out: int = 0
    queue_time_observed: bool = False
    # Asyncio-side state: "pending" (tokenizing), "submitted" (engine owns it), "done".
    state: str = "pending"
    terminal: dict[str, Any] | None = None


class HealthState:
    """What ``/health`` reports, cached so an HTTP request never waits for or touches the GPU."""

    def __init__(self, model_name: str, worker_id: str) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.status = "loading"
        self.progress = 0
        self.progress_detail = "starting"
        self.error: str | None = None
        self.info = ModelInfo(name=model_name)
        self.stats = EngineStats()
        self.worker_id = worker_id

    def update(self, **fields: Any) -> None:
        with self._lock:
            for k, v in fields.items():
                setattr(self, k, v)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            info, stats = self.info, self.stats
            return {
                "status": self.status,
                "worker_id": self.worker_id,
                "model": info.name,
                "arch": info.arch,
                "resident": info.resident if self.status != "loading" else None,
                "quant_kind": info.quant_kind,
                "vram_bytes_used": stats.vram_bytes_used or info.vram_bytes_used,
                "tokenizer_kind": info.tokenizer_kind,
                "vocab_size": info.vocab_size,
                "context_length": info.context_length,
                "uptime_seconds": round(time.monotonic() - self.started, 3),
                "sm": info.sm,
                "cuda_runtime_version": info.cuda_runtime_version,
                "load_progress": self.progress,
                "load_detail": self.progress_detail,
                "error": self.error,
                "running": stats.num_running,
                "waiting": stats.num_waiting,
                "kv_blocks_used": stats.kv_blocks_used,
                "kv_blocks_total": stats.kv_blocks_total,
            }


class EngineWorker:
    """Owns the runtime on one thread; the asyncio side only enqueues commands."""

    def __init__(
        self,
        factory: RuntimeFactory,
        *,
        metrics: ServerMetrics,
        health: HealthState,
        log: EventLog,
        on_ready: Callable[[ModelInfo], None],
        on_load_failed: Callable[[OrcdError], None],
        on_died: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._factory = factory
        self._metrics = metrics
        self._health = health
        self._log = log
        self._on_ready = on_ready
        self._on_load_failed = on_load_failed
        self._on_died = on_died or (lambda exc: None)
        self._commands: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="orcd-engine", daemon=True)
        self._active: dict[str, Job] = {}
        self.runtime: ServingRuntime | None = None

    # ---- asyncio side ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._commands.put(("submit", job))

    def abort(self, job: Job, error: OrcdError, *, retriable: bool | None = None) -> None:
        """Drop ``job`` from the engine at the next step boundary; unless the asyncio side
        already queued a terminal event (``job.terminal``), send ``error`` as one."""
        self._commands.put(("abort", job, error, retriable))

    def stop(self, timeout: float = 10.0) -> None:
        """Abort whatever is left, close the runtime and join the thread."""
        self._commands.put(("stop",))
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # ---- engine thread -----------------------------------------------------------------
    def _progress(self, percent: int, detail: str) -> None:
        self._health.update(progress=int(percent), progress_detail=detail)
        self._log.event("model.load", progress=int(percent), detail=detail)

    def _main(self) -> None:
        try:
            runtime = self._factory(self._progress)
        except OrcdError as exc:
            self._health.update(status="failed", error=f"{exc.code}: {exc}")
            self._on_load_failed(exc)
            return
        except Exception as exc:  # noqa: BLE001 - any loader bug must surface as a clean failure
            err = OrcdError(f"model load crashed: {type(exc).__name__}: {exc}")
            self._log.event("model.load_crashed", level="error",
                            traceback=traceback.format_exc(limit=8))
            self._health.update(status="failed", error=f"INTERNAL: {err}")
            self._on_load_failed(err)
            return
        self.runtime = runtime
        if hasattr(runtime, "listener"):
            # lets the runtime report KV changes mid-step (an abort applied at step start)
            runtime.listener = self._refresh_stats
        self._refresh_stats()
        self._health.update(status="ready", info=runtime.info, progress=100,
                            progress_detail="ready")
        self._on_ready(runtime.info)
        try:
            self._loop(runtime)
        except Exception as exc:  # noqa: BLE001 - report, then let the server stop (exit 1)
            self._log.event("engine.thread_crashed", level="error",
                            error=f"{type(exc).__name__}: {exc}",
                            traceback=traceback.format_exc(limit=8))
            self._health.update(status="failed", error=f"INTERNAL: engine thread crashed: {exc}")
            self._on_died(exc)
        finally:
            for job in list(self._active.values()):
                self._terminate(job, protocol.error_event(
                    job.job_id, "INTERNAL", "engine thread stopped", True), "error")
            self._active.clear()
            try:
                runtime.close()
            except OrcdError as exc:
                self._log.event("runtime.close_failed", level="warning", error=str(exc))

    def _loop(self, runtime: ServingRuntime) -> None:
        while True:
            block = not self._active and not runtime.has_work()
            try:
                cmd = self._commands.get(timeout=_IDLE_POLL_S) if block else \
                    self._commands.get_nowait()
            except queue.Empty:
                cmd = None
            stop = False
            while cmd is not None:
                if cmd[0] == "stop":
                    stop = True
                elif cmd[0] == "submit":
                    self._do_submit(runtime, cmd[1])
                elif cmd[0] == "abort":
                    self._do_abort(runtime, cmd[1], cmd[2], cmd[3])
                try:
                    cmd = self._commands.get_nowait()
                except queue.Empty:
                    cmd = None
            if stop:
                for job in list(self._active.values()):
                    self._do_abort(runtime, job, Overloaded("worker stopped"), True)
                return
            if self._active or runtime.has_work():
                self._do_step(runtime)
            self._refresh_stats()

    def _do_submit(self, runtime: ServingRuntime, job: Job) -> None:
        try:
            runtime.submit(job.key, job.prompt_ids, job.request)
        except OrcdError as exc:
            outcome = "overloaded" if exc.code == "OVERLOADED" else (
                "rejected" if exc.code == "INVALID_REQUEST" else "error")
            self._terminate(job, protocol.error_event(job.job_id, exc.code, str(exc),
                                                      exc.retriable), outcome)
            return
        except Exception as exc:  # noqa: BLE001 - a submit bug ends this job, not the thread
            self._log.event("engine.submit_crashed", level="error", job_id=job.job_id,
                            error=f"{type(exc).__name__}: {exc}",
                            traceback=traceback.format_exc(limit=8))
            self._terminate(job, protocol.error_event(
                job.job_id, "INTERNAL", f"engine submit failed: {type(exc).__name__}", False),
                "error")
            return
        job.submitted_at = time.monotonic()
        self._active[job.key] = job
        self._metrics.prompt_tokens.inc(len(job.prompt_ids))
        job.stream.push(protocol.started_event(
            job.job_id, runtime.info.name, time.time(), len(job.prompt_ids)), force=True)

    def _do_abort(self, runtime: ServingRuntime, job: Job, error: OrcdError,
                  retriable: bool | None) -> None:
        if self._active.pop(job.key, None) is None:
            return  # already finished: cancel is idempotent
        try:
            runtime.abort(job.key)
        except Exception as exc:  # noqa: BLE001 - the job is gone for the client either way
            self._log.event("engine.abort_failed", level="error", job_id=job.job_id,
                            error=f"{type(exc).__name__}: {exc}")
        # Runtimes that free KV at once (or report it through their listener) show it here.
        self._refresh_stats()
        if job.terminal is not None:
            return  # the asyncio side already told the client (cancel, timeout, disconnect)
        outcome = {"CANCELLED": "cancelled", "INFERENCE_TIMEOUT": "timeout",
                   "OVERLOADED": "overloaded"}.get(error.code, "error")
        self._terminate(job, protocol.error_event(
            job.job_id, error.code, str(error),
            error.retriable if retriable is None else retriable), outcome)

    def _do_step(self, runtime: ServingRuntime) -> None:
        try:
            outputs = runtime.step()
        except OrcdError as exc:
            self._fail_all(runtime, exc.code, str(exc), exc.retriable)
            return
        except Exception as exc:  # noqa: BLE001 - a step bug must end jobs, not the process
            self._log.event("engine.step_crashed", level="error",
                            error=f"{type(exc).__name__}: {exc}",
                            traceback=traceback.format_exc(limit=8))
            self._fail_all(runtime, "INTERNAL", f"engine step failed: {type(exc).__name__}", False)
            return
        # Stats first: a client that reacts to a token by reading /metrics sees this step.
        self._refresh_stats()
        now = time.monotonic()
        for out in outputs:
            job = self._active.get(out.job_id)
            if job is not None:
                self._dispatch(runtime, job, out, now)

    def _fail_all(self, runtime: ServingRuntime, code: str, message: str,
                  retriable: bool) -> None:
        for job in list(self._active.values()):
            self._active.pop(job.key, None)
            try:
                runtime.abort(job.key)
            except Exception as exc:  # noqa: BLE001 - the job is failed for the client anyway
                self._log.event("engine.abort_failed", level="warning",
                                error=f"{type(exc).__name__}: {exc}")
            self._terminate(job, protocol.error_event(job.job_id, code, message, retriable),
                            "error")

    def _dispatch(self, runtime: ServingRuntime, job: Job, out: JobOutput, now: float) -> None:
        m = self._metrics
        if not job.queue_time_observed and (out.first_scheduled is not None or out.token_ids):
            first = out.first_scheduled if out.first_scheduled is not None else now
            m.queue_time.observe(max(0.0, first - job.submitted_at))
            job.queue_time_observed = True
        n = len(out.token_ids)
        if n:
            if job.tokens_out == 0:
                job.first_token_at = now
                m.ttft.observe(now - job.accepted_at)
            else:
                per_token = (now - job.last_token_at) / n
                for _ in range(n):
                    m.itl.observe(per_token)
            job.last_token_at = now
            m.generation_tokens.inc(n)
        for k, token_id in enumerate(out.token_ids):
            lp = out.logprobs[k] if out.logprobs is not None and k < len(out.logprobs) else None
            top = out.top_logprobs[k] if out.top_logprobs is not None and \
                k < len(out.top_logprobs) else None
            ev = protocol.token_event(job.job_id, out.texts[k] if k < len(out.texts) else "",
                                      job.tokens_out, int(token_id), lp, top)
            job.tokens_out += 1
            if not job.stream.push(ev):
                self._log.event("job.slow_reader", level="warning", job_id=job.job_id,
                                conn=job.conn_id, buffered=len(job.stream))
                self._do_abort(runtime, job, Overloaded(
                    f"client is not reading: {job.stream.capacity} events buffered for job "
                    f"{job.job_id!r}"), True)
                return
        if out.error is not None:
            self._active.pop(job.key, None)
            err = out.error
            code = err.code if isinstance(err, OrcdError) else "INTERNAL"
            retriable = err.retriable if isinstance(err, OrcdError) else False
            self._terminate(job, protocol.error_event(job.job_id, code, str(err), retriable),
                            "error")
        elif out.finished:
            self._active.pop(job.key, None)
            reason = out.finish_reason or "stop"
            elapsed = now - job.submitted_at
            job.stream.push({
                "type": "metrics",
                "job_id": job.job_id,
                "prompt_tokens": len(job.prompt_ids),
                "queue_ms": round((job.submitted_at - job.accepted_at) * 1e3, 3),
                "ttft_ms": round((job.first_token_at - job.accepted_at) * 1e3, 3)
                if job.tokens_out else None,
                "tokens_per_second": round(job.tokens_out / elapsed, 3) if elapsed > 0 else None,
            }, force=True)
            self._terminate(job, protocol.end_event(job.job_id, job.tokens_out, elapsed * 1e3,
                                                    reason), reason)

    def _terminate(self, job: Job, event: dict[str, Any], outcome: str) -> None:
        event["_outcome"] = outcome
        event["_at"] = time.monotonic()
        job.stream.push(event, force=True)

    def _refresh_stats(self) -> None:
        runtime = self.runtime
        if runtime is None:
            return
        s = runtime.stats()
        m = self._metrics
        m.running.set(s.num_running)
        m.waiting.set(s.num_waiting)
        m.kv_used.set(s.kv_blocks_used)
        m.kv_total.set(s.kv_blocks_total)
        m.kv_usage.set(s.kv_blocks_used / s.kv_blocks_total if s.kv_blocks_total else 0.0)
        m.preemptions.set_total(s.preemptions)
        m.prefix_cache_hits.set_total(s.prefix_cache_hits)
        m.prefix_cache_queries.set_total(s.prefix_cache_queries)
        m.vram.set(s.vram_bytes_used or runtime.info.vram_bytes_used)
        for q in s.queue_times_s:
            m.queue_time.observe(q)
        self._health.update(stats=s)
