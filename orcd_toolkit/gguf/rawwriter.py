"""Byte-level GGUF builder for malformed files (validation tests, fuzzing).

``writer.write_gguf`` only writes valid files; this writes exactly what it is told —
wrong counts, lengths, types, offsets — so each validation rule can be exercised by a file
that breaks just that rule. Layout per ggml ``docs/gguf.md``: header (magic, version,
n_tensors, n_kv), KV pairs, tensor infos, padding to the alignment, tensor data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from orcd_toolkit.gguf.reader import GGUFValueType

_SCALAR_FMT = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<B",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


def gguf_string(s: str | bytes, *, length: int | None = None) -> bytes:
    """A GGUF string: u64 length + bytes (``length`` overrides the declared length)."""
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b) if length is None else length) + b


def scalar(vtype: GGUFValueType, value: object) -> bytes:
    """The payload of one scalar value (no type tag)."""
    if vtype == GGUFValueType.STRING:
        return gguf_string(value)  # type: ignore[arg-type]
    return struct.pack(_SCALAR_FMT[vtype], value)


@dataclass
class RawKV:
    """One metadata pair: ``key`` bytes, the type tag, and the payload bytes after it."""

    key: bytes
    vtype: int
    payload: bytes
    key_length: int | None = None

    def encode(self) -> bytes:
        return (
            gguf_string(self.key, length=self.key_length)
            + struct.pack("<I", self.vtype)
            + self.payload
        )


def kv(key: str | bytes, vtype: GGUFValueType, value: object) -> RawKV:
    """A well-formed scalar KV pair."""
    k = key.encode() if isinstance(key, str) else key
    return RawKV(k, int(vtype), scalar(vtype, value))


def kv_array(
    key: str | bytes, item: int, items: list[object], *, count: int | None = None
) -> RawKV:
    """An array KV pair (``count`` overrides the declared item count)."""
    k = key.encode() if isinstance(key, str) else key
    body = b"".join(scalar(GGUFValueType(item), v) for v in items)
    n = len(items) if count is None else count
    return RawKV(k, int(GGUFValueType.ARRAY), struct.pack("<IQ", item, n) + body)


@dataclass
class RawTensor:
    """One tensor info: ``ne`` in ggml order (``ne[0]`` = row length)."""

    name: bytes
    ne: list[int]
    type_id: int
    offset: int
    n_dims: int | None = None

    def encode(self) -> bytes:
        n_dims = len(self.ne) if self.n_dims is None else self.n_dims
        out = gguf_string(self.name) + struct.pack("<I", n_dims)
        out += b"".join(struct.pack("<Q", d) for d in self.ne)
        return out + struct.pack("<IQ", self.type_id, self.offset)


@dataclass
class RawGGUF:
    """A GGUF image assembled verbatim; ``n_tensors``/``n_kv`` override the real counts."""

    kvs: list[RawKV] = field(default_factory=list)
    tensors: list[RawTensor] = field(default_factory=list)
    data: bytes = b""
    magic: bytes = b"GGUF"
    version: int = 3
    n_tensors: int | None = None
    n_kv: int | None = None
    alignment: int = 32
    pad_data: bool = True

    def header(self) -> bytes:
        """Everything before the data section (unpadded)."""
        n_t = len(self.tensors) if self.n_tensors is None else self.n_tensors
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        out = self.magic + struct.pack("<IQQ", self.version, n_t, n_kv)
        out += b"".join(k.encode() for k in self.kvs)
        out += b"".join(t.encode() for t in self.tensors)
        return out

    def build(self) -> bytes:
        head = self.header()
        if self.pad_data and self.alignment > 0:
            head += b"\0" * (-len(head) % self.alignment)
        return head + self.data
