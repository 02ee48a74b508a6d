"""``orcd serve``: run the worker (WebSocket streaming + HTTP GET on one port).

Every argument is checked before anything is loaded, with a message naming the argument and
its limit; an orchestrator that passes a bad value learns why at once (exit status 2 from
argparse, or 1 with ``orcd serve: error: ...``) instead of from a worker that half-starts.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import uuid
from urllib.parse import urlsplit

HELP = "serve a model over WebSocket + HTTP (ws://HOST:PORT/v1/stream, /health, /metrics)"


def _int_in(name: str, lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be in [{lo}, {hi}], got {value}")
        return value

    return parse


def _float_in(name: str, lo: float, hi: float):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not lo < value <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be in ({lo:g}, {hi:g}], got {text}")
        return value

    return parse


def _host(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"--host must be a host name or IP address, got {text!r}")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not all(part and len(part) <= 63 and part.replace("-", "").isalnum()
                   for part in text.split(".")):
            raise argparse.ArgumentTypeError(
                f"--host must be an IP address or a DNS name, got {text!r}") from None
    return text


def _worker_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--worker-id must be a UUID, got {text!r}") from None


def _api_key(text: str) -> str:
    if len(text) < 8:
        raise argparse.ArgumentTypeError("--api-key must be at least 8 characters")
    if not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            "--api-key must be printable ASCII without spaces (it travels in an HTTP header)")
    return text


def _callback_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"--callback-url must be an http:// or https:// URL, got {text!r}")
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="GGUF path or registry name (see `orcd models list`)")
    p.add_argument("--host", type=_host, default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=_int_in("--port", 0, 65535), default=8080,
                   help="TCP port (0: any free port; default 8080)")
    p.add_argument("--worker-id", type=_worker_id, default=None,
                   help="UUID reported in /health and the ready notice (default: random)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="gpu, cpu (NumPy reference backend), or auto: the GPU when usable")
    p.add_argument("--gpu-device", type=_int_in("--gpu-device", 0, 63), default=0,
                   help="CUDA device ordinal (default 0)")
    p.add_argument("--api-key", type=_api_key, default=os.environ.get("ORCD_API_KEY"),
                   help="require `Authorization: Bearer KEY` on every path but /health "
                        "(default: $ORCD_API_KEY; unset: no key)")
    p.add_argument("--max-tokens-in", type=_int_in("--max-tokens-in", 1, 1 << 20), default=8192,
                   help="longest prompt in tokens (default 8192)")
    p.add_argument("--max-tokens-out", type=_int_in("--max-tokens-out", 1, 1 << 20),
                   default=2048, help="largest max_tokens a job may ask for (default 2048)")
    p.add_argument("--inference-timeout-sec", type=_float_in("--inference-timeout-sec", 0, 86400),
                   default=300.0, help="end a job with INFERENCE_TIMEOUT after this (default 300)")
    p.add_argument("--kv-cache-size-mb", type=_int_in("--kv-cache-size-mb", 1, 1 << 20),
                   default=512, help="KV cache pool in MiB, allocated once (default 512)")
    p.add_argument("--max-concurrent", type=_int_in("--max-concurrent", 1, 4096), default=64,
                   help="jobs in flight on this worker; more are OVERLOADED (default 64)")
    p.add_argument("--max-jobs-per-connection", type=_int_in("--max-jobs-per-connection", 1, 4096),
                   default=16, help="jobs in flight per WebSocket connection (default 16)")
    p.add_argument("--max-message-bytes", type=_int_in("--max-message-bytes", 1024, 64 << 20),
                   default=1 << 20,
                   help="largest client frame; bigger closes the connection with 1009 "
                        "(default 1 MiB)")
    p.add_argument("--drain-timeout-sec", type=_float_in("--drain-timeout-sec", 0, 3600),
                   default=30.0,
                   help="on SIGTERM/SIGINT, how long jobs in flight may finish (default 30)")
    p.add_argument("--callback-url", type=_callback_url, default=None,
                   help="POST a ready notice (worker id, endpoint, model, VRAM) here, with retries")
    p.add_argument("--log-format", choices=("human", "json"), default="human",
                   help="log lines on stderr: human (default) or JSON")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument("--log-prompts", action="store_true",
                   help="include prompt text in job.start logs (off: never logged)")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from orcd_toolkit.errors import ModelNotFound
    from orcd_toolkit.server.app import ServerConfig, WorkerServer
    from orcd_toolkit.server.engine_runtime import RuntimeOptions, runtime_factory
    from orcd_toolkit.server.logs import EventLog
    from orcd_toolkit.store import ModelStore

    if not os.path.isfile(args.model) and ModelStore().registry.find(args.model) is None:
        # fail before binding: a typo should not start a worker that then dies
        known = ", ".join(ModelStore().registry.names())
        raise ModelNotFound(f"--model {args.model!r} is neither a file nor a known model "
                            f"name; known models: {known}")
    log = EventLog(args.log_format, level=args.log_level)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        worker_id=args.worker_id or str(uuid.uuid4()),
        model_name=args.model,
        api_key=args.api_key,
        max_tokens_in=args.max_tokens_in,
        max_tokens_out=args.max_tokens_out,
        inference_timeout_s=args.inference_timeout_sec,
        max_concurrent=args.max_concurrent,
        max_jobs_per_connection=args.max_jobs_per_connection,
        max_message_bytes=args.max_message_bytes,
        drain_timeout_s=args.drain_timeout_sec,
        callback_url=args.callback_url,
        log_prompts=args.log_prompts,
    )
    factory = runtime_factory(RuntimeOptions(
        model=args.model,
        device=args.device,
        gpu_device=args.gpu_device,
        kv_cache_size_mb=args.kv_cache_size_mb,
        max_concurrent=args.max_concurrent,
        max_waiting=max(args.max_concurrent, 1),
    ))
    server = WorkerServer(config, factory, log)

    async def main() -> int:
        try:
            await server.start()
        except OSError as exc:
            log.event("server.bind_failed", level="error", host=args.host, port=args.port,
                      error=str(exc))
            print(f"orcd serve: error: cannot listen on {args.host}:{args.port}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 1
        return await server.run()

    return asyncio.run(main())
