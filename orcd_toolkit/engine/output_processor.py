"""Output processing outside the model step: incremental detokenization and stop strings.

Per request it feeds sampled tokens to the tokenizer's ``IncrementalDetokenizer`` (which
holds back incomplete UTF-8), then holds back the last ``max(len(stop)) - 1`` characters so
a half-matched stop string never reaches a client (vLLM ``output_processor.py`` /
``detokenizer.py``). When a stop string completes, the text before it is emitted, the
request is reported finished with reason ``stop``, and the engine frees the sequence at
the next step boundary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orcd_toolkit.engine.outputs import FINISH_ABORT, FINISH_ERROR, FINISH_STOP, RequestOutput

if TYPE_CHECKING:
    from orcd_toolkit.engine.engine import CoreStepOutput
    from orcd_toolkit.engine.sequence import Sequence


class StopStringMatcher:
    """Streaming text with stop strings: ``feed`` returns what is safe to emit.

    Invariant: the emitted text never contains the start of a stop string that could
    still complete, nor any text at or after a completed one.
    """

    __slots__ = ("stops", "hold", "text", "emitted", "stopped", "stop_reason")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""  # everything decoded so far, stop-truncated once stopped
        self.emitted = 0  # characters of ``text`` already emitted
        self.stopped = False
        self.stop_reason: str | None = None

    def feed(self, new: str, final: bool = False) -> str:
        if self.stopped:
            return ""
        if new:
            start = max(0, len(self.text) - self.hold)
            self.text += new
            # the stop string that completes first wins (earliest end, then earliest start):
            # generation would have stopped there, so later text never existed; this also
            # makes the result independent of how the text is split into tokens
            best = -1
            best_end = -1
            for s in self.stops:
                i = self.text.find(s, start)
                if i >= 0:
                    end = i + len(s)
                    if best < 0 or end < best_end or (end == best_end and i < best):
                        best, best_end = i, end
                        self.stop_reason = s
            if best >= 0:
                self.stopped = True
                self.text = self.text[:best]
                out = self.text[self.emitted :]
                self.emitted = len(self.text)
                return out
        end = len(self.text) if final else max(self.emitted, len(self.text) - self.hold)
        out = self.text[self.emitted : end]
        self.emitted = end
        return out


class _RequestState:
    __slots__ = ("detok", "matcher", "skip_ids", "done")

    def __init__(self, detok: Any, matcher: StopStringMatcher | None, skip_ids: frozenset[int]):
        self.detok = detok
        self.matcher = matcher
        self.skip_ids = skip_ids
        self.done = False


class OutputProcessor:
    """Turns ``CoreStepOutput`` into per-request ``RequestOutput`` events."""

    def __init__(self, tokenizer: Any = None) -> None:
        self.tokenizer = tokenizer
        self._states: dict[str, _RequestState] = {}

    def add(self, seq: Sequence) -> None:
        detok = None
        if self.tokenizer is not None:
            from orcd_toolkit.tokenizer import IncrementalDetokenizer

            detok = IncrementalDetokenizer(
                self.tokenizer, skip_special=seq.params.skip_special_tokens
            )
        stops = tuple(seq.params.stop)
        matcher = StopStringMatcher(stops) if stops else None
        # the token that ended a turn is not part of the text (as OpenAI / vLLM)
        skip = frozenset(seq.stop_ids) if seq.params.skip_special_tokens else frozenset()
        self._states[seq.request_id] = _RequestState(detok, matcher, skip)

    def process(self, core: CoreStepOutput) -> list[RequestOutput]:
        outputs: list[RequestOutput] = []
        for seq in core.aborted:
            state = self._states.pop(seq.request_id, None)
            if state is not None and not state.done:
                outputs.append(
                    RequestOutput(seq.request_id, [], "", True, FINISH_ABORT, None, None, None)
                )
        for seq in core.failed:
            state = self._states.pop(seq.request_id, None)
            if state is not None and not state.done:
                outputs.append(
                    RequestOutput(seq.request_id, [], "", True, FINISH_ERROR, None, seq.error, None)
                )
        token_ids = core.token_ids.tolist()
        finished = core.finished.tolist()
        lps = core.logprobs
        states = self._states
        for i, seq in enumerate(core.seqs):
            state = states.get(seq.request_id)
            if state is None or state.done:
                continue
            tok = token_ids[i]
            fin = finished[i]
            text = ""
            reason = seq.finish_reason if fin else None
            stop_reason = seq.stop_reason if fin else None
            detok = state.detok
            if detok is not None:
                ended_by_stop_token = fin and reason == FINISH_STOP and tok in state.skip_ids
                piece = "" if ended_by_stop_token else detok.push(tok)
                if fin:
                    piece += detok.flush()
                m = state.matcher
                if m is None:
                    text = piece
                else:
                    text = m.feed(piece, final=fin)
                    if m.stopped:
                        fin = True
                        reason = FINISH_STOP
                        stop_reason = m.stop_reason
            out = RequestOutput(
                seq.request_id,
                [tok],
                text,
                fin,
                reason,
                stop_reason,
                None,
                [lps[i]] if lps is not None and lps[i] is not None else None,
            )
            outputs.append(out)
            if fin:
                state.done = True
                del states[seq.request_id]
        return outputs
