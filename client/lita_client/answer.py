"""What one request returns: :class:`Answer`, and :class:`AnswerBuilder` that assembles it from responses.

The ``lita`` ensemble sends the *new* text on every response (one response in total, or one
per token when streaming) and the whole-answer segments, duration and token counts on each;
the final response carries the complete server-side timings.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Chunk:
    """One response of the ensemble."""

    text: str  # new text since the previous response, times rendered in seconds
    raw_text: str  # the same delta with raw <tK> time tokens
    segments: list[tuple[float, float]]  # every segment of the answer so far, in seconds
    duration: float
    num_input_tokens: int
    num_output_tokens: int
    is_final: bool
    stats: dict[str, Any]
    # The segments as the server sent them: start and end, and with logprobs start_prob, end_prob,
    # start_mean, start_std, end_mean, end_std (seconds).
    segment_details: list[dict[str, float]] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # this response's new tokens (with logprobs)


@dataclass
class Answer:
    """A complete answer to one question about one video."""

    text: str
    raw_text: str
    segments: list[tuple[float, float]]
    duration: float
    num_input_tokens: int
    num_output_tokens: int
    stats: dict[str, Any] = field(default_factory=dict)  # server-side timings (decode_ms, ttft_ms, ...)
    timings: dict[str, float] = field(default_factory=dict)  # client-side: first_response_ms, total_ms
    segment_details: list[dict[str, float]] = field(default_factory=list)  # see Chunk.segment_details
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # every generated token's, when asked for

    def confidence_lines(self) -> list[str]:
        """``segment 1: 6.1 s (p 0.82, 6.2 ± 0.3 s) to 14.5 s (p 0.61, 14.3 ± 0.6 s)`` per segment that
        carries a confidence (requests with logprobs)."""
        lines = []
        for i, seg in enumerate(self.segment_details, 1):
            if "start_std" not in seg:
                continue
            ends = [f"{seg[e]:.1f} s (p {seg[e + '_prob']:.2f}, {seg[e + '_mean']:.1f} ± {seg[e + '_std']:.1f} s)"
                    for e in ("start", "end")]
            lines.append(f"segment {i}: {ends[0]} to {ends[1]}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["segments"] = [list(seg) for seg in self.segments]
        return data

    def to_json(self, **kwargs: Any) -> str:
        """One JSON object (segments as ``[start_s, end_s]`` pairs)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)


class AnswerBuilder:
    """Accumulates the chunks of one request into an :class:`Answer` and measures client timings."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._first: float | None = None
        self._text: list[str] = []
        self._raw: list[str] = []
        self._logprobs: list[dict[str, Any]] = []
        self.last: Chunk | None = None

    @property
    def started(self) -> bool:
        """True once any response arrived (a retry would no longer be idempotent)."""
        return self.last is not None

    @property
    def done(self) -> bool:
        return self.last is not None and self.last.is_final

    def add(self, chunk: Chunk) -> None:
        if self._first is None:
            self._first = time.perf_counter()
        self._text.append(chunk.text)
        self._raw.append(chunk.raw_text)
        self._logprobs.extend(chunk.logprobs)
        self.last = chunk

    def answer(self) -> Answer:
        if self.last is None:
            raise ValueError("no response received")
        end = time.perf_counter()
        last = self.last
        timings = {"first_response_ms": round(((self._first or end) - self._start) * 1e3, 3),
                   "total_ms": round((end - self._start) * 1e3, 3)}
        return Answer("".join(self._text), "".join(self._raw), list(last.segments), last.duration,
                      last.num_input_tokens, last.num_output_tokens, dict(last.stats), timings,
                      [dict(d) for d in last.segment_details], list(self._logprobs))
