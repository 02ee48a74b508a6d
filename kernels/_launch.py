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


def _c_arg(a: Any) -> tuple[Any, Any]:
    """(value, ctypes type) of one kernel argument for cuLaunchKernelEx."""
    import ctypes

    if isinstance(a, np.int32):
        return int(a), ctypes.c_int32
    if isinstance(a, np.int64):
        return int(a), ctypes.c_int64
    if isinstance(a, np.uint64):  # NULL
        return int(a), ctypes.c_void_p
    if isinstance(a, np.float32):
        return float(a), ctypes.c_float
    data = getattr(a, "data", None)
    if data is not None and hasattr(data, "ptr"):  # a CuPy array
        return int(data.ptr), ctypes.c_void_p
    raise KernelError(f"launch_pdl: no kernel argument type for {type(a).__name__}")


def launch_pdl(fn: Any, grid: tuple[int, int, int], block: tuple[int, int, int],
               args: tuple[Any, ...], *, shared_mem: int = 0, stream: Any = None) -> None:
    """Launch ``fn`` (a ``cupy.RawKernel``) with programmatic stream serialization (sm_90 PDL).

    The kernel may begin while the previous kernel on the stream still runs, as soon as all
    that kernel's blocks have called ``pdl_trigger`` (kernels/cuda/common.cuh); the kernel
    itself calls ``pdl_wait`` before it touches what earlier kernels write. A stream capture
    records it as a programmatic edge, so graph replays keep the overlap. Through
    cuda-bindings' cuLaunchKernelEx, which CuPy's launcher does not expose; CuPy's current
    stream when ``stream`` is None.
    """
    import cupy
    from cuda.bindings import driver as cu

    st = stream if stream is not None else cupy.cuda.get_current_stream()
    cfg = cu.CUlaunchConfig()
    cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = (int(g) for g in grid)
    cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = (int(b) for b in block)
    cfg.sharedMemBytes = int(shared_mem)
    cfg.hStream = cu.CUstream(int(st.ptr))
    attr = cu.CUlaunchAttribute()
    attr.id = cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
    attr.value.programmaticStreamSerializationAllowed = 1
    cfg.attrs = [attr]
    cfg.numAttrs = 1
    vals, types = zip(*(_c_arg(a) for a in args), strict=True)
    (err,) = cu.cuLaunchKernelEx(cfg, cu.CUfunction(int(fn.kernel.ptr)), (vals, types), 0)
    if err != cu.CUresult.CUDA_SUCCESS:
        raise KernelError(f"cuLaunchKernelEx failed: {err.name}")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
