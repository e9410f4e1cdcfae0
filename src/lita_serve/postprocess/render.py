"""Turn generated ids into what a user reads: text with ``<tK>`` as seconds, and segments.

The decoder streams the ids generated so far plus how many of them are new; the renderer
returns the new text only (a *delta*), so a streaming client prints pieces as they come and
the concatenation of all deltas is the whole answer. Segments are always those of the whole
answer so far.

With log-probabilities (the request's ``logprobs``), each response also lists its new tokens'
log-probabilities, and every segment says how sure the model was of its start and end: the
probability of the chosen time token, and the mean and standard deviation in seconds of the
model's distribution over the time tokens at that position.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from lita_serve.text.logprobs import TokenLogprobs
from lita_serve.text.time_tokens import Segment, parse_time_tokens
from lita_serve.text.tokenizer import LitaTokenizer


@dataclass
class RenderedChunk:
    text: str  # new text, times rendered as seconds
    raw_text: str  # new text, time tokens verbatim
    segments: list[Segment]  # segments of the whole answer so far
    problems: list[str]  # malformed / out-of-range time tokens in the whole answer
    confidence: list[dict[str, float]] | None = None  # per segment, when log-probabilities were asked for
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # the new tokens'

    def segments_json(self) -> str:
        out = []
        for i, s in enumerate(self.segments):
            item: dict[str, float] = {"start": round(s.start, 3), "end": round(s.end, 3)}
            if self.confidence is not None and i < len(self.confidence):
                item.update(self.confidence[i])
            out.append(item)
        return json.dumps(out)

    def logprobs_json(self) -> str:
        return json.dumps(self.logprobs, ensure_ascii=False)


def _delta(full: str, prev: str) -> str:
    return full[len(prev):] if full.startswith(prev) else full


class Renderer:
    """Renders one response of the decoder for a video of known duration."""

    def __init__(self, tokenizer: LitaTokenizer, num_time_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.num_time_tokens = num_time_tokens

    def render(self, ids: Sequence[int], new_tokens: int, duration: float,
               logprobs: Sequence[TokenLogprobs] | None = None) -> RenderedChunk:
        """``ids``: every id generated so far; the last ``new_tokens`` of them are new.
        ``logprobs``: one entry per id when the request asked for log-probabilities."""
        new_tokens = max(0, min(int(new_tokens), len(ids)))
        raw_full = self.tokenizer.decode(ids)
        raw_prev = self.tokenizer.decode(ids[: len(ids) - new_tokens])
        full = parse_time_tokens(raw_full, duration, self.num_time_tokens)
        prev = parse_time_tokens(raw_prev, duration, self.num_time_tokens)
        chunk = RenderedChunk(
            text=_delta(full.text, prev.text),
            raw_text=_delta(raw_full, raw_prev),
            segments=full.segments,
            problems=full.problems,
        )
        if logprobs is not None and len(logprobs) == len(ids):
            chunk.logprobs = [self._token_json(ids[j], logprobs[j]) for j in range(len(ids) - new_tokens, len(ids))]
            chunk.confidence = self._confidence(ids, logprobs, full.segments, len(full.times), duration)
        return chunk

    def _token_json(self, token: int, lp: TokenLogprobs) -> dict[str, Any]:
        piece = self.tokenizer.id_to_piece
        return {"token": piece(token), "logprob": round(lp.logprob, 6),
                "top": [{"token": piece(i), "logprob": round(v, 6)} for i, v in lp.top]}

    def _confidence(self, ids: Sequence[int], logprobs: Sequence[TokenLogprobs], segments: list[Segment],
                    num_times: int, duration: float) -> list[dict[str, float]] | None:
        """Start/end confidence of every segment; None when the text's time tokens are not the
        generated time-token ids one for one (e.g. a time token spelled out piece by piece)."""
        positions = [j for j, t in enumerate(ids) if self.tokenizer.time_index(t) is not None]
        if len(positions) != num_times:
            return None
        step = duration / (self.num_time_tokens - 1)  # seconds per time-token index
        out = []
        for seg in segments:
            item: dict[str, float] = {}
            for end, k in zip(("start", "end"), seg.tokens):
                lp = logprobs[positions[k]]
                if lp.time is None:
                    return None
                _, mean, std = lp.time
                item.update({f"{end}_prob": round(math.exp(lp.logprob), 6),
                             f"{end}_mean": round(min(max(mean * step, 0.0), duration), 3),
                             f"{end}_std": round(std * step, 3)})
            out.append(item)
        return out
