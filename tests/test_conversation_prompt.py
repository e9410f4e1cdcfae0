"""The Vicuna v1 prompt text and the decoder input ids with fake visual ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_text import converted_model

from lita_serve.config import LitaConfig
from lita_serve.conversation import SYSTEM_PROMPT, build_prompt, prompt_parts
from lita_serve.errors import CheckpointError, InvalidInputError, LimitExceededError
from lita_serve.prompt import build_input_ids, visual_positions
from lita_serve.special_tokens import IM_END_TOKEN, IM_START_TOKEN, VID_END_TOKEN, VID_START_TOKEN
from lita_serve.tokenizer import LitaTokenizer

QUESTION = "When does the dog jump over the fence?"


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> LitaTokenizer:
    return LitaTokenizer.from_file(converted_model(tmp_path_factory.mktemp("conv"), "1.5"))


@pytest.fixture(scope="module")
def vocab() -> int:
    return LitaConfig.from_name("tiny").text.vocab_size  # 512: padded beyond the tokenizer's 510


def test_prompt_text_is_vicuna_v1() -> None:
    expected = SYSTEM_PROMPT + " USER: <video>\n" + QUESTION + " ASSISTANT:"
    assert build_prompt("  " + QUESTION + "\n") == expected
    assert SYSTEM_PROMPT.startswith("A chat between a curious user and an artificial intelligence assistant.")


def test_duration_is_not_in_the_prompt_but_is_validated() -> None:
    assert build_prompt(QUESTION, duration=123.4) == build_prompt(QUESTION)
    with pytest.raises(InvalidInputError, match="duration"):
        build_prompt(QUESTION, duration=-1.0)


@pytest.mark.parametrize("question", ["", "   \n\t"])
def test_empty_question_rejected(question: str, tok: LitaTokenizer, vocab: int) -> None:
    with pytest.raises(InvalidInputError, match="question is empty"):
        build_prompt(question)
    with pytest.raises(InvalidInputError, match="question is empty"):
        build_input_ids(tok, question, 8, vocab)


def test_v1_ids_have_one_contiguous_visual_run(tok: LitaTokenizer, vocab: int) -> None:
    n = 20
    ids = build_input_ids(tok, QUESTION, n, vocab)
    pos = visual_positions(ids, vocab)
    assert len(pos) == n and pos == list(range(pos[0], pos[0] + n))
    assert [ids[p] for p in pos] == list(range(vocab, vocab + n))
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    parts = prompt_parts(QUESTION)
    assert ids[: pos[0]] == tok.encode(parts.before_video, allow_special=True, add_bos=True)
    assert tok.decode(ids[: pos[0]]) == parts.before_video  # trailing "▁" kept, as in LLaVA chunking
    assert tok.decode(ids[pos[-1] + 1 :]).strip() == QUESTION + " ASSISTANT:"


def test_user_typed_special_strings_stay_text(tok: LitaTokenizer, vocab: int) -> None:
    question = "Is <video> shown at <t5> or <extra_id_8>?"
    ids = build_input_ids(tok, question, 10, vocab)
    assert len(visual_positions(ids, vocab)) == 10
    assert not any(tok.is_special_id(i) for i in ids)
    assert tok.decode(ids).endswith(question + " ASSISTANT:")


def test_im_vid_start_end_wraps_temporal_tokens(tok: LitaTokenizer, vocab: int) -> None:
    n = 12
    ids = build_input_ids(tok, QUESTION, n, vocab, visual_token_format="im_vid_start_end")
    pos = visual_positions(ids, vocab)
    assert pos == list(range(pos[0], pos[0] + n))
    assert ids[pos[0] - 1] == tok.piece_to_id(VID_START_TOKEN)
    assert ids[pos[-1] + 1] == tok.piece_to_id(VID_END_TOKEN)


def test_im_vid_start_end_with_image_frames(tok: LitaTokenizer, vocab: int) -> None:
    ids = build_input_ids(tok, QUESTION, 2 * 4 + 6, vocab, visual_token_format="im_vid_start_end",
                          num_image_frames=2, tokens_per_image_frame=4)
    ims, ime = tok.piece_to_id(IM_START_TOKEN), tok.piece_to_id(IM_END_TOKEN)
    vs, ve = tok.piece_to_id(VID_START_TOKEN), tok.piece_to_id(VID_END_TOKEN)
    start = ids.index(ims)
    f = list(range(vocab, vocab + 14))
    assert ids[start : start + 20] == [ims, *f[0:4], ime, ims, *f[4:8], ime, vs, *f[8:14], ve]
    with pytest.raises(InvalidInputError, match="no temporal tokens"):
        build_input_ids(tok, QUESTION, 8, vocab, visual_token_format="im_vid_start_end",
                        num_image_frames=2, tokens_per_image_frame=4)


def test_prompt_too_long(tok: LitaTokenizer, vocab: int) -> None:
    ids = build_input_ids(tok, QUESTION, 30, vocab)
    assert build_input_ids(tok, QUESTION, 30, vocab, max_prompt_tokens=len(ids)) == ids
    with pytest.raises(InvalidInputError, match="max_prompt_tokens") as err:
        build_input_ids(tok, QUESTION + " again" * 50, 30, vocab, max_prompt_tokens=len(ids))
    assert isinstance(err.value, LimitExceededError)


def test_bad_arguments(tok: LitaTokenizer, vocab: int) -> None:
    with pytest.raises(InvalidInputError, match="visual_token_format"):
        build_input_ids(tok, QUESTION, 4, vocab, visual_token_format="mystery")
    with pytest.raises(InvalidInputError, match="num_visual_tokens"):
        build_input_ids(tok, QUESTION, 0, vocab)
    with pytest.raises(CheckpointError, match="vocab_size"):
        build_input_ids(tok, QUESTION, 4, tok.vocab_size - 1)


def test_fake_ids_start_at_decoder_vocab_not_tokenizer_vocab(tok: LitaTokenizer) -> None:
    ids = build_input_ids(tok, QUESTION, 3, tok.vocab_size + 64)
    assert [i for i in ids if i >= tok.vocab_size] == [tok.vocab_size + 64 + k for k in range(3)]
