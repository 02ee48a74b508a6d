"""GGUF files: validation, tensor types, dequantization, writing (issue #3).

Entry points:

- :func:`load` — validate and memory-map a GGUF file -> :class:`GGUFFile` (``.metadata``,
  ``.arch``, ``.tensors`` of :class:`TensorInfo` with ``raw()`` / ``dequantize()``);
- :data:`LAYOUTS`, :class:`GGMLType`, :func:`row_bytes` — the block table shared with kernels;
- :func:`dequantize`, :func:`quantize`, :func:`random_blocks`, :func:`matmul`,
  :func:`matvec`, :func:`dot` — NumPy reference (``gguf.quants`` semantics);
- :func:`check_model_metadata`, :func:`check_vocab` — semantic checks a model load runs;
- :mod:`orcd_toolkit.gguf.writer` — synthetic files.

See docs/gguf.md for the design (own header parse for validation and speed; the ``gguf``
package for types, quants and writing).
"""

from orcd_toolkit.gguf.checks import check_model_metadata, check_vocab
from orcd_toolkit.gguf.errors import (
    GGUFDataError,
    GGUFError,
    GGUFHeaderError,
    GGUFMetadataError,
    GGUFModelError,
    GGUFQuantizeError,
    GGUFTensorError,
    GGUFTruncatedError,
    GGUFUnsupportedTypeError,
)
from orcd_toolkit.gguf.quants import (
    GGUF_QUANTIZABLE,
    QUANTIZABLE,
    dequantize,
    dot,
    matmul,
    matvec,
    quantize,
    random_blocks,
)
from orcd_toolkit.gguf.reader import (
    GGUFFile,
    GGUFValueType,
    TensorInfo,
    ValueKind,
    load,
    load_bytes,
)
from orcd_toolkit.gguf.types import LAYOUTS, QK_K, BlockLayout, GGMLType, row_bytes, tensor_bytes

__all__ = [
    "GGUF_QUANTIZABLE",
    "LAYOUTS",
    "QK_K",
    "QUANTIZABLE",
    "BlockLayout",
    "GGMLType",
    "GGUFDataError",
    "GGUFError",
    "GGUFFile",
    "GGUFHeaderError",
    "GGUFMetadataError",
    "GGUFModelError",
    "GGUFQuantizeError",
    "GGUFTensorError",
    "GGUFTruncatedError",
    "GGUFUnsupportedTypeError",
    "GGUFValueType",
    "TensorInfo",
    "ValueKind",
    "check_model_metadata",
    "check_vocab",
    "dequantize",
    "dot",
    "load",
    "load_bytes",
    "matmul",
    "matvec",
    "quantize",
    "random_blocks",
    "row_bytes",
    "tensor_bytes",
]
