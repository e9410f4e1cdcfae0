"""LITA's relative time tokens ``<t0>`` .. ``<t{N-1}>``.

LITA (NVlabs, arXiv 2403.19046) does not speak absolute timestamps: a video of any length is
divided into ``N - 1`` equal steps (N = ``LitaConfig.lita.num_time_tokens``, 100 by default) and
the model reads and writes the token ``<tK>`` for the relative position ``K / (N - 1)``.
Converting between seconds and tokens therefore needs the video's duration.

The reference formulas (NVlabs/LITA ``lita/eval/eval_model_rtl.py`` and NeMo's LITA guide):

* seconds -> index: ``round((N - 1) * t / duration)``, clamped to ``[0, N - 1]``;
* index -> seconds: ``K * duration / (N - 1)``, clamped to ``[0, duration]``.

Worked example, a 2-minute video (``duration = 120.0``) with N = 100::

    >>> index_to_seconds(50, 120.0)          # 50 * 120 / 99
    60.60606060606061
    >>> seconds_to_token(60.0, 120.0)        # round(99 * 60 / 120) = round(49.5) = 50 (half to even)
    '<t50>'
    >>> parse_time_tokens("<t50> <t99> the dog jumps", 120.0).text
    '60.6s 120.0s the dog jumps'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from lita_serve.config import DEFAULT_NUM_TIME_TOKENS
from lita_serve.errors import InvalidInputError

TIME_TOKEN_TEMPLATE = "<t{}>"

# Anything that looks like an attempt at a time token: "<t" followed by ">" directly, or by an
# optional "-" and a digit and then any run of non-space, non-bracket characters. "<table>" and
# "<to>" are therefore ordinary text, while "<t>", "<t-1>", "<t05x>" and "<t999>" are reported.
_CANDIDATE_RE = re.compile(r"<t(-?\d[^<>\s]*|)>")
_CANONICAL_INDEX_RE = re.compile(r"0|[1-9]\d*")
# Text allowed between the two tokens of a segment: whitespace, an optional dash or "to"/"and".
_PAIR_GAP_RE = re.compile(r"\s*(?:(?:-|\u2013|\u2014|to|and)\s*)?", re.IGNORECASE)


def _check_num_time_tokens(num_time_tokens: int) -> None:
    if int(num_time_tokens) < 2:
        raise InvalidInputError(f"num_time_tokens must be >= 2, got {num_time_tokens}")


def _check_duration(duration: float) -> None:
    if not isinstance(duration, (int, float)) or not math.isfinite(duration) or duration <= 0:
        raise InvalidInputError(f"duration must be a finite number of seconds > 0, got {duration!r}")


def time_token(idx: int) -> str:
    """The token string for index ``idx``: ``time_token(7) == "<t7>"``."""
    return TIME_TOKEN_TEMPLATE.format(int(idx))


def time_tokens(n: int = DEFAULT_NUM_TIME_TOKENS) -> list[str]:
    """All ``n`` time tokens in index order: ``["<t0>", ..., "<t{n-1}>"]``."""
    return [time_token(i) for i in range(int(n))]


def seconds_to_index(t: float, duration: float, num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS) -> int:
    """Index of the time token nearest to ``t`` seconds in a video of ``duration`` seconds.

    ``int(round((N - 1) * t / duration))`` clamped to ``[0, N - 1]`` (times before the start or
    after the end land on the first or last token). Raises :class:`InvalidInputError` for a
    duration that is not a finite positive number, or a non-finite ``t``.
    """
    _check_duration(duration)
    _check_num_time_tokens(num_time_tokens)
    if not isinstance(t, (int, float)) or not math.isfinite(t):
        raise InvalidInputError(f"time must be a finite number of seconds, got {t!r}")
    max_offset = num_time_tokens - 1
    idx = int(round(max_offset * float(t) / float(duration)))
    return min(max(idx, 0), max_offset)


def index_to_seconds(idx: int, duration: float, num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS) -> float:
    """Seconds denoted by time token ``idx``: ``idx * duration / (N - 1)`` clamped to ``[0, duration]``."""
    _check_duration(duration)
    _check_num_time_tokens(num_time_tokens)
    seconds = int(idx) * float(duration) / (num_time_tokens - 1)
    return min(max(seconds, 0.0), float(duration))


def seconds_to_token(t: float, duration: float, num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS) -> str:
    """The time token string nearest to ``t`` seconds, e.g. ``seconds_to_token(60, 120) == "<t50>"``."""
    return time_token(seconds_to_index(t, duration, num_time_tokens))


@dataclass
class Segment:
    """A span of the video in seconds; a lone time token gives a point (``start == end``)."""

    start: float
    end: float
    # Which valid time tokens of the text (their order of appearance) give the start and the end.
    tokens: tuple[int, int] = field(default=(0, 0), compare=False, repr=False)

    @property
    def is_point(self) -> bool:
        return self.start == self.end


@dataclass
class ParsedTimes:
    """The result of :func:`parse_time_tokens`.

    ``text``: the input with every valid time token rendered as seconds; ``raw_text``: the input
    unchanged; ``segments``: token pairs and lone tokens in order of appearance; ``times``: the
    seconds of every valid token in order; ``problems``: one message per token that was kept
    verbatim because it is malformed or out of range.
    """

    text: str
    raw_text: str
    segments: list[Segment] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


_FORMAT_SENTINEL = object()  # stands for a valid token in the rendered pieces until formatting


@dataclass
class _Found:
    start: int  # character span of the token in the raw text
    end: int
    seconds: float


def _scan(text: str, duration: float, num_time_tokens: int) -> tuple[list[_Found], list[str], list[object]]:
    """Find the valid tokens, collect problems and build the rendered text in one pass."""
    found: list[_Found] = []
    problems: list[str] = []
    rendered: list[object] = []
    pos = 0
    for m in _CANDIDATE_RE.finditer(text):
        body = m.group(1)
        rendered.append(text[pos:m.start()])
        pos = m.end()
        if _CANONICAL_INDEX_RE.fullmatch(body) is None:
            problems.append(f"malformed time token {m.group(0)!r} at character {m.start()}")
            rendered.append(m.group(0))
            continue
        idx = int(body)
        if idx >= num_time_tokens:
            problems.append(
                f"time token {m.group(0)!r} at character {m.start()} is out of range "
                f"(the model has <t0>..<t{num_time_tokens - 1}>)"
            )
            rendered.append(m.group(0))
            continue
        seconds = index_to_seconds(idx, duration, num_time_tokens)
        found.append(_Found(m.start(), m.end(), seconds))
        rendered.append(_FORMAT_SENTINEL)
    rendered.append(text[pos:])
    return found, problems, rendered


def _pair(text: str, found: list[_Found]) -> list[Segment]:
    """Pair consecutive tokens separated only by whitespace/dash/"to"/"and"; the rest are points."""
    segments: list[Segment] = []
    i = 0
    while i < len(found):
        cur = found[i]
        if i + 1 < len(found) and _PAIR_GAP_RE.fullmatch(text[cur.end:found[i + 1].start]):
            nxt = found[i + 1]
            order = (i, i + 1) if cur.seconds <= nxt.seconds else (i + 1, i)
            segments.append(Segment(min(cur.seconds, nxt.seconds), max(cur.seconds, nxt.seconds), order))
            i += 2
        else:
            segments.append(Segment(cur.seconds, cur.seconds, (i, i)))
            i += 1
    return segments


def parse_time_tokens(
    text: str,
    duration: float,
    num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS,
    fmt: str = "{:.1f}s",
) -> ParsedTimes:
    """Render LITA's time tokens in ``text`` as seconds and extract segments.

    Every ``<tK>`` with ``0 <= K < N`` becomes ``fmt.format(seconds)``. Two tokens separated only
    by whitespace, a dash, "to" or "and" form a :class:`Segment` (start <= end, as LITA's
    evaluation takes the min and max); any other token is a point. Out-of-range (``K >= N``) and
    malformed (``<t-1>``, ``<t05x>``, ``<t>``) tokens stay verbatim and are listed in
    ``problems``. Never raises on any ``text``; raises :class:`InvalidInputError` only for an
    invalid ``duration`` or ``num_time_tokens``.

    Example, a 2-minute video::

        >>> p = parse_time_tokens("<t4> <t18> apply concealer, then <t50>", 120.0)
        >>> p.text
        '4.8s 21.8s apply concealer, then 60.6s'
        >>> [(round(s.start, 2), round(s.end, 2)) for s in p.segments]
        [(4.85, 21.82), (60.61, 60.61)]
    """
    _check_duration(duration)
    _check_num_time_tokens(num_time_tokens)
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    found, problems, pieces = _scan(text, duration, num_time_tokens)
    seconds_iter = iter(f.seconds for f in found)
    rendered = "".join(fmt.format(next(seconds_iter)) if p is _FORMAT_SENTINEL else p for p in pieces)
    return ParsedTimes(
        text=rendered,
        raw_text=text,
        segments=_pair(text, found),
        times=[f.seconds for f in found],
        problems=problems,
    )
