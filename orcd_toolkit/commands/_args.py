"""Arguments shared by several ``orcd`` subcommands.

Not a command: cli.py builds sub-parsers only for the names in its ``COMMANDS`` table, and
this module has no ``HELP``/``run``. Kept free of heavy imports (``orcd --help`` imports
every command module); the choices mirror ``backends.cpu.backend.ACTIVATIONS``, which
``select_backend`` checks again.
"""

from __future__ import annotations

import argparse


def add_activations_argument(parser: argparse.ArgumentParser) -> None:
    """``--activations exact|ggml-cpu`` for the commands that pass it to ``select_backend``."""
    parser.add_argument(
        "--activations",
        choices=("exact", "ggml-cpu"),
        default="exact",
        help="NumPy reference only (--device cpu): ggml-cpu rounds every matmul's activations "
        "as llama.cpp's CPU backend does (Q8_0/Q8_K/F16), to compare with llama.cpp",
    )
