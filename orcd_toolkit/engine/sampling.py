"""Token sampling on host logits: greedy, temperature, top-k, top-p, min-p, penalties, bias.

The procedure is specified exactly (docs/engine.md) because the GPU sampler must make the
same choice for the same logits and uniform draw:

1. ``logit_bias`` added; repetition penalty on every token of prompt and output (positive
   logits divided, negative multiplied, as HF/vLLM/llama.cpp); presence and frequency
   penalties on the output tokens (OpenAI: ``x -= frequency * count + presence * (count > 0)``);
   while fewer than ``min_tokens`` were produced, the stop tokens are set to -inf.
2. ``temperature == 0``: argmax (lowest id on ties). Done.
3. ``p = exp(x / T - max(x / T))`` in float32 (unnormalised, max 1); T, top_p and min_p
   are float32 values. Order the vocabulary by (p desc, id asc).
   top-k keeps the first k; top-p keeps the shortest prefix whose mass reaches
   ``top_p * sum(p of what top-k kept)``; min-p keeps ``p >= min_p`` (relative to the max).
4. Draw: the kept tokens in ascending id order, cumulative sum in float64 (in blocks of
   1,024, ``inverse_cdf``), the first whose cumulative sum exceeds ``u * total`` with ``u``
   the request's counter-based uniform.

Only the candidates above a probability threshold are sorted (the threshold is lowered until
they provably contain the top-k / top-p set), so a 152k vocabulary costs a few vector passes,
not a full sort. Everything is per row and depends only on that row: batch invariance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from orcd_toolkit.engine.interfaces import SamplingBatch
from orcd_toolkit.engine.params import SamplingParams

# Candidate thresholds, relative to the max probability (1.0 after the shift), tried in
# order until the candidate set provably contains what top-k / top-p keep; 0 is everything.
_THRESHOLDS = (2.0**-6, 2.0**-12, 2.0**-20, 0.0)


def apply_logit_bias(x: np.ndarray, bias: Mapping[int, float]) -> None:
    """Add ``bias`` in place; ids outside the vocabulary are ignored (validated on submit)."""
    vocab = x.shape[0]
    for tok, b in bias.items():
        if tok < vocab:
            x[tok] += b


def apply_penalties(
    x: np.ndarray,
    prompt_ids: np.ndarray,
    output_ids: np.ndarray,
    repetition: float,
    presence: float,
    frequency: float,
) -> None:
    """Repetition (prompt + output), presence and frequency (output) penalties, in place."""
    vocab = x.shape[0]
    if repetition != 1.0:
        seen = np.unique(np.concatenate([prompt_ids, output_ids]))
        seen = seen[seen < vocab]
        vals = x[seen]
        x[seen] = np.where(vals > 0, vals / repetition, vals * repetition)
    if (presence != 0.0 or frequency != 0.0) and output_ids.size:
        toks, counts = np.unique(output_ids, return_counts=True)
        ok = toks < vocab
        toks, counts = toks[ok], counts[ok]
        x[toks] -= frequency * counts.astype(np.float32) + presence


def greedy(x: np.ndarray) -> int:
    """Argmax; NumPy returns the first (lowest id) maximum."""
    return int(np.argmax(x))


def _sorted_prefix(p: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``cand`` ordered by (p desc, id asc); ``cand`` is ascending so a stable sort keeps ids."""
    order = np.argsort(-p[cand], kind="stable")
    return cand[order]


def sample_token(
    x: np.ndarray,
    temperature: float,
    top_k: int,
    top_p: float,
    min_p: float,
    u: float,
    *,
    inplace: bool = False,
) -> int:
    """One draw from logits ``x`` (float32 [V]) with the filters above and uniform ``u``.

    ``inplace=True`` lets the function overwrite ``x`` (a private copy): a 152k vocabulary
    then costs one temporary (the float64 cumulative sum) instead of four, which matters
    because each fresh megabyte-sized NumPy temporary is page-faulted in.
    """
    if temperature == 0.0:
        return greedy(x)
    # parameters are float32, as the device sampler holds them (SamplingBatch)
    top_p = float(np.float32(top_p))
    p = x if inplace and x.dtype == np.float32 else np.array(x, dtype=np.float32)
    np.divide(p, np.float32(temperature), out=p)  # x / T in float32, then - max(x / T)
    p -= p.max()
    np.exp(p, out=p)
    vocab = p.shape[0]
    use_k = 0 < top_k < vocab
    use_p = top_p < 1.0
    if not use_k and not use_p:
        if min_p > 0.0:
            kept = (p >= np.float32(min_p)).nonzero()[0]
            return _draw(p, kept, u)
        return inverse_cdf(p, u)
    total = float(p.sum(dtype=np.float64)) if use_p and not use_k else 0.0
    cand = None
    for tau in _THRESHOLDS[:-1]:
        c = (p >= tau).nonzero()[0]
        if use_k and c.size < top_k:
            continue
        if use_p and not use_k and float(p[c].sum(dtype=np.float64)) < top_p * total:
            continue
        cand = c
        break
    if cand is None:
        cand = np.arange(vocab)
    ordered = _sorted_prefix(p, cand)
    if use_k:
        ordered = ordered[:top_k]
    if use_p:
        ps = p[ordered].astype(np.float64)
        cum = np.cumsum(ps)
        # the shortest prefix whose mass reaches the target (always the most likely token)
        target = top_p * (cum[-1] if use_k else total)
        n_keep = int(np.searchsorted(cum, target, side="left")) + 1
        ordered = ordered[: min(n_keep, ordered.size)]
    if min_p > 0.0:
        ordered = ordered[p[ordered] >= np.float32(min_p)]
    kept = np.sort(ordered)
    return _draw(p, kept, u)


def _draw(p: np.ndarray, kept: np.ndarray, u: float) -> int:
    """Inverse CDF over ``kept`` (ascending ids) with uniform ``u`` in [0, 1)."""
    return int(kept[inverse_cdf(p[kept], u)])


CDF_BLOCK = 1024


def inverse_cdf(w: np.ndarray, u: float) -> int:
    """The first index whose running float64 sum of ``w`` (>= 0) exceeds ``u * sum(w)``.

    Long rows are summed in blocks of ``CDF_BLOCK``: block sums (float64), their running
    sum to find the block, then the running sum inside it. Same answer as one sequential
    cumulative sum except when ``u * sum`` lies within float64 rounding of a boundary, and
    ~10x faster on a 152k row (one float64 pass over 1,024 values instead of 152k). A
    GPU sampler sums in blocks the same way.
    """
    n = w.shape[0]
    if n <= 4 * CDF_BLOCK:
        c = np.cumsum(w, dtype=np.float64)
        return min(int(np.searchsorted(c, u * c[-1], side="right")), n - 1)
    nb = n // CDF_BLOCK
    sums = w[: nb * CDF_BLOCK].reshape(nb, CDF_BLOCK).sum(axis=1, dtype=np.float64)
    if nb * CDF_BLOCK < n:
        sums = np.append(sums, w[nb * CDF_BLOCK :].sum(dtype=np.float64))
    cs = np.cumsum(sums)
    target = u * cs[-1]
    k = min(int(np.searchsorted(cs, target, side="right")), cs.shape[0] - 1)
    c = np.cumsum(w[k * CDF_BLOCK : (k + 1) * CDF_BLOCK], dtype=np.float64)
    if k:
        c += cs[k - 1]
    j = int(np.searchsorted(c, target, side="right"))
    if j >= c.shape[0]:
        # rounding put the target past this block's sequential sum: resolve it exactly
        full = np.cumsum(w, dtype=np.float64)
        return min(int(np.searchsorted(full, target, side="right")), n - 1)
    return k * CDF_BLOCK + j


def log_softmax(x: np.ndarray) -> np.ndarray:
    """float64 log-probabilities of one row of logits."""
    z = x.astype(np.float64)
    m = z.max()
    return z - (m + np.log(np.exp(z - m).sum()))


def top_logprobs(
    x: np.ndarray, token: int, n: int
) -> tuple[float, list[tuple[int, float]]]:
    """The sampled token's logprob and the top ``n`` (id, logprob) of the raw logits ``x``.

    Logprobs describe the model's distribution (before bias, penalties and temperature), as
    the OpenAI API reports them; top-n is ordered by logprob desc, id asc. Only the
    normaliser needs the whole row (in float64); the top n are found on the logits.
    """
    z = x.astype(np.float64)
    m = z.max()
    z -= m
    log_norm = float(np.log(np.exp(z, out=z).sum()))
    xf = np.asarray(x)
    base = float(m) + log_norm
    lp_tok = float(np.float64(xf[token]) - base)
    if n <= 0:
        return lp_tok, []
    n = min(n, xf.shape[0])
    part = np.argpartition(xf, xf.shape[0] - n)[-n:]
    # ties at the boundary: take every logit equal to the n-th largest, lowest ids first
    kth = xf[part].min()
    part = (xf >= kth).nonzero()[0] if (xf == kth).sum() > (xf[part] == kth).sum() else part
    part = np.sort(part)
    part = part[np.argsort(-xf[part], kind="stable")][:n]
    return lp_tok, [(int(t), float(np.float64(xf[t]) - base)) for t in part]


def sample_row(
    logits: np.ndarray,
    params: SamplingParams,
    u: float,
    prompt_ids: np.ndarray,
    output_ids: np.ndarray,
    stop_ids: Sequence[int],
) -> tuple[int, tuple[float, list[tuple[int, float]]] | None]:
    """The full per-request procedure for one row; ``stop_ids`` are masked while fewer than
    ``min_tokens`` tokens were produced."""
    x = np.array(logits, dtype=np.float32, copy=True)
    if params.logit_bias:
        apply_logit_bias(x, params.logit_bias)
    if params.has_penalties:
        apply_penalties(
            x,
            prompt_ids,
            output_ids,
            params.repetition_penalty,
            params.presence_penalty,
            params.frequency_penalty,
        )
    if output_ids.size < params.min_tokens and stop_ids:
        ids = [t for t in stop_ids if t < x.shape[0]]
        x[ids] = -np.inf
    tok = sample_token(
        x, params.temperature, params.top_k, params.top_p, params.min_p, u, inplace=True
    )
    lps = None
    if params.logprobs is not None:
        lps = top_logprobs(np.asarray(logits), tok, params.logprobs)
    return tok, lps


class HostTokenSampler:
    """``TokenSampler`` on host logits: the reference a device sampler is tested against,
    and the engine's seam exercised without a GPU."""

    def sample(self, logits: np.ndarray, batch: SamplingBatch) -> np.ndarray:
        from orcd_toolkit.engine.rng import uniform_draws

        x = np.asarray(logits, dtype=np.float32)
        n = x.shape[0]
        u = uniform_draws(batch.seeds, batch.draw_index)
        out = np.empty(n, dtype=np.int32)
        for i in range(n):
            row = np.array(x[i], copy=True)
            if batch.history is not None:
                n_prompt = int(batch.num_prompt[i])
                hist = batch.history[i, : int(batch.history_len[i])]
                apply_penalties(row, hist[:n_prompt], hist[n_prompt:],
                                float(batch.repetition_penalty[i]),
                                float(batch.presence_penalty[i]),
                                float(batch.frequency_penalty[i]))
            out[i] = sample_token(row, float(batch.temperature[i]), int(batch.top_k[i]),
                                  float(batch.top_p[i]), float(batch.min_p[i]), float(u[i]),
                                  inplace=True)
        return out
