"""Stop strings with hold-back, and UTF-8 split across tokens, through the engine.

The matcher is property-tested over random texts, stop sets and chunkings; the end-to-end
tests stream scripted token sequences through the engine with the real Qwen2 tokenizer
(shared test vocabulary), where multi-byte characters are split across tokens.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from engine_fakes import FakeKV, ScriptedModel
from hypothesis import given, settings

from orcd_toolkit.engine import EngineConfig, GenerationRequest, LLMEngine, SamplingParams
from orcd_toolkit.engine.output_processor import StopStringMatcher

ALPHABET = "ab€😀 "


def reference_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str | None]:
    """Cut at the stop string that completes first (earliest end, then earliest start)."""
    found = [(text.find(s) + len(s), text.find(s), s) for s in stops if s in text]
    if not found:
        return text, None
    _, start, which = min(found, key=lambda f: (f[0], f[1]))
    return text[:start], which


@settings(max_examples=400, deadline=None)
@given(
    text=st.text(alphabet=ALPHABET, max_size=40),
    stops=st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=5), min_size=1, max_size=3),
    cuts=st.lists(st.integers(0, 40), max_size=12),
)
def test_matcher_equals_reference(text: str, stops: list[str], cuts: list[int]) -> None:
    stops_t = tuple(stops)
    m = StopStringMatcher(stops_t)
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    emitted = ""
    for i, piece in enumerate(pieces):
        emitted += m.feed(piece, final=(i == len(pieces) - 1))
        want, _ = reference_stop(text, stops_t)
        # never emit anything that is not in the final answer (no partial stop leaks)
        assert want.startswith(emitted)
    if not pieces:
        emitted += m.feed("", final=True)
    want, which = reference_stop(text, stops_t)
    # the whole answer comes out once the stream ends or the stop matches
    assert emitted == want
    assert m.stopped == (which is not None)
    if which is not None:
        assert text.find(m.stop_reason) == len(want)
        assert len(m.stop_reason) == len(which)


def test_hold_back_is_max_stop_len_minus_one() -> None:
    m = StopStringMatcher(("STOP", "xy"))
    assert m.feed("hello ST") == "hello"  # holds back len("STOP") - 1 = 3 characters
    assert m.feed("O") == " "
    assert m.feed("P!") == ""
    assert m.stopped and m.stop_reason == "STOP" and m.text == "hello "
    m = StopStringMatcher(("STOP",))
    assert m.feed("abcSTO") == "abc"
    assert m.feed("x") == "S"  # a fixed hold-back of 3 characters
    assert m.feed("", final=True) == "TOx"  # the end of the stream releases the rest


@pytest.fixture(scope="module")
def qwen_tokenizer(testdata):
    from orcd_toolkit.tokenizer import load_tokenizer

    return load_tokenizer(testdata / "vocab" / "ggml-vocab-qwen2.gguf")


def _engine(tok, scripts):
    cfg = EngineConfig(num_blocks=64, vocab_size=tok.vocab_size, block_size=4,
                       max_model_len=128, max_num_seqs=8, max_num_batched_tokens=64,
                       eos_token_ids=tuple(sorted(tok.stop_ids)), enable_prefix_caching=False)
    return LLMEngine(ScriptedModel(tok.vocab_size, scripts), FakeKV(64, 4), cfg, tokenizer=tok)


def _stream(eng, requests):
    handles = [eng.submit(r) for r in requests]
    streams = {h.request_id: [] for h in handles}
    while eng.has_unfinished():
        for out in eng.step():
            streams[out.request_id].append(out)
    return handles, streams


def test_stop_strings_straddle_tokens_and_utf8(qwen_tokenizer) -> None:
    tok = qwen_tokenizer
    texts = {
        "straddle": "Hello wörld END of text STOP more",
        "clef": "key 𝄞 clef and ✨✨ sparkle",
        "plain": "ünïcödé 😀 ok",
    }
    scripts, requests = {}, []
    stops = {"straddle": ("D of t",), "clef": ("✨✨",), "plain": ("zzz",)}
    for i, (name, text) in enumerate(texts.items()):
        prompt = (1000 + i, 2000 + i)
        ids = tok.encode(text, add_special=False)
        scripts[prompt] = ids + [tok.eos_id]
        requests.append(GenerationRequest(list(prompt), SamplingParams(
            max_tokens=len(ids) + 1, temperature=0.0, stop=stops[name]), request_id=name))
    # the scripted texts really split characters and stops across tokens
    clef_pieces = [tok.token_piece(t) for t in tok.encode(texts["clef"], add_special=False)]
    assert any(_invalid_utf8(p) for p in clef_pieces)
    eng = _engine(tok, scripts)
    handles, streams = _stream(eng, requests)
    by_id = {h.request_id: h for h in handles}
    assert by_id["straddle"].text == "Hello wörld EN"
    assert by_id["straddle"].finish_reason == "stop"
    assert by_id["straddle"].stop_reason == "D of t"
    assert by_id["clef"].text == "key 𝄞 clef and "
    assert by_id["plain"].text == texts["plain"] and by_id["plain"].finish_reason == "stop"
    assert by_id["plain"].stop_reason == tok.eos_id  # ended by EOS, not streamed as text
    for name, outs in streams.items():
        assert sum(o.finished for o in outs) == 1 and outs[-1].finished
        for o in outs:
            assert "\ufffd" not in o.new_text  # never half a character
        joined = "".join(o.new_text for o in outs)
        assert joined == by_id[name].text
        for stop in stops[name]:
            assert stop not in joined
    # stopped requests are freed at the next step boundary
    eng.step()
    assert eng.allocator.num_free_blocks == 64 and not eng.has_unfinished()


def test_incomplete_utf8_at_length_limit_is_one_replacement_char(qwen_tokenizer) -> None:
    tok = qwen_tokenizer
    ids = tok.encode("𝄞", add_special=False)
    assert len(ids) >= 2
    prompt = (7, 8)
    eng = _engine(tok, {prompt: ids})
    handles, streams = _stream(eng, [GenerationRequest(
        list(prompt), SamplingParams(max_tokens=1, temperature=0.0))])
    assert handles[0].finish_reason == "length" and handles[0].text == "\ufffd"


def _invalid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
