"""Sampling time per token on host logits of a 152k vocabulary (Qwen2.5: 151,936 tokens).

Each case samples one row with the full per-request procedure (``sample_row``); the
batched greedy case is the engine's fast path (one argmax over [256, V]) divided by 256.
Logits are seeded normal * 3 (a realistic spread: top-p / top-k candidate sets stay small).
Run as a script for a quick table: ``python benchmarks/benchmarks/bench_sampling.py``.
"""

from __future__ import annotations

import time

import numpy as np

from orcd_toolkit.engine.params import SamplingParams
from orcd_toolkit.engine.sampling import sample_row

VOCAB = 151936
CASES = {
    "greedy": SamplingParams(temperature=0.0),
    "temperature": SamplingParams(temperature=0.8),
    "top_k_40": SamplingParams(temperature=0.8, top_k=40),
    "top_p_0.9": SamplingParams(temperature=0.8, top_p=0.9),
    "top_k_top_p_min_p": SamplingParams(temperature=0.7, top_k=50, top_p=0.95, min_p=0.05),
    "penalties_bias": SamplingParams(temperature=0.8, top_p=0.9, repetition_penalty=1.1,
                                     presence_penalty=0.5, frequency_penalty=0.2,
                                     logit_bias={11: 2.0, 13: -2.0}),
    "logprobs_5": SamplingParams(temperature=0.8, top_p=0.9, logprobs=5),
}

_cache: dict[str, np.ndarray] = {}


def _logits(rows: int = 1) -> np.ndarray:
    key = f"logits{rows}"
    if key not in _cache:
        rng = np.random.default_rng(0)
        _cache[key] = (rng.standard_normal((rows, VOCAB)) * 3).astype(np.float32)
    return _cache[key]


_PROMPT = np.arange(200, dtype=np.int32) * 7 % VOCAB
_OUTPUT = np.arange(100, dtype=np.int32) * 13 % VOCAB


class SampleToken:
    params = [list(CASES)]
    param_names = ["case"]

    def setup(self, case: str) -> None:
        self.x = _logits()[0]
        self.p = CASES[case]

    def time_sample_row(self, case: str) -> None:
        sample_row(self.x, self.p, 0.37, _PROMPT, _OUTPUT, (151643, 151645))


class GreedyBatch:
    def setup(self) -> None:
        self.x = _logits(256)

    def time_argmax_256_rows(self) -> None:
        np.argmax(self.x, axis=1)


def quick(rounds: int = 5, n: int = 20) -> dict[str, float]:
    out = {}
    x = _logits()[0]
    for name, p in CASES.items():
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(n):
                sample_row(x, p, 0.37, _PROMPT, _OUTPUT, (151643, 151645))
            best = min(best, (time.perf_counter() - t) / n)
        out[name] = best * 1e6
    xb = _logits(256)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        np.argmax(xb, axis=1)
        best = min(best, time.perf_counter() - t)
    out["greedy_batched_256_per_token"] = best / 256 * 1e6
    return out


if __name__ == "__main__":
    for name, us in quick().items():
        print(f"{name:32s} {us:9.1f} us/token")
