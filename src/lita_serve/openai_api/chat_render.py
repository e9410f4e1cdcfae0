"""OpenAI's response objects for a LITA answer: a ``chat.completion``, or ``chat.completion.chunk`` events.

The text is the answer with its times in seconds (``6.1s 14.3s``). What LITA adds goes in an
extra field of the choice, ``lita``: the raw text with ``<tK>`` tokens, the segments as
``[start_s, end_s]`` pairs and the duration the times refer to. ``usage`` counts the prompt's
tokens with the visual tokens included.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from lita_client.answer import Answer


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def lita_extra(answer: Answer) -> dict[str, Any]:
    """The ``lita`` field of a choice."""
    return {"raw_text": answer.raw_text, "segments": [[s, e] for s, e in answer.segments],
            "duration": answer.duration}


def usage(answer: Answer) -> dict[str, int]:
    return {"prompt_tokens": answer.num_input_tokens, "completion_tokens": answer.num_output_tokens,
            "total_tokens": answer.num_input_tokens + answer.num_output_tokens}


def finish_reason(answer: Answer, max_tokens: int) -> str:
    """``length`` when the answer used every token it was allowed, else ``stop``."""
    return "length" if answer.num_output_tokens >= max_tokens else "stop"


def completion(answer: Answer, model: str, max_tokens: int) -> dict[str, Any]:
    """The whole ``chat.completion`` object."""
    return {"id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "logprobs": None, "finish_reason": finish_reason(answer, max_tokens),
                         "lita": lita_extra(answer)}],
            "usage": usage(answer)}


@dataclass
class ChunkWriter:
    """Server-sent events of one streamed completion: ``data: {chunk}\\n\\n`` lines, then ``data: [DONE]``."""

    model: str
    include_usage: bool
    id: str = field(default_factory=completion_id)
    created: int = field(default_factory=lambda: int(time.time()))
    _sent_role: bool = False

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": choices, **extra}
        if self.include_usage and "usage" not in extra:
            chunk["usage"] = None  # OpenAI's shape: null on every chunk but the last
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    def token(self, text: str) -> str:
        """One generated piece (the first one also carries the assistant role)."""
        delta: dict[str, Any] = {"content": text}
        if not self._sent_role:
            delta = {"role": "assistant", **delta}
            self._sent_role = True
        return self._event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    def finish(self, answer: Answer, max_tokens: int) -> str:
        """The closing events: finish reason and the ``lita`` field, usage if asked, ``[DONE]``."""
        delta: dict[str, Any] = {} if self._sent_role else {"role": "assistant", "content": ""}
        events = self._event([{"index": 0, "delta": delta, "logprobs": None,
                               "finish_reason": finish_reason(answer, max_tokens), "lita": lita_extra(answer)}])
        if self.include_usage:
            events += self._event([], usage=usage(answer))
        return events + "data: [DONE]\n\n"

    def error(self, body: dict[str, Any]) -> str:
        """An error after tokens were sent (the status line is gone): an error event, then ``[DONE]``."""
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\ndata: [DONE]\n\n"
