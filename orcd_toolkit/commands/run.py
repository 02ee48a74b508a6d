"""``orcd run``: one-shot generation from a prompt (the engine with one request)."""

from __future__ import annotations

import argparse

from orcd_toolkit.commands._args import add_activations_argument

HELP = "generate text for one prompt (streams the text; --json for ids, text and timings)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="GGUF path or registry name")
    parser.add_argument("--prompt", required=True, help="prompt text")
    parser.add_argument(
        "--chat",
        action="store_true",
        help="wrap the prompt as a user message in the model's chat template",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=128, help="tokens to generate at most (default 128)"
    )
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    parser.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto",
                        help="cpu = NumPy reference; auto = GPU when usable, else CPU")  # fmt: skip
    add_activations_argument(parser)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of streaming text"
    )


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import time

    from orcd_toolkit.backends.select import select_backend
    from orcd_toolkit.engine import GenerationRequest, SamplingParams, build_engine
    from orcd_toolkit.errors import InvalidRequest
    from orcd_toolkit.models import load_model
    from orcd_toolkit.store import resolve_model
    from orcd_toolkit.tokenizer import load_tokenizer

    if args.max_tokens < 1:
        raise InvalidRequest(f"--max-tokens must be >= 1, got {args.max_tokens}")
    t0 = time.monotonic()
    path = resolve_model(args.model)
    backend = select_backend(args.device, args.activations)
    from orcd_toolkit import gguf

    gf = gguf.load(path)
    tokenizer = load_tokenizer(gf)
    if args.chat:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": args.prompt}], add_generation_prompt=True
        )
        # the template writes BOS itself where the model wants it; special tokens are parsed
        prompt_ids = tokenizer.encode(text, add_special=False, parse_special=True)
    else:
        prompt_ids = tokenizer.encode(args.prompt, add_special=True)
    if not prompt_ids:
        raise InvalidRequest("--prompt tokenizes to nothing")
    total = len(prompt_ids) + args.max_tokens
    model = load_model(gf, backend, n_ctx=total)
    engine = build_engine(model, tokenizer, kv_tokens=total + 16, max_model_len=total + 16)
    t_loaded = time.monotonic()
    params = SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed
    )
    handle = engine.submit(GenerationRequest(prompt_ids, params))
    t_first = None
    while not handle.finished:
        for out in engine.step():
            if out.new_token_ids and t_first is None:
                t_first = time.monotonic()
            if not args.json and out.new_text:
                sys.stdout.write(out.new_text)
                sys.stdout.flush()
    t_end = time.monotonic()
    n_gen = len(handle.token_ids)
    decode_s = t_end - (t_first or t_end)
    timings = {
        "load_s": round(t_loaded - t0, 4),
        "ttft_s": round((t_first or t_end) - t_loaded, 4),
        "total_s": round(t_end - t_loaded, 4),
        "decode_tokens_per_s": round((n_gen - 1) / decode_s, 3)
        if n_gen > 1 and decode_s > 0
        else None,
    }
    if args.json:
        doc = {
            "model": str(path), "backend": backend.name, "prompt_ids": list(prompt_ids),
            "generated_ids": list(handle.token_ids), "text": handle.text,
            "finish_reason": handle.finish_reason, "seed": handle.seed, "timings": timings,
        }  # fmt: skip
        print(json.dumps(doc, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
        print(
            f"[{len(prompt_ids)} prompt + {n_gen} generated tokens, {handle.finish_reason}; "
            f"ttft {timings['ttft_s']:.2f} s, {timings['decode_tokens_per_s'] or 0:.1f} tok/s on {backend.name}]",
            file=sys.stderr,
        )
    return 0
