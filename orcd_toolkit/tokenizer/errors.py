"""Typed tokenizer errors (docs/tokenizer.md).

A broken or unsupported vocabulary is a model-load failure; bad input to a loaded tokenizer
(an id outside the vocabulary, a template that fails to render) is a request error.
"""

from __future__ import annotations

from orcd_toolkit.errors import InvalidRequest, ModelLoadFailed


class TokenizerLoadError(ModelLoadFailed):
    """The vocabulary metadata is missing, inconsistent or of an unsupported kind."""


class UnknownPreTokenizer(TokenizerLoadError):
    """``tokenizer.ggml.pre`` names a pre-tokenizer this build does not implement."""


class UnknownTokenizerModel(TokenizerLoadError):
    """``tokenizer.ggml.model`` names a tokenizer model this build does not implement."""


class TokenizeError(InvalidRequest):
    """Input to encode/decode is invalid (e.g. an id outside the vocabulary, lone surrogates)."""


class TokenIdOutOfRange(TokenizeError):
    """A token id is negative or not below the vocabulary size."""


class ChatTemplateError(InvalidRequest):
    """The chat template is missing, does not compile, or failed while rendering."""
