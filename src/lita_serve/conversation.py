"""The Vicuna v1 conversation template LITA is trained and evaluated with.

What was checked:

* NVlabs/LITA ``scripts/finetune_vid.sh`` trains with ``--version v1``, i.e. LLaVA's
  ``conv_vicuna_v1``; NeMo's LITA guide converts checkpoints with ``--conv-template v1``, and
  NeMo's ``neva/conversation.py`` ``conv_vicuna_v1`` has the same system prompt, roles
  ``("USER", "ASSISTANT")``, ``sep=" "`` and ``SeparatorStyle.TWO`` (NeMo writes ``sep2`` as
  ``<extra_id_7>``, LLaVA as ``</s>``; both only end assistant turns, absent from a one-turn prompt).
* LITA's ``lita/serve/cli.py`` and ``lita/eval/eval_model_rtl.py`` put the visual placeholder
  to the LEFT of the question (``"<image>\\n" + question``), and the one-turn prompt is
  ``system + " USER: " + message + " ASSISTANT:"`` (``get_prompt()`` then ``strip()``).
* Duration: neither LITA's evaluation nor NeMo's LITA inference puts the video duration in the
  prompt text; the duration is only used afterwards to turn ``<tK>`` tokens into seconds. It is
  therefore kept out of the prompt here as well (``build_prompt`` only validates it).

The prompt is split around the video placeholder (:class:`PromptParts`) rather than searched for
it, so a ``<video>`` typed inside a question is never mistaken for the real placeholder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lita_serve.errors import InvalidInputError
from lita_serve.special_tokens import VIDEO_PLACEHOLDER

SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
ROLES = ("USER", "ASSISTANT")
SEP = " "  # SeparatorStyle.TWO: after the system prompt and each user turn
SEP2 = "</s>"  # ends an assistant turn; the generation stops at EOS, so it never appears in a prompt


@dataclass(frozen=True)
class PromptParts:
    """A one-turn prompt split at the video placeholder.

    The full prompt is ``before_video + VIDEO_PLACEHOLDER + after_video + question + after_question``.
    ``before_video``, ``after_video`` and ``after_question`` are template text; ``question`` is
    the user's text.
    """

    before_video: str
    after_video: str
    question: str
    after_question: str

    @property
    def text(self) -> str:
        return self.before_video + VIDEO_PLACEHOLDER + self.after_video + self.question + self.after_question


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


def prompt_parts(question: str, duration: float | None = None) -> PromptParts:
    """Split the Vicuna v1 one-turn prompt for ``question`` at the video placeholder."""
    _check_duration(duration)
    return PromptParts(
        before_video=SYSTEM_PROMPT + SEP + ROLES[0] + ": ",
        after_video="\n",
        question=clean_question(question),
        after_question=SEP + ROLES[1] + ":",
    )


def build_prompt(question: str, duration: float | None = None) -> str:
    """The full prompt text, ending in ``"ASSISTANT:"``.

    >>> build_prompt("When does the dog jump?")[-66:]
    "user's questions. USER: <video>\\nWhen does the dog jump? ASSISTANT:"
    """
    return prompt_parts(question, duration).text
