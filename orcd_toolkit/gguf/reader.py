"""Validating GGUF parser: the one pass that runs before anything else touches a file.

A GGUF file is untrusted input. ``load()`` memory-maps the file and walks the header once,
checking every rule below *before* it reads or allocates what a field describes, so the work
and memory of a load are bounded by the file size for any input:

- magic ``GGUF`` and version 2 or 3 (a byte-swapped version is named as big-endian);
- the KV and tensor counts are bounded by the bytes left (each entry has a minimum size);
- every string/array length is checked against the bytes left before it is read;
- value types are known; no arrays of arrays; bools are 0 or 1; keys are non-empty, valid
  UTF-8 and unique;
- ``general.alignment`` (if present) is a UINT32, non-zero power of two;
- keys and tensor names contain no NUL byte (llama.cpp reads them as C strings);
- tensor names are non-empty, shorter than ggml's 64-byte limit, unique;
- 1 <= n_dims <= 4, every dimension in [1, 2^63), element count (Python ints: no overflow)
  below 2^63;
- the tensor type is supported and the row length a multiple of its block size;
- every tensor's bytes lie inside the data section, start aligned, and do not overlap;
- the data section starts (aligned) within the file.

Format: ggml ``docs/gguf.md`` and ``ggml/src/gguf.cpp`` (``gguf_init_from_file_impl``), whose
checks these mirror. The parse result is used directly for metadata (the ``gguf`` package's
``GGUFReader`` builds numpy views per string and takes ~8 s for a 151k-token vocabulary and
does not validate); see docs/gguf.md. ``GGUFFile.reader()`` still opens the same file with
``gguf.GGUFReader`` (after validation) for callers that want its API.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from orcd_toolkit.gguf.errors import (
    GGUFDataError,
    GGUFError,
    GGUFHeaderError,
    GGUFMetadataError,
    GGUFTensorError,
    GGUFTruncatedError,
)
from orcd_toolkit.gguf.types import LAYOUTS, GGMLType, to_ggml_type

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_NAME_BYTES = 64  # GGML_MAX_NAME: names must be shorter than this (NUL included)
INT64_MAX = 2**63 - 1
HEADER_BYTES = 4 + 4 + 8 + 8
# Resource limits of the validation pass (rule names in brackets). Without them a hostile
# length in a 20 GB file could make a load copy gigabytes into Python objects. Real files are
# far below: Qwen2's 151k-token vocabulary + merges is a 6 MB header, chat templates are KBs.
MAX_HEADER_BYTES = 64 * 2**20  # metadata + tensor infos [header_size]
MAX_KEY_BYTES = 2**16 - 1  # GGUF spec: keys are at most 65535 bytes [key_length]
MAX_STRING_BYTES = 16 * 2**20  # one string value or array item [string_length]
MAX_ARRAY_ITEMS = 2**22  # items of one metadata array [array_length]
# Worst case for a hostile header within these limits: a few hundred MB of Python objects
# (4M short strings), a linear walk of <= 64 MiB; real vocabularies have <= 262k tokens.


class GGUFValueType(IntEnum):
    """Metadata value types (``enum gguf_type``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# scalar value types: (struct format, numpy little-endian dtype)
_SCALAR_FORMATS: dict[int, tuple[struct.Struct, str]] = {
    GGUFValueType.UINT8: (struct.Struct("<B"), "<u1"),
    GGUFValueType.INT8: (struct.Struct("<b"), "<i1"),
    GGUFValueType.UINT16: (struct.Struct("<H"), "<u2"),
    GGUFValueType.INT16: (struct.Struct("<h"), "<i2"),
    GGUFValueType.UINT32: (struct.Struct("<I"), "<u4"),
    GGUFValueType.INT32: (struct.Struct("<i"), "<i4"),
    GGUFValueType.FLOAT32: (struct.Struct("<f"), "<f4"),
    GGUFValueType.BOOL: (struct.Struct("<B"), "<u1"),
    GGUFValueType.UINT64: (struct.Struct("<Q"), "<u8"),
    GGUFValueType.INT64: (struct.Struct("<q"), "<i8"),
    GGUFValueType.FLOAT64: (struct.Struct("<d"), "<f8"),
}
INTEGER_VALUE_TYPES = frozenset(
    {
        GGUFValueType.UINT8,
        GGUFValueType.INT8,
        GGUFValueType.UINT16,
        GGUFValueType.INT16,
        GGUFValueType.UINT32,
        GGUFValueType.INT32,
        GGUFValueType.UINT64,
        GGUFValueType.INT64,
    }
)
FLOAT_VALUE_TYPES = frozenset({GGUFValueType.FLOAT32, GGUFValueType.FLOAT64})

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<4sIQQ")
# smallest possible encodings, used to bound counts by the bytes left
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-byte key, value type, 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, name, n_dims, 1 dim, type, offset


@dataclass(frozen=True, slots=True)
class ValueKind:
    """The stored GGUF type of a metadata value (``item`` is set for arrays)."""

    type: GGUFValueType
    item: GGUFValueType | None = None

    def __str__(self) -> str:
        if self.item is None:
            return self.type.name
        return f"ARRAY[{self.item.name}]"


@dataclass(slots=True, eq=False)
class TensorInfo:
    """One tensor of a validated file. ``shape`` is numpy order (outermost first), ``ne``
    ggml order (``ne[0]`` = row length); ``offset`` is absolute in the file."""

    name: str
    qtype: GGMLType
    shape: tuple[int, ...]
    ne: tuple[int, ...]
    offset: int
    nbytes: int
    _buffer: np.ndarray = field(repr=False)

    @property
    def n_elements(self) -> int:
        """Number of values in the tensor."""
        n = 1
        for d in self.ne:
            n *= d
        return n

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (``ne[0]`` values)."""
        layout = LAYOUTS[self.qtype]
        return self.ne[0] // layout.block_elems * layout.block_bytes

    def raw(self) -> np.ndarray:
        """Zero-copy read-only ``uint8`` view of the tensor's blocks, shape ``[..., row_bytes]``."""
        if self.offset + self.nbytes > self._buffer.size:
            raise GGUFError(f"tensor {self.name!r}: its GGUFFile was closed", rule="closed")
        flat = self._buffer[self.offset : self.offset + self.nbytes]
        return flat.reshape(self.shape[:-1] + (self.row_bytes,))

    def dequantize(self) -> np.ndarray:
        """The tensor as a new float32 array of ``shape`` (``gguf.quants`` semantics)."""
        from orcd_toolkit.gguf.quants import dequantize

        return dequantize(self.raw(), self.qtype, self.shape)


class GGUFFile:
    """A validated, memory-mapped GGUF file.

    ``metadata`` maps keys to Python scalars/``str``, string arrays to ``list[str]`` and
    numeric/bool arrays to numpy arrays; ``value_kinds`` keeps each key's stored type (for
    semantic checks that need an exact type). ``tensors`` keeps file order.
    """

    def __init__(
        self,
        *,
        path: Path | None,
        version: int,
        metadata: dict[str, Any],
        value_kinds: dict[str, ValueKind],
        tensors: dict[str, TensorInfo],
        alignment: int,
        data_offset: int,
        file_size: int,
        header_bytes: int,
        buffer: np.ndarray,
        mm: mmap.mmap | None,
    ) -> None:
        self.path = path
        self.version = version
        self.metadata = metadata
        self.value_kinds = value_kinds
        self.tensors = tensors
        self.alignment = alignment
        self.data_offset = data_offset
        self.file_size = file_size
        self.header_bytes = header_bytes
        self._buffer = buffer
        self._mm = mm

    @property
    def arch(self) -> str | None:
        """``general.architecture`` if it is a string, else None."""
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def get(self, key: str, default: Any = None) -> Any:
        """Metadata value of ``key`` or ``default``."""
        return self.metadata.get(key, default)

    def arch_key(self, suffix: str) -> str:
        """``"<arch>.<suffix>"``, e.g. ``arch_key("block_count")`` -> ``"qwen2.block_count"``."""
        return f"{self.arch}.{suffix}"

    def reader(self) -> Any:
        """A ``gguf.GGUFReader`` over the same (already validated) file. Slow on big
        vocabularies (~8 s for 151k tokens); meant for cross-checks, not the load path."""
        from gguf import GGUFReader

        if self.path is None:
            raise GGUFError("reader() needs a file on disk, this GGUFFile was parsed from bytes")
        return GGUFReader(self.path)

    def close(self) -> None:
        """Drop this object's references to the mapping (views already handed out stay valid
        until they are released; the mapping closes when the last one goes)."""
        self._buffer = np.empty(0, dtype=np.uint8)
        self._mm = None
        for t in self.tensors.values():
            t._buffer = self._buffer

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"GGUFFile({str(self.path)!r}, v{self.version}, arch={self.arch!r}, "
            f"{len(self.metadata)} keys, {len(self.tensors)} tensors)"
        )


class _Parser:
    """Cursor over the mapped bytes; every read checks the bytes left first."""

    __slots__ = ("buf", "end", "file_end", "pos")

    def __init__(self, buf: Any, file_end: int) -> None:
        self.buf = buf
        self.file_end = file_end
        # header reads stop at MAX_HEADER_BYTES even when the file is longer
        self.end = min(file_end, MAX_HEADER_BYTES)
        self.pos = 0

    def short(self, n: int, what: str, at: int) -> GGUFError:
        """The error for a read of ``n`` bytes at ``self.pos`` that does not fit."""
        if self.end < self.file_end and n <= self.file_end - self.pos:
            return GGUFMetadataError(
                f"{what} needs {n} bytes, beyond the {MAX_HEADER_BYTES}-byte header limit",
                rule="header_size",
                offset=at,
            )
        return GGUFTruncatedError(
            f"{what} needs {n} bytes but only {self.end - self.pos} remain in the file",
            offset=at,
        )

    def need(self, n: int, what: str) -> None:
        if n > self.end - self.pos:
            raise self.short(n, what, self.pos)

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def raw_string(
        self,
        what: str,
        max_len: int = MAX_STRING_BYTES,
        rule: str = "string_length",
        error: type[GGUFError] = GGUFMetadataError,
    ) -> bytes:
        start = self.pos
        n = self.u64(f"length of {what}")
        if n > max_len:
            raise error(
                f"{what} has length {n}, more than the limit of {max_len} bytes",
                rule=rule,
                offset=start,
            )
        if n > self.end - self.pos:
            raise self.short(n, f"{what} (length {n})", start)
        s = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(s)

    def value_type(self, what: str) -> GGUFValueType:
        at = self.pos
        t = self.u32(f"value type of {what}")
        try:
            return GGUFValueType(t)
        except ValueError:
            raise GGUFMetadataError(
                f"{what} has unknown value type {t}", rule="value_type", offset=at
            ) from None

    def scalar(self, vtype: GGUFValueType, what: str) -> Any:
        if vtype == GGUFValueType.STRING:
            return _decode_value(self.raw_string(what))
        fmt, _ = _SCALAR_FORMATS[vtype]
        self.need(fmt.size, what)
        at = self.pos
        (v,) = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        if vtype == GGUFValueType.BOOL:
            if v > 1:
                raise GGUFMetadataError(
                    f"{what} is a bool with byte value {v}", rule="bool", offset=at
                )
            return bool(v)
        return v

    def array(self, what: str) -> tuple[Any, GGUFValueType]:
        at = self.pos
        item_type = self.value_type(f"items of {what}")
        if item_type == GGUFValueType.ARRAY:
            raise GGUFMetadataError(f"{what} is an array of arrays", rule="nested_array", offset=at)
        count_at = self.pos
        count = self.u64(f"item count of {what}")
        if count > MAX_ARRAY_ITEMS:
            raise GGUFMetadataError(
                f"{what} declares {count} items, more than the limit of {MAX_ARRAY_ITEMS}",
                rule="array_length",
                offset=count_at,
            )
        if item_type == GGUFValueType.STRING:
            return self.string_array(count, what, count_at), item_type
        fmt, dtype = _SCALAR_FORMATS[item_type]
        if count > (self.end - self.pos) // fmt.size:
            raise self.short(count * fmt.size, f"{what} ({count} {item_type.name} items)", count_at)
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).copy()
        self.pos += count * fmt.size
        if item_type == GGUFValueType.BOOL:
            if count and int(arr.max()) > 1:
                raise GGUFMetadataError(
                    f"{what} is a bool array holding a byte value {int(arr.max())}",
                    rule="bool",
                    offset=at,
                )
            arr = arr.astype(np.bool_)
        else:
            arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
        return arr, item_type

    def string_array(self, count: int, what: str, count_at: int) -> list[str]:
        buf, end = self.buf, self.end
        pos = self.pos
        if count > (end - pos) // 8:
            raise self.short(count * 8, f"{what} ({count} strings, 8+ bytes each)", count_at)
        out: list[str] = [""] * count
        unpack = _U64.unpack_from
        # The hot loop of a load: 151k vocab entries + 151k merges for Qwen2. Kept to one
        # bounds check per field and one slice + decode per string.
        for i in range(count):
            if end - pos < 8:
                self.pos = pos
                raise self.short(8, f"length of {what}[{i}]", pos)
            (n,) = unpack(buf, pos)
            pos += 8
            if n > end - pos:
                if n > MAX_STRING_BYTES:
                    raise GGUFMetadataError(
                        f"{what}[{i}] has length {n}, more than the limit of {MAX_STRING_BYTES} bytes",
                        rule="string_length",
                        offset=pos - 8,
                    )
                self.pos = pos
                raise self.short(n, f"{what}[{i}] (length {n})", pos - 8)
            if n > MAX_STRING_BYTES:
                raise GGUFMetadataError(
                    f"{what}[{i}] has length {n}, more than the limit of {MAX_STRING_BYTES} bytes",
                    rule="string_length",
                    offset=pos - 8,
                )
            out[i] = buf[pos : pos + n].decode("utf-8", "surrogateescape")
            pos += n
        self.pos = pos
        return out


def _decode_value(raw: bytes) -> str:
    # Values keep any byte sequence (surrogateescape round-trips invalid UTF-8, which some
    # tokenizer vocabularies contain); keys must be valid UTF-8.
    return raw.decode("utf-8", "surrogateescape")


def load(path: str | os.PathLike[str]) -> GGUFFile:
    """Validate and open a GGUF file (memory-mapped; tensor data is never read here).

    Raises a :class:`~orcd_toolkit.gguf.errors.GGUFError` subclass naming the first broken
    rule. Work and memory are bounded by the file size.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        raise GGUFError(f"{p}: no such file", rule="io") from None
    except OSError as exc:
        raise GGUFError(f"{p}: cannot open: {exc.strerror}", rule="io") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise GGUFError(f"{p}: not a regular file", rule="io")
        size = st.st_size
        if size < HEADER_BYTES:
            raise GGUFTruncatedError(
                f"{p}: file is {size} bytes, shorter than the {HEADER_BYTES}-byte GGUF header",
                offset=0,
            )
        try:
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise GGUFError(f"{p}: cannot memory-map: {exc}", rule="io") from None
    finally:
        os.close(fd)
    buffer = np.frombuffer(mm, dtype=np.uint8)
    try:
        return _parse(mm, buffer, size, path=p)
    except GGUFError as exc:
        # prefix the file name without changing the type or rule
        exc.args = (f"{p}: {exc.args[0]}",) + exc.args[1:]
        raise


def load_bytes(data: bytes | bytearray | memoryview) -> GGUFFile:
    """Validate and parse a GGUF image held in memory (tests, fuzzing)."""
    buf = bytes(data)
    buffer = np.frombuffer(buf, dtype=np.uint8)
    if len(buf) < HEADER_BYTES:
        raise GGUFTruncatedError(
            f"input is {len(buf)} bytes, shorter than the {HEADER_BYTES}-byte GGUF header",
            offset=0,
        )
    return _parse(buf, buffer, len(buf), path=None)


def _parse(buf: Any, buffer: np.ndarray, size: int, *, path: Path | None) -> GGUFFile:
    magic, version, n_tensors, n_kv = _HEADER.unpack_from(buf, 0)
    if magic != GGUF_MAGIC:
        raise GGUFHeaderError(f"bad magic {magic!r}, expected b'GGUF'", rule="magic", offset=0)
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in SUPPORTED_VERSIONS:
            raise GGUFHeaderError(
                f"big-endian GGUF (version {swapped} byte-swapped) is not supported",
                rule="version",
                offset=4,
            )
        raise GGUFHeaderError(
            f"GGUF version {version} is not supported (only 2 and 3)", rule="version", offset=4
        )
    p = _Parser(buf, size)
    p.pos = HEADER_BYTES
    left = p.end - p.pos
    if n_kv > left // _MIN_KV_BYTES:
        raise GGUFTruncatedError(
            f"metadata count {n_kv} cannot fit in the {left} bytes after the header",
            rule="kv_count",
            offset=16,
        )
    if n_tensors > left // _MIN_TENSOR_INFO_BYTES:
        raise GGUFTruncatedError(
            f"tensor count {n_tensors} cannot fit in the {left} bytes after the header",
            rule="tensor_count",
            offset=8,
        )

    metadata: dict[str, Any] = {}
    kinds: dict[str, ValueKind] = {}
    for i in range(n_kv):
        key_at = p.pos
        raw_key = p.raw_string(f"metadata key #{i}", MAX_KEY_BYTES, "key_length")
        if not raw_key:
            raise GGUFMetadataError(f"metadata key #{i} is empty", rule="empty_key", offset=key_at)
        try:
            key = raw_key.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFMetadataError(
                f"metadata key #{i} is not valid UTF-8: {raw_key[:64]!r}",
                rule="key_utf8",
                offset=key_at,
            ) from None
        if "\0" in key:
            # llama.cpp looks keys up as C strings: an embedded NUL makes it see another key
            raise GGUFMetadataError(
                f"metadata key #{i} contains a NUL byte: {key!r}", rule="key_nul", offset=key_at
            )
        if key in metadata:
            raise GGUFMetadataError(
                f"duplicate metadata key {key!r}", rule="duplicate_key", offset=key_at
            )
        vtype = p.value_type(f"metadata {key!r}")
        if vtype == GGUFValueType.ARRAY:
            value, item = p.array(f"metadata {key!r}")
            kinds[key] = ValueKind(vtype, item)
        else:
            value = p.scalar(vtype, f"metadata {key!r}")
            kinds[key] = ValueKind(vtype)
        metadata[key] = value

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        kind = kinds["general.alignment"]
        value = metadata["general.alignment"]
        if kind.type != GGUFValueType.UINT32:
            raise GGUFMetadataError(
                f"general.alignment must be UINT32, found {kind}", rule="alignment"
            )
        if value == 0 or value & (value - 1):
            raise GGUFMetadataError(
                f"general.alignment must be a non-zero power of two, found {value}",
                rule="alignment",
            )
        alignment = value

    left = p.end - p.pos
    if n_tensors > left // _MIN_TENSOR_INFO_BYTES:
        raise GGUFTruncatedError(
            f"tensor count {n_tensors} cannot fit in the {left} bytes left after the metadata",
            rule="tensor_count",
            offset=8,
        )
    # (name, type id, ne, relative offset, info offset)
    infos: list[tuple[str, int, tuple[int, ...], int, int]] = []
    seen: set[str] = set()
    for i in range(n_tensors):
        info_at = p.pos
        raw_name = p.raw_string(
            f"name of tensor #{i}", MAX_NAME_BYTES - 1, "tensor_name", GGUFTensorError
        )
        if not raw_name:
            raise GGUFTensorError(
                f"tensor #{i} has an empty name", rule="tensor_name", offset=info_at
            )
        if len(raw_name) >= MAX_NAME_BYTES:
            raise GGUFTensorError(
                f"tensor #{i} name is {len(raw_name)} bytes, ggml allows at most {MAX_NAME_BYTES - 1}",
                rule="tensor_name",
                offset=info_at,
            )
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFTensorError(
                f"tensor #{i} name is not valid UTF-8: {raw_name!r}",
                rule="tensor_name",
                offset=info_at,
            ) from None
        if "\0" in name:
            # ggml copies names as C strings: an embedded NUL makes llama.cpp see another name
            raise GGUFTensorError(
                f"tensor #{i} name contains a NUL byte: {name!r}",
                rule="tensor_name",
                offset=info_at,
            )
        if name in seen:
            raise GGUFTensorError(
                f"duplicate tensor name {name!r}", rule="duplicate_tensor", offset=info_at
            )
        seen.add(name)
        dims_at = p.pos
        n_dims = p.u32(f"n_dims of tensor {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFTensorError(
                f"tensor {name!r} has {n_dims} dimensions (allowed: 1 to {MAX_DIMS})",
                rule="n_dims",
                offset=dims_at,
            )
        ne = tuple(p.u64(f"dimension {j} of tensor {name!r}") for j in range(n_dims))
        for j, d in enumerate(ne):
            if d == 0 or d > INT64_MAX:
                raise GGUFTensorError(
                    f"tensor {name!r} dimension {j} is {d} (allowed: 1 to 2^63-1)",
                    rule="dimension",
                    offset=dims_at + 4 + 8 * j,
                )
        type_id = p.u32(f"type of tensor {name!r}")
        rel_offset = p.u64(f"data offset of tensor {name!r}")
        infos.append((name, type_id, ne, rel_offset, info_at))

    header_end = p.pos
    data_offset = -(-header_end // alignment) * alignment
    if n_tensors and data_offset > size:
        raise GGUFDataError(
            f"data section starts at byte {data_offset} (aligned to {alignment}) but the file "
            f"has {size} bytes",
            offset=header_end,
        )
    data_size = max(size - data_offset, 0)

    tensors: dict[str, TensorInfo] = {}
    for name, type_id, ne, rel_offset, info_at in infos:
        n_elems = 1
        for d in ne:
            n_elems *= d  # Python ints: exact, compared before any use
        if n_elems > INT64_MAX:
            raise GGUFTensorError(
                f"tensor {name!r} has {n_elems} elements, more than 2^63-1",
                rule="element_count",
                offset=info_at,
            )
        try:
            qtype = to_ggml_type(type_id)
        except GGUFTensorError as exc:
            raise type(exc)(f"tensor {name!r}: {exc}", rule=exc.rule, offset=info_at) from None
        layout = LAYOUTS[qtype]
        if ne[0] % layout.block_elems:
            raise GGUFTensorError(
                f"tensor {name!r} row length {ne[0]} is not a multiple of the {qtype.name} "
                f"block size {layout.block_elems}",
                rule="row_length",
                offset=info_at,
            )
        nbytes = n_elems // layout.block_elems * layout.block_bytes
        if rel_offset % alignment:
            raise GGUFTensorError(
                f"tensor {name!r} data offset {rel_offset} is not aligned to {alignment}",
                rule="tensor_alignment",
                offset=info_at,
            )
        if rel_offset > data_size or nbytes > data_size - rel_offset:
            raise GGUFTensorError(
                f"tensor {name!r} data [{rel_offset}, {rel_offset + nbytes}) lies outside the "
                f"{data_size}-byte data section",
                rule="tensor_range",
                offset=info_at,
            )
        tensors[name] = TensorInfo(
            name=name,
            qtype=qtype,
            shape=tuple(reversed(ne)),
            ne=ne,
            offset=data_offset + rel_offset,
            nbytes=nbytes,
            _buffer=buffer,
        )

    ordered = sorted(tensors.values(), key=lambda t: (t.offset, t.nbytes))
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.offset < a.offset + a.nbytes:
            raise GGUFTensorError(
                f"tensors {a.name!r} [{a.offset}, {a.offset + a.nbytes}) and {b.name!r} "
                f"[{b.offset}, {b.offset + b.nbytes}) overlap",
                rule="tensor_overlap",
            )

    return GGUFFile(
        path=path,
        version=version,
        metadata=metadata,
        value_kinds=kinds,
        tensors=tensors,
        alignment=alignment,
        data_offset=data_offset,
        file_size=size,
        header_bytes=header_end,
        buffer=buffer,
        mm=None,
    )
