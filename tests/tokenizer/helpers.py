"""Shared helpers for the tokenizer tests (imported by conftest and test modules)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from orcd_toolkit.tokenizer import Tokenizer, load_tokenizer

VOCABS = ("qwen2", "phi-3", "llama-spm", "llama-bpe", "gpt-2")
DATA = Path(__file__).resolve().parent / "data"

_cache: dict[str, Tokenizer] = {}



def vocab_tokenizer(testdata: Path, name: str) -> Tokenizer:
    if name not in _cache:
        _cache[name] = load_tokenizer(testdata / "vocab" / f"ggml-vocab-{name}.gguf")
    return _cache[name]


def read_vectors(testdata: Path, name: str) -> list[tuple[str, list[int]]]:
    """Cases as llama.cpp's tests/test-tokenizer-0.cpp reads them (read_tests)."""
    base = testdata / "vocab" / f"ggml-vocab-{name}.gguf"
    raw = base.with_name(base.name + ".inp").read_bytes().decode("utf-8")
    sep = "\n__ggml_vocab_test__\n"
    inputs: list[str] = []
    pos = 0
    while pos < len(raw):
        nxt = raw.find(sep, pos)
        if nxt < 0:
            inputs.append(raw[pos:])
            break
        inputs.append(raw[pos:nxt])
        pos = nxt + len(sep)
    outputs = base.with_name(base.name + ".out").read_bytes().decode("utf-8").split("\n")
    if outputs and outputs[-1] == "":
        outputs.pop()  # getline does not yield the empty string after the final newline
    assert len(inputs) == len(outputs), f"{name}: {len(inputs)} inputs vs {len(outputs)} outputs"
    return [(s, [int(x) for x in o.split()]) for s, o in zip(inputs, outputs, strict=True)]


def load_gz(name: str) -> Any:
    """A gzipped JSON file from tests/tokenizer/data."""
    return json.loads(gzip.decompress((DATA / name).read_bytes()))


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
