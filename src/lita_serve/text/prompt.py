"""The decoder's input ids for one question about one video, as TensorRT-LLM's multimodal path builds them.

TensorRT-LLM feeds visual features through its prompt-tuning table: the prompt holds "fake" ids
``vocab_size, vocab_size + 1, ...`` (``vocab_size`` = the decoder embedding table's row count,
which may exceed the tokenizer's because of padding), and row ``id - vocab_size`` of the table
replaces their embeddings. NeMo's LITA runner (``nemo_export/multimodal/run.py``) tokenizes the
prompt in chunks split at the visual placeholder (LLaVA's ``tokenizer_image_token``: BOS on the
first chunk, each chunk its own SentencePiece call) and places the fake ids where the placeholder was.

Layouts (``visual_token_format``), checked against NeMo's LITA code:

* ``"v1"`` (LITA 1.0): one contiguous run of fake ids, temporal then spatial tokens, no markers.
* ``"im_vid_start_end"`` (LITA 1.5): each sampled frame's spatial tokens wrapped in
  ``<extra_id_4> .. <extra_id_5>`` (image start/end), then the temporal tokens wrapped in
  ``<extra_id_8> .. <extra_id_9>`` (video start/end). With ``num_image_frames=0`` every visual
  token is temporal: ``<extra_id_8> fake... <extra_id_9>``.

Prompt options (:class:`~lita_serve.config.PromptOptions`, from ``lita.json``): the template and
the video's placement come from :mod:`lita_serve.text.conversation`; ``add_bos`` puts the BOS id
first; ``tokenization="per_chunk"`` encodes the text before and after the video each in its own
SentencePiece call (LLaVA's ``tokenizer_image_token``; the text after the video starts with the
dummy ``▁``), ``"whole"`` encodes the text after the video as the continuation of one call over
the whole prompt (NeMo's NeVA inference tokenizes the full prompt string with the visual tokens
spelled as special pieces, so no ``▁`` follows them).

Shapes: ``num_visual_tokens`` = rows of the prompt table for this request, in the order the fake
ids are assigned (spatial frames first for ``im_vid_start_end``, as NeMo concatenates them).
"""

from __future__ import annotations

from typing import Sequence

from lita_serve.config import VISUAL_TOKEN_FORMATS, PromptOptions
from lita_serve.text.conversation import PromptPiece, prompt_parts
from lita_serve.errors import CheckpointError, InvalidInputError, LimitExceededError
from lita_serve.text.special_tokens import IM_END_TOKEN, IM_START_TOKEN, VID_END_TOKEN, VID_START_TOKEN
from lita_serve.text.tokenizer import LitaTokenizer


def _encode_chunk(tokenizer: LitaTokenizer, parts: Sequence[PromptPiece], *, continued: bool = False) -> list[int]:
    """Encode ``(text, is_user_text)`` parts that form one chunk of the prompt.

    When no template part contains a special piece, encoding the whole chunk in one call with
    ``allow_special=False`` gives exactly the template's tokens and keeps user text plain, and it
    tokenizes the chunk as one piece of text like the reference. Otherwise each part is encoded
    on its own (template parts with ``allow_special=True``). ``continued`` drops the dummy ``▁``
    prefix of the chunk's first call (see :meth:`LitaTokenizer.encode`).
    """
    if not any(not is_user and tokenizer.contains_special(text) for text, is_user in parts):
        text = "".join(text for text, _ in parts)
        return tokenizer.encode(text, allow_special=False, continued=continued) if text else []
    ids: list[int] = []
    for text, is_user in parts:
        if text:
            ids.extend(tokenizer.encode(text, allow_special=not is_user, continued=continued and not ids))
    return ids


def _visual_ids(
    tokenizer: LitaTokenizer,
    num_visual_tokens: int,
    vocab_size: int,
    visual_token_format: str,
    num_image_frames: int,
    tokens_per_image_frame: int,
) -> list[int]:
    """Fake ids ``vocab_size ..`` in prompt-table order, with LITA 1.5's start/end markers."""
    fake = list(range(vocab_size, vocab_size + num_visual_tokens))
    if visual_token_format == "v1":
        return fake
    spatial = num_image_frames * tokens_per_image_frame
    if num_image_frames < 0 or tokens_per_image_frame < 0 or spatial >= num_visual_tokens:
        raise InvalidInputError(
            f"{num_image_frames} image frames x {tokens_per_image_frame} tokens leave no temporal tokens "
            f"out of {num_visual_tokens} visual tokens"
        )
    im_start, im_end = tokenizer.piece_to_id(IM_START_TOKEN), tokenizer.piece_to_id(IM_END_TOKEN)
    ids: list[int] = []
    for f in range(num_image_frames):
        frame = fake[f * tokens_per_image_frame:(f + 1) * tokens_per_image_frame]
        ids += [im_start, *frame, im_end]
    ids += [tokenizer.piece_to_id(VID_START_TOKEN), *fake[spatial:], tokenizer.piece_to_id(VID_END_TOKEN)]
    return ids


def build_input_ids(
    tokenizer: LitaTokenizer,
    question: str,
    num_visual_tokens: int,
    vocab_size: int,
    visual_token_format: str = "v1",
    duration: float | None = None,
    *,
    max_prompt_tokens: int | None = None,
    num_image_frames: int = 0,
    tokens_per_image_frame: int = 0,
    options: PromptOptions | None = None,
) -> list[int]:
    """The prompt's ids (BOS first unless ``options.add_bos`` is false) with the video placeholder
    replaced by fake visual ids; ``options`` defaults to LITA's reference prompt.

    The template is encoded with special pieces allowed, the question with them disallowed, so a
    user's ``<video>``, ``<t5>`` or ``<extra_id_8>`` stay text. ``duration`` is validated but not
    put in the prompt (see :mod:`lita_serve.text.conversation`). Raises :class:`InvalidInputError` for
    an empty question or a bad layout, :class:`LimitExceededError` (an InvalidInputError) when
    the ids exceed ``max_prompt_tokens``, and :class:`CheckpointError` when ``vocab_size`` is
    smaller than the tokenizer's (fake ids would collide with real tokens).
    """
    if visual_token_format not in VISUAL_TOKEN_FORMATS:
        raise InvalidInputError(
            f"unknown visual_token_format {visual_token_format!r}; known: {list(VISUAL_TOKEN_FORMATS)}"
        )
    if int(num_visual_tokens) < 1:
        raise InvalidInputError(f"num_visual_tokens must be >= 1, got {num_visual_tokens}")
    if int(vocab_size) < tokenizer.vocab_size:
        raise CheckpointError(
            f"decoder vocab_size {vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}"
        )
    options = options or PromptOptions()
    parts = prompt_parts(question, duration, options)
    ids = [tokenizer.bos_id] if options.add_bos and tokenizer.bos_id >= 0 else []
    ids += _encode_chunk(tokenizer, parts.before_video)
    ids += _visual_ids(tokenizer, int(num_visual_tokens), int(vocab_size), visual_token_format,
                       int(num_image_frames), int(tokens_per_image_frame))
    ids += _encode_chunk(tokenizer, parts.after_video, continued=options.tokenization == "whole")
    if max_prompt_tokens is not None and len(ids) > int(max_prompt_tokens):
        raise LimitExceededError(
            f"prompt is {len(ids)} tokens ({num_visual_tokens} visual + {len(ids) - num_visual_tokens} text), "
            f"more than max_prompt_tokens={max_prompt_tokens}; shorten the question"
        )
    return ids


def visual_positions(input_ids: Sequence[int], vocab_size: int) -> list[int]:
    """Positions of the fake visual ids (``id >= vocab_size``) in ``input_ids``."""
    return [i for i, t in enumerate(input_ids) if int(t) >= int(vocab_size)]
