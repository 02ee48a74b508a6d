"""Fixtures for the tokenizer tests: llama.cpp's vocab-only GGUFs, loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from orcd_toolkit.tokenizer import Tokenizer, load_tokenizer

from .helpers import _cache, vocab_tokenizer


@pytest.fixture(scope="session")
def qwen2_tok(testdata: Path) -> Tokenizer:
    return vocab_tokenizer(testdata, "qwen2")


@pytest.fixture(scope="session")
def phi3_tok(testdata: Path) -> Tokenizer:
    return vocab_tokenizer(testdata, "phi-3")


@pytest.fixture(scope="session")
def spm_tok(testdata: Path) -> Tokenizer:
    return vocab_tokenizer(testdata, "llama-spm")


@pytest.fixture(scope="session")
def llama3_tok(testdata: Path) -> Tokenizer:
    return vocab_tokenizer(testdata, "llama-bpe")


@pytest.fixture(scope="session")
def qwen_real_tok(qwen05_path: Path) -> Tokenizer:
    """The real Qwen2.5-Coder-0.5B vocabulary from the model file."""
    if "qwen05" not in _cache:
        _cache["qwen05"] = load_tokenizer(qwen05_path)
    return _cache["qwen05"]
