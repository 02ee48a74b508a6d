"""GPU kernel benchmarks (asv). Skipped (NotImplementedError in setup) where no GPU is usable.

One class per operation, ``params`` over the real shapes; data from seeded generators; the
timed body is one launch plus a device sync (asv times wall clock, so this includes the
Python launch cost of ~6 us for CuPy / ~19 us for Numba: for launch-free device times and
GB/s against the measured peak, run ``scripts/kernel_bench.py`` on the device).
Compilation happens in ``setup`` (a first call), never inside a timing.
"""

from __future__ import annotations

import numpy as np


def _gpu():
    from orcd_toolkit.kernels.device import gpu_status

    status = gpu_status()
    if not status.usable:
        raise NotImplementedError(f"no GPU: {status.reason}")
    import cupy

    return cupy


class QuantMatvec:
    """Decode linear layer (batch 1 and 8) on raw GGUF blocks."""

    params = (["Q4_K", "Q5_0", "Q6_K", "Q8_0", "MXFP4"],
              [(896, 4864), (4864, 896), (151936, 896)], [1, 8])
    param_names = ["qtype", "rows_cols", "batch"]

    def setup(self, qtype: str, rows_cols: tuple[int, int], batch: int) -> None:
        cp = _gpu()
        from orcd_toolkit.gguf.quants import random_blocks
        from orcd_toolkit.gguf.types import GGMLType
        from orcd_toolkit.kernels import quant

        rows, cols = rows_cols
        qt = GGMLType[qtype]
        if cols % (256 if qt in (GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K) else 32):
            raise NotImplementedError(f"{qtype} rows of {cols} are not whole blocks")
        rng = np.random.default_rng(0)
        self.cp, self.quant = cp, quant
        self.w = quant.QuantWeight(cp.asarray(random_blocks(qt, (rows, cols), rng)), qt, rows, cols)
        self.x = cp.asarray(rng.normal(0, 1, (batch, cols)).astype(np.float32))
        self.y = cp.empty((batch, rows), cp.float32)
        quant.matvec(self.y, self.x, self.w)
        cp.cuda.Device().synchronize()

    def time_matvec(self, *_: object) -> None:
        self.quant.matvec(self.y, self.x, self.w)
        self.cp.cuda.Device().synchronize()


class QuantMatmulPrefill:
    """Prefill linear layer (512 tokens) on tensor cores."""

    params = (["Q4_K", "Q8_0"], [(896, 4864), (4864, 896) ])
    param_names = ["qtype", "rows_cols"]

    def setup(self, qtype: str, rows_cols: tuple[int, int]) -> None:
        QuantMatvec.setup(self, qtype, rows_cols, 512)
        self.quant.matmul(self.y, self.x, self.w)
        self.cp.cuda.Device().synchronize()

    def time_matmul(self, *_: object) -> None:
        self.quant.matmul(self.y, self.x, self.w)
        self.cp.cuda.Device().synchronize()


class FlashAttentionDecode:
    """Split-K decode attention, Qwen2.5-0.5B heads, context 4096."""

    params = ([1, 8, 32],)
    param_names = ["batch"]

    def setup(self, batch: int) -> None:
        cp = _gpu()
        from orcd_toolkit.kernels import attention

        rng = np.random.default_rng(1)
        hq, hkv, hd, bs, ctx = 14, 2, 64, 16, 4096
        nblk = batch * ctx // bs
        self.cp = cp
        self.kc = cp.asarray(rng.normal(0, 1, (nblk, bs, hkv, hd)).astype(np.float16))
        self.vc = cp.asarray(rng.normal(0, 1, (nblk, bs, hkv, hd)).astype(np.float16))
        self.tables = cp.asarray(rng.permutation(nblk).astype(np.int32).reshape(batch, -1))
        self.starts = cp.arange(batch + 1, dtype=cp.int32)
        self.lens = cp.full(batch, ctx, cp.int32)
        self.q = cp.asarray(rng.normal(0, 1, (batch, hq, hd)).astype(np.float32))
        self.out = cp.empty_like(self.q)
        self.shape = attention.AttentionShape(batch, batch, 1, ctx, hq, hkv, hd)
        self.kern = attention.FlashAttention()
        self.ws = cp.empty(self.kern.workspace_shape(self.shape), cp.float32)
        self.time_flash()

    def time_flash(self, *_: object) -> None:
        self.kern(self.out, self.q, self.kc, self.vc, self.tables, self.starts, self.lens,
                  self.shape, self.ws, scale=0.125)
        self.cp.cuda.Device().synchronize()
