"""``load_tokenizer``: one entry point for every kind of vocabulary source."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orcd_toolkit.tokenizer.core import Tokenizer, from_metadata
from orcd_toolkit.tokenizer.errors import TokenizerLoadError


def load_tokenizer(source: Any) -> Tokenizer:
    """A :class:`Tokenizer` from a GGUF path, a loaded ``GGUFFile``, a metadata mapping, or a
    ``tokenizer.json`` path (``hf-json``, e.g. GPT-OSS-20B's).

    Raises :class:`TokenizerLoadError` (``ModelLoadFailed``) naming the problem.
    """
    if isinstance(source, Mapping):
        return from_metadata(source)
    meta = getattr(source, "metadata", None)
    if isinstance(meta, Mapping):
        return from_metadata(meta)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise TokenizerLoadError(f"tokenizer source {path} does not exist")
        if path.suffix == ".json":
            from orcd_toolkit.tokenizer.hfjson import load_hf_json

            return load_hf_json(path)
        from orcd_toolkit.gguf import load

        with load(path) as gguf_file:
            return from_metadata(gguf_file.metadata)
    raise TokenizerLoadError(
        f"cannot load a tokenizer from {type(source).__name__}; "
        "pass a GGUF path, a GGUFFile, a metadata mapping or a tokenizer.json path"
    )
