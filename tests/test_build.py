"""`build` on small checkpoints in every input layout: the built repository reproduces the source
model's greedy tokens in-process; bad inputs fail with errors that name the problem."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from build_fixtures import (base_tokenizer, frames_for, greedy, hf_lita, llava_pretrained, model_for, nemo_distributed,
                            nemo_legacy, tiny_config, vicuna_plus_projector)
from lita_build import SourceLayout, build, describe_source
from lita_build.checkpoint import load_lita
from lita_serve.errors import CheckpointError, InvalidInputError, MissingDependencyError
from lita_serve.adapters.layout import RepositoryLayout, STEPS
from lita_build.repository import check_model_repository
from lita_serve.text.tokenizer import LitaTokenizer, convert_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    return base_tokenizer(tmp_path_factory.mktemp("tok") / "base.model")


@pytest.fixture(scope="module", params=["1.0", "1.5"])
def version(request) -> str:
    return request.param


def _assert_same_answer(model, repo: Path) -> None:
    frames = frames_for(model.config)
    want, want_table = greedy(model, frames)
    got, got_table = greedy(repo, frames)
    torch.testing.assert_close(got_table, want_table, rtol=0, atol=1e-6)
    assert got == want and len(want) == 8


def _assert_repository(repo: Path, version: str, summary) -> None:
    layout = RepositoryLayout.of(repo)
    cfg = layout.load_config()
    assert cfg.lita.lita_version == version
    assert check_model_repository(repo) == []  # configs match lita.json
    assert all((repo / name / "config.pbtxt").is_file() for name in STEPS)
    tok = LitaTokenizer.from_file(layout.tokenizer_path, cfg.lita.num_time_tokens)
    assert tok.vocab_size <= cfg.text.vocab_size and cfg.text.vocab_size % 128 == 0
    table = summary.table()
    assert "decoder weights" in table and str(summary.output) in table and "total" in table
    assert json.loads((repo / "build.json").read_text())["engine"] == "torch"


def test_hf_lita_layouts(tmp_path: Path, tokenizer: Path, version: str) -> None:
    model = model_for(version)
    ckpt = hf_lita(model, tmp_path / "ckpt")
    assert describe_source(ckpt, lita_version=version).layout is SourceLayout.HF_LITA
    summary = build(ckpt, tokenizer, lita_version=version, output=tmp_path / "repo", progress=False)
    assert summary.source == f"HF LITA {version}" and summary.tokens_added == 110
    _assert_repository(tmp_path / "repo", version, summary)
    _assert_same_answer(model, tmp_path / "repo")
    cfg = summary.config
    assert (cfg.lita.video_arch, cfg.lita.visual_token_format) == (tiny_config(version).lita.video_arch,
                                                                   tiny_config(version).lita.visual_token_format)


def test_llava_pretrained_with_separate_tower(tmp_path: Path, tokenizer: Path) -> None:
    model = model_for("1.5", seed=4)
    llm, tower = llava_pretrained(model, tmp_path)
    src = describe_source(llm, lita_version="1.5", vision_tower=tower)
    assert src.layout is SourceLayout.LLAVA_PRETRAINED and src.is_pretrained
    overrides = {"sample_frames": 8, "num_spatial_frames": 4}
    summary = build(llm, tokenizer, lita_version="1.5", output=tmp_path / "repo", vision_tower=tower,
                    overrides=overrides, progress=False)
    lita = summary.config.lita
    assert (lita.video_arch, lita.visual_token_format, lita.sample_frames) == ("temporal_all_resolution",
                                                                               "im_vid_start_end", 8)
    assert any("from the LITA 1.5 preset" in n for n in summary.notes)
    _assert_same_answer(model, tmp_path / "repo")


def test_vicuna_plus_mm_projector(tmp_path: Path, tokenizer: Path) -> None:
    model = model_for("1.0", seed=5)
    llm, proj, tower = vicuna_plus_projector(model, tmp_path)
    assert describe_source(llm, lita_version="1.0", mm_projector=proj).layout is SourceLayout.LLM_MM_PROJECTOR
    with pytest.raises(CheckpointError, match="--mm-projector"):
        describe_source(llm, lita_version="1.0")
    summary = build(llm, tokenizer, lita_version="1.0", output=tmp_path / "repo", vision_tower=tower,
                    mm_projector=proj, overrides={"sample_frames": 8}, progress=False)
    assert summary.config.lita.video_arch == "temporal_spatial_pool"
    _assert_same_answer(model, tmp_path / "repo")


@pytest.mark.parametrize("writer", [nemo_legacy, nemo_distributed], ids=["legacy", "distributed"])
def test_nemo_layouts(tmp_path: Path, tokenizer: Path, writer) -> None:
    model = model_for("1.0", seed=6)
    nemo_file, tower = writer(model, tmp_path)
    src = describe_source(nemo_file, lita_version="1.0", vision_tower=tower)
    assert src.layout is SourceLayout.NEMO
    summary = build(nemo_file, tokenizer, lita_version="1.0", output=tmp_path / "repo", vision_tower=tower,
                    progress=False)
    assert summary.source == src.label and summary.config.lita.sample_frames == 8
    _assert_same_answer(model, tmp_path / "repo")


def test_vocab_grows_to_the_tokenizer_and_matches_in_process_load(tmp_path: Path, tokenizer: Path) -> None:
    from dataclasses import replace

    from lita_build.checkpoint.random_init import build_random_model

    cfg = tiny_config("1.0")
    model = build_random_model(replace(cfg, text=replace(cfg.text, vocab_size=384)), seed=8)
    ckpt = hf_lita(model, tmp_path / "ckpt")
    summary = build(ckpt, tokenizer, lita_version="1.0", output=tmp_path / "repo", progress=False)
    tok = LitaTokenizer.from_file(tmp_path / "repo" / "tokenizer.model")
    assert tok.vocab_size > 384 and summary.config.text.vocab_size == 512
    _assert_same_answer(load_lita(ckpt, tokenizer_size=tok.vocab_size), tmp_path / "repo")


def test_tokenizer_converted_once_and_order_checked(tmp_path: Path, tokenizer: Path) -> None:
    model = model_for("1.0")
    ckpt = hf_lita(model, tmp_path / "ckpt")
    converted = tmp_path / "converted.model"
    convert_tokenizer(tokenizer, converted, "1.0")
    summary = build(ckpt, converted, lita_version="1.0", output=tmp_path / "repo", progress=False)
    assert summary.tokens_added == 0  # already converted: nothing added twice
    assert (tmp_path / "repo" / "tokenizer.model").read_bytes() == converted.read_bytes()
    hf = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**hf, "lita_version": "1.5"}))
    with pytest.raises(CheckpointError, match="lita_version='1.5'"):
        build(ckpt, tokenizer, lita_version="1.0", output=tmp_path / "r2", progress=False)
    (ckpt / "config.json").write_text(json.dumps({k: v for k, v in hf.items() if k != "lita_version"}))
    with pytest.raises(CheckpointError, match="order other than LITA 1.5"):
        build(ckpt, converted, lita_version="1.5", output=tmp_path / "r3", progress=False)


def test_bad_inputs_are_named(tmp_path: Path, tokenizer: Path) -> None:
    model = model_for("1.0")
    ckpt = hf_lita(model, tmp_path / "ckpt")
    with pytest.raises(InvalidInputError, match="unknown LITA options"):
        build(ckpt, tokenizer, lita_version="1.0", output=tmp_path / "r", overrides={"frames": 4}, progress=False)
    with pytest.raises(CheckpointError, match="video_arch='slowfast'"):
        build(ckpt, tokenizer, lita_version="1.0", output=tmp_path / "r", overrides={"video_arch": "slowfast"},
              progress=False)
    with pytest.raises(CheckpointError, match="sample_frames=0"):
        build(ckpt, tokenizer, lita_version="1.0", output=tmp_path / "r", overrides={"sample_frames": 0},
              progress=False)
    from safetensors.torch import load_file, save_file
    weights = load_file(str(ckpt / "model.safetensors"))
    weights.pop("model.layers.1.mlp.up_proj.weight")
    save_file(weights, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing tensors \(1\): model\.layers\.1\.mlp\.up_proj\.weight"):
        build(ckpt, tokenizer, lita_version="1.0", output=tmp_path / "r", progress=False)
    with pytest.raises(InvalidInputError, match="--engine"):
        build(ckpt, tokenizer, lita_version="1.0", output=tmp_path / "r", engine="onnx", progress=False)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_llm") is not None and shutil.which("trtllm-build") is not None,
                    reason="TensorRT-LLM is installed here")
def test_tensorrt_llm_engine_without_tensorrt_llm_is_one_clear_error(tmp_path: Path, tokenizer: Path) -> None:
    ckpt = hf_lita(model_for("1.0"), tmp_path / "ckpt")
    with pytest.raises(MissingDependencyError) as info:
        build(ckpt, tokenizer, lita_version="1.0", engine="tensorrt_llm", output=tmp_path / "repo", progress=False)
    message = str(info.value)
    assert "tensorrt_llm" in message and "trtllm-python-py3" in message and "pip install tensorrt-llm" in message
    assert not (tmp_path / "repo").exists()  # stopped before writing anything


def test_prompt_options_from_the_command_line_reach_lita_json_and_the_decoder(tmp_path: Path, tokenizer: Path) -> None:
    """`lita build --conv-template/--insert-media-token/--no-add-bos/...` are stored in lita.json and the
    decoder service builds its prompt with them; a lita.json without them serves the reference prompt."""
    import numpy as np

    from lita_serve.cli import main
    from lita_serve.config import PromptOptions
    from lita_serve.llm.sampling_params import SamplingParams
    from lita_serve.llm.service import DecoderService, TorchBackend
    from lita_serve.text.prompt import build_input_ids
    from lita_serve.engine.torch_engine import load_decoder
    from lita_serve.vision_encoder.visual_tokens import num_visual_tokens

    ckpt = hf_lita(model_for("1.0"), tmp_path / "ckpt")
    repo = tmp_path / "repo"
    assert main(["build", "--checkpoint", str(ckpt), "--tokenizer", str(tokenizer), "--lita-version", "1.0",
                 "--output", str(repo), "--conv-template", "llava_v1", "--insert-media-token", "right",
                 "--no-add-bos", "--media-separator", "none", "--prompt-tokenization", "whole"]) == 0
    stored = json.loads((repo / "lita.json").read_text())["prompt"]
    assert stored == {"conv_template": "llava_v1", "insert_media_token": "right", "media_separator": "",
                      "add_bos": False, "tokenization": "whole"}
    layout = RepositoryLayout.of(repo)
    cfg = layout.load_config()
    tok = LitaTokenizer.from_file(layout.tokenizer_path, cfg.lita.num_time_tokens)
    service = DecoderService(TorchBackend(load_decoder(layout, cfg, device="cpu", dtype=torch.float32)), tok, cfg)
    n = num_visual_tokens(cfg)
    table = np.zeros((n, cfg.text.hidden_size), np.float32)
    job = service.prepare("When does it start?", table, 10.0, SamplingParams(max_tokens=1), stream=False,
                          emit=lambda e: None)
    assert job.input_ids == build_input_ids(tok, "When does it start?", n, cfg.text.vocab_size, options=cfg.prompt)
    assert job.input_ids[0] != tok.bos_id and job.input_ids[-1] >= 0
    assert "human's questions. USER: When does it start?" in tok.decode(job.input_ids)
    cfg.prompt.insert_media_token = "middle"  # a hand-edited lita.json: refused when the decoder loads
    with pytest.raises(InvalidInputError, match="insert_media_token='middle'"):
        DecoderService(service.backend, tok, cfg)
    # A lita.json written before the prompt options existed: loads with LITA's reference prompt.
    old = json.loads((repo / "lita.json").read_text())
    del old["prompt"]
    (repo / "lita.json").write_text(json.dumps(old))
    assert layout.load_config().prompt == PromptOptions() and check_model_repository(repo) == []


def test_nemo_tensor_parallel_with_stored_tower_builds_the_same_model(tmp_path: Path, tokenizer: Path) -> None:
    """A TP=2 .nemo (mp_rank_00/, mp_rank_01/) with local-spec norms and an unfrozen vision tower stored
    inside: the built repository answers like the source model, with the stored (finetuned) tower
    rather than the pretrained one its config names."""
    from build_fixtures import nemo_config
    from lita_build.checkpoint import save_vision_tower
    from lita_build.checkpoint.files import read_weights
    from nemo_facts import nemo_from_hf, split_tensor_parallel, write_nemo

    model = model_for("1.0", seed=12)
    pretrained = save_vision_tower(model_for("1.0", seed=13), tmp_path / "pretrained_tower")  # same shapes, other weights
    t = model.config.text
    state = nemo_from_hf(read_weights(hf_lita(model, tmp_path / "hf")), t.num_attention_heads, t.num_key_value_heads,
                         norms="local", tower=True)
    cfg = {**nemo_config(model, pretrained), "tensor_model_parallel_size": 2}
    cfg["mm_cfg"]["vision_encoder"]["freeze"] = False
    nemo_file = write_nemo(tmp_path / "tp2.nemo", cfg, split_tensor_parallel(state, 2))
    summary = build(nemo_file, tokenizer, lita_version="1.0", output=tmp_path / "repo", progress=False)
    assert summary.source == ".nemo (tensor-parallel)"
    _assert_same_answer(model, tmp_path / "repo")
