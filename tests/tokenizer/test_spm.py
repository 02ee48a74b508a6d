"""The SPM port on hand-made vocabularies: score order, ties, byte fallback, word splitting."""

from __future__ import annotations

import numpy as np

from orcd_toolkit.tokenizer import from_metadata


def spm(pieces: dict[str, float]) -> dict:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + list(pieces)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + list(pieces.values())
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, dtype=np.float32),
        "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
    }


def ids_of(tok, *pieces: str) -> list[int]:
    return [tok.token_to_id(p) for p in pieces]


def test_highest_score_wins_then_leftmost() -> None:
    base = {"▁": -1.0, "a": -1.0, "b": -1.0, "▁a": -5.0, "ab": -2.0, "ba": -2.0}
    tok = from_metadata(spm(base))
    # "▁aba": candidates ▁a(-5), ab(-2), ba(-2). The tie goes to the leftmost pair (ab), which
    # leaves no mergeable neighbour: ▁ ab a. (Rightmost first would give ▁a ba.)
    assert tok.encode("aba", add_special=False) == ids_of(tok, "▁", "ab", "a")
    assert tok.encode("aba") == [1, *ids_of(tok, "▁", "ab", "a")]
    # A higher score beats position: with ba at -1.5, ▁ a ba, then ▁a merges: ▁a ba.
    tok2 = from_metadata(spm({**base, "ba": -1.5}))
    assert tok2.encode("aba", add_special=False) == ids_of(tok2, "▁a", "ba")


def test_byte_fallback() -> None:
    tok = from_metadata(spm({"▁": -1.0, "a": -1.0}))
    assert tok.encode("aé", add_special=False) == [
        *ids_of(tok, "▁", "a"), *ids_of(tok, "<0xC3>", "<0xA9>")
    ]  # fmt: skip
    assert tok.decode(tok.encode("aé", add_special=False)) == "aé"


def test_merges_across_spaces_when_the_vocab_has_them() -> None:
    # "a▁b" makes words dependent: the word-splitting shortcut must switch itself off.
    pieces = {"▁": -1.0, "a": -1.0, "b": -1.0, "▁a": -2.0, "a▁": -1.5, "a▁b": -0.5}
    tok = from_metadata(spm(pieces))
    assert tok._spm._splitter is None
    assert tok.encode("a b", add_special=False) == ids_of(tok, "▁", "a▁b")
    plain = from_metadata(spm({k: v for k, v in pieces.items() if "▁" not in k[1:]}))
    assert plain._spm._splitter is not None
    assert plain.encode("a b", add_special=False) == ids_of(plain, "▁a", "▁", "b")
