"""Readers of public temporal-grounding annotation formats into :class:`Annotation` records.

Every reader returns ``(records, problems)``. A problem is one message ``"line N: ..."`` naming the
line of the offending input; the record it concerns is skipped and reading goes on, so one bad
line never costs the rest of a file. Checks: numbers parse and are finite, ``end >= start``, and
the span lies in ``[0, duration]`` (values within ``tolerance`` seconds of a bound are clamped,
because some public files overshoot the video length by a frame).

Formats:

* Charades-STA ``*.txt``: ``VID START END##sentence`` per line, in seconds. The file has no
  durations, so a ``{video_id: seconds}`` mapping is required (:func:`load_durations` reads a JSON
  object or Charades' own ``Charades_v1_*.csv`` with its ``id`` and ``length`` columns).
* ActivityNet Captions: ``{vid: {"duration", "timestamps": [[s, e], ...], "sentences": [...]}}``
  in seconds. ActivityNet-RTL's training file ``{vid: {"duration", "QA": [{"q", "a"}]}}``, whose
  answers start with two timestamps in seconds written ``<12.5>``, is read by the same function.
* DiDeMo: ``[{"video", "description", "times": [[a, b], ...], "num_segments"?}]`` where ``a, b``
  are 5-second chunk indices from several annotators; the span of ``(a, b)`` is
  ``[5a, min(5(b + 1), duration)]`` (LisaAnne/LocalizingMoments README). We take the consensus:
  the most frequent pair, ties going to the earliest listed. Without a duration mapping the
  duration is ``5 * num_segments`` (default 6, i.e. 30 s, the length DiDeMo annotated).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lita_serve.config import DEFAULT_NUM_TIME_TOKENS
from lita_serve.data.train_format import Annotation, to_train_entries
from lita_serve.errors import InvalidInputError

__all__ = [
    "Annotation", "FORMATS", "read_charades_sta", "read_activitynet", "read_didemo",
    "load_durations", "read_annotations", "convert_annotations",
]

FORMATS = ("charades-sta", "activitynet", "didemo")
DIDEMO_CHUNK_S = 5.0
DIDEMO_DEFAULT_SEGMENTS = 6
_RTL_TIMESTAMP = re.compile(r"<(\d*\.\d+|\d+\.?)>")  # LITA writes seconds in answers as <12.5>

Result = tuple[list[Annotation], list[str]]


class _Skip(InvalidInputError):
    """One record is unusable; the message becomes a problem entry."""


# --- value checks ---------------------------------------------------------------------------
def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise _Skip(f"{what} is not a number: {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _Skip(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise _Skip(f"{what} is not finite: {value!r}")
    return x


def _duration(value: Any) -> float:
    d = _number(value, "duration")
    if d <= 0:
        raise _Skip(f"duration must be positive, got {d}")
    return d


def _span(start: float, end: float, duration: float, tolerance: float) -> tuple[float, float]:
    if end < start:
        raise _Skip(f"end {end} < start {start}")
    if start < -tolerance or end > duration + tolerance:
        raise _Skip(f"span [{start}, {end}] outside [0, {duration}]")
    return max(start, 0.0), min(end, duration)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Skip(f"{what} is missing or empty")
    return value.strip()


# --- JSON with line numbers -----------------------------------------------------------------
def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _top_level(text: str, kind: type) -> Iterator[tuple[int, Any, Any]]:
    """Yield ``(line, key_or_index, value)`` for each member of the top-level JSON object/array.

    The standard decoder gives no positions, so members are decoded one at a time with
    ``raw_decode``; a syntax error raises :class:`json.JSONDecodeError` (it carries the line).
    """
    decoder = json.JSONDecoder()
    i = _skip_ws(text, 0)
    opener, closer = ("{", "}") if kind is dict else ("[", "]")
    if not text.startswith(opener, i):
        raise _Skip(f"expected a JSON {'object' if kind is dict else 'array'} at the top level")
    i = _skip_ws(text, i + 1)
    index = 0
    while i < len(text) and text[i] != closer:
        key: Any = index
        if kind is dict:
            key, i = decoder.raw_decode(text, i)
            i = _skip_ws(text, i)
            if not text.startswith(":", i):
                raise json.JSONDecodeError("expected ':'", text, i)
            i = _skip_ws(text, i + 1)
        line = _line_of(text, i)
        value, i = decoder.raw_decode(text, i)
        yield line, key, value
        index += 1
        i = _skip_ws(text, i)
        if text.startswith(",", i):
            i = _skip_ws(text, i + 1)
        elif not text.startswith(closer, i):
            raise json.JSONDecodeError(f"expected ',' or '{closer}'", text, i)
    if i >= len(text):
        raise json.JSONDecodeError(f"missing '{closer}'", text, i)


def _read_json_members(path: Path, kind: type, problems: list[str]) -> Iterator[tuple[int, Any, Any]]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        yield from _top_level(text, kind)
    except json.JSONDecodeError as e:
        problems.append(f"line {e.lineno}: invalid JSON: {e.msg}; the rest of the file is skipped")
    except _Skip as e:
        problems.append(f"line 1: {e}")


# --- durations ------------------------------------------------------------------------------
def load_durations(path: Path) -> dict[str, float]:
    """Read ``{video_id: seconds}`` from a JSON object or a CSV with ``id`` and ``length`` columns."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"id", "length"} <= set(reader.fieldnames):
                raise InvalidInputError(f"{path}: a durations CSV needs 'id' and 'length' columns")
            return {row["id"]: float(row["length"]) for row in reader if row.get("length")}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: durations JSON must be an object {{video_id: seconds}}")
    return {str(k): float(v) for k, v in data.items()}


# --- Charades-STA ---------------------------------------------------------------------------
def _charades_line(line: str, durations: Mapping[str, float], video_ext: str, tolerance: float) -> Annotation:
    head, sep, sentence = line.partition("##")
    if not sep:
        raise _Skip("missing '##' between the span and the sentence")
    fields = head.split()
    if len(fields) != 3:
        raise _Skip(f"expected 'VID START END' before '##', got {head.strip()!r}")
    vid = fields[0]
    start, end = _number(fields[1], "start"), _number(fields[2], "end")
    if vid not in durations:
        raise _Skip(f"no duration for video {vid!r}")
    duration = _duration(durations[vid])
    start, end = _span(start, end, duration, tolerance)
    return Annotation(video=vid + video_ext, duration=duration, start=start, end=end,
                      text=_text(sentence, "sentence"), video_id=vid)


def read_charades_sta(path: Path, durations: Mapping[str, float], video_ext: str = ".mp4",
                      tolerance: float = 0.0) -> Result:
    """Read a Charades-STA ``.txt`` file; ``durations`` maps video id -> seconds."""
    records: list[Annotation] = []
    problems: list[str] = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(_charades_line(line, durations, video_ext, tolerance))
        except _Skip as e:
            problems.append(f"line {n}: {e}")
    return records, problems


# --- ActivityNet Captions / ActivityNet-RTL --------------------------------------------------
def _activitynet_captions(vid: str, entry: dict, duration: float, video_ext: str, tolerance: float,
                          line: int, problems: list[str]) -> list[Annotation]:
    stamps, sentences = entry.get("timestamps"), entry.get("sentences")
    if not isinstance(stamps, list) or not isinstance(sentences, list):
        raise _Skip(f"video {vid!r}: 'timestamps' and 'sentences' must be lists")
    if len(stamps) != len(sentences):
        problems.append(f"line {line}: video {vid!r}: {len(stamps)} timestamps but {len(sentences)} "
                        f"sentences; extra items skipped")
    out = []
    for k, (stamp, sentence) in enumerate(zip(stamps, sentences)):
        try:
            if not isinstance(stamp, list) or len(stamp) != 2:
                raise _Skip(f"timestamp is not a [start, end] pair: {stamp!r}")
            start, end = _span(_number(stamp[0], "start"), _number(stamp[1], "end"), duration, tolerance)
            out.append(Annotation(video=vid + video_ext, duration=duration, start=start, end=end,
                                  text=_text(sentence, "sentence"), video_id=vid))
        except _Skip as e:
            problems.append(f"line {line}: video {vid!r} event {k}: {e}")
    return out


def _rtl_qa(vid: str, entry: dict, duration: float, video_ext: str, tolerance: float,
            line: int, problems: list[str]) -> list[Annotation]:
    qa = entry.get("QA")
    if not isinstance(qa, list):
        raise _Skip(f"video {vid!r}: 'QA' must be a list")
    out = []
    for k, item in enumerate(qa):
        try:
            if not isinstance(item, dict):
                raise _Skip("QA item is not an object")
            question, answer = _text(item.get("q"), "question"), _text(item.get("a"), "answer")
            stamps = list(_RTL_TIMESTAMP.finditer(answer))
            if len(stamps) < 2:
                raise _Skip("answer has fewer than two <seconds> timestamps")
            start, end = _span(float(stamps[0].group(1)), float(stamps[1].group(1)), duration, tolerance)
            explanation = (answer[:stamps[0].start()] + answer[stamps[1].end():]).strip()
            out.append(Annotation(video=vid + video_ext, duration=duration, start=start, end=end,
                                  text=question, video_id=vid, question=question, explanation=explanation))
        except _Skip as e:
            problems.append(f"line {line}: video {vid!r} QA {k}: {e}")
    return out


def read_activitynet(path: Path, video_ext: str = ".mp4", tolerance: float = 0.0) -> Result:
    """Read ActivityNet Captions (or ActivityNet-RTL ``QA``) JSON keyed by video id."""
    records: list[Annotation] = []
    problems: list[str] = []
    for line, vid, entry in _read_json_members(path, dict, problems):
        try:
            if not isinstance(entry, dict):
                raise _Skip(f"video {vid!r}: entry is not an object")
            duration = _duration(entry.get("duration"))
            read = _rtl_qa if "QA" in entry else _activitynet_captions
            records.extend(read(vid, entry, duration, video_ext, tolerance, line, problems))
        except _Skip as e:
            problems.append(f"line {line}: {e}")
    return records, problems


# --- DiDeMo ---------------------------------------------------------------------------------
def _didemo_consensus(times: Any, num_segments: int) -> tuple[int, int]:
    if not isinstance(times, list) or not times:
        raise _Skip("'times' is missing or empty")
    pairs = []
    for t in times:
        if not isinstance(t, list) or len(t) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in t):
            raise _Skip(f"'times' item is not a pair of chunk indices: {t!r}")
        a, b = t
        if not 0 <= a <= b < num_segments:
            raise _Skip(f"chunk pair {t} not within 0 <= a <= b < {num_segments}")
        pairs.append((a, b))
    counts = Counter(pairs)
    best = max(counts.values())
    return next(p for p in pairs if counts[p] == best)


def _didemo_entry(entry: Any, durations: Mapping[str, float] | None, tolerance: float) -> Annotation:
    if not isinstance(entry, dict):
        raise _Skip("entry is not an object")
    video = _text(entry.get("video"), "video")
    video_id = Path(video).stem
    num_segments = entry.get("num_segments", DIDEMO_DEFAULT_SEGMENTS)
    if isinstance(num_segments, bool) or not isinstance(num_segments, int) or num_segments < 1:
        raise _Skip(f"num_segments is not a positive integer: {num_segments!r}")
    a, b = _didemo_consensus(entry.get("times"), num_segments)
    if durations is not None and video_id in durations:
        duration = _duration(durations[video_id])
    else:
        duration = DIDEMO_CHUNK_S * num_segments
    start, end = a * DIDEMO_CHUNK_S, min((b + 1) * DIDEMO_CHUNK_S, duration)
    start, end = _span(start, end, duration, tolerance)
    return Annotation(video=video, duration=duration, start=start, end=end,
                      text=_text(entry.get("description"), "description"), video_id=video_id)


def read_didemo(path: Path, durations: Mapping[str, float] | None = None, tolerance: float = 0.0) -> Result:
    """Read a DiDeMo JSON list; chunk indices become seconds (see the module docstring)."""
    records: list[Annotation] = []
    problems: list[str] = []
    for line, index, entry in _read_json_members(path, list, problems):
        try:
            records.append(_didemo_entry(entry, durations, tolerance))
        except _Skip as e:
            problems.append(f"line {line}: item {index}: {e}")
    return records, problems


# --- dispatch and the conversion command ----------------------------------------------------
def read_annotations(fmt: str, path: Path, durations: Mapping[str, float] | None = None,
                     video_ext: str = ".mp4", tolerance: float = 0.0) -> Result:
    """Read ``path`` in one of :data:`FORMATS`."""
    if fmt == "charades-sta":
        if durations is None:
            raise InvalidInputError("charades-sta needs a durations file: the .txt holds no video lengths")
        return read_charades_sta(path, durations, video_ext, tolerance)
    if fmt == "activitynet":
        return read_activitynet(path, video_ext, tolerance)
    if fmt == "didemo":
        return read_didemo(path, durations, tolerance)
    raise InvalidInputError(f"unknown annotation format {fmt!r}; known: {list(FORMATS)}")


def convert_annotations(fmt: str, input: Path, output: Path, task: str, durations: Path | None,
                        num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS, *, seed: int = 0,
                        video_ext: str = ".mp4", tolerance: float = 0.0) -> dict[str, Any]:
    """Read public annotations, write LITA ``train.json`` entries for ``task``, return a summary.

    The summary holds counts (``records``, ``videos``, ``entries``, ``problem_count``) and the problem
    messages, so a command line can print them and fail on a file that yielded nothing.
    """
    mapping = load_durations(durations) if durations is not None else None
    records, problems = read_annotations(fmt, Path(input), mapping, video_ext, tolerance)
    entries = to_train_entries(records, task, seed=seed, num_time_tokens=num_time_tokens)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    return {
        "format": fmt, "task": task, "input": str(input), "output": str(output),
        "records": len(records), "videos": len({r.video_id for r in records}),
        "entries": len(entries), "problem_count": len(problems), "problems": problems,
    }
