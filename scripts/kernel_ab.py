"""Interleaved A/B timing of int8 matvec variants on the device.

kernel_bench.py times one configuration after another; on an H200 the same configuration
measured minutes apart in one run differed by up to 20 % (clocks and power settle with the
load), which is as large as the differences between kernel variants. Here every variant of a
shape is captured as its own CUDA graph first, then the graphs are timed in turn, round after
round, so drift hits every variant alike; the table gives each variant's median and best
round and its share of the copy peak measured in the same run.

    NUMBA_CUDA_ARRAY_INTERFACE_SYNC=0 python scripts/kernel_ab.py [--rounds 15] [--only vocab,experts]
"""

# ruff: noqa: B023
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NUMBA_CUDA_ARRAY_INTERFACE_SYNC", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from kernel_bench import PEAK, Bench, copies_for, ffn_case  # noqa: E402

from orcd_toolkit.gguf.quants import random_blocks  # noqa: E402
from orcd_toolkit.gguf.types import GGMLType  # noqa: E402

LINES: list[str] = []


def say(text: str) -> None:
    print(text, flush=True)
    LINES.append(text)


def toggled(quant, fn: Callable[..., None], kw: dict) -> None:
    """fn(kw without "bulk" and "xshared"), with quant.Q8_ROWS_BULK / Q8_ROWS_X_SHARED set as
    they ask (captured graphs keep the kernel chosen at capture)."""
    kw = dict(kw)
    quant.Q8_ROWS_BULK = kw.pop("bulk", None)
    quant.Q8_ROWS_X_SHARED = kw.pop("xshared", None)
    try:
        fn(kw)
    finally:
        quant.Q8_ROWS_BULK = None
        quant.Q8_ROWS_X_SHARED = None


def interleaved(cp, stream, variants: dict[str, Callable[[], None]], nbytes: float, peak: float,
                title: str, rounds: int, launches: int = 64) -> None:
    """Time every variant once per round, in turn; report median / best us per launch."""
    bench = Bench(cp, stream)
    graphs = {name: bench.capture([fn], launches) for name, fn in variants.items()}
    start, end = cp.cuda.Event(), cp.cuda.Event()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (g, n) in graphs.items():
            start.record(stream)
            for _ in range(4):
                g.launch(stream)
            end.record(stream)
            end.synchronize()
            samples[name].append(cp.cuda.get_elapsed_time(start, end) * 1e3 / (4 * n))
    say(f"\n{title} ({nbytes / 1e6:.1f} MB per launch, {rounds} rounds)")
    say("| variant | median us | best us | median % of copy peak |")
    say("|---|---|---|---|")
    for name, ts in samples.items():
        med = float(np.median(ts))
        say(f"| {name} | {med:.2f} | {min(ts):.2f} | {nbytes / med / 1e3 / peak * 100:.1f} % |")


def copy_peak(cp, stream) -> float:
    """GB/s of a 4 GiB device-to-device copy (read + write), best of 5."""
    n = 2**30
    src = cp.ones(n, cp.float32)
    dst = cp.empty_like(src)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    best = float("inf")
    for _ in range(5):
        start.record(stream)
        dst.data.copy_from_device_async(src.data, src.nbytes, stream)
        end.record(stream)
        end.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, end) / 1e3)
    return 2 * src.nbytes / best / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--only", default="vocab,wide,small,experts,down,ffn")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import cupy as cp

    from orcd_toolkit.kernels import quant
    from orcd_toolkit.kernels.device import probe_cupy

    groups = set(args.only.split(","))
    say(f"device: {probe_cupy().name}")
    stream = cp.cuda.Stream(non_blocking=True)
    peak = copy_peak(cp, stream)
    PEAK["l2"] = cp.cuda.Device().attributes["L2CacheSize"]  # what copies_for sizes against
    say(f"copy peak {peak:.0f} GB/s")
    rng = np.random.default_rng(5)
    t0 = time.perf_counter()
    kernels = {"segment kernel": {"row_groups": False},
               "row groups R=4 S=2": {"row_groups": True, "rows_per_warp": 4, "bulk": False},
               "row groups R=8 S=2": {"row_groups": True, "rows_per_warp": 8, "bulk": False},
               "bulk copies R=2 S=2": {"row_groups": True, "rows_per_warp": 2, "bulk": True},
               "bulk copies R=4 S=2": {"row_groups": True, "rows_per_warp": 4, "bulk": True}}
    shared_x = {"x shared R=1": {"row_groups": True, "rows_per_warp": 1, "bulk": True,
                                 "xshared": True},
                "x shared R=2": {"row_groups": True, "rows_per_warp": 2, "bulk": True,
                                 "xshared": True}}
    shapes = []
    if "vocab" in groups:
        shapes += [(qt, rows, cols, label, kernels) for qt, rows, cols, label in (
                (GGMLType.Q8_0, 151936, 896, "qwen0.5b vocab"),
                (GGMLType.Q5_0, 151936, 896, "qwen0.5b vocab"),
                (GGMLType.Q4_K, 151936, 1536, "qwen1.5b vocab"),
                (GGMLType.Q6_K, 151936, 1536, "qwen1.5b vocab"),
                (GGMLType.Q6_K, 32064, 3072, "phi3 vocab"),
                (GGMLType.Q4_K, 16384, 3072, "phi3 gate_up"),
                (GGMLType.Q4_K, 8960, 1536, "qwen1.5b gate/up"),
                (GGMLType.Q5_0, 4864, 896, "qwen0.5b gate/up"),
                (GGMLType.Q8_0, 4096, 2880, "gpt-oss attn_q"),
                (GGMLType.Q8_0, 201088, 2880, "gpt-oss vocab"),
                (GGMLType.MXFP4, 201088, 2880, "vocab-sized MXFP4"))]
    split = {"segment kernel": {"row_groups": False},
             "segment KS=4 R=1": {"row_groups": False, "warps_per_row": 4, "rows_per_warp": 1},
             "segment KS=4 R=2": {"row_groups": False, "warps_per_row": 4, "rows_per_warp": 2}}
    if "wide" in groups:  # rows of more than 3072 columns: x in shared memory or the segments
        shapes += [(qt, rows, cols, label, {**split, **shared_x})
                   for qt, rows, cols, label in (
                (GGMLType.Q6_K, 896, 4864, "qwen0.5b down"),
                (GGMLType.Q8_0, 896, 4864, "down as Q8_0"),
                (GGMLType.Q6_K, 1536, 8960, "qwen1.5b down"),
                (GGMLType.Q4_K, 1536, 8960, "down as Q4_K"),
                (GGMLType.Q4_K, 3072, 8192, "phi3 down"),
                (GGMLType.Q6_K, 3072, 8192, "phi3 down"),
                (GGMLType.Q8_0, 2880, 4096, "gpt-oss attn_output"),
                # the same row lengths on tall matrices: the kernel's own rate on those rows
                # once the launch and the first DRAM round trip no longer dominate
                (GGMLType.Q6_K, 16384, 8960, "tall, qwen1.5b down rows"),
                (GGMLType.Q4_K, 16384, 8960, "tall, qwen1.5b down rows"),
                (GGMLType.Q4_K, 16384, 8192, "tall, phi3 down rows"),
                (GGMLType.Q4_K, 32768, 4864, "tall, qwen0.5b down rows"),
                (GGMLType.Q6_K, 16384, 8192, "tall, phi3 down rows"),
                (GGMLType.Q6_K, 32768, 4864, "tall, qwen0.5b down rows"),
                (GGMLType.Q8_0, 32768, 4864, "tall, down rows as Q8_0"),
                (GGMLType.Q8_0, 16384, 4096, "tall, gpt-oss attn_output rows"))]
    if "small" in groups:  # under Q8_ROWS_SHORT_BELOW rows (2 rows per item by default)
        small = {**split,
                 "bulk copies R=2 S=2": kernels["bulk copies R=2 S=2"],
                 "bulk copies R=4 S=2": kernels["bulk copies R=4 S=2"], **shared_x}
        shapes += [(qt, rows, cols, label, small) for qt, rows, cols, label in (
                (GGMLType.Q5_0, 128, 896, "qwen0.5b k"),
                (GGMLType.Q4_K, 256, 1536, "qwen1.5b k"),
                (GGMLType.Q8_0, 512, 2880, "gpt-oss k/v"),
                (GGMLType.Q5_0, 896, 896, "qwen0.5b q/o"),
                (GGMLType.Q4_K, 1536, 1536, "qwen1.5b q/o"),
                (GGMLType.Q4_K, 3072, 3072, "phi3 attn_output"),
                (GGMLType.Q4_K, 9216, 3072, "phi3 attn_qkv"),
                (GGMLType.Q8_0, 2880, 2880, "as an expert, Q8_0"))]
    for qt, rows, cols, label, kinds in shapes:
        w0 = quant.QuantWeight(cp.asarray(random_blocks(qt, (rows, cols), rng)), qt, rows,
                               cols)
        ws = [w0] + [quant.QuantWeight(w0.data.copy(), qt, rows, cols)
                     for _ in range(copies_for(int(w0.data.nbytes)) - 1)]
        x = cp.asarray(rng.normal(0, 1, (1, cols)).astype(np.float32))
        y = cp.empty((1, rows), cp.float32)
        qa = quant.quantize_activations(cp.empty((1, quant.q8_words(cols)), cp.uint32), x,
                                        stream=stream)
        turn = [0]

        def run(kw) -> None:
            w = ws[turn[0] % len(ws)]
            turn[0] += 1
            quant.matvec(y, x, w, stream=stream, x_q8=qa, **kw)

        variants = {"default": lambda: run({})}
        variants.update({k: (lambda kw=kw: toggled(quant, run, kw))
                         for k, kw in kinds.items()})
        interleaved(cp, stream, variants, w0.data.nbytes, peak,
                    f"{qt.name} {rows}x{cols} {label}, shared x", args.rounds,
                    launches=max(64, len(ws)))
    if groups & {"experts", "down", "ffn"}:
        n_exp, k, d = 32, 4, 2880
        st = [quant.QuantWeight(cp.asarray(random_blocks(GGMLType.MXFP4, (n_exp, d, d), rng)),
                                GGMLType.MXFP4, d, d) for _ in range(3)]
        wg, wu, wd = st
        for t_tok in (1, 8):
            sets, distinct, x, act, g, u, y, xq, aq = ffn_case(cp, quant, rng, n_exp, k, d, d,
                                                               t_tok)
            qa = quant.quantize_activations(xq, x, stream=stream)
            turn = [0]

            def gate_up(kw) -> None:
                ids = sets[turn[0] % 8][0]
                turn[0] += 1
                quant.expert_gate_up(g, u, x, wg, wu, ids, stream=stream, x_q8=qa, **kw)

            qd = quant.quantize_activations(aq, act.reshape(t_tok * k, d), stream=stream)

            def down(kw) -> None:
                ids = sets[turn[0] % 8][0]
                turn[0] += 1
                quant.expert_matvec(y, act, wd, ids, x_per_slot=True, stream=stream, x_q8=qd,
                                    **kw)

            def ffn(kw) -> None:
                ids = sets[turn[0] % 8][0]
                turn[0] += 1
                a = quant.quantize_activations(xq, x, stream=stream)
                quant.expert_gate_up(g, u, x, wg, wu, ids, stream=stream, x_q8=a, **kw)
                b = quant.quantize_activations(aq, act.reshape(t_tok * k, d), stream=stream)
                quant.expert_matvec(y, act, wd, ids, x_per_slot=True, stream=stream, x_q8=b,
                                    **kw)

            for group, fn, mats, title in (
                    ("experts", gate_up, 2, f"MXFP4 expert gate+up, T={t_tok} "
                                            f"(~{distinct:.0f} experts)"),
                    ("down", down, 1, f"MXFP4 expert down (x per slot), T={t_tok}"),
                    ("ffn", ffn, 3, f"MXFP4 expert FFN (2 roundings, gate+up, down), T={t_tok}")):
                if group not in groups:
                    continue
                variants = {"default": lambda fn=fn: fn({})}
                variants.update({kk: (lambda kw=kw, fn=fn: toggled(quant, fn, kw))
                                 for kk, kw in kernels.items()})
                interleaved(cp, stream, variants, distinct * mats * wg.matrix_bytes, peak, title,
                            args.rounds)
    say(f"\nwall {time.perf_counter() - t0:.1f} s")
    if args.out:
        args.out.write_text("\n".join(LINES) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
