"""``orcd perplexity``: perplexity of a text, computed as llama.cpp's llama-perplexity does."""

from __future__ import annotations

import argparse

from orcd_toolkit.commands._args import add_activations_argument

HELP = "perplexity of a text file (llama-perplexity's method: chunks of --ctx, second half scored)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="GGUF path or registry name")
    parser.add_argument("--file", required=True, help="UTF-8 text file")
    parser.add_argument("--ctx", type=int, default=512, help="chunk length in tokens (default 512)")
    parser.add_argument(
        "--chunks", type=int, default=-1, help="at most this many chunks (default all)"
    )
    parser.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto")
    add_activations_argument(parser)
    parser.add_argument(
        "--dump-logprobs", metavar="FILE", help="write per-position top-k log-probs as JSON"
    )
    parser.add_argument(
        "--top-k", type=int, default=5, help="entries per position in --dump-logprobs"
    )


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from orcd_toolkit.backends.select import select_backend
    from orcd_toolkit.errors import InvalidRequest
    from orcd_toolkit.models import load_model
    from orcd_toolkit.models.perplexity import perplexity
    from orcd_toolkit.store import resolve_model
    from orcd_toolkit.tokenizer import load_tokenizer

    text_path = Path(args.file)
    try:
        text = text_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"--file {text_path}: {exc}") from None
    model_path = resolve_model(args.model)
    backend = select_backend(args.device, args.activations)
    model = load_model(model_path, backend, n_ctx=args.ctx)
    tokenizer = load_tokenizer(model.gguf_file)
    tokens = tokenizer.encode(text, add_special=True)
    add_bos = bool(model.gguf_file.metadata.get("tokenizer.ggml.add_bos_token", False))
    bos = tokenizer.bos_id if add_bos else None
    print(f"{len(tokens)} tokens, ctx {args.ctx}, backend {backend.name}", file=sys.stderr)

    def progress(chunk: int, running: float) -> None:
        print(f"[{chunk + 1}]{running:.4f},", end="", file=sys.stderr, flush=True)

    res = perplexity(
        model,
        tokens,
        args.ctx,
        bos_id=bos,
        n_chunks=args.chunks,
        top_k=args.top_k if args.dump_logprobs else 0,
        on_chunk=progress,
    )
    print(file=sys.stderr)
    print(f"PPL = {res.ppl:.4f} +/- {res.ppl * res.nll_std_error:.5f}")
    if args.dump_logprobs:
        doc = {
            "model": str(model_path), "file": str(text_path), "ctx": args.ctx,
            "n_tokens": len(tokens), "n_chunks": res.n_chunks, "n_scored": res.n_scored,
            "ppl": res.ppl, "nll_mean": res.nll_mean,
            "positions": [
                {"chunk": p.chunk, "pos": p.position, "token": p.token, "logprob": p.logprob,
                 "top": [{"id": t, "logprob": lp} for t, lp in p.top]}
                for p in res.positions
            ],
        }  # fmt: skip
        Path(args.dump_logprobs).write_text(json.dumps(doc))
    return 0
