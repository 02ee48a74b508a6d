"""Scheduler + allocator + engine properties over random workloads (hypothesis).

Random arrivals, prompt lengths (with shared prefixes), sampling parameters, budgets and
aborts, run on ``CheckingModel`` (a null backend that reads every context back through the
block tables). Checked:
- every request ends exactly once, and nothing is emitted after its end;
- each request's tokens equal what it produces alone (``solo_reference``) — so no block is
  shared or reused wrongly, preemption/recompute and chunked prefill are invisible, and the
  sampler is batch-invariant; an aborted request's tokens are a prefix of that;
- allocator invariants hold after every step (no leak, no double free), the scheduler's
  block tables match the allocator's, and the free-block count is back to the start value
  when idle;
- FCFS: requests are admitted in arrival order, and all finish within a step bound (no
  starvation).
"""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
from engine_fakes import CheckingModel, FakeKV, solo_reference
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings

from orcd_toolkit.engine import (
    EngineConfig,
    GenerationRequest,
    LLMEngine,
    RequestTooLarge,
    SamplingParams,
)
from orcd_toolkit.engine.sampling import HostTokenSampler

VOCAB = 12
EOS = (0,)
MAX_STEPS = 4000

BASES = ([5, 6, 7, 8, 9, 10, 11, 5, 6, 7], [5, 6, 7, 8, 1, 2, 3, 4], [9, 9, 9])


@st.composite
def requests(draw: st.DrawFn, i: int) -> dict:
    base = draw(st.sampled_from(BASES))
    prompt = base[: draw(st.integers(0, len(base)))] + draw(
        st.lists(st.integers(1, VOCAB - 1), max_size=6)
    )
    if not prompt:
        prompt = [1]
    max_tokens = draw(st.integers(1, 16))
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=draw(st.sampled_from([0.0, 0.0, 0.7, 1.5])),
        top_k=draw(st.sampled_from([0, 3])),
        top_p=draw(st.sampled_from([1.0, 0.8])),
        min_p=draw(st.sampled_from([0.0, 0.1])),
        presence_penalty=draw(st.sampled_from([0.0, 0.5])),
        seed=draw(st.integers(0, 2**64 - 1)),
        min_tokens=draw(st.integers(0, max_tokens)),
        ignore_eos=draw(st.booleans()),
        stop_token_ids=draw(st.sampled_from([(), (3,)])),
    )
    return {
        "id": f"r{i}",
        "prompt": prompt,
        "params": params,
        "priority": draw(st.integers(0, 2)),
        "arrive": draw(st.integers(0, 6)),
        "abort": draw(st.one_of(st.none(), st.integers(0, 30))),
    }


@st.composite
def workloads(draw: st.DrawFn) -> tuple[EngineConfig, list[dict]]:
    n = draw(st.integers(1, 12))
    reqs = [draw(requests(i)) for i in range(n)]
    block_size = draw(st.sampled_from([1, 2, 4, 8]))
    allocator = draw(st.sampled_from(["paged", "paged", "contiguous"]))
    prefix = allocator == "paged" and draw(st.booleans())
    max_num_seqs = draw(st.integers(1, 6))
    largest = max(len(r["prompt"]) + r["params"].max_tokens for r in reqs)
    # from "only the largest request fits" (forces preemption) to roomy
    least = -(-largest // block_size)
    num_blocks = draw(st.one_of(st.integers(least, least + 3), st.integers(least, 3 * least + 8)))
    config = EngineConfig(
        num_blocks=num_blocks,
        vocab_size=VOCAB,
        block_size=block_size,
        max_model_len=64,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=draw(st.integers(max_num_seqs, max_num_seqs + 20)),
        max_waiting=64,
        watermark=draw(st.sampled_from([0.0, 0.1])),
        allocator=allocator,
        enable_prefix_caching=prefix,
        policy=draw(st.sampled_from(["fcfs", "fcfs", "priority"])),
        eos_token_ids=EOS,
    )
    return config, reqs


def check_scheduler_state(eng: LLMEngine) -> None:
    sch = eng.scheduler
    eng.allocator.check_invariants()
    assert len(sch.running) <= eng.config.max_num_seqs
    slots = [s.slot for s in sch.running]
    assert len(set(slots)) == len(slots) and -1 not in slots
    for seq in sch.running:
        nb = int(sch.num_blocks[seq.slot])
        assert eng.allocator.block_table(seq.seq_id)[:nb] == sch.block_table[seq.slot, :nb].tolist()
        assert int(sch.num_computed[seq.slot]) <= int(sch.num_tokens[seq.slot])
    for seq in sch.waiting:
        assert eng.allocator.block_table(seq.seq_id) == []


def run_workload(config: EngineConfig, reqs: list[dict], sampler=None) -> None:
    model = CheckingModel(VOCAB, scale=2.0)
    eng = LLMEngine(model, FakeKV(config.num_blocks, config.block_size), config, sampler=sampler)
    free_at_start = eng.allocator.num_free_blocks
    outputs: dict[str, list] = {r["id"]: [] for r in reqs}
    submitted: list[tuple[dict, object]] = []
    refused: set[str] = set()
    step = 0
    while True:
        for r in reqs:
            if r["arrive"] == step:
                try:
                    eng.submit(
                        GenerationRequest(r["prompt"], r["params"], r["id"], r["priority"])
                    )
                except RequestTooLarge:
                    total = len(r["prompt"]) + r["params"].max_tokens
                    blocks = -(-total // config.block_size)
                    assert blocks > config.num_blocks - config.watermark_blocks
                    refused.add(r["id"])
                    continue
                submitted.append((r, eng._requests[r["id"]]))
            if r["abort"] == step:
                eng.abort(r["id"])
        for out in eng.step():
            outputs[out.request_id].append(out)
        check_scheduler_state(eng)
        step += 1
        if step > max(r["arrive"] for r in reqs) and not eng.has_unfinished():
            break
        assert step < MAX_STEPS, "a request starved"
    # one more step applies aborts that arrived after the last finish; nothing may change
    eng.step()
    check_scheduler_state(eng)
    assert eng.allocator.num_free_blocks == free_at_start == config.num_blocks
    for r, seq in submitted:
        outs = outputs[r["id"]]
        ends = [i for i, o in enumerate(outs) if o.finished]
        assert ends == [len(outs) - 1], f"{r['id']} ended {len(ends)} times"
        tokens = [t for o in outs for t in o.new_token_ids]
        want, want_reason = solo_reference(model, r["prompt"], r["params"], seq.seed, EOS)
        last = outs[-1]
        if last.finish_reason == "abort":
            assert tokens == want[: len(tokens)]
        else:
            assert (tokens, last.finish_reason) == (want, want_reason), r
    for rid in refused:
        assert outputs[rid] == []
    # what this example exercised (pytest --hypothesis-show-statistics)
    if not currently_in_test_context():
        return
    event(f"preempted={eng.scheduler.num_preempted_total > 0}")
    event(f"prefix_hits={eng.allocator.prefix_hits > 0}")
    event(f"aborted={any(outputs[r['id']][-1].finish_reason == 'abort' for r, _ in submitted)}")
    event(f"refused={bool(refused)}")
    event(f"chunked={any(len(r['prompt']) > config.max_num_batched_tokens for r, _ in submitted)}")
    if config.policy == "fcfs":
        times = [seq.admitted_time for _, seq in submitted if seq.admitted_time is not None]
        assert times == sorted(times), "FCFS admission out of arrival order"


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(workloads(), st.booleans())
def test_random_workloads(workload, token_sampler: bool) -> None:
    config, reqs = workload
    # half the examples sample through the TokenSampler seam (a device sampler's path)
    run_workload(config, reqs, HostTokenSampler() if token_sampler else None)


def test_tight_budget_forces_preemption_and_stays_exact() -> None:
    rng = np.random.default_rng(1)
    reqs = []
    for i in range(12):
        prompt = [int(t) for t in rng.integers(1, VOCAB, size=int(rng.integers(3, 14)))]
        params = SamplingParams(max_tokens=12, temperature=0.9, seed=i, ignore_eos=True)
        reqs.append({"id": f"r{i}", "prompt": prompt, "params": params, "priority": 0,
                     "arrive": 0, "abort": None})
    for allocator in ("paged", "contiguous"):
        config = EngineConfig(num_blocks=14, vocab_size=VOCAB, block_size=2, max_model_len=64,
                              max_num_seqs=8, max_num_batched_tokens=16, watermark=0.0,
                              allocator=allocator, enable_prefix_caching=False, eos_token_ids=EOS)
        run_workload(config, reqs)
    # and the paged run really preempted
    model = CheckingModel(VOCAB, scale=2.0)
    eng = LLMEngine(model, FakeKV(14, 2), config=EngineConfig(
        num_blocks=14, vocab_size=VOCAB, block_size=2, max_model_len=64, max_num_seqs=8,
        max_num_batched_tokens=16, watermark=0.0, enable_prefix_caching=False,
        eos_token_ids=EOS))
    eng.generate([GenerationRequest(r["prompt"], r["params"]) for r in reqs])
    assert eng.scheduler.num_preempted_total > 0
