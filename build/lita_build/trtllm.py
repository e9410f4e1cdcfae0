"""TensorRT-LLM: the LLaMA decoder as a TensorRT-LLM checkpoint, the ``trtllm-build`` command and
the Triton ``tensorrt_llm`` model for the GPU deployment.

Checkpoint format (TensorRT-LLM ``docs/source/architecture/checkpoint.md``): a directory with one
``config.json`` (``architecture``, ``dtype``, ``vocab_size``, ``hidden_size``, ``num_hidden_layers``,
``num_attention_heads``, ``num_key_value_heads``, ``hidden_act``, ``intermediate_size``,
``norm_epsilon``, ``position_embedding_type``, ``mapping.{world_size,tp_size,pp_size}``,
``quantization``...) and one ``rank{i}.safetensors`` per GPU rank. Linear weights are
(out_features, in_features). LLaMA names and tensor-parallel splits follow
``tensorrt_llm/models/llama/convert.py``: ``transformer.vocab_embedding.weight``;
per layer ``input_layernorm``, ``attention.qkv`` (cat of this rank's q, k, v rows),
``attention.dense`` (o_proj, split on input), ``post_layernorm``, ``mlp.fc`` (HF ``gate_proj``),
``mlp.gate`` (HF ``up_proj``), ``mlp.proj`` (``down_proj``, split on input);
``transformer.ln_f.weight``; ``lm_head.weight`` (split on vocab rows, padded to a multiple of tp).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from lita_serve.config import LitaConfig
from lita_serve.llm.llama import LlamaDecoder
from lita_serve.llm.trtllm_bls import TABLE_TYPES
from lita_serve.llm.trtllm_release import TrtllmRelease, trtllm_release
from lita_serve.vision_encoder.visual_tokens import num_visual_tokens
from lita_serve.errors import CheckpointError, MissingDependencyError

DTYPES = {name: torch_dtype for name, (_, torch_dtype) in TABLE_TYPES.items()}


def require_tensorrt_llm() -> None:
    """MissingDependencyError (one message: what to install, which container) unless TensorRT-LLM is usable."""
    if importlib.util.find_spec("tensorrt_llm") is None or shutil.which("trtllm-build") is None:
        raise MissingDependencyError(
            "--engine tensorrt_llm needs NVIDIA TensorRT-LLM (the `tensorrt_llm` package and its `trtllm-build` "
            "command) on a machine with an NVIDIA GPU: run the build inside NVIDIA's container "
            f"{trtllm_release().image} (`docker compose run build`, see docs/DEPLOY_GPU.md) or `pip install "
            "tensorrt-llm` from NVIDIA's index; --dry-run writes everything but the engines without it; "
            "--engine torch needs neither")


def trtllm_config(cfg: LitaConfig, dtype: str, tp_size: int, quantization: dict | None = None) -> dict:
    """The checkpoint's ``config.json`` for ``cfg``'s decoder; ``quantization`` is its
    ``quantization`` block (:func:`lita_build.trtllm_quant.quant_config`; none by default)."""
    t = cfg.text
    return {
        "architecture": "LlamaForCausalLM",
        "dtype": dtype,
        "logits_dtype": "float32",
        "vocab_size": t.vocab_size,
        "max_position_embeddings": t.max_position_embeddings,
        "hidden_size": t.hidden_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads,
        "head_size": t.hidden_size // t.num_attention_heads,
        "hidden_act": "silu",
        "intermediate_size": t.intermediate_size,
        "norm_epsilon": t.rms_norm_eps,
        "position_embedding_type": "rope_gpt_neox",
        "rotary_base": t.rope_theta,
        "rotary_scaling": None,
        "use_parallel_embedding": False,
        "embedding_sharding_dim": 0,
        "share_embedding_table": False,
        "mapping": {"world_size": tp_size, "tp_size": tp_size, "pp_size": 1},
        "quantization": dict(quantization or {"quant_algo": None, "kv_cache_quant_algo": None}),
    }


def _check_parallel(cfg: LitaConfig, tp_size: int) -> None:
    t = cfg.text
    problems = [f"{name}={value} is not divisible by tp_size={tp_size}"
                for name, value in (("num_attention_heads", t.num_attention_heads),
                                    ("num_key_value_heads", t.num_key_value_heads),
                                    ("intermediate_size", t.intermediate_size)) if value % tp_size]
    if tp_size < 1 or problems:
        raise CheckpointError(f"cannot split the decoder {tp_size} ways: " + "; ".join(problems or ["tp_size < 1"]))


def _rows(weight: Tensor, tp: int, rank: int) -> Tensor:
    return weight.chunk(tp, dim=0)[rank]


def _cols(weight: Tensor, tp: int, rank: int) -> Tensor:
    return weight.chunk(tp, dim=1)[rank]


def rank_weights(decoder: LlamaDecoder, tp_size: int, rank: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """TensorRT-LLM LLaMA tensors of one tensor-parallel rank (out_features, in_features layout)."""
    model = decoder.model
    vocab = decoder.lm_head.weight.shape[0]
    padded = -(-vocab // tp_size) * tp_size
    lm_head = decoder.lm_head.weight
    if padded != vocab:
        lm_head = torch.cat([lm_head, lm_head.new_zeros(padded - vocab, lm_head.shape[1])])
    out = {"transformer.vocab_embedding.weight": model.embed_tokens.weight,
           "transformer.ln_f.weight": model.norm.weight,
           "lm_head.weight": _rows(lm_head, tp_size, rank)}
    for i, layer in enumerate(model.layers):
        p, attn, mlp = f"transformer.layers.{i}.", layer.self_attn, layer.mlp
        qkv = [_rows(m.weight, tp_size, rank) for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
        out.update({
            p + "input_layernorm.weight": layer.input_layernorm.weight,
            p + "attention.qkv.weight": torch.cat(qkv, dim=0),  # [(q + 2*kv)/tp * D, H]
            p + "attention.dense.weight": _cols(attn.o_proj.weight, tp_size, rank),
            p + "post_layernorm.weight": layer.post_attention_layernorm.weight,
            p + "mlp.fc.weight": _rows(mlp.gate_proj.weight, tp_size, rank),
            p + "mlp.gate.weight": _rows(mlp.up_proj.weight, tp_size, rank),
            p + "mlp.proj.weight": _cols(mlp.down_proj.weight, tp_size, rank),
        })
    return {k: v.detach().to(dtype=dtype).contiguous().cpu().clone() for k, v in out.items()}


def write_trtllm_checkpoint(decoder: LlamaDecoder, cfg: LitaConfig, out_dir: Path, *, dtype: str = "float16",
                            tp_size: int = 1, quantization: dict | None = None) -> list[Path]:
    """Write ``config.json`` + ``rank{i}.safetensors``; works without TensorRT-LLM installed."""
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    _check_parallel(cfg, tp_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(trtllm_config(cfg, dtype, tp_size, quantization), indent=2) + "\n")
    files = [out_dir / "config.json"]
    for rank in range(tp_size):
        path = out_dir / f"rank{rank}.safetensors"
        save_file(rank_weights(decoder, tp_size, rank, DTYPES[dtype]), str(path))
        files.append(path)
    return files


@dataclass(frozen=True)
class EngineLimits:
    """Sizes baked into the TensorRT-LLM engine, derived from the config."""

    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_multimodal_len: int

    @classmethod
    def for_config(cls, cfg: LitaConfig, max_batch_size: int) -> "EngineLimits":
        """Visual tokens per video (sample frames -> LITA layout) x batch for the prompt table; the
        prompt holds the visual tokens plus up to ``max_prompt_tokens`` text tokens."""
        n_vis = num_visual_tokens(cfg)
        limits, positions = cfg.limits, cfg.text.max_position_embeddings
        seq = min(positions, n_vis + limits.max_prompt_tokens + limits.max_new_tokens)
        if seq <= n_vis + 1:
            raise CheckpointError(f"max_position_embeddings={positions} leaves no room for text after "
                                  f"{n_vis} visual tokens")
        return cls(max_batch_size, min(n_vis + limits.max_prompt_tokens, seq - 1), seq, n_vis * max_batch_size)


def trtllm_build_command(checkpoint_dir: Path, engine_dir: Path, limits: EngineLimits, dtype: str,
                         tp_size: int = 1) -> list[str]:
    """The ``trtllm-build`` argv. ``--max_multimodal_len`` is the current alias of
    ``--max_prompt_embedding_table_size`` (visual embeddings arrive as a prompt table)."""
    return ["trtllm-build",
            "--checkpoint_dir", str(checkpoint_dir),
            "--output_dir", str(engine_dir),
            "--gemm_plugin", dtype,
            "--gpt_attention_plugin", dtype,
            "--max_batch_size", str(limits.max_batch_size),
            "--max_input_len", str(limits.max_input_len),
            "--max_seq_len", str(limits.max_seq_len),
            "--max_multimodal_len", str(limits.max_multimodal_len),
            "--workers", str(tp_size)]


def _pbtxt_tensor(name: str, dtype: str, dims: str, *, optional: bool = False, ragged: bool = False,
                  scalar: bool = False) -> str:
    extra = ("\n    reshape: { shape: [ ] }" if scalar else "") + ("\n    optional: true" if optional else "") + \
            ("\n    allow_ragged_batch: true" if ragged else "")
    return f'  {{\n    name: "{name}"\n    data_type: TYPE_{dtype}\n    dims: [ {dims} ]{extra}\n  }}'


def tensorrt_llm_model_config(engine_dir: str, limits: EngineLimits, dtype: str, tp_size: int = 1, *,
                              release: TrtllmRelease | None = None, gpus: tuple[int, ...] | None = None) -> str:
    """``config.pbtxt`` of the ``tensorrt_llm`` model, after the backend's
    ``all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt`` (the inputs LITA uses), with the
    input names of ``release``.

    ``gpu_device_ids`` lists the GPUs of the engine's ranks (``gpus`` or 0..tp_size-1). With more
    than one rank the backend runs in orchestrator mode (``TRTLLM_ORCHESTRATOR=1`` in the server's
    environment): it starts one ``executor_worker_path`` process per rank itself, so plain
    ``tritonserver`` serves a tensor-parallel engine without an MPI launch.
    """
    release = release or trtllm_release()
    table_type = TABLE_TYPES[dtype][0]
    device_ids = tuple(gpus) if gpus else tuple(range(tp_size))
    if len(device_ids) != tp_size:
        raise CheckpointError(f"--gpus names {len(device_ids)} GPUs for a {tp_size}-rank engine (--tp-size)")
    inputs = [
        _pbtxt_tensor("input_ids", "INT32", "-1", ragged=True),
        _pbtxt_tensor("input_lengths", "INT32", "1", scalar=True),
        _pbtxt_tensor("request_output_len", "INT32", "1", scalar=True),
        _pbtxt_tensor("end_id", "INT32", "1", optional=True, scalar=True),
        _pbtxt_tensor("pad_id", "INT32", "1", optional=True, scalar=True),
        _pbtxt_tensor("temperature", "FP32", "1", optional=True, scalar=True),
        _pbtxt_tensor("runtime_top_k", "INT32", "1", optional=True, scalar=True),
        _pbtxt_tensor("runtime_top_p", "FP32", "1", optional=True, scalar=True),
        _pbtxt_tensor("repetition_penalty", "FP32", "1", optional=True, scalar=True),
        _pbtxt_tensor(release.seed_input, "UINT64", "1", optional=True, scalar=True),
        _pbtxt_tensor("streaming", "BOOL", "1", optional=True, scalar=True),
        _pbtxt_tensor("prompt_embedding_table", table_type, "-1, -1", optional=True, ragged=True),
        _pbtxt_tensor("prompt_vocab_size", "INT32", "1", optional=True, scalar=True),
    ]
    outputs = [_pbtxt_tensor("output_ids", "INT32", "-1, -1"), _pbtxt_tensor("sequence_length", "INT32", "-1")]
    params = {"gpt_model_type": "inflight_fused_batching", "gpt_model_path": engine_dir,
              "batch_scheduler_policy": "guaranteed_no_evict", "kv_cache_free_gpu_mem_fraction": "0.85",
              "exclude_input_in_output": "true", "max_beam_width": "1",
              "gpu_device_ids": ",".join(str(i) for i in device_ids),
              "executor_worker_path": release.executor_worker_path}
    text = ('name: "tensorrt_llm"\nbackend: "tensorrtllm"\n'
            f"max_batch_size: {limits.max_batch_size}\n"
            "model_transaction_policy {\n  decoupled: true\n}\n"
            "dynamic_batching {\n"
            f"  preferred_batch_size: [ {limits.max_batch_size} ]\n  max_queue_delay_microseconds: 0\n}}\n"
            "input [\n" + ",\n".join(inputs) + "\n]\noutput [\n" + ",\n".join(outputs) + "\n]\n"
            "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n")
    for key, value in params.items():
        text += f'parameters: {{\n  key: "{key}"\n  value: {{\n    string_value: "{value}"\n  }}\n}}\n'
    return text
