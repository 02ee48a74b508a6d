"""Choosing a backend for ``--device cpu|gpu|auto``."""

from __future__ import annotations

from typing import Any

from orcd_toolkit.errors import InvalidRequest, NotAvailable


def select_backend(device: str = "auto", activations: str = "exact") -> Any:
    """``cpu``: the NumPy reference. ``gpu``: the GPU backend (orcd_toolkit.kernels), or
    ``NotAvailable`` naming why not. ``auto``: the GPU when one is usable and its backend is
    built, else the CPU.

    ``activations="ggml-cpu"`` asks for the reference with llama.cpp's CPU rounding of matmul
    activations (to compare with llama.cpp at the level of its arithmetic); only the NumPy
    backend has it, so it needs ``device="cpu"``."""
    if device not in ("cpu", "gpu", "auto"):
        raise NotAvailable(f"unknown device {device!r} (cpu, gpu or auto)")
    from orcd_toolkit.backends.cpu.backend import ACTIVATIONS

    if activations not in ACTIVATIONS:
        raise InvalidRequest(f"unknown activations mode {activations!r} {ACTIVATIONS}")
    if activations != "exact" and device != "cpu":
        raise InvalidRequest(
            f"--activations {activations} is a mode of the NumPy reference: use --device cpu"
        )
    if device == "cpu":
        from orcd_toolkit.backends.cpu import NumpyBackend

        return NumpyBackend(activations=activations)
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
