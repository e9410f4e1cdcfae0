"""The ``lita`` ensemble served by the real tritonserver: parity, streaming, bad input, concurrency."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from triton_calls import request_inputs, run

from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.serving.inprocess import LitaPipeline
from lita_build.repository import check_model_repository
from lita_serve.serving.demo import QUESTION

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def pipeline(tiny_repo):
    return LitaPipeline(tiny_repo, device="cpu")


def test_repository_configs_match_lita_json(tiny_repo):
    assert check_model_repository(tiny_repo) == []


def test_models_ready(triton_server):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    for model in ("preprocess", "vision_encoder", "llm", "postprocess", "lita"):
        assert client.is_model_ready(model), model


@pytest.mark.parametrize("name", ["red_3s", "moving_5s"])
def test_greedy_answer_equals_in_process(triton_server, pipeline, sample_videos, name):
    video = sample_videos[name].read_bytes()
    expected = pipeline.ask(video, QUESTION, SamplingParams(max_tokens=10))
    got = run(triton_server.grpc_url, request_inputs(video, QUESTION, max_tokens=10))
    assert got.error is None, got.error
    assert got.raw_text == expected.raw_text
    assert got.text == expected.text
    assert got.num_output_tokens == len(expected.token_ids)
    assert got.duration == pytest.approx(expected.duration)


def test_streaming_sends_tokens_one_by_one(triton_server, pipeline, sample_videos):
    video = sample_videos["red_3s"].read_bytes()
    expected = pipeline.ask(video, QUESTION, SamplingParams(max_tokens=8))
    got = run(triton_server.grpc_url, request_inputs(video, QUESTION, max_tokens=8, stream=True))
    assert got.error is None, got.error
    # one response per generated token, then a final (empty) one
    assert len(got.texts) == len(expected.token_ids) + 1
    assert got.texts[-1] == ""
    assert got.raw_text == expected.raw_text


def test_declared_duration_is_used_for_times(triton_server, sample_videos):
    got = run(triton_server.grpc_url, request_inputs(sample_videos["red_3s"].read_bytes(), QUESTION,
                                                     duration=42.5, max_tokens=4))
    assert got.error is None, got.error
    assert got.duration == pytest.approx(42.5)
    assert isinstance(json.loads(got.segments), list)


def _bad_requests(video: bytes):
    return {
        "corrupt video": (request_inputs(b"\x00\x01garbage" * 100, QUESTION), "video"),
        "empty video": (request_inputs(b"", QUESTION), "empty"),
        "video over the size limit": (request_inputs(b"\x00" * ((1 << 20) + 10), QUESTION), "limit"),
        "missing question": (request_inputs(video, None), "text_input"),
        "wrong dtype": (request_inputs(video, QUESTION, max_tokens=(4.0, np.float32)), "max_tokens"),
        "max_tokens 0": (request_inputs(video, QUESTION, max_tokens=0), "max_tokens"),
        "max_tokens over limit": (request_inputs(video, QUESTION, max_tokens=10_000), "max_tokens"),
        "negative temperature": (request_inputs(video, QUESTION, temperature=-0.5, greedy=False), "temperature"),
        "negative duration": (request_inputs(video, QUESTION, duration=-3.0), "duration"),
    }


@pytest.mark.parametrize("case", list(_bad_requests(b"").keys()))
def test_bad_request_gets_clear_error_and_server_keeps_serving(triton_server, pipeline, sample_videos, case):
    video = sample_videos["blue_2s"].read_bytes()
    inputs, keyword = _bad_requests(video)[case]
    bad = run(triton_server.grpc_url, inputs)
    assert bad.error is not None, f"{case}: expected an error"
    assert keyword in str(bad.error).lower(), str(bad.error)
    good = run(triton_server.grpc_url, request_inputs(video, QUESTION, max_tokens=4))
    assert good.error is None, good.error
    assert good.raw_text == pipeline.ask(video, QUESTION, SamplingParams(max_tokens=4)).raw_text


def test_eight_concurrent_requests_of_mixed_lengths(triton_server, pipeline, sample_videos):
    names = ["red_3s", "moving_5s", "blue_2s"]
    jobs = [(names[i % 3], 3 + (i * 5) % 12) for i in range(8)]
    expected = {(n, m): pipeline.ask(sample_videos[n].read_bytes(), QUESTION, SamplingParams(max_tokens=m)).raw_text
                for n, m in set(jobs)}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda job: run(triton_server.grpc_url, request_inputs(sample_videos[job[0]].read_bytes(), QUESTION,
                                                                   max_tokens=job[1])), jobs))
    for job, got in zip(jobs, results):
        assert got.error is None, got.error
        assert got.raw_text == expected[job], job
