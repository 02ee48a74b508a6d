"""CUDA graph capture of mixed Numba + CuPy launches on one CuPy stream.

Verified on the device (DESIGN.md section 9): Numba kernels launched on
``cuda.external_stream(cupy_stream.ptr)`` with arrays converted once by
``cuda.as_cuda_array`` (and ``NUMBA_CUDA_ARRAY_INTERFACE_SYNC=0``, so the conversion does not
synchronize) are captured together with CuPy kernels launched inside ``with stream:``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def require_no_cai_sync() -> None:
    """Numba must not synchronize on ``__cuda_array_interface__`` imports during capture."""
    if os.environ.get("NUMBA_CUDA_ARRAY_INTERFACE_SYNC") != "0":
        from orcd_toolkit.kernels.errors import KernelError

        raise KernelError(
            "set NUMBA_CUDA_ARRAY_INTERFACE_SYNC=0 before importing numba to capture graphs "
            "(otherwise Numba synchronizes the stream on every CuPy array it receives)"
        )


def capture(step: Callable[[], None], stream: Any) -> Any:
    """Record ``step()`` (which launches on ``stream``) into a ``cupy.cuda.Graph``.

    ``step`` must be pure in the DESIGN.md sense: no allocation, no host sync, no
    host branching on device values. Run it once eagerly first (compilation, warm-up).
    """
    require_no_cai_sync()
    with stream:
        stream.begin_capture()
        try:
            step()
        finally:
            graph = stream.end_capture()
    return graph
