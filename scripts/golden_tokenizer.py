#!/usr/bin/env python3
"""Produce llama.cpp's token ids for the tokenizer corpus with the real Qwen2.5-Coder-0.5B vocab.

Runs in a separate venv with the pinned ``llama-cpp-python==0.3.36`` (never the project venv):

    python -m venv /root/.cache/orcd-build/venv-golden-tok
    /root/.cache/orcd-build/venv-golden-tok/bin/pip install llama_cpp_python-0.3.36-*.whl
    /root/.cache/orcd-build/venv-golden-tok/bin/python scripts/golden_tokenizer.py \\
        "$(orcd models path qwen2.5-0.5b)" ../shared/testdata/vocab /tmp/vocab \\
        "$(orcd models path smollm2)"

It loads each model with ``vocab_only=True`` and writes
``tests/tokenizer/data/golden_qwen25_coder_05b.json.gz`` (and, for every
``ggml-vocab-NAME.gguf`` in the optional vocab folders, ``golden_vocab_NAME.json.gz``, the same
corpus through llama.cpp's test vocabularies and the GPT-OSS vocabulary written by
scripts/tokenizer_gptoss_vocab.py and scripts/tokenizer_vocab_variants.py; and for any further model file, ``golden_<name>.json.gz``,
e.g. ``golden_smollm2-135m.json.gz`` for SmolLM2's ``smollm`` pre-tokenizer): for every corpus line the ids with
``parse_special`` off and on (``add_special`` on, i.e. BOS/EOS as the metadata says), and a sha256 over every
token's piece as llama.cpp renders it (``special=True``). tests/tokenizer/test_golden.py
compares ours against it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "tokenizer" / "data" / "tokenizer_corpus.json.gz"
OUT = ROOT / "tests" / "tokenizer" / "data" / "golden_qwen25_coder_05b.json.gz"


def pieces_digest(pieces: list[bytes]) -> str:
    """sha256 over length-prefixed pieces (the same function the test uses)."""
    h = hashlib.sha256()
    for p in pieces:
        h.update(len(p).to_bytes(4, "little"))
        h.update(p)
    return h.hexdigest()


def golden_for(model_path: str, out: Path) -> None:
    import ctypes

    import llama_cpp

    llm = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    corpus = json.loads(gzip.decompress(CORPUS.read_bytes()))
    plain, special = [], []
    for line in corpus:
        raw = line.encode("utf-8")
        # add_bos=True means "add the special tokens the model's metadata asks for".
        plain.append(llm.tokenize(raw, add_bos=True, special=False))
        special.append(llm.tokenize(raw, add_bos=True, special=True))
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    buf = ctypes.create_string_buffer(256)
    pieces = []
    for tid in range(n_vocab):
        n = llama_cpp.llama_token_to_piece(vocab, tid, buf, len(buf), 0, True)
        if n < 0:
            raise SystemExit(f"piece of token {tid} longer than {len(buf)} bytes")
        pieces.append(buf.raw[:n])
    eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    doc = {
        "generator": "scripts/golden_tokenizer.py",
        "llama_cpp_python": llama_cpp.__version__,
        "model": Path(model_path).name,
        "n_vocab": n_vocab,
        "bos": llama_cpp.llama_vocab_bos(vocab),
        "eos": llama_cpp.llama_vocab_eos(vocab),
        "eog": eog,
        "pieces_sha256": pieces_digest(pieces),
        "ids": plain,
        "ids_parse_special": special,
    }
    with gzip.GzipFile(out, "wb", mtime=0) as f:
        f.write(json.dumps(doc, separators=(",", ":")).encode())
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(corpus)} lines)")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    golden_for(argv[1], OUT)
    for arg in argv[2:]:
        if arg.endswith(".gguf"):  # another model file: golden_<stem>.json.gz
            stem = Path(arg).stem.split("-instruct")[0].replace(".", "").lower()
            golden_for(arg, OUT.with_name(f"golden_{stem}.json.gz"))
            continue
        for path in sorted(Path(arg).glob("ggml-vocab-*.gguf")):
            name = path.name.removeprefix("ggml-vocab-").removesuffix(".gguf")
            golden_for(str(path), OUT.with_name(f"golden_vocab_{name}.json.gz"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
