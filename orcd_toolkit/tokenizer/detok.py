"""Streaming detokenization: one token id in, the text that is safe to show out.

A byte-level token can end in the middle of a UTF-8 character (an emoji is often 2-4 tokens).
The detokenizer keeps the pieces as bytes and runs them through an incremental UTF-8 decoder,
which emits every complete character and holds back an incomplete tail; invalid bytes become
U+FFFD exactly where a one-shot ``bytes.decode(errors="replace")`` would put them, so the
concatenated output of ``push`` + ``flush`` equals ``Tokenizer.decode`` of the same ids
(CONTRACTS.md section 2).
"""

from __future__ import annotations

import codecs

from orcd_toolkit.tokenizer.core import _SPECIAL_RENDER, Tokenizer


class IncrementalDetokenizer:
    """Per-sequence detokenizer state; not thread-safe (one per request)."""

    __slots__ = ("_decoder", "_first", "_skip_special", "_strip_space", "_tok")

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True) -> None:
        self._tok = tokenizer
        self._skip_special = skip_special
        # Same leading-space rule as Tokenizer.decode: the SPM dummy prefix of the first token.
        self._strip_space = bool(getattr(tokenizer.vocab, "add_space_prefix", False))
        self._first = True
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one token; return the new text that is complete UTF-8 (may be empty)."""
        tok = self._tok
        piece = tok.token_piece(token_id)  # validates the id
        if self._skip_special and tok._attrs[token_id] & _SPECIAL_RENDER:
            self._first = False
            return ""
        if self._first and self._strip_space and piece.startswith(b" "):
            piece = piece[1:]
        self._first = False
        return self._decoder.decode(piece)

    def flush(self) -> str:
        """End of sequence: held-back bytes, an incomplete character as one U+FFFD."""
        out = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return out

    @property
    def pending_bytes(self) -> int:
        """How many bytes are held back waiting for the rest of a character."""
        return len(self._decoder.getstate()[0])
