"""Looking up GGUF tensors by name with shape and type checks, then handing them to a backend.

Names follow gguf-py's TENSOR_NAMES (``blk.{i}.attn_q.weight`` ...); expected shapes are in
numpy order (outermost first, GGUF ``ne`` reversed), i.e. ``[out, in]`` for matrices.
"""

from __future__ import annotations

from typing import Any

from orcd_toolkit.models.errors import MissingTensor, TensorShapeMismatch, TensorTypeMismatch

# ggml type ids (ggml.h) of the tensor types each kind of weight may use.
MATRIX_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    30: "BF16",
    39: "MXFP4",
}
# norms, biases, sinks, router: llama.cpp stores them F32 (F16/BF16 also load there)
VECTOR_TYPES = {0: "F32", 1: "F16", 30: "BF16"}


def _type_name(qtype: Any) -> str:
    name = getattr(qtype, "name", None)
    return name if isinstance(name, str) else f"ggml type {int(qtype)}"


class WeightLoader:
    """Reads a model's tensors from a loaded GGUF file into a backend, checking each one."""

    def __init__(self, tensors: dict[str, Any], backend: Any) -> None:
        self.tensors = tensors
        self.backend = backend
        self.used: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.tensors

    def info(self, name: str, shape: tuple[int, ...], types: dict[int, str]) -> Any:
        """The TensorInfo for ``name`` after checking presence, shape and type."""
        if name not in self.tensors:
            raise MissingTensor(name)
        info = self.tensors[name]
        got = tuple(int(d) for d in info.shape)
        if got != tuple(shape):
            raise TensorShapeMismatch(name, tuple(shape), got)
        if int(info.qtype) not in types:
            raise TensorTypeMismatch(name, _type_name(info.qtype), tuple(types.values()))
        self.used.add(name)
        return info

    def matrix(self, name: str, shape: tuple[int, ...]) -> Any:
        """A weight matrix (any supported quantization), prepared by ``backend.load_weight``."""
        return self.backend.load_weight(self.info(name, shape, MATRIX_TYPES))

    def embedding(self, name: str, shape: tuple[int, ...]) -> Any:
        """An embedding table (rows gathered by token id), via ``backend.load_embedding``."""
        return self.backend.load_embedding(self.info(name, shape, MATRIX_TYPES))

    def vector(self, name: str, shape: tuple[int, ...]) -> Any:
        """A small dense tensor (norm weight, bias, sinks), via ``backend.load_vector``."""
        return self.backend.load_vector(self.info(name, shape, VECTOR_TYPES))

    def optional_matrix(self, name: str, shape: tuple[int, ...]) -> Any | None:
        return self.matrix(name, shape) if name in self.tensors else None

    def optional_vector(self, name: str, shape: tuple[int, ...]) -> Any | None:
        return self.vector(name, shape) if name in self.tensors else None
