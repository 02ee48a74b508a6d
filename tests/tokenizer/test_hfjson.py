"""hf-json on small hand-made tokenizer.json files (GPT-OSS's is in test_gptoss.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

from orcd_toolkit.tokenizer import IncrementalDetokenizer, load_tokenizer


def make(tmp_path: Path, config: dict | None = None) -> Path:
    hf = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2, "<bos>": 3}, merges=[("a", "b")]))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.add_special_tokens([AddedToken("<bos>", special=True)])
    hf.add_special_tokens([AddedToken("<eot>", special=True, lstrip=True)])
    hf.add_tokens([AddedToken("<tool>", special=False)])
    hf.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 3)]
    )
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    if config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def test_post_processor_bos_and_specials(tmp_path: Path) -> None:
    tok = load_tokenizer(make(tmp_path))
    assert tok.kind == "hf-json" and tok.vocab_size == 6
    assert tok.add_bos and tok.bos_id == 3 and tok.describe()["pre_tokenizer"] is None
    assert tok.encode("ab") == [3, 2]
    assert tok.encode("ab", add_special=False) == [2]
    # control token only with parse_special; lstrip eats the spaces before it
    assert tok.encode("ab  <eot>", add_special=False, parse_special=True) == [2, 4]
    assert 4 not in tok.encode("ab <eot>", add_special=False)
    # a non-special added token is always split out (user-defined)
    assert tok.encode("a<tool>b", add_special=False) == [0, 5, 1]
    assert tok.decode([3, 2, 4]) == "ab"
    assert tok.decode([3, 2, 4], skip_special=False) == "<bos>ab<eot>"
    det = IncrementalDetokenizer(tok)
    assert "".join(det.push(i) for i in [3, 0, 5, 1]) + det.flush() == tok.decode([3, 0, 5, 1])


def test_config_overrides(tmp_path: Path) -> None:
    path = make(tmp_path, {"bos_token": "<bos>", "eos_token": "<eot>", "add_bos_token": False,
                           "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"})  # fmt: skip
    tok = load_tokenizer(path)
    assert not tok.add_bos and tok.eos_id == 4 and 4 in tok.stop_ids
    assert tok.encode("ab") == [2]
    assert tok.apply_chat_template([{"role": "user", "content": "ab"}]) == "ab"


def test_sentencepiece_style_json_streams_with_spaces(tmp_path: Path) -> None:
    """Metaspace/byte-fallback files: HF's one-token decode strips "▁", so pieces come from the
    token text; the concatenation equals HF's own decode of the whole sequence."""
    from tokenizers import decoders, normalizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for t in ["▁", "H", "e", "l", "o", "w", "r", "d", "▁H", "ll", "llo", "▁Hello", "▁w", "or"]:
        vocab.setdefault(t, len(vocab))
    merges = [("l", "l"), ("ll", "o"), ("▁", "H"), ("▁", "w"), ("o", "r")]
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>"))
    hf.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    hf.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    hf.add_special_tokens([AddedToken("<s>", special=True), AddedToken("</s>", special=True)])
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    tok = load_tokenizer(path)
    text = "Hello world é ✓"
    ids = tok.encode(text, add_special=False)
    assert any(3 <= i < 259 for i in ids)  # byte fallback used for é and ✓
    assert tok.decode(ids) == hf.decode(ids) == text
    det = IncrementalDetokenizer(tok)
    pieces = [det.push(i) for i in ids] + [det.flush()]
    assert "".join(pieces) == text and pieces[0] == "H"
