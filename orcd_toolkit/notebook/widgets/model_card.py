"""``ModelCard``: architecture, hyper-parameters, tokenizer, tensor types, memory, residency.

A view over :mod:`orcd_toolkit.notebook.modelinfo`; ``card.facts`` is the dict it renders
(tests assert on it).
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import traitlets

from orcd_toolkit.errors import OrcdError
from orcd_toolkit.notebook.modelinfo import file_facts, fmt_bytes
from orcd_toolkit.notebook.sessions import ACTIVE
from orcd_toolkit.notebook.widgets._common import error_html, esc, note_html, table_html


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict) and "count" in v:
        return f"{v['type']} x {v['count']}"
    if isinstance(v, dict) and "chars" in v:
        return f"string of {v['chars']} chars"
    if isinstance(v, (list, tuple)) and len(v) > 8:
        return f"[{', '.join(map(str, v[:8]))}, ...] ({len(v)})"
    return str(v)


def _bars(memory: dict[str, int]) -> str:
    total = sum(memory.values()) or 1
    rows = []
    for cat, n in memory.items():
        pct = 100.0 * n / total
        rows.append(
            f"<div style='display:flex;align-items:center;font-size:12px'>"
            f"<span style='width:140px'>{esc(cat)}</span>"
            f"<span style='display:inline-block;height:10px;width:{max(pct * 2, 1):.0f}px;"
            f"background:#4e79a7;margin-right:6px'></span>{esc(fmt_bytes(n))} "
            f"({pct:.1f} %)</div>"
        )
    return "".join(rows)


class ModelCard(widgets.VBox):
    """The card of a session (local or remote), a GGUF path / registry name, or — when
    ``source`` is None — the current session."""

    facts = traitlets.Dict(help="what the card shows (orcd_toolkit.notebook.modelinfo)")
    error = traitlets.Unicode("")

    def __init__(self, source: Any = None, **kwargs: Any) -> None:
        self.source = source
        self.view = widgets.HTML()
        self.error_view = widgets.HTML()
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _b: self.refresh())
        super().__init__([self.error_view, self.view, self.refresh_button], **kwargs)
        self.add_class("orcd-model-card")
        self.refresh()

    def refresh(self) -> None:
        """Gather the facts again (a remote session re-reads ``/health``)."""
        self.error = ""
        try:
            src = self.source if self.source is not None else ACTIVE.session
            if src is None:
                from orcd_toolkit.notebook.errors import NoSession

                raise NoSession("describe")
            self.facts = src.describe() if hasattr(src, "describe") else file_facts(src)
        except OrcdError as exc:
            self.error = str(exc)
            self.facts = {}

    @traitlets.observe("error")
    def _error_changed(self, change: dict[str, Any]) -> None:
        self.error_view.value = error_html(change["new"])

    @traitlets.observe("facts")
    def _facts_changed(self, change: dict[str, Any]) -> None:
        f = change["new"]
        if not f:
            self.view.value = ""
            return
        resident = f.get("resident")
        colour = {"gpu": "#2e7d32", "cpu": "#1f5fa8"}.get(str(resident), "#777")
        head = (
            f"<h3 style='margin:4px 0'>{esc(f.get('name'))} "
            f"<span style='font-size:12px;color:white;background:{colour};border-radius:8px;"
            f"padding:1px 8px'>{esc(resident)}</span></h3>"
        )
        summary = [
            ("architecture", f.get("architecture")),
            ("parameters", f"{f['parameters']:,}" if f.get("parameters") else "-"),
            ("quantization", f.get("quant_kind", "-")),
            ("context length", f.get("context_length") or "-"),
            ("file", f.get("file") or f.get("url") or "-"),
        ]
        if f.get("backend"):
            summary.append(("backend", f["backend"]))
        if f.get("kv_cache_bytes"):
            nb, bs = f.get("kv_blocks", (0, 0))
            summary.append(("KV cache", f"{fmt_bytes(f['kv_cache_bytes'])} ({nb} blocks x {bs})"))
        parts = [head, table_html(["", ""], summary)]
        hp = f.get("hyperparameters") or {}
        if hp:
            parts.append(table_html(["key", "value"], [(k, _fmt(v)) for k, v in hp.items()],
                                    caption="hyper-parameters"))
        tok = f.get("tokenizer") or {}
        if tok:
            parts.append(table_html(["key", "value"], [(k, _fmt(v)) for k, v in tok.items()],
                                    caption="tokenizer"))
        types = f.get("tensor_types") or {}
        if types:
            parts.append(table_html(
                ["type", "tensors", "elements", "bytes"],
                [(n, t["tensors"], f"{t['elements']:,}", fmt_bytes(t["bytes"]))
                 for n, t in types.items()],
                caption="tensor types",
            ))
        mem = f.get("memory_by_category") or {}
        if mem:
            parts.append("<div style='font-weight:bold;font-size:12px;margin-top:6px'>"
                         "memory by category</div>" + _bars(mem))
        parts.append(note_html(f.get("residency_note", "")))
        self.view.value = "<div class='orcd-card'>" + "".join(parts) + "</div>"
