"""The vocabulary as llama.cpp sees it: tokens, attributes, special ids and their rules.

Everything here follows ``llama_vocab::impl::load`` (llama.cpp src/llama-vocab.cpp) so that the
special-token ids, the end-of-generation set and the per-token attributes (which decide how
special tokens are split out of text and how they are rendered) match llama.cpp for the same
GGUF metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orcd_toolkit.tokenizer.errors import TokenizerLoadError, UnknownTokenizerModel
from orcd_toolkit.tokenizer.pretokenize import pre_type_of


class TokenAttr:
    """llama_token_attr bits (llama.h). Plain ints: 200k-token vocabularies are classified at
    load time and IntFlag arithmetic is too slow for that."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    NORMALIZED = 1 << 6
    LSTRIP = 1 << 7
    RSTRIP = 1 << 8
    SINGLE_WORD = 1 << 9


# GGUF tokenizer.ggml.token_type values (llama_token_type) -> attribute
_TYPE_TO_ATTR = {
    0: TokenAttr.UNDEFINED,
    1: TokenAttr.NORMAL,
    2: TokenAttr.UNKNOWN,
    3: TokenAttr.CONTROL,
    4: TokenAttr.USER_DEFINED,
    5: TokenAttr.UNUSED,
    6: TokenAttr.BYTE,
}

# Token texts llama.cpp treats as end of turn / end of generation (llama-vocab.cpp, "find EOT"
# and "maintain a list of tokens that cause end-of-generation").
EOT_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
)  # fmt: skip
EOG_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>",
)  # fmt: skip
FIM_TEXTS = {
    "pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
            "<|code_prefix|>", "<|prefix|>"),
    "suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
            "<|code_suffix|>", "<|suffix|>"),
    "mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
            "<|code_middle|>", "<|middle|>"),
    "pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "sep": ("<|file_sep|>",),
}  # fmt: skip
HARMONY_USER_DEFINED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")


@dataclass(slots=True)
class Vocab:
    """A validated vocabulary with llama.cpp's derived rules (see module docstring)."""

    model: str  # tokenizer.ggml.model: "gpt2" (BPE) or "llama" (SPM)
    tokens: list[str]
    attrs: list[int]  # TokenAttr bits per id
    scores: np.ndarray | None
    merges: list[tuple[str, str]]
    pre: str | None
    pre_type: str | None
    ignore_merges: bool
    clean_spaces: bool
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    eot_id: int | None
    eog_ids: frozenset[int]
    chat_template: str | None
    token_to_id: dict[str, int] = field(repr=False)
    special_ids: tuple[int, ...] = field(repr=False)  # cache_special_tokens, longest text first

    @property
    def size(self) -> int:
        return len(self.tokens)


def _get_int(meta: Mapping[str, Any], key: str) -> int | None:
    v = meta.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise TokenizerLoadError(f"{key} must be an integer, got {type(v).__name__}")
    return int(v)


def _get_bool(meta: Mapping[str, Any], key: str) -> bool | None:
    v = meta.get(key)
    if v is None:
        return None
    if not isinstance(v, bool | np.bool_):
        raise TokenizerLoadError(f"{key} must be a bool, got {type(v).__name__}")
    return bool(v)


def _as_str_list(v: Any, key: str) -> list[str]:
    if not isinstance(v, Sequence) or isinstance(v, str | bytes):
        raise TokenizerLoadError(f"{key} must be an array of strings, got {type(v).__name__}")
    if v and not isinstance(v[0], str):
        raise TokenizerLoadError(f"{key} must be an array of strings")
    return list(v)


def vocab_from_metadata(meta: Mapping[str, Any]) -> Vocab:
    """Build a :class:`Vocab` from GGUF ``tokenizer.*`` metadata (a plain mapping).

    Raises :class:`TokenizerLoadError` (a ``ModelLoadFailed``) naming the first problem:
    missing keys, arrays of different lengths, unknown model or pre-tokenizer type.
    """
    model = meta.get("tokenizer.ggml.model")
    if not isinstance(model, str):
        raise TokenizerLoadError("tokenizer.ggml.model is missing (no vocabulary in this file)")
    if model not in ("gpt2", "llama"):
        raise UnknownTokenizerModel(
            f"unsupported tokenizer.ggml.model={model!r}; supported: 'gpt2' (BPE), 'llama' (SPM)"
        )
    if "tokenizer.ggml.tokens" not in meta:
        raise TokenizerLoadError("tokenizer.ggml.tokens is missing")
    tokens = _as_str_list(meta["tokenizer.ggml.tokens"], "tokenizer.ggml.tokens")
    n = len(tokens)
    if n == 0:
        raise TokenizerLoadError("tokenizer.ggml.tokens is empty")

    types = meta.get("tokenizer.ggml.token_type")
    if types is not None:
        types = np.asarray(types)
        if types.ndim != 1 or not np.issubdtype(types.dtype, np.integer):
            raise TokenizerLoadError("tokenizer.ggml.token_type must be an integer array")
        if len(types) < n:
            raise TokenizerLoadError(
                f"inconsistent vocabulary: {len(types)} token types for {n} tokens"
            )
    scores = meta.get("tokenizer.ggml.scores")
    if scores is not None:
        scores = np.asarray(scores)
        if scores.ndim != 1 or not (
            np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)
        ):
            raise TokenizerLoadError("tokenizer.ggml.scores must be a numeric array")
        if len(scores) < n:
            raise TokenizerLoadError(f"inconsistent vocabulary: {len(scores)} scores for {n} tokens")
        scores = scores[:n].astype(np.float32)

    # Empty token texts get a placeholder as in llama.cpp so every id stays addressable.
    for i, t in enumerate(tokens):
        if not t:
            tokens[i] = f"[EMPTY_{i}]"
    token_to_id = {t: i for i, t in enumerate(tokens)}
    attrs = (
        [_TYPE_TO_ATTR.get(t, TokenAttr.UNDEFINED) for t in types[:n].tolist()]
        if types is not None
        else [TokenAttr.NORMAL] * n
    )

    merges: list[tuple[str, str]] = []
    pre = meta.get("tokenizer.ggml.pre")
    if pre is not None and not isinstance(pre, str):
        raise TokenizerLoadError("tokenizer.ggml.pre must be a string")
    if model == "gpt2":
        if "tokenizer.ggml.merges" not in meta:
            raise TokenizerLoadError("tokenizer.ggml.merges is missing (BPE vocabulary)")
        for i, m in enumerate(_as_str_list(meta["tokenizer.ggml.merges"], "tokenizer.ggml.merges")):
            pos = m.find(" ", 1)
            if pos < 0:
                raise TokenizerLoadError(f"tokenizer.ggml.merges[{i}]={m!r} has no space")
            merges.append((m[:pos], m[pos + 1 :]))
        pre_type, ignore_merges, clean_spaces, add_bos_default = pre_type_of(pre)
        add_bos, add_eos, add_space_prefix = bool(add_bos_default), False, False
        bos, eos, unk = 11, 11, None
    else:
        pre_type, ignore_merges, clean_spaces = None, False, False
        add_bos, add_eos, add_space_prefix = True, False, True
        bos, eos, unk = 1, 2, 0
    v = _get_bool(meta, "tokenizer.ggml.add_space_prefix")
    if v is not None:
        add_space_prefix = v

    def special(key: str, default: int | None) -> int | None:
        if default is not None and default >= n:
            default = None
        got = _get_int(meta, key)
        if got is None:
            return default
        if got < 0 or got >= n:
            raise TokenizerLoadError(f"{key}={got} is outside the vocabulary (size {n})")
        return got

    bos_id = special("tokenizer.ggml.bos_token_id", bos)
    eos_id = special("tokenizer.ggml.eos_token_id", eos)
    unk_id = special("tokenizer.ggml.unknown_token_id", unk)
    pad_id = special("tokenizer.ggml.padding_token_id", None)
    eot_id = special("tokenizer.ggml.eot_token_id", None)
    eom_id = special("tokenizer.ggml.eom_token_id", None)
    v = _get_bool(meta, "tokenizer.ggml.add_bos_token")
    if v is not None:
        add_bos = v
    v = _get_bool(meta, "tokenizer.ggml.add_eos_token")
    if v is not None:
        add_eos = v
    if add_bos and bos_id is None:
        raise TokenizerLoadError("add_bos_token is set but the vocabulary has no BOS token")
    if add_eos and eos_id is None:
        raise TokenizerLoadError("add_eos_token is set but the vocabulary has no EOS token")

    def mark_control(i: int) -> None:
        attrs[i] |= TokenAttr.CONTROL

    # EOT / EOM / FIM detection by text; llama.cpp forces such tokens to be control tokens.
    if eot_id is None:
        for t in EOT_TEXTS:
            if t in token_to_id:
                eot_id = token_to_id[t]
                break
    if eom_id is None and "<|eom_id|>" in token_to_id:
        eom_id = token_to_id["<|eom_id|>"]
    for i in (eot_id, eom_id):
        if i is not None:
            mark_control(i)
    fim: dict[str, int] = {}
    for kind, texts in FIM_TEXTS.items():
        key = f"tokenizer.ggml.fim_{kind}_token_id"
        got = special(key, None)
        if got is None:
            got = next((token_to_id[t] for t in texts if t in token_to_id), None)
        if got is not None:
            fim[kind] = got
            mark_control(got)

    eog: set[int] = {fim[k] for k in ("pad", "rep", "sep") if k in fim}
    for t in EOG_TEXTS:
        i = token_to_id.get(t)
        if i is not None:
            eog.add(i)
            mark_control(i)
    # gpt-oss (llama.cpp "quick hack"): harmony framing tokens render as user-defined text.
    for t in HARMONY_USER_DEFINED:
        if t in token_to_id:
            attrs[token_to_id[t]] = TokenAttr.USER_DEFINED
    eog.update(i for i in (eos_id, eot_id, eom_id) if i is not None)
    # o200k_harmony: <|end|> ends a message, not the generation, when <|return|>/<|call|> exist.
    texts_in_eog = {tokens[i]: i for i in eog}
    if "<|end|>" in texts_in_eog and "<|return|>" in texts_in_eog and (
        "<|call|>" in texts_in_eog or "<|calls|>" in texts_in_eog
    ):
        end = texts_in_eog["<|end|>"]
        eog.discard(end)
        attrs[end] = TokenAttr.USER_DEFINED

    specials = [
        i
        for i, a in enumerate(attrs)
        if a & (TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN)
    ]
    # llama.cpp sorts by text length (std::sort, not stable); equal lengths by id here.
    specials.sort(key=lambda i: (-len(tokens[i].encode("utf-8", "surrogateescape")), i))

    # Per-model attributes (llama-vocab.cpp, end of load): Phi-3 strips spaces right of its
    # special tokens.
    name = str(meta.get("general.name") or "").lower()
    if "phi-3" in name or "phi3" in name:
        for i in specials:
            attrs[i] = attrs[i] | TokenAttr.RSTRIP
        if "</s>" in token_to_id:
            attrs[token_to_id["</s>"]] |= TokenAttr.RSTRIP
        for t in ("<unk>", "<s>", "<|endoftext|>"):
            if t in token_to_id:
                attrs[token_to_id[t]] &= ~TokenAttr.RSTRIP

    template = meta.get("tokenizer.chat_template")
    if template is not None and not isinstance(template, str):
        raise TokenizerLoadError("tokenizer.chat_template must be a string")

    return Vocab(
        model=model,
        tokens=tokens,
        attrs=attrs,
        scores=scores,
        merges=merges,
        pre=pre,
        pre_type=pre_type,
        ignore_merges=ignore_merges,
        clean_spaces=clean_spaces,
        add_bos=add_bos,
        add_eos=add_eos,
        add_space_prefix=add_space_prefix,
        bos_id=bos_id,
        eos_id=eos_id,
        unk_id=unk_id,
        pad_id=pad_id,
        eot_id=eot_id,
        eog_ids=frozenset(eog),
        chat_template=template,
        token_to_id=token_to_id,
        special_ids=tuple(specials),
    )
