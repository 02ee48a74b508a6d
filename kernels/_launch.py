"""Small launch helpers shared by the wrappers: argument checks, streams, null pointers.

Wrappers never allocate and never synchronize: outputs and workspaces come from the caller,
launches go to the given stream (a ``cupy.cuda.Stream`` for CuPy kernels; Numba kernels
take the matching ``numba_stream``), so a decode step can be captured as one CUDA graph.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from orcd_toolkit.kernels.errors import KernelError

NULL = np.uint64(0)  # a null device pointer as a kernel argument


def check(arr: Any, name: str, dtype: Any, shape: tuple[int | None, ...] | None = None,
          *, contiguous: bool = True) -> None:
    """Raise KernelError unless ``arr`` has ``dtype``, ``shape`` (None = any) and is C-contiguous."""
    if arr is None:
        raise KernelError(f"{name} is required")
    if np.dtype(arr.dtype) != np.dtype(dtype):
        raise KernelError(f"{name} must be {np.dtype(dtype).name}, got {arr.dtype}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape, strict=True)):
            want = "x".join("*" if s is None else str(s) for s in shape)
            raise KernelError(f"{name} must have shape [{want}], got {tuple(arr.shape)}")
    if contiguous and not arr.flags.c_contiguous:
        raise KernelError(f"{name} must be C-contiguous")


@contextlib.contextmanager
def on_stream(stream: Any) -> Iterator[None]:
    """Make ``stream`` (a cupy Stream, or None for the current one) current for CuPy launches."""
    if stream is None:
        yield
    else:
        with stream:
            yield


@functools.cache
def _external(ptr: int) -> Any:
    from numba import cuda

    return cuda.external_stream(ptr)


def numba_stream(stream: Any) -> Any:
    """The Numba stream for a CuPy stream (0 = the default stream), cached per pointer.

    Numba kernels launched on it are captured into a CuPy graph together with CuPy kernels
    (DESIGN.md section 9).
    """
    if stream is None:
        return 0
    if hasattr(stream, "ptr"):
        return 0 if stream.ptr == 0 else _external(stream.ptr)
    return stream  # already a Numba stream (or the simulator's)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
