"""SentencePiece-style tokenization as llama.cpp does it (``llm_tokenizer_spm_session``).

The ``tokenizers`` package has no model that reproduces this algorithm: llama.cpp merges the
adjacent pair whose concatenation is a vocabulary entry with the *highest score* (ties: the
leftmost pair), over UTF-8 characters, and emits characters that never formed a token as byte
tokens ``<0xNN>``. A BPE model built from merges derived from the scores differs on ties and on
pieces that are reachable through several merge orders, so this is written out here
(docs/tokenizer.md, "spm").
"""

from __future__ import annotations

import heapq
import re

from orcd_toolkit.tokenizer.errors import TokenizerLoadError
from orcd_toolkit.tokenizer.vocab import Vocab


class SpmModel:
    """Score-driven bigram merging with byte fallback over one text fragment."""

    __slots__ = ("_byte_ids", "_cache", "_score", "_splitter", "_to_id")

    def __init__(self, vocab: Vocab) -> None:
        if vocab.scores is None:
            raise TokenizerLoadError("SPM vocabulary has no tokenizer.ggml.scores")
        self._to_id = vocab.token_to_id
        self._score = vocab.scores.tolist()
        byte_ids: list[int] = []
        for b in range(256):
            i = self._to_id.get(f"<0x{b:02X}>")
            if i is None:
                i = self._to_id.get(chr(b)) if b < 128 else None
            byte_ids.append(-1 if i is None else i)
        self._byte_ids = byte_ids
        # Speed-up that keeps the result exact: if no vocabulary entry has a U+2581 right after
        # another character, no merge can ever join a symbol ending before "X▁" with one
        # starting at it, so the text splits into independent words there (true for the
        # Llama-2 and Phi-3 vocabularies). Words are then memoised.
        joins = any(re.search("[^\u2581]\u2581", t) for t in vocab.tokens)
        self._splitter = None if joins else re.compile("\u2581*[^\u2581]+|\u2581+")
        self._cache: dict[str, tuple[int, ...]] = {}

    def byte_token(self, b: int) -> int:
        i = self._byte_ids[b]
        if i < 0:
            raise TokenizerLoadError(f"SPM vocabulary has no byte token <0x{b:02X}>")
        return i

    def encode(self, text: str, out: list[int]) -> None:
        """Append the ids of ``text`` (spaces already escaped to U+2581) to ``out``."""
        if self._splitter is None:
            self._encode_span(text, out)
            return
        cache = self._cache
        for word in self._splitter.findall(text):
            ids = cache.get(word)
            if ids is None:
                tmp: list[int] = []
                self._encode_span(word, tmp)
                ids = tuple(tmp)
                if len(cache) >= 100_000:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)

    def _encode_span(self, text: str, out: list[int]) -> None:
        n = len(text)
        if n == 0:
            return
        to_id, score = self._to_id, self._score
        # Symbols are [start, end) spans over code points, linked as in llama.cpp.
        start = list(range(n))
        end = list(range(1, n + 1))
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        heap: list[tuple[float, int, int, int]] = []

        def try_add(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            piece = text[start[left] : end[right]]
            tid = to_id.get(piece)
            if tid is None:
                return
            # max score first, then leftmost: heapq is a min-heap.
            heapq.heappush(heap, (-score[tid], left, right, end[right] - start[left]))

        for i in range(1, n):
            try_add(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            ls, rs = end[left] - start[left], end[right] - start[right]
            if ls == 0 or rs == 0 or ls + rs != size:
                continue  # one side was merged since this bigram was queued
            end[left] = end[right]
            start[right] = end[right]  # right symbol is now empty
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            try_add(prev[left], left)
            try_add(left, nxt[left])

        i = 0
        while i != -1:
            piece = text[start[i] : end[i]]
            if piece:
                tid = to_id.get(piece)
                if tid is not None:
                    out.append(tid)
                else:
                    # Only single characters can miss the vocabulary (every merge result is
                    # a vocabulary entry), so llama.cpp's rev_merge resegmentation reduces
                    # to byte fallback here.
                    out.extend(self.byte_token(b) for b in piece.encode("utf-8"))
            i = nxt[i]
