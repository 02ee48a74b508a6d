"""Notebook toolkit: the IPython extension, its magics and the widgets (issue #9).

``%load_ext orcd_toolkit`` registers ``%orcd_load``, ``%orcd_connect``, ``%%orcd`` and
``%orcd_close`` (:mod:`.magics`). The widgets — :class:`GenerateWidget`, :class:`ModelCard`,
:class:`TokenizerView`, :class:`KernelBench` — are thin views over the core: generation runs
in a :class:`~.sessions.LocalSession` (the server's engine runtime, in process) or a
:class:`~.sessions.RemoteSession` (a server, through the client). See docs/notebook.md.

Widgets and magics need the ``notebook`` extra (ipywidgets, ipykernel); they are imported on
first use so ``orcd_toolkit.notebook.sessions`` works without them.
"""

from __future__ import annotations

from typing import Any

from orcd_toolkit.notebook.sessions import (
    ACTIVE,
    Generation,
    LocalSession,
    RemoteSession,
    open_session,
    run_to_end,
)

_WIDGETS = ("GenerateWidget", "KernelBench", "ModelCard", "TokenizerView")

__all__ = [
    "ACTIVE",
    "Generation",
    "LocalSession",
    "RemoteSession",
    "active_session",
    "load_ipython_extension",
    "open_session",
    "run_to_end",
    *_WIDGETS,
]


def active_session() -> Any:
    """The session ``%orcd_load`` / ``%orcd_connect`` made current (None if none)."""
    return ACTIVE.session


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext orcd_toolkit``: register the magics."""
    from orcd_toolkit.notebook.magics import OrcdMagics

    ipython.register_magics(OrcdMagics)


def __getattr__(name: str) -> Any:
    if name in _WIDGETS:
        try:
            from orcd_toolkit.notebook import widgets
        except ImportError as exc:
            raise ImportError(
                f"orcd_toolkit.notebook.{name} needs ipywidgets: "
                f"pip install 'orcd-toolkit[notebook]' ({exc})"
            ) from None
        return getattr(widgets, name)
    raise AttributeError(f"module 'orcd_toolkit.notebook' has no attribute {name!r}")
