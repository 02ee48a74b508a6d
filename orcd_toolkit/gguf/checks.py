"""Semantic checks a model load runs on a validated file (issue #3, item 2).

The structural pass (``reader.py``) guarantees a well-formed file; these checks decide whether
it carries what a model needs. Each collects *every* problem and raises one
:class:`GGUFModelError` naming each missing or wrong item, so a user fixes a file in one go.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from orcd_toolkit.gguf.errors import GGUFModelError
from orcd_toolkit.gguf.reader import (
    FLOAT_VALUE_TYPES,
    INTEGER_VALUE_TYPES,
    GGUFFile,
    GGUFValueType,
    ValueKind,
)

# A requirement: a Python type (int: any integer kind; float: FLOAT32/FLOAT64; str; bool;
# list: ARRAY of STRING; np.ndarray: any numeric/bool array), an exact GGUFValueType, a
# ValueKind (exact, arrays with item type), or a tuple of these (any of them).
Requirement = type | GGUFValueType | ValueKind | tuple

VOCAB_ARRAYS = ("tokenizer.ggml.scores", "tokenizer.ggml.token_type")
TOKENS_KEY = "tokenizer.ggml.tokens"


def _kind_matches(kind: ValueKind, want: Any) -> bool:
    if isinstance(want, tuple):
        return any(_kind_matches(kind, w) for w in want)
    if isinstance(want, ValueKind):
        return kind == want
    if isinstance(want, GGUFValueType):
        return kind.type == want and kind.item is None
    if want is bool:
        return kind.type == GGUFValueType.BOOL
    if want is int:
        return kind.type in INTEGER_VALUE_TYPES
    if want is float:
        return kind.type in FLOAT_VALUE_TYPES
    if want is str:
        return kind.type == GGUFValueType.STRING
    if want is list:
        return kind.type == GGUFValueType.ARRAY and kind.item == GGUFValueType.STRING
    if want is np.ndarray:
        return kind.type == GGUFValueType.ARRAY and kind.item != GGUFValueType.STRING
    raise TypeError(f"unsupported requirement {want!r}")


def _describe(want: Any) -> str:
    if isinstance(want, tuple):
        return " or ".join(_describe(w) for w in want)
    if isinstance(want, (GGUFValueType,)):
        return want.name
    if isinstance(want, ValueKind):
        return str(want)
    names = {
        bool: "bool",
        int: "integer",
        float: "float",
        str: "string",
        list: "string array",
        np.ndarray: "numeric array",
    }
    return names.get(want, repr(want))


def check_model_metadata(gguf_file: GGUFFile, required: Mapping[str, Requirement]) -> None:
    """Require each key of ``required`` to be present with a matching type.

    Keys may contain ``{arch}``, replaced by the file's ``general.architecture``
    (e.g. ``"{arch}.block_count": int``). ``general.architecture`` itself must be a string.
    Raises :class:`GGUFModelError` naming every missing or mistyped key.
    """
    problems: list[str] = []
    arch_kind = gguf_file.value_kinds.get("general.architecture")
    if arch_kind is None:
        problems.append("general.architecture is missing")
    elif arch_kind.type != GGUFValueType.STRING:
        problems.append(f"general.architecture must be a string, found {arch_kind}")
    arch = gguf_file.arch or ""
    for key_pattern, want in required.items():
        key = key_pattern.replace("{arch}", arch)
        kind = gguf_file.value_kinds.get(key)
        if kind is None:
            problems.append(f"{key} is missing (want {_describe(want)})")
        elif not _kind_matches(kind, want):
            problems.append(f"{key} has type {kind}, want {_describe(want)}")
    if problems:
        raise GGUFModelError(_join(gguf_file, problems), rule="model_metadata")


def check_vocab(gguf_file: GGUFFile, *, require_merges: bool | None = None) -> int:
    """Check the tokenizer vocabulary; returns the vocabulary size.

    - ``tokenizer.ggml.tokens`` is a non-empty string array;
    - ``scores`` / ``token_type`` (when present) are numeric arrays of the same length;
    - ``merges`` (required when ``require_merges``; by default when ``tokenizer.ggml.model``
      is ``gpt2``) is a string array;
    - every ``tokenizer.ggml.*_token_id`` is an integer inside the vocabulary.
    """
    md, kinds = gguf_file.metadata, gguf_file.value_kinds
    problems: list[str] = []
    tk = kinds.get(TOKENS_KEY)
    n_vocab = 0
    if tk is None:
        problems.append(f"{TOKENS_KEY} is missing")
    elif tk != ValueKind(GGUFValueType.ARRAY, GGUFValueType.STRING):
        problems.append(f"{TOKENS_KEY} has type {tk}, want ARRAY[STRING]")
    else:
        n_vocab = len(md[TOKENS_KEY])
        if n_vocab == 0:
            problems.append(f"{TOKENS_KEY} is empty")
    for key in VOCAB_ARRAYS:
        kind = kinds.get(key)
        if kind is None:
            continue
        if kind.type != GGUFValueType.ARRAY or kind.item in (
            None,
            GGUFValueType.STRING,
            GGUFValueType.BOOL,
        ):
            problems.append(f"{key} has type {kind}, want a numeric array")
        elif n_vocab and len(md[key]) != n_vocab:
            problems.append(f"{key} has {len(md[key])} entries but {TOKENS_KEY} has {n_vocab}")
    model_kind = kinds.get("tokenizer.ggml.model")
    if model_kind is not None and model_kind.type != GGUFValueType.STRING:
        problems.append(f"tokenizer.ggml.model has type {model_kind}, want STRING")
    if require_merges is None:
        require_merges = md.get("tokenizer.ggml.model") == "gpt2"
    mk = kinds.get("tokenizer.ggml.merges")
    if mk is None:
        if require_merges:
            problems.append("tokenizer.ggml.merges is missing (needed by a BPE vocabulary)")
    elif mk != ValueKind(GGUFValueType.ARRAY, GGUFValueType.STRING):
        problems.append(f"tokenizer.ggml.merges has type {mk}, want ARRAY[STRING]")
    for key, kind in kinds.items():
        if not (key.startswith("tokenizer.ggml.") and key.endswith("_token_id")):
            continue
        if kind.type not in INTEGER_VALUE_TYPES:
            problems.append(f"{key} has type {kind}, want an integer")
            continue
        tid = md[key]
        if n_vocab and not 0 <= tid < n_vocab:
            problems.append(f"{key} = {tid} is outside the vocabulary [0, {n_vocab})")
    if problems:
        raise GGUFModelError(_join(gguf_file, problems), rule="vocab")
    return n_vocab


def _join(gguf_file: GGUFFile, problems: list[str]) -> str:
    where = f"{gguf_file.path}: " if gguf_file.path is not None else ""
    return where + "; ".join(problems)


def special_token_ids(gguf_file: GGUFFile) -> dict[str, int]:
    """``{"bos": 151643, ...}`` from the ``tokenizer.ggml.*_token_id`` keys (integers only)."""
    out: dict[str, int] = {}
    for key, value in gguf_file.metadata.items():
        if key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
            if gguf_file.value_kinds[key].type in INTEGER_VALUE_TYPES:
                out[key[len("tokenizer.ggml.") : -len("_token_id")]] = int(value)
    return out
