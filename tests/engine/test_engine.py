"""Engine API behaviour on the null backend: refusals, overload, abort, priority, chunked
prefill mixed with decode, logprobs, the one-shot run, and the metrics hook."""

from __future__ import annotations

import numpy as np
import pytest
from engine_fakes import CheckingModel, FakeKV, solo_reference

from orcd_toolkit.engine import (
    DuplicateRequest,
    EngineConfig,
    GenerationRequest,
    InferenceEngine,
    LLMEngine,
    MetricsRecorder,
    QueueFull,
    RequestTooLarge,
    SamplingParams,
)
from orcd_toolkit.errors import InvalidRequest, Overloaded

VOCAB = 32


def make_engine(**overrides) -> tuple[LLMEngine, CheckingModel]:
    kw = dict(num_blocks=32, vocab_size=VOCAB, block_size=4, max_model_len=64, max_num_seqs=4,
              max_num_batched_tokens=16, max_waiting=4, watermark=0.0, eos_token_ids=(0,))
    kw.update(overrides)
    cfg = EngineConfig(**kw)
    model = CheckingModel(VOCAB)
    return LLMEngine(model, FakeKV(cfg.num_blocks, cfg.block_size), cfg, **{}), model


def test_protocol_and_run() -> None:
    eng, model = make_engine()
    assert isinstance(eng, InferenceEngine)
    prompt = [3, 4, 5, 6, 7]
    got = eng.run(prompt, 8)
    want, _ = solo_reference(model, prompt, SamplingParams(max_tokens=8, temperature=0.0), 0, (0,))
    assert got == want
    assert eng.allocator.num_free_blocks == 32


def test_refuses_what_cannot_fit() -> None:
    eng, _ = make_engine()
    with pytest.raises(RequestTooLarge, match="context length 64"):
        eng.submit(GenerationRequest([1] * 60, SamplingParams(max_tokens=5)))
    eng, _ = make_engine(num_blocks=8, max_model_len=64)
    with pytest.raises(RequestTooLarge, match="KV budget") as err:
        eng.submit(GenerationRequest([1] * 30, SamplingParams(max_tokens=3)))  # 9 blocks > 8
    assert err.value.code == "INVALID_REQUEST"
    eng.submit(GenerationRequest([1] * 29, SamplingParams(max_tokens=3)))  # exactly 8 blocks
    with pytest.raises(InvalidRequest, match="vocabulary"):
        eng.submit(GenerationRequest([VOCAB], SamplingParams()))
    with pytest.raises(InvalidRequest, match="tokenizer"):
        eng.submit(GenerationRequest([1], SamplingParams(stop=["x"])))


def test_bounded_wait_queue_is_overloaded() -> None:
    eng, _ = make_engine(max_waiting=3)
    for i in range(3):
        eng.submit(GenerationRequest([1, 2], request_id=f"r{i}"))
    with pytest.raises(QueueFull) as err:
        eng.submit(GenerationRequest([1, 2]))
    assert isinstance(err.value, Overloaded) and err.value.retriable
    with pytest.raises(DuplicateRequest):
        eng.submit(GenerationRequest([1, 2], request_id="r0"))
    eng.step()  # admits them: the queue has room again
    eng.submit(GenerationRequest([1, 2]))


def test_abort_frees_blocks_at_the_next_step_boundary() -> None:
    eng, _ = make_engine()
    h = eng.submit(GenerationRequest([1] * 10, SamplingParams(max_tokens=40, ignore_eos=True)))
    w = eng.submit(GenerationRequest([2] * 10, SamplingParams(max_tokens=40, ignore_eos=True)))
    eng.step()
    eng.step()
    used = 32 - eng.allocator.num_free_blocks
    assert used > 0 and eng.num_running == 2
    eng.abort(h.request_id)
    eng.abort("no-such-request")  # ignored
    outs = eng.step()
    ab = [o for o in outs if o.request_id == h.request_id]
    assert len(ab) == 1 and ab[0].finished and ab[0].finish_reason == "abort"
    assert ab[0].new_token_ids == []
    assert eng.num_running == 1 and h.finished and not w.finished
    assert len(eng.allocator.block_table(0)) == 0
    eng.abort(h.request_id)  # twice: nothing more happens
    assert all(o.request_id != h.request_id for o in eng.step())
    # aborting a request that still waits works too
    eng2, _ = make_engine(max_num_seqs=1, max_num_batched_tokens=4)
    a = eng2.submit(GenerationRequest([1, 2], SamplingParams(max_tokens=5, ignore_eos=True)))
    b = eng2.submit(GenerationRequest([1, 3], SamplingParams(max_tokens=5, ignore_eos=True)))
    eng2.step()
    eng2.abort(b.request_id)
    eng2.step()
    assert b.finished and b.finish_reason == "abort" and b.token_ids == []
    while eng2.has_unfinished():
        eng2.step()
    assert a.finish_reason == "length" and eng2.allocator.num_free_blocks == 32


def test_chunked_prefill_mixes_with_decode() -> None:
    eng, model = make_engine(max_num_batched_tokens=8, max_num_seqs=2)
    model.record = True
    first = eng.submit(GenerationRequest([5, 6], SamplingParams(max_tokens=10, ignore_eos=True)))
    eng.step()
    long_prompt = list(range(1, 21))
    second = eng.submit(GenerationRequest(long_prompt, SamplingParams(max_tokens=3, ignore_eos=True)))
    while eng.has_unfinished():
        eng.step()
    for b in model.batches[1:3]:  # 1 decode token + a 7-token prefill chunk: one logits row
        assert b.num_tokens == 8 and b.num_seqs == 2
        assert b.logits_indices.tolist() == [0]
    last = model.batches[3]  # decode + the prompt's last 6 tokens: both rows return logits
    assert last.num_tokens == 7 and last.logits_indices.tolist() == [0, 6]
    for h, prompt, n in ((first, [5, 6], 10), (second, long_prompt, 3)):
        want, _ = solo_reference(model, prompt, SamplingParams(max_tokens=n, ignore_eos=True),
                                 h.seed, (0,))
        assert h.token_ids == want


def test_priority_policy_orders_admission() -> None:
    eng, _ = make_engine(policy="priority", max_num_seqs=1, max_num_batched_tokens=8)
    p = SamplingParams(max_tokens=2, ignore_eos=True)
    order = []
    eng.submit(GenerationRequest([1], p, request_id="first", priority=5))
    eng.step()  # "first" runs
    eng.submit(GenerationRequest([1], p, request_id="low", priority=9))
    eng.submit(GenerationRequest([1], p, request_id="high", priority=0))
    eng.submit(GenerationRequest([1], p, request_id="mid", priority=3))
    while eng.has_unfinished():
        for o in eng.step():
            if o.finished:
                order.append(o.request_id)
    assert order == ["first", "high", "mid", "low"]


def test_preemption_takes_newest_and_recomputes() -> None:
    eng, model = make_engine(num_blocks=6, block_size=2, max_num_seqs=3,
                             max_num_batched_tokens=8)
    p = SamplingParams(max_tokens=6, ignore_eos=True, temperature=1.0)
    hs = [eng.submit(GenerationRequest([i + 1, i + 2], p, request_id=f"r{i}")) for i in range(3)]
    preempted_first = None
    while eng.has_unfinished():
        eng.step()
        if preempted_first is None and eng.scheduler.num_preempted_total:
            preempted_first = [s.request_id for s in eng.scheduler.waiting]
    assert preempted_first == ["r2"]  # the newest goes first
    for i, h in enumerate(hs):
        want, _ = solo_reference(model, [i + 1, i + 2], p, h.seed, (0,))
        assert h.token_ids == want


def test_logprobs_and_seeded_reproducibility() -> None:
    eng, model = make_engine()
    p = SamplingParams(max_tokens=5, temperature=0.8, seed=99, logprobs=3, ignore_eos=True)
    h1, h2 = eng.generate([GenerationRequest([4, 5, 6], p), GenerationRequest([4, 5, 6], p)])
    assert h1.token_ids == h2.token_ids and len(h1.logprobs) == 5
    ctx = [4, 5, 6]
    for tok, (lp, top) in zip(h1.token_ids, h1.logprobs, strict=True):
        x = model.logits_for(ctx).astype(np.float64)
        ref = x - (x.max() + np.log(np.exp(x - x.max()).sum()))
        assert abs(lp - ref[tok]) < 1e-9
        assert [t for t, _ in top] == list(np.argsort(-ref, kind="stable")[:3])
        ctx.append(tok)


def test_metrics_recorder() -> None:
    rec = MetricsRecorder()
    cfg = EngineConfig(num_blocks=32, vocab_size=VOCAB, block_size=4, max_model_len=64,
                       max_num_seqs=4, max_num_batched_tokens=16, eos_token_ids=(0,))
    eng = LLMEngine(CheckingModel(VOCAB), FakeKV(32, 4), cfg, metrics=rec)
    p = SamplingParams(max_tokens=4, ignore_eos=True)
    hs = [eng.submit(GenerationRequest([1, 2, 3, 4, 5], p)) for _ in range(2)]
    eng.step()  # computes (and caches) the shared first block
    hs.append(eng.submit(GenerationRequest([1, 2, 3, 4, 5], p)))
    eng.step()
    eng.abort(hs[2].request_id)
    while eng.has_unfinished():
        eng.step()
    snap = rec.snapshot()
    assert snap["requests_queued"] == 3
    assert snap["requests_finished"] == {"length": 2, "abort": 1}
    assert snap["histograms"]["time_to_first_token_seconds"]["count"] == 3
    assert snap["histograms"]["time_per_output_token_seconds"]["count"] == 2
    assert snap["generation_tokens"] == 4 + 4 + 1
    assert snap["prefix_cache_hit_rate"] > 0  # the 3rd prompt found the cached block
    text = rec.render_prometheus()
    assert 'orcd_requests_finished_total{outcome="abort"} 1' in text
    assert "# TYPE orcd_time_to_first_token_seconds histogram" in text
    assert 'orcd_step_time_seconds_bucket{le="+Inf"}' in text
    assert snap["num_running"] == 0 and snap["kv_usage"] == 0.0


def test_priority_preemption_takes_lowest_priority_first() -> None:
    eng, model = make_engine(num_blocks=6, block_size=2, max_num_seqs=3,
                             max_num_batched_tokens=8, policy="priority")
    p = SamplingParams(max_tokens=6, ignore_eos=True, temperature=0.0)
    # "old-low" arrives first but has the lowest priority (largest number)
    low = eng.submit(GenerationRequest([1, 2], p, request_id="old-low", priority=5))
    eng.step()
    hi = [eng.submit(GenerationRequest([i + 3, i + 4], p, request_id=f"hi{i}", priority=0))
          for i in range(2)]
    first_victims = None
    while eng.has_unfinished():
        eng.step()
        if first_victims is None and eng.scheduler.num_preempted_total:
            first_victims = [s.request_id for s in eng.scheduler.waiting]
    assert first_victims == ["old-low"]
    for h, prompt in ((low, [1, 2]), (hi[0], [3, 4]), (hi[1], [4, 5])):
        want, _ = solo_reference(model, prompt, p, h.seed, (0,))
        assert h.token_ids == want


class _FailingModel(CheckingModel):
    """Raises a device OOM on its ``fail_at``-th call."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(VOCAB)
        self.fail_at = fail_at

    def forward(self, batch, kv):
        from orcd_toolkit.errors import VramOom

        if self.calls + 1 == self.fail_at:
            self.calls += 1
            raise VramOom("out of device memory while running the step")
        return super().forward(batch, kv)


def test_forward_error_fails_the_batch_and_keeps_serving() -> None:
    cfg = EngineConfig(num_blocks=32, vocab_size=VOCAB, block_size=4, max_model_len=64,
                       max_num_seqs=2, max_num_batched_tokens=16, eos_token_ids=(0,))
    model = _FailingModel(fail_at=3)
    eng = LLMEngine(model, FakeKV(32, 4), cfg)
    p = SamplingParams(max_tokens=5, ignore_eos=True)
    a, b = (eng.submit(GenerationRequest([1, 2, 3], p)) for _ in range(2))
    c = eng.submit(GenerationRequest([4, 5, 6], p))  # waits: max_num_seqs=2
    outs = []
    while eng.has_unfinished():
        outs.extend(eng.step())
    for h in (a, b):
        assert h.finished and h.finish_reason == "error" and len(h.token_ids) == 2
    err = [o for o in outs if o.finish_reason == "error"]
    assert len(err) == 2 and all(o.error.startswith("VRAM_OOM") for o in err)
    want, _ = solo_reference(model, [4, 5, 6], p, c.seed, (0,))
    assert c.finish_reason == "length" and c.token_ids == want
    assert eng.allocator.num_free_blocks == 32


def test_token_sampler_seam() -> None:
    """With a TokenSampler the engine samples the eligible steps through it (a device
    sampler's seam) and the rest on the host; tokens equal the solo reference either way."""
    from orcd_toolkit.engine.sampling import HostTokenSampler

    class Counting(HostTokenSampler):
        calls = 0

        def sample(self, logits, batch):
            Counting.calls += 1
            assert logits.shape[0] == batch.seeds.shape[0]
            return super().sample(logits, batch)

    cfg = EngineConfig(num_blocks=64, vocab_size=VOCAB, block_size=4, max_model_len=64,
                       max_num_seqs=4, max_num_batched_tokens=16, eos_token_ids=(0,))
    model = CheckingModel(VOCAB)
    eng = LLMEngine(model, FakeKV(64, 4), cfg, sampler=Counting())
    kinds = [
        SamplingParams(max_tokens=6, temperature=0.8, top_k=5, seed=1),
        SamplingParams(max_tokens=6, temperature=1.1, top_p=0.7, presence_penalty=0.5,
                       repetition_penalty=1.3, seed=2),
        SamplingParams(max_tokens=6, temperature=0.0),
        SamplingParams(max_tokens=6, temperature=0.9, min_tokens=3, seed=4),  # host until 3
        SamplingParams(max_tokens=6, temperature=0.9, logprobs=2, seed=5),  # host always
        SamplingParams(max_tokens=6, temperature=0.9, logit_bias={3: 4.0}, seed=6),  # host
    ]
    reqs = [GenerationRequest([i + 1, i + 2, 5], p) for i, p in enumerate(kinds)]
    handles = eng.generate(reqs)
    assert Counting.calls > 0
    for r, h in zip(reqs, handles, strict=True):
        want, reason = solo_reference(model, r.prompt_ids, r.params, h.seed, (0,))
        assert (h.token_ids, h.finish_reason) == (want, reason)
    assert len(handles[4].logprobs) == len(handles[4].token_ids)
