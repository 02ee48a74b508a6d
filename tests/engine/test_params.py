"""SamplingParams / GenerationRequest / EngineConfig validation names the field."""

from __future__ import annotations

import pytest

from orcd_toolkit.engine import EngineConfig, GenerationRequest, SamplingParams
from orcd_toolkit.errors import InvalidRequest


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"min_p": 2.0}, "min_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"presence_penalty": 3.0}, "presence_penalty"),
        ({"frequency_penalty": -3.0}, "frequency_penalty"),
        ({"logit_bias": {5: 200.0}}, "logit_bias"),
        ({"logit_bias": {-1: 1.0}}, "logit_bias"),
        ({"seed": -1}, "seed"),
        ({"seed": 1 << 64}, "seed"),
        ({"stop": [""]}, "stop"),
        ({"stop": ["x"] * 17}, "stop"),
        ({"min_tokens": 5, "max_tokens": 4}, "min_tokens"),
        ({"logprobs": 21}, "logprobs"),
        ({"ignore_eos": 1}, "ignore_eos"),
        ({"temperature": True}, "temperature"),
    ],
)
def test_sampling_params_reject(kwargs, field) -> None:
    with pytest.raises(InvalidRequest, match=field) as err:
        SamplingParams(**kwargs)
    assert err.value.code == "INVALID_REQUEST"
    assert err.value.field == field or err.value.field.startswith(field)


def test_sampling_params_normalise() -> None:
    p = SamplingParams(stop="END", logit_bias={3: 1}, temperature=0)
    assert p.stop == ("END",) and p.logit_bias == {3: 1.0} and p.is_greedy
    assert not p.has_penalties and SamplingParams(presence_penalty=0.5).has_penalties


def test_request_validation() -> None:
    with pytest.raises(InvalidRequest, match="prompt_ids"):
        GenerationRequest([])
    with pytest.raises(InvalidRequest, match="prompt_ids"):
        GenerationRequest([1, -2])
    with pytest.raises(InvalidRequest, match="request_id"):
        GenerationRequest([1], request_id="")
    assert GenerationRequest((1, 2)).prompt_ids == [1, 2]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_blocks": 0}, "num_blocks"),
        ({"max_num_seqs": 8, "max_num_batched_tokens": 4}, "max_num_batched_tokens"),
        ({"watermark": 1.0}, "watermark"),
        ({"allocator": "buddy"}, "allocator"),
        ({"allocator": "contiguous", "enable_prefix_caching": True}, "enable_prefix_caching"),
        ({"policy": "lifo"}, "policy"),
        ({"eos_token_ids": (99,)}, "eos_token_ids"),
    ],
)
def test_engine_config_reject(kwargs, field) -> None:
    base = {"num_blocks": 8, "vocab_size": 32}
    base.update(kwargs)
    with pytest.raises(InvalidRequest, match=field):
        EngineConfig(**base)
