"""llama.cpp's tokenizer test vectors (tests/test-tokenizer-0): 100 % must match."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import VOCABS, read_vectors, vocab_tokenizer


@pytest.mark.parametrize("name", VOCABS)
def test_llama_cpp_vectors(testdata: Path, name: str) -> None:
    tok = vocab_tokenizer(testdata, name)
    cases = read_vectors(testdata, name)
    assert len(cases) == 46
    failures = []
    for text, expected in cases:
        got = tok.encode(text, add_special=False, parse_special=False)
        if got != expected:
            failures.append((text, got, expected))
    assert not failures, f"{name}: {len(failures)}/{len(cases)} differ, first: {failures[0]!r}"


@pytest.mark.parametrize("name", VOCABS)
def test_vectors_decode_back(testdata: Path, name: str) -> None:
    """llama.cpp's ids decode back to the input (SPM: the dummy-prefix space is stripped once)."""
    tok = vocab_tokenizer(testdata, name)
    for text, expected in read_vectors(testdata, name):
        assert tok.decode(expected) == text, (name, text)


def test_kinds(testdata: Path) -> None:
    assert vocab_tokenizer(testdata, "qwen2").kind == "gguf-bpe"
    assert vocab_tokenizer(testdata, "gpt-2").kind == "gguf-bpe"
    assert vocab_tokenizer(testdata, "phi-3").kind == "spm"
    assert vocab_tokenizer(testdata, "llama-spm").kind == "spm"
