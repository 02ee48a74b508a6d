"""The ``orcd`` console script.

Each subcommand lives in ``orcd_toolkit.commands.<name>`` as a module with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; command modules import heavy dependencies
inside ``run`` so ``orcd --help`` stays fast. A subcommand whose module does not exist yet is
listed but says plainly that it is not available, and exits 2 — never fake output.

Errors the user can cause are :class:`~orcd_toolkit.errors.OrcdError`: printed as one line,
exit status 1, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from orcd_toolkit import __version__
from orcd_toolkit.errors import OrcdError

# name -> (one-line help used while the command is not built yet, where it is tracked)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve a model over WebSocket + HTTP", "issue #7"),
    "run": ("one-shot generation from a prompt", "issue #5"),
    "models": ("list and pull models in the local store", "issue #2"),
    "inspect": ("show a GGUF file's metadata and tensor table", "issue #3"),
    "tokenize": ("tokenize text with a model's tokenizer", "issue #4"),
    "perplexity": ("perplexity of a model on a text file", "issue #5"),
    "synth": ("write synthetic GGUF models with published shapes", "issue #5"),
    "bench": ("benchmark kernels and end-to-end decoding", "the GPU backend issue, not filed yet"),
}


def _load_command(name: str) -> ModuleType | None:
    module_name = f"orcd_toolkit.commands.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="orcd",
        description="worker-orcd: serve, run and inspect GGUF models on one GPU.",
    )
    parser.add_argument("--version", action="version", version=f"orcd-toolkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, tracked) in COMMANDS.items():
        module = _load_command(name)
        if module is None:
            p = sub.add_parser(name, help=f"{help_text} (not available yet)")
            p.set_defaults(_run=_not_available(name, tracked), _unbuilt=True)
        else:
            p = sub.add_parser(name, help=module.HELP, description=module.HELP)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _not_available(name: str, tracked: str):
    def run(_args: argparse.Namespace) -> int:
        print(
            f"orcd {name}: not available yet in this build (tracked in {tracked}).",
            file=sys.stderr,
        )
        return 2

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``orcd`` script; returns the process exit status."""
    parser = build_parser()
    # An unbuilt command accepts (and ignores) any arguments so it can say it is unbuilt.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_unbuilt", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except OrcdError as exc:
        print(f"orcd {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"orcd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
