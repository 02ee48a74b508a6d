"""Malformed-file corpus: one file per validation rule, plus truncations and hostile sizes.

Every case must raise the specific typed error (class and ``rule``), within a time and memory
bound that does not depend on the hostile counts/lengths inside the file.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from orcd_toolkit import cli, gguf
from orcd_toolkit.gguf import GGMLType
from orcd_toolkit.gguf.errors import (
    GGUFDataError,
    GGUFError,
    GGUFHeaderError,
    GGUFMetadataError,
    GGUFTensorError,
    GGUFTruncatedError,
    GGUFUnsupportedTypeError,
)
from orcd_toolkit.gguf.rawwriter import RawGGUF, RawKV, RawTensor, gguf_string, kv, kv_array
from orcd_toolkit.gguf.reader import GGUFValueType as VT

MAX_SECONDS = 1.0
MAX_PEAK_BYTES = 4 * 2**20  # far below any hostile count (2^40) times an element size


def _tensor_file(**overrides) -> RawGGUF:
    """A valid file: two F32 tensors [4] and [32] and one Q8_0 row of 32."""
    data = np.arange(4 + 32, dtype=np.float32).tobytes()
    q8 = gguf.quantize(np.linspace(-1, 1, 32, dtype=np.float32), GGMLType.Q8_0).tobytes()
    raw = RawGGUF(
        kvs=[kv("general.architecture", VT.STRING, "llama"), kv("a.x", VT.UINT32, 7)],
        tensors=[
            RawTensor(b"t.a", [4], int(GGMLType.F32), 0),
            RawTensor(b"t.b", [32], int(GGMLType.F32), 32),
            RawTensor(b"t.c", [32], int(GGMLType.Q8_0), 160),
        ],
        data=data[:16] + b"\0" * 16 + data[16:] + q8,
    )
    for k, v in overrides.items():
        setattr(raw, k, v)
    return raw


def _reject(blob: bytes, cls: type[GGUFError], rule: str | None):
    """Assert that loading ``blob`` raises ``cls`` with ``rule``, quickly and in little memory."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(cls) as info:
            gguf.load_bytes(blob)
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < MAX_SECONDS, f"rejection took {elapsed:.3f} s"
    # load_bytes copies the input once; anything beyond that is allocation per hostile count
    assert peak < MAX_PEAK_BYTES + 2 * len(blob), f"peak {peak} bytes"
    if rule is not None:
        assert info.value.rule == rule, str(info.value)
    assert str(info.value)
    # the file path gives the same verdict, and `orcd inspect` says it in one line, exit 1
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "bad.gguf"
        p.write_bytes(blob)
        with pytest.raises(cls) as info2:
            gguf.load(p)
        assert info2.value.rule == info.value.rule
        assert str(p) in str(info2.value)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(["inspect", str(p)])
        assert status == 1 and out.getvalue() == ""
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("orcd inspect: error: "), lines
        assert f"[{info.value.rule}]" not in lines[0]  # the message, not internals
    return info.value


def test_valid_base_file_loads(tmp_path):
    blob = _tensor_file().build()
    f = gguf.load_bytes(blob)
    assert list(f.tensors) == ["t.a", "t.b", "t.c"]
    np.testing.assert_array_equal(f.tensors["t.b"].dequantize(), np.arange(4, 36, dtype=np.float32))
    p = tmp_path / "ok.gguf"
    p.write_bytes(blob)
    assert gguf.load(p).tensors["t.a"].dequantize().tolist() == [0, 1, 2, 3]


# --- header ---------------------------------------------------------------------------


def test_bad_magic():
    _reject(_tensor_file(magic=b"GGML").build(), GGUFHeaderError, "magic")


@pytest.mark.parametrize("version", [0, 1, 4, 0xFFFFFFFF])
def test_bad_version(version):
    _reject(_tensor_file(version=version).build(), GGUFHeaderError, "version")


def test_big_endian_version_is_named():
    err = _reject(_tensor_file(version=3 << 24).build(), GGUFHeaderError, "version")
    assert "big-endian" in str(err)


def test_version_2_accepted():
    gguf.load_bytes(_tensor_file(version=2).build())


@pytest.mark.parametrize("n", [0, 1, 10, 23])
def test_shorter_than_header(n):
    _reject((b"GGUF\x03" + b"\0" * 19)[:n], GGUFTruncatedError, "truncated")


def test_kv_count_beyond_bytes_left():
    _reject(_tensor_file(n_kv=2**40).build(), GGUFTruncatedError, "kv_count")


def test_kv_count_u64_max():
    _reject(_tensor_file(n_kv=2**64 - 1).build(), GGUFTruncatedError, "kv_count")


def test_tensor_count_beyond_bytes_left():
    _reject(_tensor_file(n_tensors=2**40).build(), GGUFTruncatedError, "tensor_count")


def test_tensor_count_checked_again_after_metadata():
    # fits the bytes after the header, but not what is left after a large KV
    raw = _tensor_file(
        kvs=[kv("general.architecture", VT.STRING, "x" * 4000)], tensors=[], data=b""
    )
    raw.n_tensors = 100  # 100 * 33 bytes < 4000 + ..., but only ~0 bytes remain after the KV
    _reject(raw.build(), GGUFTruncatedError, "tensor_count")


def test_kv_count_larger_than_present():
    raw = _tensor_file(tensors=[], data=b"")
    raw.n_kv = 5
    raw.pad_data = False
    raw.kvs.append(RawKV(b"pad", int(VT.STRING), gguf_string("x" * 200)))
    _reject(raw.build(), GGUFTruncatedError, "truncated")


# --- metadata ---------------------------------------------------------------------------


def test_key_length_2_pow_40():
    raw = _tensor_file()
    raw.kvs.insert(0, RawKV(b"k", int(VT.UINT8), b"\1", key_length=2**40))
    _reject(raw.build(), GGUFMetadataError, "key_length")


def test_key_length_within_limit_but_past_end():
    raw = _tensor_file()
    raw.kvs.insert(0, RawKV(b"k", int(VT.UINT8), b"\1", key_length=60_000))
    _reject(raw.build(), GGUFTruncatedError, "truncated")


def test_string_value_length_2_pow_40():
    raw = _tensor_file()
    raw.kvs.append(RawKV(b"s", int(VT.STRING), gguf_string(b"abc", length=2**40)))
    _reject(raw.build(), GGUFMetadataError, "string_length")


def test_string_value_length_past_end():
    raw = _tensor_file()
    raw.kvs.append(RawKV(b"s", int(VT.STRING), gguf_string(b"abc", length=2**20)))
    _reject(raw.build(), GGUFTruncatedError, "truncated")


@pytest.mark.parametrize("item", [VT.UINT8, VT.FLOAT64, VT.BOOL, VT.STRING])
def test_array_length_2_pow_40(item):
    raw = _tensor_file()
    raw.kvs.append(kv_array("arr", int(item), [], count=2**40))
    _reject(raw.build(), GGUFMetadataError, "array_length")


@pytest.mark.parametrize("item", [VT.UINT8, VT.FLOAT64, VT.BOOL, VT.STRING])
def test_array_length_past_end(item):
    raw = _tensor_file()
    raw.kvs.append(kv_array("arr", int(item), [], count=2**20))
    _reject(raw.build(), GGUFTruncatedError, "truncated")


def test_string_array_item_length_2_pow_40():
    raw = _tensor_file()
    body = (
        b"\x08\0\0\0"
        + (2).to_bytes(8, "little")
        + gguf_string("ok")
        + gguf_string(b"x", length=2**40)
    )
    raw.kvs.append(RawKV(b"arr", int(VT.ARRAY), body))
    _reject(raw.build(), GGUFMetadataError, "string_length")


def test_header_size_limit(monkeypatch):
    """Strings that fit the file but pass the header limit are refused as such."""
    from orcd_toolkit.gguf import reader

    raw = _tensor_file()
    raw.kvs.append(kv("big", VT.STRING, "x" * 5000))
    blob = raw.build()
    gguf.load_bytes(blob)
    monkeypatch.setattr(reader, "MAX_HEADER_BYTES", 2000)
    _reject(blob, GGUFMetadataError, "header_size")


def test_array_of_arrays():
    raw = _tensor_file()
    inner = (int(VT.UINT8)).to_bytes(4, "little") + (1).to_bytes(8, "little") + b"\1"
    raw.kvs.append(
        RawKV(
            b"nested", int(VT.ARRAY), (9).to_bytes(4, "little") + (1).to_bytes(8, "little") + inner
        )
    )
    _reject(raw.build(), GGUFMetadataError, "nested_array")


def test_empty_key():
    raw = _tensor_file()
    raw.kvs.append(kv(b"", VT.UINT32, 1))
    _reject(raw.build(), GGUFMetadataError, "empty_key")


def test_duplicate_key():
    raw = _tensor_file()
    raw.kvs.append(kv("a.x", VT.UINT32, 8))
    err = _reject(raw.build(), GGUFMetadataError, "duplicate_key")
    assert "a.x" in str(err)


def test_key_with_nul():
    raw = _tensor_file()
    raw.kvs.append(kv(b"a.x\0evil", VT.UINT32, 1))
    _reject(raw.build(), GGUFMetadataError, "key_nul")


def test_tensor_name_with_nul():
    raw = _tensor_file()
    raw.tensors[0].name = b"t.b\0x"  # llama.cpp would see a second "t.b"
    _reject(raw.build(), GGUFTensorError, "tensor_name")


def test_key_not_utf8():
    raw = _tensor_file()
    raw.kvs.append(kv(b"\xff\xfe", VT.UINT32, 1))
    _reject(raw.build(), GGUFMetadataError, "key_utf8")


@pytest.mark.parametrize("vtype", [13, 100, 2**32 - 1])
def test_unknown_value_type(vtype):
    raw = _tensor_file()
    raw.kvs.append(RawKV(b"odd", vtype, b"\0" * 8))
    err = _reject(raw.build(), GGUFMetadataError, "value_type")
    assert str(vtype) in str(err)


def test_unknown_array_item_type():
    raw = _tensor_file()
    raw.kvs.append(
        RawKV(b"odd", int(VT.ARRAY), (77).to_bytes(4, "little") + (0).to_bytes(8, "little"))
    )
    _reject(raw.build(), GGUFMetadataError, "value_type")


def test_bool_not_0_or_1():
    raw = _tensor_file()
    raw.kvs.append(RawKV(b"flag", int(VT.BOOL), b"\x02"))
    _reject(raw.build(), GGUFMetadataError, "bool")


def test_bool_array_not_0_or_1():
    raw = _tensor_file()
    raw.kvs.append(
        RawKV(
            b"flags",
            int(VT.ARRAY),
            (7).to_bytes(4, "little") + (3).to_bytes(8, "little") + b"\0\1\5",
        )
    )
    _reject(raw.build(), GGUFMetadataError, "bool")


def test_alignment_zero():
    raw = _tensor_file()
    raw.kvs.append(kv("general.alignment", VT.UINT32, 0))
    _reject(raw.build(), GGUFMetadataError, "alignment")


@pytest.mark.parametrize("value", [3, 48, 2**31 + 1])
def test_alignment_not_power_of_two(value):
    raw = _tensor_file()
    raw.kvs.append(kv("general.alignment", VT.UINT32, value))
    _reject(raw.build(), GGUFMetadataError, "alignment")


def test_alignment_wrong_type():
    raw = _tensor_file()
    raw.kvs.append(kv("general.alignment", VT.UINT64, 32))
    _reject(raw.build(), GGUFMetadataError, "alignment")


def test_custom_alignment_accepted():
    raw = _tensor_file(alignment=64)
    raw.kvs.append(kv("general.alignment", VT.UINT32, 64))
    raw.tensors = [
        RawTensor(b"t", [4], int(GGMLType.F32), 0),
        RawTensor(b"u", [4], int(GGMLType.F32), 64),
    ]
    raw.data = b"\1" * 128
    f = gguf.load_bytes(raw.build())
    assert f.alignment == 64 and f.data_offset % 64 == 0


def test_alignment_huge_power_of_two_puts_data_past_end():
    raw = _tensor_file(alignment=1)
    raw.kvs.append(kv("general.alignment", VT.UINT32, 2**31))
    _reject(raw.build(), GGUFDataError, "data_section")


# --- tensors ---------------------------------------------------------------------------


def test_duplicate_tensor_name():
    raw = _tensor_file()
    raw.tensors[1].name = b"t.a"
    err = _reject(raw.build(), GGUFTensorError, "duplicate_tensor")
    assert "t.a" in str(err)


def test_empty_tensor_name():
    raw = _tensor_file()
    raw.tensors[0].name = b""
    _reject(raw.build(), GGUFTensorError, "tensor_name")


def test_tensor_name_too_long():
    raw = _tensor_file()
    raw.tensors[0].name = b"x" * 64
    _reject(raw.build(), GGUFTensorError, "tensor_name")


def test_tensor_name_63_bytes_ok():
    raw = _tensor_file()
    raw.tensors[0].name = b"x" * 63
    gguf.load_bytes(raw.build())


@pytest.mark.parametrize("n_dims", [0, 5, 2**32 - 1])
def test_n_dims(n_dims):
    raw = _tensor_file()
    raw.tensors[0].n_dims = n_dims
    raw.tensors[0].ne = [4, 1, 1, 1, 1][: min(n_dims, 5)]
    _reject(raw.build(), GGUFTensorError, "n_dims")


@pytest.mark.parametrize("dim", [0, 2**63, 2**64 - 1])
def test_bad_dimension(dim):
    raw = _tensor_file()
    raw.tensors[0].ne = [4, dim]
    _reject(raw.build(), GGUFTensorError, "dimension")


def test_element_count_2_pow_42_plus_1_f32():
    raw = _tensor_file()
    raw.tensors[0].ne = [2**42 + 1]
    err = _reject(raw.build(), GGUFTensorError, "tensor_range")
    assert str(4 * (2**42 + 1)) in str(err)


def test_element_count_2_pow_42_plus_1_quantized():
    raw = _tensor_file()
    raw.tensors[2].ne = [2**42 + 1]
    _reject(raw.build(), GGUFTensorError, "row_length")


def test_element_count_2_pow_42_plus_1_as_rows():
    raw = _tensor_file()
    raw.tensors[0].ne = [1, 2**42 + 1]
    _reject(raw.build(), GGUFTensorError, "tensor_range")


def test_element_count_overflows_int64():
    raw = _tensor_file()
    raw.tensors[0].ne = [2**32, 2**32, 2**10]  # 2^74: would wrap in int64 arithmetic
    _reject(raw.build(), GGUFTensorError, "element_count")


def test_element_count_wraps_to_small_in_int64():
    # 2^32 * 2^32 = 2^64 wraps to 0 in uint64 math: must not look like an empty tensor
    raw = _tensor_file()
    raw.tensors[0].ne = [2**32, 2**32]
    _reject(raw.build(), GGUFTensorError, "element_count")


@pytest.mark.parametrize("type_id", [16, 10, 11, 23, 100, 2**32 - 1])
def test_unsupported_tensor_type_is_named(type_id):
    raw = _tensor_file()
    raw.tensors[0].type_id = type_id
    err = _reject(raw.build(), GGUFUnsupportedTypeError, "tensor_type")
    names = {16: "IQ2_XXS", 10: "Q2_K", 11: "Q3_K", 23: "IQ4_XS"}
    assert names.get(type_id, f"unknown ggml type id {type_id}") in str(err)


def test_row_length_not_multiple_of_block():
    raw = _tensor_file()
    raw.tensors[2].ne = [33]
    _reject(raw.build(), GGUFTensorError, "row_length")


def test_tensor_offset_past_end():
    raw = _tensor_file()
    raw.tensors[1].offset = 2**40
    _reject(raw.build(), GGUFTensorError, "tensor_range")


def test_tensor_offset_u64_max():
    raw = _tensor_file()
    raw.tensors[1].offset = 2**64 - 32
    _reject(raw.build(), GGUFTensorError, "tensor_range")


def test_tensor_end_past_end():
    raw = _tensor_file()
    raw.tensors[2].ne = [64]  # two Q8_0 blocks, only one present
    _reject(raw.build(), GGUFTensorError, "tensor_range")


def test_tensor_offset_misaligned():
    raw = _tensor_file()
    raw.tensors[1].offset = 36
    _reject(raw.build(), GGUFTensorError, "tensor_alignment")


def test_tensors_overlap():
    raw = _tensor_file()
    raw.tensors[1].offset = 0  # t.b [0,128) covers t.a [0,16)
    err = _reject(raw.build(), GGUFTensorError, "tensor_overlap")
    assert "t.a" in str(err) and "t.b" in str(err)


def test_data_section_past_end_of_file():
    raw = _tensor_file(data=b"", pad_data=False)
    _reject(raw.build(), GGUFDataError, "data_section")


# --- truncation ---------------------------------------------------------------------------


def test_truncated_at_every_offset_of_synthetic_file():
    blob = _tensor_file().build()
    f = gguf.load_bytes(blob)
    end = max(t.offset + t.nbytes for t in f.tensors.values())
    for cut in range(end):
        with pytest.raises(GGUFError):
            gguf.load_bytes(blob[:cut])


def test_truncated_vocab_header_at_many_offsets(testdata):
    """llama.cpp's gpt-2 vocab file (no tensors) cut at ~200 offsets across its header."""
    blob = (testdata / "vocab" / "ggml-vocab-gpt-2.gguf").read_bytes()
    f = gguf.load_bytes(blob)
    rng = np.random.default_rng(3)
    cuts = set(rng.integers(0, f.header_bytes, size=100).tolist()) | set(range(0, 100))
    for cut in sorted(cuts):
        t0 = time.perf_counter()
        with pytest.raises(GGUFTruncatedError):
            gguf.load_bytes(blob[:cut])
        assert time.perf_counter() - t0 < MAX_SECONDS


def test_truncated_real_model_header(qwen05_path):
    """The real Qwen file cut inside its header, inside its data, and one byte short."""
    f = gguf.load(qwen05_path)
    with open(qwen05_path, "rb") as fh:
        head = fh.read(f.header_bytes + 64)
    for cut in (24, 1000, f.header_bytes // 2, f.header_bytes - 1):
        with pytest.raises(GGUFTruncatedError):
            gguf.load_bytes(head[:cut])
    # header complete, data missing: the first tensor already lies outside the file
    with pytest.raises(GGUFTensorError) as info:
        gguf.load_bytes(head)
    assert info.value.rule == "tensor_range"


def test_directory_and_missing_path(tmp_path):
    with pytest.raises(GGUFError) as info:
        gguf.load(tmp_path)
    assert info.value.rule == "io" and "not a regular file" in str(info.value)
    with pytest.raises(GGUFError) as info:
        gguf.load(tmp_path / "nope.gguf")
    assert info.value.rule == "io" and "no such file" in str(info.value)
