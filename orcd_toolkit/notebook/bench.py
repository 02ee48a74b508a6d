"""Kernel-vs-NumPy comparisons for the notebook's ``KernelBench`` (the logic; no widgets).

Each case builds seeded random inputs, runs the NumPy twin from
``orcd_toolkit.backends.cpu.ops`` (the oracle) and, where a GPU is usable, the kernel from
``orcd_toolkit.kernels`` on the same inputs, then reports median times, the bandwidth each
achieved over the bytes the op must move (inputs read once + outputs written once, the
llm.c ``dev/cuda`` convention), and the kernel's error against NumPy as normalized MSE
``sum((gpu - ref)^2) / sum(ref^2)`` (the measure ``scripts/kernel_parity.py`` uses) and max
abs error.

Without a GPU only the NumPy side runs and the result carries the reason, so a notebook
runs top to bottom on any machine. GPU times come from CUDA events around ``repeats``
launches after a warm-up launch (which also compiles: its time is reported separately as
``first_call_ms``, never mixed into the median).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orcd_toolkit.backends.cpu import ops
from orcd_toolkit.errors import InvalidRequest

QUANT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "F16", "MXFP4")


@dataclass(frozen=True, slots=True)
class BenchCase:
    """One op at one shape. ``qtype`` only for the quantized matvec."""

    op: str
    rows: int
    cols: int
    qtype: str | None = None

    @property
    def label(self) -> str:
        q = f" {self.qtype}" if self.qtype else ""
        return f"{self.op}{q} {self.rows}x{self.cols}"


@dataclass(slots=True)
class BenchResult:
    """Timings (ms, medians), bandwidth (GB/s) and error of one case."""

    case: BenchCase
    bytes_moved: int
    numpy_ms: float
    gpu_ms: float | None = None
    first_call_ms: float | None = None
    nmse: float | None = None
    max_abs_err: float | None = None
    device: str = "NumPy only"
    note: str = ""
    numpy_runs: list[float] = field(default_factory=list)

    @property
    def numpy_gbps(self) -> float:
        return self.bytes_moved / (self.numpy_ms * 1e-3) / 1e9 if self.numpy_ms > 0 else 0.0

    @property
    def gpu_gbps(self) -> float | None:
        if self.gpu_ms is None or self.gpu_ms <= 0:
            return None
        return self.bytes_moved / (self.gpu_ms * 1e-3) / 1e9

    @property
    def speedup(self) -> float | None:
        return None if self.gpu_ms is None or self.gpu_ms <= 0 else self.numpy_ms / self.gpu_ms


def nmse(out: np.ndarray, ref: np.ndarray) -> float:
    """Normalized MSE of ``out`` against ``ref`` (inf on a shape mismatch, nan on non-finite)."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        return float("inf")
    if not np.all(np.isfinite(out)):
        return float("nan")
    den = float(np.sum(ref * ref))
    num = float(np.sum((out - ref) ** 2))
    return num / den if den > 0 else num


# --------------------------------------------------------------------------- cases
# Each op: inputs(case, rng) -> dict of host arrays; reference(inputs) -> host array;
# kernel(cp, inputs_on_device) -> a launch closure writing into a preallocated output;
# nbytes(case, inputs) -> bytes the op must move.


def _inputs_rowwise(case: BenchCase, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "x": rng.normal(0, 1, (case.rows, case.cols)).astype(np.float32),
        "r": rng.normal(0, 1, (case.rows, case.cols)).astype(np.float32),
        "w": rng.normal(1, 0.1, case.cols).astype(np.float32),
    }


def _inputs_matvec(case: BenchCase, rng: np.random.Generator) -> dict[str, Any]:
    from orcd_toolkit.gguf import GGMLType, random_blocks

    qt = GGMLType[case.qtype or "Q4_0"]
    return {
        "raw": random_blocks(qt, (case.rows, case.cols), rng),
        "x": rng.normal(0, 1, (1, case.cols)).astype(np.float32),
        "qtype": int(qt),
    }


def _launch_rms_norm(cp: Any, d: dict[str, Any]) -> tuple[Callable[[], None], Any]:
    from orcd_toolkit.kernels import norms

    out = cp.empty_like(d["x"])
    return (lambda: norms.rms_norm(out, d["x"], d["w"], 1e-6)), out


def _launch_add_rms_norm(cp: Any, d: dict[str, Any]) -> tuple[Callable[[], None], Any]:
    from orcd_toolkit.kernels import norms

    out = cp.empty_like(d["x"])
    resid = cp.empty_like(d["x"])
    return (lambda: norms.rms_norm(out, d["x"], d["w"], 1e-6, residual=d["r"],
                                   residual_out=resid)), out


def _launch_swiglu(cp: Any, d: dict[str, Any]) -> tuple[Callable[[], None], Any]:
    from orcd_toolkit.kernels import activations

    out = cp.empty_like(d["x"])
    return (lambda: activations.swiglu(out, d["x"], d["r"])), out


def _launch_gelu(cp: Any, d: dict[str, Any]) -> tuple[Callable[[], None], Any]:
    from orcd_toolkit.kernels import activations

    out = cp.empty_like(d["x"])
    return (lambda: activations.gelu(out, d["x"])), out


def _reference_matvec(d: dict[str, Any]) -> np.ndarray:
    """The decode product as the GPU computes it by default: block types round x to q8_1
    (llama.cpp CUDA's quantize_q8_1) before the exact dot; F32/F16/BF16 use x as is."""
    from orcd_toolkit.backends.cpu import ops
    from orcd_toolkit.gguf.types import LAYOUTS, GGMLType

    x = d["x"]
    if LAYOUTS[GGMLType(d["qtype"])].is_quantized:
        x = ops.round_activations(x, "q8_1")
    return ops.quant_matmul(x, d["raw"], d["qtype"], (d["raw"].shape[0], x.shape[1]))


def _launch_matvec(cp: Any, d: dict[str, Any]) -> tuple[Callable[[], None], Any]:
    from orcd_toolkit.kernels import quant

    rows, _ = d["raw"].shape
    cols = d["x"].shape[1]
    w = quant.QuantWeight(d["raw"], d["qtype"], rows, cols)
    out = cp.empty((1, rows), dtype=cp.float32)
    return (lambda: quant.matvec(out, d["x"], w)), out


# attention at Qwen2.5-0.5B's head layout: 14 query heads over 2 KV heads of 64 (GQA 7:1)
ATTN_HEADS = (14, 2, 64)
ATTN_BLOCK = 16


def _inputs_attention(case: BenchCase, rng: np.random.Generator) -> dict[str, Any]:
    """Decode: ``rows`` sequences, one new token each, ``cols`` tokens of context, paged
    over shuffled 16-token blocks; the cache is f16 as on the GPU (the NumPy twin reads the
    same values as f32)."""
    hq, hkv, d = ATTN_HEADS
    nb = -(-case.cols // ATTN_BLOCK)
    total = case.rows * nb
    tables = rng.permutation(total).astype(np.int32).reshape(case.rows, nb)
    return {
        "q": rng.normal(0, 1, (case.rows, hq, d)).astype(np.float32),
        "k": rng.normal(0, 1, (total, ATTN_BLOCK, hkv, d)).astype(np.float16),
        "v": rng.normal(0, 1, (total, ATTN_BLOCK, hkv, d)).astype(np.float16),
        "tables": tables,
        "starts": np.arange(case.rows + 1, dtype=np.int32),
        "lens": np.full(case.rows, case.cols, np.int32),
    }


def _reference_attention(d: dict[str, Any]) -> np.ndarray:
    return ops.paged_attention(d["q"], d["k"].astype(np.float32), d["v"].astype(np.float32),
                               d["tables"], d["starts"], d["lens"],
                               scale=1.0 / np.sqrt(ATTN_HEADS[2]))


def _launch_attention(cp: Any, d: dict[str, Any]) -> tuple[Callable[[], None], Any]:
    from orcd_toolkit.kernels import attention

    hq, hkv, hd = ATTN_HEADS
    b = d["q"].shape[0]
    shape = attention.AttentionShape(b, b, 1, int(d["lens"].max()), hq, hkv, hd)
    kern = attention.FlashAttention()
    ws = cp.empty(kern.workspace_shape(shape), cp.float32)
    out = cp.empty_like(d["q"])
    args = (d["q"], d["k"], d["v"], d["tables"], d["starts"], d["lens"], shape, ws)
    return (lambda: kern(out, *args, scale=1.0 / float(np.sqrt(hd)))), out


@dataclass(frozen=True, slots=True)
class _Op:
    inputs: Callable[[BenchCase, np.random.Generator], dict[str, Any]]
    reference: Callable[[dict[str, Any]], np.ndarray]
    launch: Callable[[Any, dict[str, Any]], tuple[Callable[[], None], Any]]
    nbytes: Callable[[BenchCase, dict[str, Any]], int]
    doc: str


_F32 = 4
OPS: dict[str, _Op] = {
    "rms_norm": _Op(
        _inputs_rowwise,
        lambda d: ops.rms_norm(d["x"], d["w"], 1e-6),
        _launch_rms_norm,
        lambda c, d: (2 * c.rows * c.cols + c.cols) * _F32,
        "RMSNorm of [rows, cols] (read x, w; write out)",
    ),
    "add_rms_norm": _Op(
        _inputs_rowwise,
        lambda d: ops.add_rms_norm(d["x"], d["r"], d["w"], 1e-6)[0],
        _launch_add_rms_norm,
        lambda c, d: (4 * c.rows * c.cols + c.cols) * _F32,
        "residual add fused with RMSNorm (read x, r, w; write out, x+r)",
    ),
    "swiglu": _Op(
        _inputs_rowwise,
        lambda d: ops.swiglu(d["x"], d["r"]),
        _launch_swiglu,
        lambda c, d: 3 * c.rows * c.cols * _F32,
        "silu(gate) * up over [rows, cols] (read 2, write 1)",
    ),
    "gelu": _Op(
        _inputs_rowwise,
        lambda d: ops.gelu(d["x"]),
        _launch_gelu,
        lambda c, d: 2 * c.rows * c.cols * _F32,
        "GELU (tanh form) over [rows, cols]",
    ),
    "matvec": _Op(
        _inputs_matvec,
        _reference_matvec,
        _launch_matvec,
        lambda c, d: int(d["raw"].nbytes) + (c.cols + c.rows) * _F32,
        "decode linear layer: x[1, cols] @ W[rows, cols].T on raw GGUF blocks; block types "
        "run the int8 kernel, x rounded to q8_1 first (NumPy twin: the same rounding, then W "
        "dequantized on every call, as ops.quant_matmul does)",
    ),
    "attention": _Op(
        _inputs_attention,
        _reference_attention,
        _launch_attention,
        lambda c, d: int(c.rows * c.cols * 2 * ATTN_HEADS[1] * ATTN_HEADS[2] * 2)
        + 2 * int(d["q"].nbytes),
        "paged decode attention (FlashAttention, split-K): rows = sequences, cols = context "
        "length; 14 query / 2 KV heads of 64 (Qwen2.5-0.5B), f16 KV cache read once",
    ),
}

# Shapes of the real models the notebook talks about (rows x cols).
PRESETS: dict[str, tuple[int, int]] = {
    "SmolLM2 hidden (1 x 576)": (1, 576),
    "Qwen2.5-0.5B hidden (1 x 896)": (1, 896),
    "prefill 512 x 896": (512, 896),
    "Qwen2.5-0.5B attn_q 896 x 896": (896, 896),
    "Qwen2.5-0.5B ffn_up 4864 x 896": (4864, 896),
    "Qwen2.5-0.5B ffn_down 896 x 4864": (896, 4864),
    "attention: 8 sequences x 2048 context": (8, 2048),
}


def make_case(op: str, rows: int, cols: int, qtype: str | None = None) -> BenchCase:
    """A validated case (``InvalidRequest`` naming the field otherwise)."""
    if op not in OPS:
        raise InvalidRequest(f"op must be one of {sorted(OPS)}, got {op!r}")
    for name, v in (("rows", rows), ("cols", cols)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 16:
            raise InvalidRequest(f"{name} must be an integer in [1, 65536], got {v!r}")
    if op == "attention" and (rows > 256 or cols > 16384):
        raise InvalidRequest(
            f"attention: at most 256 sequences (rows) of 16384 tokens (cols), got {rows}x{cols}")
    if op == "matvec":
        qtype = qtype or "Q4_0"
        if qtype not in QUANT_TYPES:
            raise InvalidRequest(f"qtype must be one of {', '.join(QUANT_TYPES)}, got {qtype!r}")
        block = 256 if qtype.endswith("_K") else 32
        if cols % block:
            raise InvalidRequest(f"cols must be a multiple of {block} for {qtype}, got {cols}")
    else:
        qtype = None
    return BenchCase(op, rows, cols, qtype)


def gpu_available() -> tuple[bool, str]:
    """(usable, reason) from ``orcd_toolkit.kernels.device.gpu_status`` (never raises)."""
    from orcd_toolkit.kernels.device import gpu_status

    s = gpu_status()
    return s.usable, s.reason


def _time_numpy(fn: Callable[[], np.ndarray], repeats: int) -> tuple[np.ndarray, list[float]]:
    out = fn()  # warm-up (page faults, BLAS threads)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        runs.append((time.perf_counter() - t0) * 1e3)
    return out, runs


def _time_gpu(cp: Any, launch: Callable[[], None], repeats: int) -> tuple[float, float]:
    """(first call ms incl. compile, median ms per launch over ``repeats``)."""
    t0 = time.perf_counter()
    launch()
    cp.cuda.get_current_stream().synchronize()
    first = (time.perf_counter() - t0) * 1e3
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    runs = []
    for _ in range(repeats):
        start.record()
        launch()
        stop.record()
        stop.synchronize()
        runs.append(cp.cuda.get_elapsed_time(start, stop))
    return first, statistics.median(runs)


def run_case(case: BenchCase, *, repeats: int = 10, seed: int = 0,
             use_gpu: bool | None = None) -> BenchResult:
    """Run ``case`` on NumPy and, when a GPU is usable (or ``use_gpu``), on the kernel."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 1000:
        raise InvalidRequest(f"repeats must be an integer in [1, 1000], got {repeats!r}")
    op = OPS[case.op]
    rng = np.random.default_rng(seed)
    host = op.inputs(case, rng)
    ref, runs = _time_numpy(lambda: op.reference(host), repeats)
    result = BenchResult(case, op.nbytes(case, host), statistics.median(runs), numpy_runs=runs)
    usable, reason = gpu_available()
    if use_gpu is None:
        use_gpu = usable
    if not use_gpu:
        result.note = f"NumPy only: {reason}"
        return result
    if not usable:
        result.note = f"GPU requested but unusable: {reason}; NumPy only"
        return result
    import cupy as cp

    from orcd_toolkit.kernels.device import probe_cupy

    dev = {k: (cp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in host.items()}
    launch, out = op.launch(cp, dev)
    first, med = _time_gpu(cp, launch, repeats)
    got = cp.asnumpy(out)
    result.gpu_ms = med
    result.first_call_ms = first
    result.nmse = nmse(got, ref)
    result.max_abs_err = float(np.max(np.abs(got.astype(np.float64) - ref))) if got.size else 0.0
    result.device = probe_cupy().name
    return result
