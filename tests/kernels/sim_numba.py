"""Numba kernels on the CUDA simulator against the NumPy reference, at tiny shapes.

Run by test_numba_simulator.py in a subprocess with NUMBA_ENABLE_CUDASIM=1 (the variable must
be set before numba is first imported, which other test modules in the same process may have
done). Not collected by the main suite: its file name does not start with ``test_``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":  # pragma: no cover - guarded by the runner
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1", allow_module_level=True)

from numba import cuda  # noqa: E402

from orcd_toolkit.backends.cpu import ops  # noqa: E402
from orcd_toolkit.kernels import activations, moe, norms, rope, sampling  # noqa: E402


def nmse(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.sum((a - b) ** 2) / max(np.sum(b * b), 1e-300))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.mark.parametrize("fused", [False, True])
def test_rms_norm(rng: np.random.Generator, fused: bool) -> None:
    x = rng.normal(0, 1, (2, 19)).astype(np.float32)
    r = rng.normal(0, 1, (2, 19)).astype(np.float32)
    w = rng.normal(1, 0.1, 19).astype(np.float32)
    out = cuda.to_device(np.full_like(x, np.nan))
    if fused:
        ro = cuda.to_device(np.full_like(x, np.nan))
        norms.rms_norm(out, cuda.to_device(x), cuda.to_device(w), 1e-6, residual=cuda.to_device(r),
                       residual_out=ro, threads=8)
        ref, ref_sum = ops.add_rms_norm(x, r, w, 1e-6)
        assert nmse(ro.copy_to_host(), ref_sum) < 1e-14
    else:
        norms.rms_norm(out, cuda.to_device(x), cuda.to_device(w), 1e-6, threads=8)
        ref = ops.rms_norm(x, w, 1e-6)
    assert nmse(out.copy_to_host(), ref) < 1e-12


def test_add_rms_norm_in_place(rng: np.random.Generator) -> None:
    """residual_out aliasing x (the residual stream updated in place) gives the same result."""
    x = rng.normal(0, 1, (1, 13)).astype(np.float32)
    r = rng.normal(0, 1, (1, 13)).astype(np.float32)
    w = np.ones(13, np.float32)
    xd = cuda.to_device(x)
    out = cuda.to_device(np.zeros_like(x))
    norms.rms_norm(out, xd, cuda.to_device(w), 1e-6, residual=cuda.to_device(r), residual_out=xd,
                   threads=4)
    ref, ref_sum = ops.add_rms_norm(x, r, w, 1e-6)
    assert nmse(out.copy_to_host(), ref) < 1e-12
    assert nmse(xd.copy_to_host(), ref_sum) < 1e-14


@pytest.mark.parametrize("fused", [False, True])
def test_layer_norm(rng: np.random.Generator, fused: bool) -> None:
    x = rng.normal(2, 1, (3, 10)).astype(np.float32)
    r = rng.normal(0, 1, (3, 10)).astype(np.float32)
    w = rng.normal(1, 0.1, 10).astype(np.float32)
    b = rng.normal(0, 0.1, 10).astype(np.float32)
    out = cuda.to_device(np.full_like(x, np.nan))
    if fused:
        ro = cuda.to_device(np.full_like(x, np.nan))
        norms.layer_norm(out, cuda.to_device(x), cuda.to_device(w), cuda.to_device(b), 1e-5,
                         residual=cuda.to_device(r), residual_out=ro, threads=4)
        ref, _ = ops.add_layer_norm(x, r, w, b, 1e-5)
    else:
        norms.layer_norm(out, cuda.to_device(x), cuda.to_device(w), cuda.to_device(b), 1e-5,
                         threads=4)
        ref = ops.layer_norm(x, w, b, 1e-5)
    assert nmse(out.copy_to_host(), ref) < 1e-12


@pytest.mark.parametrize(
    ("mode", "n_rot", "kw"),
    [
        (ops.ROPE_NEOX, 8, {"freq_base": 1e6}),
        (ops.ROPE_NORM, 8, {"freq_base": 1e4}),
        (ops.ROPE_NEOX, 4, {"freq_base": 1e4}),  # partial rotation: the rest passes through
        (ops.ROPE_NEOX, 8, {"freq_base": 150000.0, "freq_scale": 1 / 32, "ext_factor": 1.0,
                            "beta_fast": 32.0, "beta_slow": 1.0, "n_ctx_orig": 4096}),
    ],
)
def test_rope_kv_write(rng: np.random.Generator, mode: int, n_rot: int, kw: dict) -> None:
    t, hq, hkv, d, nb, bs = 3, 4, 2, 8, 3, 4
    q = rng.normal(0, 1, (t, hq, d)).astype(np.float32)
    k = rng.normal(0, 1, (t, hkv, d)).astype(np.float32)
    v = rng.normal(0, 1, (t, hkv, d)).astype(np.float32)
    pos = np.array([0, 17, 3000], np.int32)
    slots = np.array([5, -1, 11], np.int32)
    freqs, mscale = rope.rope_frequencies(n_rot, **kw)
    qd, kd = cuda.to_device(q), cuda.to_device(k)
    kc = cuda.to_device(np.zeros((nb, bs, hkv, d), np.float16))
    vc = cuda.to_device(np.zeros((nb, bs, hkv, d), np.float16))
    rope.rope_kv_write(qd, kd, cuda.to_device(v), cuda.to_device(pos), cuda.to_device(freqs),
                       mscale, mode, slot_mapping=cuda.to_device(slots), k_cache=kc, v_cache=vc,
                       threads=4)
    q_ref = ops.rope(q, pos, n_rot, mode, **kw)
    k_ref = ops.rope(k, pos, n_rot, mode, **kw)
    assert nmse(qd.copy_to_host(), q_ref) < 1e-12
    assert nmse(kd.copy_to_host(), k_ref) < 1e-12
    kc_ref = np.zeros((nb, bs, hkv, d), np.float32)
    vc_ref = np.zeros((nb, bs, hkv, d), np.float32)
    ops.write_kv(kc_ref, vc_ref, k_ref, v, slots)
    np.testing.assert_array_equal(kc.copy_to_host(), kc_ref.astype(np.float16))
    np.testing.assert_array_equal(vc.copy_to_host(), vc_ref.astype(np.float16))


def test_rope_without_cache(rng: np.random.Generator) -> None:
    q = rng.normal(0, 1, (2, 2, 4)).astype(np.float32)
    k = rng.normal(0, 1, (2, 1, 4)).astype(np.float32)
    pos = np.array([1, 9], np.int32)
    freqs, mscale = rope.rope_frequencies(4, freq_base=1e4)
    qd = cuda.to_device(q)
    rope.rope_kv_write(qd, cuda.to_device(k), cuda.to_device(k), cuda.to_device(pos),
                       cuda.to_device(freqs), mscale, ops.ROPE_NORM, threads=2)
    assert nmse(qd.copy_to_host(), ops.rope(q, pos, 4, ops.ROPE_NORM, freq_base=1e4)) < 1e-12


def test_activations(rng: np.random.Generator) -> None:
    g = rng.normal(0, 4, (2, 9)).astype(np.float32)
    u = rng.normal(0, 4, (2, 9)).astype(np.float32)
    for fn, ref in (
        (activations.swiglu, ops.swiglu(g, u)),
        (activations.swiglu_oai, ops.swiglu_oai(g, u)),
        (activations.add, g + u),
    ):
        out = cuda.to_device(np.full_like(g, np.nan))
        fn(out, cuda.to_device(g), cuda.to_device(u))
        assert nmse(out.copy_to_host(), ref) < 1e-12, fn.__name__
    out = cuda.to_device(np.full_like(g, np.nan))
    activations.gelu(out, cuda.to_device(g))
    assert nmse(out.copy_to_host(), ops.gelu(g)) < 1e-12


def test_moe_route_and_combine(rng: np.random.Generator) -> None:
    logits = rng.normal(0, 1, (3, 6)).astype(np.float32)
    logits[0, 4] = logits[0, 1] = logits[0].max() + 1.0  # tie: lower id first
    ids = cuda.to_device(np.zeros((3, 2), np.int32))
    w = cuda.to_device(np.zeros((3, 2), np.float32))
    moe.route(ids, w, cuda.to_device(logits))
    ref_ids, ref_w = ops.moe_route(logits, 2)
    np.testing.assert_array_equal(ids.copy_to_host(), ref_ids)
    assert nmse(w.copy_to_host(), ref_w) < 1e-12
    y = rng.normal(0, 1, (3, 2, 5)).astype(np.float32)
    out = cuda.to_device(np.full((3, 5), np.nan, np.float32))
    moe.combine(out, cuda.to_device(y), w)
    ref = np.einsum("tk,tkd->td", ref_w, y)
    assert nmse(out.copy_to_host(), ref) < 1e-12


def _sample_case(rng: np.random.Generator, params: list, vocab: int = 48):
    from orcd_toolkit.engine import rng as erng
    from orcd_toolkit.engine import sampling as esamp

    n = len(params)
    logits = rng.normal(0, 2, (n, vocab)).astype(np.float32)
    logits[:, 5] = logits[:, 6] = logits.max(axis=1) + 0.5  # argmax tie
    seeds = rng.integers(0, 2**63, n, dtype=np.uint64)
    draw = rng.integers(0, 50, n).astype(np.int64)
    hist = rng.integers(0, vocab, (n, 6)).astype(np.int32)
    hist[:, 1] = hist[:, 0]
    hist_len = np.full(n, 6, np.int32)
    n_prompt = np.full(n, 2, np.int32)
    ref = []
    for i, p in enumerate(params):
        u = float(erng.uniform_draws(np.array([seeds[i]]), np.array([draw[i]]))[0])
        tok, _ = esamp.sample_row(logits[i], p, u, hist[i, :2], hist[i, 2:], [])
        ref.append(tok)
    lp_ref = [esamp.log_softmax(logits[i])[t] for i, t in enumerate(ref)]

    def arr(name: str, dtype: type) -> object:
        return cuda.to_device(np.array([getattr(p, name) for p in params], dtype))

    dev = {
        "temperature": arr("temperature", np.float32), "top_k": arr("top_k", np.int32),
        "top_p": arr("top_p", np.float32), "min_p": arr("min_p", np.float32),
        "repetition_penalty": arr("repetition_penalty", np.float32),
        "presence_penalty": arr("presence_penalty", np.float32),
        "frequency_penalty": arr("frequency_penalty", np.float32),
    }
    toks = cuda.to_device(np.full(n, -7, np.int32))
    lps = cuda.to_device(np.zeros(n, np.float32))
    counts = cuda.to_device(np.zeros((n, vocab), np.int32))
    xd = cuda.to_device(logits)
    sampling.sample(toks, lps, xd, dev, cuda.to_device(seeds), cuda.to_device(draw),
                    cuda.to_device(np.zeros((n, vocab), np.float32)), counts,
                    history=cuda.to_device(hist), history_len=cuda.to_device(hist_len),
                    num_prompt=cuda.to_device(n_prompt), threads=8)
    np.testing.assert_array_equal(toks.copy_to_host(), np.array(ref))
    np.testing.assert_allclose(lps.copy_to_host(), np.array(lp_ref), rtol=1e-5, atol=1e-5)
    assert not counts.copy_to_host().any(), "counts scratch must be left all zero"
    np.testing.assert_array_equal(xd.copy_to_host(), logits)


def test_sampling_matches_engine(rng: np.random.Generator) -> None:
    from orcd_toolkit.engine.params import SamplingParams as P

    params = [
        P(temperature=0.0), P(temperature=1.0), P(temperature=0.7, top_k=5),
        P(temperature=0.8, top_p=0.6), P(temperature=1.0, top_k=9, top_p=0.7, min_p=0.05),
        P(temperature=1.2, min_p=0.2), P(temperature=1.0, top_k=1),
        P(temperature=1.0, repetition_penalty=1.5, presence_penalty=0.5, frequency_penalty=0.7,
          top_p=0.9),
    ]
    _sample_case(rng, params)


def test_sampling_many_seeds(rng: np.random.Generator) -> None:
    """Different draws land on different tokens: the Philox uniform is really used."""
    from orcd_toolkit.engine.params import SamplingParams as P

    _sample_case(rng, [P(temperature=1.5) for _ in range(6)], vocab=16)
