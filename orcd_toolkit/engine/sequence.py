"""``Sequence``: the scheduler's record of one request."""

from __future__ import annotations

from orcd_toolkit.engine.params import SamplingParams

WAITING = 0
RUNNING = 1
FINISHED = 2


class Sequence:
    """A request as the scheduler sees it.

    While running, its tokens live in the scheduler's per-slot arrays (``slot``) so a decode
    step touches no Python object per sequence; ``token_ids`` (prompt + outputs) is the copy
    kept while it waits (before admission or after preemption) and after it finishes.
    """

    __slots__ = (
        "request_id",
        "seq_id",
        "params",
        "priority",
        "arrival_time",
        "sort_key",
        "status",
        "slot",
        "num_prompt_tokens",
        "token_ids",
        "seed",
        "reserve_tokens",
        "stop_ids",
        "finish_reason",
        "stop_reason",
        "admitted_time",
        "first_token_time",
        "num_preemptions",
        "num_cached_tokens",
        "error",
    )

    def __init__(
        self,
        request_id: str,
        seq_id: int,
        prompt_ids: list[int],
        params: SamplingParams,
        seed: int,
        priority: int,
        arrival_time: float,
        sort_key: tuple[int, int],
        stop_ids: tuple[int, ...],
    ) -> None:
        self.request_id = request_id
        self.seq_id = seq_id
        self.params = params
        self.priority = priority
        self.arrival_time = arrival_time
        self.sort_key = sort_key
        self.status = WAITING
        self.slot = -1
        self.num_prompt_tokens = len(prompt_ids)
        self.token_ids = list(prompt_ids)
        self.seed = seed
        self.reserve_tokens = len(prompt_ids) + params.max_tokens
        self.stop_ids = stop_ids
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.admitted_time: float | None = None
        self.first_token_time: float | None = None
        self.num_preemptions = 0
        self.num_cached_tokens = 0
        self.error: str | None = None

    def __lt__(self, other: Sequence) -> bool:  # heap order of the wait queue
        return self.sort_key < other.sort_key

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]
