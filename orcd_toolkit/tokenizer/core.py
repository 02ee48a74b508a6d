"""The :class:`Tokenizer` for GGUF vocabularies (``gguf-bpe`` and ``spm``).

Encoding follows ``llama_vocab::impl::tokenize``: special-token texts are cut out of the input
first (``tokenizer_st_partition``), then each remaining text fragment is tokenized on its own
(BPE: pre-tokenizer regexes + byte-level BPE via ``tokenizers``; SPM: :mod:`.spm`), with BOS/EOS
added per the metadata. Decoding follows ``token_to_piece``/``detokenize``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orcd_toolkit.tokenizer.errors import TokenIdOutOfRange, TokenizeError, TokenizerLoadError
from orcd_toolkit.tokenizer.vocab import TokenAttr, Vocab, vocab_from_metadata

_SPECIAL_RENDER = TokenAttr.UNKNOWN | TokenAttr.CONTROL
# C isspace() in the "C" locale: what llama.cpp strips next to LSTRIP/RSTRIP special tokens.
_C_SPACE = " \t\n\v\f\r"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte <-> printable-character table (llama.cpp unicode_byte_to_utf8_map)."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_UNICODE = _bytes_to_unicode()
# str.translate tables between raw bytes (as latin-1 code points) and GPT-2's characters.
_BYTES_TO_CHARS = {b: c for b, c in BYTE_TO_UNICODE.items()}
_CHARS_TO_BYTES: dict[int, int | str] = {i: "\uffff" for i in range(256)}  # not GPT-2 chars
_CHARS_TO_BYTES.update({ord(c): b for b, c in BYTE_TO_UNICODE.items()})


def bytes_to_bpe_text(raw: bytes) -> str:
    """Raw bytes as the GPT-2 byte-level characters a BPE vocabulary stores."""
    return raw.decode("latin-1").translate(_BYTES_TO_CHARS)


UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}


def _is_valid_unicode(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Tokenizer(ABC):
    """Text <-> token ids for one model (docs/tokenizer.md).

    Attributes mirror the GGUF metadata: ``bos_id``/``eos_id``/``pad_id``/``unk_id`` (or None),
    ``eot_ids`` (every end-of-turn control token), ``stop_ids`` (llama.cpp's end-of-generation
    set), ``add_bos``/``add_eos`` and ``kind`` (``gguf-bpe``, ``spm`` or ``hf-json``).
    """

    kind: str

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.vocab_size = vocab.size
        self.bos_id = vocab.bos_id
        self.eos_id = vocab.eos_id
        self.pad_id = vocab.pad_id
        self.unk_id = vocab.unk_id
        self.add_bos = vocab.add_bos
        self.add_eos = vocab.add_eos
        self.stop_ids: frozenset[int] = vocab.eog_ids
        self.eot_ids: tuple[int, ...] = tuple(sorted(vocab.eog_ids))
        self.chat_template: str | None = vocab.chat_template
        self._attrs = vocab.attrs
        self._texts = vocab.tokens
        self._specials_all = vocab.special_ids
        self._specials_user = tuple(
            i for i in vocab.special_ids if not vocab.attrs[i] & _SPECIAL_RENDER
        )
        self._special_re_all = self._alternation(self._specials_all)
        self._special_re_user = self._alternation(self._specials_user)
        self._pieces: list[bytes] = [self._piece_of(i) for i in range(vocab.size)]
        self._template_cache: Any = None

    # -- metadata -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Small JSON-able summary for /health and model cards."""
        return {
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "pre_tokenizer": self.vocab.pre,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "stop_ids": sorted(self.stop_ids),
            "add_bos": self.add_bos,
            "add_eos": self.add_eos,
            "has_chat_template": self.chat_template is not None,
        }

    def is_control(self, token_id: int) -> bool:
        """True for control/unknown tokens (not rendered by ``decode(skip_special=True)``)."""
        return bool(self._attrs[self._check_id(token_id)] & _SPECIAL_RENDER)

    def token_to_id(self, text: str) -> int | None:
        """The id whose vocabulary text is exactly ``text`` (e.g. ``"<|im_end|>"``), or None."""
        return self.vocab.token_to_id.get(text)

    # -- encode ---------------------------------------------------------------------------
    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``.

        ``add_special`` adds BOS/EOS as the model's metadata asks. ``parse_special`` turns the
        text of control tokens (``<|im_start|>``) into their ids — use it for chat-template
        output, never for user text. User-defined tokens are split out either way, as in
        llama.cpp.
        """
        if not isinstance(text, str):
            raise TokenizeError(f"text must be a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TokenizeError(
                f"text is not valid Unicode (lone surrogate at index {exc.start})"
            ) from None
        fragments = self._partition(text, parse_special)
        out: list[int] = []
        if add_special and self.add_bos:
            out.append(self.bos_id)  # type: ignore[arg-type]
        self._encode_fragments(fragments, out, add_special)
        if add_special and self.add_eos:
            out.append(self.eos_id)  # type: ignore[arg-type]
        return out

    @abstractmethod
    def _encode_fragments(self, fragments: list[str | int], out: list[int], add_special: bool) -> None:
        """Append the ids of partitioned ``fragments`` (raw text or special-token ids)."""

    def _alternation(self, ids: Sequence[int]) -> re.Pattern[str] | None:
        texts = [self._texts[i] for i in ids]
        if not texts:
            return None
        return re.compile("|".join(re.escape(t) for t in texts))

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Cut special-token texts out of ``text`` (llama.cpp ``tokenizer_st_partition``).

        Tokens are tried longest text first; each splits every remaining raw fragment at all
        of its occurrences. Control/unknown tokens count only with ``parse_special``.
        """
        pattern = self._special_re_all if parse_special else self._special_re_user
        if not text:
            return []
        if pattern is None or pattern.search(text) is None:
            return [text]  # fast path: no special text anywhere
        ids = self._specials_all if parse_special else self._specials_user
        texts = self._texts
        fragments: list[str | int] = [text]
        # Fragments are substrings of ``text``: a token absent from it is absent everywhere.
        for tid in [i for i in ids if texts[i] in text]:
            tok = texts[tid]
            attr = self._attrs[tid]
            new: list[str | int] = []
            for frag in fragments:
                if isinstance(frag, int) or tok not in frag:
                    new.append(frag)
                    continue
                pos = 0
                while True:
                    m = frag.find(tok, pos)
                    if m < 0:
                        break
                    left = frag[pos:m]
                    if attr & TokenAttr.LSTRIP:
                        left = left.rstrip(_C_SPACE)
                    if left:
                        new.append(left)
                    new.append(tid)
                    pos = m + len(tok)
                    if attr & TokenAttr.RSTRIP:
                        while pos < len(frag) and frag[pos] in _C_SPACE:
                            pos += 1
                rest = frag[pos:]
                if rest:
                    new.append(rest)
            fragments = new
        return fragments

    # -- decode ---------------------------------------------------------------------------
    def _check_id(self, token_id: int) -> int:
        if not 0 <= token_id < self.vocab_size:
            raise TokenIdOutOfRange(
                f"token id {token_id} is outside the vocabulary (size {self.vocab_size})"
            )
        return token_id

    @abstractmethod
    def _piece_of(self, token_id: int) -> bytes:
        """The bytes of one token (llama.cpp ``token_to_piece(special=true)``); cached at load."""

    def token_piece(self, token_id: int) -> bytes:
        """The bytes token ``token_id`` stands for (special tokens as their text)."""
        return self._pieces[self._check_id(int(token_id))]

    def decode_bytes(self, ids: Iterable[int], skip_special: bool = True) -> bytes:
        """Concatenated pieces; the SPM leading space rule of :meth:`decode` applied."""
        out = bytearray()
        pieces, attrs = self._pieces, self._attrs
        strip_space = self.vocab.add_space_prefix
        first = True
        for tid in ids:
            tid = self._check_id(int(tid))
            if skip_special and attrs[tid] & _SPECIAL_RENDER:
                first = False
                continue
            piece = pieces[tid]
            if first and strip_space and piece.startswith(b" "):
                piece = piece[1:]
            first = False
            out += piece
        return bytes(out)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of ``ids`` (llama.cpp ``detokenize`` without its ``clean_spaces`` pass).

        With ``skip_special`` control tokens render as nothing. For SPM vocabularies the space
        that encoding prepends (``add_space_prefix``) is removed from the first token, exactly
        when llama.cpp removes it (only if that token is the first of the sequence). Invalid
        UTF-8 becomes U+FFFD.
        """
        return self.decode_bytes(ids, skip_special).decode("utf-8", "replace")

    # -- chat -----------------------------------------------------------------------------
    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> str:
        """Render ``messages`` with the model's chat template (see :mod:`.chat`)."""
        from orcd_toolkit.tokenizer.chat import ChatTemplate

        if self._template_cache is None:
            if not self.chat_template:
                from orcd_toolkit.tokenizer.errors import ChatTemplateError

                raise ChatTemplateError("this model has no chat template (tokenizer.chat_template)")
            # HF passes the tokenizer's special_tokens_map: only the tokens that are set.
            extra = {
                name: self._texts[i]
                for name, i in (("pad_token", self.pad_id), ("unk_token", self.unk_id))
                if i is not None
            }
            self._template_cache = ChatTemplate(
                self.chat_template,
                bos_token=self._text_or_empty(self.bos_id),
                eos_token=self._text_or_empty(self.eos_id),
                special_tokens=extra,
            )
        return self._template_cache.render(
            messages, add_generation_prompt=add_generation_prompt, tools=tools, **kwargs
        )

    def _text_or_empty(self, token_id: int | None) -> str:
        return "" if token_id is None else self._texts[token_id]

    def __repr__(self) -> str:
        return f"<Tokenizer kind={self.kind} vocab_size={self.vocab_size} pre={self.vocab.pre!r}>"


class BpeTokenizer(Tokenizer):
    """``gguf-bpe``: byte-level BPE from GGUF vocab + merges, built with ``tokenizers``."""

    kind = "gguf-bpe"

    def __init__(self, vocab: Vocab) -> None:
        from tokenizers import Regex, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        from orcd_toolkit.tokenizer.pretokenize import regexes_for

        if vocab.pre_type is None:
            raise TokenizerLoadError("BPE vocabulary without a pre-tokenizer type")
        # Same text -> id map as llama.cpp's token_to_id (last duplicate wins); texts that are
        # not valid Unicode cannot cross into Rust and can never be produced by byte-level BPE.
        table = {t: i for t, i in vocab.token_to_id.items() if _is_valid_unicode(t)}
        try:
            model = models.BPE(
                vocab=table,
                merges=vocab.merges,
                ignore_merges=vocab.ignore_merges,
                fuse_unk=False,
                byte_fallback=False,
            )
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception subclasses
            raise TokenizerLoadError(f"BPE vocabulary/merges are inconsistent: {exc}") from None
        hf = HFTokenizer(model)
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False)
                for r in regexes_for(vocab.pre_type)
            ]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        self._hf = hf
        # Byte tokens that can never occur in UTF-8 (0xC0, 0xC1, 0xF5-0xFF) are often absent
        # (SmolLM2 lacks 21). Like llama.cpp we accept that; a missing byte would be dropped.
        super().__init__(vocab)

    def _encode_fragments(self, fragments: list[str | int], out: list[int], add_special: bool) -> None:
        texts = [f for f in fragments if isinstance(f, str)]
        if len(texts) == 1 and len(fragments) == 1:
            out.extend(self._hf.encode(texts[0], add_special_tokens=False).ids)
            return
        encoded = iter(self._hf.encode_batch(texts, add_special_tokens=False)) if texts else iter(())
        for f in fragments:
            if isinstance(f, int):
                out.append(f)
            else:
                out.extend(next(encoded).ids)

    def _piece_of(self, token_id: int) -> bytes:
        attr = self._attrs[token_id]
        text = self._texts[token_id]
        if attr & (_SPECIAL_RENDER | TokenAttr.USER_DEFINED):
            return text.encode("utf-8", "surrogateescape")
        if attr & TokenAttr.NORMAL:
            mapped = text.translate(_CHARS_TO_BYTES)
            try:
                return mapped.encode("latin-1")
            except UnicodeEncodeError:
                # A character outside the byte table (a malformed vocabulary) keeps its UTF-8.
                return b"".join(
                    bytes((UNICODE_TO_BYTE[c],))
                    if c in UNICODE_TO_BYTE
                    else c.encode("utf-8", "surrogateescape")
                    for c in text
                )
        if attr & TokenAttr.BYTE and len(text) == 6 and text.startswith("<0x"):
            return bytes((int(text[3:5], 16),))
        return b""


class SpmTokenizer(Tokenizer):
    """``spm``: llama.cpp's SentencePiece-style tokenizer (scores, byte fallback, ``▁``)."""

    kind = "spm"

    def __init__(self, vocab: Vocab) -> None:
        from orcd_toolkit.tokenizer.spm import SpmModel

        self._spm = SpmModel(vocab)
        super().__init__(vocab)

    def _encode_fragments(self, fragments: list[str | int], out: list[int], add_special: bool) -> None:
        is_prev_special = True  # a leading space goes in front of the first text
        prefix = self.vocab.add_space_prefix
        for f in fragments:
            if isinstance(f, int):
                out.append(f)
                is_prev_special = True
                continue
            text = (" " + f) if (prefix and is_prev_special) else f
            self._spm.encode(text.replace(" ", "\u2581"), out)
            is_prev_special = False

    def _piece_of(self, token_id: int) -> bytes:
        attr = self._attrs[token_id]
        text = self._texts[token_id]
        if attr & (_SPECIAL_RENDER | TokenAttr.USER_DEFINED):
            return text.encode("utf-8", "surrogateescape")
        if attr & TokenAttr.NORMAL:
            return text.replace("\u2581", " ").encode("utf-8", "surrogateescape")
        if attr & TokenAttr.BYTE:
            if len(text) == 6 and text.startswith("<0x"):
                return bytes((int(text[3:5], 16),))
            raise TokenizerLoadError(f"byte token {token_id} has malformed text {text!r}")
        return b""


def from_metadata(meta: Mapping[str, Any]) -> Tokenizer:
    """A tokenizer from GGUF metadata (``GGUFFile.metadata`` or any mapping of the keys)."""
    vocab = vocab_from_metadata(meta)
    if vocab.model == "gpt2":
        return BpeTokenizer(vocab)
    return SpmTokenizer(vocab)
