"""Typed model-loading errors; each message names the key, tensor or architecture at fault."""

from __future__ import annotations

from orcd_toolkit.errors import ModelLoadFailed


class ModelError(ModelLoadFailed):
    """The GGUF file does not describe a model this toolkit can build."""


class UnsupportedArchitecture(ModelError):
    """``general.architecture`` names an architecture without an implementation here."""

    def __init__(self, arch: str, supported: tuple[str, ...]) -> None:
        super().__init__(
            f"unsupported architecture {arch!r}; supported: {', '.join(sorted(supported))}"
        )
        self.arch = arch


class MissingMetadata(ModelError):
    """A required metadata key is absent."""

    def __init__(self, key: str) -> None:
        super().__init__(f"missing metadata key {key!r}")
        self.key = key


class InvalidMetadata(ModelError):
    """A metadata value has the wrong type or an impossible value."""


class MissingTensor(ModelError):
    """A required tensor is absent."""

    def __init__(self, name: str) -> None:
        super().__init__(f"missing tensor {name!r}")
        self.name = name


class TensorShapeMismatch(ModelError):
    """A tensor's shape disagrees with the hyper-parameters."""

    def __init__(self, name: str, expected: tuple[int, ...], got: tuple[int, ...]) -> None:
        super().__init__(
            f"tensor {name!r} has shape {list(got)}, expected {list(expected)} "
            "(numpy order, outermost first)"
        )
        self.name = name
        self.expected = expected
        self.got = got


class TensorTypeMismatch(ModelError):
    """A tensor is stored in a type the layer cannot use (e.g. a quantized norm weight)."""

    def __init__(self, name: str, got: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"tensor {name!r} has type {got}, expected one of {', '.join(allowed)}")
        self.name = name
