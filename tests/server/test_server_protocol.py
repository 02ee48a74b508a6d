"""Every validation rule of the protocol, unit-tested and then through a live server."""

from __future__ import annotations

import json

import pytest

from orcd_toolkit.client import Client
from orcd_toolkit.errors import InvalidRequest
from orcd_toolkit.server import protocol
from orcd_toolkit.server.protocol import (
    CancelRequest,
    ExecuteRequest,
    Limits,
    ProtocolError,
    decode_frame,
    parse_client_message,
)

LIMITS = Limits(max_tokens_out=2048)


def ok(**fields) -> dict:
    return {"type": "execute", "job_id": "j1", "prompt": "hi", **fields}


# (frame, fragment the error message must contain) — one row per rule.
BAD_FRAMES: list[tuple[str, str]] = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object, got array"),
    ('"execute"', "must be a JSON object, got string"),
    ("null", "must be a JSON object, got null"),
    ('{"type": "execute", "job_id": "j", "prompt": "x", "temperature": NaN}', "not valid JSON"),
    ('{"type": "execute", "job_id": "j", "prompt": "x", "top_p": Infinity}', "not valid JSON"),
    (json.dumps({"job_id": "j", "prompt": "x"}), "missing field 'type'"),
    (json.dumps({"type": 3, "job_id": "j"}), "field 'type' must be a string"),
    (json.dumps({"type": "generate", "job_id": "j"}), "unknown message type 'generate'"),
    (json.dumps({"type": "execute", "prompt": "x"}), "missing field 'job_id'"),
    (json.dumps(ok(job_id=7)), "field 'job_id' must be a string, got number"),
    (json.dumps(ok(job_id="")), "field 'job_id' must be a non-empty string"),
    (json.dumps(ok(job_id="x" * 257)), "field 'job_id' is 257 characters"),
    (json.dumps({"type": "execute", "job_id": "j"}), "missing field 'prompt'"),
    (json.dumps(ok(messages=[{"role": "user", "content": "x"}])), "either 'prompt' or 'messages'"),
    (json.dumps(ok(prompt="")), "field 'prompt' must not be empty"),
    (json.dumps(ok(prompt=5)), "field 'prompt' must be a string, got number"),
    (json.dumps(ok(prompt=None)), "field 'prompt' must be a string, got null"),
    (json.dumps(ok(prompt="a" * 32769)), "field 'prompt' is 32769 characters; at most 32768"),
    (json.dumps(ok(max_tokens=0)), "field 'max_tokens' must be in [1, 2048], got 0"),
    (json.dumps(ok(max_tokens=2049)), "field 'max_tokens' must be in [1, 2048], got 2049"),
    (json.dumps(ok(max_tokens="10")), "field 'max_tokens' must be an integer, got string"),
    (json.dumps(ok(max_tokens=1.5)), "field 'max_tokens' must be an integer, got number 1.5"),
    (json.dumps(ok(max_tokens=True)), "field 'max_tokens' must be an integer, got boolean"),
    (json.dumps(ok(temperature=-0.1)), "field 'temperature' must be in [0, 2], got -0.1"),
    (json.dumps(ok(temperature=2.5)), "field 'temperature' must be in [0, 2], got 2.5"),
    (json.dumps(ok(temperature="hot")), "field 'temperature' must be a number, got string"),
    (json.dumps(ok(top_p=0)), "field 'top_p' must be in (0, 1], got 0"),
    (json.dumps(ok(top_p=1.01)), "field 'top_p' must be in (0, 1], got 1.01"),
    (json.dumps(ok(top_k=-1)), "field 'top_k' must be in [0, 2147483647], got -1"),
    (json.dumps(ok(top_k=2.5)), "field 'top_k' must be an integer"),
    (json.dumps(ok(min_p=1.5)), "field 'min_p' must be in [0, 1], got 1.5"),
    (json.dumps(ok(repetition_penalty=0)), "field 'repetition_penalty' must be in (0, 2], got 0"),
    (json.dumps(ok(repetition_penalty=2.1)), "field 'repetition_penalty' must be in (0, 2]"),
    (json.dumps(ok(presence_penalty=-3)), "field 'presence_penalty' must be in [-2, 2], got -3"),
    (json.dumps(ok(frequency_penalty=3)), "field 'frequency_penalty' must be in [-2, 2], got 3"),
    (json.dumps(ok(stop=["a", "b", "c", "d", "e"])), "field 'stop' has 5 strings; at most 4"),
    (json.dumps(ok(stop=[""])), "stop[0] must not be empty"),
    (json.dumps(ok(stop=[1])), "stop[0] must be a string, got number"),
    (json.dumps(ok(stop={"a": 1})), "field 'stop' must be a string or an array"),
    (json.dumps(ok(stop=["x" * 257])), "stop[0] is longer than 256"),
    (json.dumps(ok(seed=-1)), "field 'seed' must be in [0, 2**64-1], got -1"),
    (json.dumps(ok(seed=2**64)), "field 'seed' must be in [0, 2**64-1]"),
    (json.dumps(ok(seed=1.5)), "field 'seed' must be an unsigned 64-bit integer, got number"),
    (json.dumps(ok(seed="42")), "field 'seed' must be an unsigned 64-bit integer, got string"),
    (json.dumps(ok(ignore_eos="yes")), "field 'ignore_eos' must be true or false, got string"),
    (json.dumps(ok(logprobs=21)), "field 'logprobs' must be in [0, 20], got 21"),
    (json.dumps(ok(logprobs="all")), "field 'logprobs' must be an integer"),
    (json.dumps(ok(max_token=5)), "unknown field 'max_token' in 'execute'"),
    (json.dumps({"type": "execute", "job_id": "j", "messages": "hi"}),
     "field 'messages' must be an array, got string"),
    (json.dumps({"type": "execute", "job_id": "j", "messages": []}),
     "field 'messages' must not be empty"),
    (json.dumps({"type": "execute", "job_id": "j", "messages": ["hi"]}),
     "messages[0] must be an object, got string"),
    (json.dumps({"type": "execute", "job_id": "j", "messages": [{"role": "user"}]}),
     "messages[0].content must be a string, got null"),
    (json.dumps({"type": "execute", "job_id": "j", "messages": [{"role": "", "content": "x"}]}),
     "messages[0].role must be a non-empty string"),
    (json.dumps({"type": "execute", "job_id": "j",
                 "messages": [{"role": "wizard", "content": "x"}]}),
     "messages[0].role must be 'system', 'user', 'assistant' or 'tool'"),
    (json.dumps({"type": "execute", "job_id": "j",
                 "messages": [{"role": "user", "content": "x", "name": "bob"}]}),
     "unknown field 'name' in messages[0]"),
    (json.dumps({"type": "execute", "job_id": "j",
                 "messages": [{"role": "user", "content": ""}]}),
     "field 'messages' has no non-empty content"),
    (json.dumps({"type": "execute", "job_id": "j",
                 "messages": [{"role": "user", "content": "a" * 20000}] * 2}),
     "field 'messages' holds 40000 characters of content; at most 32768"),
    (json.dumps({"type": "execute", "job_id": "j",
                 "messages": [{"role": "user", "content": "a"}] * 257}),
     "field 'messages' has 257 entries"),
    (json.dumps({"type": "cancel"}), "missing field 'job_id'"),
    (json.dumps({"type": "cancel", "job_id": ""}), "field 'job_id' must be a non-empty string"),
    (json.dumps({"type": "cancel", "job_id": "j", "force": True}),
     "unknown field 'force' in 'cancel'"),
]


@pytest.mark.parametrize(("frame", "fragment"), BAD_FRAMES,
                         ids=[f[1][:40] for f in BAD_FRAMES])
def test_each_rule_rejects_with_a_message_naming_the_problem(frame: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(decode_frame(frame), LIMITS)
    assert fragment in str(info.value)
    assert info.value.code == "INVALID_REQUEST"
    assert isinstance(info.value, InvalidRequest)


def test_binary_frames_are_refused() -> None:
    with pytest.raises(ProtocolError, match="binary frames"):
        decode_frame(b'{"type": "execute"}')


def test_error_names_the_job_when_the_job_id_is_readable() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(decode_frame(json.dumps(ok(job_id="abc", top_k=-1))), LIMITS)
    assert info.value.job_id == "abc"
    with pytest.raises(ProtocolError) as info:
        parse_client_message(decode_frame(json.dumps({"type": "nope", "job_id": "z"})), LIMITS)
    assert info.value.job_id == "z"


def test_valid_execute_with_every_field() -> None:
    msg = ok(max_tokens=2048, temperature=0.0, top_p=1, top_k=40, min_p=0.05,
             repetition_penalty=1.1, presence_penalty=-2, frequency_penalty=2,
             stop=["\n\n", "END"], seed=2**64 - 1, ignore_eos=True, logprobs=True)
    req = parse_client_message(msg, LIMITS)
    assert isinstance(req, ExecuteRequest)
    assert (req.max_tokens, req.temperature, req.top_p, req.top_k) == (2048, 0.0, 1.0, 40)
    assert req.stop == ("\n\n", "END") and req.seed == 2**64 - 1 and req.logprobs == 0
    assert req.ignore_eos is True and req.messages is None
    assert "seed" in req.explicit and "top_k" in req.explicit


def test_defaults_and_edges() -> None:
    req = parse_client_message(ok(), LIMITS)
    assert isinstance(req, ExecuteRequest)
    assert req.max_tokens == 256 and req.seed is None and req.stop == ()
    assert req.logprobs is None
    assert parse_client_message(ok(logprobs=False), LIMITS).logprobs is None
    assert parse_client_message(ok(logprobs=5), LIMITS).logprobs == 5
    # integral floats from JavaScript are integers; a single stop string is a list of one
    req = parse_client_message(ok(max_tokens=3.0, stop="END", seed=None), LIMITS)
    assert req.max_tokens == 3 and req.stop == ("END",)
    req = parse_client_message(ok(prompt="a" * 32768), LIMITS)
    assert len(req.prompt or "") == 32768
    # the configured --max-tokens-out replaces the protocol's 2048
    with pytest.raises(ProtocolError, match=r"\[1, 16\]"):
        parse_client_message(ok(max_tokens=17), Limits(max_tokens_out=16))
    assert parse_client_message(ok(), Limits(max_tokens_out=16)).max_tokens == 16


def test_messages_and_cancel() -> None:
    req = parse_client_message({"type": "execute", "job_id": "m", "messages": [
        {"role": "system", "content": ""}, {"role": "user", "content": "hi"}]}, LIMITS)
    assert isinstance(req, ExecuteRequest)
    assert req.prompt is None and req.messages == (("system", ""), ("user", "hi"))
    assert parse_client_message({"type": "cancel", "job_id": "m"}, LIMITS) == CancelRequest("m")


def test_server_events_encode_utf8_unescaped_and_refuse_unknown_codes() -> None:
    frame = protocol.encode(protocol.token_event("j", "並列🚀", 0, 5))
    assert "並列🚀" in frame and json.loads(frame)["t"] == "並列🚀"
    with pytest.raises(ValueError):
        protocol.error_event("j", "OOPS", "x", False)
    for code in protocol.ERROR_CODES:
        assert protocol.error_event(None, code, "m", True)["code"] == code


# ---- through a live server: each rule answers an error event and the connection stays usable


def test_every_rule_through_the_server_then_the_next_job_works(server) -> None:
    with Client(server.url, event_timeout=10) as c:
        for frame, fragment in BAD_FRAMES:
            c.send_raw(frame)
            ev = c.recv_event()
            assert ev["type"] == "error", frame
            assert ev["code"] == "INVALID_REQUEST"
            assert ev["retriable"] is False
            assert fragment in ev["message"], (frame, ev)
        c.send_raw(b"\x00\x01binary")
        ev = c.recv_event()
        assert ev["code"] == "INVALID_REQUEST" and "binary" in ev["message"]
        comp = c.generate(prompt="still works", max_tokens=5, seed=3)
        assert comp.error is None and comp.end["tokens_out"] == 5
    metrics = server.server.metrics
    assert metrics.requests.value(outcome="rejected") == len(BAD_FRAMES) + 1


# ---- fuzz: any JSON value is either a valid request or a ProtocolError, never a crash


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
_fields = st.sampled_from(sorted(protocol._EXECUTE_FIELDS)) | st.text(max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_fields, _json, max_size=8), st.sampled_from(["execute", "cancel", None]))
def test_fuzzed_messages_validate_or_raise_protocol_error(obj: dict, kind) -> None:
    if kind is not None:
        obj = {**obj, "type": kind}
    frame = json.dumps(obj)
    try:
        req = parse_client_message(decode_frame(frame), LIMITS)
    except ProtocolError as exc:
        assert exc.code == "INVALID_REQUEST" and str(exc)
        assert exc.job_id is None or isinstance(exc.job_id, str)
        return
    assert isinstance(req, ExecuteRequest | CancelRequest)
    if isinstance(req, ExecuteRequest):
        assert 1 <= req.max_tokens <= LIMITS.max_tokens_out
        assert (req.prompt is None) != (req.messages is None)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_fuzzed_raw_frames_never_crash_the_decoder(frame) -> None:
    try:
        obj = decode_frame(frame)
    except ProtocolError:
        return
    assert isinstance(obj, dict)
