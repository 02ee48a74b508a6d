"""Where a notebook's generations run: an in-process engine or a running server.

Both kinds of session hand back a job whose ``events()`` yields the server protocol's events
(``started`` / ``token`` / ``end`` / ``error``, docs/protocol.md), so the magics and widgets
consume one stream shape whatever runs the model, and in-process use goes through exactly
the pieces the server uses:

- :class:`LocalSession` builds ``orcd_toolkit.server.engine_runtime``'s runtime (GGUF model,
  tokenizer, ``LLMEngine``) on its own engine thread, the only thread that calls
  ``submit`` / ``abort`` / ``step`` (DESIGN.md §4), so the kernel's main thread stays free
  for the Stop button.
- :class:`RemoteSession` talks to ``orcd serve`` through ``orcd_toolkit.client``.

Parameters are validated by the server's own ``protocol.parse_execute`` before anything is
submitted, so a notebook gets the same one-line message a WebSocket client would.

Cancel is immediate on the consumer side: ``job.cancel()`` ends the job's event stream at
once with a ``CANCELLED`` error event (so a widget stops within milliseconds) and asks the
engine (or the server) to drop the request at its next step boundary, which frees its KV
blocks.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from orcd_toolkit.errors import OrcdError
from orcd_toolkit.notebook.errors import ServerUnreachable, SessionClosed
from orcd_toolkit.server import protocol
from orcd_toolkit.server.protocol import ExecuteRequest, Limits

TERMINAL = ("end", "error")
# How long the idle engine thread waits on its command queue before looking again.
_IDLE_POLL_S = 0.05

ProgressFn = Callable[[int, str], None]


def build_request(
    prompt: str | None,
    messages: Sequence[Mapping[str, str]] | None,
    params: Mapping[str, Any],
    limits: Limits,
    job_id: str,
) -> ExecuteRequest:
    """An ``execute`` request validated by the server's rules (raises ``ProtocolError``).

    ``None`` parameters are left out, so the server's defaults apply.
    """
    obj: dict[str, Any] = {"type": "execute", "job_id": job_id}
    if prompt is not None:
        obj["prompt"] = prompt
    if messages is not None:
        obj["messages"] = [dict(m) for m in messages]
    obj.update({k: v for k, v in params.items() if v is not None})
    return protocol.parse_execute(obj, limits)


class Job(Protocol):
    """One generation; ``events()`` ends with its terminal event (``end`` or ``error``)."""

    job_id: str

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]: ...

    def cancel(self) -> bool: ...

    @property
    def done(self) -> bool: ...


class Session(Protocol):
    """What magics and widgets generate with."""

    kind: str

    def start(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Mapping[str, str]] | None = None,
        **params: Any,
    ) -> Job: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class _QueuedJob:
    """A job's event stream: pushed from a producer thread, read by one consumer.

    After the first terminal event every later push is dropped, so a locally issued cancel
    is the last thing a consumer sees even if the engine still emits a token.
    """

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def push(self, event: dict[str, Any]) -> bool:
        """Append an event; False (dropped) once the stream has ended."""
        with self._lock:
            if self._done:
                return False
            if event.get("type") in TERMINAL:
                self._done = True
            self._queue.put(event)
        return True

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Events until the terminal one; ``TimeoutError`` when none comes for ``timeout`` s."""
        while True:
            try:
                ev = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(
                    f"job {self.job_id}: no event for {timeout:g} s"
                ) from None
            yield ev
            if ev.get("type") in TERMINAL:
                return

    def _cancel_locally(self) -> bool:
        return self.push(
            protocol.error_event(self.job_id, "CANCELLED", "stopped by the user", False)
        )


# --------------------------------------------------------------------------- in process


class LocalJob(_QueuedJob):
    """A job on a :class:`LocalSession`'s engine thread."""

    def __init__(self, session: LocalSession, request: ExecuteRequest, prompt_ids: list[int]):
        super().__init__(request.job_id)
        self.session = session
        self.request = request
        self.prompt_ids = prompt_ids
        # engine-thread state
        self.tokens_out = 0
        self.submitted_at = 0.0

    def cancel(self) -> bool:
        """End the stream now; the engine drops the request at its next step boundary."""
        if not self._cancel_locally():
            return False
        self.session._commands.put(("abort", self))
        return True


class LocalSession:
    """A model loaded in this process: F's engine runtime on a private engine thread.

    ``LocalSession("smollm2")`` starts loading at once (on the engine thread, where a GPU
    backend must create its context); :meth:`wait_ready` blocks until the model is ready and
    raises the load error, if any, as an ``OrcdError``. ``progress`` is polled state:
    ``(percent, detail)`` with the server's milestones 0/25/50/75/100.
    """

    kind = "local"

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        kv_cache_size_mb: int = 128,
        max_tokens_out: int = 4096,
        on_progress: ProgressFn | None = None,
    ) -> None:
        from orcd_toolkit.server.engine_runtime import RuntimeOptions, runtime_factory

        self.model_spec = str(model)
        self.device = device
        self.limits = Limits(max_tokens_out=max_tokens_out)
        self.progress: tuple[int, str] = (0, "starting")
        self.load_seconds: float | None = None
        self._on_progress = on_progress
        self._factory = runtime_factory(
            RuntimeOptions(
                model=self.model_spec,
                device=device,
                kv_cache_size_mb=kv_cache_size_mb,
                max_concurrent=8,
                max_waiting=64,
            )
        )
        self._commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._error: OrcdError | None = None
        self.runtime: Any = None
        self._active: dict[str, LocalJob] = {}
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._main, name="orcd-notebook-engine", daemon=True)
        self._thread.start()

    # -- any thread ------------------------------------------------------------------------
    def wait_ready(self, timeout: float | None = None) -> LocalSession:
        """Block until loaded; raises the load error (``ModelLoadFailed``, ``ModelNotFound``...)."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"model {self.model_spec!r} still loading after {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self

    def load_finished(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s; True once loading ended (ready or failed)."""
        return self._ready.wait(timeout)

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set() and self._error is None

    @property
    def load_error(self) -> OrcdError | None:
        return self._error

    @property
    def info(self) -> Any:
        """The runtime's ``ModelInfo`` (name, arch, quant kind, resident, context...)."""
        return self._live().info

    @property
    def tokenizer(self) -> Any:
        return self._live().tokenizer

    @property
    def model(self) -> Any:
        """The ``CausalLM`` (hparams, ``gguf_file``) the engine runs."""
        return self._live().engine.model

    def _live(self) -> Any:
        self.wait_ready()
        if self._stopped.is_set() or self.runtime is None:
            raise SessionClosed(f"the session for {self.model_spec!r} is closed; load it again")
        return self.runtime

    def start(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Mapping[str, str]] | None = None,
        **params: Any,
    ) -> LocalJob:
        """Validate, tokenize (chat template for ``messages``) and queue one generation."""
        runtime = self._live()
        request = build_request(prompt, messages, params, self.limits, uuid.uuid4().hex)
        prompt_ids = runtime.encode(request)
        job = LocalJob(self, request, prompt_ids)
        self._commands.put(("submit", job))
        return job

    def has_work(self) -> bool:
        """True while the engine still holds any request (aborts not yet applied included)."""
        rt = self.runtime
        return bool(self._active) or (rt is not None and rt.engine is not None and rt.has_work())

    def describe(self) -> dict[str, Any]:
        from orcd_toolkit.notebook.modelinfo import local_facts

        return local_facts(self)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the engine thread (jobs in flight end with an error event) and free the model."""
        self._commands.put(("stop",))
        self._thread.join(timeout)

    def __repr__(self) -> str:
        state = "ready" if self.is_ready else ("failed" if self._error else "loading")
        if self._stopped.is_set():
            state = "closed"
        return f"<LocalSession {self.model_spec!r} device={self.device} {state}>"

    # -- engine thread ---------------------------------------------------------------------
    def _progress(self, percent: int, detail: str) -> None:
        self.progress = (int(percent), detail)
        if self._on_progress is not None:
            self._on_progress(int(percent), detail)

    def _main(self) -> None:
        try:
            runtime = self._factory(self._progress)
        except OrcdError as exc:
            self._error = exc
        except Exception as exc:  # noqa: BLE001 - a loader bug must reach the notebook as one line
            self._error = OrcdError(f"model load crashed: {type(exc).__name__}: {exc}")
        if self._error is not None:
            self._stopped.set()
            self._ready.set()
            return
        self.runtime = runtime
        self.load_seconds = time.monotonic() - self._started
        self._ready.set()
        try:
            self._loop(runtime)
        finally:
            for job in list(self._active.values()):
                job.push(protocol.error_event(job.job_id, "INTERNAL", "engine stopped", True))
            self._active.clear()
            self._stopped.set()
            runtime.close()

    def _loop(self, runtime: Any) -> None:
        while True:
            idle = not self._active and not runtime.has_work()
            try:
                cmd = self._commands.get(timeout=_IDLE_POLL_S) if idle else \
                    self._commands.get_nowait()
            except queue.Empty:
                cmd = None
            while cmd is not None:
                if cmd[0] == "stop":
                    for job in list(self._active.values()):
                        runtime.abort(job.job_id)
                    return
                if cmd[0] == "submit":
                    self._submit(runtime, cmd[1])
                elif cmd[0] == "abort":
                    if self._active.pop(cmd[1].job_id, None) is not None:
                        runtime.abort(cmd[1].job_id)
                try:
                    cmd = self._commands.get_nowait()
                except queue.Empty:
                    cmd = None
            if self._active or runtime.has_work():
                self._step(runtime)

    def _submit(self, runtime: Any, job: LocalJob) -> None:
        if job.done:  # cancelled before the engine saw it
            return
        try:
            runtime.submit(job.job_id, job.prompt_ids, job.request)
        except OrcdError as exc:
            job.push(protocol.error_event(job.job_id, exc.code, str(exc), exc.retriable))
            return
        job.submitted_at = time.monotonic()
        self._active[job.job_id] = job
        job.push(protocol.started_event(job.job_id, runtime.info.name, time.time(),
                                        len(job.prompt_ids)))

    def _step(self, runtime: Any) -> None:
        try:
            outputs = runtime.step()
        except OrcdError as exc:
            self._fail_all(runtime, exc.code, str(exc), exc.retriable)
            return
        except Exception as exc:  # noqa: BLE001 - a step bug must end the jobs, not the thread
            self._fail_all(runtime, "INTERNAL", f"engine step failed: {type(exc).__name__}: "
                           f"{exc}", False)
            return
        now = time.monotonic()
        for out in outputs:
            job = self._active.get(out.job_id)
            if job is None:
                continue
            for k, token_id in enumerate(out.token_ids):
                lp = out.logprobs[k] if out.logprobs is not None and k < len(out.logprobs) \
                    else None
                text = out.texts[k] if k < len(out.texts) else ""
                job.push(protocol.token_event(job.job_id, text, job.tokens_out, int(token_id), lp))
                job.tokens_out += 1
            if out.error is not None:
                self._active.pop(job.job_id, None)
                err = out.error
                code = err.code if isinstance(err, OrcdError) else "INTERNAL"
                job.push(protocol.error_event(job.job_id, code, str(err), False))
            elif out.finished:
                self._active.pop(job.job_id, None)
                job.push(protocol.end_event(job.job_id, job.tokens_out,
                                            (now - job.submitted_at) * 1e3,
                                            out.finish_reason or "stop"))

    def _fail_all(self, runtime: Any, code: str, message: str, retriable: bool) -> None:
        for job in list(self._active.values()):
            self._active.pop(job.job_id, None)
            runtime.abort(job.job_id)
            job.push(protocol.error_event(job.job_id, code, message, retriable))


# --------------------------------------------------------------------------- remote


def normalize_url(url: str) -> str:
    """``host:port``, ``http://host:port`` or a full ``ws://.../v1/stream`` -> the stream URL."""
    from orcd_toolkit.server.app import STREAM_PATH

    text = url.strip()
    if "://" not in text:
        text = "ws://" + text
    parts = urlsplit(text)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ServerUnreachable(f"not a server address: {url!r} (expected ws://HOST:PORT)")
    path = parts.path if parts.path not in ("", "/") else STREAM_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class RemoteJob(_QueuedJob):
    """A job on a server: a reader thread moves the connection's events into the stream."""

    def __init__(self, client: Any, job_id: str) -> None:
        super().__init__(job_id)
        self._client = client
        self._reader = threading.Thread(target=self._read, name=f"orcd-job-{job_id[:8]}",
                                        daemon=True)
        self._reader.start()

    def _read(self) -> None:
        from websockets.exceptions import WebSocketException

        try:
            for ev in self._client.events(self.job_id):
                self.push(ev)
        except (WebSocketException, OSError, TimeoutError) as exc:
            self.push(protocol.error_event(
                self.job_id, "INTERNAL", f"connection to the server lost: {exc}", True))
        finally:
            self._client.close()

    def cancel(self) -> bool:
        """End the stream now and send ``cancel``; the server frees the job's KV blocks."""
        from websockets.exceptions import WebSocketException

        if not self._cancel_locally():
            return False
        try:
            self._client.cancel(self.job_id)
        except (WebSocketException, OSError):
            pass  # the connection is gone: the server aborts the job on disconnect anyway
        return True


class RemoteSession:
    """A running ``orcd serve``, reached through ``orcd_toolkit.client``.

    Construction reads ``/health`` so an unreachable address fails at once with
    :class:`ServerUnreachable`. Each job uses its own connection (the blocking client runs
    one job at a time), so several widgets can stream from one server together.
    """

    kind = "remote"

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 5.0) -> None:
        self.url = normalize_url(url)
        self.api_key = api_key
        self.timeout = timeout
        # Server-side limits decide; the local check only catches malformed values early.
        self.limits = Limits(max_tokens_out=1 << 20)
        self.health = self.fetch_health()

    def fetch_health(self) -> dict[str, Any]:
        """``/health`` as a dict; ``ServerUnreachable`` naming the address when it fails."""
        from orcd_toolkit.client import http_get, http_url

        url = http_url(self.url, "/health")
        try:
            status, _, body = http_get(url, timeout=self.timeout)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerUnreachable(f"no server answers at {url}: {reason}") from None
        try:
            doc = json.loads(body)
        except ValueError:
            raise ServerUnreachable(
                f"{url} answered HTTP {status} but not with orcd health JSON") from None
        if not isinstance(doc, dict) or "status" not in doc:
            raise ServerUnreachable(f"{url} is not an orcd worker (no 'status' in /health)")
        self.health = doc
        return doc

    @property
    def model_name(self) -> str:
        return str(self.health.get("model") or "")

    def start(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Mapping[str, str]] | None = None,
        **params: Any,
    ) -> RemoteJob:
        """Validate locally (same rules as the server), connect and submit."""
        from websockets.exceptions import WebSocketException

        from orcd_toolkit.client import Client

        request = build_request(prompt, messages, params, self.limits, uuid.uuid4().hex)
        client = Client(self.url, api_key=self.api_key, open_timeout=self.timeout,
                        event_timeout=None)
        try:
            client.connect()
        except (WebSocketException, OSError, TimeoutError) as exc:
            client.close()
            raise ServerUnreachable(f"cannot open {self.url}: {exc}") from None
        job_id = client.submit(prompt, messages=[dict(m) for m in messages] if messages else None,
                               job_id=request.job_id, **{k: v for k, v in params.items()
                                                         if v is not None})
        return RemoteJob(client, job_id)

    def describe(self) -> dict[str, Any]:
        from orcd_toolkit.notebook.modelinfo import remote_facts

        return remote_facts(self)

    def close(self) -> None:
        """Nothing is held between jobs (each job closes its own connection)."""

    def __repr__(self) -> str:
        return f"<RemoteSession {self.url} model={self.model_name!r} " \
               f"status={self.health.get('status')!r}>"


# --------------------------------------------------------------------------- consumer side


class Generation:
    """What a consumer has seen of one job: text, tokens, timings, outcome.

    Timings are taken where the events arrive (the notebook), the same way for both session
    kinds: TTFT from ``start`` to the first token event, decode speed over the tokens after
    the first one.
    """

    def __init__(self, job: Job, started_at: float | None = None) -> None:
        self.job = job
        self.started_at = time.monotonic() if started_at is None else started_at
        self.pieces: list[str] = []
        self.token_ids: list[int] = []
        self.prompt_tokens: int | None = None
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.finished_at: float | None = None
        self.finish_reason: str | None = None
        self.error_code: str | None = None
        self.error_message: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    @property
    def status(self) -> str:
        """``running``, ``done``, ``stopped`` (cancelled) or ``error``."""
        if self.finished_at is None:
            return "running"
        if self.error_code == "CANCELLED":
            return "stopped"
        return "error" if self.error_code else "done"

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started_at

    def tokens_per_s(self, now: float | None = None) -> float | None:
        """Decode speed: tokens after the first over the time since the first arrived."""
        if self.first_token_at is None or self.num_tokens < 2:
            return None
        end = self.last_token_at if self.done or now is None else now
        span = (end or self.first_token_at) - self.first_token_at
        return (self.num_tokens - 1) / span if span > 0 else None

    def feed(self, event: dict[str, Any], now: float | None = None) -> bool:
        """Take one event; True when it was the terminal one."""
        now = time.monotonic() if now is None else now
        kind = event.get("type")
        if kind == "token":
            if self.first_token_at is None:
                self.first_token_at = now
            self.last_token_at = now
            self.pieces.append(str(event.get("t", "")))
            self.token_ids.append(int(event.get("id", -1)))
        elif kind == "started":
            self.prompt_tokens = event.get("prompt_tokens")
        elif kind == "end":
            self.finish_reason = event.get("finish_reason")
            self.finished_at = now
            return True
        elif kind == "error":
            self.error_code = str(event.get("code", "INTERNAL"))
            self.error_message = str(event.get("message", ""))
            self.finished_at = now
            return True
        return False

    def summary(self, now: float | None = None) -> str:
        """One line: ``12 tokens · TTFT 120 ms · 8.1 tok/s · finish: length``."""
        parts = [f"{self.num_tokens} token{'s' if self.num_tokens != 1 else ''}"]
        if self.ttft_s is not None:
            parts.append(f"TTFT {self.ttft_s * 1e3:.0f} ms")
        rate = self.tokens_per_s(now)
        if rate is not None:
            parts.append(f"{rate:.1f} tok/s")
        if self.status == "done":
            parts.append(f"finish: {self.finish_reason}")
        elif self.status == "stopped":
            parts.append("stopped")
        elif self.status == "error":
            parts.append(f"error {self.error_code}")
        return " · ".join(parts)


def run_to_end(
    job: Job,
    on_event: Callable[[Generation, dict[str, Any]], None] | None = None,
    *,
    started_at: float | None = None,
    timeout: float | None = None,
) -> Generation:
    """Consume ``job`` on this thread until its terminal event; returns the record."""
    gen = Generation(job, started_at)
    for ev in job.events(timeout=timeout):
        gen.feed(ev)
        if on_event is not None:
            on_event(gen, ev)
    return gen


# --------------------------------------------------------------------------- the active one


class _Active:
    """The session ``%orcd_load`` / ``%orcd_connect`` made current (widgets default to it)."""

    session: Any = None


ACTIVE = _Active()


def open_session(spec: Any, *, device: str = "cpu") -> Any:
    """A session from what a user typed: a session (as is), a ``ws://``/``http://`` URL
    (:class:`RemoteSession`), or a model path / registry name (:class:`LocalSession`, loaded)."""
    from orcd_toolkit.notebook.errors import NoSession

    if spec is None:
        if ACTIVE.session is None:
            raise NoSession()
        return ACTIVE.session
    if not isinstance(spec, str):
        return spec
    if spec.startswith(("ws://", "wss://", "http://", "https://")):
        return RemoteSession(spec)
    return LocalSession(spec, device=device).wait_ready()
