"""The committed llama.cpp Unicode tables match llama.cpp's source, and the regex rewrite."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from orcd_toolkit.tokenizer import _unicode_llama as U
from orcd_toolkit.tokenizer.pretokenize import PRE_TYPES, regexes_for, translate

SRC = Path(
    "/root/.cache/orcd-build/src/llama_cpp_python-0.3.36/vendor/llama.cpp/src/unicode-data.cpp"
)
GEN = Path(__file__).resolve().parents[2] / "scripts" / "gen_tokenizer_unicode.py"


@pytest.mark.skipif(not SRC.exists(), reason="llama.cpp source not unpacked on this machine")
def test_generated_module_matches_llama_cpp_source() -> None:
    spec = importlib.util.spec_from_file_location("gen_tokenizer_unicode", GEN)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)  # type: ignore[union-attr]
    ranges, ws = gen.parse(SRC.read_text())
    committed = Path(U.__file__).read_text()
    assert gen.render(ranges, ws) == committed


def test_tables_are_sane() -> None:
    assert (0x41, 0x5A) in U.LETTER and (0x30, 0x39) in U.NUMBER
    assert 0x20 in U.WHITESPACE and 0x3000 in U.WHITESPACE and 0x1C not in U.WHITESPACE
    for table in (U.LETTER, U.NUMBER, U.PUNCTUATION, U.SYMBOL, U.ACCENT_MARK):
        assert all(a <= b for a, b in table)
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(table, table[1:], strict=False))


def test_translate_rewrites_every_class() -> None:
    out = translate(r"[^\r\n\p{L}\p{N}]?\p{L}+|\s+(?!\S)")
    assert "\\p{" not in out and "\\s" not in out and "\\S" not in out
    assert out.startswith("[^\\r\\n\\x{41}-\\x{5A}")
    for pre in PRE_TYPES.values():
        for r in regexes_for(pre[0]):
            assert not re.search(r"\\p\{|\\[sS]", r)
