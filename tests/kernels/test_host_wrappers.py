"""Host-side parts of the kernel wrappers that need no GPU: argument validation (typed
errors naming the problem) and the host math that feeds the kernels."""

from __future__ import annotations

import numpy as np
import pytest

from orcd_toolkit.backends.cpu import ops
from orcd_toolkit.gguf.types import LAYOUTS, GGMLType, row_bytes
from orcd_toolkit.kernels import attention, quant, rope
from orcd_toolkit.kernels.errors import KernelError


@pytest.mark.parametrize(
    "kw",
    [
        {"freq_base": 1e6},
        {"freq_base": 1e4, "freq_scale": 0.25},
        {"freq_base": 1e4, "freq_factors": np.linspace(1, 4, 32)},
        {"freq_base": 150000.0, "freq_scale": 1 / 32, "ext_factor": 1.0, "attn_factor": 1.2,
         "beta_fast": 32.0, "beta_slow": 1.0, "n_ctx_orig": 4096},
    ],
)
def test_rope_frequencies_reproduce_reference_angles(kw: dict) -> None:
    """The kernel's cos/sin(p * f_i) * mscale equals ops.rope_cos_sin (YaRN included)."""
    pos = np.array([0, 1, 17, 4095, 30000])
    freqs, mscale = rope.rope_frequencies(64, **kw)
    cos_ref, sin_ref = ops.rope_cos_sin(pos, 64, **kw)
    theta = pos[:, None].astype(np.float64) * freqs[None, :]
    np.testing.assert_allclose((np.cos(theta) * mscale).astype(np.float32), cos_ref, atol=2e-6)
    np.testing.assert_allclose((np.sin(theta) * mscale).astype(np.float32), sin_ref, atol=2e-6)


def test_rope_frequencies_rejects_odd_rotation() -> None:
    with pytest.raises(KernelError, match="even"):
        rope.rope_frequencies(63)


def test_quant_weight_validates_layout() -> None:
    rb = row_bytes(GGMLType.Q8_0, 64)
    ok = np.zeros((3, rb), np.uint8)
    w = quant.QuantWeight(ok, GGMLType.Q8_0, 3, 64)
    assert w.row_bytes == rb and w.matrix_bytes == 3 * rb and w.num_experts == 0
    with pytest.raises(KernelError, match=r"needs uint8 \[\.\.\., 3, 68\]"):
        quant.QuantWeight(np.zeros((3, rb + 1), np.uint8), GGMLType.Q8_0, 3, 64)
    with pytest.raises(KernelError, match="multiple of 32"):
        quant.QuantWeight(np.zeros((3, 8), np.uint8), GGMLType.F16, 3, 4)
    stack = quant.QuantWeight(np.zeros((5, 3, rb), np.uint8), GGMLType.Q8_0, 3, 64)
    assert stack.num_experts == 5


def test_layout_table_is_the_gguf_table() -> None:
    assert quant.layout_table() == {int(t): (LAYOUTS[t].block_elems, LAYOUTS[t].block_bytes)
                                    for t in GGMLType}


def test_linear_shape_checks_name_the_argument() -> None:
    rb = row_bytes(GGMLType.Q4_0, 64)
    w = quant.QuantWeight(np.zeros((8, rb), np.uint8), GGMLType.Q4_0, 8, 64)
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(KernelError, match=r"out must have shape \[2x8\]"):
        quant.matvec(np.zeros((2, 9), np.float32), x, w)
    with pytest.raises(KernelError, match="x must be float32"):
        quant.matvec(np.zeros((2, 8), np.float32), x.astype(np.float64), w)


def test_flash_attention_plans_splits_and_workspace() -> None:
    kern = attention.FlashAttention(num_sms=132)
    decode = attention.AttentionShape(1, 1, 1, 4096, 14, 2, 64)
    assert kern.splits(decode) == 16  # capped by ceil(4096 / 256)
    assert kern.workspace_shape(decode) == (16 * 1 * 14 * 66,)
    prefill = attention.AttentionShape(512, 1, 512, 512, 14, 2, 64)
    assert kern.splits(prefill) == 1
    too_wide = attention.AttentionShape(1, 1, 1, 10, 64, 2, 64)  # 32 q heads per KV head
    with pytest.raises(KernelError, match="GQA group"):
        kern._qtile(too_wide)


def test_programmatic_launch_arguments_keep_their_c_types() -> None:
    """launch_pdl passes each argument to cuLaunchKernelEx with the C type the kernel
    declares: int32 / int64 scalars, null and device pointers as void*; anything else is a
    typed error before a launch (a wrong width would shift every later argument)."""
    import ctypes

    from orcd_toolkit.kernels._launch import NULL, _c_arg

    class FakeDeviceArray:  # what _c_arg reads of a CuPy array: .data.ptr
        class data:  # noqa: N801 - mirrors cupy.ndarray.data
            ptr = 0x7F00_0000_1000

    assert _c_arg(np.int32(-3)) == (-3, ctypes.c_int32)
    assert _c_arg(np.int64(2**40)) == (2**40, ctypes.c_int64)
    assert _c_arg(NULL) == (0, ctypes.c_void_p)
    assert _c_arg(np.float32(0.5)) == (0.5, ctypes.c_float)
    assert _c_arg(FakeDeviceArray()) == (0x7F00_0000_1000, ctypes.c_void_p)
    with pytest.raises(KernelError, match="no kernel argument type"):
        _c_arg(7)


def test_programmatic_launches_scope_is_restored() -> None:
    """The PDL switch is a context: on inside the block, off again after it, even when the
    block raises."""
    assert not quant._PDL.get()
    with quant.programmatic_launches():
        assert quant._PDL.get()
        with quant.programmatic_launches(False):
            assert not quant._PDL.get()
        assert quant._PDL.get()
    with pytest.raises(RuntimeError), quant.programmatic_launches():
        raise RuntimeError("boom")
    assert not quant._PDL.get()
