"""Quantized linear layers on raw GGUF blocks (CuPy RawModule ``cuda/quant.cu``).

``matvec`` (decode, up to 8 vectors per launch: one warp per output row reads the row once
for the whole batch) and ``matmul`` (prefill: dequantized 128x32 tiles in shared memory, f16
tensor cores through inline-PTX ``mma.sync``, f32 accumulation). ``linear`` picks one by
batch size. ``expert_matvec`` runs the same matvec for MoE, reading only the selected experts.
``embed`` and ``dequantize`` decode rows with the same device code.

Weights stay in their GGUF block format; every type of DESIGN.md section 6 is supported.

Numerics of ``matvec`` / ``linear`` at up to ``Q8_MAX_BATCH`` vectors and of ``expert_matvec``
on the block types (Q4_0 ... MXFP4), by default: x is first rounded to q8_1 per 32 values
exactly as ``orcd_toolkit.backends.cpu.ops.round_activations(x, "q8_1")`` does (llama.cpp
CUDA's quantize_q8_1), then multiplied by the exactly dequantized weights (integer dp4a dots,
one f32 scale per chunk). ``q8_activations=False`` selects the f32 kernels (x used as is);
F32/F16/BF16 weights always use them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from orcd_toolkit.backends.cpu.ops import SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT
from orcd_toolkit.gguf.types import LAYOUTS, GGMLType, row_bytes
from orcd_toolkit.kernels import cuda_modules
from orcd_toolkit.kernels._launch import NULL, cdiv, check, launch_pdl, on_stream
from orcd_toolkit.kernels.errors import KernelError

MATVEC_MAX_BATCH = 8  # above this ``linear`` switches to the tensor-core matmul


@dataclass(frozen=True, slots=True)
class QuantWeight:
    """A weight matrix (or a stack of experts) kept as raw GGUF blocks in device memory.

    ``data`` is uint8 ``[rows, row_bytes]`` or ``[experts, rows, row_bytes]``; logical shape
    ``[rows, cols]`` per matrix (numpy order: the output dimension first).
    """

    data: Any
    qtype: GGMLType
    rows: int
    cols: int

    def __post_init__(self) -> None:
        qt = GGMLType(int(self.qtype))
        object.__setattr__(self, "qtype", qt)
        rb = row_bytes(qt, self.cols)
        if self.cols % 32:
            raise KernelError(f"{qt.name} weight: cols {self.cols} must be a multiple of 32")
        if self.data.dtype != np.uint8 or self.data.shape[-2:] != (self.rows, rb):
            raise KernelError(
                f"{qt.name} weight [{self.rows}, {self.cols}] needs uint8 [..., {self.rows}, {rb}], "
                f"got {self.data.dtype} {tuple(self.data.shape)}"
            )
        if not self.data.flags.c_contiguous:
            raise KernelError("weight data must be C-contiguous")

    @property
    def row_bytes(self) -> int:
        return row_bytes(self.qtype, self.cols)

    @property
    def num_experts(self) -> int:
        return self.data.shape[0] if self.data.ndim == 3 else 0

    @property
    def matrix_bytes(self) -> int:
        return self.rows * self.row_bytes


@dataclass(frozen=True, slots=True)
class Q8Activations:
    """Activations rounded to q8_1 by :func:`quantize_activations`, ready for the int8 matvec.

    ``data`` is uint32 ``[rows, q8_words(cols)]``: per 32 values 8 words of int8 q, f16(d) as
    an f32, and the sums of q over the first 16 and all 32 values. Several matvecs that read
    the same activation (q/k/v, gate/up) can share one: the rounding is then done once.
    """

    data: Any
    rows: int
    cols: int


def q8_words(cols: int) -> int:
    """uint32 words of one q8_1-rounded row of ``cols`` values (XQ_WORDS per 32)."""
    return (cols // 32) * 11


def _fn(expr: str, qtype: int) -> Any:
    return cuda_modules.function("quant", expr, int(qtype))


def _check_linear(out: Any, x: Any, w: QuantWeight, bias: Any) -> int:
    check(x, "x", np.float32, (None, w.cols))
    n = x.shape[0]
    check(out, "out", np.float32, (n, w.rows))
    if bias is not None:
        check(bias, "bias", np.float32, (w.rows,))
    return n


# int8 path: batches up to this many vectors (measured on an H200, docs/kernels.md); above
# it the tensor-core matmul
Q8_MAX_BATCH = 8
# rows per warp of the int8 kernel by matrix rows: more rows per warp share each x chunk
# (fewer instructions per weight byte), fewer keep more warps busy on short matrices
Q8_ROWS_PER_WARP_BY_ROWS: tuple[tuple[int, int], ...] = ((4096, 4), (2048, 2), (0, 1))
Q8_CTAS_PER_SM = 8  # grid cap of the int8 kernel (blocks of 128 threads per SM)
Q8_XQ_BYTES = 11 * 4  # shared memory per 32-value chunk of x in q8_1 (XQ_WORDS words)
Q8_XQ_WIDE_BYTES = 12 * 4  # the same chunk padded for 16-byte loads (XQ_WIDE_WORDS)
MAX_GRID_Y = 65535  # CUDA's grid.y limit: (token, slot) products per expert launch
# (rows per warp, ring stages, CTAs per SM) of the segment kernel (qmatvec_q8) for the expert
# products (expert_gate_up, expert_matvec) where the row-group kernel does not serve them
# (row_groups=False, rows wider than 3072 columns): gpt-oss-20b at T = 1 (8 products of
# 2880x2880 MXFP4 in one grid) measured 20.4 us with 4 rows per warp and up to 16 blocks per
# SM against 24.6 us with the dense matvec's defaults (2 rows, 8 blocks); T = 8: 129 against
# 155 us (H200)
EXPERT_VARIANT = (4, 2, 16)
# MXFP4 (gpt-oss) experts: 8 rows per warp share each x chunk's loads and rearrangement, and
# the kernel is bound by instruction issue on these shapes (ncu: 61 % issue-busy, DRAM 33 %
# at locked clocks): gate+up at T = 1 15.5 against 16.1 us, down 9.8 against 10.1 (H200)
EXPERT_VARIANT_MXFP4 = (8, 2, 16)


def _expert_variant(w: QuantWeight) -> tuple[int, int, int]:
    return EXPERT_VARIANT_MXFP4 if w.qtype == GGMLType.MXFP4 else EXPERT_VARIANT


ROWS_PER_WARP_MIN_ROWS = 16384  # below this, one row per warp keeps enough warps in flight
SPLIT_MIN_SEGMENTS = 4  # rows of at least 4 segments (128 chunks) are split over 4 warps


def _x_smem(cols: int) -> int:
    """Dynamic shared memory of qmatvec_pipe: x as [chunks][33] floats."""
    return (cols // 32) * 33 * 4


def _pipe_smem(w: QuantWeight, r: int) -> int:
    """Static staging (4 warps x r rows x padded segment) plus the staged x, in bytes."""
    layout = LAYOUTS[w.qtype]
    seg = 4 * layout.block_bytes if layout.block_elems == 256 else 32 * layout.block_bytes
    seg_pad = ((seg + 15) // 16 + 1) * 16
    return 4 * r * seg_pad + _x_smem(w.cols)


@functools.cache
def _num_sms() -> int:
    import cupy

    return int(cupy.cuda.Device().attributes["MultiProcessorCount"])


_PDL: contextvars.ContextVar[bool] = contextvars.ContextVar("orcd_pdl", default=False)


@contextlib.contextmanager
def programmatic_launches(enabled: bool = True) -> Iterator[None]:
    """Inside the block, the int8 products and the q8_1 rounding launch with programmatic
    dependent launch (kernels/_launch.py ``launch_pdl``): each may start while the kernel
    before it finishes, its first weight copies already streaming. Meant for sequences that
    are captured into a CUDA graph (cuLaunchKernelEx from Python costs more host time per
    eager launch than CuPy's launcher); the results are bit-identical either way."""
    token = _PDL.set(enabled)
    try:
        yield
    finally:
        _PDL.reset(token)


def _launch(fn: Any, grid: tuple[int, int, int], args: tuple[Any, ...], smem: int,
            stream: Any, *, pdl: bool = True) -> None:
    """``pdl`` False: a plain launch even inside :func:`programmatic_launches` (the expert
    products, whose weights depend on the routing kernel's ids: launched early, their blocks
    would only wait, holding SM slots; gpt-oss's MoE FFN at T = 1 took 38.9 us that way
    against 31.6 us, H200)."""
    if pdl and _PDL.get():
        launch_pdl(fn, grid, (128, 1, 1), args, shared_mem=smem, stream=stream)
        return
    with on_stream(stream):
        fn(grid, (128,), args, shared_mem=smem)


# cap the int8 grids at the blocks that are resident at once (benchmarks turn it off to
# measure the uncapped grid)
OCCUPANCY_CAP = True


def resident_blocks(expr: str, qtype: int, smem: int, threads: int = 128) -> int:
    """Blocks of kernel ``expr`` (with ``smem`` bytes of dynamic shared memory) that one SM
    of the current device holds at once, as the driver computes it from registers, shared
    memory and warps. Every int8 grid is capped at this many blocks per SM, an explicit
    ``ctas_per_sm`` too, unless ``OCCUPANCY_CAP`` is False.

    The int8 grids are balanced so every warp walks the same number of row groups; a grid
    larger than what is resident runs a second, partial wave that pays a whole block's
    latency chain again for a fraction of the bytes (gpt-oss's expert gate+up at T = 1 asked
    for 1440 blocks of 4 rows and 2 stages, and 9 per SM, 1188, fit on an H200)."""
    import cupy

    return _resident_blocks(int(cupy.cuda.Device().id), expr, int(qtype), int(smem), threads)


@functools.cache
def _resident_blocks(device: int, expr: str, qtype: int, smem: int, threads: int) -> int:
    from cupy.cuda import driver

    fn = _fn(expr, qtype)
    return max(1, int(driver.occupancyMaxActiveBlocksPerMultiprocessor(fn.kernel.ptr, threads,
                                                                        smem)))


def _matvec_variant(w: QuantWeight, nb: int, rows_per_warp: int | None,
                    warps_per_row: int | None) -> tuple[int, int]:
    """(rows per warp, warps per row): tall matrices (the vocabulary) give each warp 4 rows
    so an x chunk in registers serves 4 rows; short, wide ones (ffn_down) split each row's
    segments over 4 warps, else too few warps stream too few bytes at a time."""
    many_rows = w.rows >= ROWS_PER_WARP_MIN_ROWS
    r = rows_per_warp or (4 if nb == 1 and many_rows else 1)
    segments = -(-(w.cols // 32) // 32)
    ks = warps_per_row or (4 if nb > 1 or (not many_rows and segments >= SPLIT_MIN_SEGMENTS) else 1)
    if (nb, r, ks) not in cuda_modules.MATVEC_VARIANTS:
        raise KernelError(f"no matvec variant for {nb} vectors, {r} rows/warp, {ks} warps/row")
    return r, ks


def _use_q8(w: QuantWeight, n: int, q8_activations: bool | None) -> bool:
    block = int(w.qtype) in cuda_modules.BLOCK_QTYPE_IDS
    if q8_activations is None:
        return block and n <= Q8_MAX_BATCH
    if q8_activations and not block:
        raise KernelError(f"{w.qtype.name} weights have no int8 (q8_1 activation) kernel")
    return bool(q8_activations)


def _q8_stage_bytes(w: QuantWeight, r: int, stages: int) -> int:
    """Static shared memory of qmatvec_q8: 4 warps x stages x r rows x padded segment."""
    layout = LAYOUTS[w.qtype]
    seg = 4 * layout.block_bytes if layout.block_elems == 256 else 32 * layout.block_bytes
    return 4 * stages * r * (((seg + 15) // 16 + 2) * 16)


def _q8_variant(w: QuantWeight, nb: int, rows_per_warp: int | None, stages: int | None,
                warps_per_row: int | None) -> tuple[int, int, int]:
    """(rows per warp, ring stages, warps per row group) of qmatvec_q8 for nb vectors."""
    if nb > 1:
        r, st, ks = rows_per_warp or 1, stages or 4, warps_per_row or 1
    else:
        # KS = 4 (4 warps share a row group) measured slower than 1 on every shape (H200:
        # 896x4864 Q8_0 14.5 us against 11.0): kept as a variant, not a default
        ks = warps_per_row or 1
        r = rows_per_warp or (1 if ks > 1 else
                              next(r for lim, r in Q8_ROWS_PER_WARP_BY_ROWS if w.rows >= lim))
        st = stages or (2 if r >= 4 else 4)
    if (r, nb, st, ks) not in cuda_modules.q8_variants(int(w.qtype)):
        raise KernelError(f"int8 matvec has no variant of {r} rows/warp, {nb} vectors, "
                          f"{st} stages, {ks} warps/row")
    return r, st, ks


def quantize_activations(xq: Any, x: Any, *, stream: Any = None) -> Q8Activations:
    """Round ``x`` [n, cols] to q8_1 into the preallocated uint32 ``xq`` [n, q8_words(cols)]
    (one launch), exactly as the int8 matvec's own prologue does; pass the result as
    ``x_q8`` to :func:`matvec` / :func:`expert_matvec`."""
    check(x, "x", np.float32, (None, None))
    n, cols = x.shape
    if cols % 32:
        raise KernelError(f"q8_1 activations need a multiple of 32 columns, got {cols}")
    check(xq, "xq", np.uint32, (n, q8_words(cols)))
    chunks = n * (cols // 32)
    # one chunk per warp where the vector allows it: the rounding is a latency chain, and one
    # block of 4 warps doing 7 chunks each took ~2.5 us for 896 values (H200)
    blocks = max(1, min(cdiv(chunks, 4), _num_sms() * 8))
    _launch(_fn("quantize_q8_1", int(GGMLType.Q8_0)), (blocks, 1, 1),
            (x, xq, np.int32(n), np.int32(cols)), 0, stream)
    return Q8Activations(xq, n, cols)


def contiguous_rows(a: Any) -> bool:
    """Whether the 2-D float32 array ``a`` has unit column stride and rows at least a row
    apart (a C-contiguous array, or one half of a fused gate/up output): what
    :func:`swiglu_rounded` reads in place."""
    n, cols = a.shape
    return a.strides[1] == 4 and (n < 2 or (a.strides[0] % 4 == 0 and a.strides[0] >= 4 * cols))


def swiglu_rounded(act: Any, gate: Any, up: Any, xq: Any, *, oai: bool = False,
                   alpha: float = SWIGLU_OAI_ALPHA, limit: float = SWIGLU_OAI_LIMIT,
                   stream: Any = None) -> Q8Activations:
    """``act = swiglu(gate, up)`` (``oai``: gpt-oss's clamped form with ``alpha`` and
    ``limit``), computed as ``kernels.activations`` does, and act rounded to q8_1 into ``xq``
    [n, q8_words(cols)] exactly as :func:`quantize_activations` would, in one launch: the
    down projection then reads the rounding (``x_q8``, or through :class:`SharedActivations`)
    with no quantize launch between the activation and the product. gate, up: float32 [n,
    cols] with contiguous rows (the two halves of a fused gate/up output are read in place);
    act: float32 [n, cols], C-contiguous."""
    check(gate, "gate", np.float32, (None, None), contiguous=False)
    n, cols = gate.shape
    check(up, "up", np.float32, (n, cols), contiguous=False)
    check(act, "act", np.float32, (n, cols))
    lds = []
    for name, a in (("gate", gate), ("up", up)):
        if not contiguous_rows(a):
            raise KernelError(f"{name} needs contiguous rows of {cols} floats, got strides "
                              f"{tuple(a.strides)}")
        lds.append(np.int64(a.strides[0] // 4 if n > 1 else cols))
    if cols % 32:
        raise KernelError(f"q8_1 activations need a multiple of 32 columns, got {cols}")
    check(xq, "xq", np.uint32, (n, q8_words(cols)))
    chunks = n * (cols // 32)
    if chunks:
        blocks = max(1, min(cdiv(chunks, 4), _num_sms() * 8))
        _launch(_fn(f"swiglu_q8_1<{int(oai)}>", int(GGMLType.Q8_0)), (blocks, 1, 1),
                (gate, up, act, xq, np.int32(n), np.int32(cols), lds[0], lds[1],
                 np.float32(alpha), np.float32(limit)), 0, stream)
    return Q8Activations(xq, n, cols)


def _check_q8(x_q8: Q8Activations | None, rows: int, cols: int) -> None:
    if x_q8 is None:
        return
    if (x_q8.rows, x_q8.cols) != (rows, cols):
        raise KernelError(f"x_q8 holds [{x_q8.rows}, {x_q8.cols}] activations, the product "
                          f"needs [{rows}, {cols}]")
    check(x_q8.data, "x_q8.data", np.uint32, (rows, q8_words(cols)))


def _q8_blocks(groups: int, cap: int, ks: int) -> int:
    """Blocks per product of qmatvec_q8 for ``groups`` row groups, at most ``cap``. With one
    warp per group (KS = 1): as few blocks as keep the most groups any warp walks as low as
    the capped grid would, so the warps get equal shares (2880 rows of 4 over a cap of 528
    warps gave 192 warps 2 groups and 336 one; the slowest warp sets the time)."""
    if ks > 1:
        return min(groups, cap)
    per_warp = cdiv(groups, 4 * cap)
    return cdiv(groups, 4 * per_warp)


# qmatvec_q8_rows (an item is a whole group of rows; cuda/quant.cu) serves every product at
# batch 1 (dense and expert) whose ring fits the block's shared memory; the segment kernel
# (qmatvec_q8) batches of 2-8 vectors. Interleaved A/B on an H200 (kernel_ab.py, us, segment
# kernel -> row groups): Q5_0 128x896 2.26 -> 2.23, Q8_0 512x2880 3.71 -> 3.30, Q4_K
# 1536x1536 3.44 -> 3.13, 3072x3072 5.14 -> 4.49, Q8_0 2880x2880 6.08 -> 5.51, Q5_0 896x896
# 2.53 -> 2.53 (all Q8_ROWS_SHORT); Q6_K 896x4864 5.47 -> 4.49, 1536x8960 8.73 -> 7.82,
# 3072x8192 11.13 -> 9.87, Q4_K 3072x8192 8.28 -> 7.36, Q8_0 2880x4096 6.85 -> 6.05
# (Q8_ROWS_WIDE)
# (rows per group, ring stages, bulk copies) of qmatvec_q8_rows: each item staged by one bulk
# (TMA) copy from lane 0, 4 rows, 2 stages; tall Q8_0 matrices (the cheapest decode) 8 rows
# through every lane's cp.async. Interleaved A/B on an H200 (scripts/kernel_ab.py,
# docs/kernels.md): gpt-oss expert gate+up at T = 1 14.5 us (segment kernel 15.5), MXFP4
# 201088x2880 86.5 us (107.5), Q6_K 151936x1536 58.2 (71.6); Q8_0 151936x896 37.3 us with 8
# rows and cp.async (bulk, 4 rows: 39.1; segment: 40.1), but 4096x2880 Q8_0 6.9 us that way
# against 6.4 with the default
Q8_ROWS_DEFAULT = (4, 2, True)
# dense matrices of fewer rows than Q8_ROWS_SHORT_BELOW: 2 rows per group (twice the items
# for the warps of a short matrix; 4096x2880 Q8_0 6.45 us with 4 rows, 6.54 with 2)
Q8_ROWS_SHORT = (2, 2, True)
Q8_ROWS_SHORT_BELOW = 4096
# type -> (from this many rows, variant)
Q8_ROWS_BY_TYPE: dict[GGMLType, tuple[int, tuple[int, int, bool]]] = {
    GGMLType.Q8_0: (16384, (8, 2, False)),
}
# None: the table above decides bulk copies; True / False turns them on / off (benchmarks;
# a variant not compiled that way is not run: the segment kernel serves the product unless
# row_groups=True, which raises)
Q8_ROWS_BULK: bool | None = None
# Rows of more than Q8_ROWS_MAX_CHUNKS chunks (the down projections) run the variants that
# read x's chunks from shared memory (NCH = 0) with this (rows per group, stages, bulk): one
# row per item, as the wide rows are few and long (2 rows: Q6_K 1536x8960 9.35 us against
# 7.84, Q8_0 896x4864 4.11 against 4.33)
Q8_ROWS_WIDE = (1, 2, True)
# None: x in registers where the row allows it (NCH = 3), else in shared memory; True: always
# in shared memory (tests and benchmarks run the wide variants on narrow rows too)
Q8_ROWS_X_SHARED: bool | None = None


def _rows_nch(w: QuantWeight) -> int:
    """x chunks per lane held in registers by qmatvec_q8_rows for w (0: x in shared memory)."""
    return 0 if Q8_ROWS_X_SHARED or w.cols // 32 > cuda_modules.Q8_ROWS_MAX_CHUNKS else 3


def q8_rows_slot(w: QuantWeight, r: int) -> int:
    """Bytes of one ring slot of qmatvec_q8_rows: r rows from a 16-byte floor (up to 15 bytes
    before the group), plus one 16-byte vector that ld_words may read past a chunk."""
    return 16 * ((r * w.row_bytes + 15) // 16 + 2)


def _q8_rows_smem(w: QuantWeight, r: int, st: int, rounds_x: bool) -> int:
    """Dynamic shared memory of qmatvec_q8_rows: 4 warps x st slots, then (NCH = 0) x's q8_1
    chunks padded to 48 bytes, then x's rounding when the block rounds x itself."""
    chunks = w.cols // 32
    padded = chunks * Q8_XQ_WIDE_BYTES if _rows_nch(w) == 0 else 0
    return 4 * st * q8_rows_slot(w, r) + padded + (chunks * Q8_XQ_BYTES if rounds_x else 0)


def smem_optin() -> int:
    """Shared memory one block of the current device may opt in to (227 KiB on H100/H200)."""
    import cupy

    return _smem_optin(int(cupy.cuda.Device().id))


@functools.cache
def _smem_optin(device: int) -> int:
    import cupy

    return int(cupy.cuda.Device(device).attributes["MaxSharedMemoryPerBlockOptin"])


def _rows_variant(w: QuantWeight, rows_per_warp: int | None,
                  stages: int | None) -> tuple[int, int, bool]:
    """(rows per group, stages, bulk copies) of qmatvec_q8_rows for w, with overrides."""
    min_rows, variant = Q8_ROWS_BY_TYPE.get(w.qtype, (0, Q8_ROWS_DEFAULT))
    r, st, bulk = variant if w.rows >= min_rows else Q8_ROWS_DEFAULT
    if _rows_nch(w) == 0:
        r, st, bulk = Q8_ROWS_WIDE
    elif w.num_experts == 0 and w.rows < Q8_ROWS_SHORT_BELOW:
        r, st, bulk = Q8_ROWS_SHORT
    return rows_per_warp or r, stages or st, bulk if Q8_ROWS_BULK is None else Q8_ROWS_BULK


def _use_rows(w: QuantWeight, nb: int, r: int, st: int, bulk: bool, ks: int, rounds_x: bool,
              row_groups: bool | None) -> bool:
    """Whether this product runs qmatvec_q8_rows (``row_groups`` None: the policy above;
    True: it must, else a typed error; False: never)."""
    if row_groups is False:
        return False
    compiled = (cuda_modules.Q8_ROWS_BULK_VARIANTS if bulk
                else cuda_modules.Q8_ROWS_VARIANTS)
    why = None
    if nb != 1 or ks != 1:
        why = "one vector per product and one warp per row group"
    elif (r, _rows_nch(w), st) not in compiled:
        why = (f"a variant of {r} rows per group and {st} stages "
               f"({'bulk copies' if bulk else 'cp.async'}) for x "
               + ("in shared memory" if _rows_nch(w) == 0 else "in registers"))
    # the opt-in limit counts the static part too: with bulk copies an mbarrier per warp and
    # stage (8 bytes without)
    elif _q8_rows_smem(w, r, st, rounds_x) + (32 * st if bulk else 8) > smem_optin():
        why = "a ring that fits one block's shared memory"
    if row_groups:
        if why is not None:
            raise KernelError(f"the row-group int8 matvec needs {why}")
        return True
    return why is None


def _rows_fn(expr: str, qtype: int, smem: int) -> Any:
    """The kernel, allowed ``smem`` bytes of dynamic shared memory (above the 48 KiB default
    a kernel must opt in before it is launched or its occupancy queried)."""
    fn = _fn(expr, qtype)
    if smem > 48 * 1024:
        import cupy

        _opt_in(int(cupy.cuda.Device().id), expr, int(qtype), smem)
    return fn


@functools.cache
def _opt_in(device: int, expr: str, qtype: int, smem: int) -> None:
    """Raise the kernel's dynamic shared memory limit on ``device`` (the current one) once:
    an attribute read or write is a driver call, not something for every launch."""
    fn = _fn(expr, qtype)
    if fn.max_dynamic_shared_size_bytes < smem:
        fn.max_dynamic_shared_size_bytes = smem


def _q8_launch(out: Any, x: Any, w: QuantWeight, bias: Any, stream: Any, *, nb: int = 1,
               rows_per_warp: int | None = None, stages: int | None = None,
               warps_per_row: int | None = None, ctas_per_sm: int | None = None,
               pairs: int = 1, expert_ids: Any = None, x_div: int = 1, x_stride: int = 0,
               y_stride: int = 0, xq: Any = None, xq_out: Any = None,
               second: tuple[Any, QuantWeight, Any] | None = None,
               row_groups: bool | None = None) -> None:
    """One launch of qmatvec_q8 (or qmatvec_q8_rows, see :func:`_use_rows`): nb input
    vectors, or one per (token, slot) pair (MoE).

    ``xq_out``: block 0 also stores its rounding of x there (dense products, no ``xq``).
    ``second`` = (out2, w2, bias2): a second matrix of w's type and shape read with the same
    x in the same grid (grid.y doubles; MoE gate and up).
    """
    if row_groups is None and (rows_per_warp, stages, warps_per_row) != (None, None, None):
        row_groups = False  # variant overrides name a segment-kernel variant unless forced
    r, st, bulk = _rows_variant(w, rows_per_warp, stages)
    rows_kernel = _use_rows(w, nb, r, st, bulk, warps_per_row or 1, xq is None, row_groups)
    if rows_kernel:
        ks = 1
        smem = _q8_rows_smem(w, r, st, xq is None)
    else:
        if expert_ids is not None:  # the segment kernel's expert variant unless overridden
            er, est, eper_sm = _expert_variant(w)
            rows_per_warp, stages = rows_per_warp or er, stages or est
            ctas_per_sm = ctas_per_sm or eper_sm
        r, st, ks = _q8_variant(w, nb, rows_per_warp, stages, warps_per_row)
        smem = nb * (w.cols // 32) * Q8_XQ_BYTES
        if smem + _q8_stage_bytes(w, r, st) > 48 * 1024:
            raise KernelError(f"int8 matvec: {nb} x {w.cols} columns exceed the 48 KiB of "
                              "shared memory")
    if int(w.data.data.ptr) % 16:
        raise KernelError("int8 matvec needs 16-byte aligned weight data")
    if w.matrix_bytes >= 2**32:
        raise KernelError("int8 matvec: one weight matrix must be under 4 GiB (32-bit offsets)")
    if second is not None:
        w2 = second[1]
        if (w2.qtype, w2.rows, w2.cols, w2.num_experts) != (w.qtype, w.rows, w.cols,
                                                             w.num_experts):
            raise KernelError("a fused pair of products needs two weights of one type and shape")
        if int(w2.data.data.ptr) % 16:
            raise KernelError("int8 matvec needs 16-byte aligned weight data")
    mats = 1 if second is None else 2
    if pairs * mats > MAX_GRID_Y:
        raise KernelError(f"int8 matvec: {pairs * mats} (token, slot) products exceed the grid")
    if rows_kernel:
        expr = f"qmatvec_q8_rows<{int(w.qtype)},{r},{_rows_nch(w)},{st},{int(bulk)}>"
        fn = _rows_fn(expr, int(w.qtype), smem)
    else:
        expr = f"qmatvec_q8<{int(w.qtype)},{r},{nb},{st},{ks}>"
        fn = _fn(expr, w.qtype)
    per_sm = ctas_per_sm or Q8_CTAS_PER_SM
    if OCCUPANCY_CAP:
        per_sm = min(per_sm, resident_blocks(expr, int(w.qtype), smem))
    groups = cdiv(w.rows, r)
    blocks = _q8_blocks(groups, max(1, _num_sms() * per_sm // (pairs * mats)), ks)
    out2, w2d, b2 = (NULL, NULL, NULL) if second is None else (
        second[0], second[1].data, NULL if second[2] is None else second[2])
    args = (w.data, x, out, NULL if bias is None else bias, np.int32(w.rows), np.int32(w.cols),
            np.int64(w.row_bytes), NULL if expert_ids is None else expert_ids,
            np.int64(w.matrix_bytes), np.int32(x_div), np.int64(x_stride), np.int64(y_stride),
            NULL if xq is None else xq, NULL if xq_out is None else xq_out,
            w2d, b2, out2, np.int32(pairs))
    if rows_kernel:
        args += (np.int32(q8_rows_slot(w, r)),)
    _launch(fn, (blocks, pairs * mats, 1), args, smem, stream, pdl=expert_ids is None)


def _q8_batches(w: QuantWeight, n: int) -> list[int]:
    """Vectors per launch for n vectors: 8/4/2/1 as the q8 x staging fits shared memory."""
    out = []
    while n:
        nb = next(b for b in (8, 4, 2, 1) if b <= n and (b == 1 or (
            b * (w.cols // 32) * Q8_XQ_BYTES + _q8_stage_bytes(w, 1, 4) <= 48 * 1024)))
        out.append(nb)
        n -= nb
    return out


def matvec(out: Any, x: Any, w: QuantWeight, bias: Any = None, *, stream: Any = None,
           rows_per_warp: int | None = None, warps_per_row: int | None = None,
           pipelined: bool = True, q8_activations: bool | None = None,
           stages: int | None = None, ctas_per_sm: int | None = None,
           x_q8: Q8Activations | None = None, x_q8_out: Q8Activations | None = None,
           row_groups: bool | None = None) -> None:
    """``out[n, rows] = x[n, cols] @ W.T (+ bias)`` for small n (memory-bound decode path).

    Block types at n <= ``Q8_MAX_BATCH`` (or with ``q8_activations=True``): the int8 kernel,
    up to 8 vectors per launch (W read once for them), x rounded to q8_1 (see the module
    docstring for the numerics).
    Otherwise (``q8_activations=False``, F32/F16/BF16 weights, larger n) the f32 kernels:
    one vector of a block type goes to the pipelined kernel (loads of the next segment in
    flight while the current one is decoded), batches are split into launches of 8/4/2/1
    vectors, each reading W once. ``rows_per_warp`` / ``warps_per_row`` / ``pipelined`` /
    ``stages`` / ``ctas_per_sm`` override the automatic choice (benchmarks).

    ``x_q8`` (from :func:`quantize_activations` on this x): the int8 kernel reads the rounded
    x from it instead of rounding x in every block (same numbers; faster on wide matrices and
    when several products share x).

    ``x_q8_out`` (no ``x_q8``): the int8 kernel's first block also stores its rounding of x
    there, as :func:`quantize_activations` would (same words, both block sums), at no extra
    launch: the next products of this x pass it as ``x_q8``.

    ``row_groups``: the int8 kernel whose items are whole groups of rows (qmatvec_q8_rows;
    None: at batch 1 where its ring fits shared memory (x's chunks in registers up to 3072
    columns, in shared memory beyond), True: required, False: the segment kernel). Both give
    the same bits. ``rows_per_warp`` / ``stages`` with ``row_groups`` None pick a
    segment-kernel variant, with True a row-group one.
    """
    n = _check_linear(out, x, w, bias)
    if w.num_experts:
        raise KernelError("matvec takes a single matrix; use expert_matvec for expert stacks")
    _check_q8(x_q8, n, w.cols)
    _check_q8(x_q8_out, n, w.cols)
    use_q8 = _use_q8(w, n, q8_activations)
    if x_q8_out is not None and (x_q8 is not None or not use_q8):
        raise KernelError("x_q8_out needs the int8 path rounding x itself (no x_q8)")
    if use_q8:
        start = 0
        for nb in _q8_batches(w, n):
            xi, oi = (x, out) if nb == n else (x[start:start + nb], out[start:start + nb])
            xqi = None if x_q8 is None else x_q8.data[start:start + nb]
            xqo = None if x_q8_out is None else x_q8_out.data[start:start + nb]
            _q8_launch(oi, xi, w, bias, stream, nb=nb, rows_per_warp=rows_per_warp,
                       stages=stages, warps_per_row=warps_per_row, ctas_per_sm=ctas_per_sm,
                       xq=xqi, xq_out=xqo, row_groups=row_groups)
            start += nb
        return
    r = rows_per_warp or (4 if w.rows >= ROWS_PER_WARP_MIN_ROWS else 1)
    use_pipe = (pipelined and int(w.qtype) in cuda_modules.BLOCK_QTYPE_IDS
                and _pipe_smem(w, r) <= 48 * 1024)
    if n > 1 and use_pipe and w.rows >= ROWS_PER_WARP_MIN_ROWS and rows_per_warp is None:
        # tall matrices (the vocabulary): one pipelined launch per vector beats the
        # multi-vector kernel (H200, 151936x896 Q8_0: 8 x 57 us against 1319 us for 8)
        for i in range(n):
            matvec(out[i:i + 1], x[i:i + 1], w, bias, stream=stream, q8_activations=False)
        return
    if n == 1 and use_pipe:
        if r not in cuda_modules.PIPE_ROWS_PER_WARP:
            raise KernelError(f"pipelined matvec has no {r} rows/warp variant")
        groups = cdiv(w.rows, r)
        blocks = min(cdiv(groups, 4), _num_sms() * (4 if r == 4 else 8))
        with on_stream(stream):
            _fn(f"qmatvec_pipe<{int(w.qtype)},{r}>", w.qtype)(
                (blocks,), (128,),
                (w.data, x, out, NULL if bias is None else bias, np.int32(w.rows),
                 np.int32(w.cols), np.int64(w.row_bytes)),
                shared_mem=_x_smem(w.cols),
            )
        return
    with on_stream(stream):
        start = 0
        while start < n:
            nb = next(b for b in (8, 4, 2, 1) if b <= n - start)
            r, ks = _matvec_variant(w, nb, rows_per_warp, warps_per_row)
            grid = (cdiv(w.rows, (4 // ks) * r), 1, 1)
            _fn(f"qmatvec<{int(w.qtype)},{nb},{r},{ks}>", w.qtype)(
                grid, (128,),
                (w.data, x[start:], out[start:], NULL if bias is None else bias,
                 np.int32(w.rows), np.int32(w.cols), np.int64(w.row_bytes),
                 NULL, np.int64(0), np.int32(1), np.int64(0), np.int64(0)),
            )
            start += nb


def matmul(out: Any, x: Any, w: QuantWeight, bias: Any = None, *, stream: Any = None) -> None:
    """``out[n, rows] = x[n, cols] @ W.T (+ bias)`` on tensor cores (prefill path).

    x is rounded to f16 inside the kernel (weights are dequantized exactly, then rounded to
    f16 too); accumulation is f32.
    """
    n = _check_linear(out, x, w, bias)
    if w.num_experts:
        raise KernelError("matmul takes a single matrix")
    grid = (cdiv(w.rows, 128), cdiv(n, 64), 1)
    with on_stream(stream):
        _fn(f"qmatmul_mma<{int(w.qtype)}>", w.qtype)(
            grid, (128,),
            (w.data, x, out, NULL if bias is None else bias, np.int32(w.rows), np.int32(w.cols),
             np.int64(w.row_bytes), np.int32(n)),
        )


def linear(out: Any, x: Any, w: QuantWeight, bias: Any = None, *, stream: Any = None) -> None:
    """The linear layer of the forward pass: matvec up to 8 tokens (int8 path for the block
    types, see the module docstring), tensor-core matmul above."""
    if x.shape[0] <= MATVEC_MAX_BATCH:
        matvec(out, x, w, bias, stream=stream)
    else:
        matmul(out, x, w, bias, stream=stream)


def expert_matvec(
    out: Any,
    x: Any,
    w: QuantWeight,
    expert_ids: Any,
    *,
    x_per_slot: bool,
    bias: Any = None,
    stream: Any = None,
    q8_activations: bool | None = None,
    x_q8: Q8Activations | None = None,
    row_groups: bool | None = None,
    rows_per_warp: int | None = None,
    stages: int | None = None,
) -> None:
    """MoE expert products reading only the selected experts.

    ``expert_ids`` int32 [T, k]; ``w`` a stack [E, rows, cols]; ``out`` [T, k, rows].
    With ``x_per_slot`` False, x is [T, cols] (every slot of token t reads x[t]: gate/up);
    with True, x is [T, k, cols] (down projection of each slot's own activation).
    ``bias`` [E, rows] is added for the selected expert. Block types use the int8 kernel
    (x rounded to q8_1 per (token, slot)) unless ``q8_activations`` is False; ``x_q8`` is x
    already rounded by :func:`quantize_activations` (x viewed as [T, cols] or [T * k, cols]).
    ``row_groups`` as for :func:`matvec` (None: the row-group kernel wherever it applies,
    unless ``rows_per_warp`` / ``stages`` are given: they override the int8 variant of the
    segment kernel, or with ``row_groups=True`` of the row-group kernel; benchmarks).
    """
    if not w.num_experts:
        raise KernelError("expert_matvec needs an expert stack [E, rows, row_bytes]")
    check(expert_ids, "expert_ids", np.int32, (None, None))
    t, k = expert_ids.shape
    check(out, "out", np.float32, (t, k, w.rows))
    if x_per_slot:
        check(x, "x", np.float32, (t, k, w.cols))
    else:
        check(x, "x", np.float32, (t, w.cols))
    if bias is not None:
        check(bias, "bias", np.float32, (w.num_experts, w.rows))
    block = int(w.qtype) in cuda_modules.BLOCK_QTYPE_IDS
    if q8_activations is None:
        q8_activations = block
    if q8_activations:
        if not block:
            raise KernelError(f"{w.qtype.name} weights have no int8 (q8_1 activation) kernel")
        _check_q8(x_q8, t * k if x_per_slot else t, w.cols)
        _q8_launch(out, x, w, bias, stream, pairs=t * k, expert_ids=expert_ids,
                   x_div=1 if x_per_slot else k, x_stride=w.cols, y_stride=w.rows,
                   xq=None if x_q8 is None else x_q8.data, rows_per_warp=rows_per_warp,
                   stages=stages, row_groups=row_groups)
        return
    _, ks = _matvec_variant(w, 1, 1, None)
    with on_stream(stream):
        _fn(f"qmatvec<{int(w.qtype)},1,1,{ks}>", w.qtype)(
            (cdiv(w.rows, 4 // ks), t * k, 1), (128,),
            (w.data, x, out, NULL if bias is None else bias, np.int32(w.rows), np.int32(w.cols),
             np.int64(w.row_bytes), expert_ids, np.int64(w.matrix_bytes),
             np.int32(1 if x_per_slot else k), np.int64(w.cols), np.int64(w.rows)),
        )


# an activation of at least this many columns is rounded by its own launch
# (quantize_activations) before its first int8 product; narrower ones are rounded inside the
# first product, whose block 0 stores the rounding for the next (H200, batch 1: the in-kernel
# rounding is repeated by every block, which costs more than a launch once x is wide: 896x4864
# Q8_0 10.1 us in-kernel against 9.1 us as two launches, 3072x8192 Q4_K 18.8 against 14.2;
# at 896 and 1536 columns the extra launch loses: 896x896 3.7 against 5.3 us)
Q8_PREQUANT_MIN_COLS = 2048


def q8_plan(n: int, cols: int, qtype: int, shared: bool) -> str:
    """How a decode product of ``n`` vectors of ``cols`` values by a ``qtype`` matrix gets its
    q8_1 x (what :class:`SharedActivations` does): "f32" (no int8 path: float weights or
    more than ``Q8_MAX_BATCH`` vectors), "shared" (x was rounded already), "prequant" (round
    x by its own launch, then the product), "inline" (the product rounds x and stores the
    rounding for the next product of the same x)."""
    if int(qtype) not in cuda_modules.BLOCK_QTYPE_IDS or n > Q8_MAX_BATCH or n == 0:
        return "f32"
    if shared:
        return "shared"
    return "prequant" if cols >= Q8_PREQUANT_MIN_COLS else "inline"


class SharedActivations:
    """Each activation rounded to q8_1 once, for every int8 product that reads it.

    A decoder layer multiplies one x by several matrices (q, k and v; gate and up; the MoE
    experts): the int8 kernels would round x again in every launch (and in every block of
    it). This keeps, per activation width, one device uint32 buffer (grown to the next power
    of two of rows when a larger batch comes) and the array whose rounding it holds; a product
    of the same array object reads the buffer (``x_q8``), a product of another array of that
    width rounds into it again. The numbers are those of the kernels' own rounding, bit for
    bit. Arrays are recognized by identity, and the entry holds a reference so the identity
    cannot be reused: callers must not modify an activation in place after a product has
    read it (GpuBackend's ops never do). All launches must go to one stream (a rounding is
    overwritten only after the products enqueued before it).

    ``alloc(shape)`` returns an uninitialised device uint32 array.
    """

    def __init__(self, alloc: Any) -> None:
        self._alloc = alloc
        self._bufs: dict[int, Any] = {}
        self._held: dict[int, tuple[Any, Q8Activations]] = {}
        self.launches_saved = 0  # products that read a rounding made for an earlier one

    def lookup(self, x: Any) -> Q8Activations | None:
        """The rounding of this very array, if a product of it made one."""
        hit = self._held.get(int(x.shape[1]))
        return hit[1] if hit is not None and hit[0] is x else None

    def claim(self, x: Any) -> Q8Activations:
        """The buffer of x's width, recorded as holding x's rounding (the caller fills it)."""
        n, cols = int(x.shape[0]), int(x.shape[1])
        buf = self._bufs.get(cols)
        if buf is None or buf.shape[0] < n:
            cap = 1 << max(0, n - 1).bit_length()
            buf = self._bufs[cols] = self._alloc((cap, q8_words(cols)))
        qa = Q8Activations(buf[:n], n, cols)
        self._held[cols] = (x, qa)
        return qa

    def clear(self) -> None:
        """Forget every recorded rounding (buffers stay allocated)."""
        self._held.clear()

    def rounded(self, x: Any, *, stream: Any = None) -> Q8Activations:
        """x [n, cols] as q8_1: the recorded rounding, else one quantize launch into the
        buffer."""
        qa = self.lookup(x)
        if qa is not None:
            self.launches_saved += 1
            return qa
        return quantize_activations(self.claim(x).data, x, stream=stream)

    def linear(self, out: Any, x: Any, w: QuantWeight, bias: Any = None, *,
               stream: Any = None) -> None:
        """:func:`linear` with x's rounding shared across products (see :func:`q8_plan`)."""
        n, cols = int(x.shape[0]), int(x.shape[1])
        plan = q8_plan(n, cols, int(w.qtype), self.lookup(x) is not None)
        if plan == "f32":
            linear(out, x, w, bias, stream=stream)
        elif plan == "inline":
            matvec(out, x, w, bias, stream=stream, x_q8_out=self.claim(x))
        else:
            matvec(out, x, w, bias, stream=stream, x_q8=self.rounded(x, stream=stream))


def expert_gate_up(gate_out: Any, up_out: Any, x: Any, gate_w: QuantWeight, up_w: QuantWeight,
                   expert_ids: Any, *, gate_bias: Any = None, up_bias: Any = None,
                   stream: Any = None, x_q8: Q8Activations | None = None,
                   rows_per_warp: int | None = None, stages: int | None = None,
                   ctas_per_sm: int | None = None, row_groups: bool | None = None) -> None:
    """The MoE gate and up products of every selected expert in one int8 launch.

    Equal to ``expert_matvec(gate_out, x, gate_w, ...)`` and ``expert_matvec(up_out, x, up_w,
    ...)`` (x_per_slot False), bit for bit: the same blocks compute the same sums, only the
    grid is shared, so one launch streams both stacks of the k selected experts (gpt-oss-20b:
    8 x 4.4 MB at T = 1) with one ramp and one tail instead of two. Both stacks must be of one
    block type and shape; ``x_q8`` is x rounded by :func:`quantize_activations` (without it
    every block rounds x itself). ``rows_per_warp`` / ``stages`` / ``ctas_per_sm`` override
    the variant, ``row_groups`` the kernel (as for :func:`matvec`; benchmarks).
    """
    for w in (gate_w, up_w):
        if not w.num_experts:
            raise KernelError("expert_gate_up needs expert stacks [E, rows, row_bytes]")
        if int(w.qtype) not in cuda_modules.BLOCK_QTYPE_IDS:
            raise KernelError(f"{w.qtype.name} weights have no int8 (q8_1 activation) kernel")
    if (gate_w.qtype, gate_w.rows, gate_w.cols, gate_w.num_experts) != (
            up_w.qtype, up_w.rows, up_w.cols, up_w.num_experts):
        raise KernelError("a fused pair of products needs two weights of one type and shape")
    check(expert_ids, "expert_ids", np.int32, (None, None))
    t, k = expert_ids.shape
    check(x, "x", np.float32, (t, gate_w.cols))
    for o, w, b, name in ((gate_out, gate_w, gate_bias, "gate"), (up_out, up_w, up_bias, "up")):
        check(o, f"{name}_out", np.float32, (t, k, w.rows))
        if b is not None:
            check(b, f"{name}_bias", np.float32, (w.num_experts, w.rows))
    _check_q8(x_q8, t, gate_w.cols)
    _q8_launch(gate_out, x, gate_w, gate_bias, stream, pairs=t * k, expert_ids=expert_ids,
               x_div=k, x_stride=gate_w.cols, y_stride=gate_w.rows,
               xq=None if x_q8 is None else x_q8.data, second=(up_out, up_w, up_bias),
               rows_per_warp=rows_per_warp, stages=stages, ctas_per_sm=ctas_per_sm,
               row_groups=row_groups)


def embed(out: Any, table: QuantWeight, token_ids: Any, *, stream: Any = None) -> None:
    """``out[t] = dequant(table[token_ids[t]])``: the embedding lookup on a quantized table.

    Ids are not range-checked on the device (that would need a host sync); the engine
    validates token ids at submission.
    """
    check(token_ids, "token_ids", np.int32, (None,))
    n = token_ids.shape[0]
    check(out, "out", np.float32, (n, table.cols))
    _dequant(out, table, token_ids, n, stream)


def dequantize(out: Any, w: QuantWeight, *, stream: Any = None) -> None:
    """The whole matrix as f32 ``out[rows, cols]`` (tests and the cuBLAS comparison)."""
    check(out, "out", np.float32, (w.rows, w.cols))
    _dequant(out, w, None, w.rows, stream)


def _dequant(out: Any, w: QuantWeight, ids: Any, n: int, stream: Any) -> None:
    total = n * (w.cols // 32)
    with on_stream(stream):
        _fn(f"dequant_rows<{int(w.qtype)}>", w.qtype)(
            (cdiv(total, 256),), (256,),
            (w.data, NULL if ids is None else ids, out, np.int32(n), np.int32(w.cols),
             np.int64(w.row_bytes)),
        )


def layout_table() -> dict[int, tuple[int, int]]:
    """(block_elems, block_bytes) per type as the kernels assume them (tests compare with A's)."""
    return {int(t): (LAYOUTS[t].block_elems, LAYOUTS[t].block_bytes) for t in GGMLType}
