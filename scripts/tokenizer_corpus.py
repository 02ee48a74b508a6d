#!/usr/bin/env python3
"""Write the tokenizer golden corpus: a few thousand varied lines, deterministically.

The lines mix what breaks tokenizers in practice: source code, CJK, emoji (with ZWJ sequences,
skin tones and variation selectors), runs of spaces/tabs/newlines, Unicode spaces, numbers of
every length, contractions in any case, combining marks, right-to-left scripts, random code
points from many blocks, and special-token texts. The same seed always gives the same file.

Usage: python scripts/tokenizer_corpus.py [out.json.gz]
(default tests/tokenizer/data/tokenizer_corpus.json.gz)
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "tokenizer" / "data" / "tokenizer_corpus.json.gz"
SEED = 20261126
N_LINES = 3000

WORDS = (
    "the quick brown fox jumps over lazy dog tokenizer streaming context window prefill decode "
    "attention kernel quantized weights vocabulary merge rank byte fallback unicode emoji"
).split()
CODE = [
    "def f(x):\n    return x ** 2  # square",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "if __name__ == '__main__':\n\tmain()",
    "const x = await fetch(`/api/${id}`);",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name;",
    "fn main() { println!(\"{}\", 42); }",
    "#include <stdio.h>\nint main(void){return 0;}",
    "    x = [i for i in range(10) if i % 2 == 0]",
    "lambda a, b: (a << 3) | (b >> 1) ^ 0xFF",
    "<div class=\"box\">&nbsp;</div>",
    "$ ls -la | grep '.py' && echo done",
    "{\"key\": [1, 2.5, -3e10, null, true]}",
]
CJK = "你好世界我想在苹果工作今天天气很好東京都日本語のテキストです한국어텍스트입니다"
EMOJI = ["🦙", "😀", "🚀", "😶‍🌫️", "👍🏽", "👨‍👩‍👧‍👦", "❤️", "✅", "🇯🇵", "🏳️‍🌈", "🤖", "∑", "☃"]
SPACES = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2009", "\u200b", "\u2028"]
SCRIPTS = [
    "нещо на Български",
    "Ελληνικά γράμματα",
    "שלום עולם",
    "مرحبا بالعالم",
    "ກາ​ນຸ່ງ",
    "កាន់តែពិសេសអាចខលចេញ",
    "हिन्दी पाठ",
    "Tiếng Việt có dấu",
    "e\u0301a\u0308o\u0302",
    "ÄÖÜ äöü ß ẞ",
]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<s>", "</s>"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL", "'D"]
BLOCKS = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
          (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2190, 0x22FF),
          (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF),
          (0x1D400, 0x1D7FF), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0xE0000, 0xE007F)]  # fmt: skip


def _random_codepoints(rng: random.Random, n: int) -> str:
    out = []
    while len(out) < n:
        lo, hi = rng.choice(BLOCKS)
        c = rng.randint(lo, hi)
        if 0xD800 <= c <= 0xDFFF:
            continue
        out.append(chr(c))
    return "".join(out)


def _number(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return str(rng.randrange(10 ** rng.randint(1, 12)))
    if kind == 1:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 6)}f}"
    if kind == 2:
        return f"{rng.randrange(1, 10**6):,}"
    if kind == 3:
        return f"0x{rng.randrange(1 << 32):X}"
    return "".join(rng.choice("0123456789٠١٢٣४५６７") for _ in range(rng.randint(1, 9)))


def make_line(rng: random.Random) -> str:
    parts: list[str] = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.randrange(11)
        if kind == 0:
            parts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))))
        elif kind == 1:
            parts.append(rng.choice(CODE))
        elif kind == 2:
            i = rng.randrange(len(CJK))
            parts.append(CJK[i : i + rng.randint(1, 12)])
        elif kind == 3:
            parts.append("".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4))))
        elif kind == 4:
            parts.append("".join(rng.choice(SPACES) for _ in range(rng.randint(1, 5))))
        elif kind == 5:
            parts.append(_number(rng))
        elif kind == 6:
            parts.append(rng.choice(SCRIPTS))
        elif kind == 7:
            parts.append(rng.choice(WORDS).capitalize() + rng.choice(CONTRACTIONS))
        elif kind == 8:
            parts.append(_random_codepoints(rng, rng.randint(1, 10)))
        elif kind == 9 and rng.random() < 0.3:
            parts.append(rng.choice(SPECIALS))
        else:
            parts.append(rng.choice("!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`\"'"))
    sep = rng.choice(["", " ", "", "\n", "  "])
    return sep.join(parts)


def make_corpus(seed: int = SEED, n: int = N_LINES) -> list[str]:
    rng = random.Random(seed)
    lines = [make_line(rng) for _ in range(n)]
    # A few fixed edge cases at the front.
    return ["", " ", "\n", "   \n\n\t ", "3333333", "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～", *lines]


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(make_corpus(), ensure_ascii=False).encode("utf-8")
    with gzip.GzipFile(out, "wb", mtime=0) as f:
        f.write(data)
    print(f"wrote {out}: {len(data)} bytes uncompressed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
