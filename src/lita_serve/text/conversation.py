"""The one-turn conversation prompt around the video: template, media placement, separators.

Templates (``PromptOptions.conv_template``), checked against the upstream sources:

* ``v1`` (default): the Vicuna v1 template LITA is trained with. NVlabs/LITA
  ``scripts/finetune_vid.sh`` trains with ``--version v1``, i.e. LLaVA's ``conv_vicuna_v1``;
  NeMo's LITA config (``examples/multimodal/multimodal_llm/neva/conf/lita_config.yaml``,
  ``conv_template: v1``) and NeMo's ``neva/conversation.py`` ``conv_vicuna_v1`` have the same
  system prompt ("... a curious user ... the user's questions."), roles ``("USER", "ASSISTANT")``,
  ``sep=" "`` and ``SeparatorStyle.TWO`` (NeMo writes ``sep2`` as ``<extra_id_7>``, LLaVA as
  ``</s>``; both only end assistant turns, absent from a one-turn prompt).
* ``llava_v1``: what LITA's own evaluation and CLI use. ``lita/eval/eval_model_rtl.py`` defaults
  to ``--conv-mode llava_v1`` and ``lita/serve/cli.py`` picks ``llava_v1`` for model names with
  ``v1``; LLaVA's ``llava/conversation.py`` ``conv_llava_v1`` differs from ``conv_vicuna_v1``
  only in its system prompt ("... a curious human ... the human's questions."): same roles,
  separators and style.

Both build the one-turn prompt ``system + " USER: " + message + " ASSISTANT:"`` (``get_prompt()``
with the assistant message empty, then ``strip()``).

Where the video goes (``insert_media_token``, ``media_separator``):

* LITA's ``cli.py`` and ``eval_model_rtl.py``: ``"<image>\\n" + question``, i.e. ``left`` with a
  ``"\\n"`` separator (the default here).
* NeMo's ``neva_evaluation.py`` (``TemporalNevaDataset``): ``left`` gives ``media + question``,
  ``right`` gives ``question + media``; with its top-level ``add_media_sep`` the media token is
  followed by ``" \\n"``. For ``inference.media_type=video`` (NeMo's LITA guide) the placeholder is
  ``<video>``, which NeMo's ``neva_process_prompts`` does not follow with a newline (it only
  rewrites ``<image>`` to ``"<image>\\n"``), so NeMo's LITA prompt has no separator.

Duration: neither LITA's evaluation nor NeMo's LITA inference puts the video duration in the
prompt text; the duration is only used afterwards to turn ``<tK>`` tokens into seconds. It is
therefore kept out of the prompt here as well (``build_prompt`` only validates it).

The prompt is split around the video placeholder (:class:`PromptParts`) rather than searched for
it, so a ``<video>`` typed inside a question is never mistaken for the real placeholder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lita_serve.config import CONV_TEMPLATES, MEDIA_PLACEMENTS, PROMPT_TOKENIZATIONS, PromptOptions
from lita_serve.errors import InvalidInputError
from lita_serve.text.special_tokens import VIDEO_PLACEHOLDER

SYSTEM_PROMPT = (  # conv_vicuna_v1 (LLaVA and NeMo): LITA's training template
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_V1_SYSTEM_PROMPT = (  # LLaVA's conv_llava_v1: LITA's eval_model_rtl.py and cli.py
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
ROLES = ("USER", "ASSISTANT")
SEP = " "  # SeparatorStyle.TWO: after the system prompt and each user turn
SEP2 = "</s>"  # ends an assistant turn; the generation stops at EOS, so it never appears in a prompt


@dataclass(frozen=True)
class ConversationTemplate:
    """A ``SeparatorStyle.TWO`` conversation template (LLaVA/NeMo ``Conversation`` fields)."""

    system: str
    roles: tuple[str, str] = ROLES
    sep: str = SEP
    sep2: str = SEP2


TEMPLATES: dict[str, ConversationTemplate] = {  # keys: config.CONV_TEMPLATES
    "v1": ConversationTemplate(SYSTEM_PROMPT),
    "llava_v1": ConversationTemplate(LLAVA_V1_SYSTEM_PROMPT),
}

PromptPiece = tuple[str, bool]  # (text, is_user_text)


@dataclass(frozen=True)
class PromptParts:
    """A one-turn prompt split at the video placeholder.

    The full prompt is ``before_video + VIDEO_PLACEHOLDER + after_video``; each side is a tuple of
    ``(text, is_user_text)`` segments, so the question (the user's text) is told apart from the
    template's text wherever the placement puts it.
    """

    before_video: tuple[PromptPiece, ...]
    after_video: tuple[PromptPiece, ...]
    question: str

    @property
    def before_text(self) -> str:
        return _join(self.before_video)

    @property
    def after_text(self) -> str:
        return _join(self.after_video)

    @property
    def text(self) -> str:
        return self.before_text + VIDEO_PLACEHOLDER + self.after_text


def _join(segments: tuple[PromptPiece, ...]) -> str:
    return "".join(text for text, _ in segments)


def check_prompt_options(options: PromptOptions) -> None:
    """InvalidInputError naming every prompt option outside the supported values."""
    problems = []
    if options.conv_template not in TEMPLATES:
        problems.append(f"conv_template={options.conv_template!r} is not one of {list(CONV_TEMPLATES)}")
    if options.insert_media_token not in MEDIA_PLACEMENTS:
        problems.append(f"insert_media_token={options.insert_media_token!r} is not one of {list(MEDIA_PLACEMENTS)}")
    if not isinstance(options.media_separator, str) or VIDEO_PLACEHOLDER in options.media_separator:
        problems.append(f"media_separator={options.media_separator!r} must be text without {VIDEO_PLACEHOLDER}")
    if options.tokenization not in PROMPT_TOKENIZATIONS:
        problems.append(f"tokenization={options.tokenization!r} is not one of {list(PROMPT_TOKENIZATIONS)}")
    if not isinstance(options.add_bos, bool):
        problems.append(f"add_bos={options.add_bos!r} must be true or false")
    if problems:
        raise InvalidInputError("unsupported prompt options: " + "; ".join(problems))


def clean_question(question: str) -> str:
    """The question with surrounding whitespace removed; InvalidInputError if nothing is left."""
    if not isinstance(question, str):
        raise InvalidInputError(f"question must be a string, got {type(question).__name__}")
    cleaned = question.strip()
    if not cleaned:
        raise InvalidInputError("question is empty")
    return cleaned


def check_question(question: str, max_chars: int) -> str:
    """:func:`clean_question`, plus the server's length limit (``limits.max_question_chars``)."""
    if isinstance(question, str) and len(question) > max_chars:
        raise InvalidInputError(f"question is {len(question)} characters, over the limit of {max_chars}")
    return clean_question(question)


def _check_duration(duration: float | None) -> None:
    if duration is None:
        return
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
            or duration <= 0:
        raise InvalidInputError(f"duration must be a finite number of seconds > 0, got {duration!r}")


def prompt_parts(question: str, duration: float | None = None,
                 options: PromptOptions | None = None) -> PromptParts:
    """Split the one-turn prompt for ``question`` at the video placeholder.

    ``left``:  ``system + " USER: " | <video> | sep + question + " ASSISTANT:"``
    ``right``: ``system + " USER: " + question + | <video> | sep + " ASSISTANT:"``
    """
    options = options or PromptOptions()
    check_prompt_options(options)
    _check_duration(duration)
    template = TEMPLATES[options.conv_template]
    cleaned = clean_question(question)
    head = template.system + template.sep + template.roles[0] + ": "
    tail = template.sep + template.roles[1] + ":"
    sep = options.media_separator
    if options.insert_media_token == "left":
        before, after = ((head, False),), ((sep, False), (cleaned, True), (tail, False))
    else:
        before, after = ((head, False), (cleaned, True)), ((sep, False), (tail, False))
    return PromptParts(before_video=before, after_video=after, question=cleaned)


def build_prompt(question: str, duration: float | None = None, options: PromptOptions | None = None) -> str:
    """The full prompt text, ending in ``"ASSISTANT:"``.

    >>> build_prompt("When does the dog jump?")[-66:]
    "user's questions. USER: <video>\\nWhen does the dog jump? ASSISTANT:"
    """
    return prompt_parts(question, duration, options).text
