"""``orcd tokenize``."""

from __future__ import annotations

import json
from pathlib import Path

from orcd_toolkit.cli import main


def test_tokenize_json(testdata: Path, capsys) -> None:
    vocab = testdata / "vocab" / "ggml-vocab-qwen2.gguf"
    assert main(["tokenize", "--model", str(vocab), "--text", "Hello world", "--json", "--info"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ids"] == [9707, 1879] and doc["pieces"] == ["Hello", " world"]
    assert doc["tokenizer"]["kind"] == "gguf-bpe" and doc["tokenizer"]["vocab_size"] == 151936


def test_tokenize_special_and_file(testdata: Path, tmp_path: Path, capsys) -> None:
    vocab = testdata / "vocab" / "ggml-vocab-phi-3.gguf"
    f = tmp_path / "in.txt"
    f.write_text("<|user|>\nHi", encoding="utf-8")
    assert main(["tokenize", "-m", str(vocab), "-f", str(f), "--special"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[0] == "1"  # BOS
    assert "'<|user|>'" in out[1]
    assert out[-1] == f"# {len(out) - 1} tokens"
    assert main(["tokenize", "-m", str(vocab), "-f", str(f), "--no-add-special", "--json"]) == 0
    ids = json.loads(capsys.readouterr().out)["ids"]
    assert ids[0] != 1 and 32010 not in ids  # <|user|> stays text without --special


def test_tokenize_errors(tmp_path: Path, capsys) -> None:
    assert main(["tokenize", "-m", str(tmp_path / "missing.gguf"), "-t", "x"]) == 1
    assert "error:" in capsys.readouterr().err
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 20)
    assert main(["tokenize", "-m", str(bad), "-t", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("orcd tokenize: error:") and "Traceback" not in err
    assert main(["tokenize", "-m", str(bad), "-f", str(tmp_path / "nope.txt")]) == 1
    assert "--file" in capsys.readouterr().err
