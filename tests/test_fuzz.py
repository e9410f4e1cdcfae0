"""Bounded fuzzing of the steps that touch untrusted data: video decoding, rendering, time-token parsing.

Preprocess may only fail with a typed :class:`InvalidInputError` (INVALID_ARG on the server);
postprocess and the time-token parser must never raise for any generated id / text sequence.
Example counts are fixed and small so the whole file stays well under 30 s.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from helpers_text import converted_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from videos import make_mp4

from lita_serve.config import LitaConfig
from lita_serve.errors import InvalidInputError
from lita_serve.postprocess.render import Renderer
from lita_serve.preprocess.frame_decode import available_backends
from lita_serve.preprocess.request import prepare_video
from lita_serve.preprocess.video import sample_video
from lita_serve.text.time_tokens import parse_time_tokens, time_token
from lita_serve.text.tokenizer import LitaTokenizer

BASE = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None)


def fuzz(examples: int) -> settings:
    """Deterministic, bounded: ``examples`` inputs, no example database, no per-example deadline."""
    return settings(BASE, max_examples=examples)


MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def mp4_bytes(tmp_path_factory) -> bytes:
    """A real 12-frame H.264 mp4 (small, so every mutated copy decodes quickly)."""
    path = make_mp4(tmp_path_factory.mktemp("fuzz") / "seed.mp4", seconds=1.5, fps=8, size=(48, 32))
    return path.read_bytes()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> LitaTokenizer:
    return LitaTokenizer.from_file(converted_model(tmp_path_factory.mktemp("fuzz_tok"), "1.0"))


def _decode_or_typed_error(data: bytes, backend: str) -> None:
    """Decode ``data``; any outcome but success or an InvalidInputError subclass fails the test."""
    try:
        video = sample_video(data, 4, 32, MEAN, STD, max_bytes=1 << 20, max_duration_s=600.0, max_frames=16,
                             backend=backend)
    except InvalidInputError as exc:
        assert str(exc), "typed errors must carry a message naming the problem"
        return
    assert video.frames.shape == (4, 3, 32, 32)
    assert video.duration > 0


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """``seed`` with random byte flips, a random cut, a duplicated or a deleted span."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    kind = draw(st.sampled_from(["none", "cut", "dup", "delete"]))
    a = draw(st.integers(0, len(data)))
    b = draw(st.integers(a, min(len(data), a + 512)))
    if kind == "cut":
        data = data[:a]
    elif kind == "dup":
        data = data[:b] + data[a:b] + data[b:]
    elif kind == "delete":
        data = data[:a] + data[b:]
    return bytes(data)


@pytest.mark.parametrize("backend", available_backends())
def test_mutated_mp4_decodes_or_fails_typed(mp4_bytes, backend):
    @fuzz(80)
    @given(data=mutated(mp4_bytes))
    def check(data):
        _decode_or_typed_error(data, backend)

    check()


@fuzz(120)
@given(data=st.one_of(st.binary(max_size=2048),
                      st.builds(lambda head, tail: head + tail,
                                st.sampled_from([b"\x00\x00\x00\x18ftypmp42", b"\x89PNG\r\n\x1a\n", b"RIFF",
                                                 b"\x1aE\xdf\xa3", b"ID3", b"OggS"]),
                                st.binary(max_size=1024))))
def test_random_bytes_fail_typed(data):
    _decode_or_typed_error(data, "auto")


@fuzz(40)
@given(cut=st.floats(0.0, 1.0), duration=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
def test_prepare_video_only_typed_errors(mp4_bytes, cut, duration):
    """The whole preprocess step (declared duration included) on truncated real videos."""
    cfg = LitaConfig.from_name("tiny")
    cfg = replace(cfg, lita=replace(cfg.lita, sample_frames=4), vision=replace(cfg.vision, image_size=28))
    try:
        video = prepare_video(mp4_bytes[: int(len(mp4_bytes) * cut)], cfg, duration)
    except InvalidInputError:
        return
    assert video.frames.shape == (4, 3, 28, 28)
    assert video.duration > 0


def _ids(tokenizer: LitaTokenizer):
    n = tokenizer.vocab_size
    return st.lists(st.one_of(st.integers(-5, n + 300), st.sampled_from(tokenizer.time_token_ids),
                              st.sampled_from([tokenizer.bos_id, tokenizer.eos_id])), max_size=60)


def test_renderer_never_raises(tokenizer):
    renderer = Renderer(tokenizer, tokenizer.num_time_tokens)

    @fuzz(200)
    @given(ids=_ids(tokenizer), new_tokens=st.integers(-100, 100),
           duration=st.floats(1e-3, 1e7, allow_nan=False, allow_infinity=False))
    def check(ids, new_tokens, duration):
        chunk = renderer.render(ids, new_tokens, duration)
        assert isinstance(chunk.text, str) and isinstance(chunk.raw_text, str)
        chunk.segments_json()  # serialisable
        for seg in chunk.segments:
            assert 0.0 <= seg.start <= seg.end <= duration * 1.0001

    check()


def test_streamed_deltas_concatenate_to_the_whole_answer(tokenizer):
    """Rendering token by token (as the server streams) gives the same raw text as rendering at once."""
    renderer = Renderer(tokenizer, tokenizer.num_time_tokens)

    @fuzz(60)
    @given(ids=st.lists(st.one_of(st.integers(3, tokenizer.vocab_size - 1),
                                  st.sampled_from(tokenizer.time_token_ids)), max_size=25))
    def check(ids):
        pieces = [renderer.render(ids[: i + 1], 1, 30.0).raw_text for i in range(len(ids))]
        whole = renderer.render(ids, len(ids), 30.0).raw_text
        assert "".join(pieces).strip() == whole.strip()

    check()


TOKENISH = st.sampled_from(["<t", ">", "<t0>", "<t99>", "<t100>", "<t-1>", "<t05x>", "<t>", "<t5>", " to ",
                            " and ", "-", " ", "<extra_id_0>", "<video>", "\n", "é", "0", "9"])


@fuzz(300)
@given(text=st.one_of(st.text(max_size=200), st.lists(st.one_of(TOKENISH, st.text(max_size=4)), max_size=40)
                      .map("".join)),
       duration=st.floats(1e-3, 1e6, allow_nan=False, allow_infinity=False),
       n=st.integers(2, 200))
def test_parse_time_tokens_never_raises(text, duration, n):
    parsed = parse_time_tokens(text, duration, n)
    assert parsed.raw_text == text
    for seg in parsed.segments:
        assert seg.start <= seg.end
    # every in-range token was rendered: none of them survives verbatim
    for k in range(min(n, 100)):
        if time_token(k) in text:
            assert len(parsed.times) > 0
            break
