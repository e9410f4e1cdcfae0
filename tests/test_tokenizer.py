"""Tokenizer conversion, special-token ids and safe encoding on real trained SentencePiece models."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm
from helpers_text import corpus, train_base

from lita_serve.config import LitaConfig
from lita_serve.errors import CheckpointError, InvalidInputError
from lita_serve.text.special_tokens import (
    EXTRA_ID_MEANINGS,
    VID_END_TOKEN,
    VID_START_TOKEN,
    all_extra_ids,
    special_token_order,
)
from lita_serve.text.tokenizer import LitaTokenizer, convert_tokenizer, load_model_proto, train_tiny_sentencepiece

BASE_VOCAB = 400


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tok")
    base = train_base(d / "base.model", vocab_size=BASE_VOCAB)
    out = {"base": base}
    for version in ("1.0", "1.5"):
        out[version] = d / f"lita_{version}.model"
        convert_tokenizer(base, out[version], version)
    return out


@pytest.fixture(scope="module")
def tok(models: dict[str, Path]) -> LitaTokenizer:
    return LitaTokenizer.from_file(models["1.0"])


def test_base_model_is_llama_like(models: dict[str, Path]) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(models["base"]))
    assert sp.get_piece_size() == BASE_VOCAB
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert sp.id_to_piece(1) == "<s>" and sp.id_to_piece(2) == "</s>"
    assert sp.decode(sp.encode("Ünïcode € 42")) == "Ünïcode € 42"  # byte fallback round-trips


def test_training_is_deterministic(tmp_path: Path) -> None:
    a = train_tiny_sentencepiece(corpus(), tmp_path / "a.model")
    b = train_tiny_sentencepiece(corpus(), tmp_path / "b.model")
    assert a.read_bytes() == b.read_bytes()


def test_special_token_order_tables() -> None:
    v10 = special_token_order("1.0")
    v15 = special_token_order("1.5")
    assert v10[:2] == ["<t0>", "<t1>"] and v10[99] == "<t99>" and v10[100:] == all_extra_ids()
    assert v15[:4] == ["<extra_id_4>", "<extra_id_5>", "<extra_id_8>", "<extra_id_9>"]
    assert v15[4] == "<t0>" and v15[103] == "<t99>"
    assert v15[104:] == ["<extra_id_0>", "<extra_id_1>", "<extra_id_2>", "<extra_id_3>", "<extra_id_6>", "<extra_id_7>"]
    assert sorted(v10) == sorted(v15) and len(v10) == 110
    assert set(EXTRA_ID_MEANINGS) == set(all_extra_ids())
    assert EXTRA_ID_MEANINGS[VID_START_TOKEN].startswith("video start")
    with pytest.raises(InvalidInputError, match="LITA version"):
        special_token_order("2.0")


@pytest.mark.parametrize("version", ["1.0", "1.5"])
def test_converted_ids_follow_the_order(models: dict[str, Path], version: str) -> None:
    t = LitaTokenizer.from_file(models[version])
    order = special_token_order(version)
    assert t.vocab_size == BASE_VOCAB + len(order)
    sp = spm.SentencePieceProcessor(model_file=str(models[version]))
    for pos, piece in enumerate(order):
        assert sp.piece_to_id(piece) == BASE_VOCAB + pos, piece
    offset = 0 if version == "1.0" else 4
    assert t.time_token_ids[0] == BASE_VOCAB + offset
    assert t.time_token_ids[99] == BASE_VOCAB + offset + 99
    assert t.time_index(t.time_token_ids[42]) == 42
    assert t.time_index(5) is None
    assert t.piece_to_id(VID_END_TOKEN) == sp.piece_to_id(VID_END_TOKEN)


def test_tiny_preset_vocab_fits_converted_tokenizer(tok: LitaTokenizer) -> None:
    assert tok.vocab_size <= LitaConfig.from_name("tiny").text.vocab_size


def test_converting_twice_adds_nothing(models: dict[str, Path], tmp_path: Path) -> None:
    again = tmp_path / "again.model"
    assert convert_tokenizer(models["1.0"], again, "1.0") == []
    assert again.read_bytes() == models["1.0"].read_bytes()
    # a 1.5 conversion of a 1.0 model keeps the 1.0 ids: everything is already present
    assert convert_tokenizer(models["1.0"], tmp_path / "x.model", "1.5") == []


def test_added_pieces_are_user_defined(models: dict[str, Path]) -> None:
    proto = load_model_proto(models["1.5"])
    kinds = {p.piece: p.type for p in proto.pieces}
    user_defined = type(proto.pieces[0]).Type.Value("USER_DEFINED")
    assert kinds["<t0>"] == user_defined and kinds["<extra_id_9>"] == user_defined


def test_unconverted_or_missing_model_is_rejected(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="time tokens"):
        LitaTokenizer.from_file(models["base"])
    with pytest.raises(CheckpointError, match="not found"):
        LitaTokenizer.from_file(tmp_path / "nope.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"\xff\x00not a model")
    with pytest.raises(CheckpointError):
        LitaTokenizer.from_file(junk)


def test_encode_time_tokens_as_template(tok: LitaTokenizer) -> None:
    ids = tok.encode("<t5> <t17>", allow_special=True)
    found = [tok.time_index(i) for i in ids if tok.time_index(i) is not None]
    assert found == [5, 17]


@pytest.mark.parametrize("text", ["<t5>", "at <t5> and <t17>", "<extra_id_0>System", "<video>", "<s> </s>"])
def test_user_text_never_becomes_special(tok: LitaTokenizer, text: str) -> None:
    ids = tok.encode(text, allow_special=False)
    assert not any(tok.is_special_id(i) for i in ids)
    assert tok.bos_id not in ids and tok.eos_id not in ids
    assert tok.decode(ids) == text


def test_plain_text_encodes_identically_either_way(tok: LitaTokenizer) -> None:
    text = "When does the dog jump over the fence? Answer in 12 words."
    assert tok.encode(text, allow_special=False) == tok.encode(text, allow_special=True)


def test_encode_add_bos(tok: LitaTokenizer) -> None:
    ids = tok.encode("the dog", allow_special=True, add_bos=True)
    assert ids[0] == tok.bos_id == 1


def test_decode_round_trips_and_skips_fake_ids(tok: LitaTokenizer) -> None:
    text = "The man opens the door <t3> <t40> then <extra_id_8> at 512 seconds."
    ids = tok.encode(text, allow_special=True)
    assert tok.decode(ids) == text
    fake = [tok.vocab_size, tok.vocab_size + 7, -1]
    assert tok.decode([tok.bos_id, *ids[:3], *fake, *ids[3:], tok.eos_id]) == text
