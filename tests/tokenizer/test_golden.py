"""Agreement with llama.cpp (llama-cpp-python 0.3.36) on the committed corpus.

Vocabularies: the real Qwen2.5-Coder-0.5B file, and llama.cpp's five test vocabularies (qwen2,
phi-3, llama-spm, llama-bpe, gpt-2). The expected ids come from scripts/golden_tokenizer.py;
the corpus from scripts/tokenizer_corpus.py. Every line must match exactly, with
parse_special off and on, add_special on.
"""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from orcd_toolkit.tokenizer import Tokenizer

from .helpers import DATA, VOCABS, vocab_tokenizer


def _load(name: str):
    return json.loads(gzip.decompress((DATA / name).read_bytes()))


@pytest.fixture(scope="module")
def golden() -> dict:
    return _load("golden_qwen25_coder_05b.json.gz")


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return _load("tokenizer_corpus.json.gz")


def test_corpus_is_varied(corpus: list[str]) -> None:
    joined = "".join(corpus)
    assert len(corpus) >= 3000
    assert any("\u4e00" <= c <= "\u9fff" for c in joined)  # CJK
    assert any(ord(c) >= 0x1F300 for c in joined)  # emoji
    assert "\t\t" in joined and "   " in joined and "\r\n" in joined
    assert "<tool_call>" in joined and "<|im_start|>" in joined


def check_against(tok: Tokenizer, golden: dict, corpus: list[str]) -> None:
    """Ids (parse_special off and on), pieces, BOS/EOS and the EOG set vs llama.cpp."""
    for key, parse_special in (("ids", False), ("ids_parse_special", True)):
        expected = golden[key]
        assert len(expected) == len(corpus)
        bad = [
            (i, line)
            for i, (line, ids) in enumerate(zip(corpus, expected, strict=True))
            if tok.encode(line, add_special=True, parse_special=parse_special) != ids
        ]
        assert not bad, f"{key}: {len(bad)}/{len(corpus)} lines differ; first: {bad[0]!r}"
    assert tok.vocab_size == golden["n_vocab"]
    assert tok.bos_id == golden["bos"]
    assert tok.eos_id == golden["eos"]
    assert sorted(tok.stop_ids) == golden["eog"]
    h = hashlib.sha256()
    for tid in range(tok.vocab_size):
        p = tok.token_piece(tid)
        h.update(len(p).to_bytes(4, "little"))
        h.update(p)
    assert h.hexdigest() == golden["pieces_sha256"], "token pieces differ from llama.cpp's"


def test_qwen25_coder_matches_llama_cpp(
    qwen_real_tok: Tokenizer, golden: dict, corpus: list[str]
) -> None:
    check_against(qwen_real_tok, golden, corpus)


@pytest.mark.parametrize("name", VOCABS)
def test_test_vocabs_match_llama_cpp(testdata, name: str, corpus: list[str]) -> None:
    check_against(vocab_tokenizer(testdata, name), _load(f"golden_vocab_{name}.json.gz"), corpus)


def test_roundtrip_corpus(qwen_real_tok: Tokenizer, corpus: list[str]) -> None:
    for line in corpus:
        assert qwen_real_tok.decode(qwen_real_tok.encode(line), skip_special=False) == line
