"""The forward pass over a ragged batch: several sequences (prefill chunks and decode tokens
mixed) in one step, K/V in arbitrary paged blocks, give the logits each sequence gets alone."""

from __future__ import annotations

import numpy as np
import pytest

from orcd_toolkit.backends.base import ForwardBatch, single_sequence_batch


@pytest.mark.parametrize("preset", ["gpt2-124m", "phi3-mini-4k", "gpt-oss-20b"])
def test_ragged_paged_batch_matches_single_sequences(synth_path, model_cache, preset) -> None:  # noqa: ANN001
    model = model_cache(synth_path(preset))
    rng = np.random.default_rng(0)
    block = 4
    seqs = [rng.integers(0, 30000, size=n).tolist() for n in (13, 6, 9)]
    # reference: each sequence alone, contiguous blocks, all logits
    ref = []
    for s in seqs:
        kv = model.new_kv_cache(8, block)
        ref.append(
            model.forward(single_sequence_batch(s, 0, np.arange(8), block, all_logits=True), kv)
        )
    # batched: seq 0 prefilled in two chunks (7 then 6), seq 1 decoded token by token after a
    # 5-token prefill, seq 2 prefilled at once; blocks scattered over one shared pool
    kv = model.new_kv_cache(32, block)
    tables = np.array(rng.permutation(32)[:24].reshape(3, 8), dtype=np.int32)
    done = [0, 0, 0]
    plan = [{0: 7, 1: 5, 2: 9}, {0: 6, 1: 1}]
    plan += [{1: 1}] * (len(seqs[1]) - 6)
    got: list[list[np.ndarray]] = [[], [], []]
    for step in plan:
        ids, pos, slots, starts, lens, rows = [], [], [], [0], [], []
        order = sorted(step)
        for b in order:
            n = step[b]
            p = np.arange(done[b], done[b] + n)
            ids += seqs[b][done[b] : done[b] + n]
            pos += p.tolist()
            slots += (tables[b, p // block] * block + p % block).tolist()
            starts.append(starts[-1] + n)
            lens.append(done[b] + n)
            rows += list(range(starts[-2], starts[-1]))
        batch = ForwardBatch(
            token_ids=ids, positions=pos, seq_starts=starts, context_lens=lens,
            block_tables=tables[order], slot_mapping=slots, logits_indices=rows,
        )  # fmt: skip
        out = model.forward(batch, kv)
        for i, b in enumerate(order):
            got[b].append(out[starts[i] : starts[i + 1]])
            done[b] += step[b]
    for b in range(3):
        np.testing.assert_allclose(np.concatenate(got[b]), ref[b], rtol=1e-4, atol=2e-4)
