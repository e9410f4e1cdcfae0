"""The client SDK against the real tritonserver serving the tiny LITA model, plus its local pieces."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import time

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from videos import make_mp4

from lita_client import (
    Answer,
    AsyncLitaClient,
    InvalidRequestError,
    LitaClient,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
    VideoInputError,
)
from lita_client.batch import OrderedWriter, parse_prompt
from lita_client.errors import translate
from lita_client.wire import SAMPLING_NAMES, request_arrays
from lita_client.video_input import read_video, resolve_media_path
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.serving.inprocess import LitaPipeline
from lita_client.contract import SAMPLING_INPUTS

MAX_TOKENS = 6
QUESTIONS = ("When does the colour change?", "What happens in the video?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(triton_server):
    with LitaClient(triton_server.grpc_url, timeout=60, wait_ready=30) as c:
        yield c


@pytest.fixture(scope="module")
def pipeline(tiny_repo):
    return LitaPipeline(tiny_repo)


# --- local pieces (no server) ------------------------------------------------------------------

def test_video_sources_all_give_the_file_bytes(tmp_path):
    data = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) + b"\x00\x00"
    path = tmp_path / "v.mp4"
    path.write_bytes(data)
    assert read_video(path) == read_video(str(path)) == read_video(data) == read_video(io.BytesIO(data)) == data
    assert read_video(bytearray(data)) == data
    with pytest.raises(VideoInputError, match="not found"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoInputError, match="binary mode"):
        read_video(io.StringIO("text"))
    with pytest.raises(VideoInputError, match="directory"):
        read_video(tmp_path)


def test_media_paths_cannot_escape_the_base(tmp_path):
    base = tmp_path / "media"
    (base / "sub").mkdir(parents=True)
    (base / "sub" / "a.mp4").write_bytes(b"x")
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"y")
    (base / "link_out.mp4").symlink_to(outside)
    (base / "link_in.mp4").symlink_to(base / "sub" / "a.mp4")

    assert resolve_media_path(base, "sub/a.mp4") == (base / "sub" / "a.mp4").resolve()
    assert resolve_media_path(base, str(base / "sub" / "a.mp4")) == (base / "sub" / "a.mp4").resolve()
    assert resolve_media_path(base, "link_in.mp4") == (base / "sub" / "a.mp4").resolve()
    for bad, why in [("../secret.mp4", r"'\.\.'"), ("sub/../../secret.mp4", r"'\.\.'"),
                     (str(outside), "outside"), ("link_out.mp4", "outside"), ("", "non-empty")]:
        with pytest.raises(VideoInputError, match=why):
            resolve_media_path(base, bad)


def test_request_tensors_keep_binary_video_and_use_the_server_table():
    video = b"\x01\x02video\x00\x00\x00"
    arrays = {name: (arr, dt) for name, arr, dt in request_arrays(video, "q?", 2.5, {"max_tokens": 4, "greedy": True},
                                                                  stream=False)}
    assert arrays["video"][0].shape == (1, 1) and arrays["video"][0].dtype == np.object_
    assert arrays["video"][0][0, 0] == video  # trailing zero bytes survive
    assert arrays["text_input"][0][0, 0] == b"q?"
    assert arrays["max_tokens"] == (arrays["max_tokens"][0], SAMPLING_INPUTS["max_tokens"][1])
    assert arrays["max_tokens"][0].dtype == np.int32 and arrays["stream"][0][0, 0] == np.False_
    assert "temperature" not in arrays  # unset parameters are left to the server
    assert set(SAMPLING_NAMES) == set(SAMPLING_INPUTS) - {"stream"}
    with pytest.raises(InvalidRequestError, match="unknown sampling"):
        request_arrays(video, "q", None, {"beam_width": 2}, stream=False)
    with pytest.raises(InvalidRequestError, match="max_tokens must be an integer"):
        request_arrays(video, "q", None, {"max_tokens": True}, stream=False)
    with pytest.raises(InvalidRequestError, match="temperature must be a finite number"):
        request_arrays(video, "q", None, {"temperature": float("nan")}, stream=False)


def test_errors_are_translated_by_status_code():
    url = "h:1"
    cases = {
        "StatusCode.UNAVAILABLE": ServerUnavailableError,
        "StatusCode.DEADLINE_EXCEEDED": RequestTimeoutError,
        "StatusCode.INVALID_ARGUMENT": InvalidRequestError,
        "StatusCode.NOT_FOUND": ModelNotReadyError,
        "StatusCode.INTERNAL": ServerError,
    }
    for status, cls in cases.items():
        # The same text under different codes: only the code decides the class.
        err = translate(InferenceServerException("boom\nsecond line", status=status), url, timeout=3)
        assert type(err) is cls, status
        assert "\n" not in str(err)


def test_codeless_stream_errors_are_classified_by_the_server_markers():
    from lita_client.contract import INTERNAL_ERROR_MARKER, SERVER_BUSY_MARKER

    cases = {
        "in ensemble 'lita', max_tokens must be > 0, got 0": InvalidRequestError,
        f"in ensemble 'lita', {INTERNAL_ERROR_MARKER} RuntimeError: boom": ServerError,
        f"{SERVER_BUSY_MARKER} 64 requests in flight": ServerUnavailableError,
        "Stub process 'llm_0_0' is not healthy.": ServerError,
        "Request for unknown model: 'lita' is not found": ModelNotReadyError,
    }
    for message, cls in cases.items():
        assert type(translate(InferenceServerException(message, status=None), "h:1")) is cls, message


def test_prompt_lines_and_ordered_output():
    good = parse_prompt(3, json.dumps({"video": "a.mp4", "text": "q", "category": "c", "duration": 4}))
    assert (good.question_id, good.video, good.question, good.duration, good.error) == (3, "a.mp4", "q", 4, None)
    assert "not valid JSON" in parse_prompt(1, "{oops").error
    assert "'text'" in parse_prompt(2, json.dumps({"video": "a.mp4", "question_id": "x"})).error
    assert "'duration'" in parse_prompt(2, json.dumps({"video": "a", "text": "q", "duration": "5s"})).error

    out = io.StringIO()
    writer = OrderedWriter(out)
    writer.put(2, {"i": 2})
    writer.put(1, {"i": 1})
    assert out.getvalue() == ""
    writer.put(0, {"i": 0})
    assert [json.loads(line)["i"] for line in out.getvalue().splitlines()] == [0, 1, 2]


def test_answer_json_round_trip():
    answer = Answer("at 1.5s", "at <t3>", [(1.5, 2.0)], 10.0, 100, 3, {"ttft_ms": 1.0}, {"total_ms": 2.0})
    data = json.loads(answer.to_json())
    assert data["segments"] == [[1.5, 2.0]] and data["text"] == "at 1.5s" and data["stats"] == {"ttft_ms": 1.0}


# --- a server that is down -------------------------------------------------------------------

def test_server_down_gives_up_with_a_clear_error():
    url = f"127.0.0.1:{free_port()}"
    client = LitaClient(url, timeout=5, retries=2, backoff_s=0.05)
    start = time.monotonic()
    with pytest.raises(ServerUnavailableError, match=r"cannot reach the LITA server at .*gave up after 3 attempts"):
        client.ask(b"not sent", "q")
    assert time.monotonic() - start < 5
    health = client.health()
    assert not health.ok and not health.server_live and "cannot reach" in health.error
    with pytest.raises(ServerUnavailableError, match="not reachable after"):
        client.wait_until_ready(0.3)
    with pytest.raises(ServerUnavailableError, match="gave up after 2 attempts"):
        asyncio.run(AsyncLitaClient(url, timeout=5, retries=1, backoff_s=0.05).ask(b"x", "q"))


# --- the real server ---------------------------------------------------------------------------

def test_ask_and_stream_match_the_in_process_pipeline(client, pipeline, sample_videos):
    path = sample_videos["moving_5s"]
    params = dict(max_tokens=MAX_TOKENS, greedy=True)
    ref = pipeline.ask(path.read_bytes(), QUESTIONS[0], SamplingParams(**params))

    answer = client.ask(path, QUESTIONS[0], **params)
    assert (answer.text, answer.raw_text) == (ref.text, ref.raw_text)
    assert answer.num_output_tokens == len(ref.token_ids)
    assert len(answer.segments) == len(ref.segments)
    for (start, end), seg in zip(answer.segments, ref.segments):  # the server rounds to milliseconds
        assert (start, end) == (pytest.approx(seg.start, abs=1e-3), pytest.approx(seg.end, abs=1e-3))
    assert answer.duration == pytest.approx(5.0, abs=0.2) and answer.num_input_tokens == ref.num_input_tokens
    assert {"ttft_ms", "generate_ms"} <= set(answer.stats)  # encode timings are absent on a cache hit
    assert answer.timings["total_ms"] >= answer.timings["first_response_ms"] > 0

    with open(path, "rb") as handle:
        stream = client.stream(handle, QUESTIONS[0], **params)
        pieces = list(stream)
    assert len(pieces) >= 1 and "".join(pieces) == answer.text
    assert stream.answer.raw_text == answer.raw_text and stream.answer.num_output_tokens == answer.num_output_tokens


def test_invalid_requests_carry_the_server_message(client, sample_videos):
    with pytest.raises(InvalidRequestError, match="max_tokens must be > 0"):
        client.ask(sample_videos["blue_2s"], "q", max_tokens=0)
    with pytest.raises(InvalidRequestError, match="not a readable video"):
        client.ask(b"this is not a video" + os.urandom(64), "q", max_tokens=2)
    # The client keeps working after a failed request.
    assert client.ask(sample_videos["blue_2s"], "q", max_tokens=1).num_output_tokens == 1


def test_client_timeout_is_a_timeout_error(triton_server, tmp_path):
    # A video the server has never seen, so no cached embedding answers within the timeout.
    video = make_mp4(tmp_path / "fresh.mp4", seconds=1.0, fps=5, size=(64, 48),
                     color_fn=lambda i: tuple(int(x) for x in np.random.default_rng().integers(0, 255, 3)))
    with LitaClient(triton_server.grpc_url, timeout=0.05, retries=0) as fast:
        with pytest.raises(RequestTimeoutError, match="within the client timeout"):
            fast.ask(video, "q", max_tokens=2)


def test_async_16_concurrent_requests_match_the_sync_answers(client, pipeline, triton_server, sample_videos):
    combos = [(name, q) for name in ("red_3s", "blue_2s") for q in QUESTIONS]
    params = dict(max_tokens=4, greedy=True)
    expected = {}
    for name, q in combos:
        answer = client.ask(sample_videos[name], q, **params)
        ref = pipeline.ask(sample_videos[name].read_bytes(), q, SamplingParams(**params))
        assert answer.raw_text == ref.raw_text and answer.num_output_tokens == len(ref.token_ids)
        expected[name, q] = answer
    jobs = [combos[i % len(combos)] for i in range(16)]

    async def run():
        async with AsyncLitaClient(triton_server.grpc_url, timeout=120, wait_ready=30) as aclient:
            assert await aclient.is_ready()
            return await asyncio.gather(*(aclient.ask(sample_videos[n].read_bytes(), q, **params) for n, q in jobs))

    answers = asyncio.run(run())
    assert len(answers) == 16
    for (name, q), answer in zip(jobs, answers):
        ref = expected[name, q]
        assert (answer.text, answer.raw_text, answer.segments, answer.num_output_tokens) == \
               (ref.text, ref.raw_text, ref.segments, ref.num_output_tokens)


def test_async_stream_and_errors(triton_server, sample_videos, client):
    ref = client.ask(sample_videos["red_3s"], QUESTIONS[1], max_tokens=4, greedy=True)

    async def run():
        async with AsyncLitaClient(triton_server.grpc_url, timeout=60) as aclient:
            stream = aclient.stream(sample_videos["red_3s"], QUESTIONS[1], max_tokens=4, greedy=True)
            pieces = [p async for p in stream]
            with pytest.raises(InvalidRequestError, match="max_tokens must be > 0"):
                await aclient.ask(sample_videos["red_3s"], "q", max_tokens=0)
            return pieces, stream.answer

    pieces, answer = asyncio.run(run())
    assert "".join(pieces) == ref.text and answer.raw_text == ref.raw_text


def test_health_of_a_running_server(client):
    health = client.health()
    assert health.ok and health.model == "lita" and health.error is None
    assert client.is_ready()
