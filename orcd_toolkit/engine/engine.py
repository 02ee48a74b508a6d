"""``LLMEngine``: continuous batching over a model runner, one ``step()`` at a time.

``step()`` = ``step_core()`` (schedule -> forward -> sample -> stop rules; pure: no logging,
no I/O, only the outputs allocated) followed by the output processor (detokenization and
stop strings, outside the model step). The server calls ``submit`` / ``abort`` / ``step``
from its one engine thread (DESIGN.md §4).
"""

from __future__ import annotations

import operator
import secrets
import time
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orcd_toolkit.engine.allocators import ContiguousAllocator, PagedAllocator
from orcd_toolkit.engine.config import EngineConfig
from orcd_toolkit.engine.errors import DuplicateRequest, QueueFull, RequestTooLarge
from orcd_toolkit.engine.interfaces import (
    KVCacheAllocator,
    MetricsHook,
    ModelRunner,
    RequestStats,
    StepStats,
    TokenSampler,
)
from orcd_toolkit.engine.metrics import NoopMetrics
from orcd_toolkit.engine.output_processor import OutputProcessor
from orcd_toolkit.engine.outputs import (
    FINISH_ABORT,
    FINISH_ERROR,
    RequestHandle,
    RequestOutput,
    TokenLogprobs,
)
from orcd_toolkit.engine.params import GenerationRequest, SamplingParams
from orcd_toolkit.engine.rng import uniform_draws
from orcd_toolkit.engine.sampling import sample_row
from orcd_toolkit.engine.scheduler import Scheduler
from orcd_toolkit.engine.sequence import FINISHED, Sequence
from orcd_toolkit.errors import InvalidRequest, OrcdError


@dataclass(slots=True)
class CoreStepOutput:
    """The model step's result, columnar (one row per sampled sequence).

    ``seqs[i]`` got ``token_ids[i]``; ``finished[i]`` tells whether a stop rule ended it
    (``seqs[i].finish_reason``). ``aborted`` are the sequences ended by ``abort`` before
    this step ran; ``failed`` those ended because the forward pass raised an ``OrcdError``
    (``seq.error``). Valid until the next step.
    """

    seqs: list[Sequence]
    token_ids: np.ndarray
    finished: np.ndarray
    logprobs: list[TokenLogprobs | None] | None
    aborted: list[Sequence]
    failed: list[Sequence] = field(default_factory=list)


def _gather(items: list[Sequence | None], idx: np.ndarray) -> list[Sequence]:
    """``[items[i] for i in idx]``, through C (itemgetter) since idx may be 256 long."""
    n = idx.shape[0]
    if n == 0:
        return []
    if n == 1:
        return [items[int(idx[0])]]
    return list(operator.itemgetter(*idx.tolist())(items))


def make_allocator(config: EngineConfig) -> KVCacheAllocator:
    if config.allocator == "paged":
        return PagedAllocator(config.num_blocks, config.block_size, config.enable_prefix_caching)
    return ContiguousAllocator(config.num_blocks, config.block_size)


class LLMEngine:
    """The ``InferenceEngine``: submit / abort / step, plus the one-shot ``run``.

    ``model.forward(batch, kv_cache)`` is the only call into the model; the KV cache is
    allocated by the caller (the backend) once, with ``config.num_blocks`` blocks of
    ``config.block_size`` tokens. ``tokenizer`` (optional) enables text output and stop
    strings.
    """

    def __init__(
        self,
        model: ModelRunner,
        kv_cache: Any,
        config: EngineConfig,
        tokenizer: Any = None,
        metrics: MetricsHook | None = None,
        allocator: KVCacheAllocator | None = None,
        sampler: TokenSampler | None = None,
    ) -> None:
        for attr in ("num_blocks", "block_size"):
            have = getattr(kv_cache, attr, None)
            if have is not None and have != getattr(config, attr):
                raise InvalidRequest(
                    f"EngineConfig.{attr}={getattr(config, attr)} but the KV cache has {have}"
                )
        self.model = model
        self.kv_cache = kv_cache
        # logits may live on a device: the backend's to_host brings them to NumPy
        self._to_host = getattr(getattr(model, "backend", None), "to_host", np.asarray)
        # a device sampler keeps the [N, vocab] logits where they are (docs/engine.md)
        self.sampler = sampler
        self.config = config
        self.metrics: MetricsHook = metrics if metrics is not None else NoopMetrics()
        self.allocator = allocator if allocator is not None else make_allocator(config)
        self.scheduler = Scheduler(config, self.allocator)
        self.output_processor = OutputProcessor(tokenizer)
        self.tokenizer = tokenizer
        self._requests: dict[str, Sequence] = {}
        self._handles: dict[str, RequestHandle] = {}
        self._pending_aborts: list[tuple[str, str, str | int | None]] = []
        self._next_seq_id = 0
        self._stop_ids = tuple(config.eos_token_ids)
        self._max_prompt_blocks = config.num_blocks - config.watermark_blocks

    # -- API -----------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Validate and queue; refuses up front what could never finish (RequestTooLarge)."""
        cfg = self.config
        p = request.params
        n_prompt = len(request.prompt_ids)
        total = n_prompt + p.max_tokens
        if total > cfg.max_model_len:
            raise RequestTooLarge(
                f"prompt ({n_prompt} tokens) + max_tokens ({p.max_tokens}) = {total} exceeds "
                f"the context length {cfg.max_model_len}"
            )
        need = self.allocator.num_blocks_needed(total, total)
        if need > self._max_prompt_blocks:
            raise RequestTooLarge(
                f"prompt + max_tokens = {total} tokens need {need} KV blocks of "
                f"{cfg.block_size}; the whole KV budget admits {self._max_prompt_blocks}"
            )
        if max(request.prompt_ids) >= cfg.vocab_size:
            raise InvalidRequest(f"prompt_ids: token id >= vocabulary size {cfg.vocab_size}")
        for name, ids in (("stop_token_ids", p.stop_token_ids), ("logit_bias", p.logit_bias or ())):
            if any(t >= cfg.vocab_size for t in ids):
                raise InvalidRequest(f"{name}: token id >= vocabulary size {cfg.vocab_size}")
        if p.stop and self.tokenizer is None:
            raise InvalidRequest("stop: stop strings need an engine with a tokenizer")
        rid = request.request_id
        if rid is None:
            rid = f"req-{self._next_seq_id}"
        if rid in self._requests:
            raise DuplicateRequest(f"request_id {rid!r} is already running")
        if self.scheduler.num_waiting >= cfg.max_waiting:
            raise QueueFull(
                f"the wait queue is full ({cfg.max_waiting} requests); retry later"
            )
        seed = p.seed if p.seed is not None else secrets.randbits(64)
        prio = request.priority if cfg.policy == "priority" else 0
        seq_id = self._next_seq_id
        self._next_seq_id += 1
        seq = Sequence(
            rid,
            seq_id,
            list(request.prompt_ids),
            p,
            seed,
            request.priority,
            request.arrival_time,
            (prio, seq_id),
            self._stop_ids + tuple(p.stop_token_ids),
        )
        self._requests[rid] = seq
        handle = RequestHandle(rid, list(request.prompt_ids), seed)
        self._handles[rid] = handle
        self.output_processor.add(seq)
        self.scheduler.add(seq)
        self.metrics.on_request_queued(rid, n_prompt)
        return handle

    def abort(self, request_id: str) -> None:
        """Cancel at the next step boundary; unknown or finished ids are ignored."""
        self._pending_aborts.append((request_id, FINISH_ABORT, None))

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return self.scheduler.num_waiting

    def step(self) -> list[RequestOutput]:
        """One scheduling step; then detokenization and stop strings (outside the model step)."""
        core = self.step_core()
        outputs = self.output_processor.process(core)
        for out in outputs:
            handle = self._handles.get(out.request_id)
            if handle is None:
                continue
            handle.token_ids.extend(out.new_token_ids)
            handle.text += out.new_text
            if out.logprobs:
                handle.logprobs.extend(out.logprobs)
            if out.finished:
                handle.finished = True
                handle.finish_reason = out.finish_reason
                handle.stop_reason = out.stop_reason
                del self._handles[out.request_id]
                seq = self._requests.get(out.request_id)
                if seq is not None and seq.status != FINISHED:
                    # a stop string ended it: free its blocks at the next step boundary
                    self._pending_aborts.append((out.request_id, out.finish_reason or "stop",
                                                 out.stop_reason))
        return outputs

    def run(self, prompt_ids: SequenceABC[int], max_tokens: int) -> list[int]:
        """Greedy generation of one prompt to completion (the seed's one-shot API)."""
        handle = self.submit(
            GenerationRequest(list(prompt_ids), SamplingParams(max_tokens=max_tokens, temperature=0.0))
        )
        while not handle.finished:
            self.step()
        return list(handle.token_ids)

    def generate(self, requests: SequenceABC[GenerationRequest]) -> list[RequestHandle]:
        """Submit all, step until all finish (tests, notebooks, benchmarks)."""
        handles = [self.submit(r) for r in requests]
        while any(not h.finished for h in handles):
            self.step()
        return handles

    # -- the model step ------------------------------------------------------------------
    def step_core(self) -> CoreStepOutput:
        """Schedule, run the model, sample, apply stop rules; report to the metrics hook."""
        t0 = time.monotonic()
        sch = self.scheduler
        aborted = self._apply_aborts(t0) if self._pending_aborts else []
        sb, num_preempted = sch.schedule(t0)
        if sb is None:
            self._report_step(t0, 0, 0, num_preempted)
            return CoreStepOutput([], np.zeros(0, dtype=np.int32), np.zeros(0, dtype=bool), None,
                                  aborted)
        try:
            raw_logits = self.model.forward(sb.batch, self.kv_cache)
        except OrcdError as exc:
            # a device error (e.g. VramOom) fails this batch's requests, frees their blocks
            # and leaves the engine serving the others; anything else is a bug and propagates
            failed = _gather(sch.slot_seq, sb.slots)
            now = time.monotonic()
            for seq in failed:
                sch.finish(seq, FINISH_ERROR)
                seq.error = f"{exc.code}: {exc}"
                self._retire(seq, now)
            self._report_step(t0, 0, 0, num_preempted)
            return CoreStepOutput([], np.zeros(0, dtype=np.int32), np.zeros(0, dtype=bool), None,
                                  aborted, failed)
        sch.commit_computed(sb)
        ss = sb.sample_slots
        seqs = _gather(sch.slot_seq, ss)
        logprobs = None
        if self.sampler is not None and ss.size and sch.can_sample_on_device(ss):
            token_ids = np.asarray(
                self.sampler.sample(raw_logits, sch.sampling_batch(ss)), dtype=np.int32
            )
        else:
            logits = self._to_host(raw_logits)
            if ss.size and sch.plain_greedy[ss].all():
                token_ids = np.argmax(logits, axis=1).astype(np.int32)
            else:
                token_ids, logprobs = self._sample_general(logits, ss, seqs)
        first = (sch.num_tokens[ss] == sch.num_prompt[ss]).nonzero()[0]
        finished = sch.append_tokens(ss, token_ids)
        now = time.monotonic()
        for i in first.tolist():
            seq = seqs[i]
            seq.first_token_time = now
            self.metrics.on_first_token(seq.request_id, now - seq.arrival_time)
        for i in finished.nonzero()[0].tolist():
            self._retire(seqs[i], now)
        self._report_step(t0, sb.num_prefill_tokens, sb.num_decode_tokens, num_preempted)
        return CoreStepOutput(seqs, token_ids, finished, logprobs, aborted)

    def _sample_general(
        self, logits: np.ndarray, ss: np.ndarray, seqs: list[Sequence]
    ) -> tuple[np.ndarray, list[TokenLogprobs | None] | None]:
        sch = self.scheduler
        n = ss.shape[0]
        out_idx = sch.num_tokens[ss] - sch.num_prompt[ss]
        u = uniform_draws(sch.seeds[ss], out_idx)
        toks = np.empty(n, dtype=np.int32)
        lps: list[TokenLogprobs | None] = [None] * n
        any_lp = False
        logits = np.asarray(logits)
        for i in range(n):
            slot = int(ss[i])
            seq = seqs[i]
            if sch.plain_greedy[slot]:
                toks[i] = int(np.argmax(logits[i]))
                continue
            tok, lp = sample_row(
                logits[i],
                seq.params,
                float(u[i]),
                sch.prompt_ids(slot),
                sch.output_ids(slot),
                seq.stop_ids,
            )
            toks[i] = tok
            if lp is not None:
                lps[i] = lp
                any_lp = True
        return toks, (lps if any_lp else None)

    def _apply_aborts(self, now: float) -> list[Sequence]:
        aborted: list[Sequence] = []
        pending, self._pending_aborts = self._pending_aborts, []
        for rid, reason, stop_reason in pending:
            seq = self._requests.get(rid)
            if seq is None or seq.status == FINISHED:
                continue
            self.scheduler.finish(seq, reason, stop_reason)
            self._retire(seq, now)
            if reason == FINISH_ABORT:
                aborted.append(seq)
        return aborted

    def _retire(self, seq: Sequence, now: float) -> None:
        self._requests.pop(seq.request_id, None)
        admitted = seq.admitted_time if seq.admitted_time is not None else now
        ttft = None if seq.first_token_time is None else seq.first_token_time - seq.arrival_time
        self.metrics.on_request_finished(
            RequestStats(
                request_id=seq.request_id,
                outcome=seq.finish_reason or FINISH_ABORT,
                queue_time_s=admitted - seq.arrival_time,
                ttft_s=ttft,
                e2e_s=now - seq.arrival_time,
                num_prompt_tokens=seq.num_prompt_tokens,
                num_output_tokens=len(seq.token_ids) - seq.num_prompt_tokens,
                num_cached_tokens=seq.num_cached_tokens,
                num_preemptions=seq.num_preemptions,
            )
        )

    def _report_step(self, t0: float, n_prefill: int, n_decode: int, n_preempted: int) -> None:
        alloc = self.allocator
        self.metrics.on_step(
            StepStats(
                step_time_s=time.monotonic() - t0,
                num_running=len(self.scheduler.running),
                num_waiting=len(self.scheduler.waiting),
                num_prefill_tokens=n_prefill,
                num_decode_tokens=n_decode,
                num_preempted=n_preempted,
                num_kv_blocks_used=alloc.num_blocks - alloc.num_free_blocks,
                num_kv_blocks_total=alloc.num_blocks,
                prefix_queries=alloc.prefix_queries,
                prefix_hits=alloc.prefix_hits,
            )
        )


def build_engine(
    model: Any,
    tokenizer: Any = None,
    *,
    kv_tokens: int = 16384,
    block_size: int = 16,
    max_model_len: int | None = None,
    metrics: MetricsHook | None = None,
    **config: Any,
) -> LLMEngine:
    """An engine for a loaded ``CausalLM``: KV pool of ``kv_tokens`` tokens, allocated once.

    The vocabulary, the context length (``max_model_len``, default the model's, capped by
    the pool) and the end-of-turn tokens (the tokenizer's ``stop_ids``, else the GGUF
    ``tokenizer.ggml.eos_token_id``) come from the model; ``config`` overrides the other
    ``EngineConfig`` fields.
    """
    num_blocks = -(-kv_tokens // block_size)
    ctx = max_model_len or int(getattr(model, "n_ctx", 0) or 2048)
    ctx = min(ctx, num_blocks * block_size)
    if "eos_token_ids" not in config:
        if tokenizer is not None:
            eos = tuple(sorted(t for t in tokenizer.stop_ids if t < model.vocab_size))
        else:
            md = getattr(getattr(model, "gguf_file", None), "metadata", {}) or {}
            eos_id = md.get("tokenizer.ggml.eos_token_id")
            eos = (int(eos_id),) if eos_id is not None else ()
        config["eos_token_ids"] = eos
    cfg = EngineConfig(
        num_blocks=num_blocks,
        vocab_size=model.vocab_size,
        block_size=block_size,
        max_model_len=ctx,
        **config,
    )
    kv_cache = model.new_kv_cache(cfg.num_blocks, cfg.block_size)
    return LLMEngine(model, kv_cache, cfg, tokenizer=tokenizer, metrics=metrics)
