"""Which GPU is there, seen through both CUDA stacks this project uses.

``gpu_status()`` answers "can GPU code run here, and if not, why" without raising, so tests can
skip with the reason and the CLI can fall back to the CPU backend. ``probe()`` reports the device
through CuPy and through Numba (they must agree: both launch on the same device).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class GpuStatus:
    usable: bool
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceProbe:
    via: str
    name: str
    compute_capability: tuple[int, int]
    free_bytes: int
    total_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        cc = ".".join(map(str, self.compute_capability))
        return (
            f"{self.via}: {self.name}, sm_{cc.replace('.', '')} (cc {cc}), "
            f"free {self.free_bytes / 2**30:.2f} GiB of {self.total_bytes / 2**30:.2f} GiB"
        )


def gpu_status() -> GpuStatus:
    """Whether a CUDA GPU is usable from CuPy here; never raises."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return GpuStatus(False, "NUMBA_ENABLE_CUDASIM=1 (CUDA simulator, no real GPU)")
    try:
        import cupy
    except ImportError as exc:
        return GpuStatus(False, f"cupy is not installed ({exc.name}); install orcd-toolkit[cuda13]")
    try:
        if not cupy.is_available():
            return GpuStatus(False, "cupy reports no usable CUDA device")
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - any driver/runtime failure means "no GPU here"
        return GpuStatus(False, f"CUDA runtime unavailable: {type(exc).__name__}: {exc}")
    if n < 1:
        return GpuStatus(False, "no CUDA device")
    return GpuStatus(True, f"{n} CUDA device(s)")


def probe_cupy(device: int = 0) -> DeviceProbe:
    import cupy

    with cupy.cuda.Device(device):
        props = cupy.cuda.runtime.getDeviceProperties(device)
        free, total = cupy.cuda.runtime.memGetInfo()
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return DeviceProbe("cupy", name, (props["major"], props["minor"]), free, total)


def probe_numba(device: int = 0) -> DeviceProbe:
    from numba import cuda

    cuda.select_device(device)
    dev = cuda.get_current_device()
    free, total = cuda.current_context().get_memory_info()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    return DeviceProbe("numba", name, tuple(dev.compute_capability), free, total)


def probe(device: int = 0) -> list[DeviceProbe]:
    """The device as CuPy and Numba see it."""
    return [probe_cupy(device), probe_numba(device)]


if __name__ == "__main__":
    status = gpu_status()
    if not status.usable:
        print(f"no GPU: {status.reason}")
    else:
        for p in probe():
            print(p.line())
