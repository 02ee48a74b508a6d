"""Bad input and bad vocabularies give clear, typed errors."""

from __future__ import annotations

import numpy as np
import pytest

from orcd_toolkit.errors import InvalidRequest, ModelLoadFailed
from orcd_toolkit.tokenizer import (
    IncrementalDetokenizer,
    TokenIdOutOfRange,
    TokenizeError,
    TokenizerLoadError,
    UnknownPreTokenizer,
    UnknownTokenizerModel,
    from_metadata,
    load_tokenizer,
)


def tiny_bpe(**over) -> dict:
    """A minimal byte-level BPE vocabulary: the 256 byte tokens, one merge, one control token."""
    from orcd_toolkit.tokenizer.core import BYTE_TO_UNICODE

    tokens = [BYTE_TO_UNICODE[b] for b in range(256)] + ["he", "<|end|>"]
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.array([1] * 257 + [3], dtype=np.int32),
        "tokenizer.ggml.merges": ["h e"],
        "tokenizer.ggml.eos_token_id": 257,
        "tokenizer.ggml.bos_token_id": 257,
    }
    meta.update(over)
    return {k: v for k, v in meta.items() if v is not None}


def test_tiny_vocab_works() -> None:
    tok = from_metadata(tiny_bpe())
    assert tok.encode("hehe<|end|>", parse_special=True) == [256, 256, 257]
    # Without parse_special the control token's text is plain text: byte tokens (id == byte).
    assert tok.encode("he<|end|>") == [256, *b"<|end|>"]
    assert tok.decode([256, 257, 104]) == "heh"
    assert tok.decode([256, 257, 104], skip_special=False) == "he<|end|>h"
    assert tok.stop_ids == {257}
    assert tok.describe()["kind"] == "gguf-bpe"


def test_id_out_of_range() -> None:
    tok = from_metadata(tiny_bpe())
    for bad in (-1, 258, 10**9):
        with pytest.raises(TokenIdOutOfRange, match=f"token id {bad} is outside"):
            tok.decode([0, bad])
        with pytest.raises(TokenIdOutOfRange):
            tok.token_piece(bad)
        with pytest.raises(TokenIdOutOfRange):
            IncrementalDetokenizer(tok).push(bad)
    assert issubclass(TokenIdOutOfRange, InvalidRequest)


def test_lone_surrogate_is_rejected() -> None:
    tok = from_metadata(tiny_bpe())
    with pytest.raises(TokenizeError, match="lone surrogate"):
        tok.encode("a\ud800b")
    with pytest.raises(TokenizeError, match="must be a str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("over", "error", "message"),
    [
        ({"tokenizer.ggml.pre": "no-such-pre"}, UnknownPreTokenizer, "no-such-pre"),
        ({"tokenizer.ggml.model": "t5"}, UnknownTokenizerModel, "'t5'"),
        ({"tokenizer.ggml.model": None}, TokenizerLoadError, "tokenizer.ggml.model is missing"),
        ({"tokenizer.ggml.merges": None}, TokenizerLoadError, "merges is missing"),
        (
            {"tokenizer.ggml.token_type": np.ones(10, dtype=np.int32)},
            TokenizerLoadError,
            "10 token types for 258 tokens",
        ),
        ({"tokenizer.ggml.eos_token_id": 999}, TokenizerLoadError, "eos_token_id=999 is outside"),
        ({"tokenizer.ggml.merges": ["x y"]}, TokenizerLoadError, "inconsistent"),
        ({"tokenizer.ggml.merges": ["nospace"]}, TokenizerLoadError, "has no space"),
        ({"tokenizer.ggml.tokens": "abc"}, TokenizerLoadError, "array of strings"),
        ({"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.bos_token_id": None,
          "tokenizer.ggml.pre": "llama-bpe"}, None, None),
    ],  # fmt: skip
)
def test_bad_vocabularies(over: dict, error, message) -> None:
    meta = tiny_bpe()
    for k, v in over.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    if error is None:
        # llama3 default BOS id 11 exists here, so this loads (llama.cpp defaults)
        assert from_metadata(meta).bos_id == 11
        return
    with pytest.raises(error, match=message):
        from_metadata(meta)
    assert issubclass(error, ModelLoadFailed)


def test_bytes_outside_utf8_may_be_missing() -> None:
    """Like SmolLM2's vocabulary: no token for 0xC0/0xC1/0xF5-0xFF, which UTF-8 never uses."""
    from orcd_toolkit.tokenizer.core import BYTE_TO_UNICODE

    meta = tiny_bpe()
    tokens = list(meta["tokenizer.ggml.tokens"])
    for b in (0xC0, 0xC1, *range(0xF5, 0x100)):
        tokens[b] = f"[unused{b}]"
    meta["tokenizer.ggml.tokens"] = tokens
    tok = from_metadata(meta)
    assert BYTE_TO_UNICODE[0xC0] not in tok.vocab.token_to_id
    assert tok.decode(tok.encode("héllo ✓ 🦙")) == "héllo ✓ 🦙"


def test_spm_without_scores() -> None:
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "a"]}
    with pytest.raises(TokenizerLoadError, match="no tokenizer.ggml.scores"):
        from_metadata(meta)


def test_load_tokenizer_sources(tmp_path, testdata) -> None:
    with pytest.raises(TokenizerLoadError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.gguf")
    with pytest.raises(TokenizerLoadError, match="cannot load a tokenizer from int"):
        load_tokenizer(3)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerLoadError, match="not a loadable tokenizer.json"):
        load_tokenizer(bad)
    from orcd_toolkit.gguf import load

    with load(testdata / "vocab" / "ggml-vocab-gpt-2.gguf") as f:
        assert load_tokenizer(f).vocab_size == 50257
