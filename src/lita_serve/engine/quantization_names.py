"""The names ``lita build --quantization`` takes, per decoder engine (one place, no torch import,
so the CLI can list them).

* PyTorch engine: ``int8_weight_only`` (:mod:`lita_serve.llm.weight_quant`).
* TensorRT-LLM engine: ``fp8``, ``int4_awq``, ``int8_sq`` (``lita_build.trtllm_quant``), the
  ``--qformat`` names of TensorRT-LLM's ``examples/quantization/quantize.py``.
"""

NO_QUANTIZATION = "none"
INT8_WEIGHT_ONLY = "int8_weight_only"
TORCH_QUANTIZATIONS = (NO_QUANTIZATION, INT8_WEIGHT_ONLY)
TRTLLM_QUANTIZATIONS = (NO_QUANTIZATION, "fp8", "int4_awq", "int8_sq")
ALL_QUANTIZATIONS = tuple(dict.fromkeys(TORCH_QUANTIZATIONS + TRTLLM_QUANTIZATIONS))
