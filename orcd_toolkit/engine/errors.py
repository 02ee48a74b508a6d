"""Engine errors: typed subclasses of the shared errors (orcd_toolkit/errors.py)."""

from __future__ import annotations

from orcd_toolkit.errors import InvalidRequest, Overloaded


class InvalidSamplingParams(InvalidRequest):
    """A sampling parameter is out of range; the message names the field and the limit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class RequestTooLarge(InvalidRequest):
    """The prompt plus max_tokens cannot fit the context window or the whole KV budget.

    Refused at submit time so a request never runs out of memory half-way.
    """


class DuplicateRequest(InvalidRequest):
    """A request id is already in use by an unfinished request."""


class QueueFull(Overloaded):
    """The bounded wait queue is full; the client should retry later."""
