"""Kernel benchmark on the device: time, achieved GB/s (or TFLOP/s) and the fraction of the
device's peak for each op at decode (batch 1, 8, 32) and prefill (512 tokens) shapes.

Method (.library METHOD.md; llm.c dev/cuda): the memory peak is measured in the same run by a
large device-to-device copy (bytes read + written); the matrix peak by a cuBLAS f16 GEMM.
Each op is timed as a CUDA graph of many launches replayed between two events, so Python
launch cost stays out; weights rotate over enough copies to exceed the L2 cache several
times, so each launch reads from HBM, not L2. Bytes are the fewest the op must move (each
input read once, each output written once).

    NUMBA_CUDA_ARRAY_INTERFACE_SYNC=0 python scripts/kernel_bench.py [--quick] [--out bench.txt]
"""

# Each lambda below is captured and run within its own loop iteration, so late binding of
# loop variables (B023) cannot bite.
# ruff: noqa: B023
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("NUMBA_CUDA_ARRAY_INTERFACE_SYNC", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from orcd_toolkit.gguf.quants import random_blocks  # noqa: E402
from orcd_toolkit.gguf.types import GGMLType  # noqa: E402

ROWS: list[tuple[str, str, str, float, float, float, str]] = []
PEAK = {"bw": 0.0, "tflops": 0.0, "l2": 50 * 2**20}


class Bench:
    def __init__(self, cp, stream) -> None:
        self.cp, self.stream = cp, stream

    def capture(self, launches: list[Callable[[], None]], min_launches: int = 64
                ) -> tuple[Any, int]:
        """The launches (repeated to >= min_launches) captured as one graph after an eager
        warm-up, and replayed once; returns (graph, launches in it)."""
        cp, s = self.cp, self.stream
        # inputs were uploaded on the default stream, which a non-blocking stream does not
        # wait for: without this the first launch can read a buffer still being copied
        cp.cuda.Device().synchronize()
        for fn in launches:  # warm-up / compile, eagerly
            fn()
        s.synchronize()
        seq = launches * max(1, -(-min_launches // len(launches)))
        with s:
            s.begin_capture()
            for fn in seq:
                fn()
            g = s.end_capture()
        g.launch(s)
        s.synchronize()
        return g, len(seq)

    def time_launches(self, launches: list[Callable[[], None]], min_launches: int = 64,
                      replays: int = 20) -> float:
        """Seconds per launch: the launches (repeated to >= min_launches) captured as one graph."""
        cp, s = self.cp, self.stream
        g, n_seq = self.capture(launches, min_launches)
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(s)
        g.launch(s)
        end.record(s)
        end.synchronize()
        one = cp.cuda.get_elapsed_time(start, end) / 1e3
        replays = int(min(replays, max(1, 0.03 / max(one, 1e-9))))  # ~30 ms per sample
        times = []
        for _ in range(5):
            start.record(s)
            for _ in range(replays):
                g.launch(s)
            end.record(s)
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end) / 1e3 / (replays * n_seq))
        return float(np.median(times))

    def time_eager(self, fn: Callable[[], None], reps: int = 10) -> float:
        """Seconds per call timed with events around eager calls (for cuBLAS, which CuPy
        cannot capture into a graph; fine for launches far longer than the launch cost)."""
        cp, s = self.cp, self.stream
        cp.cuda.Device().synchronize()
        with s:
            fn()
        s.synchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        times = []
        for _ in range(3):
            start.record(s)
            with s:
                for _ in range(reps):
                    fn()
            end.record(s)
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end) / 1e3 / reps)
        return float(np.median(times))


def record(op: str, dtype: str, shape: str, seconds: float, nbytes: float = 0.0,
           flops: float = 0.0) -> None:
    gbs = nbytes / seconds / 1e9 if nbytes else 0.0
    tfl = flops / seconds / 1e12 if flops else 0.0
    if nbytes:
        pct, what = 100 * gbs / PEAK["bw"], f"{gbs:8.1f} GB/s"
    else:
        pct, what = 100 * tfl / PEAK["tflops"], f"{tfl:8.2f} TFLOP/s"
    ROWS.append((op, dtype, shape, seconds * 1e6, gbs, tfl, f"{pct:.0f}%"))
    print(f"  {op:<22} {dtype:<6} {shape:<40} {seconds * 1e6:9.2f} us {what} {pct:5.1f}% of peak",
          flush=True)


def measure_peaks(cp, b: Bench) -> None:
    n = 4 * 2**30 // 4
    src = cp.ones(n, cp.float32)
    dst = cp.empty_like(src)
    # cudaMemcpyAsync device-to-device (what "copy bandwidth" usually means) and CuPy's
    # elementwise copy kernel; the larger is the ceiling
    t_memcpy = b.time_eager(lambda: dst.data.copy_from_device_async(src.data, src.nbytes, b.stream), reps=5)
    t_kernel = b.time_launches([lambda: dst.__setitem__(slice(None), src)], min_launches=4, replays=5)
    PEAK["bw"] = 2 * src.nbytes / min(t_memcpy, t_kernel) / 1e9
    print(f"copy: memcpy {2 * src.nbytes / t_memcpy / 1e9:.0f} GB/s, copy kernel "
          f"{2 * src.nbytes / t_kernel / 1e9:.0f} GB/s (read+write)", flush=True)
    m = 8192
    a = cp.asarray(np.random.default_rng(0).standard_normal((m, m)), dtype=cp.float16)
    c = cp.empty((m, m), cp.float16)
    t = b.time_eager(lambda: cp.matmul(a, a, out=c))
    PEAK["tflops"] = 2 * m**3 / t / 1e12
    PEAK["l2"] = cp.cuda.Device().attributes["L2CacheSize"]
    print(f"peak: copy {PEAK['bw']:.0f} GB/s (read+write), cuBLAS f16 GEMM {PEAK['tflops']:.0f} "
          f"TFLOP/s, L2 {PEAK['l2'] / 2**20:.0f} MiB", flush=True)


def copies_for(nbytes: int) -> int:
    return max(1, min(64, -(-4 * PEAK["l2"] // nbytes)))


SIDE: dict[tuple[str, str, int], dict[str, tuple[float, float]]] = {}


def side(qt: str, shape: str, n: int, path: str, seconds: float, nbytes: float) -> None:
    """Keep (us, % of peak) per path for the f32-vs-int8 summary table."""
    gbs = nbytes / seconds / 1e9
    SIDE.setdefault((qt, shape, n), {})[path] = (seconds * 1e6, 100 * gbs / PEAK["bw"])


def linear_cases(quick: bool) -> list[tuple[GGMLType, int, int, str]]:
    """The real decode shapes per type (numpy order rows x cols = out x in)."""
    q05 = [(896, 896, "qwen0.5b attn_q/o"), (4864, 896, "qwen0.5b ffn_gate/up"),
           (896, 4864, "qwen0.5b ffn_down"), (151936, 896, "qwen0.5b vocab")]
    kshapes = [(896, 4864, "qwen0.5b ffn_down"), (8960, 1536, "qwen1.5b ffn_gate/up"),
               (1536, 8960, "qwen1.5b ffn_down"), (151936, 1536, "qwen1.5b vocab"),
               (3072, 3072, "phi3 attn_out"), (16384, 3072, "phi3 ffn_gate_up"),
               (3072, 8192, "phi3 ffn_down")]
    cases: list[tuple[GGMLType, int, int, str]] = []
    cases += [(GGMLType.Q8_0, r, c, lab) for r, c, lab in q05]
    cases.append((GGMLType.Q8_0, 201088, 2880, "gpt-oss vocab"))
    cases += [(GGMLType.Q5_0, r, c, lab) for r, c, lab in q05]
    cases += [(GGMLType.MXFP4, 2880, 2880, "gpt-oss expert"),
              (GGMLType.MXFP4, 5760, 2880, "gpt-oss expert gate_up"),
              (GGMLType.MXFP4, 201088, 2880, "gpt-oss vocab (as MXFP4)")]
    cases += [(GGMLType.Q4_K, r, c, lab) for r, c, lab in kshapes]
    cases += [(GGMLType.Q6_K, r, c, lab) for r, c, lab in kshapes]
    cases.append((GGMLType.Q6_K, 32064, 3072, "phi3 vocab"))
    # the other block types must be correct (parity); one medium and one tall row each here
    for qt in (GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_1):
        cases.append((qt, 4864, 896, "qwen0.5b ffn_gate/up"))
        cases.append((qt, 151936, 896, "vocab"))
    cases += [(GGMLType.Q5_K, 8960, 1536, "qwen1.5b ffn_gate/up"),
              (GGMLType.Q5_K, 151936, 1536, "vocab")]
    for qt in (GGMLType.F16, GGMLType.BF16, GGMLType.F32):
        cases.append((qt, 896, 4864, "qwen0.5b ffn_down"))
    if quick:
        keep = {"qwen0.5b attn_q/o", "qwen0.5b vocab", "qwen1.5b vocab", "gpt-oss expert"}
        cases = [c for c in cases if c[3] in keep]
    return cases


def bench_linear(cp, b: Bench, quant, quick: bool, sweep: bool, prefill: bool,
                 match: str = "", batches: tuple[int, ...] = (1, 2, 4, 8, 32)) -> None:
    rng = np.random.default_rng(0)
    keys = [k for k in match.split(",") if k]
    for qt, rows, cols, label in linear_cases(quick):
        if keys and not any(k in f"{qt.name} {rows}x{cols} {label}" for k in keys):
            continue
        one = random_blocks(qt, (rows, cols), rng)
        c = copies_for(one.nbytes)
        ws = []
        base = cp.asarray(one)
        for i in range(c):
            d = base if i == 0 else cp.empty_like(base)
            if i:
                d[...] = base
            ws.append(quant.QuantWeight(d, qt, rows, cols))
        shape = f"{rows}x{cols} {label}"
        block = int(qt) in quant.cuda_modules.BLOCK_QTYPE_IDS
        for n in batches:
            x = cp.asarray(rng.normal(0, 1, (n, cols)).astype(np.float32))
            y = cp.empty((n, rows), cp.float32)
            nbytes = one.nbytes + x.nbytes + y.nbytes
            if n > quant.MATVEC_MAX_BATCH:
                t = b.time_launches([lambda w=w: quant.matmul(y, x, w, stream=b.stream) for w in ws])
                record(f"matmul_mma b={n}", qt.name, shape, t, nbytes)
                continue
            paths = [("f32", False)] + ([("int8", True)] if block else [])
            for path, q8 in paths:
                t = b.time_launches([lambda w=w, q8=q8: quant.matvec(
                    y, x, w, stream=b.stream, q8_activations=q8) for w in ws])
                record(f"matvec {path} b={n}", qt.name, shape, t, nbytes)
                side(qt.name, shape, n, path, t, nbytes)
            if block and n == 1:
                # x rounded by its own launch (quantize_activations), then the product reading
                # it: both launches timed ("int8 2-launch"), and the product alone, as when
                # one rounded x feeds several products ("int8 shared x")
                xq = cp.empty((n, quant.q8_words(cols)), cp.uint32)
                qa = quant.quantize_activations(xq, x, stream=b.stream)

                def two(w) -> None:
                    quant.quantize_activations(xq, x, stream=b.stream)
                    quant.matvec(y, x, w, stream=b.stream, x_q8=qa)

                t = b.time_launches([lambda w=w: two(w) for w in ws])
                record(f"matvec int8 2-launch b={n}", qt.name, shape, t, nbytes)
                side(qt.name, shape, n, "int8 2-launch", t, nbytes)
                t = b.time_launches([lambda w=w: quant.matvec(y, x, w, stream=b.stream, x_q8=qa)
                                     for w in ws])
                record(f"matvec int8 shared-x b={n}", qt.name, shape, t, nbytes)
                side(qt.name, shape, n, "int8 shared x", t, nbytes)

                def chained(w) -> None:
                    with quant.programmatic_launches():
                        quant.matvec(y, x, w, stream=b.stream, x_q8=qa)

                # the same products launched back to back with programmatic dependent launch:
                # each one's weight copies start under the previous one's tail
                t = b.time_launches([lambda w=w: chained(w) for w in ws])
                record(f"matvec int8 shared-x pdl chain b={n}", qt.name, shape, t, nbytes)
                side(qt.name, shape, n, "int8 shared x pdl", t, nbytes)
                # the segment walk (qmatvec_q8), where the default may be the row-group
                # kernel (scripts/kernel_ab.py times the variants interleaved)
                t = b.time_launches([lambda w=w: quant.matvec(
                    y, x, w, stream=b.stream, x_q8=qa, row_groups=False) for w in ws])
                record(f"matvec int8 shared-x segment kernel b={n}", qt.name, shape, t, nbytes)
                side(qt.name, shape, n, "int8 shared x segment kernel", t, nbytes)
                t = read_ceiling(cp, b, [w.data for w in ws])
                record("read-only kernel (size ceiling)", "-", f"{one.nbytes / 1e6:.2f} MB ({shape})",
                       t, one.nbytes)
                side(qt.name, shape, n, "read ceiling", t, nbytes)
            if n == 1 and block and sweep:
                for r, nb, st, ks in quant.cuda_modules.Q8_VARIANTS:
                    if nb > 1 or ks > 1:
                        continue
                    for per_sm in (1, 2, 4, 8):
                        t = b.time_launches([lambda w=w, r=r, p=per_sm, st=st, ks=ks: quant.matvec(
                            y, x, w, stream=b.stream, rows_per_warp=r, stages=st,
                            warps_per_row=ks, ctas_per_sm=p) for w in ws])
                        record(f"matvec int8 b=1 R={r} S={st} KS={ks} ctas/SM={per_sm}", qt.name,
                               shape, t, nbytes)
        if prefill and rows * cols <= 60e6:
            n = 512
            x = cp.asarray(rng.normal(0, 1, (n, cols)).astype(np.float32))
            y = cp.empty((n, rows), cp.float32)
            t = b.time_launches([lambda w=w: quant.matmul(y, x, w, stream=b.stream) for w in ws[:4]],
                                min_launches=16)
            record("matmul_mma p=512", qt.name, shape, t, flops=2.0 * n * rows * cols)
        del ws, base


def bench_launch_floor(cp, b: Bench, quant) -> None:
    """The fixed cost under every small matvec: an empty kernel, and one of 128 threads x
    1000 blocks, timed in the same graph method (what a 0.5-3 MB matrix cannot go below)."""
    fn = quant.cuda_modules.function("quant", "empty_kernel", int(GGMLType.Q8_0))
    y = cp.zeros(1, cp.float32)
    for blocks in (1, 132, 1024):
        t = b.time_launches([lambda blocks=blocks: fn((blocks,), (128,), (y,), stream=b.stream)])
        ROWS.append(("empty kernel (graph)", "-", f"{blocks} blocks x 128", t * 1e6, 0.0, 0.0, "-"))
        print(f"  empty kernel {blocks} blocks: {t * 1e6:.2f} us", flush=True)


# A kernel that only reads: the fastest any kernel can stream n bytes in one launch. Timed
# at each matrix's size in the same graph method, it is the ceiling for that size (launch,
# DRAM latency and ramp included), against which a matvec's time is judged.
READ_SRC = r"""
extern "C" __global__ void read_bytes(const uint4* __restrict__ p, long long n16,
                                      unsigned int* __restrict__ out) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    unsigned int acc = 0u;
    for (; i + 3 * stride < n16; i += 4 * stride) {  // four 16-byte loads in flight
        const uint4 a = p[i], b = p[i + stride], c = p[i + 2 * stride], d = p[i + 3 * stride];
        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w
             ^ d.x ^ d.y ^ d.z ^ d.w;
    }
    for (; i < n16; i += stride) {
        const uint4 a = p[i];
        acc ^= a.x ^ a.y ^ a.z ^ a.w;
    }
    if (acc == 0x9E3779B9u) out[0] = acc;  // keeps the loads; (almost) never stores
}
"""
READ_CEILING: dict[int, float] = {}


def read_ceiling(cp, b: Bench, bufs: list) -> float:
    """Seconds per launch of the best read-only kernel over each buffer of ``bufs`` (rotated
    like the weights), over grids of 1-16 blocks of 256 threads per SM."""
    nbytes = int(bufs[0].nbytes)
    if nbytes in READ_CEILING:
        return READ_CEILING[nbytes]
    fn = cp.RawKernel(READ_SRC, "read_bytes")
    out = cp.zeros(1, cp.uint32)
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    n16 = np.int64(nbytes // 16)
    best = float("inf")
    for per_sm in (1, 2, 4, 8, 16):
        blocks = sms * per_sm
        t = b.time_launches([lambda d=d, blocks=blocks: fn((blocks,), (256,), (d, n16, out),
                                                           stream=b.stream) for d in bufs])
        best = min(best, t)
    READ_CEILING[nbytes] = best
    return best


def expert_sets(cp, rng: np.random.Generator, n_exp: int, k: int,
                t_tok: int) -> tuple[list, float]:
    """8 routing id arrays int32 [t_tok, k], one per launch of a graph, with the number of
    distinct experts each reads, and their mean. T = 1: set i picks from experts 4i..4i+3
    (disjoint sets, so no launch finds its experts in L2); T > 1: each set from 8 random
    experts."""
    sets = []
    for i in range(8):
        pool = np.arange(4 * i, 4 * i + 4) if t_tok == 1 else rng.permutation(n_exp)[:8]
        ids = np.stack([rng.permutation(pool)[:k] for _ in range(t_tok)]).astype(np.int32)
        sets.append((cp.asarray(ids), len(np.unique(ids))))
    return sets, float(np.mean([n for _, n in sets]))


class FfnCase(NamedTuple):
    """Routing sets and buffers of one gpt-oss expert FFN bench at t_tok tokens."""

    sets: list  # expert_sets
    distinct: float
    x: Any  # [t_tok, d] input
    act: Any  # [t_tok, k, f] activation (the down product's input)
    g: Any  # [t_tok, k, f] gate output
    u: Any  # [t_tok, k, f] up output
    y: Any  # [t_tok, k, d] down output
    xq: Any  # q8_1 words of x
    aq: Any  # q8_1 words of act, one row per (token, slot)


def ffn_case(cp, quant, rng: np.random.Generator, n_exp: int, k: int, d: int, f: int,
             t_tok: int) -> FfnCase:
    """The routing sets (expert_sets) and random inputs / empty outputs of an expert FFN with
    model width d and expert width f, shared by kernel_bench and kernel_ab."""
    sets, distinct = expert_sets(cp, rng, n_exp, k, t_tok)
    x = cp.asarray(rng.normal(0, 1, (t_tok, d)).astype(np.float32))
    act = cp.asarray(rng.normal(0, 1, (t_tok, k, f)).astype(np.float32))
    g = cp.empty((t_tok, k, f), cp.float32)
    return FfnCase(sets, distinct, x, act, g, cp.empty_like(g),
                   cp.empty((t_tok, k, d), cp.float32),
                   cp.empty((t_tok, quant.q8_words(d)), cp.uint32),
                   cp.empty((t_tok * k, quant.q8_words(f)), cp.uint32))


def bench_moe(cp, b: Bench, quant, sweep: bool = False) -> None:
    """Expert products of gpt-oss-20b: 4 of 32 MXFP4 experts per token. Each launch of the
    graph reads a different set of experts (8 disjoint sets in turn), so the weights come from
    HBM, not from the L2 the previous launch filled."""
    rng = np.random.default_rng(1)
    n_exp, k, d = 32, 4, 2880
    for rows in (2880, 5760):
        raw = random_blocks(GGMLType.MXFP4, (n_exp, rows, d), rng)
        w = quant.QuantWeight(cp.asarray(raw), GGMLType.MXFP4, rows, d)
        for t_tok in (1, 8):
            sets, distinct = expert_sets(cp, rng, n_exp, k, t_tok)
            x = cp.asarray(rng.normal(0, 1, (t_tok, d)).astype(np.float32))
            y = cp.empty((t_tok, k, rows), cp.float32)
            shape = f"{n_exp}x{rows}x{d} k={k} (~{distinct:.0f} experts read)"
            for path, q8 in (("f32", False), ("int8", True)):
                tm = b.time_launches([lambda ids=ids, q8=q8, w=w: quant.expert_matvec(
                    y, x, w, ids, x_per_slot=False, stream=b.stream, q8_activations=q8)
                    for ids, _ in sets])
                nbytes = distinct * w.matrix_bytes
                record(f"expert_matvec {path} T={t_tok}", "MXFP4", shape, tm, nbytes)
                side("MXFP4", f"experts {rows}x{d} T={t_tok}", 1, path, tm, nbytes)
        del w
    bench_moe_ffn(cp, b, quant, sweep)


def bench_moe_ffn(cp, b: Bench, quant, sweep: bool = False) -> None:
    """gpt-oss-20b's expert FFN at decode as the GPU backend runs it: gate, up (2880x2880
    each) and down (2880x2880) of 4 of 32 MXFP4 experts per token. "per product": three
    expert_matvec launches, each block rounding its x (the previous backend); "shared": x and
    the SwiGLU output each rounded once by quantize_activations, gate and up of every
    selected expert in one expert_gate_up launch (GpuBackend.moe now). The SwiGLU is left out
    (not an expert product) except in the two "+ swiglu" paths: the activation then a quantize
    launch, or both in one swiglu_rounded launch (GpuBackend.moe). Launch i reads expert set
    i of 8 disjoint sets."""
    rng = np.random.default_rng(3)
    n_exp, k, d, f = 32, 4, 2880, 2880
    stacks = [quant.QuantWeight(cp.asarray(random_blocks(GGMLType.MXFP4, (n_exp, r, c), rng)),
                                GGMLType.MXFP4, r, c) for r, c in ((f, d), (f, d), (d, f))]
    wg, wu, wd = stacks
    for t_tok in (1, 8):
        sets, distinct, x, act, g, u, y, xq, aq = ffn_case(cp, quant, rng, n_exp, k, d, f,
                                                           t_tok)

        def per_product(ids) -> None:
            quant.expert_matvec(g, x, wg, ids, x_per_slot=False, stream=b.stream)
            quant.expert_matvec(u, x, wu, ids, x_per_slot=False, stream=b.stream)
            quant.expert_matvec(y, act, wd, ids, x_per_slot=True, stream=b.stream)

        def gate_up_only(ids, qa) -> None:
            quant.expert_gate_up(g, u, x, wg, wu, ids, stream=b.stream, x_q8=qa)

        def shared(ids, rg: bool | None = None) -> None:
            qa = quant.quantize_activations(xq, x, stream=b.stream)
            quant.expert_gate_up(g, u, x, wg, wu, ids, stream=b.stream, x_q8=qa, row_groups=rg)
            qd = quant.quantize_activations(aq, act.reshape(t_tok * k, f), stream=b.stream)
            quant.expert_matvec(y, act, wd, ids, x_per_slot=True, stream=b.stream, x_q8=qd,
                                row_groups=rg)

        def shared_segments(ids) -> None:  # the segment kernel (qmatvec_q8) for all three
            shared(ids, False)

        def with_act(ids, fused: bool) -> None:
            # the activation too, as GpuBackend.moe runs it: separate (Numba SwiGLU, then a
            # quantize launch) or fused with the rounding (quant.swiglu_rounded)
            from orcd_toolkit.backends.cpu.ops import SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT
            from orcd_toolkit.kernels import activations

            qa = quant.quantize_activations(xq, x, stream=b.stream)
            quant.expert_gate_up(g, u, x, wg, wu, ids, stream=b.stream, x_q8=qa)
            a2, g2, u2 = (t.reshape(t_tok * k, f) for t in (act, g, u))
            if fused:
                qd = quant.swiglu_rounded(a2, g2, u2, aq, oai=True, alpha=SWIGLU_OAI_ALPHA,
                                          limit=SWIGLU_OAI_LIMIT, stream=b.stream)
            else:
                activations.swiglu_oai(a2, g2, u2, SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT,
                                       stream=b.stream)
                qd = quant.quantize_activations(aq, a2, stream=b.stream)
            quant.expert_matvec(y, act, wd, ids, x_per_slot=True, stream=b.stream, x_q8=qd)

        def shared_pdl(ids) -> None:
            with quant.programmatic_launches():
                shared(ids)

        def shared_uncapped(ids) -> None:
            quant.OCCUPANCY_CAP = False  # the grid before it was capped at the resident blocks
            try:
                shared(ids)
            finally:
                quant.OCCUPANCY_CAP = True

        shape = f"gate+up+down {n_exp}x{f}x{d} k={k} T={t_tok} (~{distinct:.0f} experts)"
        nbytes = distinct * 3 * wg.matrix_bytes
        for path, fn in (("per product", per_product), ("shared uncapped grid", shared_uncapped),
                         ("shared segment kernel", shared_segments),
                         ("shared", shared), ("shared pdl", shared_pdl),
                         ("shared + swiglu, then rounding", lambda ids: with_act(ids, False)),
                         ("shared + swiglu fused with rounding",
                          lambda ids: with_act(ids, True))):
            tm = b.time_launches([lambda ids=ids, fn=fn: fn(ids) for ids, _ in sets])
            record(f"moe ffn {path}", "MXFP4", shape, tm, nbytes)
            if path in ("per product", "shared", "shared pdl"):
                side("MXFP4", f"moe ffn gate+up+down T={t_tok}", 1,
                     {"per product": "int8", "shared": "int8 shared x"}.get(
                         path, "int8 shared x pdl"), tm, nbytes)
        qa = quant.quantize_activations(xq, x, stream=b.stream)
        if sweep and t_tok == 1:
            for r, st in ((2, 4), (4, 2), (8, 2)):
                smem = (d // 32) * quant.Q8_XQ_BYTES
                res = quant.resident_blocks(f"qmatvec_q8<{int(GGMLType.MXFP4)},{r},1,{st},1>",
                                            int(GGMLType.MXFP4), smem)
                print(f"  qmatvec_q8 MXFP4 R={r} S={st}: {res} resident blocks/SM", flush=True)
                for per_sm in (4, 8, 16):
                    tm = b.time_launches([lambda ids=ids, r=r, st=st, p=per_sm:
                                          quant.expert_gate_up(g, u, x, wg, wu, ids,
                                                               stream=b.stream, x_q8=qa,
                                                               rows_per_warp=r, stages=st,
                                                               ctas_per_sm=p)
                                          for ids, _ in sets])
                    record(f"expert_gate_up R={r} S={st} ctas/SM={per_sm}", "MXFP4",
                           f"gate+up {n_exp}x{f}x{d} k={k} T=1", tm,
                           distinct * 2 * wg.matrix_bytes)
        tm = b.time_launches([lambda ids=ids: quant.expert_gate_up(
            g, u, x, wg, wu, ids, stream=b.stream, x_q8=qa, row_groups=False) for ids, _ in sets])
        record("expert_gate_up shared x segment kernel", "MXFP4",
               f"gate+up {n_exp}x{f}x{d} k={k} T={t_tok}", tm, distinct * 2 * wg.matrix_bytes)
        tm = b.time_launches([lambda ids=ids: gate_up_only(ids, qa) for ids, _ in sets])
        record("expert_gate_up shared x", "MXFP4",
               f"gate+up {n_exp}x{f}x{d} k={k} T={t_tok}", tm, distinct * 2 * wg.matrix_bytes)
        quant.OCCUPANCY_CAP = False
        try:
            tu = b.time_launches([lambda ids=ids: gate_up_only(ids, qa) for ids, _ in sets])
        finally:
            quant.OCCUPANCY_CAP = True
        record("expert_gate_up shared x uncapped grid", "MXFP4",
               f"gate+up {n_exp}x{f}x{d} k={k} T={t_tok}", tu, distinct * 2 * wg.matrix_bytes)
        side("MXFP4", f"expert_gate_up (one launch) T={t_tok}", 1, "int8 shared x", tm,
             distinct * 2 * wg.matrix_bytes)


def bench_layer(cp, b: Bench, quant) -> None:
    """The decode linears of one layer at batch 1 as the GPU backend issues them, each
    product rounding its own x ("per product", the previous backend) against
    SharedActivations (one rounding per activation: q/k/v, gate/up share theirs; wide x
    rounded by its own launch). Real shapes and the types of the Q4_K_M files (Qwen2.5 0.5B:
    Q5_0 with a Q8_0 v and Q4_K down; 1.5B: Q4_K with a Q6_K down; gpt-oss-20b attention:
    Q8_0). Weights rotate over copies of the layer > 4x L2."""
    rng = np.random.default_rng(4)
    Q5, Q8, K4, K6 = GGMLType.Q5_0, GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q6_K
    layers = {
        "qwen0.5b layer": (896, [("x", Q5, 896, 896), ("x", Q5, 128, 896), ("x", Q8, 128, 896),
                                 ("a", Q5, 896, 896), ("h", Q5, 4864, 896), ("h", Q5, 4864, 896),
                                 ("f", K4, 896, 4864)]),
        "qwen1.5b layer": (1536, [("x", K4, 1536, 1536), ("x", K4, 256, 1536),
                                  ("x", K4, 256, 1536), ("a", K4, 1536, 1536),
                                  ("h", K4, 8960, 1536), ("h", K4, 8960, 1536),
                                  ("f", K6, 1536, 8960)]),
        "gpt-oss attn q/k/v/o": (2880, [("x", Q8, 4096, 2880), ("x", Q8, 512, 2880),
                                        ("x", Q8, 512, 2880), ("a", Q8, 2880, 4096)]),
    }
    for label, (_, mats) in layers.items():
        one = [(src, quant.QuantWeight(cp.asarray(random_blocks(qt, (r, c), rng)), qt, r, c))
               for src, qt, r, c in mats]
        nbytes = sum(w.matrix_bytes for _, w in one)
        copies = copies_for(nbytes)
        sets = [one] + [[(s, quant.QuantWeight(w.data.copy(), w.qtype, w.rows, w.cols))
                         for s, w in one] for _ in range(copies - 1)]
        xs = {s: cp.asarray(rng.normal(0, 1, (1, w.cols)).astype(np.float32)) for s, w in one}
        outs = [cp.empty((1, w.rows), cp.float32) for _, w in one]
        sa = quant.SharedActivations(lambda shape: cp.empty(shape, cp.uint32))

        def per_product(ws) -> None:
            for (s, w), o in zip(ws, outs, strict=True):
                quant.matvec(o, xs[s], w, stream=b.stream)

        def shared(ws) -> None:
            sa.clear()  # each replay starts a new layer: its activations are new arrays
            for (s, w), o in zip(ws, outs, strict=True):
                sa.linear(o, xs[s], w, stream=b.stream)

        def shared_pdl(ws) -> None:
            with quant.programmatic_launches():
                shared(ws)

        for path, fn in (("per product", per_product), ("shared", shared),
                         ("shared pdl", shared_pdl)):
            tm = b.time_launches([lambda ws=ws, fn=fn: fn(ws) for ws in sets])
            record(f"layer linears {path}", "mixed", f"{label} ({len(one)} products)", tm, nbytes)
            side("mixed", f"{label} ({len(one)} products)", 1,
                 {"per product": "int8", "shared": "int8 shared x"}.get(path, "int8 shared x pdl"),
                 tm, nbytes)


def bench_attention(cp, b: Bench, attn) -> None:
    rng = np.random.default_rng(2)
    hq, hkv, hd, bs = 14, 2, 64, 16
    for nseq, ctx in ((1, 4096), (8, 4096), (32, 4096), (1, 32768)):
        nblk = nseq * (ctx // bs)
        kc = cp.asarray(rng.normal(0, 1, (nblk, bs, hkv, hd)).astype(np.float16))
        vc = cp.asarray(rng.normal(0, 1, (nblk, bs, hkv, hd)).astype(np.float16))
        tables = cp.asarray(rng.permutation(nblk).astype(np.int32).reshape(nseq, ctx // bs))
        starts = cp.arange(nseq + 1, dtype=cp.int32)
        lens = cp.full(nseq, ctx, cp.int32)
        q = cp.asarray(rng.normal(0, 1, (nseq, hq, hd)).astype(np.float32))
        out = cp.empty_like(q)
        shape = attn.AttentionShape(nseq, nseq, 1, ctx, hq, hkv, hd)
        kern = attn.FlashAttention()
        ws = cp.empty(kern.workspace_shape(shape), cp.float32)
        t = b.time_launches([lambda: kern(out, q, kc, vc, tables, starts, lens, shape, ws,
                                          scale=0.125, stream=b.stream)], min_launches=16)
        record(f"attn flash decode b={nseq}", "f16kv",
               f"qwen0.5b ctx={ctx} splits={kern.splits(shape)}", t, kc.nbytes + vc.nbytes)
        if nseq == 1 and ctx == 4096:
            basic = attn.BasicAttention()
            wsb = cp.empty(basic.workspace_shape(shape), cp.float32)
            t = b.time_launches([lambda: basic(out, q, kc, vc, tables, starts, lens, shape, wsb,
                                               scale=0.125, stream=b.stream)], min_launches=8)
            record(f"attn basic decode b={nseq}", "f16kv", f"qwen0.5b ctx={ctx}", t, kc.nbytes + vc.nbytes)
    for hq, hkv, hd, label in ((14, 2, 64, "qwen0.5b"), (32, 32, 96, "phi3"), (64, 8, 64, "gpt-oss")):
        n = 512
        nblk = n // bs
        kc = cp.asarray(rng.normal(0, 1, (nblk, bs, hkv, hd)).astype(np.float16))
        vc = cp.asarray(rng.normal(0, 1, (nblk, bs, hkv, hd)).astype(np.float16))
        tables = cp.asarray(np.arange(nblk, dtype=np.int32)[None])
        starts = cp.asarray(np.array([0, n], np.int32))
        lens = cp.asarray(np.array([n], np.int32))
        q = cp.asarray(rng.normal(0, 1, (n, hq, hd)).astype(np.float32))
        out = cp.empty_like(q)
        shape = attn.AttentionShape(n, 1, n, n, hq, hkv, hd)
        kern = attn.FlashAttention()
        ws = cp.empty(kern.workspace_shape(shape), cp.float32)
        t = b.time_launches([lambda: kern(out, q, kc, vc, tables, starts, lens, shape, ws,
                                          scale=0.125, stream=b.stream)], min_launches=8)
        record("attn flash prefill 512", "f16kv", label, t, flops=4.0 * hq * hd * n * (n + 1) / 2)


def bench_small_ops(cp, b: Bench) -> None:
    from orcd_toolkit.backends.cpu import ops
    from orcd_toolkit.kernels import activations, norms, rope

    rng = np.random.default_rng(3)
    for rows, n in ((1, 896), (32, 896), (512, 896), (512, 3072)):
        x = cp.asarray(rng.normal(0, 1, (rows, n)).astype(np.float32))
        r = cp.asarray(rng.normal(0, 1, (rows, n)).astype(np.float32))
        w = cp.ones(n, cp.float32)
        out = cp.empty_like(x)
        ro = cp.empty_like(x)
        t = b.time_launches([lambda: norms.rms_norm(out, x, w, 1e-6, residual=r, residual_out=ro,
                                                    stream=b.stream)])
        record("add_rms_norm", "f32", f"{rows}x{n}", t, 4 * x.nbytes)
    for rows, f in ((1, 4864), (32, 4864), (512, 4864)):
        g = cp.asarray(rng.normal(0, 1, (rows, f)).astype(np.float32))
        u = cp.asarray(rng.normal(0, 1, (rows, f)).astype(np.float32))
        out = cp.empty_like(g)
        t = b.time_launches([lambda: activations.swiglu(out, g, u, stream=b.stream)])
        record("swiglu", "f32", f"{rows}x{f}", t, 3 * g.nbytes)
    for t_tok in (1, 32, 512):
        q = cp.asarray(rng.normal(0, 1, (t_tok, 14, 64)).astype(np.float32))
        k = cp.asarray(rng.normal(0, 1, (t_tok, 2, 64)).astype(np.float32))
        v = cp.asarray(rng.normal(0, 1, (t_tok, 2, 64)).astype(np.float32))
        kc = cp.zeros((64, 16, 2, 64), cp.float16)
        vc = cp.zeros_like(kc)
        pos = cp.arange(t_tok, dtype=cp.int32)
        slots = cp.arange(t_tok, dtype=cp.int32)
        freqs, ms = rope.rope_frequencies(64, freq_base=1e6)
        fd = cp.asarray(freqs)
        t = b.time_launches([lambda: rope.rope_kv_write(q, k, v, pos, fd, ms, ops.ROPE_NEOX,
                                                        slot_mapping=slots, k_cache=kc, v_cache=vc,
                                                        stream=b.stream)])
        record("rope_kv_write", "f32", f"T={t_tok} 14/2x64", t, 2 * q.nbytes + 3 * k.nbytes + k.nbytes)


def bench_sampling(cp, b: Bench) -> None:
    from orcd_toolkit.kernels import sampling

    rng = np.random.default_rng(4)
    vocab = 151936
    for n in (1, 8, 32):
        logits = cp.asarray(rng.normal(0, 3, (n, vocab)).astype(np.float32))
        params = {
            "temperature": cp.full(n, 0.8, cp.float32), "top_k": cp.full(n, 40, cp.int32),
            "top_p": cp.full(n, 0.9, cp.float32), "min_p": cp.full(n, 0.05, cp.float32),
            "repetition_penalty": cp.full(n, 1.1, cp.float32),
            "presence_penalty": cp.zeros(n, cp.float32), "frequency_penalty": cp.zeros(n, cp.float32),
        }
        toks, lps = cp.empty(n, cp.int32), cp.empty(n, cp.float32)
        probs, counts = cp.empty((n, vocab), cp.float32), cp.zeros((n, vocab), cp.int32)
        seeds = cp.arange(n, dtype=cp.uint64)
        draw = cp.zeros(n, cp.int64)
        hist = cp.asarray(rng.integers(0, vocab, (n, 256)).astype(np.int32))
        hlen = cp.full(n, 256, cp.int32)
        npr = cp.full(n, 128, cp.int32)
        t = b.time_launches([lambda: sampling.sample(toks, lps, logits, params, seeds, draw, probs, counts,
                                                     history=hist, history_len=hlen, num_prompt=npr,
                                                     stream=b.stream)], min_launches=4, replays=5)
        record("sample top-k+top-p+min-p", "f32", f"N={n} V={vocab} hist=256", t, logits.nbytes * 2)


def side_table() -> str:
    paths = ("f32", "int8", "int8 2-launch", "int8 shared x", "int8 shared x pdl",
             "read ceiling")
    lines = ["| type | shape | batch | " + " | ".join(f"{p} us (% of peak)" for p in paths) + " |",
             "|---|---|---|" + "---|" * len(paths)]
    for (qt, shape, n), d in SIDE.items():
        cells = [f"{d[p][0]:.2f} ({d[p][1]:.1f} %)" if p in d else "-" for p in paths]
        lines.append(f"| {qt} | {shape} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(name: str) -> str:
    lines = [f"device: {name}",
             f"peak: copy {PEAK['bw']:.0f} GB/s (read+write), cuBLAS f16 GEMM {PEAK['tflops']:.0f} TFLOP/s",
             "| op | type | shape | time (us) | GB/s | TFLOP/s | % of peak |", "|---|---|---|---|---|---|---|"]
    for op, dt, shape, us, gbs, tfl, pct in ROWS:
        lines.append(f"| {op} | {dt} | {shape} | {us:.2f} | {gbs:.0f} | {tfl:.2f} | {pct} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", default="",
                    help="groups: linear,moe,layer,floor,attn,small,sample")
    ap.add_argument("--sweep", action="store_true", help="int8 rows/warp x CTAs/SM variants")
    ap.add_argument("--prefill", action="store_true", help="also the 512-token matmul")
    ap.add_argument("--match", default="", help="linear cases whose 'TYPE RxC label' contains "
                    "one of these comma-separated strings")
    ap.add_argument("--batches", default="1,2,4,8,32",
                    help="comma-separated batch sizes of the linear group")
    args = ap.parse_args(argv)

    import cupy as cp

    from orcd_toolkit.kernels import attention, quant
    from orcd_toolkit.kernels.device import probe_cupy

    name = probe_cupy().name
    print(f"device: {name}", flush=True)
    stream = cp.cuda.Stream(non_blocking=True)
    b = Bench(cp, stream)
    t0 = time.perf_counter()
    measure_peaks(cp, b)
    groups = set(filter(None, args.only.split(","))) or {"linear", "moe", "layer", "floor", "attn",
                                                           "small", "sample"}
    steps = [("attn", lambda: bench_attention(cp, b, attention)),
             ("small", lambda: bench_small_ops(cp, b)),
             ("sample", lambda: bench_sampling(cp, b)),
             ("floor", lambda: bench_launch_floor(cp, b, quant)),
             ("moe", lambda: bench_moe(cp, b, quant, args.sweep)),
             ("layer", lambda: bench_layer(cp, b, quant)),
             ("linear", lambda: bench_linear(cp, b, quant, args.quick, args.sweep, args.prefill,
                                                args.match,
                                                tuple(int(n) for n in args.batches.split(","))))]
    for g, fn in steps:
        if g in groups:
            try:
                fn()
            except Exception:  # noqa: BLE001 - report and keep benchmarking the rest
                traceback.print_exc()
    text = (table(name) + f"\n\ndevice: {name}; f32 path vs int8 path side by side\n"
            + side_table() + f"\nwall {time.perf_counter() - t0:.1f} s")
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
