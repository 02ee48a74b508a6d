#!/usr/bin/env python
"""Generate tests/gguf/data/dequant_goldens.npz: raw blocks and their gguf.quants decoding.

For every supported type it stores raw blocks and the float32 values ``gguf.quants.dequantize``
gives for them (as uint32 bit patterns, so the check is bit for bit), from three sources:

- ``random``: well-formed random blocks (``orcd_toolkit.gguf.random_blocks``, fixed seed);
- ``edge``: random blocks whose scale fields are set to edge values (0, -0, negative,
  subnormal, max f16, inf, NaN; for MXFP4 exponent bytes 0, 1, 2, 127, 254, 255);
- ``quant``: for types gguf.quants can quantize, fixed float inputs and their quantized bytes
  (pins the quantizers too);
- ``real``: one row of one tensor of each type found in the real model files (Qwen2.5-Coder
  0.5B: Q5_0, Q8_0, Q6_K, Q4_K, F32; SmolLM2: Q4_1), when those are in the model store.

The reference here is ``gguf.quants`` itself (imported directly, not through our wrapper), so
the test guards both our wrapper and a future ``gguf`` upgrade that changes a decoding.
Run: ``python scripts/gen_dequant_goldens.py`` (writes the .npz, prints a summary).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "gguf" / "data" / "dequant_goldens.npz"
ROWS, COLS = 2, 512

F16_EDGES = np.array(
    [0.0, -0.0, -0.0123, 6.0e-8, 6.1e-5, 65504.0, np.inf, -np.inf, np.nan], dtype=np.float16
)
MXFP4_EDGE_EXPONENTS = np.array([0, 1, 2, 127, 254, 255], dtype=np.uint8)


def _reference(raw: np.ndarray, qtype: int) -> np.ndarray:
    from gguf import GGMLQuantizationType, quants

    with np.errstate(all="ignore"):
        out = quants.dequantize(raw, GGMLQuantizationType(qtype))
    return np.ascontiguousarray(out, dtype=np.float32)


def main() -> int:
    sys.path.insert(0, str(REPO))
    import gguf as gguf_pkg

    from orcd_toolkit import gguf
    from orcd_toolkit.gguf.quants import _F16_FIELDS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    arrays: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(20261126)
    for qt in gguf.GGMLType:
        name = qt.name
        # random
        raw = gguf.random_blocks(qt, (ROWS, COLS), rng)
        arrays[f"{name}/random/raw"] = raw
        arrays[f"{name}/random/out"] = _reference(raw, int(qt)).view(np.uint32)
        # edge scales
        edge = raw.copy()
        layout = gguf.LAYOUTS[qt]
        if qt == gguf.GGMLType.MXFP4:
            blocks = edge.reshape(-1, layout.block_bytes)
            blocks[:, 0] = MXFP4_EDGE_EXPONENTS[np.arange(len(blocks)) % len(MXFP4_EDGE_EXPONENTS)]
        elif qt in _F16_FIELDS:
            blocks = edge.reshape(-1, layout.block_bytes)
            for off in _F16_FIELDS[qt]:
                vals = F16_EDGES[(np.arange(len(blocks)) + off) % len(F16_EDGES)]
                blocks[:, off : off + 2] = vals.view(np.uint8).reshape(-1, 2)
        else:  # F32/F16/BF16: the raw bytes themselves hold edge values
            flat = edge.reshape(-1)
            width = {gguf.GGMLType.F32: 4, gguf.GGMLType.F16: 2, gguf.GGMLType.BF16: 2}[qt]
            pats = {
                4: np.array(
                    [0, 0x80000000, 1, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F7FFFFF],
                    dtype=np.uint32,
                ),
                2: np.array(
                    [0, 0x8000, 1, 0x7C00, 0xFC00, 0x7E00, 0x7BFF, 0x7F80, 0x7FC0], dtype=np.uint16
                ),
            }[width]
            flat[: pats.nbytes] = pats.view(np.uint8)
        arrays[f"{name}/edge/raw"] = edge
        arrays[f"{name}/edge/out"] = _reference(edge, int(qt)).view(np.uint32)
        # quantizers
        if qt in gguf.GGUF_QUANTIZABLE:
            x = (rng.standard_normal((ROWS, COLS)) * np.logspace(-3, 1, COLS)).astype(np.float32)
            x[0, :32] = 0.0  # an all-zero block
            with np.errstate(all="ignore"):
                q = gguf_pkg.quants.quantize(x, gguf_pkg.GGMLQuantizationType(int(qt)))
            q = np.ascontiguousarray(q).view(np.uint8).reshape(ROWS, -1)
            arrays[f"{name}/quant/in"] = x
            arrays[f"{name}/quant/raw"] = q
            arrays[f"{name}/quant/out"] = _reference(q, int(qt)).view(np.uint32)

    store = Path.home() / ".cache" / "orcd" / "models"
    for fname in ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "smollm2-135m-instruct-q4_1.gguf"):
        p = store / fname
        if not p.is_file():
            print(f"skipping real rows: {p} not present", file=sys.stderr)
            continue
        f = gguf.load(p)
        for t in f.tensors.values():
            key = f"{t.qtype.name}/real"
            if f"{key}/raw" in arrays or len(t.shape) != 2:
                continue
            raw = np.array(t.raw()[:1])
            arrays[f"{key}/raw"] = raw
            arrays[f"{key}/out"] = _reference(raw, int(t.qtype)).view(np.uint32)
            arrays[f"{key}/source"] = np.array(f"{fname}:{t.name}")

    arrays["meta/gguf_version"] = np.array(_gguf_version())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    kinds = sorted({k.rsplit("/", 1)[0] for k in arrays if k.count("/") == 2})
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): {len(kinds)} cases")
    for k in kinds:
        print("  ", k, arrays[f"{k}/raw"].shape)
    return 0


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


if __name__ == "__main__":
    sys.exit(main())
