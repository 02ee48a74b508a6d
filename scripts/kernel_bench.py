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

    def time_launches(self, launches: list[Callable[[], None]], min_launches: int = 64,
                      replays: int = 20) -> float:
        """Seconds per launch: the launches (repeated to >= min_launches) captured as one graph."""
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
            times.append(cp.cuda.get_elapsed_time(start, end) / 1e3 / (replays * len(seq)))
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


def bench_linear(cp, b: Bench, quant, quick: bool) -> None:
    rng = np.random.default_rng(0)
    q32 = [GGMLType.Q8_0, GGMLType.Q5_0, GGMLType.MXFP4, GGMLType.Q4_0, GGMLType.Q4_1,
           GGMLType.Q5_1, GGMLType.F16, GGMLType.BF16, GGMLType.F32]
    kq = [GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.Q5_K]
    cases: list[tuple[GGMLType, int, int, str]] = []
    for qt in q32:
        shapes = [(896, 896, "qwen0.5b attn_q/o"), (4864, 896, "qwen0.5b ffn_gate/up"),
                  (896, 4864, "qwen0.5b ffn_down"), (151936, 896, "qwen0.5b vocab")]
        if qt == GGMLType.MXFP4:
            shapes = [(2880, 2880, "gpt-oss expert"), (201088, 2880, "gpt-oss vocab")] + shapes[:3]
        if quick or qt in (GGMLType.F32, GGMLType.BF16, GGMLType.Q4_1, GGMLType.Q5_1, GGMLType.Q4_0):
            shapes = shapes[2:4] if qt != GGMLType.MXFP4 else shapes[:2]
        if qt == GGMLType.MXFP4:
            shapes = shapes[:2]
        cases += [(qt, r, c, lab) for r, c, lab in shapes]
    for qt in kq:
        shapes = [(896, 4864, "qwen0.5b ffn_down"), (8960, 1536, "qwen1.5b ffn_gate/up"),
                  (1536, 8960, "qwen1.5b ffn_down"), (151936, 1536, "qwen1.5b vocab"),
                  (3072, 3072, "phi3 attn_out"), (16384, 3072, "phi3 ffn_gate_up")]
        if quick or qt == GGMLType.Q5_K:
            shapes = shapes[:4:3]
        cases += [(qt, r, c, lab) for r, c, lab in shapes]
    for qt, rows, cols, label in cases:
        one = random_blocks(qt, (rows, cols), rng)
        c = copies_for(one.nbytes)
        ws = []
        base = cp.asarray(one)
        for i in range(c):
            d = base if i == 0 else cp.empty_like(base)
            if i:
                d[...] = base
            ws.append(quant.QuantWeight(d, qt, rows, cols))
        for n in (1, 8, 32):
            x = cp.asarray(rng.normal(0, 1, (n, cols)).astype(np.float32))
            y = cp.empty((n, rows), cp.float32)
            fn = quant.matvec if n <= quant.MATVEC_MAX_BATCH else quant.matmul
            t = b.time_launches([lambda w=w, x=x, y=y, fn=fn: fn(y, x, w, stream=b.stream) for w in ws])
            nbytes = one.nbytes + x.nbytes + y.nbytes
            kind = "matvec" if n <= quant.MATVEC_MAX_BATCH else "matmul_mma"
            record(f"{kind} b={n}", qt.name, f"{rows}x{cols} {label}", t, nbytes)
            if n == 1 and int(qt) in quant.cuda_modules.BLOCK_QTYPE_IDS:
                t = b.time_launches([lambda w=w, x=x, y=y: quant.matvec(y, x, w, stream=b.stream, pipelined=False) for w in ws])
                record("matvec b=1 unpipelined", qt.name, f"{rows}x{cols} {label}", t, nbytes)
                if rows >= quant.ROWS_PER_WARP_MIN_ROWS:
                    t = b.time_launches([lambda w=w, x=x, y=y: quant.matvec(y, x, w, stream=b.stream, rows_per_warp=1) for w in ws])
                    record("matvec b=1 pipe 1 row/warp", qt.name, f"{rows}x{cols} {label}", t, nbytes)
        if rows * cols <= 60e6:
            n = 512
            x = cp.asarray(rng.normal(0, 1, (n, cols)).astype(np.float32))
            y = cp.empty((n, rows), cp.float32)
            t = b.time_launches([lambda w=w: quant.matmul(y, x, w, stream=b.stream) for w in ws[:4]],
                                min_launches=16)
            record("matmul_mma p=512", qt.name, f"{rows}x{cols} {label}", t, flops=2.0 * n * rows * cols)
            if qt in (GGMLType.Q4_K, GGMLType.Q8_0, GGMLType.Q6_K) and label.endswith(("ffn_down", "gate/up")):
                # the alternative the issue asks to measure: dequantize (per call) + cuBLAS f16
                w32 = cp.empty((rows, cols), cp.float32)
                w16 = cp.empty((rows, cols), cp.float16)
                x16 = x.astype(cp.float16)
                y16 = cp.empty((n, rows), cp.float16)

                def deq_gemm(w=ws[0]) -> None:
                    quant.dequantize(w32, w, stream=b.stream)
                    w16[...] = w32
                    cp.matmul(x16, w16.T, out=y16)

                t = b.time_eager(deq_gemm)
                record("dequant+cuBLAS p=512", qt.name, f"{rows}x{cols} {label}", t,
                       flops=2.0 * n * rows * cols)
        del ws, base


def bench_moe(cp, b: Bench, quant) -> None:
    rng = np.random.default_rng(1)
    n_exp, k, d = 32, 4, 2880
    raw = random_blocks(GGMLType.MXFP4, (n_exp, d, d), rng)
    w = quant.QuantWeight(cp.asarray(raw), GGMLType.MXFP4, d, d)
    for t_tok in (1, 8):
        ids = cp.asarray(np.stack([rng.permutation(n_exp)[:k] for _ in range(t_tok)]).astype(np.int32))
        x = cp.asarray(rng.normal(0, 1, (t_tok, d)).astype(np.float32))
        y = cp.empty((t_tok, k, d), cp.float32)
        tm = b.time_launches([lambda: quant.expert_matvec(y, x, w, ids, x_per_slot=False, stream=b.stream)])
        distinct = len(np.unique(ids.get()))
        record(f"expert_matvec T={t_tok}", "MXFP4", f"{n_exp}x{d}x{d} k={k} ({distinct} experts read)",
               tm, distinct * w.matrix_bytes)


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
    ap.add_argument("--only", default="")
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
    groups = set(filter(None, args.only.split(","))) or {"linear", "moe", "attn", "small", "sample"}
    steps = [("attn", lambda: bench_attention(cp, b, attention)),
             ("small", lambda: bench_small_ops(cp, b)),
             ("sample", lambda: bench_sampling(cp, b)),
             ("moe", lambda: bench_moe(cp, b, quant)),
             ("linear", lambda: bench_linear(cp, b, quant, args.quick))]
    for g, fn in steps:
        if g in groups:
            try:
                fn()
            except Exception:  # noqa: BLE001 - report and keep benchmarking the rest
                traceback.print_exc()
    text = table(name) + f"\nwall {time.perf_counter() - t0:.1f} s"
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
