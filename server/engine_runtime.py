"""The product ``ServingRuntime``: a GGUF model, its tokenizer and ``LLMEngine``.

Built on the engine thread by :func:`runtime_factory`. Load progress is reported in the
five steps the protocol promises — 0 % (start), 25 % (file validated, tokenizer built),
50 % (weights being placed on the backend), 75 % (weights placed, KV cache being
allocated), 100 % (engine ready) — because the NumPy backend places weights in one call;
a backend that copies in chunks reports the same milestones.

The KV pool is sized from ``--kv-cache-size-mb`` (never grown), and the context length is the
model's training context capped by what the pool holds, so a request that could never fit is
refused at submit time instead of failing half-way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orcd_toolkit.errors import InsufficientVram, ModelLoadFailed, OrcdError
from orcd_toolkit.server.protocol import ExecuteRequest
from orcd_toolkit.server.runtime import EngineStats, JobOutput, ModelInfo, ProgressFn

BLOCK_SIZE = 16


class EngineFailure(OrcdError):
    """The engine reported an error for one job (code INTERNAL)."""


class GpuBackendUnavailable(ModelLoadFailed):
    """``--device gpu`` was asked for but this build or machine cannot provide it."""


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """What ``orcd serve`` passes to the loader."""

    model: str
    device: str = "auto"  # auto | cpu | gpu
    gpu_device: int = 0
    kv_cache_size_mb: int = 512
    max_concurrent: int = 64
    max_waiting: int = 256
    max_context: int = 0  # 0: the model's training context (capped by the KV pool)
    enable_prefix_caching: bool = True


class _EngineHook:
    """The engine's ``MetricsHook``: cumulative counters the server mirrors after each step.

    Called only from the engine thread, read only from the engine thread (``stats``), so no
    lock is needed.
    """

    def __init__(self) -> None:
        self.preemptions = 0
        self.queue_times: list[float] = []
        self.last_step: Any = None
        self.on_retire: Any = None  # called when a request's blocks were just freed

    def on_request_queued(self, request_id: str, num_prompt_tokens: int) -> None:
        return None

    def on_first_token(self, request_id: str, ttft_s: float) -> None:
        return None

    def on_request_finished(self, stats: Any) -> None:
        self.queue_times.append(float(stats.queue_time_s))
        if self.on_retire is not None:
            self.on_retire()

    def on_step(self, stats: Any) -> None:
        self.preemptions += int(stats.num_preempted)
        self.last_step = stats


def _quant_kind(gf: Any) -> str:
    """The file's quantization label (general.file_type, as llama.cpp names it)."""
    import gguf as gguf_pkg

    ftype = gf.metadata.get("general.file_type")
    if isinstance(ftype, int):
        try:
            return gguf_pkg.LlamaFileType(ftype).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    # no label: the type holding most of the bytes
    by_type: dict[str, int] = {}
    for t in gf.tensors.values():
        name = getattr(t.qtype, "name", str(t.qtype))
        by_type[name] = by_type.get(name, 0) + int(t.nbytes)
    return max(by_type, key=by_type.__getitem__) if by_type else ""


def _select_backend(opts: RuntimeOptions) -> tuple[Any, str, dict[str, Any]]:
    """(backend, resident, facts). ``auto`` takes the GPU only when it is usable; ``facts``
    then says why it fell back to the CPU (``fallback``)."""
    if opts.device not in ("auto", "cpu", "gpu"):
        raise ModelLoadFailed(f"--device must be auto, cpu or gpu, got {opts.device!r}")
    if opts.device in ("auto", "gpu"):
        try:
            from orcd_toolkit.kernels.backend import GpuBackend  # type: ignore[import-not-found]
        except ModuleNotFoundError as exc:
            if opts.device == "gpu":
                raise GpuBackendUnavailable(
                    "--device gpu: the GPU backend (orcd_toolkit.kernels.backend) is not in "
                    f"this build ({exc.name} missing); use --device cpu"
                ) from None
            fallback = "no GPU backend in this build"
        else:
            from orcd_toolkit.kernels.device import gpu_status

            status = gpu_status()
            if status.usable:
                backend = GpuBackend(device=opts.gpu_device)
                facts = {k: getattr(backend, k, None) for k in ("sm", "cuda_runtime_version")}
                return backend, "gpu", facts
            if opts.device == "gpu":
                raise GpuBackendUnavailable(f"--device gpu: no usable GPU ({status.reason})")
            fallback = f"no usable GPU ({status.reason})"
    else:
        fallback = ""
    from orcd_toolkit.backends.cpu import NumpyBackend

    return NumpyBackend(), "cpu", {"sm": None, "cuda_runtime_version": None,
                                   "fallback": fallback}


def _kv_bytes_per_token(hp: Any, resident: str) -> int:
    elem = 2 if resident == "gpu" else 4  # f16 KV on the GPU, f32 on the NumPy backend
    return 2 * hp.n_layer * hp.n_head_kv * hp.head_dim * elem


class EngineRuntime:
    """``ServingRuntime`` over ``orcd_toolkit.engine.LLMEngine``."""

    def __init__(self, engine: Any, tokenizer: Any, info: ModelInfo, hook: _EngineHook) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.info = info
        self._hook = hook
        self._encode_lock = threading.Lock()
        self.listener: Any = None

    def _retired(self) -> None:
        # An abort is applied at the start of ``step``; reporting then (not after the
        # forward pass) makes freed KV visible one model step sooner.
        if self.listener is not None:
            self.listener()

    # -- any thread ---------------------------------------------------------------------
    def encode(self, request: ExecuteRequest) -> list[int]:
        tok = self.tokenizer
        if request.prompt is not None:
            return tok.encode(request.prompt, add_special=True, parse_special=False)
        messages = [{"role": r, "content": c} for r, c in request.messages or ()]
        # The jinja environment is shared; render one template at a time.
        with self._encode_lock:
            text = tok.apply_chat_template(messages, add_generation_prompt=True)
        ids = tok.encode(text, add_special=True, parse_special=True)
        bos = tok.bos_id
        if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]  # the template already wrote BOS; do not double it (llama.cpp warns)
        return ids

    # -- engine thread ------------------------------------------------------------------
    def submit(self, job_id: str, prompt_ids: list[int], request: ExecuteRequest) -> None:
        from orcd_toolkit.engine import GenerationRequest, SamplingParams

        params = SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_k=request.top_k,
            top_p=request.top_p,
            min_p=request.min_p,
            repetition_penalty=request.repetition_penalty,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            seed=request.seed,
            stop=tuple(request.stop),
            ignore_eos=request.ignore_eos,
            logprobs=request.logprobs,
        )
        self.engine.submit(GenerationRequest(list(prompt_ids), params, request_id=job_id))

    def abort(self, job_id: str) -> None:
        self.engine.abort(job_id)

    def has_work(self) -> bool:
        return bool(self.engine.has_unfinished())

    def step(self) -> list[JobOutput]:
        outs: list[JobOutput] = []
        for o in self.engine.step():
            n = len(o.new_token_ids)
            texts = [""] * n
            if n:
                texts[-1] = o.new_text
            lps = tops = None
            if o.logprobs:
                lps = [float(lp[0]) for lp in o.logprobs]
                tops = [[{"id": int(t), "logprob": float(v)} for t, v in lp[1]]
                        for lp in o.logprobs]
            error = EngineFailure(f"engine failed the job: {o.error}") if o.error else None
            outs.append(JobOutput(
                job_id=o.request_id,
                token_ids=[int(t) for t in o.new_token_ids],
                texts=texts,
                logprobs=lps,
                top_logprobs=tops if o.logprobs and any(lp[1] for lp in o.logprobs) else None,
                finished=bool(o.finished),
                finish_reason=o.finish_reason,
                error=error,
            ))
        return outs

    def stats(self) -> EngineStats:
        alloc = self.engine.allocator
        hook = self._hook
        queue_times, hook.queue_times = hook.queue_times, []
        return EngineStats(
            num_running=int(self.engine.num_running),
            num_waiting=int(self.engine.num_waiting),
            kv_blocks_used=int(alloc.num_blocks - alloc.num_free_blocks),
            kv_blocks_total=int(alloc.num_blocks),
            prefix_cache_hits=int(getattr(alloc, "prefix_hits", 0)),
            prefix_cache_queries=int(getattr(alloc, "prefix_queries", 0)),
            preemptions=hook.preemptions,
            vram_bytes_used=self.info.vram_bytes_used,
            queue_times_s=queue_times,
        )

    def close(self) -> None:
        self.engine = None


def runtime_factory(opts: RuntimeOptions):
    """A ``RuntimeFactory`` for ``WorkerServer``: loads on the engine thread, with progress."""

    def build(progress: ProgressFn) -> EngineRuntime:
        from orcd_toolkit import gguf
        from orcd_toolkit.engine import EngineConfig, LLMEngine
        from orcd_toolkit.models import load_model
        from orcd_toolkit.store import resolve_model
        from orcd_toolkit.tokenizer import load_tokenizer

        progress(0, f"resolving {opts.model}")
        path = resolve_model(opts.model)
        gf = gguf.load(path)
        tokenizer = load_tokenizer(gf)
        progress(25, f"validated {Path(path).name}; tokenizer {tokenizer.kind}")
        backend, resident, facts = _select_backend(opts)
        where = f"the {resident} backend"
        if facts.get("fallback"):
            where += f" (--device auto: {facts['fallback']})"
        progress(50, f"placing weights on {where}")
        model = load_model(gf, backend)
        hp = model.hparams
        per_token = _kv_bytes_per_token(hp, resident)
        num_blocks = (opts.kv_cache_size_mb << 20) // (per_token * BLOCK_SIZE)
        if num_blocks < 2:
            raise InsufficientVram(
                f"--kv-cache-size-mb {opts.kv_cache_size_mb} holds {num_blocks} KV blocks of "
                f"{BLOCK_SIZE} tokens ({per_token} bytes per token); need at least 2"
            )
        context = hp.n_ctx_train
        if opts.max_context:
            context = min(context, opts.max_context)
        context = min(context, num_blocks * BLOCK_SIZE)
        progress(75, f"allocating {num_blocks} KV blocks ({opts.kv_cache_size_mb} MiB)")
        kv = model.new_kv_cache(num_blocks, BLOCK_SIZE)
        max_seqs = max(1, min(opts.max_concurrent, 256))
        config = EngineConfig(
            num_blocks=num_blocks,
            vocab_size=model.vocab_size,
            block_size=BLOCK_SIZE,
            max_model_len=context,
            max_num_seqs=max_seqs,
            max_num_batched_tokens=max(512, max_seqs),
            max_waiting=opts.max_waiting,
            enable_prefix_caching=opts.enable_prefix_caching,
            eos_token_ids=tuple(sorted(tokenizer.stop_ids)),
        )
        hook = _EngineHook()
        engine = LLMEngine(model, kv, config, tokenizer=tokenizer, metrics=hook)
        # The GPU backend counts what it actually holds in VRAM (weights + KV cache).
        vram = int(getattr(model.backend, "vram_bytes_used", 0) or 0) if resident == "gpu" else 0
        name = opts.model if not Path(opts.model).is_file() else Path(opts.model).stem
        info = ModelInfo(
            name=name,
            path=str(path),
            arch=hp.arch,
            quant_kind=_quant_kind(gf),
            tokenizer_kind=tokenizer.kind,
            vocab_size=int(model.vocab_size),
            context_length=int(context),
            resident=resident,
            vram_bytes_used=vram,
            sm=facts.get("sm"),
            cuda_runtime_version=facts.get("cuda_runtime_version"),
        )
        progress(100, "engine ready")
        runtime = EngineRuntime(engine, tokenizer, info, hook)
        hook.on_retire = runtime._retired
        return runtime

    return build

