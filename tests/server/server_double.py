"""A small deterministic runtime for testing the server in isolation (never shipped).

It has the shape of the product runtime (``ServingRuntime``: encode / submit / abort / step /
stats) and the behaviour the server must cope with: several jobs stepped together, KV blocks
held per job and freed on abort, tokens whose UTF-8 bytes are split (the first half yields
empty text, the second the whole character), EOS, a bounded wait queue, a step that takes
time, load progress. Each token depends only on (seed, prompt, index), so any cross-talk
between jobs in the server shows up as a mismatch.
"""

from __future__ import annotations

import hashlib
import threading
import time

from orcd_toolkit.errors import InvalidRequest, Overloaded
from orcd_toolkit.server.protocol import ExecuteRequest
from orcd_toolkit.server.runtime import EngineStats, JobOutput, ModelInfo, ProgressFn

# Token id -> text; ids 200/201 are the two halves of one emoji (UTF-8 split across tokens).
PIECES = ["GPU", " cores", " hum", ",", " 並列", "計算", " warm", " silicon", " 🚀", " flows",
          "\n", " bright", " é", " déjà", " vu", "."]
SPLIT_FIRST, SPLIT_SECOND = 200, 201
SPLIT_TEXT = "🧠"
EOS = 199
CRASH_ENCODE = "__crash the tokenizer__"
CRASH_SUBMIT = "__crash the engine submit__"
CRASH_THREAD = "__crash the engine thread__"
BLOCK = 16


class DoubleRuntime:
    """Deterministic ``ServingRuntime`` double; ``step_s`` simulates the step's compute time."""

    def __init__(self, step_s: float = 0.005, kv_blocks: int = 512, max_waiting: int = 64,
                 eos_after: int | None = None, context_length: int = 4096,
                 fail_step_at: int | None = None, fail_with: Exception | None = None) -> None:
        self.info = ModelInfo(name="double-model", arch="double", quant_kind="F32",
                              tokenizer_kind="bytes", vocab_size=256 + 16,
                              context_length=context_length, resident="cpu")
        self.step_s = step_s
        self.kv_blocks = kv_blocks
        self.max_waiting = max_waiting
        self.eos_after = eos_after
        self.fail_step_at = fail_step_at
        self.fail_with = fail_with or RuntimeError("double: injected step failure")
        self._jobs: dict[str, dict] = {}
        self._order: list[str] = []
        self.steps = 0
        self.aborted: list[str] = []
        self.submitted: list[tuple[str, ExecuteRequest]] = []
        self.thread_ids: set[int] = set()
        self.closed = False
        self.thread_bomb = False

    # encode may run on any thread.
    def encode(self, request: ExecuteRequest) -> list[int]:
        if request.prompt == CRASH_ENCODE:
            raise ValueError("double: tokenizer bug")
        if request.prompt is not None:
            text = request.prompt
        else:
            text = "".join(f"<{r}>{c}" for r, c in request.messages or ())
        return list(text.encode("utf-8"))

    def _check_thread(self) -> None:
        self.thread_ids.add(threading.get_ident())

    def submit(self, job_id: str, prompt_ids: list[int], request: ExecuteRequest) -> None:
        self._check_thread()
        if job_id in self._jobs:
            raise InvalidRequest(f"duplicate request id {job_id}")
        if request.prompt == CRASH_SUBMIT:
            raise KeyError("double: submit bug")
        if request.prompt == CRASH_THREAD:
            self.thread_bomb = True
        if len(self._jobs) >= self.max_waiting:
            raise Overloaded("double: wait queue full")
        seed = request.seed if request.seed is not None else 0
        digest = hashlib.sha256(bytes(prompt_ids) + seed.to_bytes(8, "little")).digest()
        self._jobs[job_id] = {"req": request, "n": 0, "digest": digest,
                              "len": len(prompt_ids), "pending_split": False,
                              "first": None}
        self._order.append(job_id)
        self.submitted.append((job_id, request))

    def abort(self, job_id: str) -> None:
        self._check_thread()
        if self._jobs.pop(job_id, None) is not None:
            self._order.remove(job_id)
            self.aborted.append(job_id)

    def _token(self, job: dict) -> tuple[int, str]:
        n = job["n"]
        if job["pending_split"]:
            job["pending_split"] = False
            return SPLIT_SECOND, SPLIT_TEXT
        h = hashlib.sha256(job["digest"] + n.to_bytes(4, "little")).digest()
        r = h[0] % (len(PIECES) + 2)
        if r == len(PIECES):
            job["pending_split"] = True
            return SPLIT_FIRST, ""
        if r == len(PIECES) + 1:
            r = h[1] % len(PIECES)
        return 256 + r, PIECES[r]

    def step(self) -> list[JobOutput]:
        self._check_thread()
        self.steps += 1
        if self.fail_step_at is not None and self.steps == self.fail_step_at:
            raise self.fail_with
        if self.step_s:
            time.sleep(self.step_s)
        now = time.monotonic()
        outs = []
        for job_id in list(self._order):
            job = self._jobs[job_id]
            req: ExecuteRequest = job["req"]
            if job["first"] is None:
                job["first"] = now
            if self.eos_after is not None and job["n"] >= self.eos_after and \
                    not req.ignore_eos and not job["pending_split"]:
                tok, text = EOS, ""
                out = JobOutput(job_id, [tok], [text], finished=True, finish_reason="stop",
                                first_scheduled=job["first"])
            else:
                tok, text = self._token(job)
                job["n"] += 1
                done = job["n"] >= req.max_tokens
                out = JobOutput(job_id, [tok], [text], finished=done,
                                finish_reason="length" if done else None,
                                first_scheduled=job["first"])
                if req.logprobs is not None:
                    out.logprobs = [-0.5]
            if out.finished:
                self._jobs.pop(job_id)
                self._order.remove(job_id)
            else:
                job["len"] += 1
            outs.append(out)
        return outs

    def has_work(self) -> bool:
        return bool(self._jobs)

    def stats(self) -> EngineStats:
        if self.thread_bomb and self.steps > 2:
            raise SystemError("double: the engine loop itself broke")
        used = sum(-(-j["len"] // BLOCK) for j in self._jobs.values())
        return EngineStats(num_running=len(self._jobs), num_waiting=0, kv_blocks_used=used,
                           kv_blocks_total=self.kv_blocks)

    def close(self) -> None:
        self.closed = True


def factory_for(runtime: DoubleRuntime, load_s: float = 0.0,
                fail: Exception | None = None):
    """A ``RuntimeFactory`` reporting 0/25/50/75/100 % and returning ``runtime``."""

    def factory(progress: ProgressFn) -> DoubleRuntime:
        for pct in (0, 25, 50, 75):
            progress(pct, f"loading {pct}%")
            if load_s:
                time.sleep(load_s / 4)
            if fail is not None and pct == 50:
                raise fail
        progress(100, "loaded")
        return runtime

    return factory
