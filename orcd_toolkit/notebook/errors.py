"""Errors of the notebook layer; each names what went wrong in one readable line.

Widgets and magics show ``str(err)`` of an :class:`~orcd_toolkit.errors.OrcdError` as a short
message (never a traceback); these subclasses cover what only the notebook can get wrong.
"""

from __future__ import annotations

from orcd_toolkit.errors import InvalidRequest, OrcdError


class NotebookError(OrcdError):
    """Base of the notebook layer's own errors."""


class NoSession(NotebookError, InvalidRequest):
    """A widget or magic needs a model or server and none was given or loaded."""

    def __init__(self, what: str = "generate") -> None:
        super().__init__(
            f"nothing to {what} with: run `%orcd_load MODEL` or `%orcd_connect URL` first, "
            "or pass session=..."
        )


class ServerUnreachable(NotebookError):
    """The server does not answer at the given URL (refused, timed out, wrong address)."""

    retriable = True


class SessionClosed(NotebookError):
    """The session was closed (or its engine thread stopped); load or connect again."""
