"""Quantized TensorRT-LLM checkpoints: the ``quantization`` block of the checkpoint's
``config.json``, the calibration plan, and the real quantization (NVIDIA ModelOpt through
TensorRT-LLM's quantize API) on a GPU machine.

Facts, read from the upstream sources of the TensorRT-LLM 1.x line (the 25.12 container ships 1.1.0):

* ``tensorrt_llm/models/modeling_utils.py`` ``QuantConfig``: the fields ``quant_algo``,
  ``kv_cache_quant_algo``, ``group_size`` (default 128), ``smoothquant_val``, ``clamp_val``,
  ``use_meta_recipe``, ``has_zero_point``, ``pre_quant_scale``, ``exclude_modules``;
  ``from_dict`` is ``cls(**config)``, so any other key is an error. ``_get_modelopt_qformat``
  maps ``FP8 -> fp8``, ``W4A16_AWQ -> int4_awq``, ``W8A8_SQ_PER_CHANNEL -> int8_sq``.
* ``tensorrt_llm/quantization/quantize_by_modelopt.py``: ``quant_cfg_choices`` (``fp8 ->
  mtq.FP8_DEFAULT_CFG``, ``int4_awq -> mtq.INT4_AWQ_CFG``, ``int8_sq -> mtq.INT8_SMOOTHQUANT_CFG``),
  the ``QUANT_ALGO`` names above, AWQ calibration capped at 32 samples, the AWQ block size set on
  ``quant_cfg["quant_cfg"]["*weight_quantizer"]["block_sizes"][-1]``, ``kv_cache_quant_algo``
  reset to None for fp8 without a KV-cache dtype; ``quantize_model(model, quant_cfg,
  calib_dataloader, batch_size, qformat, auto_quantize_bits)`` calls ``model(**batch)`` per batch.
  ``examples/quantization/quantize.py``: ``--awq_block_size`` 128, ``--calib_size`` 512,
  ``--kv_cache_dtype`` None by default.
* NVIDIA/TensorRT-Model-Optimizer ``modelopt/torch/export/quant_utils.py``
  (``process_layer_quant_config``): ``int4_awq -> {"quant_algo": "W4A16_AWQ", "group_size": block,
  "has_zero_point": False, "pre_quant_scale": True}``, ``int8_sq -> W8A8_SQ_PER_CHANNEL``,
  ``fp8 -> FP8``, and the layers left unquantized in ``exclude_modules``: the three configs
  disable ``*lm_head*``, so ``lm_head`` is there.

The prompt table stays unquantized: visual embeddings reach the engine through the
``prompt_embedding_table`` input in the checkpoint's dtype (float16/bfloat16) and replace rows
of ``transformer.vocab_embedding``, which no algorithm here quantizes (they quantize linear
layers); the KV cache is left unquantized (``kv_cache_quant_algo`` None), so the keys and values
of the visual tokens keep full precision too. Calibration runs on LITA-format prompts *with*
visual embeddings (:mod:`lita_build.calibration`), so the activation ranges FP8 and SmoothQuant
record cover the visual rows the decoder will see.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lita_serve.errors import InvalidInputError, MissingDependencyError
from lita_serve.engine.quantization_names import NO_QUANTIZATION as NONE, TRTLLM_QUANTIZATIONS

log = logging.getLogger(__name__)

AWQ_GROUP_SIZE = 128  # examples/quantization/quantize.py --awq_block_size
AWQ_MAX_CALIB = 32  # quantize_by_modelopt.quantize_and_export caps AWQ calibration at 32 samples
DEFAULT_CALIB = 64  # LITA prompts are long (visual tokens): fewer samples than upstream's 512 text ones

# --quantization -> (the checkpoint's quant_algo, the ModelOpt config name TensorRT-LLM picks)
_ALGOS: dict[str, tuple[str, str]] = {
    "fp8": ("FP8", "FP8_DEFAULT_CFG"),
    "int4_awq": ("W4A16_AWQ", "INT4_AWQ_CFG"),
    "int8_sq": ("W8A8_SQ_PER_CHANNEL", "INT8_SMOOTHQUANT_CFG"),
}


def check_trtllm_quantization(name: str) -> str:
    if name not in TRTLLM_QUANTIZATIONS:
        raise InvalidInputError(f"quantization {name!r} is not one of the TensorRT-LLM engine's "
                                f"{list(TRTLLM_QUANTIZATIONS)}")
    return name


def quant_config(name: str) -> dict[str, Any]:
    """The checkpoint ``config.json``'s ``quantization`` block for ``--quantization name``."""
    if check_trtllm_quantization(name) == NONE:
        return {"quant_algo": None, "kv_cache_quant_algo": None}
    algo = _ALGOS[name][0]
    block: dict[str, Any] = {"quant_algo": algo, "kv_cache_quant_algo": None}
    if name == "int4_awq":
        block.update(group_size=AWQ_GROUP_SIZE, has_zero_point=False, pre_quant_scale=True)
    block["exclude_modules"] = ["lm_head"]
    return block


def check_group_size(name: str, hidden_size: int, intermediate_size: int, tp_size: int) -> None:
    """AWQ groups of :data:`AWQ_GROUP_SIZE` input channels must tile every rank's linear inputs."""
    if name != "int4_awq":
        return
    widths = {"hidden_size": hidden_size, "intermediate_size / tp_size": intermediate_size // tp_size}
    bad = [f"{k}={v}" for k, v in widths.items() if v % AWQ_GROUP_SIZE]
    if bad:
        raise InvalidInputError(f"int4_awq groups {AWQ_GROUP_SIZE} input channels; {', '.join(bad)} is not a multiple")


@dataclass(frozen=True)
class CalibrationPlan:
    """What the real build calibrates on: LITA-format prompts made by :mod:`lita_build.calibration`."""

    qformat: str  # TensorRT-LLM / ModelOpt name: fp8, int4_awq, int8_sq
    modelopt_config: str  # modelopt.torch.quantization.<name>
    num_prompts: int
    batch_size: int
    source: str
    awq_block_size: int | None = None

    @classmethod
    def for_quantization(cls, name: str, num_prompts: int = DEFAULT_CALIB) -> "CalibrationPlan":
        if check_trtllm_quantization(name) == NONE:
            raise InvalidInputError("no calibration without quantization")
        n = min(num_prompts, AWQ_MAX_CALIB) if name == "int4_awq" else num_prompts
        return cls(qformat=name, modelopt_config=_ALGOS[name][1], num_prompts=n, batch_size=1,
                   source=("synthetic event videos (lita_serve.data.synthetic, fixed seed) through the built "
                           "vision encoder; one LITA prompt per video from lita_serve.text.prompt.build_input_ids "
                           "(BOS, Vicuna v1 template, visual tokens in the model's layout, a 'When does ... "
                           "appear?' or 'Describe the video with timestamps.' question), fed as inputs_embeds"),
                   awq_block_size=AWQ_GROUP_SIZE if name == "int4_awq" else None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def require_modelopt() -> None:
    """MissingDependencyError unless NVIDIA ModelOpt, TensorRT-LLM and transformers are importable."""
    missing = [pkg for pkg, mod in (("nvidia-modelopt", "modelopt"), ("tensorrt-llm", "tensorrt_llm"),
                                    ("transformers", "transformers")) if importlib.util.find_spec(mod) is None]
    if missing:
        raise MissingDependencyError(
            f"--quantization with --engine tensorrt_llm needs {', '.join(missing)} on a machine with an NVIDIA GPU: "
            "run the build inside NVIDIA's TensorRT-LLM container (docs/DEPLOY_GPU.md); --dry-run writes the "
            "quantization settings without them")


def _hf_llama(decoder, cfg, dtype: torch.dtype):
    """The decoder as ``transformers.LlamaForCausalLM`` (the same parameter names), which ModelOpt
    knows how to export to a TensorRT-LLM checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    t = cfg.text
    hf_cfg = LlamaConfig(vocab_size=decoder.vocab_size, hidden_size=t.hidden_size,
                         intermediate_size=t.intermediate_size, num_hidden_layers=t.num_hidden_layers,
                         num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
                         rms_norm_eps=t.rms_norm_eps, rope_theta=t.rope_theta,
                         max_position_embeddings=t.max_position_embeddings, tie_word_embeddings=False)
    model = LlamaForCausalLM(hf_cfg).to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in decoder.state_dict().items()}, strict=True)
    return model.eval()


def quantize_checkpoint(model, tokenizer, name: str, plan: CalibrationPlan, out_dir: Path, *, dtype: str,
                        tp_size: int) -> Path:
    """Calibrate and quantize ``model``'s decoder with ModelOpt through TensorRT-LLM's
    ``quantize_model`` and export the TensorRT-LLM checkpoint to ``out_dir`` (GPU only)."""
    require_modelopt()
    if not torch.cuda.is_available():
        raise MissingDependencyError("TensorRT-LLM quantization calibrates on an NVIDIA GPU; none is visible")
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_tensorrt_llm_checkpoint
    from tensorrt_llm.quantization.quantize_by_modelopt import quantize_model

    from lita_build.calibration import calibration_batches

    torch_dtype = getattr(torch, dtype)
    batches = calibration_batches(model, tokenizer, plan.num_prompts, device="cuda", dtype=torch_dtype)
    hf = _hf_llama(model.decoder, model.config, torch_dtype).cuda()
    cfg = copy.deepcopy(getattr(mtq, plan.modelopt_config))
    if plan.awq_block_size:
        weight_quantizer = cfg["quant_cfg"]["*weight_quantizer"]
        (weight_quantizer[0] if isinstance(weight_quantizer, list) else weight_quantizer)["block_sizes"][-1] = \
            plan.awq_block_size
    log.info("calibrating %s on %d LITA prompts", name, len(batches))
    hf = quantize_model(hf, cfg, batches, plan.batch_size, name, None)
    with torch.inference_mode():
        export_tensorrt_llm_checkpoint(hf, "llama", torch_dtype, export_dir=str(out_dir),
                                       inference_tensor_parallel=tp_size, inference_pipeline_parallel=1)
    path = Path(out_dir) / "config.json"
    config = json.loads(path.read_text())
    config["quantization"]["kv_cache_quant_algo"] = None  # as quantize_and_export does without a KV dtype
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path
