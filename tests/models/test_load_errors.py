"""A file that is not a model we can build fails with a typed error naming the problem."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orcd_toolkit.errors import ModelLoadFailed
from orcd_toolkit.models import (
    MissingMetadata,
    MissingTensor,
    TensorShapeMismatch,
    TensorTypeMismatch,
    UnsupportedArchitecture,
    load_model,
)
from orcd_toolkit.models.synth import F16, Q8_0, get_preset, write_preset


@pytest.fixture(scope="module")
def gpt2_preset():  # noqa: ANN201
    return get_preset("gpt2-124m", tiny=True)


def _write(preset, tmp_path: Path, name: str = "m.gguf") -> Path:  # noqa: ANN001
    return write_preset(preset, tmp_path / name, seed=1)


def _replace_tensor(preset, name: str, **changes):  # noqa: ANN001, ANN202
    tensors = [dataclasses.replace(t, **changes) if t.name == name else t for t in preset.tensors]
    return dataclasses.replace(preset, tensors=tensors)


def test_valid_tiny_model_loads(gpt2_preset, tmp_path: Path) -> None:  # noqa: ANN001
    model = load_model(_write(gpt2_preset, tmp_path))
    assert model.arch == "gpt2" and model.num_layers == 2 and model.vocab_size == 50257


def test_missing_tensor_is_named(gpt2_preset, tmp_path: Path) -> None:  # noqa: ANN001
    preset = dataclasses.replace(
        gpt2_preset, tensors=[t for t in gpt2_preset.tensors if t.name != "blk.1.ffn_up.weight"]
    )
    with pytest.raises(MissingTensor, match=r"missing tensor 'blk\.1\.ffn_up\.weight'"):
        load_model(_write(preset, tmp_path))


def test_wrong_shape_is_named(gpt2_preset, tmp_path: Path) -> None:  # noqa: ANN001
    preset = _replace_tensor(gpt2_preset, "blk.0.attn_qkv.weight", shape=(3 * 128, 64))
    with pytest.raises(
        TensorShapeMismatch,
        match=r"'blk\.0\.attn_qkv\.weight' has shape \[384, 64\], expected \[384, 128\]",
    ):
        load_model(_write(preset, tmp_path))


def test_quantized_norm_is_a_type_error(gpt2_preset, tmp_path: Path) -> None:  # noqa: ANN001
    # a norm weight must be dense (F32/F16/BF16); Q8_0 means a broken converter
    preset = _replace_tensor(gpt2_preset, "output_norm.weight", qtype=Q8_0, init="matrix")
    with pytest.raises(TensorTypeMismatch, match=r"'output_norm\.weight' has type Q8_0"):
        load_model(_write(preset, tmp_path))


def test_unsupported_architecture(gpt2_preset, tmp_path: Path) -> None:  # noqa: ANN001
    md = {k.replace("gpt2.", "mamba."): v for k, v in gpt2_preset.metadata.items()}
    md["general.architecture"] = "mamba"
    preset = dataclasses.replace(gpt2_preset, metadata=md)
    with pytest.raises(
        UnsupportedArchitecture,
        match="unsupported architecture 'mamba'; supported: gpt-oss, gpt2, llama, phi3, qwen2",
    ):
        load_model(_write(preset, tmp_path))


def test_missing_metadata_key(gpt2_preset, tmp_path: Path) -> None:  # noqa: ANN001
    md = {k: v for k, v in gpt2_preset.metadata.items() if k != "gpt2.attention.layer_norm_epsilon"}
    preset = dataclasses.replace(gpt2_preset, metadata=md)
    with pytest.raises(ModelLoadFailed, match=r"gpt2\.attention\.layer_norm_epsilon is missing"):
        load_model(_write(preset, tmp_path))


def test_hparams_errors_are_typed() -> None:
    from orcd_toolkit.models.hparams import read_hparams

    md = {"llama.block_count": 2, "llama.embedding_length": 64, "llama.attention.head_count": 6,
          "llama.attention.head_count_kv": 4, "llama.context_length": 128,
          "llama.feed_forward_length": 128, "llama.attention.layer_norm_rms_epsilon": 1e-5}  # fmt: skip
    with pytest.raises(ModelLoadFailed, match="not a multiple of head_count_kv"):
        read_hparams(md, "llama", vocab_size=10)
    md["llama.attention.head_count_kv"] = 2
    del md["llama.context_length"]
    with pytest.raises(MissingMetadata, match="'llama.context_length'"):
        read_hparams(md, "llama", vocab_size=10)


def test_f16_matrices_are_accepted_everywhere(gpt2_preset, tmp_path: Path) -> None:  # noqa: ANN001
    preset = _replace_tensor(gpt2_preset, "position_embd.weight", qtype=F16)
    assert load_model(_write(preset, tmp_path)).arch == "gpt2"
