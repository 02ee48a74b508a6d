"""The one table of tensor types that the loader, the NumPy reference and the kernels share.

Block sizes are ggml's (``ggml/src/ggml-common.h``; gguf-py ``GGML_QUANT_SIZES``): a row of
``n`` elements of a block type is ``n / block_elems`` blocks of ``block_bytes`` each, and ``n``
must be a multiple of ``block_elems``. Only the types of DESIGN.md §6 are supported; any other
ggml id is named in the error (``unsupported_type_name``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from orcd_toolkit.gguf.errors import GGUFTensorError, GGUFUnsupportedTypeError


class GGMLType(IntEnum):
    """ggml tensor type ids (``enum ggml_type``) of the supported types."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    BF16 = 30
    MXFP4 = 39


@dataclass(frozen=True, slots=True)
class BlockLayout:
    """How one block of a type is stored: ``block_elems`` values in ``block_bytes`` bytes."""

    block_elems: int
    block_bytes: int

    @property
    def is_quantized(self) -> bool:
        """True for block types (anything but plain F32/F16/BF16 scalars)."""
        return self.block_elems > 1


QK_K = 256  # super-block size of the K-quants (ggml-common.h)

LAYOUTS: dict[GGMLType, BlockLayout] = {
    GGMLType.F32: BlockLayout(1, 4),
    GGMLType.F16: BlockLayout(1, 2),
    GGMLType.BF16: BlockLayout(1, 2),
    # f16 d, 16 B of nibbles
    GGMLType.Q4_0: BlockLayout(32, 2 + 16),
    # f16 d, f16 m, 16 B of nibbles
    GGMLType.Q4_1: BlockLayout(32, 2 + 2 + 16),
    # f16 d, 4 B high bits, 16 B of nibbles
    GGMLType.Q5_0: BlockLayout(32, 2 + 4 + 16),
    # f16 d, f16 m, 4 B high bits, 16 B of nibbles
    GGMLType.Q5_1: BlockLayout(32, 2 + 2 + 4 + 16),
    # f16 d, 32 x int8
    GGMLType.Q8_0: BlockLayout(32, 2 + 32),
    # f16 d, f16 dmin, 12 B packed 6-bit scales/mins, 128 B nibbles
    GGMLType.Q4_K: BlockLayout(QK_K, 2 + 2 + 12 + QK_K // 2),
    # as Q4_K plus 32 B of high bits
    GGMLType.Q5_K: BlockLayout(QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),
    # 128 B low nibbles, 64 B high 2-bit pairs, 16 x int8 scales, f16 d
    GGMLType.Q6_K: BlockLayout(QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),
    # u8 E8M0 shared exponent, 16 B of E2M1 values
    GGMLType.MXFP4: BlockLayout(32, 1 + 16),
}


def unsupported_type_name(type_id: int) -> str:
    """A readable name for a ggml type id we do not support (for error messages)."""
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType(type_id).name
    except ValueError:
        return f"unknown ggml type id {type_id}"


def to_ggml_type(type_id: int) -> GGMLType:
    """The :class:`GGMLType` of a raw ggml id; unsupported or unknown ids raise, naming the type."""
    try:
        return GGMLType(type_id)
    except ValueError:
        name = unsupported_type_name(type_id)
        supported = ", ".join(t.name for t in GGMLType)
        raise GGUFUnsupportedTypeError(
            f"tensor type {name} (id {type_id}) is not supported; supported types: {supported}"
        ) from None


def row_bytes(qtype: GGMLType | int, n_elems: int) -> int:
    """Bytes of one row of ``n_elems`` values of ``qtype``; ``n_elems`` must fill whole blocks."""
    layout = LAYOUTS[to_ggml_type(int(qtype))]
    if n_elems < 0 or n_elems % layout.block_elems:
        raise GGUFTensorError(
            f"row length {n_elems} is not a multiple of the {GGMLType(qtype).name} block size "
            f"{layout.block_elems}",
            rule="row_length",
        )
    return n_elems // layout.block_elems * layout.block_bytes


def tensor_bytes(qtype: GGMLType | int, shape: tuple[int, ...]) -> int:
    """Bytes of a whole tensor of numpy ``shape`` (last axis = the row)."""
    if not shape:
        return row_bytes(qtype, 1)
    n_rows = 1
    for d in shape[:-1]:
        n_rows *= d
    return n_rows * row_bytes(qtype, shape[-1])
