"""``GenerateWidget``: prompt or chat in, streamed text out, live TTFT and tokens/s.

A view over a session (``orcd_toolkit.notebook.sessions``): the widget collects the prompt
and the sampling controls, calls ``session.start(...)``, and renders the job's protocol
events as they arrive on a background thread, so the kernel stays free to handle the Stop
button. It has no inference logic: validation is the server protocol's, generation is the
engine's (in process) or the server's.

State is exposed as traitlets (``text``, ``status``, ``error``, ``stats``, ``num_tokens``,
``ttft_ms``, ``tokens_per_s``) that tests and other widgets can observe.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ipywidgets as widgets
import traitlets

from orcd_toolkit.errors import InvalidRequest, OrcdError
from orcd_toolkit.notebook.sessions import ACTIVE, Generation, open_session
from orcd_toolkit.notebook.widgets._common import error_html, esc, pre_html

ROLE_COLOURS = {"user": "#1f5fa8", "assistant": "#2e7d32", "system": "#6d4c41"}


class GenerateWidget(widgets.VBox):
    """Generate / stream against a session (``LocalSession``, ``RemoteSession``), a model
    name or path (loaded on first use), a ``ws://`` URL, or — when ``session`` is None — the
    session ``%orcd_load`` / ``%orcd_connect`` made current (when the widget was created, or
    else when Generate is pressed)."""

    text = traitlets.Unicode("", help="the text streamed so far")
    status = traitlets.Unicode("idle", help="idle | loading | running | done | stopped | error")
    error = traitlets.Unicode("", help="the last error, one line; empty when none")
    stats = traitlets.Unicode("", help="live summary: tokens, TTFT, tokens/s, finish")
    num_tokens = traitlets.Int(0)
    ttft_ms = traitlets.Float(None, allow_none=True)
    tokens_per_s = traitlets.Float(None, allow_none=True)

    def __init__(
        self,
        session: Any = None,
        *,
        prompt: str = "",
        chat: bool = False,
        max_tokens: int = 64,
        temperature: float = 0.7,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        seed: int | None = None,
        stop: tuple[str, ...] | list[str] = (),
        update_interval_s: float = 0.05,
        **kwargs: Any,
    ) -> None:
        # bound now: a later %orcd_load of another model does not switch this widget
        self.session_spec = session if session is not None else ACTIVE.session
        self.update_interval_s = update_interval_s
        self.history: list[dict[str, str]] = []
        self.generation: Generation | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped: set[Generation] = set()
        wide = widgets.Layout(width="100%")
        desc = {"description_width": "90px"}
        self.mode = widgets.ToggleButtons(options=["prompt", "chat"],
                                          value="chat" if chat else "prompt",
                                          style={"button_width": "70px"})
        self.prompt = widgets.Textarea(value=prompt, placeholder="Prompt (or your chat message)",
                                       layout=widgets.Layout(width="100%", height="80px"))
        self.history_view = widgets.HTML()
        self.temperature = widgets.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05,
                                               description="temperature", style=desc)
        self.top_p = widgets.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.05,
                                         description="top-p", style=desc)
        self.top_k = widgets.BoundedIntText(value=top_k, min=0, max=1 << 20, description="top-k",
                                            style=desc, layout=widgets.Layout(width="180px"))
        self.min_p = widgets.FloatSlider(value=min_p, min=0.0, max=1.0, step=0.01,
                                         description="min-p", style=desc)
        self.max_tokens = widgets.BoundedIntText(value=max_tokens, min=1, max=1 << 20,
                                                 description="max tokens", style=desc,
                                                 layout=widgets.Layout(width="180px"))
        self.seed = widgets.Text(value="" if seed is None else str(seed), placeholder="random",
                                 description="seed", style=desc,
                                 layout=widgets.Layout(width="220px"))
        self.stop_strings = widgets.TagsInput(value=list(stop), allow_duplicates=False,
                                              placeholder="stop strings (Enter to add)")
        self.generate_button = widgets.Button(description="Generate", button_style="primary",
                                              icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="danger",
                                          icon="stop", disabled=True)
        self.clear_button = widgets.Button(description="Clear chat", icon="trash",
                                           layout=widgets.Layout(display="none"))
        self.output = widgets.HTML(pre_html(""), layout=wide)
        self.stats_view = widgets.HTML()
        self.error_view = widgets.HTML()
        self.generate_button.on_click(self._on_generate)
        self.stop_button.on_click(self._on_stop)
        self.clear_button.on_click(self._on_clear)
        self.mode.observe(self._on_mode, names="value")
        controls = widgets.VBox([
            widgets.HBox([self.temperature, self.top_p]),
            widgets.HBox([self.min_p, self.top_k]),
            widgets.HBox([self.max_tokens, self.seed]),
            self.stop_strings,
        ])
        buttons = widgets.HBox([self.generate_button, self.stop_button, self.clear_button])
        super().__init__(
            [self.mode, self.history_view, self.prompt, controls, buttons, self.error_view,
             self.output, self.stats_view],
            **kwargs,
        )
        self.add_class("orcd-generate")
        self._on_mode({"new": self.mode.value})

    # -- state -> view ----------------------------------------------------------------------
    @traitlets.observe("text")
    def _text_changed(self, change: dict[str, Any]) -> None:
        self.output.value = pre_html(change["new"])

    @traitlets.observe("error")
    def _error_changed(self, change: dict[str, Any]) -> None:
        self.error_view.value = error_html(change["new"])

    @traitlets.observe("stats")
    def _stats_changed(self, change: dict[str, Any]) -> None:
        self.stats_view.value = f'<span class="orcd-stats" style="font-family:monospace">' \
                                f'{esc(change["new"])}</span>'

    @traitlets.observe("status")
    def _status_changed(self, change: dict[str, Any]) -> None:
        busy = change["new"] in ("running", "loading")
        self.generate_button.disabled = busy
        self.stop_button.disabled = change["new"] != "running"

    def _on_mode(self, change: dict[str, Any]) -> None:
        chat = change["new"] == "chat"
        self.clear_button.layout.display = None if chat else "none"
        self.history_view.layout.display = None if chat else "none"
        self._render_history()

    def _render_history(self) -> None:
        rows = []
        for m in self.history:
            colour = ROLE_COLOURS.get(m["role"], "#333")
            rows.append(f'<div><b style="color:{colour}">{esc(m["role"])}:</b> '
                        f'<span style="white-space:pre-wrap">{esc(m["content"])}</span></div>')
        self.history_view.value = "".join(rows)

    # -- parameters -------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The sampling parameters as the protocol names them (validated by the session)."""
        seed_text = self.seed.value.strip()
        seed: Any = None
        if seed_text:
            try:
                seed = int(seed_text, 10)
            except ValueError:
                raise InvalidRequest(
                    f"seed must be an integer (or empty for a random seed), got {seed_text!r}"
                ) from None
        return {
            "max_tokens": int(self.max_tokens.value),
            "temperature": float(self.temperature.value),
            "top_p": float(self.top_p.value),
            "top_k": int(self.top_k.value),
            "min_p": float(self.min_p.value),
            "seed": seed,
            "stop": list(self.stop_strings.value) or None,
        }

    # -- actions ----------------------------------------------------------------------------
    def generate(self, wait: bool = False, timeout: float | None = None) -> Generation | None:
        """Press Generate; with ``wait`` block until the job ends (scripts, tests, CI)."""
        self._on_generate(None)
        if wait:
            self.wait(timeout)
        return self.generation

    def stop(self) -> None:
        """Press Stop."""
        self._on_stop(None)

    def wait(self, timeout: float | None = None) -> Generation | None:
        """Block until the running job's stream has ended."""
        t = self._thread
        if t is not None:
            t.join(timeout)
            if t.is_alive():
                raise TimeoutError(f"generation still running after {timeout:g} s")
        return self.generation

    def _session(self) -> Any:
        spec = self.session_spec
        if isinstance(spec, str):
            self.status = "loading"
            self.stats = f"loading {spec} ..."
            self.session_spec = spec = open_session(spec)
        return open_session(spec)

    def _on_generate(self, _button: Any) -> None:
        if self.status in ("running", "loading"):
            return
        self.error = ""
        started = time.monotonic()
        user_text = self.prompt.value
        chat = self.mode.value == "chat"
        try:
            params = self.params()
            session = self._session()
            if chat:
                messages = self.history + [{"role": "user", "content": user_text}]
                job = session.start(messages=messages, **params)
            else:
                job = session.start(user_text, **params)
        except OrcdError as exc:
            self.status = "error"
            self.stats = ""
            self.error = str(exc)
            return
        gen = Generation(job, started)
        self.generation = gen
        if chat:
            self.history.append({"role": "user", "content": user_text})
            self.prompt.value = ""
            self._render_history()
        self.text = ""
        self.num_tokens = 0
        self.ttft_ms = None
        self.tokens_per_s = None
        self.stats = "waiting for the first token ..."
        self.status = "running"
        self._thread = threading.Thread(target=self._consume, args=(gen,),
                                        name="orcd-generate", daemon=True)
        self._thread.start()

    def _consume(self, gen: Generation) -> None:
        last = 0.0
        try:
            for ev in gen.job.events():
                with self._lock:
                    if gen in self._stopped:
                        return
                    gen.feed(ev)
                    now = time.monotonic()
                    if gen.done or now - last >= self.update_interval_s:
                        self._render(gen, now)
                        last = now
                if gen.done:
                    return
        except Exception as exc:  # noqa: BLE001 - a background thread's failure must show up
            with self._lock:
                self.error = f"internal error while streaming: {type(exc).__name__}: {exc}"
                self.status = "error"

    def _render(self, gen: Generation, now: float) -> None:
        if gen is not self.generation:
            return
        self.text = gen.text
        self.num_tokens = gen.num_tokens
        self.ttft_ms = None if gen.ttft_s is None else gen.ttft_s * 1e3
        self.tokens_per_s = gen.tokens_per_s(now)
        self.stats = gen.summary(now)
        if gen.done:
            if gen.status == "error":
                self.error = f"{gen.error_code}: {gen.error_message}"
            elif self.mode.value == "chat":
                self.history.append({"role": "assistant", "content": gen.text})
                self._render_history()
            self.status = gen.status

    def _on_stop(self, _button: Any) -> None:
        gen = self.generation
        if gen is None or self.status != "running":
            return
        with self._lock:
            gen.job.cancel()
            self._stopped.add(gen)
            now = time.monotonic()
            gen.feed({"type": "error", "code": "CANCELLED", "message": "stopped by the user"}, now)
            self._render(gen, now)

    def _on_clear(self, _button: Any) -> None:
        self.history.clear()
        self._render_history()
        self.text = ""
        self.stats = ""
