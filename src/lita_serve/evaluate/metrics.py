"""Temporal localization metrics: IoU, mIoU, Recall@1 at IoU thresholds, span extraction.

The protocol follows LITA's ActivityNet-RTL evaluation (NVlabs/LITA ``lita/eval/eval_model_rtl.py``):

* the first two timestamps of an answer form the predicted span, ordered ``(min, max)`` and each
  clamped to ``[0, duration]``;
* an answer with fewer than two timestamps is scored as the whole video ``[0, duration]``
  (``parse_start_end_timestamps(..., strict=False)``); the "strict" policy used by TimeChat /
  VTimeLLM-style evaluations scores it IoU 0 instead;
* IoU is ``intersection / (len1 + len2 - intersection)``, 0 when the union is empty;
* "precision@0.5" there is ``IoU >= 0.5``; we report it as Recall@1 (one answer per question) at
  0.3, 0.5 and 0.7;
* metrics are averaged per video first, then across videos (``average="video"``); the plain mean
  over questions (``average="question"``) is available for comparison with other papers.

Answers may hold time tokens ``<tK>`` (converted with :mod:`lita_serve.text.time_tokens`), LITA's
rendered seconds ``<12.5>``, or plain seconds with a unit: ``12.3s``, ``12.3 - 20.0 seconds``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lita_serve.config import DEFAULT_NUM_TIME_TOKENS
from lita_serve.errors import InvalidInputError
from lita_serve.text.time_tokens import parse_time_tokens

Span = tuple[float, float]

RECALL_THRESHOLDS = (0.3, 0.5, 0.7)
POLICIES = ("lita", "strict")
AVERAGES = ("video", "question")

_NUM = r"(\d+(?:\.\d+)?|\.\d+)"
# LITA renders a decoded time token as "<12.34>" before parsing (eval_model_rtl.py).
_BRACKETED_SECONDS = re.compile(r"<(\d*\.\d+|\d+\.?)>")
# "12.3s", "12.3 sec", "12.3 - 20.0 seconds", "5 to 10 seconds": the unit may follow only the
# second number of a range.
_SECONDS_WITH_UNIT = re.compile(
    _NUM + r"(?:\s*(?:-|\u2013|\u2014|to|and)\s*" + _NUM + r")?\s*(?:seconds?|secs?|s)\b", re.IGNORECASE)


def temporal_iou(a: Span, b: Span) -> float:
    """Intersection over union of two ``(start, end)`` spans in seconds; 0 for an empty union."""
    for s in (a, b):
        if s[1] < s[0]:
            raise InvalidInputError(f"span {s} has end < start")
    inter = max(min(a[1], b[1]) - max(a[0], b[0]), 0.0)
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def recall_at_1(ious: Iterable[float], threshold: float) -> float:
    """Fraction of questions whose single answer reaches ``IoU >= threshold`` (0 for no questions)."""
    values = list(ious)
    return sum(1.0 for x in values if x >= threshold) / len(values) if values else 0.0


def hit(iou: float, threshold: float) -> float:
    """1.0 when ``iou >= threshold`` else 0.0: Recall@1 of one question."""
    return 1.0 if iou >= threshold else 0.0


def average(values: Sequence[float], videos: Sequence[str], how: str = "video") -> float:
    """Mean of per-question ``values``: over questions, or per video first then over videos."""
    if how not in AVERAGES:
        raise InvalidInputError(f"unknown average {how!r}; known: {list(AVERAGES)}")
    if len(values) != len(videos):
        raise InvalidInputError(f"{len(values)} values but {len(videos)} video ids")
    if not values:
        return 0.0
    if how == "question":
        return sum(values) / len(values)
    per_video: dict[str, list[float]] = {}
    for v, vid in zip(values, videos):
        per_video.setdefault(vid, []).append(v)
    return sum(sum(g) / len(g) for g in per_video.values()) / len(per_video)


def answer_times(text: str, duration: float, num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS) -> list[float]:
    """Every timestamp of an answer, in seconds, in order of appearance.

    Time tokens win when present; otherwise LITA's ``<seconds>`` and unit-suffixed seconds are
    read in text order. Token times are rounded to 0.01 s as LITA's evaluation renders them.
    """
    parsed = parse_time_tokens(text or "", duration, num_time_tokens)
    if parsed.times:
        return [round(t, 2) for t in parsed.times]
    found: list[tuple[int, float]] = [(m.start(), float(m.group(1))) for m in _BRACKETED_SECONDS.finditer(text or "")]
    for m in _SECONDS_WITH_UNIT.finditer(text or ""):
        found.append((m.start(1), float(m.group(1))))
        if m.group(2) is not None:
            found.append((m.start(2), float(m.group(2))))
    return [t for _, t in sorted(found)]


@dataclass(frozen=True)
class SpanPolicy:
    """How an answer becomes a scored span.

    ``"lita"``: a missing span (fewer than two timestamps) counts as the whole video;
    ``"strict"``: a missing span scores IoU 0.
    """

    name: str = "lita"
    num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise InvalidInputError(f"unknown span policy {self.name!r}; known: {list(POLICIES)}")

    def extract(self, text: str, duration: float) -> Span | None:
        """The first two timestamps as ``(min, max)`` clamped to ``[0, duration]``, or None."""
        times = answer_times(text, duration, self.num_time_tokens)
        if len(times) < 2:
            return None
        a, b = (min(max(t, 0.0), duration) for t in times[:2])
        return (min(a, b), max(a, b))

    def resolve(self, span: Span | None, duration: float) -> Span | None:
        """The span that is scored: the whole video for a missing span under "lita"."""
        if span is None and self.name == "lita":
            return (0.0, float(duration))
        return span

    def iou(self, span: Span | None, gt: Span, duration: float) -> float:
        scored = self.resolve(span, duration)
        return 0.0 if scored is None else temporal_iou(scored, gt)


def random_segment(duration: float, rng: random.Random) -> Span:
    """A segment whose two ends are uniform on ``[0, duration]``, ordered."""
    a, b = rng.uniform(0.0, duration), rng.uniform(0.0, duration)
    return (min(a, b), max(a, b))


def random_baseline_ious(gts: Sequence[Span], durations: Sequence[float], seed: int = 0) -> list[float]:
    """IoU of one seeded random segment per question against its ground truth."""
    rng = random.Random(seed)
    return [temporal_iou(random_segment(d, rng), gt) for gt, d in zip(gts, durations)]
