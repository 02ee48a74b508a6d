"""``NullModelRunner``: a model runner that computes nothing (engine bookkeeping benchmarks).

It returns rows of one preallocated logits buffer, so a ``step()`` on it measures only the
engine's own work: scheduling, batch building, block allocation, greedy sampling over
``vocab_size`` logits, stop rules and metrics. Not a stub for a model: a measuring device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orcd_toolkit.backends.base import ForwardBatch


class NullModelRunner:
    """Logits with a single maximum at ``token`` for every requested row."""

    def __init__(self, vocab_size: int, max_rows: int, token: int = 1) -> None:
        if not 0 <= token < vocab_size:
            raise ValueError(f"token {token} outside the vocabulary of {vocab_size}")
        self.vocab_size = vocab_size
        self._logits = np.zeros((max_rows, vocab_size), dtype=np.float32)
        self._logits[:, token] = 1.0

    def forward(self, batch: ForwardBatch, kv_cache: Any) -> np.ndarray:
        n = batch.logits_indices.shape[0]
        if n > self._logits.shape[0]:
            raise ValueError(f"{n} logits rows requested, the runner was built for "
                             f"{self._logits.shape[0]}")
        return self._logits[:n]
