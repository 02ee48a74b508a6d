"""NumPy dequantization, quantization and reference products for the supported types.

``gguf.quants`` is the executable definition of every block format (DESIGN.md §5), so
``dequantize`` delegates to it and only adds shape/size checks and a float32, writable result;
golden vectors in ``tests/gguf/data`` pin its output bit for bit. ``quantize`` uses
``gguf.quants.quantize`` where it exists (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, MXFP4)
and ``kquants`` (port of llama.cpp's C reference quantizers) for Q4_K, Q5_K, Q6_K;
``random_blocks`` makes well-formed random blocks of any type (fast synthetic weights).

``matmul``/``matvec``/``dot`` are the reference products for the quantized matmul kernels:
weights dequantized in bounded row chunks, products accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from orcd_toolkit.gguf import kquants
from orcd_toolkit.gguf.errors import GGUFQuantizeError, GGUFTensorError
from orcd_toolkit.gguf.types import LAYOUTS, GGMLType, row_bytes, to_ggml_type

# gguf.quants has a quantizer for these (K-quants only dequantize there)
GGUF_QUANTIZABLE: frozenset[GGMLType] = frozenset(
    {
        GGMLType.F32,
        GGMLType.F16,
        GGMLType.BF16,
        GGMLType.Q4_0,
        GGMLType.Q4_1,
        GGMLType.Q5_0,
        GGMLType.Q5_1,
        GGMLType.Q8_0,
        GGMLType.MXFP4,
    }
)
# every supported type can be quantized: K-quants by our port of llama.cpp's C reference
QUANTIZABLE: frozenset[GGMLType] = frozenset(GGMLType)
_KQUANTIZERS = {
    GGMLType.Q4_K: kquants.quantize_q4_k,
    GGMLType.Q5_K: kquants.quantize_q5_k,
    GGMLType.Q6_K: kquants.quantize_q6_k,
}

# byte offsets of the f16 scale fields inside one block (ggml-common.h block_* structs)
_F16_FIELDS: dict[GGMLType, tuple[int, ...]] = {
    GGMLType.Q4_0: (0,),
    GGMLType.Q4_1: (0, 2),
    GGMLType.Q5_0: (0,),
    GGMLType.Q5_1: (0, 2),
    GGMLType.Q8_0: (0,),
    GGMLType.Q4_K: (0, 2),
    GGMLType.Q5_K: (0, 2),
    GGMLType.Q6_K: (208,),
}

# (low, high) of the random f16 scales: K-quants multiply d by 6-bit (Q4_K/Q5_K) or int8
# (Q6_K) sub-scales, so their d must be smaller for |x| to stay ~1
_SCALE_RANGE: dict[GGMLType, tuple[float, float]] = {
    GGMLType.Q4_K: (2e-4, 1e-3),
    GGMLType.Q5_K: (1e-4, 5e-4),
    GGMLType.Q6_K: (5e-5, 2.5e-4),
}


def _gguf_type(qtype: GGMLType) -> object:
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType(int(qtype))


def _shape_tuple(shape: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(d) for d in shape)
    if not out or any(d < 1 for d in out):
        raise GGUFTensorError(f"invalid tensor shape {out}", rule="dimension")
    return out


def dequantize(raw: np.ndarray, qtype: GGMLType | int, shape: Sequence[int]) -> np.ndarray:
    """Decode raw GGUF blocks (``uint8``, any shape with the right byte count) into a new
    float32 array of numpy ``shape`` (last axis = row), bit-identical to ``gguf.quants``."""
    from gguf import quants

    qt = to_ggml_type(int(qtype))
    shp = _shape_tuple(shape)
    rb = row_bytes(qt, shp[-1])
    n_rows = int(np.prod(shp[:-1], dtype=np.int64)) if len(shp) > 1 else 1
    data = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if data.size != n_rows * rb:
        raise GGUFTensorError(
            f"{qt.name} data of shape {shp} needs {n_rows * rb} bytes, got {data.size}",
            rule="tensor_size",
        )
    rows = data.reshape(n_rows, rb)
    if qt == GGMLType.F32:
        out = rows.view(np.float32).copy()
    else:
        # garbage scales (NaN/inf f16 in a hostile or random block) must decode to NaN/inf
        # like ggml does, without numpy's RuntimeWarnings; values are unaffected by errstate
        with np.errstate(all="ignore"):
            out = quants.dequantize(rows, _gguf_type(qt))
        out = np.asarray(out, dtype=np.float32)
        if not out.flags.writeable or out.base is not None and not out.flags.owndata:
            out = out.copy()
    return out.reshape(shp)


def quantize(values: np.ndarray, qtype: GGMLType | int) -> np.ndarray:
    """Encode float values into raw ``uint8`` blocks of ``qtype`` (shape ``[..., row_bytes]``).

    ``gguf.quants.quantize`` (llama.cpp's Python reference) for F32, F16, BF16, Q4_0, Q4_1,
    Q5_0, Q5_1, Q8_0, MXFP4; Q4_K/Q5_K/Q6_K by ``kquants`` (a NumPy port of ggml's
    ``quantize_row_q*_K_ref``, byte-identical to the C code). K-quant inputs must be finite."""
    from gguf import quants

    qt = to_ggml_type(int(qtype))
    x = np.asarray(values, dtype=np.float32)
    if x.ndim == 0:
        raise GGUFQuantizeError("cannot quantize a scalar: give at least one row")
    row_bytes(qt, x.shape[-1])  # raises if the row does not fill whole blocks
    if qt == GGMLType.F32:
        q = np.ascontiguousarray(x)
    elif qt == GGMLType.F16:
        q = np.ascontiguousarray(x.astype(np.float16))
    elif qt in _KQUANTIZERS:
        if not np.isfinite(x).all():
            raise GGUFQuantizeError(f"{qt.name} quantization needs finite values")
        q = _KQUANTIZERS[qt](x)
    else:
        q = np.ascontiguousarray(quants.quantize(x, _gguf_type(qt)))
    return q.view(np.uint8).reshape(x.shape[:-1] + (row_bytes(qt, x.shape[-1]),))


def random_blocks(
    qtype: GGMLType | int, shape: Sequence[int], rng: np.random.Generator
) -> np.ndarray:
    """Well-formed random raw data of ``qtype`` for a tensor of numpy ``shape``.

    Codes, packed scales and high bits are uniform random bytes (every bit pattern is a valid
    code); the f16 (super-)scales are finite, positive and small enough that dequantized
    values stay within a few units, like trained weights; MXFP4 exponents stay within 2^-8..2^0 (|x| <= 6). F32/F16/BF16
    are N(0, 0.05) values. Deterministic for a given ``rng`` state.
    """
    qt = to_ggml_type(int(qtype))
    shp = _shape_tuple(shape)
    layout = LAYOUTS[qt]
    if qt in (GGMLType.F32, GGMLType.F16, GGMLType.BF16):
        values = rng.normal(0.0, 0.05, size=shp).astype(np.float32)
        return quantize(values, qt)
    rb = row_bytes(qt, shp[-1])
    n_blocks = int(np.prod(shp[:-1], dtype=np.int64)) * (shp[-1] // layout.block_elems)
    blocks = rng.integers(0, 256, size=(n_blocks, layout.block_bytes), dtype=np.uint8)
    if qt == GGMLType.MXFP4:
        # E8M0 exponent byte e means 2^(e-127); ggml's half-scale convention is applied on decode
        blocks[:, 0] = rng.integers(127 - 8, 127 + 1, size=n_blocks, dtype=np.uint8)
    lo, hi = _SCALE_RANGE.get(qt, (1e-3, 5e-2))
    for off in _F16_FIELDS.get(qt, ()):
        scale = rng.uniform(lo, hi, size=n_blocks).astype(np.float16)
        blocks[:, off : off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(shp[:-1] + (rb,))


def _check_matrix(
    raw: np.ndarray, qtype: GGMLType | int, shape: Sequence[int]
) -> tuple[GGMLType, int, int, np.ndarray]:
    qt = to_ggml_type(int(qtype))
    shp = _shape_tuple(shape)
    if len(shp) != 2:
        raise GGUFTensorError(
            f"a weight matrix needs a 2-D shape (out, in), got {shp}", rule="dimension"
        )
    n_out, n_in = shp
    rb = row_bytes(qt, n_in)
    data = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if data.size != n_out * rb:
        raise GGUFTensorError(
            f"{qt.name} matrix {shp} needs {n_out * rb} bytes, got {data.size}", rule="tensor_size"
        )
    return qt, n_out, n_in, data.reshape(n_out, rb)


def matmul(
    x: np.ndarray,
    raw: np.ndarray,
    qtype: GGMLType | int,
    shape: Sequence[int],
    *,
    chunk_rows: int = 1024,
) -> np.ndarray:
    """Reference ``x @ W.T`` for a GGUF weight ``W`` of numpy shape ``(out, in)`` stored as raw
    blocks: ``x`` is ``[..., in]``, the result ``float32[..., out]``. ``W`` is dequantized
    ``chunk_rows`` rows at a time (bounded memory) and products accumulate in float64."""
    qt, n_out, n_in, rows = _check_matrix(raw, qtype, shape)
    xs = np.asarray(x, dtype=np.float32)
    if xs.shape[-1:] != (n_in,):
        raise GGUFTensorError(
            f"activation last axis {xs.shape[-1:] or '()'} does not match weight input size {n_in}",
            rule="dimension",
        )
    x2 = xs.reshape(-1, n_in).astype(np.float64)
    out = np.empty((x2.shape[0], n_out), dtype=np.float64)
    step = max(1, int(chunk_rows))
    for start in range(0, n_out, step):
        stop = min(n_out, start + step)
        w = dequantize(rows[start:stop], qt, (stop - start, n_in)).astype(np.float64)
        out[:, start:stop] = x2 @ w.T
    return out.astype(np.float32).reshape(xs.shape[:-1] + (n_out,))


def matvec(
    raw: np.ndarray, qtype: GGMLType | int, shape: Sequence[int], x: np.ndarray
) -> np.ndarray:
    """Reference ``W @ x`` for a weight of shape ``(out, in)`` and ``x`` of shape ``(in,)``."""
    return matmul(np.asarray(x).reshape(1, -1), raw, qtype, shape)[0]


def dot(raw_row: np.ndarray, qtype: GGMLType | int, x: np.ndarray) -> float:
    """Reference dot product of one quantized row (raw blocks) with float values ``x``."""
    xs = np.asarray(x, dtype=np.float32).reshape(-1)
    w = dequantize(raw_row, qtype, (xs.size,)).astype(np.float64)
    return float(np.dot(w, xs.astype(np.float64)))
