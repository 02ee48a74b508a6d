"""write -> read round trips: every tensor type, every metadata value kind, 1-4 dims,
custom alignment; the gguf package's reader agrees with ours on the written files."""

from __future__ import annotations

import numpy as np
import pytest

from orcd_toolkit import gguf
from orcd_toolkit.gguf import GGMLType
from orcd_toolkit.gguf.reader import GGUFValueType as VT
from orcd_toolkit.gguf.reader import ValueKind
from orcd_toolkit.gguf.writer import MetaValue, TensorData, infer_value, write_gguf

SCALARS = {
    "v.u8": MetaValue(250, VT.UINT8),
    "v.i8": MetaValue(-120, VT.INT8),
    "v.u16": MetaValue(65000, VT.UINT16),
    "v.i16": MetaValue(-32000, VT.INT16),
    "v.u32": MetaValue(4_000_000_000, VT.UINT32),
    "v.i32": MetaValue(-2_000_000_000, VT.INT32),
    "v.f32": MetaValue(0.1, VT.FLOAT32),
    "v.bool_t": MetaValue(True, VT.BOOL),
    "v.bool_f": MetaValue(False, VT.BOOL),
    "v.str": MetaValue("héllo ✓ \U0001f600 \n\t", VT.STRING),
    "v.empty_str": MetaValue("", VT.STRING),
    "v.u64": MetaValue(2**64 - 1, VT.UINT64),
    "v.i64": MetaValue(-(2**63), VT.INT64),
    "v.f64": MetaValue(0.1, VT.FLOAT64),
}
ARRAYS = {
    "a.u8": (np.array([0, 1, 255], np.uint8), VT.UINT8),
    "a.i8": (np.array([-128, 0, 127], np.int8), VT.INT8),
    "a.u16": (np.array([0, 65535], np.uint16), VT.UINT16),
    "a.i16": (np.array([-32768, 32767], np.int16), VT.INT16),
    "a.u32": (np.array([0, 2**32 - 1], np.uint32), VT.UINT32),
    "a.i32": (np.array([-(2**31), 2**31 - 1], np.int32), VT.INT32),
    "a.f32": (np.array([0.5, -1e30, np.inf], np.float32), VT.FLOAT32),
    "a.bool": (np.array([True, False, True]), VT.BOOL),
    "a.u64": (np.array([0, 2**64 - 1], np.uint64), VT.UINT64),
    "a.i64": (np.array([-(2**63), 2**63 - 1], np.int64), VT.INT64),
    "a.f64": (np.array([1e-300, -0.0], np.float64), VT.FLOAT64),
    "a.str": (["a", "", "ü", "<|im_end|>", "Ġthe"], VT.STRING),
    "a.empty_str": ([], VT.STRING),
    "a.empty_i32": (np.zeros(0, np.int32), VT.INT32),
    "a.empty_f64": (np.zeros(0, np.float64), VT.FLOAT64),
}


def _metadata() -> dict:
    md: dict = {"general.architecture": "llama", "general.alignment": MetaValue(64, VT.UINT32)}
    md.update(SCALARS)
    for k, (v, item) in ARRAYS.items():
        md[k] = MetaValue(v, VT.ARRAY, item)
    return md


def _tensors(rng: np.random.Generator) -> dict[str, TensorData]:
    out = {}
    shapes = [(256,), (3, 256), (2, 2, 512), (2, 1, 3, 256)]
    for i, qt in enumerate(GGMLType):
        shape = shapes[i % len(shapes)]
        if qt in gguf.QUANTIZABLE:
            out[f"w.{qt.name}"] = TensorData.from_values(
                rng.standard_normal(shape).astype(np.float32), qt
            )
        else:
            out[f"w.{qt.name}"] = TensorData(qt, shape, gguf.random_blocks(qt, shape, rng))
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    rng = np.random.default_rng(2026)
    tensors = _tensors(rng)
    path = tmp_path_factory.mktemp("rt") / "all.gguf"
    write_gguf(path, _metadata(), tensors)
    return path, tensors


def test_every_value_kind_round_trips(written):
    path, _ = written
    f = gguf.load(path)
    for key, mv in SCALARS.items():
        assert f.value_kinds[key] == ValueKind(mv.type), key
        got = f.metadata[key]
        if mv.type == VT.FLOAT32:
            assert got == float(np.float32(mv.value))
        else:
            assert got == mv.value and type(got) is type(mv.value), key
    for key, (arr, item) in ARRAYS.items():
        assert f.value_kinds[key] == ValueKind(VT.ARRAY, item), key
        got = f.metadata[key]
        if item == VT.STRING:
            assert got == arr
        else:
            assert isinstance(got, np.ndarray) and got.dtype == arr.dtype, key
            np.testing.assert_array_equal(got, arr)
    assert f.alignment == 64 and f.data_offset % 64 == 0
    assert f.arch == "llama"


def test_every_type_round_trips(written):
    path, tensors = written
    f = gguf.load(path)
    assert list(f.tensors) == list(tensors)
    for name, t in tensors.items():
        info = f.tensors[name]
        assert info.qtype == t.qtype and info.shape == t.shape
        assert info.ne == tuple(reversed(t.shape))
        assert info.offset % 64 == 0
        np.testing.assert_array_equal(info.raw(), t.raw)
        np.testing.assert_array_equal(
            info.dequantize().view(np.uint32),
            gguf.dequantize(t.raw, t.qtype, t.shape).view(np.uint32),
        )
        assert not info.raw().flags.writeable  # views of the read-only mapping


def test_gguf_reader_agrees_on_written_file(written):
    """The gguf package's reader (what llama.cpp's Python tooling uses) sees the same file."""
    path, tensors = written
    f = gguf.load(path)
    reader = f.reader()
    assert len(reader.tensors) == len(tensors)
    for rt in reader.tensors:
        info = f.tensors[rt.name]
        assert int(rt.tensor_type) == int(info.qtype)
        assert tuple(int(d) for d in rt.shape) == info.ne
        assert int(rt.data_offset) == info.offset
        assert int(rt.n_bytes) == info.nbytes
    assert int(reader.alignment) == 64


def test_quantized_values_round_trip_exactly(tmp_path):
    """A file written from floats decodes to what the quantizer produced."""
    x = np.random.default_rng(3).standard_normal((4, 256)).astype(np.float32)
    for qt in gguf.QUANTIZABLE:
        p = tmp_path / f"{qt.name}.gguf"
        write_gguf(p, {"general.architecture": "llama"}, {"w": TensorData.from_values(x, qt)})
        got = gguf.load(p).tensors["w"].dequantize()
        want = gguf.dequantize(gguf.quantize(x, qt), qt, x.shape)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        if qt == GGMLType.F32:
            np.testing.assert_array_equal(got, x)


def test_inferred_value_types():
    assert infer_value(True).type == VT.BOOL
    assert infer_value(7).type == VT.UINT32
    assert infer_value(-7).type == VT.INT32
    assert infer_value(2**40).type == VT.INT64
    assert infer_value(2**63).type == VT.UINT64
    assert infer_value(1.5).type == VT.FLOAT32
    assert infer_value("x").type == VT.STRING
    assert infer_value(["a", "b"]).item == VT.STRING
    assert infer_value([1, 2]).item == VT.INT32
    assert infer_value(np.zeros(2, np.float64)).item == VT.FLOAT64
    with pytest.raises(gguf.GGUFError):
        infer_value(2**64)
    with pytest.raises(gguf.GGUFError):
        infer_value(object())


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(gguf.GGUFError):
        write_gguf(tmp_path / "a.gguf", {}, {})  # no architecture
    bad = TensorData(GGMLType.Q8_0, (2, 32), np.zeros((2, 33), np.uint8))
    with pytest.raises(gguf.GGUFError):
        write_gguf(tmp_path / "b.gguf", {"general.architecture": "llama"}, {"w": bad})
    with pytest.raises(gguf.GGUFError):
        write_gguf(tmp_path / "c.gguf", {"general.architecture": "llama"}, alignment=48)


def test_closed_file_views(written):
    path, tensors = written
    f = gguf.load(path)
    kept = f.tensors["w.Q8_0"].raw()  # a view handed out before close stays valid
    with f:
        pass
    np.testing.assert_array_equal(kept, tensors["w.Q8_0"].raw)
    with pytest.raises(gguf.GGUFError) as info:
        f.tensors["w.Q8_0"].raw()
    assert info.value.rule == "closed"
