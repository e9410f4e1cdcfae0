"""The one table of LITA's extra tokens, their meaning and their order in the tokenizer.

Sources checked:

* NeMo ``nemo/collections/multimodal/data/neva/conversation.py`` defines the reserved
  ``<extra_id_K>`` meanings (system, separator, labels, image patch, image start/end, BOS/EOS
  stand-ins, video start/end) and ``TIME_TOKEN_TEMPLATE = "<t{t}>"``.
* NeMo's LITA guide (``add_special_tokens_to_sentencepiece.py --is_userdefined --tokens ...``)
  gives the order the tokens are appended to the LLaMA/LLaVA SentencePiece model:
  LITA 1.0 appends ``<t0>..<t99>`` then ``<extra_id_0>..<extra_id_9>``; LITA 1.5 checkpoints put
  the image/video start/end tokens first: ``<extra_id_4> <extra_id_5> <extra_id_8> <extra_id_9>``,
  then ``<t0>..<t99>``, then ``<extra_id_0> <extra_id_1> <extra_id_2> <extra_id_3> <extra_id_6>
  <extra_id_7>``. The token ids are baked into the checkpoint's embedding table, so the order
  must match the checkpoint exactly.
* NeMo's ``visual_token_format == "im_vid_start_end"`` (LITA 1.5) wraps each sampled frame's
  spatial tokens in image start/end and the temporal tokens in video start/end.
"""

from __future__ import annotations

from lita_serve.config import DEFAULT_NUM_TIME_TOKENS
from lita_serve.errors import InvalidInputError
from lita_serve.text.time_tokens import time_tokens

NUM_EXTRA_IDS = 10
EXTRA_ID_TEMPLATE = "<extra_id_{}>"


def extra_id(k: int) -> str:
    """``extra_id(8) == "<extra_id_8>"``."""
    return EXTRA_ID_TEMPLATE.format(int(k))


SYSTEM_TOKEN = extra_id(0)
SEPARATOR_TOKEN = extra_id(1)
LABELS_TOKEN = extra_id(2)
IMAGE_PATCH_TOKEN = extra_id(3)
IM_START_TOKEN = extra_id(4)
IM_END_TOKEN = extra_id(5)
BOS_TOKEN = extra_id(6)  # NeMo's textual stand-in for BOS in some templates (not SentencePiece's <s>)
EOS_TOKEN = extra_id(7)  # NeMo's textual stand-in for EOS (its vicuna_v1 sep2)
VID_START_TOKEN = extra_id(8)
VID_END_TOKEN = extra_id(9)

# Meaning of every reserved extra id (NeMo neva conversation.py constants).
EXTRA_ID_MEANINGS: dict[str, str] = {
    SYSTEM_TOKEN: "system turn marker (DEFAULT_SYSTEM_TOKEN)",
    SEPARATOR_TOKEN: "turn separator (DEFAULT_SEPARATOR_TOKEN)",
    LABELS_TOKEN: "labels marker (DEFAULT_LABELS_TOKEN)",
    IMAGE_PATCH_TOKEN: "image patch placeholder (DEFAULT_IMAGE_PATCH_TOKEN)",
    IM_START_TOKEN: "image start (DEFAULT_IM_START_TOKEN)",
    IM_END_TOKEN: "image end (DEFAULT_IM_END_TOKEN)",
    BOS_TOKEN: "textual BOS (DEFAULT_BOS_TOKEN)",
    EOS_TOKEN: "textual EOS (DEFAULT_EOS_TOKEN)",
    VID_START_TOKEN: "video start (DEFAULT_VID_START_TOKEN)",
    VID_END_TOKEN: "video end (DEFAULT_VID_END_TOKEN)",
}

# Placeholders in prompt *text* where visual features go; never tokenized themselves.
VIDEO_PLACEHOLDER = "<video>"
IMAGE_PLACEHOLDER = "<image>"

LITA_VERSIONS = ("1.0", "1.5")

_V15_LEADING = (IM_START_TOKEN, IM_END_TOKEN, VID_START_TOKEN, VID_END_TOKEN)


def special_token_order(version: str, num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS) -> list[str]:
    """The tokens LITA appends to the base SentencePiece model, in id order.

    ``"1.0"``: ``<t0>..<t{N-1}>, <extra_id_0>..<extra_id_9>``.
    ``"1.5"``: ``<extra_id_4> <extra_id_5> <extra_id_8> <extra_id_9>, <t0>..<t{N-1}>``, then the
    remaining extra ids ``0 1 2 3 6 7``. Raises :class:`InvalidInputError` for an unknown version.
    """
    version = str(version)
    if version not in LITA_VERSIONS:
        raise InvalidInputError(f"unknown LITA version {version!r}; known: {list(LITA_VERSIONS)}")
    times = time_tokens(num_time_tokens)
    if version == "1.0":
        return times + [extra_id(k) for k in range(NUM_EXTRA_IDS)]
    rest = [extra_id(k) for k in range(NUM_EXTRA_IDS) if extra_id(k) not in _V15_LEADING]
    return list(_V15_LEADING) + times + rest


def all_extra_ids() -> list[str]:
    """``<extra_id_0>`` .. ``<extra_id_9>`` in index order."""
    return [extra_id(k) for k in range(NUM_EXTRA_IDS)]
