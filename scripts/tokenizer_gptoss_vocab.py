#!/usr/bin/env python3
"""Write a vocab-only GGUF for GPT-OSS (o200k_harmony) so llama.cpp can produce goldens for it.

The vocabulary is :func:`orcd_toolkit.tokenizer.o200k.harmony_gguf_metadata` (tiktoken's
o200k_base ranks from the quicktok-v1 package data, sha256-checked); the hyper-parameters are
GPT-OSS-20B's, only so llama.cpp accepts the file with ``vocab_only=True``. Project venv:

    python scripts/tokenizer_gptoss_vocab.py /tmp/vocab/ggml-vocab-gpt-oss.gguf

then ``scripts/golden_tokenizer.py MODEL /tmp/vocab`` writes golden_vocab_gpt-oss.json.gz.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf

from orcd_toolkit.tokenizer.o200k import harmony_gguf_metadata


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = harmony_gguf_metadata()
    w = gguf.GGUFWriter(str(out), "gpt-oss")
    w.add_block_count(24)
    w.add_context_length(131072)
    w.add_embedding_length(2880)
    w.add_feed_forward_length(2880)
    w.add_head_count(64)
    w.add_head_count_kv(8)
    w.add_rope_freq_base(150000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_uint32("gpt-oss.expert_count", 32)
    w.add_uint32("gpt-oss.expert_used_count", 4)
    w.add_tokenizer_model(meta["tokenizer.ggml.model"])
    w.add_tokenizer_pre(meta["tokenizer.ggml.pre"])
    w.add_token_list(meta["tokenizer.ggml.tokens"])
    w.add_token_types(meta["tokenizer.ggml.token_type"].tolist())
    w.add_token_merges(meta["tokenizer.ggml.merges"])
    w.add_bos_token_id(meta["tokenizer.ggml.bos_token_id"])
    w.add_eos_token_id(meta["tokenizer.ggml.eos_token_id"])
    w.add_pad_token_id(meta["tokenizer.ggml.padding_token_id"])
    w.add_add_bos_token(meta["tokenizer.ggml.add_bos_token"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
