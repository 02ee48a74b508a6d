"""``orcd synth``: write a synthetic GGUF with a published model's exact layout, or requantize."""

from __future__ import annotations

import argparse

HELP = "write a synthetic GGUF (published layout, random weights) or requantize a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="phi3-mini-4k | gpt-oss-20b | gpt2-124m")
    parser.add_argument("--out", required=True, help="output .gguf path")
    parser.add_argument("--tiny", action="store_true", help="small widths/depth, same layout rules")
    parser.add_argument("--seed", type=int, default=0, help="weights RNG seed (default 0)")
    parser.add_argument("--requant", metavar="TYPE", help="re-quantize --from to TYPE (e.g. Q4_0)")
    parser.add_argument(
        "--from", dest="source", metavar="FILE", help="model to re-quantize (path or name)"
    )


def run(args: argparse.Namespace) -> int:
    from orcd_toolkit.errors import InvalidRequest
    from orcd_toolkit.models import synth

    if args.requant:
        if args.preset or not args.source:
            raise InvalidRequest("--requant needs --from FILE and no --preset")
        from orcd_toolkit.gguf import GGMLType
        from orcd_toolkit.store import resolve_model

        try:
            qtype = GGMLType[args.requant.upper()]
        except KeyError:
            raise InvalidRequest(f"--requant: unknown type {args.requant!r}") from None
        path = synth.requantize(resolve_model(args.source), args.out, int(qtype))
        print(f"wrote {path} ({qtype.name})")
        return 0
    if not args.preset:
        raise InvalidRequest("give --preset NAME (or --requant TYPE --from FILE)")
    if args.source:
        raise InvalidRequest("--from is only used with --requant")
    preset = synth.get_preset(args.preset, tiny=args.tiny)
    path = synth.write_preset(preset, args.out, seed=args.seed)
    print(
        f"wrote {path} ({preset.name}{' tiny' if args.tiny else ''}, {len(preset.tensors)} tensors, seed {args.seed})"
    )
    return 0
