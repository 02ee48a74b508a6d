"""Tokenizer encode throughput (asv suite; also runnable as a script that prints MB/s).

What is compared, on the same text (the committed tokenizer corpus, UTF-8 bytes counted):

- ``orcd`` — ``Tokenizer.encode`` (gguf-bpe from the GGUF vocab: special-token partition in
  Python, llama.cpp-exact pre-tokenizer classes, ``tokenizers`` BPE);
- ``plain`` — a plain ``tokenizers`` pipeline built the usual way (the model's own regex with
  Oniguruma's Unicode classes, ByteLevel, BPE, no special-token handling): the ceiling;
- ``spm`` — our llama.cpp SPM port (pure Python) on Phi-3's vocabulary, words memoised (warm);
  ``spm_cold`` — the same with the word cache emptied before every call.

Three shapes: one long document (the whole corpus as one string, ~220 kB), the corpus line by
line (3,006 short prompts, where per-call overhead dominates), and ``english``: 240 kB of seeded
English-like words as one string (the easy case). Measurement traps: the first
encode warms the BPE cache, so ``setup`` runs one encode; tokenizers' ``encode`` is
single-threaded, ``encode_batch`` is not used so both sides use one core.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "tokenizer" / "data" / "tokenizer_corpus.json.gz"
VOCAB_DIR = Path(os.environ.get("ORCD_BENCH_VOCAB_DIR", ROOT.parent / "shared" / "testdata" / "vocab"))

# Qwen2's pre-tokenizer regex as its tokenizer.json writes it.
QWEN2_HF_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_cache: dict[str, object] = {}


def _lines() -> list[str]:
    if "lines" not in _cache:
        _cache["lines"] = json.loads(gzip.decompress(CORPUS.read_bytes()))
    return _cache["lines"]  # type: ignore[return-value]


def _qwen_source() -> Path:
    path = os.environ.get("ORCD_BENCH_QWEN")
    if path:
        return Path(path)
    p = VOCAB_DIR / "ggml-vocab-qwen2.gguf"
    if not p.exists():
        raise NotImplementedError("no Qwen vocabulary (set ORCD_BENCH_QWEN or add ../shared)")
    return p


def _orcd(name: str):
    if name not in _cache:
        from orcd_toolkit.tokenizer import load_tokenizer

        src = _qwen_source() if name == "qwen" else VOCAB_DIR / "ggml-vocab-phi-3.gguf"
        if not Path(src).exists():
            raise NotImplementedError(f"missing {src}")
        _cache[name] = load_tokenizer(src)
    return _cache[name]


def _plain():
    if "plain" not in _cache:
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers

        vocab = _orcd("qwen").vocab  # type: ignore[attr-defined]
        table = {t: i for t, i in vocab.token_to_id.items()}
        hf = Tokenizer(models.BPE(vocab=table, merges=vocab.merges))
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_HF_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        _cache["plain"] = hf
    return _cache["plain"]


def _encoders() -> dict:
    orcd, plain, spm = _orcd("qwen"), _plain(), _orcd("phi3")
    spm_cache = spm._spm._cache  # type: ignore[attr-defined]

    def spm_cold(s: str) -> list[int]:
        spm_cache.clear()
        return spm.encode(s, add_special=False)  # type: ignore[attr-defined]

    return {
        "orcd": lambda s: orcd.encode(s, add_special=False),  # type: ignore[attr-defined]
        "plain": lambda s: plain.encode(s, add_special_tokens=False).ids,  # type: ignore[attr-defined]
        "spm": lambda s: spm.encode(s, add_special=False),  # type: ignore[attr-defined]
        "spm_cold": spm_cold,
    }


def _english() -> str:
    import random

    rng = random.Random(1)
    words = (
        "the quick brown fox jumps over the lazy dog while tokenizers process streaming "
        "text with numbers 12345 and punctuation, quite often; really!"
    ).split()
    return " ".join(rng.choice(words) for _ in range(40000))


def measure(impl: str, shape: str, repeat: int = 3) -> float:
    """Best-of-``repeat`` encode throughput in MB/s (10^6 UTF-8 bytes per second)."""
    enc = _encoders()[impl]
    lines = _lines()
    doc = _english() if shape == "english" else "\n".join(lines)
    if shape == "lines":
        n_bytes = sum(len(s.encode()) for s in lines)
    else:
        n_bytes = len(doc.encode("utf-8"))
    enc(doc[:1000])
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        if shape == "lines":
            for s in lines:
                enc(s)
        else:
            enc(doc)
        best = min(best, time.perf_counter() - t0)
    return n_bytes / best / 1e6


class EncodeThroughput:
    """asv: encode MB/s per implementation and input shape."""

    params = (["orcd", "plain", "spm", "spm_cold"], ["doc", "lines", "english"])
    param_names = ("impl", "shape")
    unit = "MB/s"

    def setup(self, impl: str, shape: str) -> None:
        self.enc = _encoders()[impl]
        self.lines = _lines()
        self.doc = _english() if shape == "english" else "\n".join(self.lines)
        self.enc(self.doc[:1000])

    def time_encode(self, impl: str, shape: str) -> None:
        if shape == "lines":
            for s in self.lines:
                self.enc(s)
        else:
            self.enc(self.doc)

    def track_mb_per_s(self, impl: str, shape: str) -> float:
        return measure(impl, shape, repeat=3)

    track_mb_per_s.unit = "MB/s"  # type: ignore[attr-defined]


def main() -> int:
    import platform

    load = os.getloadavg()[0]
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, load {load:.1f}, python {sys.version.split()[0]}")
    print(f"# corpus: {len(_lines())} lines, {len(chr(10).join(_lines()).encode())} bytes")
    for shape in ("doc", "lines", "english"):
        for impl in ("orcd", "plain", "spm", "spm_cold"):
            print(f"{impl:6s} {shape:6s} {measure(impl, shape):8.2f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
