"""Every input layout, built with the torch engine and served by the real tritonserver, gives the
greedy answer of the in-process pipeline over the source model's own weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from triton_calls import request_inputs, run

from build_fixtures import (base_tokenizer, hf_lita, llava_pretrained, model_for, nemo_distributed, nemo_legacy,
                            vicuna_plus_projector)
from lita_build import build
from lita_serve.config import LitaConfig
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.serving.inprocess import LitaPipeline
from lita_serve.serving.launcher import Ports, TritonServer
from lita_build.repository import write_model_repository
from lita_serve.engine.torch_engine import export_torch_engine
from lita_serve.serving.demo import QUESTION

pytestmark = pytest.mark.server


def _hf(version):
    def make(model, root):
        return hf_lita(model, root / "ckpt"), {}
    return version, make


def _pretrained(model, root):
    llm, tower = llava_pretrained(model, root)
    return llm, {"vision_tower": tower, "overrides": {"sample_frames": 8, "num_spatial_frames": 4}}


def _vicuna(model, root):
    llm, proj, tower = vicuna_plus_projector(model, root)
    return llm, {"vision_tower": tower, "mm_projector": proj, "overrides": {"sample_frames": 8}}


def _nemo(writer):
    def make(model, root):
        nemo_file, tower = writer(model, root)
        return nemo_file, {"vision_tower": tower}
    return make


LAYOUTS = {
    "hf-1.0": _hf("1.0"),
    "hf-1.5": _hf("1.5"),
    "sharegpt4v-separate-tower": ("1.5", _pretrained),
    "vicuna-mm-projector": ("1.0", _vicuna),
    "nemo-legacy": ("1.0", _nemo(nemo_legacy)),
    "nemo-distributed": ("1.0", _nemo(nemo_distributed)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_built_repository_serves_the_source_models_answer(tmp_path: Path, sample_videos, layout: str) -> None:
    version, make = LAYOUTS[layout]
    model = model_for(version, seed=12)
    checkpoint, kwargs = make(model, tmp_path / "src")
    repo = tmp_path / "repo"
    build(checkpoint, base_tokenizer(tmp_path / "base.model"), lita_version=version, output=repo, progress=False,
          **kwargs)
    # The source model's own weights written directly (no build step), with the LITA options the
    # build resolved (flags or presets), as the in-process reference.
    built = LitaConfig.load(repo / "lita.json")
    model.config = replace(model.config, lita=built.lita)
    reference = tmp_path / "reference"
    export_torch_engine(model, repo / "tokenizer.model", reference)
    write_model_repository(reference, model.config)
    video = sample_videos["red_3s"].read_bytes()
    expected = LitaPipeline(reference, device="cpu").ask(video, QUESTION, SamplingParams(max_tokens=8))
    with TritonServer(repo, ports=Ports.free()) as server:
        got = run(server.grpc_url, request_inputs(video, QUESTION, max_tokens=8))
    assert got.error is None, got.error
    assert expected.token_ids  # a real answer, not an immediate stop
    assert got.raw_text == expected.raw_text and got.num_output_tokens == len(expected.token_ids)
