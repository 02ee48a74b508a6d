#!/usr/bin/env python3
"""Write vocab-only GGUF variants so llama.cpp can produce goldens for more pre-tokenizers.

``ggml-vocab-gpt-2-default.gguf``: GPT-2's vocabulary with ``tokenizer.ggml.pre = "default"``
(llama.cpp's fallback list of four regexes, run through std::regex on its "collapsed" text —
the path no shared test vocabulary exercises). Project venv:

    python scripts/tokenizer_vocab_variants.py ../shared/testdata/vocab /tmp/vocab

then ``scripts/golden_tokenizer.py MODEL /tmp/vocab`` writes golden_vocab_gpt-2-default.json.gz.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf

from orcd_toolkit.gguf import load


def write_variant(src: Path, out: Path, pre: str) -> None:
    with load(src) as f:
        meta = dict(f.metadata)
    w = gguf.GGUFWriter(str(out), meta["general.architecture"])
    w.add_block_count(meta["gpt2.block_count"])
    w.add_context_length(meta["gpt2.context_length"])
    w.add_embedding_length(meta["gpt2.embedding_length"])
    w.add_feed_forward_length(meta["gpt2.feed_forward_length"])
    w.add_head_count(meta["gpt2.attention.head_count"])
    w.add_layer_norm_eps(meta["gpt2.attention.layer_norm_epsilon"])
    w.add_tokenizer_model(meta["tokenizer.ggml.model"])
    w.add_tokenizer_pre(pre)
    w.add_token_list(meta["tokenizer.ggml.tokens"])
    w.add_token_types([int(t) for t in meta["tokenizer.ggml.token_type"]])
    w.add_token_merges(meta["tokenizer.ggml.merges"])
    w.add_bos_token_id(meta["tokenizer.ggml.bos_token_id"])
    w.add_eos_token_id(meta["tokenizer.ggml.eos_token_id"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out}")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = Path(argv[1]), Path(argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    write_variant(src / "ggml-vocab-gpt-2.gguf", dst / "ggml-vocab-gpt-2-default.gguf", "default")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
