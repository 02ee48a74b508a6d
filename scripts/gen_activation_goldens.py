#!/usr/bin/env python
"""Goldens for ``ops.round_activations``: llama.cpp's own activation quantizers on fixed inputs.

Before a quantized matmul, ggml-cpu converts the f32 activations to the weight type's
``vec_dot_type`` with ``ggml_get_type_traits_cpu(type)->from_float`` (Q8_0, Q8_1, Q8_K, F16,
BF16; x86 AVX code on this build). This script calls exactly those functions from the
libggml-cpu of the pinned llama-cpp-python 0.3.36 wheel through ctypes, decodes the blocks
the way the dot products use them (value = q * d), and stores inputs and outputs in
tests/models/data/activation_goldens.npz. Run it in the golden venv:

    /root/.cache/orcd-build/venv-golden/bin/python scripts/gen_activation_goldens.py
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "models" / "data" / "activation_goldens.npz"

# ggml type ids (ggml.h)
F16, Q8_0, Q8_1, Q8_K, BF16 = 1, 8, 9, 15, 30


class _TraitsCpu(ctypes.Structure):
    _fields_ = [
        ("from_float", ctypes.c_void_p),
        ("vec_dot", ctypes.c_void_p),
        ("vec_dot_type", ctypes.c_int),
        ("nrows", ctypes.c_int64),
    ]


FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
# vec_dot(n, float *s, size_t bs, const void *x, size_t bx, const void *y, size_t by, int nrc)
VEC_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                           ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
# vec_dot_type -> bytes per block of 32 (or 256) activations, block size
ACT_BLOCK = {Q8_0: (34, 32), Q8_1: (36, 32), Q8_K: (292, 256), F16: (2, 1), BF16: (2, 1), 0: (4, 1)}


def inputs() -> dict[str, np.ndarray]:
    """Activation-like rows: Gaussian, heavy-tailed with outliers (the residual stream of a
    real model), all-zero blocks, exact halves (rounding ties), tiny and huge magnitudes."""
    rng = np.random.default_rng(20261126)
    k = 512
    gauss = rng.standard_normal((8, k)).astype(np.float32)
    heavy = (rng.standard_t(2.5, (8, k)) * 3).astype(np.float32)
    heavy[:, rng.integers(0, k, 6)] *= 200.0  # a few massive activations
    zeros = rng.standard_normal((2, k)).astype(np.float32)
    zeros[:, 256:512] = 0.0
    zeros[1, :32] = 0.0
    ties = (rng.integers(-254, 255, (4, k)) / 2.0).astype(np.float32)
    ties[:, ::32] = 127.0  # amax 127 -> scale 1: every x.5 is an exact tie
    scales = (rng.standard_normal((4, k)) * np.float32(1e-6)).astype(np.float32)
    scales[2:] *= np.float32(1e10)
    return {"x": np.concatenate([gauss, heavy, zeros, ties, scales])}


def main() -> int:
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so"))
    lib.ggml_cpu_init()
    lib.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_TraitsCpu)
    lib.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
    x = np.ascontiguousarray(inputs()["x"])
    n, k = x.shape
    out: dict[str, np.ndarray] = {"x": x}
    for name, t, block, nbytes in (("q8_0", Q8_0, 32, 34), ("q8_1cpu", Q8_1, 32, 36),
                                   ("q8_K", Q8_K, 256, 292), ("f16", F16, 1, 2),
                                   ("bf16", BF16, 1, 2)):
        fn = FROM_FLOAT(lib.ggml_get_type_traits_cpu(t).contents.from_float)
        raw = np.zeros((n, k // block * nbytes), np.uint8)
        for i in range(n):
            fn(x[i].ctypes.data, raw[i].ctypes.data, k)
        b = raw.reshape(n, k // block, nbytes)
        if name == "f16":
            val = raw.view(np.float16).astype(np.float32)
        elif name == "bf16":
            val = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif name == "q8_K":
            d = b[..., :4].copy().view(np.float32)
            q = b[..., 4:260].copy().view(np.int8).astype(np.float32)
            val = (q * d).reshape(n, k)
        else:
            d = b[..., :2].copy().view(np.float16).astype(np.float32)
            q = b[..., nbytes - 32:].copy().view(np.int8).astype(np.float32)
            val = (q * d).reshape(n, k)
        out[name] = val.astype(np.float32)
    # llama.cpp's dot of random weight rows of every supported type with those activations
    import sys

    sys.path.insert(0, str(REPO))
    from orcd_toolkit.gguf.quants import random_blocks
    from orcd_toolkit.gguf.types import GGMLType

    rng = np.random.default_rng(7)
    x_dot = x[[0, 1, 8, 9, 16, 18, 22]]  # gaussian, heavy-tailed, zero blocks, ties, tiny
    out["dot_x"] = x_dot
    for qt in GGMLType:
        if qt == GGMLType.F32:
            continue
        w = np.ascontiguousarray(random_blocks(qt, (6, k), rng))
        tr = lib.ggml_get_type_traits_cpu(int(qt)).contents
        vdt = tr.vec_dot_type
        nbytes, block = ACT_BLOCK[vdt]
        to_vdt = FROM_FLOAT(lib.ggml_get_type_traits_cpu(vdt).contents.from_float)
        dot = VEC_DOT(tr.vec_dot)
        res = np.zeros((len(x_dot), w.shape[0]), np.float32)
        s = np.zeros(1, np.float32)
        for i, xi in enumerate(x_dot):
            xi = np.ascontiguousarray(xi)
            act = np.zeros(k // block * nbytes, np.uint8)
            to_vdt(xi.ctypes.data, act.ctypes.data, k)
            for r in range(w.shape[0]):
                row = np.ascontiguousarray(w[r])
                dot(k, s.ctypes.data, 0, row.ctypes.data, 0, act.ctypes.data, 0, 1)
                res[i, r] = s[0]
        out[f"dot_w/{qt.name}"] = w
        out[f"dot_y/{qt.name}"] = res
    out["versions"] = np.array(f"llama-cpp-python {llama_cpp.__version__}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB): {sorted(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
