"""Every kernel compiles for sm_90 without a GPU (issue #8 item 3).

CUDA C++ sources go through NVRTC directly (the nvidia-cuda-nvrtc wheel); Numba kernels are
type-checked and lowered to PTX with ``compile_ptx`` (the nvidia-nvvm wheel). A broken kernel
fails here, before it reaches the device.
"""

from __future__ import annotations

import re

import pytest

from orcd_toolkit.gguf.types import LAYOUTS, GGMLType
from orcd_toolkit.kernels import cuda_modules


def _nvrtc_available() -> str | None:
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - any load failure means "no NVRTC here"
        return f"NVRTC not loadable: {type(exc).__name__}: {exc}"
    return None


@pytest.mark.parametrize("name", cuda_modules.SOURCE_NAMES)
def test_cuda_source_compiles_for_sm90(name: str) -> None:
    reason = _nvrtc_available()
    if reason:
        pytest.skip(reason)
    cubin = cuda_modules.compile_check(name, "sm_90")
    assert len(cubin) > 1000


def test_cuda_type_table_matches_gguf_layouts() -> None:
    """QTraits in common.cuh and the QT_* ids agree with orcd_toolkit.gguf.types."""
    text = (cuda_modules.CUDA_DIR / "common.cuh").read_text()
    ids = {m[0]: int(m[1]) for m in re.findall(r"#define QT_(\w+) (\d+)", text)}
    traits = {
        m[0]: (int(m[1]), int(m[2]))
        for m in re.findall(r"QTraits<QT_(\w+)>\s*\{ enum \{ elems = (\d+),\s*bytes = (\d+) \}", text)
    }
    assert set(ids) == {t.name for t in GGMLType}
    for t in GGMLType:
        assert ids[t.name] == int(t), t.name
        assert traits[t.name] == (LAYOUTS[t].block_elems, LAYOUTS[t].block_bytes), t.name
    assert set(cuda_modules.QTYPE_IDS) == {int(t) for t in GGMLType}


def _numba_kernels() -> list:
    from orcd_toolkit.kernels import activations, moe, norms, rope, sampling

    out = []
    for mod in (norms, rope, activations, moe, sampling):
        for kernel, sig in mod.PTX_SIGNATURES:
            out.append(pytest.param(kernel, sig, id=f"{mod.__name__.rsplit('.', 1)[1]}.{kernel.__name__}"))
    return out


@pytest.mark.parametrize(("kernel", "sig"), _numba_kernels())
def test_numba_kernel_compiles_for_sm90(kernel, sig) -> None:
    from numba import cuda

    try:
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
    except Exception as exc:  # noqa: BLE001 - NVVM missing is a skip, anything else fails below
        if "NVVM" in str(exc) or "libnvvm" in str(exc).lower():
            pytest.skip(f"libNVVM not available: {exc}")
        raise
    assert ".target sm_90" in ptx
    assert ".entry" in ptx
