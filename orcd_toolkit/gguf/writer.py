"""Writing synthetic GGUF files (any supported tensor type, any metadata value kind).

A thin layer over ``gguf.GGUFWriter`` (the writer llama.cpp's own conversion scripts use, so
its output is what llama.cpp reads): it adds explicit value typing (``MetaValue``), raw-block
tensors of every supported type (``TensorData``), and validates the result with our own
reader when asked. Plain Python values get a default type: ``bool`` -> BOOL, ``int`` ->
UINT32 (INT32/INT64/UINT64 when out of range), ``float`` -> FLOAT32, ``str`` -> STRING, a
list of ``str`` -> ARRAY[STRING], a numpy array -> ARRAY of its dtype. Use ``MetaValue`` for
anything else (e.g. ``MetaValue(5, GGUFValueType.UINT8)``).

``GGUFWriter`` refuses empty arrays; a small subclass writes them (type, count 0), so every
value kind round-trips, empty strings and empty arrays included.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orcd_toolkit.gguf.errors import GGUFError
from orcd_toolkit.gguf.quants import quantize
from orcd_toolkit.gguf.reader import GGUFValueType
from orcd_toolkit.gguf.types import GGMLType, row_bytes, to_ggml_type

_NUMPY_TO_VALUE_TYPE: dict[np.dtype, GGUFValueType] = {
    np.dtype(np.uint8): GGUFValueType.UINT8,
    np.dtype(np.int8): GGUFValueType.INT8,
    np.dtype(np.uint16): GGUFValueType.UINT16,
    np.dtype(np.int16): GGUFValueType.INT16,
    np.dtype(np.uint32): GGUFValueType.UINT32,
    np.dtype(np.int32): GGUFValueType.INT32,
    np.dtype(np.float32): GGUFValueType.FLOAT32,
    np.dtype(np.bool_): GGUFValueType.BOOL,
    np.dtype(np.uint64): GGUFValueType.UINT64,
    np.dtype(np.int64): GGUFValueType.INT64,
    np.dtype(np.float64): GGUFValueType.FLOAT64,
}


@dataclass(frozen=True, slots=True)
class MetaValue:
    """A metadata value with an explicit GGUF type (``item`` for arrays)."""

    value: Any
    type: GGUFValueType
    item: GGUFValueType | None = None


@dataclass(frozen=True, slots=True)
class TensorData:
    """A tensor to write: ``raw`` blocks (``uint8``, shape ``[..., row_bytes]``) of ``qtype``
    for a tensor of numpy ``shape``."""

    qtype: GGMLType
    shape: tuple[int, ...]
    raw: np.ndarray

    @classmethod
    def from_values(cls, values: np.ndarray, qtype: GGMLType | int) -> TensorData:
        """Quantize float ``values`` with :func:`~orcd_toolkit.gguf.quants.quantize`."""
        qt = to_ggml_type(int(qtype))
        v = np.asarray(values, dtype=np.float32)
        return cls(qt, tuple(v.shape), quantize(v, qt))


def infer_value(value: Any) -> MetaValue:
    """The default GGUF typing of a plain Python / numpy value (see module docstring)."""
    if isinstance(value, MetaValue):
        return value
    if isinstance(value, (bool, np.bool_)):
        return MetaValue(bool(value), GGUFValueType.BOOL)
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if 0 <= v < 2**32:
            return MetaValue(v, GGUFValueType.UINT32)
        if -(2**31) <= v < 2**31:
            return MetaValue(v, GGUFValueType.INT32)
        if -(2**63) <= v < 2**63:
            return MetaValue(v, GGUFValueType.INT64)
        if 0 <= v < 2**64:
            return MetaValue(v, GGUFValueType.UINT64)
        raise GGUFError(f"integer {v} does not fit any GGUF integer type", rule="writer")
    if isinstance(value, (float, np.floating)):
        return MetaValue(float(value), GGUFValueType.FLOAT32)
    if isinstance(value, str):
        return MetaValue(value, GGUFValueType.STRING)
    if isinstance(value, np.ndarray):
        vt = _NUMPY_TO_VALUE_TYPE.get(value.dtype.newbyteorder("="))
        if vt is None or value.ndim != 1:
            raise GGUFError(
                f"cannot store a numpy array of {value.dtype}, ndim {value.ndim}", rule="writer"
            )
        return MetaValue(value, GGUFValueType.ARRAY, vt)
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return MetaValue(list(value), GGUFValueType.ARRAY, GGUFValueType.STRING)
    if isinstance(value, Sequence) and value and all(isinstance(v, bool) for v in value):
        return MetaValue(np.asarray(value, dtype=np.bool_), GGUFValueType.ARRAY, GGUFValueType.BOOL)
    if isinstance(value, Sequence) and value and all(isinstance(v, int) for v in value):
        return MetaValue(
            np.asarray(value, dtype=np.int32), GGUFValueType.ARRAY, GGUFValueType.INT32
        )
    if isinstance(value, Sequence) and value and all(isinstance(v, (int, float)) for v in value):
        return MetaValue(
            np.asarray(value, dtype=np.float32), GGUFValueType.ARRAY, GGUFValueType.FLOAT32
        )
    raise GGUFError(f"cannot infer a GGUF type for {type(value).__name__} value", rule="writer")


def _array_items(mv: MetaValue) -> list[Any]:
    if mv.item == GGUFValueType.STRING:
        return [str(s) for s in mv.value]
    if mv.item == GGUFValueType.BOOL:
        return [bool(v) for v in np.asarray(mv.value)]
    if mv.item in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return [float(v) for v in np.asarray(mv.value)]
    return [int(v) for v in np.asarray(mv.value)]


def _writer_class() -> type:
    """``GGUFWriter`` that can also write empty arrays (it raises on them)."""
    from gguf import GGUFValueType as GV
    from gguf import GGUFWriter

    class _Writer(GGUFWriter):
        def _pack_val(self, val: Any, vtype: Any, add_vtype: bool, sub_type: Any = None) -> bytes:
            if vtype == GV.ARRAY and sub_type is not None and len(val) == 0:
                head = self._pack("I", vtype) if add_vtype else b""
                return head + self._pack("I", sub_type) + self._pack("Q", 0)
            return super()._pack_val(val, vtype, add_vtype, sub_type)

    return _Writer


def write_gguf(
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    tensors: Mapping[str, TensorData] | None = None,
    *,
    arch: str | None = None,
    alignment: int | None = None,
    validate: bool = True,
) -> Path:
    """Write a GGUF v3 file with ``metadata`` and ``tensors`` (in the given order).

    ``arch`` defaults to ``metadata["general.architecture"]``. With ``validate`` the written
    file is re-opened through :func:`orcd_toolkit.gguf.load` so a bad synthetic file fails here.
    """
    from gguf import GGMLQuantizationType
    from gguf import GGUFValueType as GV

    out = Path(path)
    meta = dict(metadata)
    arch_value = meta.pop("general.architecture", None)
    if isinstance(arch_value, MetaValue):
        arch_value = arch_value.value
    arch = arch or arch_value
    if not isinstance(arch, str) or not arch:
        raise GGUFError(
            "write_gguf needs an architecture (arch= or general.architecture)", rule="writer"
        )

    # general.alignment also sets where the writer places tensor data, so it is not a plain key
    align_value = meta.pop("general.alignment", None)
    if isinstance(align_value, MetaValue):
        align_value = align_value.value
    if alignment is None and align_value is not None:
        alignment = int(align_value)
    if alignment is not None and (alignment <= 0 or alignment & (alignment - 1)):
        raise GGUFError(
            f"alignment must be a positive power of two, got {alignment}", rule="writer"
        )

    w = _writer_class()(out, arch)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, value in meta.items():
        mv = infer_value(value)
        if mv.type == GGUFValueType.ARRAY:
            if mv.item is None or mv.item == GGUFValueType.ARRAY:
                raise GGUFError(
                    f"metadata {key!r}: arrays need a non-array item type", rule="writer"
                )
            items = _array_items(mv)
            w.add_key_value(key, items, GV.ARRAY, sub_type=GV(int(mv.item)))
        else:
            w.add_key_value(key, mv.value, GV(int(mv.type)))

    for name, t in (tensors or {}).items():
        qt = to_ggml_type(int(t.qtype))
        shape = tuple(int(d) for d in t.shape)
        raw = np.ascontiguousarray(t.raw).view(np.uint8)
        rb = row_bytes(qt, shape[-1])
        n_rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
        if raw.size != n_rows * rb:
            raise GGUFError(
                f"tensor {name!r}: {qt.name} {shape} needs {n_rows * rb} bytes, got {raw.size}",
                rule="writer",
            )
        w.add_tensor(name, raw.reshape(shape[:-1] + (rb,)), raw_dtype=GGMLQuantizationType(int(qt)))

    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    if validate:
        from orcd_toolkit.gguf.reader import load

        load(out).close()
    return out
