"""IPython magics: ``%orcd_load``, ``%orcd_connect``, ``%%orcd``, ``%orcd_close``.

They make a session current (``sessions.ACTIVE``; widgets created without a session use it)
and stream a cell's text as a prompt. Errors print as one line on stderr, never a
traceback (an ``OrcdError`` names the problem; argument mistakes are IPython usage errors).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from orcd_toolkit.errors import OrcdError
from orcd_toolkit.notebook.sessions import ACTIVE, LocalSession, RemoteSession, run_to_end

_POLL_S = 0.1


def _error(prefix: str, exc: BaseException) -> None:
    print(f"{prefix}: {exc}", file=sys.stderr, flush=True)


@magics_class
class OrcdMagics(Magics):
    """The ``%load_ext orcd_toolkit`` magics."""

    def _replace_session(self, session: Any) -> None:
        old = ACTIVE.session
        ACTIVE.session = session
        self.shell.user_ns["orcd_session"] = session
        if old is not None and old is not session:
            old.close()

    @magic_arguments()
    @argument("model", help="GGUF path or registry name (orcd models list)")
    @argument("--device", choices=("cpu", "gpu", "auto"), default="cpu",
              help="cpu: NumPy reference backend (default); gpu: the GPU backend")
    @argument("--kv-cache-mb", type=int, default=128, help="KV cache pool in MiB (default 128)")
    @line_magic
    def orcd_load(self, line: str) -> Any:
        """Load a model in this kernel, with a progress bar, and make it current."""
        args = parse_argstring(self.orcd_load, line)
        bar = label = None
        try:
            import ipywidgets as widgets
            from IPython.display import display

            bar = widgets.IntProgress(value=0, min=0, max=100, description="loading",
                                      bar_style="info")
            label = widgets.Label(f"{args.model}: starting")
            display(widgets.HBox([bar, label]))
        except ImportError:
            pass  # no ipywidgets: text progress only
        started = time.monotonic()
        session = LocalSession(args.model, device=args.device, kv_cache_size_mb=args.kv_cache_mb)
        shown = -1
        while not session.load_finished(_POLL_S):
            pct, detail = session.progress
            if pct != shown:
                shown = pct
                if bar is not None:
                    bar.value, label.value = pct, f"{pct} %: {detail}"
                else:
                    print(f"{pct:3d} % {detail}", flush=True)
        try:
            session.wait_ready()
        except OrcdError as exc:
            if bar is not None:
                bar.bar_style, label.value = "danger", f"failed: {exc}"
            _error("orcd_load", exc)
            return None
        if bar is not None:
            bar.value, bar.bar_style = 100, "success"
            label.value = f"100 %: ready in {time.monotonic() - started:.1f} s"
        info = session.info
        self._replace_session(session)
        print(f"loaded {info.name} ({info.arch}, {info.quant_kind}, {info.tokenizer_kind}) on "
              f"{info.resident} in {time.monotonic() - started:.1f} s; context "
              f"{info.context_length} tokens", flush=True)
        return session

    @magic_arguments()
    @argument("url", help="the server, e.g. ws://127.0.0.1:8080 (/v1/stream is added)")
    @argument("--api-key", default=None, help="Bearer key, when the server asks for one")
    @line_magic
    def orcd_connect(self, line: str) -> Any:
        """Use a running ``orcd serve`` through the client and make it current."""
        args = parse_argstring(self.orcd_connect, line)
        try:
            session = RemoteSession(args.url, api_key=args.api_key)
        except OrcdError as exc:
            _error("orcd_connect", exc)
            return None
        self._replace_session(session)
        h = session.health
        print(f"connected to {session.url}: model {h.get('model')} ({h.get('arch')}), "
              f"status {h.get('status')}, resident {h.get('resident')}", flush=True)
        return session

    @line_magic
    def orcd_close(self, line: str) -> None:
        """Close the current session (frees an in-process model)."""
        if ACTIVE.session is None:
            print("no current session", flush=True)
            return
        ACTIVE.session.close()
        ACTIVE.session = None
        self.shell.user_ns.pop("orcd_session", None)
        print("session closed", flush=True)

    @magic_arguments()
    @argument("--max-tokens", type=int, default=None, help="tokens to generate at most")
    @argument("--temperature", type=float, default=None, help="0 = greedy")
    @argument("--seed", type=int, default=None, help="sampling seed (reproducible output)")
    @argument("--top-p", type=float, default=None)
    @argument("--top-k", type=int, default=None)
    @argument("--min-p", type=float, default=None)
    @argument("--stop", action="append", default=None, help="stop string (repeatable)")
    @argument("--chat", action="store_true", help="send the cell as a user chat message")
    @cell_magic
    def orcd(self, line: str, cell: str) -> Any:
        """Stream the cell's text as a prompt; tokens appear as they arrive."""
        args = parse_argstring(self.orcd, line)
        if ACTIVE.session is None:
            from orcd_toolkit.notebook.errors import NoSession

            _error("orcd", NoSession())
            return None
        params = {
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "seed": args.seed,
            "top_p": args.top_p,
            "top_k": args.top_k,
            "min_p": args.min_p,
            "stop": args.stop,
        }
        prompt = cell.strip("\n")
        started = time.monotonic()
        try:
            if args.chat:
                job = ACTIVE.session.start(messages=[{"role": "user", "content": prompt}],
                                           **params)
            else:
                job = ACTIVE.session.start(prompt, **params)
        except OrcdError as exc:
            _error("orcd", exc)
            return None

        def show(_gen: Any, ev: dict[str, Any]) -> None:
            if ev.get("type") == "token" and ev.get("t"):
                sys.stdout.write(ev["t"])
                sys.stdout.flush()

        try:
            gen = run_to_end(job, show, started_at=started)
        except KeyboardInterrupt:
            job.cancel()
            print("\n[stopped]", flush=True)
            return None
        print(f"\n[{gen.summary()}]", flush=True)
        if gen.status == "error":
            print(f"orcd: {gen.error_code}: {gen.error_message}", file=sys.stderr, flush=True)
        return None
