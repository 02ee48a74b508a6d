"""Errors raised by the kernel library's host wrappers."""

from __future__ import annotations

from orcd_toolkit.errors import CudaError


class KernelError(CudaError):
    """A kernel was called with arguments it cannot handle (shape, dtype, unsupported type).

    Raised by the host wrappers before anything is launched; the message names the argument
    and what was expected.
    """


class KernelCompileError(KernelError):
    """A CUDA C++ source failed to compile (NVRTC log attached to the message)."""
