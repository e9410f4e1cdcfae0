"""LITA's finetuning ``train.json``: neutral annotation records -> time-token conversations.

The format is the LLaVA conversation list LITA and NeMo train on (NVlabs/LITA
``lita/dataset/{event_loc,dvc,temporal_reasoning}_dataset.py``; NeMo
``scripts/multimodal_dataset_conversion/convert_dvc_dataset_for_training.py``)::

    [{"id": "v_abc", "video": "v_abc.mp4", "durations": 125.0,
      "conversations": [{"from": "human", "value": "<video>\\nWhen does ... ?"},
                        {"from": "gpt", "value": "<t12> <t40>"}]}, ...]

Every timestamp becomes a time token ``<tK>`` with ``K = round((N - 1) * t / duration)``
(:func:`lita_serve.text.time_tokens.seconds_to_token`). The ``<video>`` placeholder sits on the left
of the question, followed by a newline, as both references write it. NeMo names the duration
key ``durations`` (a single float); we keep that spelling so its dataloader reads our files.

Question templates are small fixed lists; the choice is made with a seeded :class:`random.Random`
so the same input and seed always give the same file.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lita_serve.config import DEFAULT_NUM_TIME_TOKENS
from lita_serve.errors import InvalidInputError
from lita_serve.text.time_tokens import seconds_to_token

VIDEO_PLACEHOLDER = "<video>"

TASKS = ("event_localization", "dense_captioning", "event_classification", "reasoning")

# Event localization: LITA's question wording (event_loc_dataset.py), so a finetuned model sees
# the phrasing it was trained on. "%s" is the event description.
EVENT_LOC_QUESTIONS = (
    'When does "%s" happen in the video?',
    'At what point in the video does "%s" happen?',
    'When is "%s" depicted in the video?',
    'At what time in the video does "%s" take place?',
)
EVENT_LOC_INSTRUCTIONS = (
    "Answer the question only using start and end timestamps.",
    "Provide a response using only start and end timestamps.",
    "Convey your answer using start and end timestamps exclusively.",
)
# Dense captioning: a description request plus a timestamp instruction (dvc_dataset.py).
CAPTION_QUESTIONS = (
    "Provide a detailed description of the given video.",
    "Describe the provided video in detail.",
    "Summarize the visual content of the video.",
    "Write a informative summary of the video.",
)
CAPTION_INSTRUCTIONS = (
    "Each sentence should begin with the start and end timestamps.",
    "At the beginning of each sentence, include the start and end timestamps.",
    "Prepend each sentence with its start and end timestamps.",
)
# Event classification: the inverse of localization, "what happens in this span?".
CLASSIFICATION_QUESTIONS = (
    "What is happening from {start} to {end}?",
    "Describe what happens in the video between {start} and {end}.",
    "What event takes place from {start} to {end} in the video?",
)


@dataclass(frozen=True)
class Annotation:
    """One temporally grounded sentence of one video (seconds, ``0 <= start <= end <= duration``).

    ``question``/``explanation`` are set only by reasoning data (ActivityNet-RTL QA), where the
    span answers a free-form question and the explanation follows the two timestamps.
    """

    video: str
    duration: float
    start: float
    end: float
    text: str
    video_id: str
    question: str = ""
    explanation: str = ""


def _human(question: str) -> dict[str, str]:
    return {"from": "human", "value": f"{VIDEO_PLACEHOLDER}\n{question.strip()}"}


def _gpt(answer: str) -> dict[str, str]:
    return {"from": "gpt", "value": answer.strip()}


def _span_tokens(a: Annotation, num_time_tokens: int) -> tuple[str, str]:
    return (seconds_to_token(a.start, a.duration, num_time_tokens),
            seconds_to_token(a.end, a.duration, num_time_tokens))


def _event_phrase(text: str) -> str:
    """Sentence -> phrase for quoting inside a question: trailing period dropped, first letter lowered."""
    phrase = text.strip().rstrip(".")
    return phrase[:1].lower() + phrase[1:] if len(phrase) > 1 else phrase


def _entry(ident: str, a: Annotation, turns: list[dict[str, str]]) -> dict[str, Any]:
    return {"id": ident, "video": a.video, "conversations": turns, "durations": a.duration}


def event_localization(a: Annotation, rng: random.Random, ident: str,
                       num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS) -> dict[str, Any]:
    """'When does X happen?' -> '<ta> <tb>'."""
    question = rng.choice(EVENT_LOC_QUESTIONS) % _event_phrase(a.text) + " " + rng.choice(EVENT_LOC_INSTRUCTIONS)
    start, end = _span_tokens(a, num_time_tokens)
    return _entry(ident, a, [_human(question), _gpt(f"{start} {end}")])


def event_classification(a: Annotation, rng: random.Random, ident: str,
                         num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS) -> dict[str, Any]:
    """'What is happening from <ta> to <tb>?' -> the caption."""
    start, end = _span_tokens(a, num_time_tokens)
    question = rng.choice(CLASSIFICATION_QUESTIONS).format(start=start, end=end)
    return _entry(ident, a, [_human(question), _gpt(a.text)])


def reasoning(a: Annotation, rng: random.Random, ident: str,
              num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS) -> dict[str, Any]:
    """Reasoning temporal localization: free-form question -> '<ta> <tb> explanation'."""
    if not a.question:
        raise InvalidInputError(f"reasoning needs a question; annotation of {a.video_id!r} has none")
    start, end = _span_tokens(a, num_time_tokens)
    return _entry(ident, a, [_human(a.question), _gpt(f"{start} {end} {a.explanation}")])


def dense_captioning(video_annotations: Sequence[Annotation], rng: random.Random, ident: str,
                     num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS) -> dict[str, Any]:
    """All events of one video, by start time -> '<ta> <tb> caption. <tc> <td> caption.'."""
    if not video_annotations:
        raise InvalidInputError("dense captioning needs at least one annotation")
    ordered = sorted(video_annotations, key=lambda x: (x.start, x.end))
    parts = []
    for a in ordered:
        start, end = _span_tokens(a, num_time_tokens)
        parts.append(f"{start} {end} {a.text.strip()}")
    question = rng.choice(CAPTION_QUESTIONS) + " " + rng.choice(CAPTION_INSTRUCTIONS)
    return _entry(ident, ordered[0], [_human(question), _gpt(" ".join(parts))])


def _group_by_video(records: Iterable[Annotation]) -> dict[str, list[Annotation]]:
    groups: dict[str, list[Annotation]] = {}
    for a in records:
        groups.setdefault(a.video_id, []).append(a)
    return groups


def to_train_entries(records: Sequence[Annotation], task: str, seed: int = 0,
                     num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS) -> list[dict[str, Any]]:
    """Convert annotations into ``train.json`` entries for one task.

    Per-sentence tasks give one entry per annotation (id ``<video_id>_<n>``, n counting within the
    video); dense captioning gives one entry per video (id ``<video_id>``).
    """
    if task not in TASKS:
        raise InvalidInputError(f"unknown task {task!r}; known: {list(TASKS)}")
    rng = random.Random(seed)
    groups = _group_by_video(records)
    if task == "dense_captioning":
        return [dense_captioning(g, rng, vid, num_time_tokens) for vid, g in groups.items()]
    build = {"event_localization": event_localization, "event_classification": event_classification,
             "reasoning": reasoning}[task]
    entries = []
    for vid, group in groups.items():
        for n, a in enumerate(group):
            entries.append(build(a, rng, f"{vid}_{n}", num_time_tokens))
    return entries
