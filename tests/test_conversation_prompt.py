"""The conversation prompt text and the decoder input ids with fake visual ids (LITA reference and NeMo)."""

from __future__ import annotations


import pytest
from helpers_text import converted_model

from lita_serve.config import CONV_TEMPLATES, LitaConfig, PromptOptions
from lita_serve.text.conversation import SYSTEM_PROMPT, TEMPLATES, build_prompt, prompt_parts
from lita_serve.errors import CheckpointError, InvalidInputError, LimitExceededError
from lita_serve.text.prompt import build_input_ids, visual_positions
from lita_serve.text.special_tokens import IM_END_TOKEN, IM_START_TOKEN, IMAGE_PATCH_TOKEN, VID_END_TOKEN, VID_START_TOKEN
from lita_serve.text.tokenizer import LitaTokenizer

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
    assert ids[: pos[0]] == tok.encode(parts.before_text, allow_special=True, add_bos=True)
    assert tok.decode(ids[: pos[0]]) == parts.before_text  # trailing "▁" kept, as in LLaVA chunking
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


# --- selectable template, media placement, BOS: facts from the upstream sources -------------------
#
# Templates. LLaVA (haotian-liu/LLaVA ``llava/conversation.py``): ``conv_vicuna_v1`` (LITA's training
# template, ``--version v1`` in NVlabs/LITA ``scripts/finetune_vid.sh``) and ``conv_llava_v1`` (LITA's
# ``lita/eval/eval_model_rtl.py`` default ``--conv-mode llava_v1``, ``lita/serve/cli.py`` for "v1"
# model names). Both SeparatorStyle.TWO, roles USER/ASSISTANT, sep " ".
TEMPLATE_FACTS = {
    "v1": "A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "llava_v1": "A chat between a curious human and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the human's questions.",
}

# NeMo's LITA/NeVA inference (NVIDIA/NeMo v2.4.0, the last release line carrying NeMo 1 NeVA/LITA):
# * examples/multimodal/multimodal_llm/neva/neva_evaluation.py ``TemporalNevaDataset.__getitem__``:
#   insert_media_token=left -> media_token + prompt; right -> prompt + media_token (add_media_sep
#   false, the default); LITA.md runs it with inference.media_type=video, so media_token = "<video>".
# * nemo/collections/nlp/modules/common/text_generation_strategy.py ``neva_process_prompts``
#   (conv_template v1): the prompt is the human turn, the gpt turn is ""; only "<image>" is rewritten
#   to "<image>\n", "<video>" is not.
# * nemo/collections/multimodal/data/neva/neva_dataset.py ``preprocess_multimodal`` (LITA, video,
#   visual_token_format v1, use_im_start_end false): "<video>" -> <extra_id_4> + <extra_id_3> * (N-2)
#   + <extra_id_5>; ``preprocess_v1``: conv_vicuna_v1 ``get_prompt()`` then ``tokenize()`` =
#   ``tokenizer.text_to_ids`` of the whole string (one SentencePiece call, no BOS).
# * neva_model.py ``LitaWordEmbeddingMixin.replace_media_embeddings``: the ids from <extra_id_4> to
#   <extra_id_5> inclusive are replaced by the N visual embeddings.
# * ``NevaModelTextGenerationStrategy.tokenize_batch`` ignores add_BOS; the GPT strategy
#   (``TextGenerationStrategy.tokenize_batch``) builds ``[bos_id] + text_to_ids(s)`` when add_BOS.
NEMO_PLACEMENT = {"left": lambda media, q: media + q, "right": lambda media, q: q + media}
NEMO_ONE_TURN = "{system} USER: {message} ASSISTANT:"


def nemo_ids(tok: LitaTokenizer, question: str, n: int, vocab: int, side: str, add_bos: bool) -> list[int]:
    """The ids NeMo builds for ``question`` (from the facts above), visual span -> fake ids."""
    media = IM_START_TOKEN + IMAGE_PATCH_TOKEN * (n - 2) + IM_END_TOKEN
    text = NEMO_ONE_TURN.format(system=TEMPLATE_FACTS["v1"], message=NEMO_PLACEMENT[side](media, question))
    ids = tok.encode(text, allow_special=True)  # one call over the whole prompt
    start, end = ids.index(tok.piece_to_id(IM_START_TOKEN)), len(ids) - 1 - ids[::-1].index(tok.piece_to_id(IM_END_TOKEN))
    assert end - start + 1 == n
    ids[start:end + 1] = range(vocab, vocab + n)
    return ([tok.bos_id] if add_bos else []) + ids


@pytest.mark.parametrize("template", sorted(TEMPLATE_FACTS))
def test_selectable_template_text(template: str) -> None:
    text = build_prompt(QUESTION, options=PromptOptions(conv_template=template))
    assert text == TEMPLATE_FACTS[template] + " USER: <video>\n" + QUESTION + " ASSISTANT:"
    assert tuple(TEMPLATES) == CONV_TEMPLATES


@pytest.mark.parametrize("add_bos", [True, False])
@pytest.mark.parametrize("side", ["left", "right"])
def test_media_placement_and_bos_match_nemo(tok: LitaTokenizer, vocab: int, side: str, add_bos: bool) -> None:
    n = 12
    nemo = PromptOptions(insert_media_token=side, media_separator="", add_bos=add_bos, tokenization="whole")
    ids = build_input_ids(tok, QUESTION, n, vocab, options=nemo)
    assert ids == nemo_ids(tok, QUESTION, n, vocab, side, add_bos)
    assert (ids[0] == tok.bos_id) is add_bos and ids.count(tok.bos_id) == int(add_bos)
    pos = visual_positions(ids, vocab)
    text_before, text_after = tok.decode(ids[:pos[0]]), tok.decode(ids[pos[-1] + 1:])
    if side == "left":
        assert text_before.endswith("USER: ") and text_after == QUESTION + " ASSISTANT:"
    else:
        assert text_before.endswith("USER: " + QUESTION) and text_after.strip() == "ASSISTANT:"  # decode drops a leading "▁"


def test_whole_and_per_chunk_differ_only_after_the_video(tok: LitaTokenizer, vocab: int) -> None:
    """LLaVA's per-chunk call starts the text after the video with the dummy "▁"; NeMo's does not."""
    per_chunk = build_input_ids(tok, QUESTION, 5, vocab, options=PromptOptions(media_separator=""))
    whole = build_input_ids(tok, QUESTION, 5, vocab, options=PromptOptions(media_separator="", tokenization="whole"))
    end = visual_positions(whole, vocab)[-1] + 1
    assert per_chunk[:end] == whole[:end] and per_chunk[end:] != whole[end:]
    assert per_chunk[end:] == tok.encode(QUESTION + " ASSISTANT:", allow_special=False)
    assert tok.id_to_piece(per_chunk[end]).startswith("▁") and not tok.id_to_piece(whole[end]).startswith("▁")


def test_default_options_are_the_reference_prompt(tok: LitaTokenizer, vocab: int) -> None:
    assert build_input_ids(tok, QUESTION, 7, vocab, options=PromptOptions()) == build_input_ids(tok, QUESTION, 7, vocab)
    assert LitaConfig.from_dict({}).prompt == PromptOptions()  # a lita.json without "prompt"


@pytest.mark.parametrize("field,value", [("conv_template", "chatml"), ("insert_media_token", "middle"),
                                         ("tokenization", "bytes"), ("media_separator", "<video>"),
                                         ("add_bos", "yes")])
def test_bad_prompt_options_are_named(field: str, value, tok: LitaTokenizer, vocab: int) -> None:
    with pytest.raises(InvalidInputError, match=field):
        build_input_ids(tok, QUESTION, 4, vocab, options=PromptOptions(**{field: value}))
