"""``hf-json``: a Hugging Face ``tokenizer.json`` loaded with ``tokenizers`` (GPT-OSS-20B).

Encoding is the file's own pipeline (normalizer, pre-tokenizer, model). Special tokens are cut
out by the same llama.cpp-style partition as the GGUF kinds, so ``parse_special`` means the
same thing everywhere: the file's added tokens marked ``special`` are control tokens, the others
user-defined (always split out). BOS/EOS come from a ``tokenizer_config.json`` next to the file
when there is one; the end-of-generation set follows llama.cpp's rules by token text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orcd_toolkit.tokenizer.core import _CHARS_TO_BYTES, Tokenizer
from orcd_toolkit.tokenizer.errors import TokenizerLoadError
from orcd_toolkit.tokenizer.vocab import TokenAttr, vocab_from_metadata


class HfJsonTokenizer(Tokenizer):
    """A ``tokenizers.Tokenizer`` behind the common :class:`Tokenizer` API."""

    kind = "hf-json"

    def __init__(self, hf: Any, config: dict[str, Any] | None = None) -> None:
        self._hf = hf
        size = hf.get_vocab_size(with_added_tokens=True)
        tokens: list[str] = [f"[EMPTY_{i}]" for i in range(size)]
        for t, i in hf.get_vocab(with_added_tokens=True).items():
            if 0 <= i < size:
                tokens[i] = t
        types = [1] * size
        for i, added in hf.get_added_tokens_decoder().items():
            if 0 <= i < size:
                types[i] = 3 if added.special else 4
        config = config or {}
        meta: dict[str, Any] = {
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": "default",
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.merges": [],
            "tokenizer.ggml.add_bos_token": False,
        }
        to_id = {t: i for i, t in enumerate(tokens)}
        for key, field in (("bos_token", "bos"), ("eos_token", "eos"), ("pad_token", "padding")):
            val = config.get(key)
            if isinstance(val, dict):
                val = val.get("content")
            if isinstance(val, str) and val in to_id:
                meta[f"tokenizer.ggml.{field}_token_id"] = to_id[val]
        if isinstance(config.get("chat_template"), str):
            meta["tokenizer.chat_template"] = config["chat_template"]
        vocab = vocab_from_metadata(meta)
        vocab.pre = vocab.pre_type = None  # the file's own pre-tokenizer is used
        if "tokenizer.ggml.bos_token_id" not in meta:
            vocab.bos_id = None
        if "tokenizer.ggml.eos_token_id" not in meta:
            vocab.eos_id = None
        # add_special follows the file's post-processor (e.g. a TemplateProcessing that adds
        # BOS), probed on the empty string, unless tokenizer_config.json says otherwise.
        probe = hf.encode("", add_special_tokens=True).ids
        add_bos = config.get("add_bos_token")
        add_eos = config.get("add_eos_token")
        if probe and vocab.bos_id is None and add_bos is not False:
            vocab.bos_id = probe[0]
        vocab.add_bos = bool(add_bos) if isinstance(add_bos, bool) else (
            vocab.bos_id is not None and probe[:1] == [vocab.bos_id]
        )
        vocab.add_eos = bool(add_eos) if isinstance(add_eos, bool) else (
            vocab.eos_id is not None and len(probe) > int(vocab.add_bos) and probe[-1] == vocab.eos_id
        )
        if (vocab.add_bos and vocab.bos_id is None) or (vocab.add_eos and vocab.eos_id is None):
            raise TokenizerLoadError("tokenizer adds BOS/EOS but its id is unknown")
        # HF added-token lstrip/rstrip: whitespace next to the token is not encoded.
        for i, added in hf.get_added_tokens_decoder().items():
            if 0 <= i < size:
                if added.lstrip:
                    vocab.attrs[i] |= TokenAttr.LSTRIP
                if added.rstrip:
                    vocab.attrs[i] |= TokenAttr.RSTRIP
        # Added tokens are split by our partition; the HF pipeline sees only plain text.
        hf.encode_special_tokens = True
        self._style = _piece_style(hf)
        if self._style == "metaspace":
            # SentencePiece-style files: the first piece's "▁" is the dummy prefix that HF's
            # decoder strips; decode and the detokenizer then follow the SPM rule.
            vocab.add_space_prefix = True
        super().__init__(vocab)

    def _encode_fragments(self, fragments: list[str | int], out: list[int], add_special: bool) -> None:
        texts = [f for f in fragments if isinstance(f, str)]
        encoded = iter(self._hf.encode_batch(texts, add_special_tokens=False))
        for f in fragments:
            if isinstance(f, int):
                out.append(f)
            else:
                out.extend(next(encoded).ids)

    def _piece_of(self, token_id: int) -> bytes:
        text = self._texts[token_id]
        if self._attrs[token_id] & (TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN):
            return text.encode("utf-8", "surrogateescape")
        if self._style == "byte-level":
            try:
                return text.translate(_CHARS_TO_BYTES).encode("latin-1")
            except UnicodeEncodeError:
                pass  # not a byte-level piece: let the file's decoder render it
        elif self._style == "metaspace":
            if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                try:
                    return bytes((int(text[3:5], 16),))
                except ValueError:
                    pass
            return text.replace("\u2581", " ").encode("utf-8", "surrogateescape")
        # Other decoders (WordPiece, ...): one-token decode is the best piece there is.
        return self._hf.decode([token_id], skip_special_tokens=False).encode("utf-8")


def _piece_style(hf: Any) -> str:
    """How a token's text maps to bytes: ``byte-level`` (GPT-2 table), ``metaspace``
    (``▁`` = space, ``<0xNN>`` byte fallback; one-token HF decode would strip the space, so
    it cannot be used for streaming) or ``decoder``."""
    if hf.decoder is None:
        return "decoder"
    spec = json.loads(hf.decoder.__getstate__())
    parts = [spec] + list(spec.get("decoders", []) or [])
    kinds = [d.get("type") for d in parts]
    if "ByteLevel" in kinds:
        return "byte-level"
    if "Metaspace" in kinds or any(
        d.get("type") == "Replace" and (d.get("pattern") or {}).get("String") == "\u2581"
        for d in parts
    ):
        return "metaspace"
    return "decoder"


def load_hf_json(path: str | Path, config: dict[str, Any] | None = None) -> HfJsonTokenizer:
    """Load ``tokenizer.json`` (and ``tokenizer_config.json`` beside it, if present)."""
    from tokenizers import Tokenizer as HFTokenizer

    path = Path(path)
    try:
        hf = HFTokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises untyped exceptions
        raise TokenizerLoadError(f"{path}: not a loadable tokenizer.json: {exc}") from None
    if config is None:
        cfg_path = path.with_name("tokenizer_config.json")
        if cfg_path.exists():
            try:
                config = json.loads(cfg_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise TokenizerLoadError(f"{cfg_path}: unreadable: {exc}") from None
    return HfJsonTokenizer(hf, config)


__all__ = ["HfJsonTokenizer", "load_hf_json"]
