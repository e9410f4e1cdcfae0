"""TensorRT-LLM checkpoint writer, checked against TensorRT-LLM's documented checkpoint format.

Reference: NVIDIA/TensorRT-LLM ``docs/source/architecture/checkpoint.md`` ("TensorRT LLM Checkpoint":
config.json fields ``architecture``, ``dtype``, ``vocab_size``, ``hidden_size``, ``num_hidden_layers``,
``num_attention_heads``, ``num_key_value_heads``, ``hidden_act``, ``intermediate_size``, ``norm_epsilon``,
``position_embedding_type``, ``mapping.world_size/tp_size/pp_size``, ``quantization.*``; weights in
``rank{i}.safetensors``; linear weights are (out_feature, in_feature)) and the LLaMA converter
``tensorrt_llm/models/llama/convert.py`` (HF up_proj -> ``mlp.gate``, gate_proj -> ``mlp.fc``,
down_proj -> ``mlp.proj``, o_proj -> ``attention.dense`` split on dim 1, q/k/v fused as ``attention.qkv``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lita_build.trtllm import (EngineLimits, tensorrt_llm_model_config, trtllm_build_command,
                                     write_trtllm_checkpoint)
from lita_build.checkpoint.random_init import build_random_model
from lita_serve.config import LitaConfig
from lita_serve.vision_encoder.visual_tokens import num_visual_tokens
from lita_serve.errors import CheckpointError

TINY = LitaConfig.from_name("tiny")
MANDATORY = ("architecture", "dtype", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "hidden_act")


@pytest.fixture(scope="module")
def model():
    return build_random_model(TINY, seed=2)


def _read(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_config_and_names_tp1(model, tmp_path: Path) -> None:
    files = write_trtllm_checkpoint(model.decoder, TINY, tmp_path, dtype="float16", tp_size=1)
    assert [f.name for f in files] == ["config.json", "rank0.safetensors"]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert all(k in cfg for k in MANDATORY)
    t = TINY.text
    assert cfg["architecture"] == "LlamaForCausalLM" and cfg["dtype"] == "float16" and cfg["hidden_act"] == "silu"
    assert (cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]) == \
        (t.vocab_size, t.hidden_size, t.num_hidden_layers, t.intermediate_size)
    assert cfg["num_key_value_heads"] == t.num_key_value_heads and cfg["norm_epsilon"] == t.rms_norm_eps
    assert cfg["position_embedding_type"] == "rope_gpt_neox" and cfg["rotary_base"] == t.rope_theta
    assert cfg["mapping"] == {"world_size": 1, "tp_size": 1, "pp_size": 1}
    assert cfg["quantization"]["quant_algo"] is None
    w = _read(tmp_path / "rank0.safetensors")
    h, f, v = t.hidden_size, t.intermediate_size, t.vocab_size
    expected = {"transformer.vocab_embedding.weight": (v, h), "transformer.ln_f.weight": (h,), "lm_head.weight": (v, h)}
    for i in range(t.num_hidden_layers):
        p = f"transformer.layers.{i}."
        expected.update({p + "input_layernorm.weight": (h,), p + "attention.qkv.weight": (3 * h, h),
                         p + "attention.dense.weight": (h, h), p + "post_layernorm.weight": (h,),
                         p + "mlp.fc.weight": (f, h), p + "mlp.gate.weight": (f, h), p + "mlp.proj.weight": (h, f)})
    assert {k: tuple(x.shape) for k, x in w.items()} == expected
    assert all(x.dtype == torch.float16 for x in w.values())
    layer = model.decoder.model.layers[1]
    half = lambda x: x.detach().to(torch.float16)  # noqa: E731
    assert torch.equal(w["transformer.layers.1.mlp.fc.weight"], half(layer.mlp.gate_proj.weight))
    assert torch.equal(w["transformer.layers.1.mlp.gate.weight"], half(layer.mlp.up_proj.weight))
    assert torch.equal(w["transformer.layers.1.attention.qkv.weight"][h:2 * h], half(layer.self_attn.k_proj.weight))


def test_tensor_parallel_two(model, tmp_path: Path) -> None:
    write_trtllm_checkpoint(model.decoder, TINY, tmp_path, dtype="bfloat16", tp_size=2)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["mapping"] == {"world_size": 2, "tp_size": 2, "pp_size": 1}
    ranks = [_read(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    t = TINY.text
    h, f, v = t.hidden_size, t.intermediate_size, t.vocab_size
    p = "transformer.layers.0."
    for w in ranks:
        assert tuple(w[p + "attention.qkv.weight"].shape) == (3 * h // 2, h)
        assert tuple(w[p + "attention.dense.weight"].shape) == (h, h // 2)
        assert tuple(w[p + "mlp.fc.weight"].shape) == (f // 2, h)
        assert tuple(w[p + "mlp.proj.weight"].shape) == (h, f // 2)
        assert tuple(w["lm_head.weight"].shape) == (v // 2, h)
        assert tuple(w["transformer.vocab_embedding.weight"].shape) == (v, h)  # use_parallel_embedding false
        assert w[p + "attention.qkv.weight"].dtype == torch.bfloat16
    attn = model.decoder.model.layers[0].self_attn
    bf = lambda x: x.detach().to(torch.bfloat16)  # noqa: E731
    # rank 1 holds the second half of the heads of q, then of k, then of v
    qkv1 = ranks[1][p + "attention.qkv.weight"]
    assert torch.equal(qkv1[: h // 2], bf(attn.q_proj.weight[h // 2:]))
    assert torch.equal(qkv1[h // 2: h], bf(attn.k_proj.weight[h // 2:]))
    assert torch.equal(torch.cat([r[p + "attention.dense.weight"] for r in ranks], dim=1), bf(attn.o_proj.weight))
    with pytest.raises(CheckpointError, match="tp_size=3"):
        write_trtllm_checkpoint(model.decoder, TINY, tmp_path / "bad", tp_size=3)


def test_build_command_and_limits(tmp_path: Path) -> None:
    cfg = LitaConfig.from_name("lita-13b")
    limits = EngineLimits.for_config(cfg, max_batch_size=8)
    n_vis = num_visual_tokens(cfg)
    assert n_vis == 356 and limits.max_multimodal_len == 356 * 8
    assert limits.max_input_len == n_vis + cfg.limits.max_prompt_tokens
    assert limits.max_seq_len == limits.max_input_len + cfg.limits.max_new_tokens <= cfg.text.max_position_embeddings
    cmd = trtllm_build_command(tmp_path / "ckpt", tmp_path / "engine", limits, "float16", tp_size=2)
    assert cmd == ["trtllm-build", "--checkpoint_dir", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "engine"),
                   "--gemm_plugin", "float16", "--gpt_attention_plugin", "float16", "--max_batch_size", "8",
                   "--max_input_len", "2404", "--max_seq_len", "2916", "--max_multimodal_len", "2848",
                   "--workers", "2"]


def test_tensorrt_llm_model_config() -> None:
    limits = EngineLimits(8, 2404, 2916, 2848)
    text = tensorrt_llm_model_config("/models/tensorrt_llm/1/engine", limits, "float16")
    assert 'backend: "tensorrtllm"' in text and "max_batch_size: 8" in text and "decoupled: true" in text
    for name in ("input_ids", "input_lengths", "request_output_len", "prompt_embedding_table", "prompt_vocab_size",
                 "output_ids", "sequence_length"):
        assert f'name: "{name}"' in text
    assert 'string_value: "/models/tensorrt_llm/1/engine"' in text and "inflight_fused_batching" in text
    assert "data_type: TYPE_FP16\n    dims: [ -1, -1 ]" in text  # prompt table in the engine's dtype
