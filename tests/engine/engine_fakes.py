"""Null backends for engine tests: no weights, hand-built logits.

``CheckingModel`` stores (token, position) in a paged KV array at ``slot_mapping`` and
rebuilds every sequence's context through ``block_tables`` before computing its logits as
a pure function of that context. A block handed to two live sequences, a block freed while
in use, a wrong slot mapping or a stale prefix-cache hit changes a context and therefore the
tokens, so "same tokens as alone" tests the allocator and scheduler end to end.
"""

from __future__ import annotations

import zlib

import numpy as np

from orcd_toolkit.backends.base import ForwardBatch

_POS_BITS = 20


class FakeKV:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.data = np.full((num_blocks, block_size), -1, dtype=np.int64)


class KVCorruption(AssertionError):
    """The context read back through the block table is not the one written."""


class CheckingModel:
    """Logits = f(context tokens), read back from the paged KV cache."""

    def __init__(self, vocab_size: int = 64, scale: float = 3.0):
        self.vocab_size = vocab_size
        self.scale = scale
        self.calls = 0
        self.batches: list[ForwardBatch] = []
        self.record = False

    def logits_for(self, context: list[int]) -> np.ndarray:
        seed = zlib.crc32(np.asarray(context, dtype=np.int64).tobytes())
        rng = np.random.default_rng(seed)
        return (rng.standard_normal(self.vocab_size) * self.scale).astype(np.float32)

    def forward(self, batch: ForwardBatch, kv: FakeKV) -> np.ndarray:
        self.calls += 1
        # the scheduler skips ForwardBatch validation for speed: re-validate every batch here
        ForwardBatch(
            batch.token_ids,
            batch.positions,
            batch.seq_starts,
            batch.context_lens,
            batch.block_tables,
            batch.slot_mapping,
            batch.logits_indices,
        )
        for name in ("token_ids", "positions", "seq_starts", "context_lens", "block_tables",
                     "slot_mapping", "logits_indices"):
            if getattr(batch, name).dtype != np.int32:
                raise KVCorruption(f"ForwardBatch.{name} is not int32")
        if self.record:
            self.batches.append(batch)
        bs = kv.block_size
        flat = kv.data.reshape(-1)
        enc = batch.token_ids.astype(np.int64) << _POS_BITS | batch.positions.astype(np.int64)
        if len(np.unique(batch.slot_mapping)) != batch.slot_mapping.size:
            raise KVCorruption("two tokens written to one KV slot in one step")
        flat[batch.slot_mapping] = enc
        out = np.empty((batch.logits_indices.shape[0], self.vocab_size), dtype=np.float32)
        starts = batch.seq_starts
        for r, t in enumerate(batch.logits_indices.tolist()):
            b = int(np.searchsorted(starts, t, side="right")) - 1
            ctx_len = int(batch.positions[t]) + 1
            if int(batch.context_lens[b]) - (int(starts[b + 1]) - 1 - t) != ctx_len:
                raise KVCorruption("position and context_lens disagree")
            pos = np.arange(ctx_len)
            blocks = batch.block_tables[b, pos // bs]
            if (blocks < 0).any():
                raise KVCorruption("block table too short for the context")
            vals = kv.data[blocks, pos % bs]
            if not np.array_equal(vals & ((1 << _POS_BITS) - 1), pos):
                raise KVCorruption(f"context of row {t} read back with wrong positions")
            out[r] = self.logits_for((vals >> _POS_BITS).tolist())
        return out


def solo_reference(
    model: CheckingModel,
    prompt: list[int],
    params,
    seed: int,
    eos_ids: tuple[int, ...],
) -> tuple[list[int], str]:
    """What one request must produce alone: the documented procedure, no engine involved."""
    from orcd_toolkit.engine.rng import uniform_draws
    from orcd_toolkit.engine.sampling import sample_row

    stop_ids = tuple(eos_ids) + tuple(params.stop_token_ids)
    out: list[int] = []
    for n in range(params.max_tokens):
        logits = model.logits_for(prompt + out)
        u = float(uniform_draws([seed], [n])[0])
        tok, _ = sample_row(
            logits, params, u, np.asarray(prompt), np.asarray(out, dtype=np.int64), stop_ids
        )
        out.append(tok)
        is_stop = (tok in eos_ids and not params.ignore_eos) or tok in params.stop_token_ids
        if is_stop and len(out) >= params.min_tokens:
            return out, "stop"
    return out, "length"


class ScriptedModel:
    """Forces each sequence's continuation: sequence k (by prompt) emits ``scripts[prompt]``.

    Logits are one-hot on the scripted token, so greedy sampling reproduces the script; used
    to drive exact token streams through the output processor with a real tokenizer.
    """

    def __init__(self, vocab_size: int, scripts: dict[tuple[int, ...], list[int]]) -> None:
        self.vocab_size = vocab_size
        self.scripts = scripts
        self.contexts: dict[int, list[int]] = {}

    def forward(self, batch: ForwardBatch, kv: FakeKV) -> np.ndarray:
        bs = kv.block_size
        flat = kv.data.reshape(-1)
        enc = batch.token_ids.astype(np.int64) << _POS_BITS | batch.positions.astype(np.int64)
        flat[batch.slot_mapping] = enc
        out = np.full((batch.logits_indices.shape[0], self.vocab_size), -10.0, dtype=np.float32)
        for r, t in enumerate(batch.logits_indices.tolist()):
            b = int(np.searchsorted(batch.seq_starts, t, side="right")) - 1
            n = int(batch.positions[t]) + 1
            pos = np.arange(n)
            ctx = (kv.data[batch.block_tables[b, pos // bs], pos % bs] >> _POS_BITS).tolist()
            for prompt, script in self.scripts.items():
                if tuple(ctx[: len(prompt)]) == prompt:
                    k = n - len(prompt)
                    out[r, script[k] if k < len(script) else 0] = 10.0
                    break
        return out
