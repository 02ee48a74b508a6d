"""orcd-toolkit: a one-GPU GGUF inference worker.

The package is importable from a source checkout without installation (the GPU machine runs the
checkout as it is). In an installed wheel ``kernels/`` and ``server/`` live inside this package;
in a checkout they are top-level folders, so the checkout root is appended to ``__path__`` to
resolve ``orcd_toolkit.kernels`` and ``orcd_toolkit.server`` the same way (see setup.py).
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

_checkout_root = Path(__file__).resolve().parent.parent
if (_checkout_root / "kernels" / "__init__.py").is_file() and (
    _checkout_root / "pyproject.toml"
).is_file():
    if str(_checkout_root) not in __path__:
        __path__.append(str(_checkout_root))


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext orcd_toolkit``: registers the notebook magics (see orcd_toolkit.notebook)."""
    from orcd_toolkit.notebook import load_ipython_extension as _load

    _load(ipython)
