#!/usr/bin/env python3
"""llama-perplexity's computation through llama-cpp-python logits (pinned 0.3.36).

Same method as tools/perplexity/perplexity.cpp ``perplexity()``: tokenize with the
vocabulary's BOS rule (add_special, no special-token parsing), chunks of ``n_ctx``, KV cleared
per chunk, the chunk's first token replaced by BOS when the vocabulary adds BOS, logits at
positions n_ctx/2 .. n_ctx-2 score the next token, PPL = exp(mean NLL). Defaults as
llama-perplexity: f16 KV cache, one batch per chunk. Run in the golden venv:

    /root/.cache/orcd-build/venv-golden/bin/python scripts/perplexity_llamacpp.py \
        --model M.gguf --file tests/models/data/gpl3_head.txt --ctx 512
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from golden_llamacpp import _disable_extra_buffer_types


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--file", type=Path, required=True)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument(
        "--f32-kv", action="store_true", help="K/V cache in f32 instead of llama.cpp's f16"
    )
    args = ap.parse_args()
    _disable_extra_buffer_types()
    import llama_cpp

    kv = {"type_k": 0, "type_v": 0} if args.f32_kv else {}
    llm = llama_cpp.Llama(
        model_path=str(args.model),
        n_ctx=args.ctx,
        n_batch=args.ctx,
        n_ubatch=args.ctx,
        n_threads=1,
        logits_all=True,
        verbose=False,
        **kv,
    )
    tokens = llm.tokenize(
        args.file.read_text(encoding="utf-8").encode("utf-8"), add_bos=True, special=False
    )
    add_bos = llama_cpp.llama_vocab_get_add_bos(llm._model.vocab)
    bos = llm.token_bos()
    n_ctx, first = args.ctx, args.ctx // 2
    n_chunk = len(tokens) // n_ctx
    nll = nll2 = 0.0
    count = 0
    running = []
    for c in range(n_chunk):
        ids = list(tokens[c * n_ctx : (c + 1) * n_ctx])
        if add_bos:
            ids[0] = bos
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[first : n_ctx - 1], dtype=np.float64)
        m = logits.max(-1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
        tgt = np.array(tokens[c * n_ctx + first + 1 : (c + 1) * n_ctx])
        lp = logp[np.arange(tgt.size), tgt]
        nll += float(-lp.sum())
        nll2 += float((lp * lp).sum())
        count += tgt.size
        running.append(math.exp(nll / count))
    mean = nll / count
    err = math.sqrt(max(nll2 / count - mean * mean, 0.0) / (count - 1))
    print(
        json.dumps(
            {
                "model": args.model.name,
                "file": args.file.name,
                "ctx": n_ctx,
                "n_tokens": len(tokens),
                "n_chunks": n_chunk,
                "kv": "f32" if args.f32_kv else "f16",
                "ppl": math.exp(mean),
                "ppl_err": math.exp(mean) * err,
                "running": running,
            }
        )
    )
    print(f"PPL = {math.exp(mean):.4f} +/- {math.exp(mean) * err:.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
