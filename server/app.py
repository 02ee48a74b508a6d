"""The worker's server: WebSocket streaming on ``/v1/stream`` and HTTP GET on the same port.

Built on ``websockets.asyncio.server``. Plain GETs (``/health``, ``/metrics``,
``/v1/models``, ``/``) are answered from ``process_request`` before any WebSocket handshake,
from cached state only. Each connection may run several jobs; each job has a relay task that
moves events from its :class:`~orcd_toolkit.server.worker.JobStream` to the socket, so a slow
socket slows only its own jobs (backpressure through ``send``), never the engine thread.

Lifecycle: bind first, then load the model on the engine thread (``/health`` answers 503 with
the load progress meanwhile), then ``ready`` (log event and ``--callback-url`` notice). SIGTERM
or SIGINT starts a drain: new jobs are refused with ``OVERLOADED`` (retriable), jobs in flight
get ``drain_timeout_s`` to finish and are then ended with a retriable ``CANCELLED``; then every
connection is closed with 1001 (going away) and :meth:`WorkerServer.run` returns 0.
"""

from __future__ import annotations

import asyncio
import email.utils
import hmac
import itertools
import json
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from orcd_toolkit import __version__
from orcd_toolkit.errors import (
    Cancelled,
    InferenceTimeout,
    InvalidRequest,
    OrcdError,
    Overloaded,
)
from orcd_toolkit.server import protocol
from orcd_toolkit.server.callback import post_ready_notice
from orcd_toolkit.server.logs import EventLog
from orcd_toolkit.server.metrics import ServerMetrics
from orcd_toolkit.server.protocol import CancelRequest, ExecuteRequest, Limits, ProtocolError
from orcd_toolkit.server.runtime import ModelInfo, RuntimeFactory
from orcd_toolkit.server.worker import EngineWorker, HealthState, Job, JobStream

STREAM_PATH = "/v1/stream"
SUBPROTOCOL = "orcd.v1"
# Browsers cannot set an Authorization header on a WebSocket; the web page offers the key as
# a second subprotocol "orcd-key.<key>" instead (never echoed back by the server).
KEY_SUBPROTOCOL_PREFIX = "orcd-key."
# Directly in the package so pyproject's package-data "*.html" ships it in the wheel.
_PAGE = Path(__file__).resolve().parent / "index.html"


@dataclass(slots=True)
class ServerConfig:
    """Everything ``orcd serve`` configures on the server side (validated by the command)."""

    host: str = "127.0.0.1"
    port: int = 8080
    worker_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    model_name: str = ""
    api_key: str | None = None
    max_tokens_in: int = 8192
    max_tokens_out: int = 2048
    inference_timeout_s: float = 300.0
    max_concurrent: int = 64
    max_jobs_per_connection: int = 16
    max_connections: int = 256
    max_message_bytes: int = 1 << 20
    stream_buffer_events: int = 1024
    drain_timeout_s: float = 30.0
    send_timeout_s: float = 30.0
    callback_url: str | None = None
    log_prompts: bool = False
    ping_interval_s: float | None = 20.0


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    conn_id: int
    jobs: dict[str, Job] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)


class WorkerServer:
    """One worker: a runtime on the engine thread behind the protocol."""

    def __init__(self, config: ServerConfig, factory: RuntimeFactory,
                 log: EventLog | None = None) -> None:
        self.config = config
        self.log = log or EventLog()
        self.metrics = ServerMetrics()
        self.health = HealthState(config.model_name, config.worker_id)
        self.limits = Limits(max_tokens_out=config.max_tokens_out)
        self._factory = factory
        self._conn_ids = itertools.count(1)
        self._job_seq = itertools.count(1)
        self._conns: set[_Conn] = set()
        self._jobs: dict[str, Job] = {}
        self._draining = False
        self._stopping: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._worker: EngineWorker | None = None
        self._load_error: OrcdError | None = None
        self._ready = threading.Event()
        self.bound_port: int | None = None
        self.exit_code = 0

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the socket and start loading the model on the engine thread."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        cfg = self.config
        self._server = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            max_size=cfg.max_message_bytes,
            ping_interval=cfg.ping_interval_s,
            compression=None,  # token frames are tiny; deflate would only cost CPU
            server_header=f"orcd-worker/{__version__}",
            logger=_QuietLogger(),
        )
        sock = next(iter(self._server.sockets))
        self.bound_port = sock.getsockname()[1]
        self.log.event("server.start", host=cfg.host, port=self.bound_port,
                       worker_id=cfg.worker_id, model=cfg.model_name,
                       auth=bool(cfg.api_key), endpoint=self.endpoint)
        self._worker = EngineWorker(
            self._factory, metrics=self.metrics, health=self.health, log=self.log,
            on_ready=self._on_ready_thread, on_load_failed=self._on_load_failed_thread,
            on_died=self._on_engine_died_thread,
        )
        self._worker.start()

    @property
    def endpoint(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.bound_port or self.config.port}{STREAM_PATH}"

    def _on_ready_thread(self, info: ModelInfo) -> None:
        self._ready.set()
        self.log.event("server.ready", model=info.name, arch=info.arch, quant_kind=info.quant_kind,
                       context_length=info.context_length, resident=info.resident,
                       vram_bytes=info.vram_bytes_used, endpoint=self.endpoint)
        if self.config.callback_url:
            payload = {
                "event": "ready",
                "worker_id": self.config.worker_id,
                "endpoint": self.endpoint,
                "health_url": self.endpoint.replace("ws://", "http://").replace(
                    STREAM_PATH, "/health"),
                "model": info.name,
                "arch": info.arch,
                "quant_kind": info.quant_kind,
                "context_length": info.context_length,
                "vram_bytes": info.vram_bytes_used,
            }
            threading.Thread(
                target=post_ready_notice,
                args=(self.config.callback_url, payload),
                kwargs={"log": self.log.event},
                name="orcd-callback", daemon=True,
            ).start()

    def _on_load_failed_thread(self, exc: OrcdError) -> None:
        self._load_error = exc
        self.log.event("model.load_failed", level="error", code=exc.code, error=str(exc))
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._begin_stop, 1)

    def _on_engine_died_thread(self, exc: BaseException) -> None:
        # Without its engine thread the worker cannot serve: stop (exit 1) so the orchestrator
        # restarts it, instead of accepting jobs that would never run.
        self._load_error = Internal(f"engine thread crashed: {type(exc).__name__}")
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._begin_stop, 1)

    def _begin_stop(self, code: int = 0) -> None:
        if self._stopping is not None and not self._stopping.is_set():
            self.exit_code = max(self.exit_code, code)
            self._stopping.set()

    def request_shutdown(self, signame: str = "request") -> None:
        """Start the drain (signal handler, or a test)."""
        if self._stopping is not None and not self._stopping.is_set():
            self.log.event("server.shutdown", signal=signame, in_flight=len(self._jobs),
                           drain_timeout_s=self.config.drain_timeout_s)
            self._begin_stop(0)

    async def run(self, install_signals: bool = True) -> int:
        """Serve until SIGTERM/SIGINT (or :meth:`request_shutdown`), drain, close; exit code."""
        if self._server is None:
            await self.start()
        assert self._loop is not None and self._stopping is not None  # set by start()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.request_shutdown, sig.name)
        try:
            await self._stopping.wait()
            await self._drain()
        finally:
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._loop.remove_signal_handler(sig)
        return self.exit_code

    async def _drain(self) -> None:
        assert self._idle is not None and self._server is not None
        self._draining = True
        self.health.update(status="draining" if self._load_error is None else "failed")
        deadline = self.config.drain_timeout_s
        if self._jobs:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=deadline)
            except TimeoutError:
                left = list(self._jobs.values())
                self.log.event("server.drain_deadline", level="warning", jobs_left=len(left))
                for job in left:
                    self._abort(job, Cancelled(
                        f"worker shutting down: the {deadline:g} s drain deadline passed"),
                        retriable=True)
                try:
                    await asyncio.wait_for(self._idle.wait(), timeout=5.0)
                except TimeoutError:
                    self.log.event("server.drain_stuck", level="error", jobs_left=len(self._jobs))
        self._server.close()  # closes every connection with 1001 (going away)
        await self._server.wait_closed()
        if self._worker is not None:
            await asyncio.to_thread(self._worker.stop)
        self.log.event("server.stopped", exit_code=self.exit_code)

    # ---- HTTP ----------------------------------------------------------------------------
    def _authorized(self, headers: Headers, *, allow_subprotocol: bool) -> bool:
        key = self.config.api_key
        if not key:
            return True
        expected = key.encode()
        auth = headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected):
            return True
        if allow_subprotocol:
            for value in headers.get_all("Sec-WebSocket-Protocol"):
                for offered in value.split(","):
                    offered = offered.strip()
                    if offered.startswith(KEY_SUBPROTOCOL_PREFIX) and hmac.compare_digest(
                        offered[len(KEY_SUBPROTOCOL_PREFIX):].encode(), expected
                    ):
                        return True
        return False

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/health":
            snap = self.health.snapshot()
            status = HTTPStatus.OK if snap["status"] in ("ready", "draining") else \
                HTTPStatus.SERVICE_UNAVAILABLE
            if snap["status"] == "draining":
                status = HTTPStatus.SERVICE_UNAVAILABLE
            return _response(status, json.dumps(snap).encode(), "application/json")
        if not self._authorized(request.headers, allow_subprotocol=path == STREAM_PATH):
            resp = _response(HTTPStatus.UNAUTHORIZED,
                             b'{"error":"missing or wrong API key (Authorization: Bearer)"}',
                             "application/json")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="orcd"'
            return resp
        if path == STREAM_PATH:
            if len(self._conns) >= self.config.max_connections:
                return _response(HTTPStatus.SERVICE_UNAVAILABLE,
                                 b'{"error":"too many connections"}', "application/json")
            return None  # continue with the WebSocket handshake
        if path == "/metrics":
            self.metrics.uptime.set(time.monotonic() - self.health.started)
            self.metrics.in_flight.set(len(self._jobs))
            self.metrics.connections.set(len(self._conns))
            return _response(HTTPStatus.OK, self.metrics.render().encode(),
                             "text/plain; version=0.0.4; charset=utf-8")
        if path == "/v1/models":
            snap = self.health.snapshot()
            body = {"object": "list", "data": [{
                "id": snap["model"], "object": "model", "owned_by": "orcd",
                "arch": snap["arch"], "quant_kind": snap["quant_kind"],
                "context_length": snap["context_length"], "ready": snap["status"] == "ready",
            }]}
            return _response(HTTPStatus.OK, json.dumps(body).encode(), "application/json")
        if path in ("/", "/index.html"):
            return _response(HTTPStatus.OK, _PAGE.read_bytes(), "text/html; charset=utf-8")
        return _response(HTTPStatus.NOT_FOUND, json.dumps(
            {"error": f"no such path {path[:100]!r}",
             "paths": ["/health", "/metrics", "/v1/models", "/", STREAM_PATH]}).encode(),
            "application/json")

    @staticmethod
    def _select_subprotocol(conn: ServerConnection, offered: Any) -> str | None:
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    # ---- WebSocket -----------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Conn(ws=ws, conn_id=next(self._conn_ids))
        self._conns.add(conn)
        self.log.event("conn.open", level="debug", conn=conn.conn_id,
                       peer=str(ws.remote_address))
        close_reason = "closed"
        try:
            async for frame in ws:
                await self._on_frame(conn, frame)
        except ConnectionClosed as exc:
            close_reason = f"{exc.__class__.__name__}: {exc}"
        finally:
            self._conns.discard(conn)
            for job in list(conn.jobs.values()):
                self._abort(job, Cancelled("connection closed"))
            self.log.event("conn.close", level="debug", conn=conn.conn_id, reason=close_reason,
                           jobs_aborted=len(conn.jobs))

    async def _send(self, conn: _Conn, event: dict[str, Any]) -> bool:
        """Send one event; False once the connection is gone.

        ``send`` waits while the socket's write buffer is full (backpressure). A client that
        accepts nothing for ``send_timeout_s`` is treated as dead: its TCP connection is
        aborted, which aborts all its jobs, instead of holding their slots forever.
        """
        clean = {k: v for k, v in event.items() if not k.startswith("_")}
        try:
            await asyncio.wait_for(conn.ws.send(protocol.encode(clean)),
                                   timeout=self.config.send_timeout_s)
            return True
        except ConnectionClosed:
            return False
        except TimeoutError:
            self.log.event("conn.stalled", level="warning", conn=conn.conn_id,
                           send_timeout_s=self.config.send_timeout_s)
            conn.ws.transport.abort()
            return False

    async def _on_frame(self, conn: _Conn, frame: str | bytes) -> None:
        try:
            msg = protocol.parse_client_message(protocol.decode_frame(frame), self.limits)
        except ProtocolError as exc:
            self.metrics.requests.inc(outcome="rejected")
            self.log.event("request.invalid", conn=conn.conn_id, job_id=exc.job_id,
                           error=str(exc))
            await self._send(conn, protocol.error_event(exc.job_id, exc.code, str(exc), False))
            return
        if isinstance(msg, CancelRequest):
            job = conn.jobs.get(msg.job_id)
            if job is not None:
                self._abort(job, Cancelled(f"job {msg.job_id!r} cancelled by the client"))
            return
        await self._on_execute(conn, msg)

    async def _on_execute(self, conn: _Conn, req: ExecuteRequest) -> None:
        refusal: OrcdError | None = None
        if req.job_id in conn.jobs:
            refusal = InvalidRequest(
                f"field 'job_id': {req.job_id!r} is already running on this connection")
        elif self._draining:
            refusal = Overloaded("worker is shutting down; retry on another worker")
        elif self._load_error is not None:
            refusal = self._load_error
        elif not self._ready.is_set():
            refusal = Overloaded(f"model is still loading ({self.health.progress}%)")
        elif len(conn.jobs) >= self.config.max_jobs_per_connection:
            refusal = Overloaded(
                f"at most {self.config.max_jobs_per_connection} jobs per connection")
        elif len(self._jobs) >= self.config.max_concurrent:
            refusal = Overloaded(
                f"at most {self.config.max_concurrent} concurrent jobs on this worker")
        if refusal is not None:
            outcome = "rejected" if refusal.code == "INVALID_REQUEST" else "overloaded"
            self.metrics.requests.inc(outcome=outcome)
            self.log.event("job.refused", conn=conn.conn_id, job_id=req.job_id,
                           code=refusal.code, error=str(refusal))
            await self._send(conn, protocol.error_event(req.job_id, refusal.code, str(refusal),
                                                        refusal.retriable))
            return
        assert self._loop is not None
        job = Job(key=f"{conn.conn_id}/{next(self._job_seq)}/{req.job_id}", job_id=req.job_id,
                  request=req, stream=JobStream(self._loop, self.config.stream_buffer_events),
                  conn_id=conn.conn_id)
        conn.jobs[req.job_id] = job
        self._jobs[job.key] = job
        self._idle.clear()  # type: ignore[union-attr]
        task = asyncio.create_task(self._run_job(conn, job), name=f"job-{job.key}")
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    def _abort(self, job: Job, error: OrcdError, *, retriable: bool | None = None) -> None:
        """End a job with ``error`` now; the engine drops it at its next step boundary.

        The terminal event is queued for the client at once (the job's relay sends it next,
        whatever the engine is doing), so a cancel never waits for a long step; the engine
        thread applies the abort between steps and frees the job's KV blocks then.
        """
        if job.state == "done" or job.terminal is not None:
            return
        ev = protocol.error_event(job.job_id, error.code, str(error),
                                  error.retriable if retriable is None else retriable)
        ev["_outcome"] = {"CANCELLED": "cancelled", "INFERENCE_TIMEOUT": "timeout",
                          "OVERLOADED": "overloaded"}.get(error.code, "error")
        job.terminal = ev
        job.stream.push(ev, force=True)
        if job.state == "submitted" and self._worker is not None:
            self._worker.abort(job, error, retriable=retriable)

    async def _run_job(self, conn: _Conn, job: Job) -> None:
        cfg = self.config
        req = job.request
        timeout_handle = self._loop.call_later(  # type: ignore[union-attr]
            cfg.inference_timeout_s, self._abort, job,
            InferenceTimeout(f"job exceeded the inference timeout of {cfg.inference_timeout_s:g} s"))
        fields: dict[str, Any] = {"conn": conn.conn_id, "job_id": job.job_id,
                                  "max_tokens": req.max_tokens}
        if cfg.log_prompts:
            fields["prompt"] = req.prompt if req.prompt is not None else \
                [{"role": r, "content": c} for r, c in (req.messages or ())]
        terminal: dict[str, Any] | None = None
        try:
            runtime = self._worker.runtime  # type: ignore[union-attr]
            try:
                if runtime is None:
                    raise Overloaded("model is not loaded")
                try:
                    ids = await asyncio.to_thread(runtime.encode, req)
                except OrcdError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a tokenizer bug must end the job
                    self.log.event("job.encode_crashed", level="error",
                                   error=f"{type(exc).__name__}: {exc}", **fields)
                    raise Internal(f"tokenizing the prompt failed: {type(exc).__name__}") \
                        from None
                info = runtime.info
                if len(ids) > cfg.max_tokens_in:
                    raise InvalidRequest(
                        f"field 'prompt' is {len(ids)} tokens; at most {cfg.max_tokens_in} "
                        "allowed (--max-tokens-in)")
                if info.context_length and len(ids) + req.max_tokens > info.context_length:
                    raise InvalidRequest(
                        f"field 'max_tokens': prompt ({len(ids)} tokens) + max_tokens "
                        f"({req.max_tokens}) exceeds the context length {info.context_length}")
            except OrcdError as exc:
                if job.terminal is None:
                    terminal = protocol.error_event(job.job_id, exc.code, str(exc),
                                                    exc.retriable)
                    terminal["_outcome"] = "rejected" if exc.code == "INVALID_REQUEST" \
                        else "error"
                    self.log.event("job.refused", code=exc.code, error=str(exc), **fields)
                    self._finish(conn, job, terminal, fields)
                    await self._send(conn, terminal)
                    return
                ids = []
            if job.terminal is None:
                job.prompt_ids = ids
                job.state = "submitted"
                fields["prompt_tokens"] = len(ids)
                self.log.event("job.start", **fields)
                self._worker.submit(job)  # type: ignore[union-attr]
            alive = True
            while terminal is None:
                for ev in await job.stream.take():
                    if ev["type"] in ("end", "error"):
                        terminal = ev
                        # bookkeeping first: whoever sees the terminal event also sees the
                        # job's counters, logs and freed slot
                        self._finish(conn, job, terminal, fields)
                    if alive:
                        alive = await self._send(conn, ev)
                    if terminal is not None:
                        break
        finally:
            timeout_handle.cancel()
            self._finish(conn, job, None, fields)

    def _finish(self, conn: _Conn, job: Job, terminal: dict[str, Any] | None,
                fields: dict[str, Any]) -> None:
        """Release the job's slot and account its outcome, once."""
        if job.state == "done":
            return
        job.state = "done"
        conn.jobs.pop(job.job_id, None)
        self._jobs.pop(job.key, None)
        if not self._jobs:
            self._idle.set()  # type: ignore[union-attr]
        if terminal is None:
            return
        outcome = terminal.get("_outcome", "error")
        self.metrics.requests.inc(outcome=outcome)
        self.metrics.e2e.observe(time.monotonic() - job.accepted_at)
        if terminal["type"] == "end":
            self.log.event("job.end", tokens_out=terminal["tokens_out"],
                           finish_reason=terminal["finish_reason"],
                           decode_time_ms=terminal["decode_time_ms"],
                           ttft_ms=round((job.first_token_at - job.accepted_at) * 1e3, 3)
                           if job.first_token_at else None, **fields)
        elif outcome != "rejected":
            self.log.event("job.error", level="warning" if outcome in
                           ("cancelled", "timeout", "overloaded") else "error",
                           code=terminal["code"], error=terminal["message"],
                           tokens_out=job.tokens_out, **fields)


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
    ])
    return Response(status.value, status.phrase, headers, body)


class Internal(OrcdError):
    """An unexpected failure inside the worker, reported to the client as ``INTERNAL``."""


class _QuietLogger:
    """websockets' own logger, silenced except for errors (our events are the log)."""

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    def info(self, *args: Any, **kwargs: Any) -> None:
        pass

    def warning(self, *args: Any, **kwargs: Any) -> None:
        pass

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        import logging

        logging.getLogger("websockets.server").error(msg, *args, **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        import logging

        logging.getLogger("websockets.server").exception(msg, *args, **kwargs)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging.Logger's name
        return level >= 40

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        if level >= 40:
            self.error(msg, *args, **kwargs)
