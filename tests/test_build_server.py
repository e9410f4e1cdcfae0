"""A repository built from a distributed .nemo checkpoint, served by the real tritonserver, gives the
greedy answer of the in-process pipeline over the source model's own weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from triton_calls import request_inputs, run

from build_fixtures import base_tokenizer, model_for, nemo_distributed
from lita_serve.build import build
from lita_serve.decode.sampling import SamplingParams
from lita_serve.pipeline import LitaPipeline
from lita_serve.serve.launcher import Ports, TritonServer
from lita_serve.serve.repository import write_model_repository
from lita_serve.serve.torch_engine import export_torch_engine

QUESTION = "When does the red circle appear?"


def test_built_nemo_repository_serves_the_source_models_answer(tmp_path: Path, sample_videos) -> None:
    model = model_for("1.0", seed=12)
    nemo_file, tower = nemo_distributed(model, tmp_path / "src")
    repo = tmp_path / "repo"
    build(nemo_file, base_tokenizer(tmp_path / "base.model"), lita_version="1.0", output=repo, vision_tower=tower,
          progress=False)
    reference = tmp_path / "reference"  # the source model's weights written directly, no build step
    export_torch_engine(model, repo / "tokenizer.model", reference)
    write_model_repository(reference, model.config)
    video = sample_videos["red_3s"].read_bytes()
    expected = LitaPipeline(reference, device="cpu").ask(video, QUESTION, SamplingParams(max_tokens=8))
    server = TritonServer(repo, ports=Ports.free())
    server.start(timeout=240)
    try:
        got = run(server.grpc_url, request_inputs(video, QUESTION, max_tokens=8))
    finally:
        server.stop()
    assert got.error is None, got.error
    assert expected.token_ids  # a real answer, not an immediate stop
    assert got.raw_text == expected.raw_text and got.num_output_tokens == len(expected.token_ids)
