"""Score temporal-localization predictions against ground truth, per category.

:func:`score` takes records ``{question_id, video, duration, category, gt: (start, end),
prediction_text}`` and returns a :class:`Report` (text table, JSON, one-line summary) with mIoU
and Recall@1 at IoU 0.3/0.5/0.7 next to a seeded random-segment baseline scored the same way.

Ground-truth readers:

* the prompt file (JSONL, NeMo's LITA inference format plus ground truth): ``video``, ``text``
  (the question), ``duration``, ``question_id``, ``category``, and ``start``/``end`` or
  ``timestamps`` (``[s, e]`` or ``[[s, e]]``) in seconds;
* ActivityNet-RTL's evaluation file (LITA ``annot_val_1_q229.json``): a JSON list of
  ``{vid, question_id, question, answer, duration}``. LITA writes the answer's span as seconds in
  angle brackets, ``"<12.5> <30.1> explanation"``, and its evaluation parses it strictly (two
  timestamps required); we do the same. LITA loads the video as ``v_<vid>``.

Predictions are joined to ground truth by ``question_id`` (:func:`read_predictions`,
:func:`attach_predictions`); running the model is not this module's job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lita_serve.errors import InvalidInputError
from lita_serve.evaluate.metrics import (
    AVERAGES, RECALL_THRESHOLDS, Span, SpanPolicy, answer_times, average, hit, random_baseline_ious,
)

ALL = "all"
DEFAULT_CATEGORY = "default"
RTL_CATEGORY = "rtl"
PREDICTION_KEYS = ("prediction_text", "prediction", "text", "answer", "output")


@dataclass(frozen=True)
class ScoredItem:
    """One question after scoring; ``span`` is None when the answer held no span."""

    question_id: str
    video: str
    category: str
    duration: float
    gt: Span
    prediction_text: str
    span: Span | None
    iou: float
    random_iou: float


def _metrics(items: Sequence[ScoredItem], how: str) -> dict[str, Any]:
    videos = [it.video for it in items]
    out: dict[str, Any] = {
        "count": len(items),
        "videos": len(set(videos)),
        "missing_span": sum(1 for it in items if it.span is None),
        "mIoU": average([it.iou for it in items], videos, how),
    }
    for t in RECALL_THRESHOLDS:
        out[f"R@{t}"] = average([hit(it.iou, t) for it in items], videos, how)
    out["random_mIoU"] = average([it.random_iou for it in items], videos, how)
    for t in RECALL_THRESHOLDS:
        out[f"random_R@{t}"] = average([hit(it.random_iou, t) for it in items], videos, how)
    return out


@dataclass
class Report:
    """Scores of one run: per-category and overall metrics under one policy and averaging."""

    items: list[ScoredItem]
    policy: str
    average: str
    seed: int
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = sorted({it.category for it in self.items})
        self.categories = {c: _metrics([it for it in self.items if it.category == c], self.average) for c in names}
        self.categories[ALL] = _metrics(self.items, self.average)

    @property
    def overall(self) -> dict[str, Any]:
        return self.categories[ALL]

    def summary_line(self) -> str:
        """``mIoU <ours> random <baseline> R@0.5 <ours>``, three decimals each."""
        o = self.overall
        return f"mIoU {o['mIoU']:.3f} random {o['random_mIoU']:.3f} R@0.5 {o['R@0.5']:.3f}"

    def table(self) -> str:
        """A fixed-width text table, one row per category and a final ``all`` row."""
        cols = ["n", "videos", "no span", "mIoU"] + [f"R@{t}" for t in RECALL_THRESHOLDS] + ["rand mIoU", "rand R@0.5"]
        keys = ["count", "videos", "missing_span", "mIoU"] + [f"R@{t}" for t in RECALL_THRESHOLDS] + \
               ["random_mIoU", "random_R@0.5"]
        width = max([len("category")] + [len(c) for c in self.categories])
        lines = [f"{'category':<{width}}  " + "  ".join(f"{c:>10}" for c in cols)]
        for name, m in self.categories.items():
            cells = [f"{m[k]:>10d}" if isinstance(m[k], int) else f"{m[k]:>10.3f}" for k in keys]
            lines.append(f"{name:<{width}}  " + "  ".join(cells))
        lines.append(f"(policy={self.policy}, average={self.average}, random seed={self.seed})")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "average": self.average, "seed": self.seed,
            "summary": self.summary_line(),
            "categories": self.categories,
            "items": [{"question_id": it.question_id, "video": it.video, "category": it.category,
                       "duration": it.duration, "gt": list(it.gt), "prediction_text": it.prediction_text,
                       "span": None if it.span is None else list(it.span), "iou": it.iou,
                       "random_iou": it.random_iou} for it in self.items],
        }


# --- scoring --------------------------------------------------------------------------------
def _gt_span(value: Any, qid: str, duration: float) -> Span:
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple)):
        value = value[0]
    try:
        s, e = (float(x) for x in value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"question {qid}: ground truth must be (start, end), got {value!r}") from None
    if not 0.0 <= s <= e <= duration:
        raise InvalidInputError(f"question {qid}: ground truth ({s}, {e}) is not within [0, {duration}]")
    return (s, e)


def _duration(value: Any, qid: str) -> float:
    try:
        d = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"question {qid}: duration must be a number, got {value!r}") from None
    if not d > 0 or d == float("inf"):
        raise InvalidInputError(f"question {qid}: duration must be > 0, got {value!r}")
    return d


def score(records: Sequence[Mapping[str, Any]], policy: SpanPolicy | str = "lita",
          average: str = "video", seed: int = 0) -> Report:
    """Score every record; raises :class:`InvalidInputError` naming the first malformed record."""
    if isinstance(policy, str):
        policy = SpanPolicy(policy)
    if average not in AVERAGES:
        raise InvalidInputError(f"unknown average {average!r}; known: {list(AVERAGES)}")
    prepared = []
    for i, r in enumerate(records):
        qid = str(r.get("question_id", i))
        missing = [k for k in ("video", "duration", "gt") if k not in r]
        if missing:
            raise InvalidInputError(f"question {qid}: missing {missing}")
        duration = _duration(r["duration"], qid)
        prepared.append((qid, str(r["video"]), str(r.get("category") or DEFAULT_CATEGORY), duration,
                         _gt_span(r["gt"], qid, duration), str(r.get("prediction_text") or "")))
    randoms = random_baseline_ious([p[4] for p in prepared], [p[3] for p in prepared], seed)
    items = []
    for (qid, video, category, duration, gt, text), rand in zip(prepared, randoms):
        span = policy.extract(text, duration)
        items.append(ScoredItem(qid, video, category, duration, gt, text, span,
                                policy.iou(span, gt, duration), rand))
    return Report(items=items, policy=policy.name, average=average, seed=seed)


# --- ground truth and prediction files --------------------------------------------------------
def _load_json_or_jsonl(path: Path) -> list[Any]:
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = json.loads(text)
        return data
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InvalidInputError(f"{path}: line {n}: invalid JSON: {e.msg}") from None
    return rows


def _prompt_gt(row: Mapping[str, Any]) -> Any:
    if "start" in row and "end" in row:
        return (row["start"], row["end"])
    if "timestamps" in row:
        return row["timestamps"]
    return None


def read_prompt_file(path: Path) -> list[dict[str, Any]]:
    """Ground-truth records from a prompt JSONL; rows without ground truth are rejected."""
    out = []
    for n, row in enumerate(_load_json_or_jsonl(path), start=1):
        if not isinstance(row, dict):
            raise InvalidInputError(f"{path}: row {n} is not an object")
        gt = _prompt_gt(row)
        if gt is None:
            raise InvalidInputError(f"{path}: row {n} has no ground truth ('start'/'end' or 'timestamps')")
        out.append({"question_id": str(row.get("question_id", n - 1)), "video": row.get("video"),
                    "question": row.get("text", ""), "duration": row.get("duration"),
                    "category": row.get("category") or DEFAULT_CATEGORY, "gt": gt})
    return out


def read_rtl_eval(path: Path, video_prefix: str = "v_", video_ext: str = ".mp4") -> list[dict[str, Any]]:
    """Ground-truth records from ActivityNet-RTL's evaluation JSON (answers hold ``<seconds>``)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise InvalidInputError(f"{path}: the RTL evaluation file must be a JSON list")
    out = []
    for n, row in enumerate(data):
        qid = str(row.get("question_id", n)) if isinstance(row, dict) else str(n)
        if not isinstance(row, dict) or not {"vid", "question", "answer", "duration"} <= set(row):
            raise InvalidInputError(f"{path}: item {n} needs vid, question, answer and duration")
        duration = _duration(row["duration"], qid)
        times = answer_times(str(row["answer"]), duration)
        if len(times) < 2:
            raise InvalidInputError(f"{path}: question {qid}: answer has fewer than two timestamps")
        a, b = (min(max(t, 0.0), duration) for t in times[:2])
        out.append({"question_id": qid, "video": f"{video_prefix}{row['vid']}{video_ext}",
                    "question": row["question"], "duration": duration, "category": RTL_CATEGORY,
                    "gt": (min(a, b), max(a, b))})
    return out


def write_prompt_file(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write ground-truth records as a prompt JSONL that :func:`read_prompt_file` reads back."""
    lines = [json.dumps({"video": r["video"], "text": r.get("question", ""), "duration": r["duration"],
                         "question_id": r["question_id"], "category": r.get("category", DEFAULT_CATEGORY),
                         "start": float(r["gt"][0]), "end": float(r["gt"][1])}) for r in records]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_predictions(path: Path) -> dict[str, str]:
    """``{question_id: answer text}`` from a JSON list or JSONL; the text key is the first of
    ``prediction_text``, ``prediction``, ``text``, ``answer``, ``output`` present."""
    out = {}
    for n, row in enumerate(_load_json_or_jsonl(path), start=1):
        if not isinstance(row, dict) or "question_id" not in row:
            raise InvalidInputError(f"{path}: row {n} needs a question_id")
        key = next((k for k in PREDICTION_KEYS if k in row), None)
        if key is None:
            raise InvalidInputError(f"{path}: row {n} has none of {list(PREDICTION_KEYS)}")
        out[str(row["question_id"])] = str(row[key] or "")
    return out


def attach_predictions(gt_records: Sequence[Mapping[str, Any]], predictions: Mapping[str, str],
                       ) -> list[dict[str, Any]]:
    """Join predictions to ground truth by question id; a question without one scores as no answer."""
    return [{**r, "prediction_text": predictions.get(str(r["question_id"]), "")} for r in gt_records]
