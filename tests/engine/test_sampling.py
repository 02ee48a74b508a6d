"""Sampling against a brute-force reference (full sort) and against its distribution."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
from hypothesis import given, settings

from orcd_toolkit.engine.params import SamplingParams
from orcd_toolkit.engine.rng import uniform_draws
from orcd_toolkit.engine.sampling import (
    CDF_BLOCK,
    apply_penalties,
    inverse_cdf,
    log_softmax,
    sample_row,
    sample_token,
    top_logprobs,
)


def reference_sample(x, temperature, top_k, top_p, min_p, u) -> int:
    """The documented procedure, literally: sort everything, filter, inverse CDF by id."""
    if temperature == 0:
        return int(np.argmax(x))
    z = x.astype(np.float32) / np.float32(temperature)
    p = np.exp(z - z.max())
    top_p = float(np.float32(top_p))  # sampling parameters are float32
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    if 0 < top_k < len(p):
        order = order[:top_k]
        total = None
    else:
        total = float(p.sum(dtype=np.float64))
    if top_p < 1.0:
        cum = np.cumsum(p[order].astype(np.float64))
        target = top_p * (cum[-1] if total is None else total)
        n = int(np.searchsorted(cum, target, side="left")) + 1
        order = order[:n]
    if min_p > 0:
        order = [i for i in order if p[i] >= np.float32(min_p)]
    kept = np.array(sorted(order))
    c = np.cumsum(p[kept], dtype=np.float64)
    return int(kept[min(int(np.searchsorted(c, u * c[-1], side="right")), len(kept) - 1)])


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    vocab=st.sampled_from([2, 7, 50, 1000]),
    scale=st.sampled_from([0.1, 1.0, 5.0, 30.0]),
    temperature=st.sampled_from([0.0, 0.3, 1.0, 2.0]),
    top_k=st.sampled_from([0, 1, 2, 5, 40]),
    top_p=st.sampled_from([1.0, 0.9, 0.5, 0.05]),
    min_p=st.sampled_from([0.0, 0.05, 0.5]),
    ties=st.booleans(),
)
def test_matches_reference(seed, vocab, scale, temperature, top_k, top_p, min_p, ties) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(vocab) * scale).astype(np.float32)
    if ties:
        x = np.round(x)  # many equal logits: the (p desc, id asc) order matters
    u = float(uniform_draws([seed], [0])[0])
    got = sample_token(x, temperature, top_k, top_p, min_p, u)
    assert got == reference_sample(x, temperature, top_k, top_p, min_p, u)


def test_filters_hold() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(500).astype(np.float32) * 3
    p = np.exp(x - x.max())
    top5 = set(np.argsort(-x)[:5].tolist())
    order = np.argsort(-p)
    cum = np.cumsum(p[order]) / p.sum()
    nucleus = set(order[: int(np.searchsorted(cum, 0.5)) + 1].tolist())
    u = uniform_draws(np.full(2000, 7, dtype=np.uint64), np.arange(2000))
    seen_k, seen_p, seen_m = set(), set(), set()
    for ui in u.tolist():
        seen_k.add(sample_token(x, 1.0, 5, 1.0, 0.0, ui))
        seen_p.add(sample_token(x, 1.0, 0, 0.5, 0.0, ui))
        seen_m.add(sample_token(x, 1.0, 0, 1.0, 0.2, ui))
    assert seen_k == top5  # all of the top 5 appear, nothing else
    assert seen_p == nucleus
    assert seen_m == set(np.flatnonzero(p >= 0.2).tolist())


def test_frequencies_follow_softmax() -> None:
    x = np.array([2.0, 1.0, 0.5, 0.0, -1.0, 3.0], dtype=np.float32)
    for temperature in (0.5, 1.0, 2.0):
        z = x / temperature
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        n = 20000
        u = uniform_draws(np.full(n, 123, dtype=np.uint64), np.arange(n))
        counts = np.bincount([sample_token(x, temperature, 0, 1.0, 0.0, v) for v in u], minlength=6)
        # 5 sigma of a binomial: deterministic draws, so this cannot flake
        sigma = np.sqrt(n * probs * (1 - probs))
        assert (np.abs(counts - n * probs) < 5 * sigma + 1).all(), (counts, n * probs)


def test_greedy_ties_take_lowest_id() -> None:
    x = np.array([0.0, 5.0, 5.0, 1.0], dtype=np.float32)
    assert sample_token(x, 0.0, 0, 1.0, 0.0, 0.99) == 1
    assert sample_token(x, 1.0, 1, 1.0, 0.0, 0.99) == 1  # top-1 = greedy, lowest id


def test_penalties() -> None:
    x = np.array([2.0, -2.0, 1.0, 0.5], dtype=np.float32)
    y = x.copy()
    apply_penalties(y, np.array([0]), np.array([1, 2, 2]), 2.0, 0.0, 0.0)
    np.testing.assert_array_equal(y, [1.0, -4.0, 0.5, 0.5])
    y = x.copy()
    apply_penalties(y, np.array([0]), np.array([1, 2, 2]), 1.0, 0.5, 0.25)
    np.testing.assert_allclose(y, [2.0, -2.0 - 0.75, 1.0 - 1.0, 0.5])


def test_sample_row_bias_min_tokens_logprobs() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32)
    p = SamplingParams(temperature=0.0, logit_bias={0: 10.0}, logprobs=2)
    tok, lp = sample_row(x, p, 0.5, np.array([1]), np.array([], dtype=np.int32), (0,))
    assert tok == 0
    # logprobs describe the raw distribution, not the biased one
    ref = log_softmax(x)
    assert lp[0] == float(ref[0]) and [t for t, _ in lp[1]] == [3, 2]
    p = SamplingParams(temperature=0.0, logit_bias={0: 10.0}, min_tokens=2)
    tok, _ = sample_row(x, p, 0.5, np.array([1]), np.array([3], dtype=np.int32), (0,))
    assert tok == 3  # the stop token 0 is masked until min_tokens are out


def test_top_logprobs_order() -> None:
    x = np.array([1.0, 3.0, 3.0, 0.0], dtype=np.float32)
    lp, top = top_logprobs(x, 0, 3)
    assert [t for t, _ in top] == [1, 2, 0]
    assert abs(np.exp(log_softmax(x)).sum() - 1.0) < 1e-12
    assert lp == top[2][1]


def test_blocked_inverse_cdf_matches_sequential_sum() -> None:
    rng = np.random.default_rng(5)
    for vocab in (151936, 4 * CDF_BLOCK + 1, 10 * CDF_BLOCK):
        x = (rng.standard_normal(vocab) * 3).astype(np.float32)
        w = np.exp(x - x.max())
        w[rng.integers(0, vocab, size=vocab // 3)] = 0.0  # masked tokens never drawn
        c = np.cumsum(w, dtype=np.float64)
        for u in uniform_draws(np.full(300, 11, dtype=np.uint64), np.arange(300)).tolist() + [
            0.0, 1.0 - 2.0**-32
        ]:
            want = min(int(np.searchsorted(c, u * c[-1], side="right")), vocab - 1)
            got = inverse_cdf(w, u)
            assert got == want and w[got] > 0


def test_host_token_sampler_matches_sample_row() -> None:
    """The TokenSampler seam (what a device sampler implements) chooses what the per-row
    procedure chooses, penalties included."""
    from orcd_toolkit.engine.interfaces import SamplingBatch
    from orcd_toolkit.engine.sampling import HostTokenSampler

    rng = np.random.default_rng(3)
    n, vocab = 40, 5000
    logits = (rng.standard_normal((n, vocab)) * 3).astype(np.float32)
    kinds = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.7, top_k=20),
             SamplingParams(temperature=1.3, top_p=0.8, min_p=0.02),
             SamplingParams(temperature=0.9, repetition_penalty=1.2, presence_penalty=0.4,
                            frequency_penalty=0.3)]
    params = [kinds[i % 4] for i in range(n)]
    hist = rng.integers(0, vocab, size=(n, 30)).astype(np.int32)
    hist_len = rng.integers(5, 31, size=n).astype(np.int32)
    n_prompt = np.minimum(hist_len, 4).astype(np.int32)
    seeds = rng.integers(0, 2**63, size=n).astype(np.uint64)
    draw = (hist_len - n_prompt).astype(np.int64)
    f32 = np.float32
    batch = SamplingBatch(
        temperature=np.array([p.temperature for p in params], f32),
        top_k=np.array([p.top_k for p in params], np.int32),
        top_p=np.array([p.top_p for p in params], f32),
        min_p=np.array([p.min_p for p in params], f32),
        repetition_penalty=np.array([p.repetition_penalty for p in params], f32),
        presence_penalty=np.array([p.presence_penalty for p in params], f32),
        frequency_penalty=np.array([p.frequency_penalty for p in params], f32),
        seeds=seeds, draw_index=draw, history=hist, history_len=hist_len, num_prompt=n_prompt,
    )
    got = HostTokenSampler().sample(logits, batch)
    u = uniform_draws(seeds, draw)
    for i, p in enumerate(params):
        h = hist[i, : hist_len[i]]
        tok, _ = sample_row(logits[i], p, float(u[i]), h[: n_prompt[i]], h[n_prompt[i]:], ())
        assert got[i] == tok, i
