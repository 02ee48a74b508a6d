"""KV-cache block allocators: ``PagedAllocator`` (with the prefix cache) and ``ContiguousAllocator``.

Both hand out block ids of one fixed pool (``num_blocks`` blocks of ``block_size`` tokens),
budgeted once at startup; the attention code only reads block tables, so the two are
interchangeable. The allocators are plain Python bookkeeping (free queue, reference counts,
chained prefix hashes checked against the tokens), in the spirit of nano-vllm's
``block_manager.py`` and vLLM v1's ``kv_cache_manager.py`` / ``block_pool.py``.

Interface (``KVCacheAllocator`` in interfaces.py): the engine calls ``allocate(seq_id,
num_tokens, reserve_tokens, watermark)`` to make the sequence's table cover ``num_tokens``
tokens; it gets back only the newly added block ids (``None`` when they do not fit, with
nothing changed), and ``free(seq_id)`` at the end. With prefix caching, ``match_prefix``
before the first ``allocate`` takes cached blocks by reference, and ``cache_blocks``
registers full prompt blocks once their K/V are computed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class AllocatorInvariantError(RuntimeError):
    """Internal bookkeeping is inconsistent (a bug, never a user error)."""


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def block_hash(parent: int | None, tokens: Sequence[int]) -> int:
    """Chained hash of one full block: it identifies the block *and* everything before it.

    Python's hash of a tuple of ints is deterministic across runs (no hash randomisation for
    ints), so equal prefixes hash equally; a collision is harmless because a hit is also
    checked against the stored tokens.
    """
    return hash((parent, tuple(tokens)))


class PagedAllocator:
    """Fixed-size blocks in any order, reference counted, with an optional prefix cache.

    Free blocks sit in one LRU queue (oldest first). A freed block that holds a cached
    prompt block keeps its hash until it is handed out again, so a later request with the
    same prefix can take it back (a hit); handing it out evicts it (LRU eviction of
    unreferenced cached blocks). A sequence's blocks are queued tail first on free, so the
    end of a prompt is evicted before its start (as vLLM does).
    """

    supports_prefix_caching = True

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks and block_size must be >= 1, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._ref = [0] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._tables: dict[int, list[int]] = {}
        # prefix cache: hash -> block, and per block its hash and tokens (to verify hits)
        self._cached: dict[int, int] = {}
        self._block_hash: list[int | None] = [None] * num_blocks
        self._block_tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        # per sequence: (number of blocks already hashed, hash of the last one)
        self._hashed: dict[int, tuple[int, int | None]] = {}
        self.prefix_queries = 0  # full blocks looked up
        self.prefix_hits = 0  # full blocks found
        self.evictions = 0

    # -- queries ---------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def block_table(self, seq_id: int) -> list[int]:
        return self._tables.get(seq_id, [])

    def num_blocks_needed(self, num_tokens: int, reserve_tokens: int) -> int:
        """Blocks a new sequence needs before its first step (its prompt)."""
        return _cdiv(num_tokens, self.block_size)

    # -- prefix cache ---------------------------------------------------------------------
    def match_prefix(self, seq_id: int, token_ids: Sequence[int], max_tokens: int) -> int:
        """Take the longest cached run of full blocks of ``token_ids[:max_tokens]``.

        Must be called before the sequence owns any block. Returns the number of tokens
        whose K/V are already in the taken blocks.
        """
        if not self.enable_prefix_caching:
            return 0
        if self._tables.get(seq_id):
            raise AllocatorInvariantError(f"match_prefix on sequence {seq_id} that owns blocks")
        bs = self.block_size
        table: list[int] = []
        parent: int | None = None
        n_full = max_tokens // bs
        for i in range(n_full):
            toks = tuple(token_ids[i * bs : (i + 1) * bs])
            h = block_hash(parent, toks)
            self.prefix_queries += 1
            block = self._cached.get(h)
            if block is None or self._block_tokens[block] != toks:
                # the rest of the prompt is counted as misses too, so the ratio is per block
                self.prefix_queries += n_full - i - 1
                break
            self.prefix_hits += 1
            if self._ref[block] == 0:
                del self._free[block]
            self._ref[block] += 1
            table.append(block)
            parent = h
        if table:
            self._tables[seq_id] = table
            self._hashed[seq_id] = (len(table), parent)
        return len(table) * bs

    def cache_blocks(self, seq_id: int, token_ids: Sequence[int], num_tokens: int) -> None:
        """Register the full blocks among the first ``num_tokens`` (K/V computed) tokens."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        n_done, parent = self._hashed.get(seq_id, (0, None))
        n_full = num_tokens // bs
        if n_full <= n_done:
            return
        table = self._tables[seq_id]
        for i in range(n_done, n_full):
            toks = tuple(token_ids[i * bs : (i + 1) * bs])
            h = block_hash(parent, toks)
            block = table[i]
            if h not in self._cached and self._block_hash[block] is None:
                self._cached[h] = block
                self._block_hash[block] = h
                self._block_tokens[block] = toks
            parent = h
        self._hashed[seq_id] = (n_full, parent)

    # -- allocation ---------------------------------------------------------------------------
    def _take_free_block(self) -> int:
        block, _ = self._free.popitem(last=False)
        h = self._block_hash[block]
        if h is not None:
            del self._cached[h]
            self._block_hash[block] = None
            self._block_tokens[block] = None
            self.evictions += 1
        self._ref[block] = 1
        return block

    def allocate(
        self, seq_id: int, num_tokens: int, reserve_tokens: int = 0, watermark: int = 0
    ) -> list[int] | None:
        """Grow ``seq_id``'s table to cover ``num_tokens`` tokens; new block ids, or None.

        ``watermark``: blocks that must stay free afterwards (admission keeps a reserve so
        running sequences can still grow); ``reserve_tokens`` is ignored (paged blocks are
        added as the sequence grows).
        """
        table = self._tables.get(seq_id)
        have = len(table) if table is not None else 0
        need = _cdiv(num_tokens, self.block_size) - have
        if need <= 0:
            return []
        if len(self._free) - need < watermark:
            return None
        new = [self._take_free_block() for _ in range(need)]
        if table is None:
            self._tables[seq_id] = new
            return list(new)
        table.extend(new)
        return new

    def allocate_many(self, seq_ids: list[int], num_tokens: list[int]) -> list[int] | None:
        """``allocate`` for several running sequences at once (no watermark); the new block
        ids in order, or None with nothing changed when they do not all fit."""
        bs = self.block_size
        tables = self._tables
        needs = []
        total = 0
        for sid, n in zip(seq_ids, num_tokens, strict=True):
            need = -(-n // bs) - len(tables[sid])
            needs.append(need)
            total += need
        if total > len(self._free):
            return None
        out: list[int] = []
        take = self._take_free_block
        for sid, need in zip(seq_ids, needs, strict=True):
            new = [take() for _ in range(need)]
            tables[sid].extend(new)
            out.extend(new)
        return out

    def free(self, seq_id: int) -> None:
        """Drop the sequence's references; unreferenced blocks go back to the free queue."""
        table = self._tables.pop(seq_id, None)
        self._hashed.pop(seq_id, None)
        if not table:
            return
        for block in reversed(table):
            r = self._ref[block] - 1
            if r < 0:
                raise AllocatorInvariantError(f"block {block} freed twice")
            self._ref[block] = r
            if r == 0:
                self._free[block] = None

    def check_invariants(self) -> None:
        """Raise if reference counts, tables, free queue and cache disagree (tests call it)."""
        counts = [0] * self.num_blocks
        for table in self._tables.values():
            if len(set(table)) != len(table):
                raise AllocatorInvariantError(f"a table holds a block twice: {table}")
            for b in table:
                counts[b] += 1
        if counts != self._ref:
            raise AllocatorInvariantError("reference counts disagree with the block tables")
        free = {b for b in range(self.num_blocks) if counts[b] == 0}
        if set(self._free) != free:
            raise AllocatorInvariantError("free queue disagrees with the reference counts")
        for h, b in self._cached.items():
            if self._block_hash[b] != h:
                raise AllocatorInvariantError(f"cached block {b} has a stale hash")


class ContiguousAllocator:
    """One region of consecutive blocks per sequence, reserved whole at admission.

    The region covers the sequence's largest possible length (prompt + max_tokens, which the
    engine caps at the context length), so a running sequence never needs another block and
    is never preempted; the price is reserving memory a sequence may never use and external
    fragmentation (a request waits until a long enough free run exists). First-fit over a
    sorted list of free runs, merged with their neighbours on free. No prefix cache: sharing
    a block would break the one-region-per-sequence layout.
    """

    supports_prefix_caching = False

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = False):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks and block_size must be >= 1, got {num_blocks}, {block_size}")
        if enable_prefix_caching:
            raise ValueError("the contiguous allocator has no prefix cache")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = False
        self._runs: list[list[int]] = [[0, num_blocks]]  # [start, length], sorted by start
        self._regions: dict[int, tuple[int, int]] = {}
        self._num_free = num_blocks
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.evictions = 0

    @property
    def num_free_blocks(self) -> int:
        return self._num_free

    def block_table(self, seq_id: int) -> list[int]:
        region = self._regions.get(seq_id)
        if region is None:
            return []
        return list(range(region[0], region[0] + region[1]))

    def num_blocks_needed(self, num_tokens: int, reserve_tokens: int) -> int:
        return _cdiv(max(num_tokens, reserve_tokens), self.block_size)

    def match_prefix(self, seq_id: int, token_ids: Sequence[int], max_tokens: int) -> int:
        return 0

    def cache_blocks(self, seq_id: int, token_ids: Sequence[int], num_tokens: int) -> None:
        return None

    def allocate(
        self, seq_id: int, num_tokens: int, reserve_tokens: int = 0, watermark: int = 0
    ) -> list[int] | None:
        """Reserve the whole region on the first call; later calls must fit inside it."""
        region = self._regions.get(seq_id)
        if region is not None:
            if _cdiv(num_tokens, self.block_size) > region[1]:
                raise AllocatorInvariantError(
                    f"sequence {seq_id} outgrew its region of {region[1]} blocks"
                )
            return []
        need = _cdiv(max(num_tokens, reserve_tokens), self.block_size)
        if need == 0:
            return []
        if self._num_free - need < watermark:
            return None
        for i, run in enumerate(self._runs):
            if run[1] >= need:
                start = run[0]
                if run[1] == need:
                    del self._runs[i]
                else:
                    run[0] += need
                    run[1] -= need
                self._regions[seq_id] = (start, need)
                self._num_free -= need
                return list(range(start, start + need))
        return None

    def allocate_many(self, seq_ids: list[int], num_tokens: list[int]) -> list[int] | None:
        """Regions are reserved whole, so growth inside them needs no new block."""
        for sid, n in zip(seq_ids, num_tokens, strict=True):
            region = self._regions[sid]
            if _cdiv(n, self.block_size) > region[1]:
                raise AllocatorInvariantError(f"sequence {sid} outgrew its region")
        return []

    def free(self, seq_id: int) -> None:
        region = self._regions.pop(seq_id, None)
        if region is None:
            return
        start, length = region
        runs = self._runs
        lo, hi = 0, len(runs)
        while lo < hi:
            mid = (lo + hi) // 2
            if runs[mid][0] < start:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(runs) and runs[lo][0] < start + length:
            raise AllocatorInvariantError(f"region at {start} freed twice")
        if lo > 0 and runs[lo - 1][0] + runs[lo - 1][1] > start:
            raise AllocatorInvariantError(f"region at {start} freed twice")
        runs.insert(lo, [start, length])
        # merge with the next run, then with the previous one
        if lo + 1 < len(runs) and start + length == runs[lo + 1][0]:
            runs[lo][1] += runs[lo + 1][1]
            del runs[lo + 1]
        if lo > 0 and runs[lo - 1][0] + runs[lo - 1][1] == start:
            runs[lo - 1][1] += runs[lo][1]
            del runs[lo]
        self._num_free += length

    def check_invariants(self) -> None:
        used = [False] * self.num_blocks
        for start, length in self._regions.values():
            for b in range(start, start + length):
                if used[b]:
                    raise AllocatorInvariantError(f"block {b} is in two regions")
                used[b] = True
        end = -1
        free_count = 0
        for start, length in self._runs:
            if start <= end or length <= 0:
                raise AllocatorInvariantError("free runs overlap, touch or are empty")
            for b in range(start, start + length):
                if used[b]:
                    raise AllocatorInvariantError(f"block {b} is both free and in a region")
            end = start + length
            free_count += length
        if free_count != self._num_free or free_count + sum(used) != self.num_blocks:
            raise AllocatorInvariantError("free block count is inconsistent")
