"""One ``POST /v1/chat/completions`` body, checked and turned into what the LITA client sends.

Accepted: one ``user`` message whose content holds exactly one ``video_url`` part and one or
more ``text`` parts (joined by newlines into the question); ``max_tokens`` /
``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``, ``stream``,
``stream_options.include_usage``; LITA's extras ``top_k``, ``repetition_penalty`` and
``duration``. Types and ranges are checked as the server checks them
(:mod:`lita_serve.llm.sampling_params`, ranges from the client-server contract); ``max_tokens``
is also capped by the repository's limit.

Decoding is greedy unless ``temperature`` > 0 is given (then LITA samples with ``temperature``,
``top_p``, ``top_k`` and ``seed``); OpenAI's default of 1.0 is not applied, so a plain request
gets LITA's deterministic answer. What LITA cannot do is refused with a 400 that says so, never
ignored: ``n`` > 1, tools and function calls, log-probabilities, stop sequences, penalties,
non-text response formats, images, several videos, system prompts and earlier turns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lita_serve.config import ServeLimits
from lita_serve.errors import InvalidInputError
from lita_serve.llm.sampling_params import check_range, check_type
from lita_serve.openai_api.api_errors import ApiError, bad_request

# Fields whose mere presence asks for something LITA does not do (null is fine).
_REFUSED = {
    "tools": "tools and function calling are not supported",
    "tool_choice": "tools and function calling are not supported",
    "functions": "tools and function calling are not supported",
    "function_call": "tools and function calling are not supported",
    "stop": "stop sequences are not supported",
    "logit_bias": "logit_bias is not supported",
    "top_logprobs": "log-probabilities are not supported",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
}
# Fields that are fine at their OpenAI default only.
_DEFAULT_ONLY = {"n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0}


@dataclass
class VideoChat:
    """What one chat-completions request asks: the video's URL, the question, how to decode."""

    video_url: str
    question: str
    sampling: dict[str, Any] = field(default_factory=dict)  # keyword arguments of AsyncLitaClient.ask
    duration: float | None = None
    stream: bool = False
    include_usage: bool = False

    @property
    def max_tokens(self) -> int | None:
        return self.sampling.get("max_tokens")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _content_parts(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list", "messages")
    if len(messages) != 1 or not isinstance(messages[0], dict) or messages[0].get("role") != "user":
        roles = [m.get("role") if isinstance(m, dict) else type(m).__name__ for m in messages]
        raise bad_request(f"LITA answers one user message about one video (its system prompt is fixed); "
                          f"got roles {roles}", "messages")
    content = messages[0].get("content")
    if isinstance(content, str):
        raise bad_request("the user message has no video: send its content as parts with one "
                          "{\"type\": \"video_url\", \"video_url\": {\"url\": ...}}", "messages.content")
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        raise bad_request("the user message's content must be a list of parts", "messages.content")
    return content


def _video_and_question(parts: list[dict[str, Any]]) -> tuple[str, str]:
    videos, texts = [], []
    for part in parts:
        kind = part.get("type")
        if kind == "video_url":
            url = (part.get("video_url") or {}).get("url") if isinstance(part.get("video_url"), dict) else None
            if not isinstance(url, str) or not url:
                raise bad_request("a video_url part needs {\"video_url\": {\"url\": \"...\"}}", "messages.content")
            videos.append(url)
        elif kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request("a text part needs a string \"text\"", "messages.content")
            texts.append(part["text"])
        elif kind in ("image_url", "input_image", "image"):
            raise bad_request("images are not supported: LITA answers about one video (a video_url part)",
                              "messages.content")
        else:
            raise bad_request(f"content parts of type {kind!r} are not supported (video_url and text only)",
                              "messages.content")
    if len(videos) != 1:
        raise bad_request(f"send exactly one video_url part, got {len(videos)}", "messages.content")
    question = "\n".join(t for t in texts if t.strip())
    if not question.strip():
        raise bad_request("the user message has no question: add a text part", "messages.content")
    return videos[0], question


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, why in _REFUSED.items():
        if body.get(name) not in (None, [], {}):
            raise bad_request(f"{name}: {why} by LITA", name)
    for name, default in _DEFAULT_ONLY.items():
        if body.get(name) not in (None, default):
            raise bad_request(f"{name}={body[name]!r} is not supported by LITA (only {default!r})", name)
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise bad_request("response_format: only {\"type\": \"text\"} is supported", "response_format")


def _sampling(body: dict[str, Any], limits: ServeLimits) -> dict[str, Any]:
    newer = body.get("max_completion_tokens")  # OpenAI's newer name wins over max_tokens
    given = {"max_tokens": newer if newer is not None else body.get("max_tokens")}
    for name in ("temperature", "top_p", "top_k", "repetition_penalty", "seed"):
        given[name] = body.get(name)
    sampling: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        try:  # the checks and messages the server's SamplingParams.validate applies
            check_type(name, value)
            check_range(name, value)
        except InvalidInputError as exc:
            raise bad_request(str(exc), name) from None
        sampling[name] = value
    if sampling.get("max_tokens", 0) > limits.max_new_tokens:
        raise bad_request(f"max_tokens {sampling['max_tokens']} exceeds the server's limit of "
                          f"{limits.max_new_tokens}", "max_tokens")
    sampling["greedy"] = not sampling.get("temperature")  # absent or 0: greedy
    if sampling["greedy"]:
        sampling.pop("temperature", None)
    return sampling


def parse_chat(body: Any, limits: ServeLimits, model: str) -> VideoChat:
    """The :class:`VideoChat` of a request body; :class:`ApiError` (400/404) naming the first problem."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    if body.get("model") not in (None, model):
        raise ApiError(404, f"model {body.get('model')!r} does not exist; this server serves {model!r}",
                       "model", "model_not_found")
    _refuse_unsupported(body)
    video_url, question = _video_and_question(_content_parts(body.get("messages")))
    duration = body.get("duration")
    if duration is not None and not (_is_number(duration) and duration > 0):
        raise bad_request(f"duration must be a number of seconds > 0, got {duration!r}", "duration")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise bad_request(f"stream must be a boolean, got {stream!r}", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("stream_options must be an object", "stream_options")
    return VideoChat(video_url, question, _sampling(body, limits), duration, bool(stream),
                     bool(options.get("include_usage", False)))
