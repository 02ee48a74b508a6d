"""``TokenizerView``: text -> tokens, each shown as its piece with its id, colour-coded.

A view over ``orcd_toolkit.tokenizer.Tokenizer`` (``encode`` / ``token_piece``). Hovering a
token shows its id and raw bytes; whitespace is made visible (``·`` for a space, ``↵`` for a
newline) so the byte-level pieces can be read.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import traitlets

from orcd_toolkit.errors import OrcdError
from orcd_toolkit.notebook.sessions import ACTIVE
from orcd_toolkit.notebook.widgets._common import error_html, esc

PALETTE = ("#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5", "#d7f2d0", "#fce1c8",
           "#d4f0f0")


def load_any_tokenizer(source: Any) -> Any:
    """A tokenizer from a ``Tokenizer``, a session, a GGUF path or a registry name."""
    if source is None:
        source = ACTIVE.session
        if source is None:
            from orcd_toolkit.notebook.errors import NoSession

            raise NoSession("tokenize")
    if hasattr(source, "encode") and hasattr(source, "token_piece"):
        return source
    if getattr(source, "kind", None) == "local":
        return source.tokenizer
    from orcd_toolkit.store import resolve_model
    from orcd_toolkit.tokenizer import load_tokenizer

    if getattr(source, "kind", None) == "remote":
        # the server does not send its vocabulary; use the same model from the local store
        name = source.model_name
        return load_tokenizer(resolve_model(name, allow_pull=False))
    return load_tokenizer(resolve_model(str(source), allow_pull=False))


def visible(piece: bytes) -> str:
    """A token's bytes as readable text: invalid UTF-8 as <xx> escapes, whitespace marked."""
    text = piece.decode("utf-8", "backslashreplace")
    return text.replace(" ", "\u00b7").replace("\n", "\u21b5").replace("\t", "\u21e5")


class TokenizerView(widgets.VBox):
    """Type text, see its tokens. ``tokens`` holds ``(id, piece bytes)`` pairs."""

    tokens = traitlets.List(help="[(token id, piece bytes)] of the current text")
    error = traitlets.Unicode("")

    def __init__(self, source: Any = None, text: str = "", *, add_special: bool = True,
                 parse_special: bool = False, **kwargs: Any) -> None:
        self.tokenizer: Any = None
        self.text = widgets.Textarea(value=text, placeholder="Type text to tokenize",
                                     layout=widgets.Layout(width="100%", height="70px"))
        self.add_special = widgets.Checkbox(value=add_special, description="add BOS/EOS")
        self.parse_special = widgets.Checkbox(value=parse_special,
                                              description="parse special tokens")
        self.summary = widgets.HTML()
        self.view = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.ids_view = widgets.HTML()
        self.error_view = widgets.HTML()
        super().__init__([self.text, widgets.HBox([self.add_special, self.parse_special]),
                          self.error_view, self.summary, self.view, self.ids_view], **kwargs)
        self.add_class("orcd-tokenizer-view")
        try:
            self.tokenizer = load_any_tokenizer(source)
        except OrcdError as exc:
            self.error = str(exc)
            return
        for w in (self.text, self.add_special, self.parse_special):
            w.observe(lambda _c: self.update(), names="value")
        self.update()

    @traitlets.observe("error")
    def _error_changed(self, change: dict[str, Any]) -> None:
        self.error_view.value = error_html(change["new"])

    def update(self) -> None:
        """Re-tokenize the text box."""
        if self.tokenizer is None:
            return
        tok = self.tokenizer
        try:
            ids = tok.encode(self.text.value, add_special=self.add_special.value,
                             parse_special=self.parse_special.value)
        except OrcdError as exc:
            self.error = str(exc)
            return
        self.error = ""
        self.tokens = [(int(i), tok.token_piece(i)) for i in ids]

    @traitlets.observe("tokens")
    def _tokens_changed(self, change: dict[str, Any]) -> None:
        toks = change["new"]
        spans = []
        for k, (tid, piece) in enumerate(toks):
            colour = PALETTE[k % len(PALETTE)]
            special = self.tokenizer is not None and self.tokenizer.is_control(tid)
            border = "border:1px dashed #c62828;" if special else ""
            spans.append(
                f"<span class='orcd-token' title='id {tid} · {esc(repr(piece))}' "
                f"style='background:{colour};{border}border-radius:3px;padding:1px 2px;"
                f"margin:1px;display:inline-block;font-family:monospace'>"
                f"{esc(visible(piece))}<sub style='color:#777;font-size:9px'>{tid}</sub></span>"
            )
        chars = len(self.text.value)
        self.summary.value = (
            f"<span style='font-size:12px'>{len(toks)} tokens, {chars} characters"
            + (f", {chars / len(toks):.2f} chars/token" if toks else "")
            + (f" · {esc(self.tokenizer.kind)} vocabulary of {self.tokenizer.vocab_size:,}"
               if self.tokenizer is not None else "")
            + "</span>"
        )
        self.view.value = "<div style='line-height:2'>" + "".join(spans) + "</div>"
        self.ids_view.value = (
            "<code style='font-size:11px;color:#555'>"
            + esc(str([t for t, _ in toks])) + "</code>"
        )
