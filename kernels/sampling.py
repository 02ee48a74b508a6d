"""Token sampling on the device (Numba CUDA), choosing exactly what the engine's NumPy
sampler chooses (``orcd_toolkit.engine.sampling``, docs/engine.md):

1. penalties on the raw logits: repetition on every prompt/output token (positive logits
   divided, negative multiplied), then ``x -= frequency * count + presence`` for output
   tokens; 2. ``temperature == 0``: argmax (lowest id on ties); 3. ``p = exp(x/T - max)``,
   top-k, then top-p relative to what top-k kept, then min-p, all in (p desc, id asc) order;
   4. inverse CDF over the kept tokens in ascending id order with the request's Philox
   uniform ``u`` (CONTRACTS.md section 4, bit for bit ``engine.rng.uniform_draws``).

No sort: the top-k and top-p cut-offs are found by a 4-way search on the float bit patterns
of ``p`` (exact, 15 passes each over the 2^30 patterns of [0, 1]; three thresholds counted
per pass), ties at the cut-off kept
in id order. One block per row; block reductions in shared memory (``_reduce``, inlined; runs
on the CUDA simulator). Passes that only count, sum or take a maximum read the row strided
by thread (coalesced); the three that need id order (tie ranks, kept mass per segment, the
inverse-CDF walk) give each thread a contiguous segment. (Bisection, 30 passes each, over
segments before: 2.7 ms per call on a 151936 vocabulary, H200; now 1.3 ms.) The sampled
token's log-probability is that of the raw logits (before penalties and temperature), as the
engine reports it.

Buffers from the caller: ``probs`` f32 [N, V] scratch; ``counts`` int32 [N, V] that must be
all zero before the call and is left all zero after it (the count kernel adds, the clear
kernel removes only the touched entries).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import cuda

from orcd_toolkit.kernels._launch import cdiv, numba_stream
from orcd_toolkit.kernels._reduce import block_max, block_sum
from orcd_toolkit.kernels.errors import KernelError

MAX_THREADS = 1024
_PROMPT_MARK = 1 << 20  # counts: output occurrences in the low 20 bits, prompt ones above
_ONE_BITS = 0x3F800000  # float32 1.0


@cuda.jit
def _count_kernel(hist, hist_len, n_prompt, counts):  # pragma: no cover - device code
    n = cuda.blockIdx.y
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if i < hist_len[n]:
        tok = hist[n, i]
        if 0 <= tok < counts.shape[1]:
            cuda.atomic.add(counts, (n, tok), _PROMPT_MARK if i < n_prompt[n] else 1)


@cuda.jit
def _clear_kernel(hist, hist_len, counts):  # pragma: no cover - device code
    n = cuda.blockIdx.y
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if i < hist_len[n]:
        tok = hist[n, i]
        if 0 <= tok < counts.shape[1]:
            counts[n, tok] = 0


@cuda.jit(device=True, inline="always")
def _f32_from_bits(bits):  # pragma: no cover - device code
    """The float32 whose bit pattern is ``bits`` (0 <= bits <= 0x7F800000, sign clear), built
    with ldexp so it runs on the simulator too (normal: (mantissa | 1 << 23) * 2^(e - 150);
    subnormal: bits * 2^-149)."""
    if (bits >> 23) > 0:
        return numba.float32(math.ldexp(numba.float64((bits & 0x7FFFFF) | 0x800000),
                                        (bits >> 23) - 150))
    return numba.float32(math.ldexp(numba.float64(bits), -149))


_UNROLL = 4


@cuda.jit(device=True, inline="always")
def _load4(probs, n, v, nt, V):  # pragma: no cover - device code
    """probs[n, v + i nt] for i < 4, -1 (below every threshold) past the row's end."""
    q0 = probs[n, v]
    q1 = probs[n, v + nt] if v + nt < V else numba.float32(-1.0)
    q2 = probs[n, v + 2 * nt] if v + 2 * nt < V else numba.float32(-1.0)
    q3 = probs[n, v + 3 * nt] if v + 3 * nt < V else numba.float32(-1.0)
    return q0, q1, q2, q3


@cuda.jit(device=True, inline="always")
def _mass_at_least(q0, q1, q2, q3, t):  # pragma: no cover - device code
    """The float64 sum of those of q0..q3 that are >= t, added in index order."""
    a = 0.0
    if q0 >= t:
        a += numba.float64(q0)
    if q1 >= t:
        a += numba.float64(q1)
    if q2 >= t:
        a += numba.float64(q2)
    if q3 >= t:
        a += numba.float64(q3)
    return a


@cuda.jit(device=True, inline="always")
def _narrow(lo_b, hi_b, ok1, ok2, ok3):  # pragma: no cover - device code
    """One step of a 4-way search for the largest bit pattern t in [lo_b, hi_b] whose
    predicate holds (it holds at lo_b and fails from some point on): the predicate was
    evaluated at the three probes of ``_probes``; returns the new (lo_b, hi_b). A 4-way step
    costs one pass over the vocabulary, like a bisection step, and halves the passes."""
    m1, m2, m3 = _probes(lo_b, hi_b)
    if ok3:
        return m3, hi_b
    if ok2:
        return m2, m3 - 1
    if ok1:
        return m1, m2 - 1
    return lo_b, m1 - 1


@cuda.jit(device=True, inline="always")
def _probes(lo_b, hi_b):  # pragma: no cover - device code
    """Three probes lo_b < m1 <= m2 <= m3 <= hi_b splitting [lo_b, hi_b] in four."""
    d = hi_b - lo_b
    return lo_b + (d + 3) // 4, lo_b + (2 * d + 3) // 4, lo_b + (3 * d + 3) // 4


@cuda.jit(device=True, inline="always")
def _is_kept(p, tau, rank, ties_allowed, mp):  # pragma: no cover - device code
    """Whether ``p`` survives the cut-offs: above ``tau``, or at ``tau`` with its tie rank
    (in id order) below ``ties_allowed``; and at least min-p ``mp``. Returns the flag and
    the tie rank of the next token."""
    keep = p > tau
    if p == tau:
        keep = rank < ties_allowed
        rank += 1
    return keep and p >= mp, rank


# 64 registers a thread lets a block of 1024 threads launch (unbounded, the kernel needs
# more and a 1024-thread launch fails with CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES on an H200).
# The CUDA simulator's jit takes no such option.
_SAMPLE_JIT = {} if numba.config.ENABLE_CUDASIM else {"max_registers": 64}


@cuda.jit(**_SAMPLE_JIT)
def _sample_kernel(logits, counts, probs, temperature, top_k, top_p, min_p, rep, pres, freq,
                   seeds, draw_index, out_tokens, out_logprobs):  # pragma: no cover
    n = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    V = logits.shape[1]
    shf = cuda.shared.array(MAX_THREADS, numba.float64)
    shi = cuda.shared.array(MAX_THREADS, numba.int64)
    shr = cuda.shared.array(MAX_THREADS, numba.int64)
    # the 4-way searches reduce three values a pass: shf2 / shf3 carry the second and third
    # (counts as float64, exact below 2^53); 5 x 8 KiB + 24 bytes stays under the 48 KiB of
    # static shared memory (a sixth array made it 49176 bytes, over the limit)
    shf2 = cuda.shared.array(MAX_THREADS, numba.float64)
    shf3 = cuda.shared.array(MAX_THREADS, numba.float64)
    res = cuda.shared.array(2, numba.int64)
    tot = cuda.shared.array(1, numba.float64)
    seg = (V + nt - 1) // nt
    lo_i = tid * seg
    hi_i = min(V, lo_i + seg)
    r_rep = rep[n]
    r_pres = pres[n]
    r_freq = freq[n]
    # -- raw log-sum-exp (for the logprob) and penalised logits into probs
    m = -math.inf
    for v in range(tid, V, nt):
        m = max(m, numba.float64(logits[n, v]))
    shf[tid] = m
    raw_max = block_max(shf, tid, nt)
    acc = 0.0
    for v in range(tid, V, nt):
        acc += math.exp(numba.float64(logits[n, v]) - raw_max)
        x = logits[n, v]
        c = counts[n, v]
        if c != 0:
            if r_rep != 1.0:
                x = x / r_rep if x > 0 else x * r_rep
            oc = c & (_PROMPT_MARK - 1)
            if oc > 0:
                x = x - (r_freq * numba.float32(oc) + r_pres)
        probs[n, v] = x
    shf[tid] = acc
    lse = raw_max + math.log(block_sum(shf, tid, nt))
    temp = temperature[n]
    # -- max of the penalised logits (argmax for greedy: lowest id on ties)
    best = -math.inf
    bi = V
    for v in range(tid, V, nt):  # ascending ids per thread: the first maximum is the lowest id
        x = numba.float64(probs[n, v])
        if x > best:
            best = x
            bi = v
    shf[tid] = best
    shi[tid] = bi
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if tid < s:
            a = shf[tid]
            b = shf[tid + s]
            if b > a or (b == a and shi[tid + s] < shi[tid]):
                shf[tid] = b
                shi[tid] = shi[tid + s]
        cuda.syncthreads()
        s //= 2
    arg = shi[0]
    best_x = numba.float32(shf[0])
    cuda.syncthreads()
    if temp == 0.0:
        if tid == 0:
            out_tokens[n] = arg
            out_logprobs[n] = numba.float32(logits[n, arg] - lse)
        return
    # -- p = exp(x/T - max) in float32, like the reference (max 1.0)
    tf = numba.float32(temp)
    zmax = best_x / tf  # not probs[n, arg]: its owner overwrites it in the loop below
    for v in range(tid, V, nt):
        probs[n, v] = math.exp(probs[n, v] / tf - zmax)
    cuda.syncthreads()
    k = top_k[n]
    use_k = 0 < k < V
    tp = top_p[n]
    use_p = tp < 1.0
    # cut-off tau (as float32 bits) and how many ties at tau are kept (in id order)
    tau_bits = 0
    ties_allowed = V
    kept_mass = 0.0
    if use_k:
        # largest tau with count(p >= tau) >= k
        lo_b = 0
        hi_b = _ONE_BITS
        while lo_b < hi_b:
            m1, m2, m3 = _probes(lo_b, hi_b)
            t1 = _f32_from_bits(m1)
            t2 = _f32_from_bits(m2)
            t3 = _f32_from_bits(m3)
            c1 = 0
            c2 = 0
            c3 = 0
            for v in range(tid, V, _UNROLL * nt):
                # four independent loads issued before any compare (measured: no faster
                # than one at a time on an H200, ~35 us a pass either way; kept as the
                # shape a multi-block version would use)
                q0, q1, q2, q3 = _load4(probs, n, v, nt, V)
                c1 += (q0 >= t1) + (q1 >= t1) + (q2 >= t1) + (q3 >= t1)
                c2 += (q0 >= t2) + (q1 >= t2) + (q2 >= t2) + (q3 >= t2)
                c3 += (q0 >= t3) + (q1 >= t3) + (q2 >= t3) + (q3 >= t3)
            shi[tid] = c1
            shf2[tid] = numba.float64(c2)
            shf3[tid] = numba.float64(c3)
            ok1 = block_sum(shi, tid, nt) >= k
            ok2 = block_sum(shf2, tid, nt) >= k
            ok3 = block_sum(shf3, tid, nt) >= k
            lo_b, hi_b = _narrow(lo_b, hi_b, ok1, ok2, ok3)
        tau_bits = lo_b
    tau = _f32_from_bits(tau_bits)
    # count and mass strictly above tau, and ties at tau
    cnt = 0
    ties = 0
    mass = 0.0
    for v in range(tid, V, nt):
        p = probs[n, v]
        if p > tau:
            cnt += 1
            mass += numba.float64(p)
        elif p == tau:
            ties += 1
    shi[tid] = cnt
    shf[tid] = mass
    cnt_gt = block_sum(shi, tid, nt)
    mass_gt = block_sum(shf, tid, nt)
    shi[tid] = ties
    n_ties = block_sum(shi, tid, nt)
    if use_k:
        ties_allowed = k - cnt_gt
        kept_mass = mass_gt + ties_allowed * numba.float64(tau)
    else:
        kept_mass = mass_gt + n_ties * numba.float64(tau)
    if use_p:
        target = numba.float64(tp) * kept_mass
        # largest tau' >= tau with sum(p >= tau') >= target (above tau all are kept by top-k)
        lo_b = tau_bits
        hi_b = _ONE_BITS
        while lo_b < hi_b:
            m1, m2, m3 = _probes(lo_b, hi_b)
            t1 = _f32_from_bits(m1)
            t2 = _f32_from_bits(m2)
            t3 = _f32_from_bits(m3)
            a1 = 0.0
            a2 = 0.0
            a3 = 0.0
            for v in range(tid, V, _UNROLL * nt):
                q0, q1, q2, q3 = _load4(probs, n, v, nt, V)
                a1 += _mass_at_least(q0, q1, q2, q3, t1)
                a2 += _mass_at_least(q0, q1, q2, q3, t2)
                a3 += _mass_at_least(q0, q1, q2, q3, t3)
            shf[tid] = a1
            shf2[tid] = a2
            shf3[tid] = a3
            ok1 = block_sum(shf, tid, nt) >= target
            ok2 = block_sum(shf2, tid, nt) >= target
            ok3 = block_sum(shf3, tid, nt) >= target
            lo_b, hi_b = _narrow(lo_b, hi_b, ok1, ok2, ok3)
        if lo_b != tau_bits:
            tau_bits = lo_b
            tau = _f32_from_bits(tau_bits)
            mass_gt = 0.0
            for v in range(tid, V, nt):
                p = probs[n, v]
                if p > tau:
                    mass_gt += numba.float64(p)
            shf[tid] = mass_gt
            mass_gt = block_sum(shf, tid, nt)
            ties_allowed = V
        # ties at tau needed to reach the target: the shortest prefix whose mass reaches it
        need = int(math.ceil((target - mass_gt) / numba.float64(tau))) if tau > 0 else V
        ties_allowed = min(ties_allowed, max(need, 1))
    mp = numba.float32(min_p[n])
    # -- tie ranks in id order: exclusive scan of per-segment tie counts (kept in shr)
    ties = 0
    for v in range(lo_i, hi_i):
        if probs[n, v] == tau:
            ties += 1
    shr[tid] = ties
    cuda.syncthreads()
    if tid == 0:
        run_i = 0
        for i in range(nt):
            c = shr[i]
            shr[i] = run_i
            run_i += c
    cuda.syncthreads()
    # -- kept mass per segment, exclusive scan, last kept token
    rank = shr[tid]
    mass = 0.0
    last = -1
    for v in range(lo_i, hi_i):
        p = probs[n, v]
        keep, rank = _is_kept(p, tau, rank, ties_allowed, mp)
        if keep:
            mass += numba.float64(p)
            last = v
    shf[tid] = mass
    shi[tid] = last
    cuda.syncthreads()
    if tid == 0:
        run = 0.0
        lastk = -1
        for i in range(nt):
            c = shf[i]
            shf[i] = run
            run += c
            lastk = max(lastk, shi[i])
        res[0] = lastk
        res[1] = -1
        # u of draw ``idx`` of this request: Philox4x32-10(counter=(idx, 0, 0, 0),
        # key=(seed lo, seed hi)) word 0 / 2**32 (engine/rng.py); uint64 holds each product
        seed = seeds[n]
        idx = draw_index[n]
        mask = numba.uint64(0xFFFFFFFF)
        c0 = numba.uint64(idx) & mask
        c1 = numba.uint64(idx) >> numba.uint64(32)
        c2 = numba.uint64(0)
        c3 = numba.uint64(0)
        k0 = numba.uint64(seed) & mask
        k1 = numba.uint64(seed) >> numba.uint64(32)
        for r in range(10):
            if r > 0:
                k0 = (k0 + numba.uint64(0x9E3779B9)) & mask
                k1 = (k1 + numba.uint64(0xBB67AE85)) & mask
            p0 = numba.uint64(0xD2511F53) * c0
            p1 = numba.uint64(0xCD9E8D57) * c2
            n0 = (p1 >> numba.uint64(32)) ^ c1 ^ k0
            n2 = (p0 >> numba.uint64(32)) ^ c3 ^ k1
            c1 = p1 & mask
            c3 = p0 & mask
            c0 = n0
            c2 = n2
        u = numba.float64(c0) * (1.0 / 4294967296.0)
        tot[0] = run * u
    cuda.syncthreads()
    target = tot[0]
    # -- the first kept token whose cumulative mass exceeds the target (inverse CDF)
    cum = shf[tid]
    nxt = shf[tid + 1] if tid + 1 < nt else math.inf
    if cum <= target < nxt:
        rank = shr[tid]
        for v in range(lo_i, hi_i):
            p = probs[n, v]
            keep, rank = _is_kept(p, tau, rank, ties_allowed, mp)
            if keep:
                cum += numba.float64(p)
                if cum > target:
                    cuda.atomic.cas(res, 1, -1, v)
                    break
    cuda.syncthreads()
    if tid == 0:
        tok = res[1] if res[1] >= 0 else res[0]
        out_tokens[n] = tok
        out_logprobs[n] = numba.float32(logits[n, tok] - lse)


def _check_rows(name: str, a: Any, n: int, dtype: Any) -> None:
    if a.dtype != np.dtype(dtype) or tuple(a.shape) != (n,):
        raise KernelError(f"{name} must be {np.dtype(dtype).name} [{n}], got {a.dtype} {list(a.shape)}")


def sample(
    out_tokens: Any,
    out_logprobs: Any,
    logits: Any,
    params: dict[str, Any],
    seeds: Any,
    draw_index: Any,
    probs: Any,
    counts: Any,
    *,
    history: Any = None,
    history_len: Any = None,
    num_prompt: Any = None,
    stream: Any = None,
    threads: int = MAX_THREADS,
) -> None:
    """Sample one token per row of ``logits`` [N, V] (float32; left unchanged).

    ``params``: device arrays per row — ``temperature`` f32, ``top_k`` i32, ``top_p`` f32,
    ``min_p`` f32, ``repetition_penalty`` f32, ``presence_penalty`` f32,
    ``frequency_penalty`` f32. ``seeds`` uint64 [N], ``draw_index`` int64 [N] (the index of
    the output token being sampled). Penalties need ``history`` int32 [N, L] (prompt then
    output ids), ``history_len`` int32 [N] and ``num_prompt`` int32 [N].
    Writes ``out_tokens`` int32 [N] and ``out_logprobs`` f32 [N] (raw-logit logprob).
    ``threads`` per row: every pass over the vocabulary is split across them.
    """
    n, vocab = logits.shape
    if logits.dtype != np.float32 or tuple(probs.shape) != (n, vocab) or probs.dtype != np.float32:
        raise KernelError("logits and probs must be float32 [N, V]")
    if tuple(counts.shape) != (n, vocab) or counts.dtype != np.int32:
        raise KernelError("counts must be int32 [N, V] (all zero between calls)")
    _check_rows("out_tokens", out_tokens, n, np.int32)
    _check_rows("out_logprobs", out_logprobs, n, np.float32)
    _check_rows("seeds", seeds, n, np.uint64)
    _check_rows("draw_index", draw_index, n, np.int64)
    names = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty",
             "frequency_penalty")
    for name in names:
        if name not in params:
            raise KernelError(f"sampling params lack {name}")
        _check_rows(name, params[name], n, np.int32 if name == "top_k" else np.float32)
    if threads & (threads - 1) or not 0 < threads <= MAX_THREADS:
        raise KernelError(f"threads must be a power of two <= {MAX_THREADS}")
    if n == 0:
        return
    ns = numba_stream(stream)
    if history is not None:
        if history.dtype != np.int32 or history.ndim != 2 or history.shape[0] != n:
            raise KernelError(f"history must be int32 [{n}, L]")
        grid = (max(1, cdiv(history.shape[1], 128)), n)
        _count_kernel[grid, 128, ns](history, history_len, num_prompt, counts)
    _sample_kernel[n, threads, ns](
        logits, counts, probs, *(params[k] for k in names), seeds, draw_index, out_tokens,
        out_logprobs)
    if history is not None:
        _clear_kernel[grid, 128, ns](history, history_len, counts)


_F = numba.float32[:]
_I = numba.int32[:]
PTX_SIGNATURES = [
    (_count_kernel, (numba.int32[:, :], _I, _I, numba.int32[:, :])),
    (_clear_kernel, (numba.int32[:, :], _I, numba.int32[:, :])),
    (_sample_kernel,
     (numba.float32[:, :], numba.int32[:, :], numba.float32[:, :], _F, _I, _F, _F, _F, _F, _F,
      numba.uint64[:], numba.int64[:], _I, _F)),
]
