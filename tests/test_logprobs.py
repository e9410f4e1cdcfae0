"""Token log-probabilities and a confidence for every time: the arithmetic, the rendering, and the
real server answering the demo question with `lita-client ask ... --json --logprobs`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from lita_serve.llm.token_logprobs import token_logprobs
from lita_serve.text.logprobs import TokenLogprobs
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.errors import InvalidInputError


def test_time_distribution_mean_and_std():
    """Restricted to the time tokens: p = softmax over their logits; mean and std of the index."""
    vocab, time_ids = 50, torch.arange(40, 50)  # ten time tokens, ids 40..49
    logits = torch.full((vocab,), -5.0)
    logits[[43, 44]] = 2.0  # two equally likely neighbouring times
    logits[7] = 3.0  # a text token that is even more likely overall
    rec = token_logprobs(logits, 44, top=3, time_ids=time_ids)
    p = torch.softmax(logits[time_ids], -1).double()
    k = torch.arange(10, dtype=torch.float64)
    mean = float((p * k).sum())
    assert rec.time is not None
    assert rec.time[0] == pytest.approx(float(p[4]))
    assert rec.time[1] == pytest.approx(mean) and 3.4 < mean < 3.6
    assert rec.time[2] == pytest.approx(math.sqrt(float((p * (k - mean) ** 2).sum())))
    assert rec.logprob == pytest.approx(float(torch.log_softmax(logits, -1)[44]))
    assert [i for i, _ in rec.top] == [7, 43, 44] or [i for i, _ in rec.top] == [7, 44, 43]
    assert token_logprobs(logits, 7, top=0, time_ids=time_ids).time is None  # not a time token
    assert TokenLogprobs.from_json(json.loads(json.dumps(rec.to_json()))).time == pytest.approx(rec.time)


def test_logprobs_range_comes_from_the_contract():
    SamplingParams(logprobs=0).validate(256)
    SamplingParams(logprobs=20).validate(256)
    with pytest.raises(InvalidInputError, match="logprobs must be in \\[0, 20\\]"):
        SamplingParams(logprobs=21).validate(256)
    with pytest.raises(InvalidInputError, match="logprobs must be an integer"):
        SamplingParams(logprobs=1.5).validate(256)


def test_segments_carry_the_confidence_of_their_tokens(tmp_path):
    from helpers_text import converted_model

    from lita_serve.postprocess.render import Renderer
    from lita_serve.text.tokenizer import LitaTokenizer

    tok = LitaTokenizer.from_file(converted_model(tmp_path))
    t = tok.time_token_ids
    ids = [t[60], t[25]]  # "<t60> <t25>": the pair is reordered, start is <t25>
    recs = [TokenLogprobs(math.log(0.5), [], (0.6, 60.4, 2.0)), TokenLogprobs(math.log(0.9), [], (0.95, 25.1, 0.5))]
    chunk = Renderer(tok, 100).render(ids, 2, 99.0, recs)  # one index = 1 s
    (seg,) = json.loads(chunk.segments_json())
    assert seg["start"] == pytest.approx(25.0) and seg["end"] == pytest.approx(60.0)
    assert seg["start_prob"] == pytest.approx(0.9) and seg["start_mean"] == pytest.approx(25.1)
    assert seg["start_std"] == pytest.approx(0.5) and seg["end_std"] == pytest.approx(2.0)
    assert [e["token"] for e in json.loads(chunk.logprobs_json())] == ["<t60>", "<t25>"]
    plain = Renderer(tok, 100).render(ids, 2, 99.0)
    assert set(json.loads(plain.segments_json())[0]) == {"start", "end"} and plain.logprobs == []


@pytest.mark.server
def test_cli_prints_a_confidence_for_every_time(demo_server, tmp_path):
    """On the clear demo video the model is sure of its times: higher probabilities and a far smaller
    spread than on a video without the red circle (a blue square instead), and the mean next to the
    chosen time; text mode prints `mean ± std` per segment."""
    from lita_serve.data.synthetic import Event, make_event_video
    from lita_serve.serving.demo import DEMO_DURATION_S, QUESTION, make_demo_video

    video = make_demo_video(tmp_path / "demo.mp4")
    unsure_video = make_event_video(tmp_path / "no_circle.mp4", duration_s=DEMO_DURATION_S, fps=10, width=96,
                                    height=64, seed=3, events=[Event(shape="square", color="blue", start_s=3.0,
                                                                     end_s=20.0, x=0.75, y=0.3, size=0.13)]).path
    cli = [sys.executable, "-m", "lita_client.cli", "--url", demo_server.grpc_url, "ask", str(video), QUESTION]
    out = subprocess.run([*cli, "--json", "--logprobs"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["segments"], answer
    bin_s = answer["duration"] / 99
    (sure,) = answer["segment_details"]
    for end in ("start", "end"):
        assert 0 < sure[f"{end}_prob"] <= 1
        assert abs(sure[f"{end}_mean"] - sure[end]) < 3 * bin_s, sure
    unsure = subprocess.run([*cli[:-2], str(unsure_video), QUESTION, "--json", "--logprobs"], capture_output=True,
                            text=True, timeout=300)
    other = json.loads(unsure.stdout)["segment_details"][0]
    assert sure["start_std"] + sure["end_std"] < 0.5 * (other["start_std"] + other["end_std"]), (sure, other)
    assert sure["start_prob"] * sure["end_prob"] > other["start_prob"] * other["end_prob"], (sure, other)
    assert len(answer["logprobs"]) == answer["num_output_tokens"]
    assert all(e["logprob"] <= 0 and e["top"] == [] for e in answer["logprobs"])
    text = subprocess.run([*cli, "--logprobs", "3"], capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "segment 1:" in text.stdout and " ± " in text.stdout
    plain = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=300)
    assert json.loads(plain.stdout)["logprobs"] == [] and "start_std" not in json.loads(plain.stdout)["segment_details"][0]


@pytest.mark.server
def test_streamed_logprobs_cover_every_token(demo_server, tmp_path):
    from lita_client import LitaClient
    from lita_serve.serving.demo import QUESTION, make_demo_video

    video = make_demo_video(tmp_path / "demo.mp4")
    with LitaClient(demo_server.grpc_url) as client:
        stream = client.stream(video, QUESTION, logprobs=2)
        pieces = list(stream)
        answer = stream.answer
    assert "".join(pieces) == answer.text
    assert len(answer.logprobs) == answer.num_output_tokens and all(len(e["top"]) == 2 for e in answer.logprobs)
    assert answer.confidence_lines()
