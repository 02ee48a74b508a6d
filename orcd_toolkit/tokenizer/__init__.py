"""Tokenizers, chat templates and UTF-8-safe streaming detokenization (issue #4).

- :func:`load_tokenizer` — from a GGUF path, a loaded ``GGUFFile``, a metadata mapping, or a
  ``tokenizer.json`` path (``hf-json``);
- :class:`Tokenizer` — ``encode``/``decode``/``token_piece``/``apply_chat_template``/``describe``;
- :class:`IncrementalDetokenizer` — token ids in, valid UTF-8 text pieces out.

Design and the places where we close gaps between ``tokenizers`` and llama.cpp:
docs/tokenizer.md.
"""

from orcd_toolkit.tokenizer.core import BpeTokenizer, SpmTokenizer, Tokenizer, from_metadata
from orcd_toolkit.tokenizer.detok import IncrementalDetokenizer
from orcd_toolkit.tokenizer.errors import (
    ChatTemplateError,
    TokenIdOutOfRange,
    TokenizeError,
    TokenizerLoadError,
    UnknownPreTokenizer,
    UnknownTokenizerModel,
)
from orcd_toolkit.tokenizer.loader import load_tokenizer

__all__ = [
    "BpeTokenizer",
    "ChatTemplateError",
    "IncrementalDetokenizer",
    "SpmTokenizer",
    "TokenIdOutOfRange",
    "TokenizeError",
    "Tokenizer",
    "TokenizerLoadError",
    "UnknownPreTokenizer",
    "UnknownTokenizerModel",
    "from_metadata",
    "load_tokenizer",
]
