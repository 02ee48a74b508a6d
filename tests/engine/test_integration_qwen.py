"""End to end on the NumPy backend: Qwen2.5-0.5B, its GGUF tokenizer and chat template,
streaming detokenization and a stop string (slow: ~1-3 s per step on the 2-core box)."""

from __future__ import annotations

import pytest

from orcd_toolkit.engine import GenerationRequest, MetricsRecorder, SamplingParams, build_engine


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_chat_greedy_and_stop_string(qwen05_path) -> None:
    from orcd_toolkit import gguf
    from orcd_toolkit.models import load_model
    from orcd_toolkit.tokenizer import load_tokenizer

    gf = gguf.load(qwen05_path)
    tok = load_tokenizer(gf)
    model = load_model(gf)
    rec = MetricsRecorder()
    eng = build_engine(model, tok, kv_tokens=2048, max_model_len=1024, max_num_seqs=4,
                       metrics=rec)
    assert set(eng.config.eos_token_ids) == {t for t in tok.stop_ids if t < model.vocab_size}
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    )
    ids = tok.encode(text, add_special=True, parse_special=True)
    plain, stopped = eng.generate([
        GenerationRequest(ids, SamplingParams(max_tokens=24, temperature=0.0)),
        GenerationRequest(ids, SamplingParams(max_tokens=24, temperature=0.0, stop=["def "])),
    ])
    # streamed text is exactly the detokenized tokens
    assert plain.finish_reason == "length" and len(plain.token_ids) == 24
    assert plain.text == tok.decode(plain.token_ids)
    assert "def " in plain.text  # the model writes a function (greedy, fixed weights)
    # the stop string cuts the same greedy stream before "def ", and is not emitted
    assert stopped.finish_reason == "stop" and stopped.stop_reason == "def "
    assert stopped.text == plain.text[: plain.text.index("def ")]
    assert stopped.token_ids == plain.token_ids[: len(stopped.token_ids)]
    snap = rec.snapshot()
    assert snap["requests_finished"] == {"length": 1, "stop": 1}
    eng.step()  # frees the stopped request's blocks
    assert eng.allocator.num_free_blocks == eng.config.num_blocks
