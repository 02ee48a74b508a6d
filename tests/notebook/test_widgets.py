"""The widgets driven headlessly: build, set values, press buttons, check what they show."""

from __future__ import annotations

import html
import time

import numpy as np
import pytest

from orcd_toolkit import gguf
from orcd_toolkit.models.runner import SequenceRunner
from orcd_toolkit.notebook import ACTIVE, GenerateWidget, KernelBench, ModelCard, TokenizerView
from orcd_toolkit.notebook.server_process import free_port

PROMPT = "The capital of France is"


def _wait(pred, timeout: float = 60.0) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.002)
    return time.monotonic() - t0


def _no_traceback(msg: str) -> None:
    assert msg and "\n" not in msg and "Traceback" not in msg and "File \"" not in msg


# --------------------------------------------------------------------------- GenerateWidget


def test_generate_streams_greedy_text_with_live_stats(smollm2_session):
    w = GenerateWidget(smollm2_session, prompt=PROMPT, max_tokens=5, temperature=0.0)
    seen: list[str] = []
    w.observe(lambda c: seen.append(c["new"]), names="text")
    assert w.stop_button.disabled and not w.generate_button.disabled
    w.generate_button.click()
    assert w.status == "running" and w.generate_button.disabled
    w.wait(60)
    prompt_ids = smollm2_session.tokenizer.encode(PROMPT)
    ids, _ = SequenceRunner(smollm2_session.model, 64).greedy(prompt_ids, 5)
    expected = smollm2_session.tokenizer.decode(ids)
    assert w.status == "done" and w.text == expected and w.num_tokens == 5
    assert w.generation.token_ids == ids
    # streamed: every intermediate value is a prefix of the final text
    assert seen[-1] == expected and all(expected.startswith(s) for s in seen)
    assert w.ttft_ms is not None and w.ttft_ms > 0
    assert w.tokens_per_s is not None and w.tokens_per_s > 0
    assert w.stats.startswith("5 tokens · TTFT ") and w.stats.endswith("finish: length")
    assert html.escape(expected) in w.output.value
    assert "tok/s" in w.stats_view.value
    assert not w.generate_button.disabled and w.stop_button.disabled and w.error == ""


def test_generate_same_seed_same_text(smollm2_session):
    a = GenerateWidget(smollm2_session, prompt="Tell me a story", max_tokens=4, temperature=1.0,
                       seed=1234)
    b = GenerateWidget(smollm2_session, prompt="Tell me a story", max_tokens=4, temperature=1.0,
                       seed=1234)
    a.generate(wait=True, timeout=60)
    b.generate(wait=True, timeout=60)
    assert a.status == b.status == "done" and a.text == b.text
    assert a.generation.token_ids == b.generation.token_ids


def test_stop_cancels_within_100ms(smollm2_session):
    w = GenerateWidget(smollm2_session, prompt="Once upon a time", max_tokens=500,
                       temperature=0.0)
    w.generate()
    _wait(lambda: w.num_tokens >= 1)
    assert not w.stop_button.disabled
    t0 = time.monotonic()
    w.stop_button.click()
    stopped_in = time.monotonic() - t0
    w.wait(0.1)  # the streaming thread must be gone well within the budget
    joined_in = time.monotonic() - t0
    assert w.status == "stopped" and stopped_in < 0.1 and joined_in < 0.1, \
        f"status after {stopped_in * 1e3:.1f} ms, thread joined after {joined_in * 1e3:.1f} ms"
    assert w.stats.endswith("stopped") and w.error == ""
    assert not w.generate_button.disabled and w.stop_button.disabled
    frozen, n = w.text, w.num_tokens
    _wait(lambda: not smollm2_session.has_work(), timeout=10)  # engine dropped it
    time.sleep(0.3)
    assert w.text == frozen and w.num_tokens == n < 500


def test_chat_mode_keeps_history(smollm2_session):
    w = GenerateWidget(smollm2_session, chat=True, prompt="Hi!", max_tokens=3, temperature=0.0)
    assert w.history_view.layout.display is None
    w.generate(wait=True, timeout=60)
    assert w.status == "done"
    assert [m["role"] for m in w.history] == ["user", "assistant"]
    assert w.history[0]["content"] == "Hi!" and w.history[1]["content"] == w.text
    assert w.prompt.value == "" and "Hi!" in w.history_view.value
    # the chat template was applied: the prompt is longer than the raw message
    assert w.generation.prompt_tokens > len(smollm2_session.tokenizer.encode("Hi!"))
    w.clear_button.click()
    assert w.history == [] and w.history_view.value == ""


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda w: setattr(w.seed, "value", "abc"),
         "seed must be an integer (or empty for a random seed), got 'abc'"),
        (lambda w: setattr(w.seed, "value", "-1"), "field 'seed' must be in [0, 2**64-1], got -1"),
        (lambda w: setattr(w.stop_strings, "value", ["a", "b", "c", "d", "e"]),
         "field 'stop' has 5 strings; at most 4 allowed"),
        (lambda w: setattr(w.prompt, "value", ""), "field 'prompt' must not be empty"),
    ],
)
def test_invalid_parameter_shows_one_line(smollm2_session, setup, message):
    w = GenerateWidget(smollm2_session, prompt=PROMPT, max_tokens=2)
    setup(w)
    w.generate_button.click()
    assert w.status == "error" and w.error == message and w.generation is None
    _no_traceback(w.error)
    assert html.escape(message) in w.error_view.value
    assert not w.generate_button.disabled  # usable again


def test_model_missing_shows_one_line():
    w = GenerateWidget("no-such-model-xyz", prompt=PROMPT)
    w.generate_button.click()
    assert w.status == "error" and "no-such-model-xyz" in w.error
    assert "neither an existing file nor a known model name" in w.error
    _no_traceback(w.error)


def test_server_unreachable_shows_one_line():
    port = free_port()
    w = GenerateWidget(f"ws://127.0.0.1:{port}", prompt=PROMPT)
    w.generate_button.click()
    assert w.status == "error" and w.error.startswith(f"no server answers at http://127.0.0.1:{port}")
    _no_traceback(w.error)


def test_no_session_shows_how_to_get_one():
    assert ACTIVE.session is None
    w = GenerateWidget(prompt=PROMPT)
    w.generate_button.click()
    assert w.status == "error" and "%orcd_load MODEL" in w.error


def test_generate_uses_the_active_session(smollm2_session):
    ACTIVE.session = smollm2_session
    w = GenerateWidget(prompt=PROMPT, max_tokens=2, temperature=0.0)
    w.generate(wait=True, timeout=60)
    assert w.status == "done" and w.num_tokens == 2


def test_generate_against_a_server_streams_and_stops(smollm2_server):
    w = GenerateWidget(smollm2_server.url, prompt=PROMPT, max_tokens=3, temperature=0.0)
    w.generate(wait=True, timeout=60)
    assert w.status == "done" and w.num_tokens == 3 and w.text.startswith(" Paris")
    w.prompt.value = "Once upon a time"
    w.max_tokens.value = 500
    w.generate()
    _wait(lambda: w.num_tokens >= 1)
    t0 = time.monotonic()
    w.stop()
    w.wait(0.1)
    assert w.status == "stopped" and time.monotonic() - t0 < 0.1
    _wait(lambda: smollm2_server.health()[1]["running"] == 0, timeout=10)


def test_server_error_event_shows_in_widget(smollm2_server):
    w = GenerateWidget(smollm2_server.url, prompt=PROMPT, max_tokens=100000)
    w.generate(wait=True, timeout=60)
    assert w.status == "error" and w.error.startswith("INVALID_REQUEST: field 'max_tokens'")
    _no_traceback(w.error)


# --------------------------------------------------------------------------- ModelCard


def test_model_card_local_fields(smollm2_session, smollm2_path):
    card = ModelCard(smollm2_session)
    f = card.facts
    gf = gguf.load(smollm2_path)
    assert f["architecture"] == "llama" and f["resident"] == "cpu" and f["backend"] == "cpu"
    assert f["quant_kind"] == "Q4_1"
    assert f["parameters"] == sum(t.n_elements for t in gf.tensors.values())
    assert set(f["tensor_types"]) == {t.qtype.name for t in gf.tensors.values()}
    assert {"Q4_1", "Q8_0"} <= set(f["tensor_types"])
    assert f["hyperparameters"]["block_count"] == 30
    assert f["model_hparams"]["n_layer"] == 30 and f["model_hparams"]["n_head_kv"] == 3
    mem = f["memory_by_category"]
    assert sum(v for k, v in mem.items() if k != "KV cache") == \
        sum(t.nbytes for t in gf.tensors.values())
    assert {"embeddings", "attention", "feed-forward", "norms", "KV cache"} <= set(mem)
    hp = smollm2_session.model.hparams
    kv = mem["KV cache"]
    assert kv == f["kv_cache_bytes"] == 2 * hp.n_layer * hp.n_head_kv * hp.head_dim * 4 * \
        np.prod(f["kv_blocks"])
    assert f["tokenizer"]["kind"] == "gguf-bpe" and f["tokenizer"]["vocab_size"] == 49152
    assert "no VRAM used" in f["residency_note"]
    assert "llama" in card.view.value and "Q4_1" in card.view.value and card.error == ""


def test_model_card_from_file_only(smollm2_path):
    f = ModelCard(str(smollm2_path)).facts
    assert f["source"] == "file" and f["resident"] == "not loaded"
    assert "KV cache" not in f["memory_by_category"]


def test_model_card_remote(smollm2_server):
    card = ModelCard(__import__("orcd_toolkit.notebook", fromlist=["RemoteSession"])
                     .RemoteSession(smollm2_server.url))
    f = card.facts
    assert f["source"] == "remote" and f["architecture"] == "llama" and f["status"] == "ready"
    assert f["resident"] == "cpu" and f["quant_kind"] == "Q4_1"
    assert "does not expose its tensor table" in f["residency_note"]


def test_model_card_errors_are_readable():
    card = ModelCard("no-such-model-xyz")
    assert card.facts == {} and "no-such-model-xyz" in card.error
    _no_traceback(card.error)
    assert "%orcd_load" in ModelCard().error


# --------------------------------------------------------------------------- TokenizerView


def test_tokenizer_view_tokens_and_colours(smollm2_session):
    tok = smollm2_session.tokenizer
    text = "Hello world, héllo!\nTabs\tand 日本"
    tv = TokenizerView(smollm2_session, text, add_special=False)
    ids = tok.encode(text, add_special=False)
    assert [t for t, _ in tv.tokens] == ids
    assert b"".join(p for _, p in tv.tokens) == text.encode()
    assert tv.view.value.count("class='orcd-token'") == len(ids)
    assert f"{len(ids)} tokens" in tv.summary.value
    assert "\u00b7world" in tv.view.value and "\u21b5" in tv.view.value  # whitespace shown
    tv.text.value = "a b"
    assert [t for t, _ in tv.tokens] == tok.encode("a b", add_special=False)


def test_tokenizer_view_special_tokens(smollm2_session):
    tok = smollm2_session.tokenizer
    text = "<|im_start|>user"
    plain = TokenizerView(smollm2_session, text, add_special=False)
    special = TokenizerView(smollm2_session, text, add_special=False, parse_special=True)
    assert len(special.tokens) < len(plain.tokens)
    sid = tok.token_to_id("<|im_start|>")
    assert special.tokens[0][0] == sid and "dashed" in special.view.value


def test_tokenizer_view_from_registry_name_and_errors(smollm2_path):
    tv = TokenizerView(str(smollm2_path), "abc", add_special=False)
    assert tv.tokens and tv.error == ""
    bad = TokenizerView("no-such-model-xyz", "abc")
    assert bad.tokens == [] and "no-such-model-xyz" in bad.error
    _no_traceback(bad.error)


# --------------------------------------------------------------------------- KernelBench


def test_kernel_bench_numpy_only_without_gpu():
    from orcd_toolkit.notebook.bench import gpu_available

    if gpu_available()[0]:
        pytest.skip("a GPU is usable here: the NumPy-only note does not apply")
    kb = KernelBench(op="rms_norm", rows=4, cols=256, repeats=3)
    assert "No usable GPU here" in kb.note.value
    r = kb.run()
    assert r is not None and r.gpu_ms is None and r.nmse is None and r.numpy_ms > 0
    assert r.note.startswith("NumPy only:") and r.device == "NumPy only"
    assert r.bytes_moved == (2 * 4 * 256 + 256) * 4
    assert "rms_norm 4x256" in kb.table.value and "<svg" in kb.chart.value
    kb.op.value = "matvec"
    kb.qtype.value = "Q8_0"
    kb.preset.value = "Qwen2.5-0.5B attn_q 896 x 896"
    assert (kb.rows.value, kb.cols.value) == (896, 896)
    r2 = kb.run()
    assert r2.case.label == "matvec Q8_0 896x896" and len(kb.results) == 2
    assert "no GPU" in kb.chart.value
    kb.clear_button.click()
    assert kb.results == [] and kb.table.value == ""


def test_kernel_bench_invalid_shape_is_readable():
    kb = KernelBench(op="matvec", rows=8, cols=100, qtype="Q4_K")
    assert kb.run() is None and kb.error == "cols must be a multiple of 256 for Q4_K, got 100"
    assert kb.results == []
