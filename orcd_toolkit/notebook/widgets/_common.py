"""Small HTML helpers the widgets share (escaping, the error box, tables)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

ERROR_STYLE = (
    "color:#8a1c1c;background:#fdecea;border:1px solid #f5c2c0;border-radius:4px;"
    "padding:6px 10px;margin:4px 0;font-family:var(--jp-ui-font-family, sans-serif)"
)
NOTE_STYLE = (
    "color:#5b4a00;background:#fff8db;border:1px solid #f0e0a0;border-radius:4px;"
    "padding:6px 10px;margin:4px 0"
)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def error_html(message: str) -> str:
    """One readable line in a red box (never a traceback)."""
    return f'<div class="orcd-error" style="{ERROR_STYLE}">&#9888; {esc(message)}</div>' \
        if message else ""


def note_html(message: str) -> str:
    return f'<div class="orcd-note" style="{NOTE_STYLE}">{esc(message)}</div>' if message else ""


def pre_html(text: str, css_class: str = "orcd-output") -> str:
    return (
        f'<pre class="{css_class}" style="white-space:pre-wrap;word-break:break-word;'
        'margin:0;padding:6px;min-height:3em;border:1px solid #ddd;border-radius:4px;'
        f'background:#fafafa">{esc(text)}</pre>'
    )


def table_html(header: Sequence[str], rows: Iterable[Sequence[Any]], *, caption: str = "") -> str:
    cap = f"<caption style='text-align:left;font-weight:bold'>{esc(caption)}</caption>" \
        if caption else ""
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 8px'>{esc(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table style='border-collapse:collapse;font-size:12px'>{cap}<thead><tr>{head}" \
           f"</tr></thead><tbody>{body}</tbody></table>"
