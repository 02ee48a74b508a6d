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
        for r, _, st, _ in cuda_modules.q8_variants(int(qt)):
            assert quant._q8_stage_bytes(w, r, st) <= 48 * 1024, (qt.name, r, st)


def test_balanced_grid_is_no_slower_than_the_capped_grid() -> None:
    """The int8 grid never gives a warp more row groups than min(groups / 4, cap) blocks
    would, never exceeds the cap, and splits groups evenly (shares differ by at most one)."""
    for groups in range(1, 3000, 7):
        for cap in (1, 2, 33, 132, 264, 1056):
            blocks = quant._q8_blocks(groups, cap, 1)
            capped = min(-(-groups // 4), cap)
            assert 1 <= blocks <= capped
            most = -(-groups // (4 * blocks))
            assert most <= -(-groups // (4 * capped))
            assert most - groups // (4 * blocks) <= 1
    assert quant._q8_blocks(720, 132, 1) == 90  # 8 gpt-oss expert products of 4-row groups
    assert quant._q8_blocks(896, 264, 4) == 264


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


def test_q8_plan_shares_one_rounding_per_activation() -> None:
    """Which way a decode product gets its q8_1 x: float weights and batches above
    Q8_MAX_BATCH keep f32; a rounded x is read; else narrow x is rounded inside the product
    (which stores it), wide x by its own launch."""
    narrow, wide = 896, quant.Q8_PREQUANT_MIN_COLS
    for qt in BLOCK_TYPES:
        assert quant.q8_plan(1, narrow, qt, False) == "inline"
        assert quant.q8_plan(8, wide, qt, False) == "prequant"
        assert quant.q8_plan(1, narrow, qt, True) == "shared"
        assert quant.q8_plan(quant.Q8_MAX_BATCH + 1, narrow, qt, True) == "f32"
        assert quant.q8_plan(0, narrow, qt, False) == "f32"
    for qt in (GGMLType.F32, GGMLType.F16, GGMLType.BF16):
        assert quant.q8_plan(1, narrow, qt, True) == "f32"


def test_shared_activations_recognise_the_same_array_only() -> None:
    """One buffer per activation width, grown to a power of two of rows; a rounding is found
    for the array that claimed it and for no other (equal values, a copy, or a later array
    of the same width that took the buffer over)."""
    made: list[tuple[int, int]] = []

    def alloc(shape: tuple[int, int]) -> np.ndarray:
        made.append(shape)
        return np.zeros(shape, np.uint32)

    sa = quant.SharedActivations(alloc)
    x = np.ones((3, 896), np.float32)
    assert sa.lookup(x) is None
    qa = sa.claim(x)
    assert (qa.rows, qa.cols, qa.data.shape) == (3, 896, (3, quant.q8_words(896)))
    assert sa.lookup(x) is qa and sa.lookup(x.copy()) is None
    y = np.ones((2, 896), np.float32)
    qb = sa.claim(y)  # same width: the buffer is reused and x's entry is gone
    assert sa.lookup(x) is None and sa.lookup(y) is qb
    assert made == [(4, quant.q8_words(896))]
    z = np.ones((5, 2880), np.float32)
    sa.claim(z)
    assert sa.lookup(y) is qb and made[-1] == (8, quant.q8_words(2880))
    sa.claim(np.ones((9, 896), np.float32))
    assert made[-1] == (16, quant.q8_words(896))
    sa.clear()
    assert sa.lookup(z) is None


def test_x_q8_out_needs_the_rounding_product() -> None:
    w = _weight(GGMLType.Q8_0, 8, 64)
    x = np.zeros((2, 64), np.float32)
    out = np.zeros((2, 8), np.float32)
    qa = quant.Q8Activations(np.zeros((2, quant.q8_words(64)), np.uint32), 2, 64)
    with pytest.raises(KernelError, match="x_q8_out"):
        quant.matvec(out, x, w, x_q8=qa, x_q8_out=qa)
    with pytest.raises(KernelError, match="x_q8_out"):
        quant.matvec(out, x, w, q8_activations=False, x_q8_out=qa)
    bad = quant.Q8Activations(np.zeros((2, 5), np.uint32), 2, 64)
    with pytest.raises(KernelError, match="x_q8.data"):
        quant.matvec(out, x, w, x_q8_out=bad)


def test_expert_gate_up_validates_before_launching() -> None:
    e, rows, cols = 4, 64, 64
    gw = quant.QuantWeight(np.zeros((e, rows, row_bytes(GGMLType.MXFP4, cols)), np.uint8),
                           GGMLType.MXFP4, rows, cols)
    other = quant.QuantWeight(np.zeros((e, rows, row_bytes(GGMLType.Q8_0, cols)), np.uint8),
                              GGMLType.Q8_0, rows, cols)
    ids = np.zeros((1, 2), np.int32)
    x = np.zeros((1, cols), np.float32)
    g = np.zeros((1, 2, rows), np.float32)
    with pytest.raises(KernelError, match="expert stacks"):
        quant.expert_gate_up(g, g, x, _weight(GGMLType.Q8_0, rows, cols), gw, ids)
    with pytest.raises(KernelError, match="up_out"):
        quant.expert_gate_up(g, np.zeros((1, 3, rows), np.float32), x, gw, gw, ids)
    with pytest.raises(KernelError, match="one type and shape"):
        quant.expert_gate_up(g, g.copy(), x, gw, other, ids)


def test_moe_plan_fuses_gate_and_up_of_one_type_and_shape() -> None:
    from orcd_toolkit.kernels.backend import MAX_GRID_Y, moe_int8_plan

    assert MAX_GRID_Y == quant.MAX_GRID_Y
    mx = (int(GGMLType.MXFP4), 2880, 2880)
    assert moe_int8_plan(mx, mx, int(GGMLType.MXFP4), 4) == "fused"
    assert moe_int8_plan(mx, mx, int(GGMLType.MXFP4), MAX_GRID_Y // 2 + 1) == "shared"
    assert moe_int8_plan(mx, (int(GGMLType.Q8_0), 2880, 2880), int(GGMLType.MXFP4), 4) == "shared"
    assert moe_int8_plan(mx, mx, int(GGMLType.F16), 4) == "default"


def test_backend_block_types_match_the_kernels() -> None:
    from orcd_toolkit.kernels.backend import BLOCK_QTYPES

    assert BLOCK_QTYPES == frozenset(cuda_modules.BLOCK_QTYPE_IDS)


def test_row_group_kernel_policy(monkeypatch) -> None:
    """qmatvec_q8_rows serves every batch-1 product whose ring fits (x in registers up to 3072
    columns, in shared memory beyond), with each type's and shape's default variant; forcing
    it where it cannot run is a typed error, not a launch."""
    monkeypatch.setattr(quant, "smem_optin", lambda: 227 * 1024)
    tall = _weight(GGMLType.Q5_0, 4864, 896)
    r, st, bulk = quant._rows_variant(tall, None, None)
    assert (r, st, bulk) == quant.Q8_ROWS_DEFAULT == (4, 2, True)
    assert (r, 3, st) in cuda_modules.Q8_ROWS_BULK_VARIANTS
    assert quant._rows_variant(_weight(GGMLType.Q8_0, 151936, 896), None, None) == (8, 2, False)
    assert quant._rows_variant(_weight(GGMLType.Q8_0, 4096, 2880), None, None) == (4, 2, True)
    assert quant._rows_variant(tall, 2, None) == (2, 2, True)  # overrides
    monkeypatch.setattr(quant, "Q8_ROWS_BULK", False)
    assert quant._rows_variant(tall, None, None) == (4, 2, False)
    monkeypatch.setattr(quant, "Q8_ROWS_BULK", None)
    assert quant._use_rows(tall, 1, 4, 2, True, 1, False, None)
    assert not quant._use_rows(tall, 1, 4, 2, True, 1, False, False)
    short = _weight(GGMLType.Q5_0, 896, 896)
    assert quant._rows_variant(short, None, None) == quant.Q8_ROWS_SHORT == (2, 2, True)
    assert quant._use_rows(short, 1, 2, 2, True, 1, False, None)
    assert not quant._use_rows(tall, 2, 4, 2, True, 1, False, None)  # batches: segment walk
    assert not quant._use_rows(tall, 1, 8, 2, True, 1, False, None)  # not compiled with bulk
    assert quant._use_rows(tall, 1, 8, 2, False, 1, False, None)
    # wider rows: x's chunks in shared memory (NCH = 0), with their own default variant
    wide = _weight(GGMLType.Q6_K, 896, 4864)
    assert quant._rows_nch(wide) == 0 and quant._rows_nch(tall) == 3
    r, st, bulk = quant._rows_variant(wide, None, None)
    assert (r, st, bulk) == quant.Q8_ROWS_WIDE
    assert (r, 0, st) in cuda_modules.Q8_ROWS_BULK_VARIANTS
    assert quant._use_rows(wide, 1, r, st, bulk, 1, False, None)
    assert not quant._use_rows(wide, 1, 4, 2, True, 1, False, None)  # not compiled
    with pytest.raises(KernelError, match="4 rows per group .* x in shared memory"):
        quant._use_rows(wide, 1, 4, 2, True, 1, False, True)
    slots = 8 * quant.q8_rows_slot(wide, 1)
    assert quant._q8_rows_smem(wide, 1, 2, False) == slots + 152 * quant.Q8_XQ_WIDE_BYTES
    assert quant._q8_rows_smem(wide, 1, 2, True) == (slots + 152 * quant.Q8_XQ_WIDE_BYTES
                                                     + 152 * quant.Q8_XQ_BYTES)
    monkeypatch.setattr(quant, "Q8_ROWS_X_SHARED", True)  # the wide variants on any row
    assert quant._rows_nch(tall) == 0
    assert quant._rows_variant(tall, None, None) == quant.Q8_ROWS_WIDE
    monkeypatch.setattr(quant, "Q8_ROWS_X_SHARED", None)
    with pytest.raises(KernelError, match="one vector"):
        quant._use_rows(tall, 2, 4, 2, True, 1, False, True)
    with pytest.raises(KernelError, match="8 rows per group and 3 stages"):
        quant._use_rows(tall, 1, 8, 3, False, 1, False, True)
    experts = quant.QuantWeight(np.zeros((4, 2880, row_bytes(GGMLType.MXFP4, 2880)), np.uint8),
                                GGMLType.MXFP4, 2880, 2880)
    # 2880 rows, but experts keep the default (the fused gate+up launch measured best at 4)
    assert quant._rows_variant(experts, None, None) == quant.Q8_ROWS_DEFAULT
    assert quant._use_rows(experts, 1, 4, 2, True, 1, False, None)
    monkeypatch.setattr(quant, "smem_optin", lambda: 48 * 1024)  # 4 x 1530 B x 2 x 4 > 48 KiB
    assert not quant._use_rows(experts, 1, 4, 2, True, 1, False, None)
    with pytest.raises(KernelError, match="fits one block's shared memory"):
        quant._use_rows(experts, 1, 4, 2, True, 1, False, True)


@pytest.mark.parametrize("qt", BLOCK_TYPES, ids=lambda t: t.name)
def test_row_group_slot_holds_what_the_kernel_touches(qt: GGMLType) -> None:
    """For every compiled row count and every start misalignment: the copy (whole 16-byte
    vectors from the group's floor) and the decode's reads (up to 4 bytes past a block's
    end, ld_words) stay inside one slot, so items never spill into the next slot or warp,
    and the dynamic shared memory is 4 warps x stages x slot (+ x's rounding)."""
    cols = 3072 if qt in (GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K) else 2880
    w = _weight(qt, 8, cols)
    rs = {r for r, _, _ in cuda_modules.Q8_ROWS_VARIANTS + cuda_modules.Q8_ROWS_BULK_VARIANTS}
    for r in sorted(rs):
        slot = quant.q8_rows_slot(w, r)
        assert slot % 16 == 0
        for mis in range(16):
            copied = 16 * -(-(mis + r * w.row_bytes) // 16)
            assert copied <= slot and mis + r * w.row_bytes + 4 <= slot
        assert quant._q8_rows_smem(w, r, 2, False) == 8 * slot
        assert quant._q8_rows_smem(w, r, 2, True) == 8 * slot + cols // 32 * quant.Q8_XQ_BYTES


def test_swiglu_rounded_validates_before_launching() -> None:
    """Shapes, dtypes, whole q8_1 chunks and row layout are checked on the host (typed errors,
    nothing launched): rows of gate / up may be strided (halves of a fused output), columns
    not."""
    g = np.zeros((2, 64), np.float32)
    xq = np.zeros((2, quant.q8_words(64)), np.uint32)
    with pytest.raises(KernelError, match="multiple of 32"):
        quant.swiglu_rounded(np.zeros((2, 48), np.float32), np.zeros((2, 48), np.float32),
                             np.zeros((2, 48), np.float32), xq)
    with pytest.raises(KernelError, match="up must have shape"):
        quant.swiglu_rounded(g.copy(), g, np.zeros((3, 64), np.float32), xq)
    with pytest.raises(KernelError, match="xq must have shape"):
        quant.swiglu_rounded(g.copy(), g, g.copy(), np.zeros((2, 5), np.uint32))
    with pytest.raises(KernelError, match="act must be float32"):
        quant.swiglu_rounded(g.astype(np.float64), g, g.copy(), xq)
    with pytest.raises(KernelError, match="contiguous rows"):
        quant.swiglu_rounded(g.copy(), np.zeros((2, 128), np.float32)[:, ::2], g.copy(), xq)


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


@pytest.mark.gpu
@pytest.mark.parametrize("qt", [GGMLType.Q5_0, GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.MXFP4],
                         ids=lambda t: t.name)
def test_shared_rounding_is_bit_identical(cp, qt: GGMLType) -> None:
    """The rounding a product stores (x_q8_out, block 0, both block sums) equals
    quantize_activations' words, and products reading it (SharedActivations, as the GPU
    backend runs q/k/v) equal the products that round x themselves, bit for bit."""
    rng = np.random.default_rng(9)
    cols = 1536
    ws = []
    for rows in (1536, 256, 4864):
        raw = random_blocks(qt, (rows, cols), rng)
        ws.append(quant.QuantWeight(cp.asarray(raw), qt, rows, cols))
    for n in (1, 3, 8):
        xd = cp.asarray(rng.normal(0, 1, (n, cols)).astype(np.float32))
        ref_xq = cp.empty((n, quant.q8_words(cols)), cp.uint32)
        quant.quantize_activations(ref_xq, xd)
        sa = quant.SharedActivations(lambda shape: cp.full(shape, 0xDEADBEEF, cp.uint32))
        for w in ws:
            own = cp.empty((n, w.rows), cp.float32)
            quant.matvec(own, xd, w)
            shared = cp.empty_like(own)
            sa.linear(shared, xd, w)
            assert np.array_equal(shared.get(), own.get())
        assert np.array_equal(sa.lookup(xd).data.get(), ref_xq.get())
        assert sa.launches_saved == 2


@pytest.mark.gpu
def test_expert_gate_up_equals_two_expert_matvecs(cp) -> None:
    """The fused gate/up launch writes what two expert_matvec launches write, bit for bit,
    with x rounded in the kernel or read from quantize_activations."""
    rng = np.random.default_rng(10)
    n_exp, k, rows, cols, t = 8, 4, 576, 2880, 3
    stacks = [quant.QuantWeight(cp.asarray(random_blocks(GGMLType.MXFP4, (n_exp, rows, cols),
                                                         rng)), GGMLType.MXFP4, rows, cols)
              for _ in range(2)]
    biases = [cp.asarray(rng.normal(0, 0.1, (n_exp, rows)).astype(np.float32)) for _ in range(2)]
    ids = cp.asarray(np.stack([rng.permutation(n_exp)[:k] for _ in range(t)]).astype(np.int32))
    xd = cp.asarray(rng.normal(0, 1, (t, cols)).astype(np.float32))
    refs = []
    for w, b in zip(stacks, biases, strict=True):
        y = cp.empty((t, k, rows), cp.float32)
        quant.expert_matvec(y, xd, w, ids, x_per_slot=False, bias=b)
        refs.append(y.get())
    xq = quant.quantize_activations(cp.empty((t, quant.q8_words(cols)), cp.uint32), xd)
    for x_q8 in (None, xq):
        g = cp.full((t, k, rows), np.nan, cp.float32)
        u = cp.full((t, k, rows), np.nan, cp.float32)
        quant.expert_gate_up(g, u, xd, stacks[0], stacks[1], ids, gate_bias=biases[0],
                             up_bias=biases[1], x_q8=x_q8)
        assert np.array_equal(g.get(), refs[0]) and np.array_equal(u.get(), refs[1])


@pytest.mark.gpu
def test_programmatic_launches_keep_every_dependency(cp) -> None:
    """A chain where each int8 product reads the previous one's output and one reads a
    rounding launched just before it, launched with programmatic dependent launch, eagerly
    and captured in a graph, equals the plain launches bit for bit: the dense kernels'
    pdl_wait sits before every read of an earlier kernel's data. A missing wait shows as
    stale or NaN inputs (the buffers are refilled with NaN before each run). The MoE product
    at the end (routing ids written by a copy just before it) launches plainly even inside
    ``programmatic_launches`` (``_launch(pdl=False)``), and must still see its inputs. Links
    1, 3 and the extra product run the row-group kernel (forced: these matrices are below its
    4096-row default), one storing its rounding of x (x_q8_out) and the next reading it."""
    from orcd_toolkit.kernels.graph import capture

    rng = np.random.default_rng(11)
    qt, d = GGMLType.Q8_0, 1536
    ws = []
    for _ in range(6):
        raw = random_blocks(qt, (d, d), rng)
        # scale d so each product keeps |x| ~ 1 (random q of std ~73 per 32-block; without
        # this six chained products overflow float32)
        raw.reshape(d, d // 32, 34)[:, :, :2] = np.frombuffer(
            np.float16(1 / (73 * np.sqrt(d))).tobytes(), np.uint8)
        ws.append(quant.QuantWeight(cp.asarray(raw), qt, d, d))
    n_exp, k = 8, 2
    experts = quant.QuantWeight(cp.asarray(random_blocks(GGMLType.MXFP4, (n_exp, 256, d), rng)),
                                GGMLType.MXFP4, 256, d)
    stream = cp.cuda.Stream(non_blocking=True)
    x0 = cp.asarray(rng.normal(0, 1, (1, d)).astype(np.float32))
    hs = [cp.empty((1, d), cp.float32) for _ in range(len(ws) + 1)]
    xq = cp.empty((1, quant.q8_words(d)), cp.uint32)
    xo = quant.Q8Activations(cp.empty((1, quant.q8_words(d)), cp.uint32), 1, d)
    ids_host = np.array([[5, 2]], np.int32)
    ids_src = cp.asarray(ids_host)
    ids = cp.empty((1, k), cp.int32)
    y = cp.empty((1, k, 256), cp.float32)

    def chain() -> None:
        x = x0
        for w, h in zip(ws, hs, strict=False):
            if w is ws[3]:  # one product reads a rounding made by its own launch
                qa = quant.quantize_activations(xq, x, stream=stream)
                quant.matvec(h, x, w, stream=stream, x_q8=qa, row_groups=True)
            elif w is ws[1]:  # stores its rounding; a second product of x reads it
                quant.matvec(h, x, w, stream=stream, x_q8_out=xo, row_groups=True)
                quant.matvec(hs[-1], x, ws[0], stream=stream, x_q8=xo, row_groups=True)
            else:
                quant.matvec(h, x, w, stream=stream)
            x = h
        with stream:
            ids[...] = ids_src  # written by a copy kernel right before the expert product
        quant.expert_matvec(y, x, experts, ids, x_per_slot=False, stream=stream)

    def reset() -> None:
        for h in hs:
            h.fill(np.nan)
        y.fill(np.nan)
        ids.fill(0)
        cp.cuda.Device().synchronize()

    def run(fn) -> list[np.ndarray]:
        fn()
        stream.synchronize()
        return [h.get() for h in hs] + [y.get()]

    def chain_pdl() -> None:
        with quant.programmatic_launches():
            chain()

    reset()
    ref = run(chain)
    assert all(np.isfinite(r).all() for r in ref)
    reset()
    assert all(np.array_equal(a, b) for a, b in zip(run(chain_pdl), ref, strict=True))
    graph = capture(chain_pdl, stream)
    for _ in range(3):
        reset()
        assert all(np.array_equal(a, b)
                   for a, b in zip(run(lambda: graph.launch(stream)), ref, strict=True))


@pytest.mark.gpu
def test_grid_cap_changes_no_result(cp) -> None:
    """Capping the int8 grid at the resident blocks moves row groups between warps but not
    the order of any row's sum: the capped and uncapped grids agree bit for bit (dense
    products and the fused MoE gate/up of gpt-oss's shapes, segment and row-group kernels)."""
    rng = np.random.default_rng(12)
    n_exp, k, rows, cols = 8, 4, 2880, 2880
    stacks = [quant.QuantWeight(cp.asarray(random_blocks(GGMLType.MXFP4, (n_exp, rows, cols),
                                                         rng)), GGMLType.MXFP4, rows, cols)
              for _ in range(2)]
    ids = cp.asarray(rng.permutation(n_exp)[:k].reshape(1, k).astype(np.int32))
    xd = cp.asarray(rng.normal(0, 1, (1, cols)).astype(np.float32))
    dense = quant.QuantWeight(cp.asarray(random_blocks(GGMLType.Q6_K, (32064, 3072), rng)),
                              GGMLType.Q6_K, 32064, 3072)
    xv = cp.asarray(rng.normal(0, 1, (1, 3072)).astype(np.float32))
    # the cap must change this grid, else the comparison below compares a grid with itself
    r, st, per_sm = quant._expert_variant(stacks[0])
    smem = (cols // 32) * quant.Q8_XQ_BYTES
    resident = quant.resident_blocks(f"qmatvec_q8<{int(GGMLType.MXFP4)},{r},1,{st},1>",
                                     int(GGMLType.MXFP4), smem)
    groups, sms = -(-rows // r), quant._num_sms()
    assert quant._q8_blocks(groups, sms * min(per_sm, resident) // (2 * k), 1) != \
        quant._q8_blocks(groups, sms * per_sm // (2 * k), 1)
    outs = []
    for capped in (True, False):
        quant.OCCUPANCY_CAP = capped
        try:
            g = cp.empty((1, k, rows), cp.float32)
            u, g2, u2 = cp.empty_like(g), cp.empty_like(g), cp.empty_like(g)
            quant.expert_gate_up(g, u, xd, stacks[0], stacks[1], ids, row_groups=False)
            quant.expert_gate_up(g2, u2, xd, stacks[0], stacks[1], ids)  # row-group kernel
            v, v2 = cp.empty((1, 32064), cp.float32), cp.empty((1, 32064), cp.float32)
            quant.matvec(v, xv, dense)  # row-group kernel
            quant.matvec(v2, xv, dense, row_groups=False)
            outs.append((g.get(), u.get(), g2.get(), u2.get(), v.get(), v2.get()))
        finally:
            quant.OCCUPANCY_CAP = True
    assert all(np.array_equal(a, b) for a, b in zip(*outs, strict=True))


def test_expert_variants_are_compiled_for_their_type() -> None:
    """Every block type's expert product variant is an instantiated qmatvec_q8 whose ring fits
    static shared memory (MXFP4 uses 8-row groups, compiled for it alone)."""
    for qt in BLOCK_TYPES:
        w = _weight(qt, 4, 2880 if qt == GGMLType.MXFP4 else 4096)
        r, st, _ = quant._expert_variant(w)
        assert (r, 1, st, 1) in cuda_modules.q8_variants(int(qt)), qt.name
        assert quant._q8_stage_bytes(w, r, st) + quant.q8_words(w.cols) * 4 <= 48 * 1024
    assert quant._expert_variant(_weight(GGMLType.MXFP4, 4, 2880))[0] == 8
    assert (8, 1, 2, 1) not in cuda_modules.q8_variants(int(GGMLType.Q8_0))


@pytest.mark.gpu
@pytest.mark.parametrize("wide", [False, True], ids=["narrow", "wide"])
@pytest.mark.parametrize("qt", BLOCK_TYPES, ids=lambda t: t.name)
def test_row_group_kernel_equals_segment_kernel(cp, qt: GGMLType, wide: bool,
                                                monkeypatch) -> None:
    """qmatvec_q8_rows writes the segment kernel's bits (each lane adds its chunks in the same
    order, each row is reduced by the same butterfly) for every variant, with a partial last
    group (1003 / 301 rows), rows that are not 16-byte multiples (misaligned groups), x rounded
    in the kernel, read from x_q8 (on a grid where warps walk several items), or rounded and
    stored to x_q8_out (the words of quantize_activations); and it matches the NumPy twin.
    Narrow rows (at most 3072 columns) run every variant, those with x in registers and
    (Q8_ROWS_X_SHARED) those with x in shared memory; wide rows (4864 columns: Qwen2.5-0.5B's
    ffn_down) the shared-memory ones."""
    rng = np.random.default_rng(12)
    rows = 301 if wide else 1003
    cols = 4864 if wide else (2816 if qt in (GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K)
                              else 2880)
    raw = random_blocks(qt, (rows, cols), rng)
    w = quant.QuantWeight(cp.asarray(raw), qt, rows, cols)
    bias = rng.normal(0, 0.1, rows).astype(np.float32)
    x = rng.normal(0, 1, (1, cols)).astype(np.float32)
    x[0, 64:96] = 0.0
    xd, bd = cp.asarray(x), cp.asarray(bias)
    seg = cp.empty((1, rows), cp.float32)
    quant.matvec(seg, xd, w, bd, rows_per_warp=1, row_groups=False)
    ref = ops.matmul(ops.round_activations(x, "q8_1"), ops.dequantize(raw, int(qt), (rows, cols)),
                     bias).astype(np.float64)
    got = seg.get().astype(np.float64)
    assert np.sum((got - ref) ** 2) / np.sum(ref**2) <= 1e-10
    xq = quant.quantize_activations(cp.empty((1, quant.q8_words(cols)), cp.uint32), xd)
    variants = [(r, nch, st, False) for r, nch, st in cuda_modules.Q8_ROWS_VARIANTS]
    variants += [(r, nch, st, True) for r, nch, st in cuda_modules.Q8_ROWS_BULK_VARIANTS]
    ran = 0
    for r, nch, st, bulk in variants:
        if wide and nch:
            continue
        monkeypatch.setattr(quant, "Q8_ROWS_BULK", bulk)
        monkeypatch.setattr(quant, "Q8_ROWS_X_SHARED", nch == 0)
        assert quant._rows_nch(w) == nch
        for mode in ("inline", "x_q8", "x_q8_out"):
            out = cp.full((1, rows), np.nan, cp.float32)
            stored = quant.Q8Activations(cp.full((1, quant.q8_words(cols)), 0xDEADBEEF,
                                                 cp.uint32), 1, cols)
            # x_q8 on a one-block-per-SM grid: every warp walks several items through its ring
            quant.matvec(out, xd, w, bd, rows_per_warp=r, stages=st, row_groups=True,
                         x_q8=xq if mode == "x_q8" else None,
                         x_q8_out=stored if mode == "x_q8_out" else None,
                         ctas_per_sm=1 if mode == "x_q8" else None)
            assert np.array_equal(out.get(), seg.get()), (r, nch, st, bulk, mode)
            ran += 1
            if mode == "x_q8_out":
                assert np.array_equal(stored.data.get(), xq.data.get())
    assert ran >= 6  # at least the two shared-memory variants, in every mode


@pytest.mark.gpu
@pytest.mark.parametrize("cols", [2880, 4864], ids=["x_in_registers", "x_in_shared_memory"])
@pytest.mark.parametrize("qt", [GGMLType.MXFP4, GGMLType.Q8_0], ids=lambda t: t.name)
def test_row_group_expert_products_equal_segment_kernel(cp, qt: GGMLType, cols: int) -> None:
    """The expert products on qmatvec_q8_rows (the default) equal the segment kernel bit for
    bit: expert_matvec with x per token and per slot, expert_gate_up, with biases, x rounded
    in the kernel or shared, 3 tokens of 4 slots, experts whose matrices start at every
    misalignment the row bytes give; gpt-oss's 2880-wide rows (x in registers) and wider ones
    (x in shared memory, each (token, slot) block copying its own row of x)."""
    rng = np.random.default_rng(13)
    # 1003 rows: expert matrices start off 16-byte boundaries (the kernels' misalignment term)
    n_exp, k, rows, t = 8, 4, 1003, 3
    stacks = [quant.QuantWeight(cp.asarray(random_blocks(qt, (n_exp, rows, cols), rng)), qt,
                                rows, cols) for _ in range(2)]
    biases = [cp.asarray(rng.normal(0, 0.1, (n_exp, rows)).astype(np.float32)) for _ in range(2)]
    ids = cp.asarray(np.stack([rng.permutation(n_exp)[:k] for _ in range(t)]).astype(np.int32))
    xd = cp.asarray(rng.normal(0, 1, (t, cols)).astype(np.float32))
    xs = cp.asarray(rng.normal(0, 1, (t, k, cols)).astype(np.float32))
    xq = quant.quantize_activations(cp.empty((t, quant.q8_words(cols)), cp.uint32), xd)
    xsq = quant.quantize_activations(cp.empty((t * k, quant.q8_words(cols)), cp.uint32),
                                     xs.reshape(t * k, cols))

    def products(x_q8, xs_q8, rg: bool) -> list[np.ndarray]:
        g, d, g2, u2 = (cp.full((t, k, rows), np.nan, cp.float32) for _ in range(4))
        quant.expert_matvec(g, xd, stacks[0], ids, x_per_slot=False, bias=biases[0], x_q8=x_q8,
                            row_groups=rg)
        quant.expert_matvec(d, xs, stacks[1], ids, x_per_slot=True, bias=biases[1], x_q8=xs_q8,
                            row_groups=rg)
        quant.expert_gate_up(g2, u2, xd, stacks[0], stacks[1], ids, gate_bias=biases[0],
                             up_bias=biases[1], x_q8=x_q8, row_groups=rg)
        return [a.get() for a in (g, d, g2, u2)]

    for x_q8, xs_q8 in ((None, None), (xq, xsq)):
        want = products(x_q8, xs_q8, False)
        got = products(x_q8, xs_q8, True)
        assert not any(np.isnan(a).any() for a in want)
        for a, b in zip(got, want, strict=True):
            assert np.array_equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("oai", [False, True], ids=["swiglu", "swiglu_oai"])
def test_swiglu_rounded_equals_activation_then_rounding(cp, oai: bool, monkeypatch) -> None:
    """The fused activation + q8_1 rounding writes the Numba activation kernel's act and
    quantize_activations' words of it, bit for bit, for contiguous inputs and for the two
    halves of a fused gate/up output read in place; the GPU backend's swiglu hands the down
    projection that rounding (no quantize launch) with the same product bits."""
    from orcd_toolkit.backends.cpu.ops import SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT
    from orcd_toolkit.kernels import activations
    from orcd_toolkit.kernels.backend import GpuBackend

    rng = np.random.default_rng(14)
    kw = {"oai": True, "alpha": SWIGLU_OAI_ALPHA, "limit": SWIGLU_OAI_LIMIT} if oai else {}
    # the last case on a one-SM grid: every warp loops over many chunks (the rounding's
    # batches of 8 and its prefetch of the next batch), as MoE rows at prefill do
    for n, cols, sms in ((1, 2880, None), (3, 4864, None), (8, 2880, None), (64, 2880, 1)):
        if sms is not None:
            monkeypatch.setattr(quant, "_num_sms", lambda sms=sms: sms)
        fused = cp.asarray(rng.normal(0, 3, (n, 2 * cols)).astype(np.float32))
        fused[0, :8] = cp.asarray([0, -0.0, 1e-30, -1e-30, 80, -80, 7.5, -7.5], cp.float32)
        # NaN and infinities in gate and up (the clamps are fminf / fmaxf in both kernels)
        fused[0, 8:12] = cp.asarray([np.nan, np.inf, -np.inf, 7.0], cp.float32)
        fused[0, cols + 8:cols + 12] = cp.asarray([1.0, np.nan, np.inf, -np.inf], cp.float32)
        for g, u in ((fused[:, :cols], fused[:, cols:]),
                     (cp.ascontiguousarray(fused[:, :cols]),
                      cp.ascontiguousarray(fused[:, cols:]))):
            ref = cp.empty((n, cols), cp.float32)
            gc, uc = cp.ascontiguousarray(g), cp.ascontiguousarray(u)
            if oai:
                activations.swiglu_oai(ref, gc, uc, SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT)
            else:
                activations.swiglu(ref, gc, uc)
            ref_xq = cp.empty((n, quant.q8_words(cols)), cp.uint32)
            quant.quantize_activations(ref_xq, ref)
            act = cp.full((n, cols), np.nan, cp.float32)
            xq = cp.full((n, quant.q8_words(cols)), 0xDEADBEEF, cp.uint32)
            qa = quant.swiglu_rounded(act, g, u, xq, **kw)
            assert qa.data is xq and (qa.rows, qa.cols) == (n, cols)
            assert np.array_equal(act.get().view(np.uint32), ref.get().view(np.uint32))
            assert np.array_equal(xq.get(), ref_xq.get())
            assert np.isnan(act[0, 8].get()) != oai  # a NaN gate: NaN, or clamped to the limit
    monkeypatch.undo()
    # through the backend: act, and the down product reading the recorded rounding
    be = GpuBackend()
    cols, rows = 4864, 896
    raw = random_blocks(GGMLType.Q4_K, (rows, cols), rng)
    w = quant.QuantWeight(cp.asarray(raw), GGMLType.Q4_K, rows, cols)
    fused = cp.asarray(rng.normal(0, 3, (2, 2 * cols)).astype(np.float32))
    act = (be.swiglu_oai(fused[:, :cols], fused[:, cols:], SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT)
           if oai else be.swiglu(fused[:, :cols], fused[:, cols:]))
    assert be._q8.lookup(act) is not None
    saved = be._q8.launches_saved
    y = be.linear(act, w)
    assert be._q8.launches_saved == saved + 1
    own = cp.empty((2, rows), cp.float32)
    quant.matvec(own, act.copy(), w)  # rounds its own copy of act
    assert np.array_equal(y.get(), own.get())
