"""Semantic checks a model load runs: required hyper-parameters, vocabulary consistency,
special token ids — every missing or wrong item named in one error."""

from __future__ import annotations

import numpy as np
import pytest

from orcd_toolkit import gguf
from orcd_toolkit.gguf.checks import special_token_ids
from orcd_toolkit.gguf.rawwriter import RawGGUF, kv, kv_array
from orcd_toolkit.gguf.reader import GGUFValueType as VT
from orcd_toolkit.gguf.reader import ValueKind

QWEN_REQUIRED = {
    "{arch}.block_count": int,
    "{arch}.embedding_length": int,
    "{arch}.attention.head_count": int,
    "{arch}.attention.head_count_kv": int,
    "{arch}.rope.freq_base": float,
    "{arch}.attention.layer_norm_rms_epsilon": float,
    "{arch}.context_length": VT.UINT32,
    "tokenizer.ggml.tokens": list,
    "tokenizer.ggml.token_type": ValueKind(VT.ARRAY, VT.INT32),
    "tokenizer.ggml.add_bos_token": bool,
    "tokenizer.chat_template": str,
}


def _file(kvs) -> gguf.GGUFFile:
    return gguf.load_bytes(RawGGUF(kvs=kvs).build())


def _vocab(n=4, **extra):
    kvs = [
        kv("general.architecture", VT.STRING, "llama"),
        kv_array("tokenizer.ggml.tokens", int(VT.STRING), [f"t{i}" for i in range(n)]),
        kv_array("tokenizer.ggml.scores", int(VT.FLOAT32), [0.0] * n),
        kv_array("tokenizer.ggml.token_type", int(VT.INT32), [1] * n),
        kv("tokenizer.ggml.model", VT.STRING, "llama"),
        kv("tokenizer.ggml.bos_token_id", VT.UINT32, 1),
    ]
    kvs += list(extra.values())
    return kvs


def test_real_qwen_passes(qwen05_path):
    f = gguf.load(qwen05_path)
    gguf.check_model_metadata(f, QWEN_REQUIRED)
    assert gguf.check_vocab(f) == 151936
    assert special_token_ids(f) == {"eos": 151645, "padding": 151643, "bos": 151643}


def test_each_missing_or_mistyped_key_is_named():
    f = _file(
        [
            kv("general.architecture", VT.STRING, "qwen2"),
            kv("qwen2.block_count", VT.FLOAT32, 24.0),  # wrong type
            kv("qwen2.rope.freq_base", VT.UINT32, 10000),  # int where float is required
            kv("qwen2.context_length", VT.INT32, 4096),  # integer, but not the exact UINT32
        ]
    )
    with pytest.raises(gguf.GGUFModelError) as info:
        gguf.check_model_metadata(
            f,
            {
                "{arch}.block_count": int,
                "{arch}.rope.freq_base": float,
                "{arch}.context_length": VT.UINT32,
                "{arch}.embedding_length": int,
                "tokenizer.ggml.tokens": list,
            },
        )
    msg = str(info.value)
    assert info.value.rule == "model_metadata"
    assert "qwen2.block_count has type FLOAT32, want integer" in msg
    assert "qwen2.rope.freq_base has type UINT32, want float" in msg
    assert "qwen2.context_length has type INT32, want UINT32" in msg
    assert "qwen2.embedding_length is missing" in msg
    assert "tokenizer.ggml.tokens is missing" in msg
    assert "\n" not in msg


def test_architecture_missing_or_not_string():
    with pytest.raises(gguf.GGUFModelError, match="general.architecture is missing"):
        gguf.check_model_metadata(_file([kv("x.y", VT.UINT32, 1)]), {})
    with pytest.raises(gguf.GGUFModelError, match="general.architecture must be a string"):
        gguf.check_model_metadata(_file([kv("general.architecture", VT.UINT32, 1)]), {})


def test_requirement_alternatives():
    f = _file([kv("general.architecture", VT.STRING, "llama"), kv("a", VT.INT64, 1)])
    gguf.check_model_metadata(f, {"a": (VT.UINT32, VT.INT64)})
    gguf.check_model_metadata(f, {"a": (float, int)})
    with pytest.raises(gguf.GGUFModelError, match="want UINT32 or float"):
        gguf.check_model_metadata(f, {"a": (VT.UINT32, float)})


def test_vocab_ok():
    f = _file(_vocab())
    assert gguf.check_vocab(f) == 4


def test_vocab_arrays_of_unequal_length_named():
    kvs = _vocab()
    kvs[2] = kv_array("tokenizer.ggml.scores", int(VT.FLOAT32), [0.0] * 3)
    kvs[3] = kv_array("tokenizer.ggml.token_type", int(VT.INT32), [1] * 5)
    with pytest.raises(gguf.GGUFModelError) as info:
        gguf.check_vocab(_file(kvs))
    msg = str(info.value)
    assert info.value.rule == "vocab"
    assert "tokenizer.ggml.scores has 3 entries but tokenizer.ggml.tokens has 4" in msg
    assert "tokenizer.ggml.token_type has 5 entries but tokenizer.ggml.tokens has 4" in msg


@pytest.mark.parametrize("tid", [4, 1000, 2**32 - 1])
def test_special_token_outside_vocab_named(tid):
    kvs = _vocab(eos=kv("tokenizer.ggml.eos_token_id", VT.UINT32, tid))
    with pytest.raises(gguf.GGUFModelError) as info:
        gguf.check_vocab(_file(kvs))
    assert f"tokenizer.ggml.eos_token_id = {tid} is outside the vocabulary [0, 4)" in str(
        info.value
    )


def test_negative_special_token_named():
    kvs = _vocab(pad=kv("tokenizer.ggml.padding_token_id", VT.INT32, -1))
    with pytest.raises(gguf.GGUFModelError, match="padding_token_id = -1 is outside"):
        gguf.check_vocab(_file(kvs))


def test_special_token_wrong_type_named():
    kvs = _vocab(eos=kv("tokenizer.ggml.eos_token_id", VT.STRING, "2"))
    with pytest.raises(gguf.GGUFModelError, match="eos_token_id has type STRING, want an integer"):
        gguf.check_vocab(_file(kvs))


def test_tokens_missing_or_wrong_type():
    with pytest.raises(gguf.GGUFModelError, match="tokenizer.ggml.tokens is missing"):
        gguf.check_vocab(_file([kv("general.architecture", VT.STRING, "llama")]))
    kvs = [kv_array("tokenizer.ggml.tokens", int(VT.INT32), [1, 2])]
    with pytest.raises(gguf.GGUFModelError, match=r"has type ARRAY\[INT32\], want ARRAY\[STRING\]"):
        gguf.check_vocab(_file(kvs))
    kvs = [kv_array("tokenizer.ggml.tokens", int(VT.STRING), [])]
    with pytest.raises(gguf.GGUFModelError, match="tokenizer.ggml.tokens is empty"):
        gguf.check_vocab(_file(kvs))


def test_bpe_needs_merges():
    kvs = _vocab()
    kvs[4] = kv("tokenizer.ggml.model", VT.STRING, "gpt2")
    with pytest.raises(gguf.GGUFModelError, match="merges is missing"):
        gguf.check_vocab(_file(kvs))
    kvs.append(kv_array("tokenizer.ggml.merges", int(VT.STRING), ["t 0"]))
    assert gguf.check_vocab(_file(kvs)) == 4


def test_scores_wrong_kind():
    kvs = _vocab()
    kvs[2] = kv_array("tokenizer.ggml.scores", int(VT.STRING), ["a"] * 4)
    with pytest.raises(gguf.GGUFModelError, match="scores has type ARRAY\\[STRING\\]"):
        gguf.check_vocab(_file(kvs))


def test_all_vocab_testdata_pass(testdata):
    for p in sorted((testdata / "vocab").glob("*.gguf")):
        f = gguf.load(p)
        n = gguf.check_vocab(f)
        assert n == len(f.metadata["tokenizer.ggml.tokens"]) and n > 30000
        assert all(0 <= v < n for v in special_token_ids(f).values())
        assert isinstance(f.metadata.get("tokenizer.ggml.scores", np.zeros(0)), np.ndarray)
