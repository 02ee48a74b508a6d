"""CuPy RawModule sources (``kernels/cuda/*.cu``), their template instantiations and NVRTC.

Each source is compiled per tensor type (one RawModule per (source, qtype) pair) so a model
compiles only the types it uses; ``common.cuh`` is prepended rather than ``#include``-d,
because the device machine's NVRTC lacks parts of the CUDA headers (DESIGN.md section 9).

``compile_check`` runs NVRTC directly (``cupy_backends.cuda.libs.nvrtc``) for ``sm_90`` with
no GPU and no driver, which is how CI proves every CUDA source compiles.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from orcd_toolkit.kernels.errors import KernelCompileError

CUDA_DIR = Path(__file__).resolve().parent / "cuda"
NVRTC_OPTIONS: tuple[str, ...] = ("--std=c++17",)

# ggml type ids that the CUDA kernels decode (common.cuh QT_*), same numbers as GGMLType.
QTYPE_IDS: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 30, 39)
MATVEC_BATCHES: tuple[int, ...] = (1, 2, 4, 8)
# block (quantized) types: the ones the pipelined batch-1 matvec serves
BLOCK_QTYPE_IDS: tuple[int, ...] = (2, 3, 6, 7, 8, 12, 13, 14, 39)
PIPE_ROWS_PER_WARP: tuple[int, ...] = (1, 4)
# (rows per warp, vectors per launch, ring stages, warps per row group) instantiations of the
# int8 (q8_1 activation) matvec qmatvec_q8; stage bytes 4 warps x S x R x padded segment stay
# under 48 KiB static
Q8_VARIANTS: tuple[tuple[int, int, int, int], ...] = (
    (1, 1, 4, 1), (2, 1, 4, 1), (4, 1, 2, 1), (1, 1, 4, 4), (2, 1, 4, 4),
    (1, 2, 4, 1), (1, 4, 4, 1), (1, 8, 4, 1),
)
# 8-row groups for the MoE expert type only (MXFP4's 544-byte segments fit 8 rows x 2 stages
# in 48 KiB; Q8_0's 1088-byte ones would not)
Q8_EXPERT_QTYPE = 39
Q8_EXPERT_VARIANTS: tuple[tuple[int, int, int, int], ...] = ((8, 1, 2, 1),)

# (rows per group, x chunks per lane, ring stages) of qmatvec_q8_rows, the batch-1 int8 matvec
# whose items are whole row groups (rows of at most 32 * NCH chunks); its ring is dynamic
# shared memory (4 warps x S x the group's bytes), so 8 rows of 2880 Q8_0 columns fit. Staged
# with every lane's cp.async (Q8_ROWS_VARIANTS) or one bulk copy per item (BULK), the variants
# kept being the defaults and their nearest rivals on an H200 (quant.Q8_ROWS_DEFAULT; 2 rows,
# 3 or 4 stages measured slower on every shape). NCH = 0: any row width, x's chunks read from
# shared memory per chunk (the wide down projections; bulk copies only)
Q8_ROWS_VARIANTS: tuple[tuple[int, int, int], ...] = ((4, 3, 2), (8, 3, 2))
Q8_ROWS_BULK_VARIANTS: tuple[tuple[int, int, int], ...] = (
    (2, 3, 2), (4, 3, 2), (1, 0, 2), (2, 0, 2))
Q8_ROWS_MAX_CHUNKS = 32 * 3  # columns / 32 that qmatvec_q8_rows keeps in registers (NCH = 3)


def q8_variants(qtype: int) -> tuple[tuple[int, int, int, int], ...]:
    """The (R, NB, S, KS) instantiations of qmatvec_q8 compiled for ``qtype``."""
    return Q8_VARIANTS + (Q8_EXPERT_VARIANTS if int(qtype) == Q8_EXPERT_QTYPE else ())


# (vectors per launch, rows per warp, warps per row) instantiations of qmatvec
# (batches of 2-8 always split rows over 4 warps: fewer instantiations to compile, and those
# batches are latency-bound on the narrow matrices where 3 of the 4 warps idle)
MATVEC_VARIANTS: tuple[tuple[int, int, int], ...] = (
    (1, 1, 1), (1, 4, 1), (1, 1, 4), (2, 1, 4), (4, 1, 4), (8, 1, 4),
)
HEAD_DIMS: tuple[int, ...] = (64, 96, 128)
ATTN_ITEMS_PER_WARP = 4


def source(name: str) -> str:
    """The full text NVRTC compiles for ``kernels/cuda/<name>.cu``."""
    common = (CUDA_DIR / "common.cuh").read_text()
    return common + "\n" + (CUDA_DIR / f"{name}.cu").read_text()


def name_expressions(name: str, qtype: int | None = None) -> list[str]:
    """Template instantiations of one module (all types when ``qtype`` is None)."""
    if name == "quant":
        qts = QTYPE_IDS if qtype is None else (qtype,)
        out = [f"qmatvec<{q},{nb},{r},{ks}>" for q in qts for nb, r, ks in MATVEC_VARIANTS]
        out += [f"qmatvec_pipe<{q},{r}>" for q in qts if q in BLOCK_QTYPE_IDS
                for r in PIPE_ROWS_PER_WARP]
        out += [f"qmatvec_q8<{q},{r},{nb},{st},{ks}>" for q in qts if q in BLOCK_QTYPE_IDS
                for r, nb, st, ks in q8_variants(q)]
        out += [f"qmatvec_q8_rows<{q},{r},{nch},{st},0>" for q in qts if q in BLOCK_QTYPE_IDS
                for r, nch, st in Q8_ROWS_VARIANTS]
        out += [f"qmatvec_q8_rows<{q},{r},{nch},{st},1>" for q in qts if q in BLOCK_QTYPE_IDS
                for r, nch, st in Q8_ROWS_BULK_VARIANTS]
        out += [f"qmatmul_mma<{q}>" for q in qts]
        out += [f"dequant_rows<{q}>" for q in qts]
        out += ["empty_kernel", "quantize_q8_1", "swiglu_q8_1<0>", "swiglu_q8_1<1>"]
        return out
    if name == "attention":
        out = [f"attention_flash<{d},{ATTN_ITEMS_PER_WARP}>" for d in HEAD_DIMS]
        out += [f"attention_combine<{d}>" for d in HEAD_DIMS]
        out.append("attention_basic")
        return out
    raise KernelCompileError(f"unknown CUDA module {name!r}")


SOURCE_NAMES: tuple[str, ...] = ("quant", "attention")


@functools.cache
def module(name: str, qtype: int | None = None) -> Any:
    """The compiled ``cupy.RawModule`` (cached per process; CuPy also caches on disk)."""
    import cupy

    return cupy.RawModule(
        code=source(name),
        options=NVRTC_OPTIONS,
        name_expressions=name_expressions(name, qtype),
    )


@functools.cache
def function(name: str, expr: str, qtype: int | None = None) -> Any:
    """One kernel of a module, by its template expression (e.g. ``qmatvec<8,1>``)."""
    return module(name, qtype).get_function(expr)


def compile_check(name: str, arch: str = "sm_90", *, verbose: bool = False) -> bytes:
    """Compile ``name`` with every instantiation for ``arch`` through NVRTC; return the cubin.

    Works without a GPU or driver (needs the NVRTC library, e.g. the nvidia-cuda-nvrtc wheel).
    Raises :class:`KernelCompileError` with the compiler log on failure.
    """
    from cupy_backends.cuda.libs import nvrtc

    prog = nvrtc.createProgram(source(name), f"{name}.cu", [], [])
    try:
        for expr in name_expressions(name):
            nvrtc.addNameExpression(prog, expr)
        opts = [f"-arch={arch}", *NVRTC_OPTIONS]
        if verbose:
            opts.append("--ptxas-options=-v")
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog)
            raise KernelCompileError(f"NVRTC failed on {name}.cu for {arch}: {exc}\n{log}") from None
        if verbose:
            print(nvrtc.getProgramLog(prog))
        return nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
