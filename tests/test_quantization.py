"""Quantized decoders.

* PyTorch engine, ``--quantization int8_weight_only``: the repository records it, the ``llm``
  step loads the decoder with int8 linear weights (torchao), and the real server answers about
  a clear demo video the way the same quantized decoder does in process.
* TensorRT-LLM engine, ``--quantization fp8|int4_awq|int8_sq --dry-run``: the checkpoint's
  ``config.json`` carries the ``quantization`` block the current release reads, and
  ``build.json`` the calibration plan and the quantize command.

Upstream facts pinned by ``TRTLLM_FACTS`` (TensorRT-LLM 1.x line, 1.1.0 in the 25.12 container):

* NVIDIA/TensorRT-LLM ``tensorrt_llm/models/modeling_utils.py``: ``QuantConfig`` fields
  (quant_algo, kv_cache_quant_algo, group_size, smoothquant_val, clamp_val, use_meta_recipe,
  has_zero_point, pre_quant_scale, exclude_modules); ``from_dict`` is ``cls(**config)``;
  ``_get_modelopt_qformat``: FP8 -> fp8, W4A16_AWQ -> int4_awq, W8A8_SQ_PER_CHANNEL -> int8_sq.
* NVIDIA/TensorRT-LLM ``tensorrt_llm/quantization/quantize_by_modelopt.py``: ``QUANT_ALGO``
  (int8_sq: W8A8_SQ_PER_CHANNEL, fp8: FP8, int4_awq: W4A16_AWQ), ``quant_cfg_choices``
  (INT8_SMOOTHQUANT_CFG, FP8_DEFAULT_CFG, INT4_AWQ_CFG), AWQ calibration capped at 32 samples,
  fp8 without a KV-cache dtype -> ``kv_cache_quant_algo`` None; ``examples/quantization/quantize.py``:
  ``--awq_block_size`` 128.
* NVIDIA/TensorRT-Model-Optimizer ``modelopt/torch/export/quant_utils.py``
  ``process_layer_quant_config``: int4_awq -> group_size = block size, has_zero_point False,
  pre_quant_scale True; unquantized layers (``*lm_head*`` is disabled in all three configs) go
  to ``exclude_modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lita_build.builder import build
from lita_client import LitaClient
from lita_serve.serving.demo import DEMO_EVENT, QUESTION, make_demo_video
from lita_serve.errors import InvalidInputError
from lita_serve.serving.inprocess import LitaPipeline
from lita_serve.serving.launcher import Ports, TritonServer
from lita_serve.adapters.layout import RepositoryLayout
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.llm.weight_quant import is_quantized, weight_bytes
from lita_serve.adapters.resources import demo_assets
from lita_serve.engine.torch_engine import load_decoder

QUANT_CONFIG_FIELDS = {"quant_algo", "kv_cache_quant_algo", "group_size", "smoothquant_val", "clamp_val",
                       "use_meta_recipe", "has_zero_point", "pre_quant_scale", "exclude_modules"}
# --quantization -> (quant_algo, ModelOpt config, extra fields the AWQ export writes)
TRTLLM_FACTS = {
    "fp8": ("FP8", "FP8_DEFAULT_CFG", {}),
    "int4_awq": ("W4A16_AWQ", "INT4_AWQ_CFG", {"group_size": 128, "has_zero_point": False, "pre_quant_scale": True}),
    "int8_sq": ("W8A8_SQ_PER_CHANNEL", "INT8_SMOOTHQUANT_CFG", {}),
}


def _cli_build(out: Path, *args: str) -> subprocess.CompletedProcess:
    assets = demo_assets()
    return subprocess.run([sys.executable, "-m", "lita_serve.cli", "build", "--checkpoint", str(assets),
                           "--tokenizer", str(assets / "tokenizer.model"), "--lita-version", "1.0",
                           "--output", str(out), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def int8_repo(tmp_path_factory) -> Path:
    """The demo model built with ``lita build --quantization int8_weight_only`` (torch engine)."""
    out = tmp_path_factory.mktemp("int8") / "repo"
    proc = _cli_build(out, "--quantization", "int8_weight_only")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_int8_repository_records_and_loads_int8_weights(int8_repo: Path) -> None:
    layout = RepositoryLayout.of(int8_repo)
    assert layout.manifest().quantization == "int8_weight_only" and layout.quantization() == "int8_weight_only"
    cfg = layout.load_config()
    int8 = load_decoder(layout, cfg, device="cpu")
    fp32 = load_decoder(layout, cfg, device="cpu", quantization="none")
    linears = [m for m in int8.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(is_quantized(m) for m in linears)  # lm_head included
    assert not is_quantized(fp32.lm_head)
    assert int8.model.embed_tokens.weight.dtype == torch.float32  # the prompt-table path stays unquantized
    linear_fp32 = sum(m.weight.numel() * 4 for m in fp32.modules() if isinstance(m, torch.nn.Linear))
    assert weight_bytes(fp32) - weight_bytes(int8) > 0.7 * linear_fp32  # int8 + one scale per row
    ids = torch.arange(1, 40)[None]
    pos = torch.arange(ids.shape[1])[None]
    with torch.inference_mode():
        a, b = int8(int8.embed(ids), pos), fp32(fp32.embed(ids), pos)
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=0.05 * float(b.abs().max()))


@pytest.mark.server
def test_int8_repository_serves_and_answers(int8_repo: Path, tmp_path: Path) -> None:
    video = make_demo_video(tmp_path / "demo.mp4")
    expected = LitaPipeline(int8_repo, device="cpu").ask(video.read_bytes(), QUESTION, SamplingParams(max_tokens=16))
    with TritonServer(int8_repo, ports=Ports.free()) as server, LitaClient(server.grpc_url) as client:
        client.wait_until_ready(60)
        answer = client.ask(video, QUESTION, max_tokens=16)
    assert answer.raw_text == expected.raw_text  # the served llm step ran the same int8 decoder
    assert answer.segments, answer.text
    bin_s = answer.duration / 99
    start, end = answer.segments[0]
    assert abs(start - DEMO_EVENT.start_s) <= 2 * bin_s and abs(end - DEMO_EVENT.end_s) <= 2 * bin_s


@pytest.mark.parametrize("quantization", list(TRTLLM_FACTS))
def test_trtllm_dry_run_writes_the_quantization_the_release_reads(tmp_path: Path, quantization: str) -> None:
    out = tmp_path / "repo"
    proc = _cli_build(out, "--engine", "tensorrt_llm", "--quantization", quantization, "--dry-run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    algo, modelopt_cfg, extra = TRTLLM_FACTS[quantization]
    block = json.loads((out / "tensorrt_llm_checkpoint" / "config.json").read_text())["quantization"]
    assert set(block) <= QUANT_CONFIG_FIELDS  # QuantConfig.from_dict is cls(**config)
    assert block == {"quant_algo": algo, "kv_cache_quant_algo": None, **extra, "exclude_modules": ["lm_head"]}
    trt = json.loads((out / "build.json").read_text())["trtllm"]
    assert trt["quantization"] == quantization and trt["quant_config"] == block
    plan = trt["calibration"]
    assert plan["qformat"] == quantization and plan["modelopt_config"] == modelopt_cfg
    assert plan["num_prompts"] == (32 if quantization == "int4_awq" else 64)
    assert plan["awq_block_size"] == (128 if quantization == "int4_awq" else None)
    command = trt["quantize_command"]
    assert "--dry-run" not in command and command[command.index("--quantization") + 1] == quantization
    # the prompt table keeps the engine's unquantized dtype
    assert 'name: "prompt_embedding_table"\n    data_type: TYPE_FP16' in \
        (out / "tensorrt_llm" / "config.pbtxt").read_text()


def test_quantization_must_match_the_engine(tmp_path: Path) -> None:
    assets = demo_assets()
    for engine, quantization in (("torch", "int4_awq"), ("tensorrt_llm", "int8_weight_only")):
        with pytest.raises(InvalidInputError, match="does not apply to --engine"):
            build(assets, assets / "tokenizer.model", lita_version="1.0", engine=engine, output=tmp_path / engine,
                  quantization=quantization, dry_run=True, progress=False)


def test_calibration_feeds_lita_prompts_with_visual_tokens_to_the_exported_model(tmp_path: Path) -> None:
    """What the real (GPU) build hands ModelOpt: LITA prompts whose visual rows are the encoder's
    output, run through the ``transformers`` LLaMA the export reads, which computes the same
    logits as our decoder (so calibration sees what serving computes)."""
    pytest.importorskip("transformers")
    from build_fixtures import model_for
    from helpers_text import converted_model

    from lita_build.calibration import calibration_batches, calibration_frames
    from lita_build.trtllm_quant import _hf_llama
    from lita_serve.text.tokenizer import LitaTokenizer
    from lita_serve.vision_encoder.visual_tokens import num_visual_tokens

    model = model_for("1.0").eval()
    tok = LitaTokenizer.from_file(converted_model(tmp_path, "1.0"), model.config.lita.num_time_tokens)
    assert model.decoder.vocab_size >= tok.vocab_size
    batches = calibration_batches(model, tok, 3)
    assert len(batches) == 3
    n_vis = num_visual_tokens(model.config)
    pixels, _ = calibration_frames(model, np.random.default_rng(0))
    assert pixels.shape[1] == model.config.lita.sample_frames
    hf = _hf_llama(model.decoder, model.config, torch.float32)
    for batch in batches:
        embeds = batch["inputs_embeds"]  # [1, T, H]
        assert embeds.shape[1] > n_vis and embeds.shape[2] == model.config.text.hidden_size
        with torch.inference_mode():
            ours = model.decoder(embeds, torch.arange(embeds.shape[1]))
            theirs = hf(inputs_embeds=embeds).logits
        torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)


def test_a_real_quantized_trtllm_build_needs_the_gpu_packages(tmp_path: Path) -> None:
    from lita_serve.errors import MissingDependencyError

    assets = demo_assets()
    with pytest.raises(MissingDependencyError):
        build(assets, assets / "tokenizer.model", lita_version="1.0", engine="tensorrt_llm", output=tmp_path / "r",
              quantization="int4_awq", progress=False)


def test_the_13b_memory_figures_count_what_a_loaded_decoder_holds(tmp_path: Path) -> None:
    """benchmarks.decoder_quantization states LITA-13B's memory per scheme from its shapes; the
    same arithmetic must equal what :func:`weight_bytes` measures on decoders loaded for real."""
    from dataclasses import replace

    from benchmarks.decoder_quantization import _write_weights, weight_bytes_by_scheme
    from lita_serve.config import LitaConfig, TextConfig

    text = TextConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    cfg = replace(LitaConfig.from_name("tiny"), text=text)
    layout = RepositoryLayout.of(tmp_path)
    _write_weights(layout, cfg)
    expected = weight_bytes_by_scheme(text)
    measured = {"fp32": weight_bytes(load_decoder(layout, cfg, device="cpu", quantization="none")),
                "bf16": weight_bytes(load_decoder(layout, cfg, device="cpu", dtype=torch.bfloat16, quantization="none")),
                "int8_weight_only": weight_bytes(load_decoder(layout, cfg, device="cpu", dtype=torch.bfloat16,
                                                              quantization="int8_weight_only"))}
    assert measured == {k: expected[k] for k in measured}
