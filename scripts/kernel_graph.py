"""Graph-capture check on the device: one decoder layer (mixed Numba + CuPy kernels) at
batch 1, run eagerly, captured once, replayed; the replay must equal the eager result
bit for bit. Reports host time per replay (launch only) and device time per replay.

    NUMBA_CUDA_ARRAY_INTERFACE_SYNC=0 python scripts/kernel_graph.py [--out graph.txt]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_CUDA_ARRAY_INTERFACE_SYNC", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--replays", type=int, default=2000)
    args = ap.parse_args(argv)

    import cupy as cp

    from orcd_toolkit.kernels.device import probe_cupy
    from orcd_toolkit.kernels.graph import capture
    from orcd_toolkit.kernels.layer_demo import DecoderLayerDemo

    name = probe_cupy().name
    stream = cp.cuda.Stream(non_blocking=True)
    layer = DecoderLayerDemo(cp, stream)
    t0 = time.perf_counter()
    layer.step()  # compiles every kernel
    stream.synchronize()
    compile_s = time.perf_counter() - t0
    layer.step()
    stream.synchronize()
    eager = layer.out.get().copy()
    # eager host time per layer (launch cost from Python)
    n_eager = 200
    t0 = time.perf_counter()
    for _ in range(n_eager):
        layer.step()
    eager_host = (time.perf_counter() - t0) / n_eager
    stream.synchronize()
    eager_wall = (time.perf_counter() - t0) / n_eager

    with stream:  # on the layer's stream: ordered before the launches that follow
        layer.out.fill(np.nan)
    stream.synchronize()  # nothing pending on the stream when its capture begins
    graph = capture(layer.step, stream)
    graph.launch(stream)
    stream.synchronize()
    replay = layer.out.get().copy()
    equal = bool(np.array_equal(replay, eager))
    maxdiff = float(np.max(np.abs(replay - eager))) if replay.shape == eager.shape else float("inf")
    # a replay after other work still gives the same answer
    with stream:
        layer.out.fill(0)
    for _ in range(3):
        graph.launch(stream)
    stream.synchronize()
    equal_again = bool(np.array_equal(layer.out.get(), eager))

    # the same layer captured with programmatic dependent launch on the int8 products and
    # the q8_1 rounding: the next product's weight copies start under the previous kernel
    from orcd_toolkit.kernels import quant

    def step_pdl() -> None:
        with quant.programmatic_launches():
            layer.step()

    with stream:  # on the layer's stream: ordered before the launches that follow
        layer.out.fill(np.nan)
    step_pdl()  # eager, through cuLaunchKernelEx
    stream.synchronize()
    pdl_eager_equal = bool(np.array_equal(layer.out.get(), eager))
    with stream:  # on the layer's stream: ordered before the launches that follow
        layer.out.fill(np.nan)
    stream.synchronize()
    graph_pdl = capture(step_pdl, stream)
    graph_pdl.launch(stream)
    stream.synchronize()
    pdl_equal = bool(np.array_equal(layer.out.get(), eager))
    n = args.replays

    def device_us_per_replay(g) -> float:
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(stream)
        for _ in range(n):
            g.launch(stream)
        end.record(stream)
        end.synchronize()
        return cp.cuda.get_elapsed_time(start, end) / n * 1e3

    pdl_dev_per = device_us_per_replay(graph_pdl)
    t0 = time.perf_counter()
    for _ in range(n):
        graph.launch(stream)
    host_per = (time.perf_counter() - t0) / n
    stream.synchronize()
    wall_per = (time.perf_counter() - t0) / n
    dev_per = device_us_per_replay(graph)

    lines = [
        f"device: {name}",
        "decoder layer: Qwen2.5-0.5B shapes, batch 1, context 300, "
        f"{layer.num_kernels} kernels (Numba: 2 norms, rope+KV write, swiglu, add; CuPy: 7 matvec, "
        "flash attention + combine)",
        f"first eager run (compile + load): {compile_s:.2f} s",
        f"eager: host {eager_host * 1e6:.1f} us/layer, wall {eager_wall * 1e6:.1f} us/layer",
        f"graph replay equals eager: {equal} (max |diff| {maxdiff:.3g}); after 3 more replays: {equal_again}",
        f"graph: host {host_per * 1e6:.2f} us/replay (launch only), wall {wall_per * 1e6:.2f} us/replay, "
        f"device {dev_per:.2f} us/replay (events, {n} replays)",
        f"graph with programmatic dependent launch (int8 products, q8_1 rounding): equals eager: "
        f"{pdl_equal} (eager PDL launches: {pdl_eager_equal}); device {pdl_dev_per:.2f} us/replay",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if equal and equal_again and pdl_equal and pdl_eager_equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
