"""LITA's SentencePiece tokenizer: conversion (adding time/extra tokens), a tiny trainer, a wrapper.

LITA extends the LLaMA/LLaVA SentencePiece model with ``<t0>..<t{N-1}>`` and NeMo's
``<extra_id_K>`` tokens as USER_DEFINED pieces appended after the base vocabulary, in the order of
:func:`lita_serve.special_tokens.special_token_order`. :class:`LitaTokenizer` wraps a converted
model and keeps the two kinds of text apart: template text may contain those pieces, while text a
user typed (``<t5>``, ``<extra_id_0>``, ``<video>``) always encodes as ordinary characters.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import io
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import sentencepiece as spm

from lita_serve.config import DEFAULT_NUM_TIME_TOKENS
from lita_serve.errors import CheckpointError, InvalidInputError
from lita_serve.special_tokens import special_token_order
from lita_serve.time_tokens import time_tokens

logger = logging.getLogger(__name__)

_PB2_MODULE = "sentencepiece.sentencepiece_model_pb2"


@functools.lru_cache(maxsize=1)
def model_proto_class() -> Any:
    """SentencePiece's ``ModelProto`` message class, from the pb2 module shipped with sentencepiece.

    Newer sentencepiece wheels ship a pb2 generated for protobuf >= 5 (it imports
    ``google.protobuf.runtime_version``). When the installed protobuf is older (pinned by other
    packages), the same serialized file descriptor embedded in that module is loaded into a
    private descriptor pool instead, which yields an identical message class.
    """
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb2

        return pb2.ModelProto
    except ImportError:
        pass
    from google.protobuf import descriptor_pool, message_factory

    spec = importlib.util.find_spec(_PB2_MODULE)
    if spec is None or spec.origin is None:
        raise CheckpointError(f"{_PB2_MODULE} is missing from the sentencepiece package")
    blob = _serialized_descriptor(Path(spec.origin).read_text())
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(blob)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("sentencepiece.ModelProto"))


def _serialized_descriptor(source: str) -> bytes:
    """The bytes literal passed to ``AddSerializedFile`` in a generated pb2 module's source."""
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile"
                and node.args and isinstance(node.args[0], ast.Constant)):
            return node.args[0].value
    raise CheckpointError(f"no serialized descriptor found in {_PB2_MODULE}")


def load_model_proto(path: str | Path) -> Any:
    """Parse a ``.model`` file into a ``ModelProto``; a missing/corrupt file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"tokenizer model not found: {path}")
    proto = model_proto_class()()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError, a plain Exception subclass
        raise CheckpointError(f"{path} is not a SentencePiece model: {exc}") from exc
    if len(proto.pieces) == 0:
        raise CheckpointError(f"{path} is not a SentencePiece model: it has no pieces")
    return proto


def _piece_type(name: str) -> int:
    return model_proto_class().SentencePiece.Type.Value(name)


def add_user_defined_pieces(proto: Any, tokens: Iterable[str]) -> list[str]:
    """Append ``tokens`` as USER_DEFINED pieces (score 0) unless already present; return the added."""
    present = {p.piece for p in proto.pieces}
    added: list[str] = []
    for token in tokens:
        if token in present:
            logger.debug("piece %s already present, not added", token)
            continue
        piece = proto.pieces.add()
        piece.piece = token
        piece.score = 0.0
        piece.type = _piece_type("USER_DEFINED")
        present.add(token)
        added.append(token)
    return added


def convert_tokenizer(
    input_model: Path,
    output_model: Path,
    version: str,
    num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS,
) -> list[str]:
    """Write ``output_model``: ``input_model`` plus LITA's tokens for ``version`` ("1.0" or "1.5").

    Tokens already in the model are not added twice, so converting a converted model is a no-op.
    Returns the tokens added, in id order (the first gets id = base vocabulary size).
    """
    order = special_token_order(version, num_time_tokens)
    proto = load_model_proto(input_model)
    base = len(proto.pieces)
    added = add_user_defined_pieces(proto, order)
    output_model = Path(output_model)
    output_model.parent.mkdir(parents=True, exist_ok=True)
    output_model.write_bytes(proto.SerializeToString())
    logger.info("LITA %s tokenizer: %d base pieces, %d added -> %s", version, base, len(added), output_model)
    return added


def train_tiny_sentencepiece(texts: list[str], output_model: Path, vocab_size: int = 400) -> Path:
    """Train a small LLaMA-like BPE SentencePiece model on ``texts`` and write it to ``output_model``.

    Same special ids as LLaMA (unk 0, ``<s>`` 1, ``</s>`` 2, no pad), byte fallback (so any
    character round-trips), split digits, identity normalisation and a dummy ``▁`` prefix.
    Single-threaded with no sampling or shuffling, so the same texts give the same model.
    """
    lines = [t for t in texts if t and t.strip()]
    if not lines:
        raise InvalidInputError("train_tiny_sentencepiece needs at least one non-empty text")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        model_type="bpe",
        vocab_size=int(vocab_size),
        hard_vocab_limit=False,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
    )
    output_model = Path(output_model)
    output_model.parent.mkdir(parents=True, exist_ok=True)
    output_model.write_bytes(buf.getvalue())
    return output_model


def _processor(proto: Any) -> spm.SentencePieceProcessor:
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto.SerializeToString())
    return sp


class LitaTokenizer:
    """A converted LITA SentencePiece model with time-token lookups and safe user-text encoding.

    Two processors share one vocabulary: ``_special`` is the model as converted, in which
    USER_DEFINED pieces (``<tK>``, ``<extra_id_K>``) match in text; ``_plain`` is a copy where
    those pieces are CONTROL pieces, which SentencePiece never produces from text. Ids are
    identical in both, so user text encoded with ``_plain`` can never contain a special id while
    ordinary text tokenizes exactly as with ``_special``.
    """

    def __init__(self, proto: Any, num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS, source: str = "<memory>"):
        self.num_time_tokens = int(num_time_tokens)
        self._special = _processor(proto)
        plain = model_proto_class()()
        plain.CopyFrom(proto)
        user_defined, control = _piece_type("USER_DEFINED"), _piece_type("CONTROL")
        self.special_pieces: dict[str, int] = {}
        for i, piece in enumerate(plain.pieces):
            if piece.type == user_defined:
                self.special_pieces[piece.piece] = i
                piece.type = control
        self._plain = _processor(plain)
        missing = [t for t in time_tokens(self.num_time_tokens) if t not in self.special_pieces]
        if missing:
            raise CheckpointError(
                f"tokenizer {source} lacks {len(missing)} time tokens (first: {missing[0]}); "
                f"convert it with `lita tokenizer convert` first"
            )
        self.time_token_ids: list[int] = [self.special_pieces[t] for t in time_tokens(self.num_time_tokens)]
        self._time_index = {tid: k for k, tid in enumerate(self.time_token_ids)}
        self._special_ids = frozenset(self.special_pieces.values())

    @classmethod
    def from_file(cls, path: str | Path, num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS) -> "LitaTokenizer":
        """Load a converted ``.model`` file."""
        return cls(load_model_proto(path), num_time_tokens, source=str(path))

    # --- vocabulary ----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._special.get_piece_size()

    @property
    def bos_id(self) -> int:
        return self._special.bos_id()

    @property
    def eos_id(self) -> int:
        return self._special.eos_id()

    def piece_to_id(self, piece: str) -> int:
        """Id of a special piece such as ``<extra_id_8>``; CheckpointError if the model lacks it."""
        if piece not in self.special_pieces:
            raise CheckpointError(f"tokenizer has no special piece {piece!r}")
        return self.special_pieces[piece]

    def id_to_piece(self, token_id: int) -> str:
        return self._special.id_to_piece(int(token_id))

    def time_index(self, token_id: int) -> int | None:
        """K for the id of ``<tK>``, else None."""
        return self._time_index.get(int(token_id))

    def is_special_id(self, token_id: int) -> bool:
        """True for the id of any USER_DEFINED piece (time tokens, extra ids)."""
        return int(token_id) in self._special_ids

    def contains_special(self, text: str) -> bool:
        """True when ``text`` contains the surface form of any special piece."""
        return any(piece in text for piece in self.special_pieces)

    # --- encode / decode -----------------------------------------------------------------
    def encode(self, text: str, *, allow_special: bool, add_bos: bool = False) -> list[int]:
        """Token ids of ``text`` (one SentencePiece call, so one dummy ``▁`` prefix).

        ``allow_special=True`` is for template text: ``<t5>`` or ``<extra_id_8>`` become their ids.
        ``allow_special=False`` is for text a user typed: such strings stay ordinary characters.
        """
        processor = self._special if allow_special else self._plain
        ids = list(processor.encode(text, out_type=int))
        if not allow_special and any(i in self._special_ids for i in ids):
            # Unreachable with SentencePiece's semantics for CONTROL pieces; kept as a hard guard.
            raise InvalidInputError("user text produced a special token id; refusing to encode it")
        return ([self.bos_id] if add_bos and self.bos_id >= 0 else []) + ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; ``<tK>`` and ``<extra_id_K>`` stay verbatim, BOS/EOS vanish and ids
        outside the tokenizer (negative, or >= vocab_size such as visual fake ids) are skipped."""
        n = self.vocab_size
        return self._special.decode([int(i) for i in ids if 0 <= int(i) < n])
