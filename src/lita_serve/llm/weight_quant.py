"""Weight-only int8 for the PyTorch decoder, with torchao.

``int8_weight_only`` stores every ``nn.Linear`` weight of the decoder (attention, MLP and
``lm_head``) as int8 with one fp32 scale per output row (torchao ``Int8WeightOnlyConfig``, per-row
symmetric; torchao also keeps an int8 zero point per row, always 0); activations, the KV cache, RMSNorm weights and the token embedding table stay in
the compute dtype. The embedding table is where the prompt table's visual embeddings are spliced
in (``LlamaDecoder.embed``), so the visual path is never quantized.

Why torchao: it is PyTorch's maintained quantization library; ``torch.ao.quantization`` (the
older eager ``quantize_dynamic``) warns on import that it is deprecated in its favour. On a CPU
in eager mode torchao's int8 ``linear`` converts the weight to the activation dtype on every
call (no fused kernel without ``torch.compile``), so the gain here is resident memory, not speed:
``benchmarks.decoder_quantization.py`` measures both.

Weights are quantized while they load (:func:`quantize_linear`, one ``nn.Linear`` at a time), so
the load never holds the whole decoder in full precision.
"""

from __future__ import annotations

import logging
from torch import nn

from lita_serve.errors import InvalidInputError, MissingDependencyError
from lita_serve.engine.quantization_names import INT8_WEIGHT_ONLY, NO_QUANTIZATION, TORCH_QUANTIZATIONS


def check_torch_quantization(name: str) -> str:
    """``name`` if the PyTorch engine knows it; InvalidInputError naming the known ones otherwise."""
    if name not in TORCH_QUANTIZATIONS:
        raise InvalidInputError(f"quantization {name!r} is not one of the PyTorch engine's {list(TORCH_QUANTIZATIONS)}")
    return name


def _int8_config():
    """torchao's ``Int8WeightOnlyConfig``; MissingDependencyError when torchao is not installed.

    torchao logs a warning for each CUDA-only extension it cannot load on a CPU machine and torch
    logs a deprecation from its pytree registry while torchao imports: both are silenced here,
    since logs stay quiet by default.
    """
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise MissingDependencyError(
            f"--quantization {INT8_WEIGHT_ONLY} needs torchao (`pip install torchao`, part of the `serve` extra)"
        ) from exc
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    return quantize_, Int8WeightOnlyConfig()


def require_weight_quantization(name: str) -> None:
    """Fail early (at build time) when ``name`` needs a package that is missing."""
    if check_torch_quantization(name) == INT8_WEIGHT_ONLY:
        _int8_config()


def quantize_linear(module: nn.Linear, name: str) -> nn.Linear:
    """Quantize one loaded ``nn.Linear`` in place (its weight becomes int8 + per-row scales)."""
    if check_torch_quantization(name) == NO_QUANTIZATION:
        return module
    quantize_, config = _int8_config()
    quantize_(module, config)
    return module


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by ``module``'s parameters and buffers, counting a quantized weight's int8 data
    and scales (what stays resident), not its logical full-precision size."""
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        inner = [getattr(tensor, attr) for attr in getattr(tensor, "tensor_data_names", ())]
        inner += [getattr(tensor, attr) for attr in getattr(tensor, "optional_tensor_data_names", ())
                  if getattr(tensor, attr, None) is not None]
        parts = inner or [tensor]
        total += sum(int(t.numel()) * t.element_size() for t in parts)
    return total


def is_quantized(module: nn.Linear) -> bool:
    """True when ``module``'s weight is a torchao quantized tensor."""
    return type(module.weight).__module__.startswith("torchao")

