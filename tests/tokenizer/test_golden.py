"""Agreement with llama.cpp (llama-cpp-python 0.3.36) on the committed corpus.

Vocabularies: the real Qwen2.5-Coder-0.5B file, and llama.cpp's five test vocabularies (qwen2,
phi-3, llama-spm, llama-bpe, gpt-2). The expected ids come from scripts/golden_tokenizer.py;
the corpus from scripts/tokenizer_corpus.py. Every line must match exactly, with
parse_special off and on, add_special on.
"""

from __future__ import annotations

import pytest

from orcd_toolkit.tokenizer import Tokenizer

from .helpers import VOCABS, check_against, load_gz, vocab_tokenizer


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_gz("golden_qwen25_coder_05b.json.gz")


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return load_gz("tokenizer_corpus.json.gz")


def test_corpus_is_varied(corpus: list[str]) -> None:
    joined = "".join(corpus)
    assert len(corpus) >= 3000
    assert any("\u4e00" <= c <= "\u9fff" for c in joined)  # CJK
    assert any(ord(c) >= 0x1F300 for c in joined)  # emoji
    assert "\t\t" in joined and "   " in joined and "\r\n" in joined
    assert "<tool_call>" in joined and "<|im_start|>" in joined


def test_qwen25_coder_matches_llama_cpp(
    qwen_real_tok: Tokenizer, golden: dict, corpus: list[str]
) -> None:
    check_against(qwen_real_tok, golden, corpus)


@pytest.mark.parametrize("name", VOCABS)
def test_test_vocabs_match_llama_cpp(testdata, name: str, corpus: list[str]) -> None:
    check_against(vocab_tokenizer(testdata, name), load_gz(f"golden_vocab_{name}.json.gz"), corpus)


def test_roundtrip_corpus(qwen_real_tok: Tokenizer, corpus: list[str]) -> None:
    for line in corpus:
        assert qwen_real_tok.decode(qwen_real_tok.encode(line), skip_special=False) == line


def test_describe_for_health(qwen_real_tok: Tokenizer, golden: dict) -> None:
    d = qwen_real_tok.describe()
    assert d == {
        "kind": "gguf-bpe",
        "vocab_size": golden["n_vocab"],
        "pre_tokenizer": "qwen2",
        "bos_id": golden["bos"],
        "eos_id": golden["eos"],
        "pad_id": 151643,
        "stop_ids": golden["eog"],
        "add_bos": False,
        "add_eos": False,
        "has_chat_template": True,
    }
    import json

    json.dumps(d)  # JSON-able as /health needs


def test_smollm2_matches_llama_cpp(smollm2_path, corpus: list[str]) -> None:
    """SmolLM2-135M (pre-tokenizer ``smollm``: digits split, then GPT-2's regex)."""
    from orcd_toolkit.tokenizer import load_tokenizer

    tok = load_tokenizer(smollm2_path)
    assert tok.vocab.pre == "smollm"
    check_against(tok, load_gz("golden_smollm2-135m.json.gz"), corpus)


def test_default_pre_tokenizer_matches_llama_cpp(testdata, corpus: list[str]) -> None:
    """GPT-2's vocabulary with ``tokenizer.ggml.pre = default``: llama.cpp's four-regex
    fallback through std::regex on collapsed text (scripts/tokenizer_vocab_variants.py)."""
    from orcd_toolkit.gguf import load
    from orcd_toolkit.tokenizer import from_metadata

    with load(testdata / "vocab" / "ggml-vocab-gpt-2.gguf") as f:
        meta = {**f.metadata, "tokenizer.ggml.pre": "default"}
    check_against(from_metadata(meta), load_gz("golden_vocab_gpt-2-default.json.gz"), corpus)
