"""The int8 (q8_1 activation) matvec path: host-side dispatch and validation (no GPU), and on a
GPU its product against the NumPy twin ``round_activations(x, "q8_1") @ dequant(W).T``."""

from __future__ import annotations

import numpy as np
import pytest

from orcd_toolkit.backends.cpu import ops
from orcd_toolkit.gguf.quants import random_blocks
from orcd_toolkit.gguf.types import GGMLType, row_bytes
from orcd_toolkit.kernels import cuda_modules, quant
from orcd_toolkit.kernels.errors import KernelError

BLOCK_TYPES = [GGMLType(q) for q in cuda_modules.BLOCK_QTYPE_IDS]


def _weight(qt: GGMLType, rows: int, cols: int) -> quant.QuantWeight:
    return quant.QuantWeight(np.zeros((rows, row_bytes(qt, cols)), np.uint8), qt, rows, cols)


def test_default_numerics_by_type_and_batch() -> None:
    """Block types use the int8 path up to Q8_MAX_BATCH vectors; float weights never do."""
    for qt in BLOCK_TYPES:
        w = _weight(qt, 4, 256)
        assert quant._use_q8(w, 1, None) and quant._use_q8(w, quant.Q8_MAX_BATCH, None)
        assert not quant._use_q8(w, quant.Q8_MAX_BATCH + 1, None)
        assert not quant._use_q8(w, 1, False)
    for qt in (GGMLType.F32, GGMLType.F16, GGMLType.BF16):
        w = _weight(qt, 4, 256)
        assert not quant._use_q8(w, 1, None)
        with pytest.raises(KernelError, match="no int8"):
            quant._use_q8(w, 1, True)


@pytest.mark.parametrize("qt", BLOCK_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("cols", [256, 1536, 4864, 8960])
def test_batches_cover_n_and_fit_shared_memory(qt: GGMLType, cols: int) -> None:
    """Vectors per launch add up to n, and each launch's x staging plus its static stage ring
    fits the 48 KiB a block gets without opt-in (8 x 8960 columns would need 98 KiB)."""
    if cols % 256 and qt in (GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K):
        cols = 4608
    w = _weight(qt, 4, cols)
    for n in range(1, 9):
        parts = quant._q8_batches(w, n)
        assert sum(parts) == n and all(p in (1, 2, 4, 8) for p in parts)
        for nb in parts:
            r, st, ks = quant._q8_variant(w, nb, None, None, None)
            assert (r, nb, st, ks) in cuda_modules.Q8_VARIANTS
            assert nb * quant.q8_words(cols) * 4 + quant._q8_stage_bytes(w, r, st) <= 48 * 1024


def test_every_variant_stage_ring_fits_static_shared_memory() -> None:
    for qt in BLOCK_TYPES:
        w = _weight(qt, 4, 256)
        for r, _, st, _ in cuda_modules.Q8_VARIANTS:
            assert quant._q8_stage_bytes(w, r, st) <= 48 * 1024, (qt.name, r, st)


def test_unknown_variant_is_a_typed_error() -> None:
    with pytest.raises(KernelError, match="no variant"):
        quant._q8_variant(_weight(GGMLType.Q8_0, 4, 256), 1, 3, None, None)


def test_x_q8_must_match_the_product() -> None:
    w = _weight(GGMLType.Q8_0, 8, 64)
    x = np.zeros((2, 64), np.float32)
    out = np.zeros((2, 8), np.float32)
    wrong = quant.Q8Activations(np.zeros((3, quant.q8_words(64)), np.uint32), 3, 64)
    with pytest.raises(KernelError, match=r"x_q8 holds \[3, 64\]"):
        quant.matvec(out, x, w, x_q8=wrong)


def test_quantize_activations_validates_before_launching() -> None:
    with pytest.raises(KernelError, match="multiple of 32"):
        quant.quantize_activations(np.zeros((1, 11), np.uint32), np.zeros((1, 48), np.float32))
    with pytest.raises(KernelError, match="xq"):
        quant.quantize_activations(np.zeros((1, 22), np.int32), np.zeros((1, 64), np.float32))
    assert quant.q8_words(896) == 28 * 11


# --------------------------------------------------------------------------- on a GPU


@pytest.fixture(scope="module")
def cp():
    cupy = pytest.importorskip("cupy")
    if not cupy.is_available():
        pytest.skip("no usable GPU: cupy reports no usable CUDA device")
    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("qt", BLOCK_TYPES, ids=lambda t: t.name)
def test_int8_matvec_equals_its_numpy_twin(cp, qt: GGMLType) -> None:
    """Default path (x rounded in every block) and the x_q8 path (rounded once) against
    round_activations(x, "q8_1") @ dequant(W).T (+ bias): nMSE <= 1e-10 (the matvec_q8
    tolerance of scripts/kernel_parity.py; one q off by one costs ~1e-7 here), and the two
    GPU paths bit-identical."""
    rng = np.random.default_rng(8)
    rows, cols = 1003, 2048  # odd rows: a partial last row group
    raw = random_blocks(qt, (rows, cols), rng)
    w = quant.QuantWeight(cp.asarray(raw), qt, rows, cols)
    w_ref = ops.dequantize(raw, int(qt), (rows, cols))
    bias = rng.normal(0, 0.1, rows).astype(np.float32)
    for n in (1, 5):
        x = rng.normal(0, 1, (n, cols)).astype(np.float32)
        x[0, :32] = 0.0  # an all-zero chunk: d = 0, q = 0
        ref = ops.matmul(ops.round_activations(x, "q8_1"), w_ref, bias).astype(np.float64)
        xd, bd = cp.asarray(x), cp.asarray(bias)
        out = cp.empty((n, rows), cp.float32)
        quant.matvec(out, xd, w, bd)
        got = out.get().astype(np.float64)
        assert np.sum((got - ref) ** 2) / np.sum(ref**2) <= 1e-10
        out2 = cp.empty_like(out)
        xq = cp.empty((n, quant.q8_words(cols)), cp.uint32)
        quant.matvec(out2, xd, w, bd, x_q8=quant.quantize_activations(xq, xd))
        assert np.array_equal(out2.get(), out.get())
