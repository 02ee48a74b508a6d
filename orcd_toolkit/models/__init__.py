"""Model architectures over the ``Backend`` protocol.

``load_model(path_or_gguf, backend)`` validates the file (orcd_toolkit.gguf), checks the
architecture's required metadata in one pass (every missing/mistyped key named), resolves
hyper-parameters and loads each tensor with a shape and type check. Supported: ``llama``,
``qwen2``, ``phi3`` (LlamaFamily), ``gpt-oss`` (GptOss), ``gpt2`` (GPT2).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from orcd_toolkit.models.base import CausalLM
from orcd_toolkit.models.errors import (
    InvalidMetadata,
    MissingMetadata,
    MissingTensor,
    ModelError,
    TensorShapeMismatch,
    TensorTypeMismatch,
    UnsupportedArchitecture,
)
from orcd_toolkit.models.gpt2 import GPT2
from orcd_toolkit.models.gpt_oss import GptOss
from orcd_toolkit.models.hparams import HParams, read_hparams
from orcd_toolkit.models.llama import LlamaFamily

ARCHITECTURES: dict[str, type[CausalLM]] = {
    arch: cls for cls in (LlamaFamily, GptOss, GPT2) for arch in cls.architectures
}

_COMMON_KEYS = {
    "{arch}.block_count": int,
    "{arch}.context_length": int,
    "{arch}.embedding_length": int,
    "{arch}.attention.head_count": (int, np.ndarray),
}
REQUIRED_METADATA: dict[str, dict[str, Any]] = {
    "llama": {"{arch}.feed_forward_length": int, "{arch}.attention.layer_norm_rms_epsilon": float},
    "qwen2": {"{arch}.feed_forward_length": int, "{arch}.attention.layer_norm_rms_epsilon": float},
    "phi3": {"{arch}.feed_forward_length": int, "{arch}.attention.layer_norm_rms_epsilon": float},
    "gpt2": {"{arch}.feed_forward_length": int, "{arch}.attention.layer_norm_epsilon": float},
    "gpt-oss": {
        "{arch}.attention.layer_norm_rms_epsilon": float,
        "{arch}.expert_count": int,
        "{arch}.expert_used_count": int,
        "{arch}.expert_feed_forward_length": int,
        "{arch}.attention.sliding_window": int,
    },
}

__all__ = [
    "ARCHITECTURES",
    "CausalLM",
    "HParams",
    "InvalidMetadata",
    "MissingMetadata",
    "MissingTensor",
    "ModelError",
    "TensorShapeMismatch",
    "TensorTypeMismatch",
    "UnsupportedArchitecture",
    "load_model",
]


def _requirements(arch: str) -> dict[str, Any]:
    # head counts may be per-layer arrays in llama.cpp (get_key_or_arr)
    return {**_COMMON_KEYS, **REQUIRED_METADATA[arch]}


def load_model(
    source: str | os.PathLike[str] | Any, backend: Any = None, *, n_ctx: int = 0
) -> CausalLM:
    """Build the model in ``source`` (a path or a loaded ``GGUFFile``) on ``backend``.

    ``backend`` defaults to the NumPy reference. ``n_ctx`` is the context the model will be
    run with (0: the training context); it selects e.g. phi3's long/short RoPE factors.
    Raises a ``ModelLoadFailed`` subclass naming the problem.
    """
    from orcd_toolkit import gguf

    gf = source if isinstance(source, gguf.GGUFFile) else gguf.load(source)
    arch = gf.arch
    if arch is None:
        raise MissingMetadata("general.architecture")
    cls = ARCHITECTURES.get(arch)
    if cls is None:
        raise UnsupportedArchitecture(arch, tuple(ARCHITECTURES))
    gguf.check_model_metadata(gf, _requirements(arch))
    embd = gf.tensors.get("token_embd.weight")
    if embd is None:
        raise MissingTensor("token_embd.weight")
    hparams = read_hparams(gf.metadata, arch, vocab_size=int(embd.shape[0]))
    if backend is None:
        from orcd_toolkit.backends.cpu import NumpyBackend

        backend = NumpyBackend()
    model = cls(hparams, gf.tensors, backend, n_ctx=n_ctx)
    model.gguf_file = gf
    return model
