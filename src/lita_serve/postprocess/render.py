"""Turn generated ids into what a user reads: text with ``<tK>`` as seconds, and segments.

The decoder streams the ids generated so far plus how many of them are new; the renderer
returns the new text only (a *delta*), so a streaming client prints pieces as they come and
the concatenation of all deltas is the whole answer. Segments are always those of the whole
answer so far.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from lita_serve.time_tokens import Segment, parse_time_tokens
from lita_serve.tokenizer import LitaTokenizer


@dataclass
class RenderedChunk:
    text: str  # new text, times rendered as seconds
    raw_text: str  # new text, time tokens verbatim
    segments: list[Segment]  # segments of the whole answer so far
    problems: list[str]  # malformed / out-of-range time tokens in the whole answer

    def segments_json(self) -> str:
        return json.dumps([{"start": round(s.start, 3), "end": round(s.end, 3)} for s in self.segments])


def _delta(full: str, prev: str) -> str:
    return full[len(prev):] if full.startswith(prev) else full


class Renderer:
    """Renders one response of the decoder for a video of known duration."""

    def __init__(self, tokenizer: LitaTokenizer, num_time_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.num_time_tokens = num_time_tokens

    def render(self, ids: Sequence[int], new_tokens: int, duration: float) -> RenderedChunk:
        """``ids``: every id generated so far; the last ``new_tokens`` of them are new."""
        new_tokens = max(0, min(int(new_tokens), len(ids)))
        raw_full = self.tokenizer.decode(ids)
        raw_prev = self.tokenizer.decode(ids[: len(ids) - new_tokens])
        full = parse_time_tokens(raw_full, duration, self.num_time_tokens)
        prev = parse_time_tokens(raw_prev, duration, self.num_time_tokens)
        return RenderedChunk(
            text=_delta(full.text, prev.text),
            raw_text=_delta(raw_full, raw_prev),
            segments=full.segments,
            problems=full.problems,
        )
