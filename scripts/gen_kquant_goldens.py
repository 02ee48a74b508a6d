#!/usr/bin/env python
"""Record llama.cpp's K-quant quantizer output: tests/gguf/data/kquant_goldens.npz.

For Q4_K, Q5_K and Q6_K, quantizes fixed float inputs with ggml's C reference quantizer
(``ggml_get_type_traits(type)->from_float_ref`` = ``quantize_row_q*_K_ref``, libggml-base of the
llama-cpp-python 0.3.36 wheel, through ctypes) and stores inputs and bytes; the test checks
that ``orcd_toolkit.gguf.quantize`` (our NumPy port, kquants.py) gives the same bytes. Inputs
cover normal weights, wide dynamic range, all-positive/all-negative/constant/zero sub-blocks
and outliers. Run in the golden venv:

    /root/.cache/orcd-build/venv-golden/bin/python scripts/gen_kquant_goldens.py
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "gguf" / "data" / "kquant_goldens.npz"
FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
TYPES = {"Q4_K": (12, 144), "Q5_K": (13, 176), "Q6_K": (14, 210)}


class _TypeTraits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


def inputs() -> np.ndarray:
    """16 rows of 512 values (32 super-blocks) with the cases named in the docstring."""
    rng = np.random.default_rng(20261126)
    x = rng.standard_normal((16, 512)).astype(np.float32) * 0.02
    x[1] *= np.logspace(-4, 2, 512, dtype=np.float32)  # wide dynamic range
    x[2] = np.abs(x[2])  # all positive
    x[3] = -np.abs(x[3])  # all negative
    x[4, :256] = 0.125  # constant super-block
    x[4, 256:] = 0.0  # zero super-block
    x[5, ::37] = 3.0  # outliers
    x[6, :32] = 0.0  # one zero sub-block inside a normal super-block
    x[7] = rng.uniform(-1, 1, 512).astype(np.float32)
    x[8] = np.round(x[8] * 1000) / 1000  # many ties
    x[9, :16] = 1e-20  # tiny values (below GROUP_MAX_EPS)
    x[10] = rng.standard_normal(512).astype(np.float32) * 40.0  # large values
    return x


def main() -> int:
    import argparse

    import llama_cpp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--check-random",
        type=int,
        default=0,
        metavar="N",
        help="also compare our NumPy port with the C code on N random super-blocks per type",
    )
    args = ap.parse_args()

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    x = np.ascontiguousarray(inputs())
    arrays = {"in": x}
    for name, (tid, block_bytes) in TYPES.items():
        tr = lib.ggml_get_type_traits(tid).contents
        assert tr.type_size == block_bytes and tr.blck_size == 256
        out = np.zeros(x.size // 256 * block_bytes, np.uint8)
        FROM_FLOAT(tr.from_float_ref)(x.ctypes.data, out.ctypes.data, x.size)
        arrays[f"{name}/raw"] = out.reshape(x.shape[0], -1)
    arrays["meta/llama_cpp_python"] = np.array(llama_cpp.__version__)
    if args.check_random:
        sys.path.insert(0, str(REPO))
        from orcd_toolkit.gguf import GGMLType, quantize

        rng = np.random.default_rng(1)
        for name, (tid, block_bytes) in TYPES.items():
            tr = lib.ggml_get_type_traits(tid).contents
            n = args.check_random
            scale = np.exp(rng.uniform(-8, 3, size=(n, 1))).astype(np.float32)
            xr = (rng.standard_t(3, size=(n, 256)) * scale).astype(np.float32)
            ref = np.zeros(n * block_bytes, np.uint8)
            FROM_FLOAT(tr.from_float_ref)(xr.ctypes.data, ref.ctypes.data, xr.size)
            ours = quantize(xr, GGMLType[name]).reshape(-1)
            bad = int(np.count_nonzero((ours != ref).reshape(n, -1).any(axis=1)))
            print(f"{name}: {n} random super-blocks, {bad} differ from ggml C")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
