"""Allocator properties under random operation sequences (hypothesis state machines).

A shadow model tracks what each block "contains" (the tokens whose K/V a sequence wrote
there); a prefix-cache hit must hand out blocks whose contents equal the asking sequence's
tokens, a block in use is never handed out again, nothing is freed twice, and when every
sequence has been freed the pool is whole again.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orcd_toolkit.engine.allocators import (
    AllocatorInvariantError,
    ContiguousAllocator,
    PagedAllocator,
)

SETTINGS = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# A tiny alphabet and short prompts, so prefixes repeat and the cache is exercised.
prompts = st.lists(st.integers(0, 2), min_size=1, max_size=24)


class PagedMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.alloc = PagedAllocator(num_blocks=24, block_size=4, enable_prefix_caching=True)
        self.seqs: dict[int, list[int]] = {}  # seq id -> tokens whose K/V it computed
        self.content: dict[int, tuple[int, ...]] = {}  # block -> tokens written there
        self.next_id = 0

    @rule(tokens=prompts, watermark=st.integers(0, 3))
    def admit(self, tokens: list[int], watermark: int) -> None:
        sid = self.next_id
        self.next_id += 1
        bs = self.alloc.block_size
        free_before = self.alloc.num_free_blocks
        hit = self.alloc.match_prefix(sid, tokens, len(tokens) - 1)
        assert hit % bs == 0 and hit <= len(tokens) - 1
        table = self.alloc.block_table(sid)
        for i, b in enumerate(table):  # every shared block holds exactly our tokens
            assert self.content.get(b) == tuple(tokens[i * bs : (i + 1) * bs])
        new = self.alloc.allocate(sid, len(tokens), watermark=watermark)
        if new is None:
            self.alloc.free(sid)
            assert self.alloc.num_free_blocks == free_before
            return
        assert self.alloc.num_free_blocks >= watermark
        table = self.alloc.block_table(sid)
        assert len(table) == -(-len(tokens) // bs)
        # "compute" the new tokens: write their K/V into the fresh blocks
        for i in range(hit // bs, len(table)):
            self.content[table[i]] = tuple(tokens[i * bs : (i + 1) * bs])
        self.alloc.cache_blocks(sid, tokens, len(tokens))
        self.seqs[sid] = list(tokens)

    @precondition(lambda self: self.seqs)
    @rule(data=st.data(), extra=st.integers(1, 6))
    def grow(self, data: st.DataObject, extra: int) -> None:
        sid = data.draw(st.sampled_from(sorted(self.seqs)))
        tokens = self.seqs[sid]
        new_tokens = tokens + [3] * extra  # decode tokens (never cached)
        before = list(self.alloc.block_table(sid))
        new = self.alloc.allocate(sid, len(new_tokens))
        if new is None:
            assert self.alloc.block_table(sid) == before
            return
        table = self.alloc.block_table(sid)
        assert table[: len(before)] == before and table[len(before) :] == new
        bs = self.alloc.block_size
        # a block only partly written before may be shared? never: only full blocks are
        first_dirty = len(tokens) // bs
        for i in range(first_dirty, len(table)):
            assert self.alloc._ref[table[i]] == 1, "writing into a shared block"
            self.content[table[i]] = tuple(new_tokens[i * bs : (i + 1) * bs])
        self.seqs[sid] = new_tokens

    @precondition(lambda self: self.seqs)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.seqs)))
        del self.seqs[sid]
        self.alloc.free(sid)

    @invariant()
    def consistent(self) -> None:
        self.alloc.check_invariants()
        live = {b for sid in self.seqs for b in self.alloc.block_table(sid)}
        assert self.alloc.num_free_blocks == self.alloc.num_blocks - len(live)

    def teardown(self) -> None:
        for sid in list(self.seqs):
            self.alloc.free(sid)
        self.alloc.check_invariants()
        assert self.alloc.num_free_blocks == self.alloc.num_blocks
        assert self.alloc.prefix_hits <= self.alloc.prefix_queries


class ContiguousMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.alloc = ContiguousAllocator(num_blocks=32, block_size=4)
        self.regions: dict[int, list[int]] = {}
        self.next_id = 0

    @rule(n=st.integers(1, 40), reserve=st.integers(0, 60), watermark=st.integers(0, 4))
    def admit(self, n: int, reserve: int, watermark: int) -> None:
        sid = self.next_id
        self.next_id += 1
        new = self.alloc.allocate(sid, n, reserve_tokens=reserve, watermark=watermark)
        if new is None:
            assert self.alloc.block_table(sid) == []
            return
        need = -(-max(n, reserve) // 4)
        assert len(new) == need and new == list(range(new[0], new[0] + need))
        assert self.alloc.num_free_blocks >= watermark
        self.regions[sid] = new
        # growing inside the region needs nothing new
        assert self.alloc.allocate(sid, max(n, reserve)) == []

    @precondition(lambda self: self.regions)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.regions)))
        del self.regions[sid]
        self.alloc.free(sid)

    @invariant()
    def consistent(self) -> None:
        self.alloc.check_invariants()
        used = sum(len(r) for r in self.regions.values())
        assert self.alloc.num_free_blocks == self.alloc.num_blocks - used

    def teardown(self) -> None:
        for sid in list(self.regions):
            self.alloc.free(sid)
        self.alloc.check_invariants()
        assert self.alloc.num_free_blocks == self.alloc.num_blocks
        # whole again: one region of the full pool fits
        assert self.alloc.allocate(10**6, 32 * 4) == list(range(32))


TestPaged = PagedMachine.TestCase
TestPaged.settings = SETTINGS
TestContiguous = ContiguousMachine.TestCase
TestContiguous.settings = SETTINGS


def test_lru_eviction_and_hit_counters() -> None:
    a = PagedAllocator(num_blocks=4, block_size=2)
    p = [1, 2, 3, 4, 5]
    assert a.match_prefix(0, p, 4) == 0
    assert a.allocate(0, 5) is not None
    a.cache_blocks(0, p, 5)
    a.free(0)
    assert a.num_free_blocks == 4
    assert a.match_prefix(1, p, 4) == 4  # both full blocks come back
    assert a.prefix_hits == 2
    a.free(1)
    # a different prompt takes every block: the cached ones are evicted (LRU)
    assert a.match_prefix(2, [9, 9, 9, 9, 9, 9, 9], 6) == 0
    assert a.allocate(2, 8) is not None
    assert a.evictions >= 2
    a.free(2)
    assert a.match_prefix(3, p, 4) == 0


def test_shared_blocks_are_reference_counted() -> None:
    a = PagedAllocator(num_blocks=8, block_size=2)
    p = [1, 2, 3, 4, 5]
    a.match_prefix(0, p, 4)
    a.allocate(0, 5)
    a.cache_blocks(0, p, 5)
    assert a.match_prefix(1, p, 4) == 4
    a.allocate(1, 5)
    shared = a.block_table(0)[:2]
    assert a.block_table(1)[:2] == shared and a.block_table(1)[2] != a.block_table(0)[2]
    a.free(0)
    assert all(a._ref[b] == 1 for b in shared)
    a.free(1)
    a.free(1)  # freeing an unknown / already freed sequence is a no-op
    a.check_invariants()
    assert a.num_free_blocks == 8


def test_double_free_is_detected() -> None:
    a = PagedAllocator(num_blocks=4, block_size=2)
    a.allocate(0, 3)
    a._tables[1] = list(a.block_table(0))  # corrupt: two owners without a reference
    a.free(0)
    with pytest.raises(AllocatorInvariantError):
        a.free(1)


def test_contiguous_fragmentation_waits() -> None:
    a = ContiguousAllocator(num_blocks=6, block_size=1)
    assert a.allocate(0, 2) == [0, 1]
    assert a.allocate(1, 2) == [2, 3]
    assert a.allocate(2, 2) == [4, 5]
    a.free(0)
    a.free(2)
    assert a.num_free_blocks == 4
    assert a.allocate(3, 3) is None  # 4 free blocks, but no run of 3
    a.free(1)
    assert a.allocate(3, 6) == list(range(6))
