"""Perplexity computed exactly as llama.cpp's ``llama-perplexity`` does (tools/perplexity).

The text is tokenized once with the vocabulary's BOS rule; it is cut into
``n_chunk = len(tokens) // n_ctx`` chunks of ``n_ctx`` tokens (the tail is dropped). Each
chunk is evaluated from an empty KV cache with positions 0..n_ctx-1; when the vocabulary adds
BOS, the chunk's first token is *replaced* by BOS (not prepended). Only the second half is
scored: the logits at positions ``first = n_ctx/2 .. n_ctx-2`` predict tokens
``first+1 .. n_ctx-1``, so each chunk contributes ``n_ctx - first - 1`` negative
log-likelihoods. PPL = exp(mean NLL). llama.cpp requires at least ``2 * n_ctx`` tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from orcd_toolkit.backends.base import ForwardBatch
from orcd_toolkit.backends.cpu.ops import log_softmax
from orcd_toolkit.errors import InvalidRequest
from orcd_toolkit.models.base import CausalLM


@dataclass(slots=True)
class PositionLogprobs:
    chunk: int
    position: int
    token: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass(slots=True)
class PerplexityResult:
    ppl: float
    nll_mean: float
    nll_std_error: float  # of the mean NLL, as llama-perplexity's "+/-"
    n_chunks: int
    n_ctx: int
    n_scored: int
    chunk_ppl: list[float] = field(default_factory=list)  # running PPL after each chunk
    positions: list[PositionLogprobs] = field(default_factory=list)


def perplexity(
    model: CausalLM,
    tokens: Sequence[int],
    n_ctx: int,
    *,
    bos_id: int | None,
    n_chunks: int = -1,
    top_k: int = 0,
    block_size: int = 16,
    on_chunk: Callable[[int, float], None] | None = None,
) -> PerplexityResult:
    """PPL of ``tokens`` (already tokenized with special tokens) in chunks of ``n_ctx``.

    ``bos_id``: the BOS id when the vocabulary adds BOS (llama_vocab_get_add_bos), else None.
    ``top_k > 0`` also records the top-k log-probs of every scored position.
    """
    toks = np.asarray(tokens, dtype=np.int32)
    if n_ctx < 4 or n_ctx % 2:
        raise InvalidRequest(f"--ctx must be an even number >= 4, got {n_ctx}")
    if toks.shape[0] < 2 * n_ctx:
        raise InvalidRequest(
            f"need at least {2 * n_ctx} tokens to evaluate perplexity with a context of {n_ctx}; "
            f"the text tokenizes to only {toks.shape[0]}"
        )
    max_chunks = toks.shape[0] // n_ctx
    count = max_chunks if n_chunks < 0 else min(n_chunks, max_chunks)
    first = n_ctx // 2
    num_blocks = -(-n_ctx // block_size)
    kv = model.new_kv_cache(num_blocks, block_size)
    blocks = np.arange(num_blocks, dtype=np.int32)
    positions = np.arange(n_ctx, dtype=np.int32)
    nll_sum = nll2_sum = 0.0
    scored = 0
    result = PerplexityResult(0.0, 0.0, 0.0, count, n_ctx, 0)
    for c in range(count):
        ids = toks[c * n_ctx : (c + 1) * n_ctx].copy()
        if bos_id is not None:
            ids[0] = bos_id
        batch = ForwardBatch(
            token_ids=ids,
            positions=positions,
            seq_starts=np.array([0, n_ctx]),
            context_lens=np.array([n_ctx]),
            block_tables=blocks[None, :],
            slot_mapping=blocks[positions // block_size] * block_size + positions % block_size,
            logits_indices=np.arange(first, n_ctx - 1),
        )
        logits = model.backend.to_host(model.forward(batch, kv))
        logp = log_softmax(logits).astype(np.float64)
        targets = toks[c * n_ctx + first + 1 : (c + 1) * n_ctx]
        token_lp = logp[np.arange(targets.shape[0]), targets]
        nll_sum += float(-token_lp.sum())
        nll2_sum += float((token_lp * token_lp).sum())
        scored += targets.shape[0]
        running = math.exp(nll_sum / scored)
        result.chunk_ppl.append(running)
        if on_chunk is not None:
            on_chunk(c, running)
        if top_k > 0:
            top = np.argsort(-logp, axis=-1, kind="stable")[:, :top_k]
            for r in range(targets.shape[0]):
                result.positions.append(
                    PositionLogprobs(
                        chunk=c,
                        position=first + r,
                        token=int(targets[r]),
                        logprob=float(token_lp[r]),
                        top=[(int(t), float(logp[r, t])) for t in top[r]],
                    )
                )
    mean = nll_sum / scored
    var = nll2_sum / scored - mean * mean
    result.ppl = math.exp(mean)
    result.nll_mean = mean
    result.nll_std_error = math.sqrt(var / (scored - 1)) if var > 0 and scored > 1 else 0.0
    result.n_scored = scored
    return result
