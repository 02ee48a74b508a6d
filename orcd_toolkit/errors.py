"""Typed errors shared by every layer.

Every error a user can cause derives from :class:`OrcdError` and carries a stable ``code``
(the server's protocol codes, docs/protocol.md) and whether retrying can help. The CLI prints
``str(err)`` as one line and exits non-zero; the server turns it into an ``error`` event. No
traceback reaches a user for an ``OrcdError``.
"""

from __future__ import annotations


class OrcdError(Exception):
    """Base of every error the toolkit raises on purpose."""

    code: str = "INTERNAL"
    retriable: bool = False


class InvalidRequest(OrcdError, ValueError):
    """A request or argument is invalid; the message names the field."""

    code = "INVALID_REQUEST"


class ModelLoadFailed(OrcdError):
    """The model could not be loaded (bad file, unsupported architecture, missing tensor)."""

    code = "MODEL_LOAD_FAILED"


class ModelNotFound(ModelLoadFailed):
    """A model name is neither an existing path nor a registry name."""


class StoreError(ModelLoadFailed):
    """Fetching or verifying a model in the local store failed."""


class InsufficientVram(OrcdError):
    """The model or KV budget does not fit the GPU's free memory."""

    code = "INSUFFICIENT_VRAM"


class VramOom(OrcdError):
    """A device allocation failed at run time; the process stays up."""

    code = "VRAM_OOM"
    retriable = True


class CudaError(OrcdError):
    """A CUDA call failed."""

    code = "CUDA_ERROR"


class Overloaded(OrcdError):
    """The wait queue or a concurrency bound is full; retry later."""

    code = "OVERLOADED"
    retriable = True


class Cancelled(OrcdError):
    """The job was cancelled by the client or by a disconnect."""

    code = "CANCELLED"


class InferenceTimeout(OrcdError):
    """The job exceeded the configured inference timeout."""

    code = "INFERENCE_TIMEOUT"


class NotAvailable(OrcdError):
    """A capability that this build does not provide yet (or not on this machine)."""

    code = "INTERNAL"
