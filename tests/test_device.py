"""GPU discovery: never raises without a GPU; on a GPU, CuPy and Numba see the same device."""

from __future__ import annotations

import pytest

from orcd_toolkit.kernels.device import gpu_status, probe


def test_gpu_status_never_raises() -> None:
    status = gpu_status()
    assert isinstance(status.usable, bool)
    assert status.reason


@pytest.mark.gpu
def test_probe_cupy_and_numba_agree() -> None:
    via_cupy, via_numba = probe()
    assert via_cupy.name == via_numba.name
    assert via_cupy.compute_capability == via_numba.compute_capability
    assert via_cupy.compute_capability >= (7, 0)
    assert 0 < via_cupy.free_bytes <= via_cupy.total_bytes
    assert via_cupy.total_bytes == via_numba.total_bytes
