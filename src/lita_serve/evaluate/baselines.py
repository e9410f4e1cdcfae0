"""Answers that look at no video, scored like the model: what a localizer has to beat.

* ``random``: a seeded random segment per question (already in every :class:`Report`);
* ``whole video``: the span ``(0, duration)``, which overlaps every event;
* ``mean span``: the training set's mean relative span (mean relative start, mean relative
  end) scaled to each video's duration — the best constant answer a model could learn from the
  answer distribution alone, without looking.

Each is scored per question with the same IoU and averaged the same way as the report it is
set beside, per category and overall.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from lita_serve.evaluate.metrics import Span, average, hit, temporal_iou
from lita_serve.evaluate.scorer import ALL, Report, ScoredItem

RANDOM = "random"
WHOLE_VIDEO = "whole video"
MEAN_SPAN = "mean span"
BASELINES = (RANDOM, WHOLE_VIDEO, MEAN_SPAN)


def mean_relative_span(spans: Iterable[tuple[float, float, float]]) -> tuple[float, float]:
    """Mean ``(start / duration, end / duration)`` over ``(start_s, end_s, duration_s)`` triples."""
    starts, ends = [], []
    for start, end, duration in spans:
        starts.append(start / duration)
        ends.append(min(end, duration) / duration)
    if not starts:
        raise ValueError("no spans to average")
    return sum(starts) / len(starts), sum(ends) / len(ends)


def baseline_iou(name: str, item: ScoredItem, relative_span: tuple[float, float]) -> float:
    """IoU of baseline ``name``'s answer for ``item`` against its ground truth."""
    if name == RANDOM:
        return item.random_iou
    if name == WHOLE_VIDEO:
        span: Span = (0.0, item.duration)
    elif name == MEAN_SPAN:
        span = (relative_span[0] * item.duration, relative_span[1] * item.duration)
    else:
        raise ValueError(f"unknown baseline {name!r}; known: {BASELINES}")
    return temporal_iou(span, item.gt)


def _scores(items: Sequence[ScoredItem], how: str, relative_span: tuple[float, float]) -> dict[str, dict[str, float]]:
    videos = [it.video for it in items]
    out = {}
    for name in BASELINES:
        ious = [baseline_iou(name, it, relative_span) for it in items]
        out[name] = {"mIoU": average(ious, videos, how), "R@0.5": average([hit(i, 0.5) for i in ious], videos, how)}
    return out


def baseline_scores(report: Report, relative_span: tuple[float, float]) -> dict[str, dict[str, dict[str, float]]]:
    """``{category: {baseline: {"mIoU", "R@0.5"}}}`` for every category of ``report`` and ``all``."""
    out = {c: _scores([it for it in report.items if it.category == c], report.average, relative_span)
           for c in report.categories if c != ALL}
    out[ALL] = _scores(report.items, report.average, relative_span)
    return out


def baselines_line(scores: dict[str, dict[str, float]]) -> str:
    """``baselines mIoU (R@0.5): random 0.243 (0.183), whole video 0.310 (0.150), ...`` for one category."""
    return "baselines mIoU (R@0.5): " + ", ".join(
        f"{name} {scores[name]['mIoU']:.3f} ({scores[name]['R@0.5']:.3f})" for name in BASELINES)


def best_baseline(scores: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The strongest baseline by mIoU: ``{"name", "mIoU", "R@0.5"}``."""
    name = max(BASELINES, key=lambda n: scores[n]["mIoU"])
    return {"name": name, **scores[name]}
