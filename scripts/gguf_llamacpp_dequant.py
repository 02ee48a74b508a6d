#!/usr/bin/env python
"""Check the checked-in dequantization goldens against ggml's own C code.

The goldens (tests/gguf/data/dequant_goldens.npz) come from ``gguf.quants`` (Python). This
script decodes the same raw blocks with ggml's C ``to_float`` of each type
(``ggml_get_type_traits(type)->to_float`` in libggml-base of the llama-cpp-python 0.3.36
wheel, through ctypes) and compares bit patterns, so "bit for bit with gguf.quants" also
means "bit for bit with llama.cpp's CPU dequantization". Run it in the golden venv:

    /root/.cache/orcd-build/venv-golden/bin/python scripts/gguf_llamacpp_dequant.py
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GOLDENS = REPO / "tests" / "gguf" / "data" / "dequant_goldens.npz"

TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


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


def main() -> int:
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    sys.path.insert(0, str(REPO))
    from orcd_toolkit.gguf import LAYOUTS, GGMLType

    with np.load(GOLDENS) as z:
        g = {k: z[k] for k in z.files}
    cases = sorted({k.rsplit("/", 1)[0] for k in g if k.endswith("/raw")})
    bad = 0
    for case in cases:
        qt = GGMLType[case.split("/")[0]]
        tr = lib.ggml_get_type_traits(int(qt)).contents
        layout = LAYOUTS[qt]
        assert (tr.blck_size, tr.type_size) == (layout.block_elems, layout.block_bytes), qt
        raw = np.ascontiguousarray(g[f"{case}/raw"])
        n = raw.size // layout.block_bytes * layout.block_elems
        out = np.empty(n, np.float32)
        if qt == GGMLType.F32:
            out[:] = raw.view(np.float32).reshape(-1)
        else:
            TO_FLOAT(tr.to_float)(raw.ctypes.data, out.ctypes.data, n)
        ref = g[f"{case}/out"].reshape(-1)
        c_bits = out.view(np.uint32)
        nan_c, nan_ref = np.isnan(out), np.isnan(ref.view(np.float32))
        same = np.array_equal(nan_c, nan_ref) and np.array_equal(c_bits[~nan_c], ref[~nan_ref])
        n_diff = int(np.count_nonzero(c_bits != ref))
        print(
            f"{case:<14} {tr.type_name.decode():<6} {n:>6} values: "
            f"{'bit-identical' if same else f'{n_diff} DIFFER'}"
        )
        bad += not same
    print(f"\n{len(cases) - bad}/{len(cases)} cases bit-identical between gguf.quants and ggml C")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
