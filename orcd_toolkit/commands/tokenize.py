"""``orcd tokenize``: a model's token ids and pieces for some text."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "tokenize text with a model's tokenizer (ids and pieces)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", "-m", required=True,
        help="GGUF path, registry name/alias, a tokenizer.json path, or o200k_harmony (GPT-OSS)",
    )  # fmt: skip
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", "-t", help="text to tokenize")
    src.add_argument("--file", "-f", help="file with the text (UTF-8; '-' for stdin)")
    p.add_argument(
        "--special", action="store_true",
        help="parse control-token text such as <|im_start|> into ids (chat-template output)",
    )  # fmt: skip
    p.add_argument("--no-add-special", action="store_true", help="do not add BOS/EOS")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument("--info", action="store_true", help="also print the tokenizer summary")


def _read_text(args: argparse.Namespace) -> str:
    from orcd_toolkit.errors import InvalidRequest

    if args.text is not None:
        return args.text
    try:
        if args.file == "-":
            return sys.stdin.read()
        with open(args.file, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"--file {args.file}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from orcd_toolkit.tokenizer import load_tokenizer

    text = _read_text(args)
    spec = args.model
    if spec in ("o200k_harmony", "gpt-oss") and not Path(spec).exists():
        from orcd_toolkit.tokenizer.o200k import load_harmony_tokenizer

        tok = load_harmony_tokenizer()
    else:
        if Path(spec).exists():
            source: object = Path(spec)
        else:
            from orcd_toolkit.store import resolve_model

            source = resolve_model(spec)
        tok = load_tokenizer(source)
    ids = tok.encode(text, add_special=not args.no_add_special, parse_special=args.special)
    pieces = [tok.token_piece(i) for i in ids]
    if args.json:
        doc = {
            "ids": ids,
            "pieces": [p.decode("utf-8", "backslashreplace") for p in pieces],
            "count": len(ids),
        }
        if args.info:
            doc["tokenizer"] = tok.describe()
        print(json.dumps(doc, ensure_ascii=False))
        return 0
    if args.info:
        for k, v in tok.describe().items():
            print(f"# {k}: {v}")
    for i, p in zip(ids, pieces, strict=True):
        print(f"{i:>8}  {p.decode('utf-8', 'backslashreplace')!r}")
    print(f"# {len(ids)} tokens")
    return 0
