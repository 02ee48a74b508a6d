"""Start ``orcd serve`` as a child process from a notebook (the server-client notebook, tests).

The child is the real command-line server, not a test double: ``ServerProcess("smollm2")``
picks a free loopback port, starts ``python -m orcd_toolkit serve``, and waits until
``/health`` says ``ready`` (or the child exits, whose last log line becomes the error).
``stop()`` sends SIGTERM, which drains and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orcd_toolkit.errors import ModelLoadFailed
from orcd_toolkit.notebook.errors import ServerUnreachable


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``orcd serve --model MODEL`` on 127.0.0.1 in a child process."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        port: int | None = None,
        kv_cache_size_mb: int = 64,
        extra_args: tuple[str, ...] = (),
        ready_timeout_s: float = 180.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"ws://127.0.0.1:{self.port}/v1/stream"
        self.http = f"http://127.0.0.1:{self.port}"
        fd, log_path = tempfile.mkstemp(prefix="orcd-serve-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_path)
        cmd = [sys.executable, "-m", "orcd_toolkit", "serve", "--model", str(model),
               "--host", "127.0.0.1", "--port", str(self.port), "--device", device,
               "--kv-cache-size-mb", str(kv_cache_size_mb), "--log-format", "json",
               "--drain-timeout-sec", "5", *extra_args]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.started = time.monotonic()
        self.ready_seconds: float | None = None
        try:
            self._wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise

    def last_log_line(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        if not lines:
            return "(no output)"
        try:
            rec = json.loads(lines[-1])
        except ValueError:
            return lines[-1]
        return str(rec.get("error") or rec.get("detail") or rec)

    def health(self) -> tuple[int, dict[str, Any]]:
        from orcd_toolkit.client import http_get

        status, _, body = http_get(self.http + "/health", timeout=2.0)
        return status, json.loads(body)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise ModelLoadFailed(f"orcd serve exited with status {rc}: {self.last_log_line()}")
            try:
                status, doc = self.health()
            except (OSError, ValueError):
                status, doc = 0, {}
            if status == 200 and doc.get("status") == "ready":
                self.ready_seconds = time.monotonic() - self.started
                return
            if doc.get("status") == "failed":
                raise ModelLoadFailed(f"orcd serve failed to load: {doc.get('error')}")
            if time.monotonic() > deadline:
                raise ServerUnreachable(
                    f"orcd serve on port {self.port} not ready after {timeout:g} s "
                    f"(last log: {self.last_log_line()})")
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (drain, exit 0); SIGKILL after ``timeout``. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"<ServerProcess {self.url} {state}>"
