"""Typed errors of the GGUF layer.

Every problem the validation pass or a semantic check finds is a :class:`GGUFError` (a
:class:`~orcd_toolkit.errors.ModelLoadFailed`, so the CLI prints one line and the server sends
``MODEL_LOAD_FAILED``). Each error also carries ``rule``: a short stable name of the validation
rule that failed (``"magic"``, ``"alignment"``, ``"tensor_overlap"`` ...). Tests and callers
match on the class and the rule, never on message text.
"""

from __future__ import annotations

from orcd_toolkit.errors import ModelLoadFailed


class GGUFError(ModelLoadFailed):
    """A GGUF file is malformed, unsupported, or lacks what a model needs."""

    rule: str = "gguf"

    def __init__(self, message: str, *, rule: str | None = None, offset: int | None = None) -> None:
        if offset is not None:
            message = f"{message} (at byte {offset})"
        super().__init__(message)
        if rule is not None:
            self.rule = rule
        self.offset = offset


class GGUFHeaderError(GGUFError):
    """Magic or version is wrong."""

    rule = "header"


class GGUFTruncatedError(GGUFError):
    """A length or count points past the end of the file (or the file is cut short);
    also header counts that cannot fit in the bytes left (rules ``kv_count``/``tensor_count``)."""

    rule = "truncated"


class GGUFMetadataError(GGUFError):
    """A metadata key/value is malformed: duplicate or empty key, unknown value type,
    nested array, bad UTF-8, bad bool, bad ``general.alignment``."""

    rule = "metadata"


class GGUFTensorError(GGUFError):
    """A tensor descriptor is malformed: duplicate name, dimensions, element count, row
    length, data range outside the data section, misalignment or overlap."""

    rule = "tensor"


class GGUFUnsupportedTypeError(GGUFTensorError):
    """A tensor uses a ggml type this toolkit does not implement (IQ*, Q2_K, Q3_K, ...)."""

    rule = "tensor_type"


class GGUFDataError(GGUFError):
    """The tensor data section does not lie within the file."""

    rule = "data_section"


class GGUFModelError(GGUFError):
    """Semantic check failed: a required hyper-parameter is missing or has the wrong type,
    vocabulary arrays disagree in length, a special token id is outside the vocabulary."""

    rule = "model_metadata"


class GGUFQuantizeError(GGUFError):
    """A value cannot be quantized to the requested type (no quantizer, bad shape)."""

    rule = "quantize"
