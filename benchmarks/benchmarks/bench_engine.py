"""Engine bookkeeping per ``step()`` on a null backend (issue #6: goal < 100 us at 256 seqs).

The model runner returns preallocated logits, so a step is only the engine's own work:
schedule, ForwardBatch, block growth, greedy argmax, stop rules, metrics. Prompts have
staggered lengths so block-boundary crossings (new blocks) spread over steps as they do in
a real server, instead of all 256 sequences growing in the same step.

Measurement traps: setup builds a fresh engine and warms it for 32 steps (first steps are
prefill, not decode); the sequences grow during timing, so max_tokens leaves room for
asv's repeats. Run as a script for a quick figure: ``python benchmarks/benchmarks/bench_engine.py``.
"""

from __future__ import annotations

import time

from orcd_toolkit.engine import EngineConfig, GenerationRequest, LLMEngine, SamplingParams
from orcd_toolkit.engine.null_model import NullModelRunner

VOCAB = 256  # small on purpose: the vocabulary cost is bench_sampling's subject
MAX_TOKENS = 6000


def make_engine(num_seqs: int, prefix_caching: bool = False) -> LLMEngine:
    block_size = 16
    max_len = 64 + MAX_TOKENS
    cfg = EngineConfig(
        num_blocks=num_seqs * (-(-max_len // block_size)) + 64,
        watermark=0.0,
        vocab_size=VOCAB,
        block_size=block_size,
        max_model_len=max_len,
        max_num_seqs=num_seqs,
        max_num_batched_tokens=max(2048, num_seqs),
        eos_token_ids=(0,),
        enable_prefix_caching=prefix_caching,
    )
    eng = LLMEngine(NullModelRunner(VOCAB, num_seqs), None, cfg)
    for i in range(num_seqs):
        prompt = [2 + i % 200] * (17 + i % 47)
        eng.submit(GenerationRequest(prompt, SamplingParams(max_tokens=MAX_TOKENS,
                                                            temperature=0.0, ignore_eos=True)))
    for _ in range(32):
        eng.step_core()
    if eng.num_running != num_seqs:
        raise RuntimeError(f"only {eng.num_running} of {num_seqs} sequences running")
    return eng


class EngineStep:
    params = [[1, 64, 256], [False, True]]
    param_names = ["num_running", "prefix_caching"]
    number = 100
    repeat = (3, 10, 20.0)

    def setup(self, num_running: int, prefix_caching: bool) -> None:
        self.engine = make_engine(num_running, prefix_caching)

    def time_step_core(self, num_running: int, prefix_caching: bool) -> None:
        """Model step only (what the GPU waits on)."""
        self.engine.step_core()

    def time_step_with_outputs(self, num_running: int, prefix_caching: bool) -> None:
        """step(): plus the per-request RequestOutput events (no tokenizer)."""
        self.engine.step()


def quick(num_seqs: int = 256, steps: int = 300, rounds: int = 7) -> dict[str, float]:
    """Best-of-``rounds`` mean microseconds per step (noise on a shared machine only adds)."""
    res: dict[str, float] = {}
    for name in ("step_core", "step"):
        eng = make_engine(num_seqs)
        fn = getattr(eng, name)
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(steps):
                fn()
            best = min(best, (time.perf_counter() - t) / steps)
        res[name] = best * 1e6
    return res


if __name__ == "__main__":
    for n in (1, 64, 256):
        r = quick(n)
        print(f"{n:4d} running: step_core {r['step_core']:7.1f} us   step {r['step']:7.1f} us")
