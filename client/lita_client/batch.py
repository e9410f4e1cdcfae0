"""Answer a prompt file concurrently and write the answers as JSON Lines, in input order.

Prompt file: one JSON object per line with ``video`` (a path under the media base path),
``text`` (the question) and optional ``duration``, ``category``, ``question_id`` (default: the
1-based line number). Blank lines are skipped.

Output: one JSON object per prompt line, in the same order, keyed by ``question_id``::

    {"question_id": ..., "video": ..., "question": ..., "category": ...,   # echoed from the prompt
     "answer": ..., "raw_answer": ..., "segments": [[s, e], ...], "video_duration": ...,
     "num_input_tokens": ..., "num_output_tokens": ..., "stats": {...}}

A line that fails (bad JSON, missing field, missing / corrupt video, path outside the media
base, a server-side rejection) is written as ``{..., "error": message, "error_type": class}``
and the batch goes on.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from lita_client.answer import Answer
from lita_client.errors import InvalidRequestError, LitaClientError, VideoInputError
from lita_client.sdk import AsyncLitaClient
from lita_client.video_input import resolve_media_path

ECHOED = ("question_id", "video", "question", "category")


@dataclass(frozen=True)
class Prompt:
    """One prompt line; ``error`` is set when the line itself is unusable."""

    line: int  # 1-based line number in the prompt file
    question_id: Any
    video: Any = None
    question: Any = None
    duration: float | None = None
    category: Any = None
    error: str | None = None

    def echo(self) -> dict[str, Any]:
        record = {"question_id": self.question_id, "video": self.video, "question": self.question}
        if self.category is not None:
            record["category"] = self.category
        return record


@dataclass
class BatchSummary:
    """What a batch run did; ``failures`` holds ``(question_id, message)`` per failed line."""

    output: Path
    total: int = 0
    failures: list[tuple[Any, str]] = field(default_factory=list)
    # With several servers: {"address", "up", "requests"} per server (requests placed, retries included).
    servers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return self.total - len(self.failures)


def parse_prompt(line_no: int, line: str) -> Prompt:
    """A :class:`Prompt` from one line of the prompt file (with ``error`` set instead of raising)."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        return Prompt(line_no, line_no, error=f"line {line_no} is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return Prompt(line_no, line_no, error=f"line {line_no} is not a JSON object")
    prompt = Prompt(line_no, data.get("question_id", line_no), data.get("video"), data.get("text"),
                    data.get("duration"), data.get("category"))
    for name, value in (("video", prompt.video), ("text", prompt.question)):
        if not isinstance(value, str) or not value:
            return Prompt(**{**prompt.__dict__, "error": f"line {line_no}: {name!r} must be a non-empty string"})
    if prompt.duration is not None and (isinstance(prompt.duration, bool)
                                        or not isinstance(prompt.duration, (int, float))):
        return Prompt(**{**prompt.__dict__, "error": f"line {line_no}: 'duration' must be a number"})
    return prompt


def read_prompts(path: str | Path) -> list[Prompt]:
    """Every non-blank line of the prompt file, parsed. OSError if the file cannot be read."""
    with open(path, encoding="utf-8") as handle:
        return [parse_prompt(n, line) for n, line in enumerate(handle, start=1) if line.strip()]


def answer_record(prompt: Prompt, answer: Answer) -> dict[str, Any]:
    return {**prompt.echo(), "answer": answer.text, "raw_answer": answer.raw_text,
            "segments": [list(s) for s in answer.segments], "video_duration": answer.duration,
            "num_input_tokens": answer.num_input_tokens, "num_output_tokens": answer.num_output_tokens,
            "stats": answer.stats}


def error_record(prompt: Prompt, error: BaseException | str) -> dict[str, Any]:
    kind = type(error).__name__ if isinstance(error, BaseException) else InvalidRequestError.__name__
    return {**prompt.echo(), "error": str(error), "error_type": kind}


class OrderedWriter:
    """Writes records by index as soon as every earlier index has been written (input order)."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self._pending: dict[int, dict[str, Any]] = {}
        self._next = 0

    def put(self, index: int, record: dict[str, Any]) -> None:
        self._pending[index] = record
        while self._next in self._pending:
            self._handle.write(json.dumps(self._pending.pop(self._next), ensure_ascii=False) + "\n")
            self._next += 1
        self._handle.flush()


async def _answer_one(client: AsyncLitaClient, prompt: Prompt, media_base: Path,
                      sampling: dict[str, Any]) -> dict[str, Any]:
    if prompt.error is not None:
        return error_record(prompt, prompt.error)
    try:
        video = resolve_media_path(media_base, prompt.video)
        answer = await client.ask(video, prompt.question, duration=prompt.duration, **sampling)
    except LitaClientError as exc:
        return error_record(prompt, exc)
    return answer_record(prompt, answer)


async def run_batch_async(client: AsyncLitaClient, prompts: list[Prompt], media_base: str | Path,
                          output: str | Path, *, concurrency: int = 4, sampling: dict[str, Any] | None = None,
                          progress: bool = True) -> BatchSummary:
    """Answer ``prompts`` with at most ``concurrency`` requests in flight; write ``output`` in input order."""
    if concurrency < 1:
        raise InvalidRequestError(f"concurrency must be >= 1, got {concurrency}")
    base, sampling = Path(media_base), dict(sampling or {})
    summary = BatchSummary(Path(output), total=len(prompts))
    gate = asyncio.Semaphore(concurrency)
    failed: list[tuple[int, Any, str]] = []
    bar = tqdm(total=len(prompts), file=sys.stderr, disable=not progress, unit="q", desc="lita batch")

    with open(output, "w", encoding="utf-8") as handle:
        writer = OrderedWriter(handle)

        async def work(index: int, prompt: Prompt) -> None:
            async with gate:
                record = await _answer_one(client, prompt, base, sampling)
            if "error" in record:
                failed.append((index, prompt.question_id, record["error"]))
            writer.put(index, record)
            bar.update(1)

        try:
            await asyncio.gather(*(work(i, p) for i, p in enumerate(prompts)))
        finally:
            bar.close()
    summary.failures = [(qid, message) for _, qid, message in sorted(failed, key=lambda f: f[0])]
    return summary


def run_batch(prompts_path: str | Path, media_base: str | Path, output: str | Path, *,
              client_kwargs: dict[str, Any] | None = None, concurrency: int = 4,
              sampling: dict[str, Any] | None = None, progress: bool = True,
              ready_timeout: float = 10.0) -> BatchSummary:
    """Read the prompt file, check the server is ready, run the batch; the blocking entry point.

    Raises LitaClientError (server unreachable / model not ready) before writing anything, and
    VideoInputError when the media base path is not a directory.
    """
    try:
        prompts = read_prompts(prompts_path)
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read prompt file {prompts_path}: {exc}") from exc
    if not Path(media_base).is_dir():
        raise VideoInputError(f"media base path {media_base} is not a directory")

    async def main() -> BatchSummary:
        async with AsyncLitaClient(**(client_kwargs or {})) as client:
            await client.wait_until_ready(ready_timeout)
            summary = await run_batch_async(client, prompts, media_base, output, concurrency=concurrency,
                                            sampling=sampling, progress=progress)
            if not client.replicas.single:
                summary.servers = client.replicas.state()
            return summary

    return asyncio.run(main())
