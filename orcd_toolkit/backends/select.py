"""Choosing a backend for ``--device cpu|gpu|auto``."""

from __future__ import annotations

from typing import Any

from orcd_toolkit.errors import NotAvailable


def select_backend(device: str = "auto") -> Any:
    """``cpu``: the NumPy reference. ``gpu``: the GPU backend (orcd_toolkit.kernels), or
    ``NotAvailable`` naming why not. ``auto``: the GPU when one is usable and its backend is
    built, else the CPU."""
    if device not in ("cpu", "gpu", "auto"):
        raise NotAvailable(f"unknown device {device!r} (cpu, gpu or auto)")
    if device == "cpu":
        from orcd_toolkit.backends.cpu import NumpyBackend

        return NumpyBackend()
    try:
        from orcd_toolkit.kernels.device import gpu_status

        status = gpu_status()
        reason = None if status.usable else status.reason
    except ImportError as exc:
        reason = f"GPU support not installed ({exc})"
    backend_cls = None
    if reason is None:
        try:
            from orcd_toolkit.kernels.backend import GpuBackend as backend_cls  # type: ignore[no-redef]
        except ImportError as exc:
            reason = f"the GPU backend is not built yet ({exc})"
    if reason is None and backend_cls is not None:
        return backend_cls()
    if device == "gpu":
        raise NotAvailable(f"--device gpu: {reason}")
    from orcd_toolkit.backends.cpu import NumpyBackend

    return NumpyBackend()
