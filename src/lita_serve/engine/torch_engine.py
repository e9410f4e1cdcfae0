"""The PyTorch engine: weights in the model repository, loaded on CPU or CUDA.

The encoder and the decoder are stored apart so each Triton model loads only what it runs
(the TensorRT-LLM deployment replaces the decoder part and keeps the interface).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lita_serve.config import LitaConfig
from lita_serve.llm.llama import LlamaDecoder
from lita_serve.llm.weight_quant import NO_QUANTIZATION, check_torch_quantization, quantize_linear
from lita_serve.vision_encoder.encoder import VisualEncoder
from lita_serve.errors import CheckpointError
from lita_serve.engine.model import LitaModel, randomize_
from lita_serve.adapters.layout import DUMMY_WEIGHTS, RepositoryLayout

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DUMMY_SEED = 0  # dummy weights are the same at every load


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when a GPU is visible, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device, built: str | None = None) -> torch.dtype:
    """On CUDA the dtype the repository was built in (``built``, from ``build.json``; fp16 when it
    records none); fp32 on the CPU whatever it was built in (fp16 matmuls there are slow and less exact)."""
    if device.type != "cuda":
        return torch.float32
    return DTYPES.get(built or "", torch.float16)


def _dummy(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` (on the meta device) materialised on ``device`` with N(0, 0.02) weights drawn
    there: a repository built with dummy weights (:data:`~lita_serve.adapters.layout.DUMMY_WEIGHTS`)."""
    module = module.to_empty(device=device).to(dtype)
    generator = torch.Generator(device=device).manual_seed(DUMMY_SEED)
    return randomize_(module, generator).eval()


def _save(module: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path))


def export_torch_engine(model: LitaModel, tokenizer_path: str | Path, repo: str | Path) -> RepositoryLayout:
    """Write ``model``'s weights, its config and the tokenizer into the repository at ``repo``."""
    layout = RepositoryLayout.of(repo)
    layout.root.mkdir(parents=True, exist_ok=True)
    model.config.save(layout.config_path)
    shutil.copyfile(tokenizer_path, layout.tokenizer_path)
    _save(model.encoder, layout.encoder_weights)
    _save(model.decoder, layout.decoder_weights)
    logger.info("torch engine written", extra={"repo": str(layout.root)})
    return layout


def _load_into(module: torch.nn.Module, path: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    if not path.is_file():
        raise CheckpointError(f"engine weights {path} are missing: build the repository first")
    state = load_file(str(path), device=str(device))
    missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointError(f"{path}: missing tensors {sorted(missing)}, unexpected tensors {sorted(unexpected)}")
    return module.to(device=device, dtype=dtype).eval()


def load_encoder(layout: RepositoryLayout, cfg: LitaConfig, device: str | None = None,
                 dtype: torch.dtype | None = None) -> VisualEncoder:
    dev = pick_device(device)
    encoder = VisualEncoder.from_config(cfg, device="meta")
    manifest = layout.manifest()
    dtype = dtype or default_dtype(dev, manifest.dtype)
    if dev.type == "cuda" and dtype == torch.float32:
        torch.backends.cudnn.allow_tf32 = False  # fp32 stays fp32: cuDNN would run the patch convolution in TF32
    if manifest.weights == DUMMY_WEIGHTS:
        return _dummy(encoder, dev, dtype)
    return _load_into(encoder, layout.encoder_weights, dev, dtype)


def load_decoder(layout: RepositoryLayout, cfg: LitaConfig, device: str | None = None,
                 dtype: torch.dtype | None = None, quantization: str | None = None) -> LlamaDecoder:
    """The decoder in ``dtype`` on ``device``; ``quantization`` (default: what ``build.json``
    records, see :mod:`lita_serve.llm.weight_quant`) quantizes its linear weights as they load."""
    dev = pick_device(device)
    manifest = layout.manifest()  # read once: quantization, dtype, weights
    scheme = check_torch_quantization(quantization or manifest.quantization or NO_QUANTIZATION)
    with torch.device("meta"):
        decoder = LlamaDecoder(cfg.text)
    dtype = dtype or default_dtype(dev, manifest.dtype)
    if manifest.weights == DUMMY_WEIGHTS:
        if scheme != NO_QUANTIZATION:
            raise CheckpointError("a repository with dummy weights serves them unquantized")
        return _for_device(_dummy(decoder, dev, dtype))
    if scheme != NO_QUANTIZATION:
        return _load_quantized(decoder, layout.decoder_weights, dev, dtype, scheme)
    return _for_device(_load_into(decoder, layout.decoder_weights, dev, dtype))


def _for_device(decoder: LlamaDecoder) -> LlamaDecoder:
    """On CUDA, fused projections (fewer kernels per decode step); on the CPU the decoder as loaded."""
    return decoder.fuse_projections() if decoder.lm_head.weight.is_cuda else decoder


def _load_quantized(decoder: LlamaDecoder, path: Path, device: torch.device, dtype: torch.dtype,
                    scheme: str) -> LlamaDecoder:
    """Load module by module, quantizing each ``nn.Linear`` right after its weight arrives, so at
    most one layer's weight is held in full precision at a time."""
    if not path.is_file():
        raise CheckpointError(f"engine weights {path} are missing: build the repository first")
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        stored = set(f.keys())
        expected = set(decoder.state_dict().keys())
        if stored != expected:
            raise CheckpointError(f"{path}: missing tensors {sorted(expected - stored)}, "
                                  f"unexpected tensors {sorted(stored - expected)}")
        for prefix, module in decoder.named_modules():
            own = {name: f.get_tensor(f"{prefix}.{name}" if prefix else name).to(dtype)
                   for name, _ in module.named_parameters(recurse=False)}
            if not own:
                continue
            module.load_state_dict(own, strict=True, assign=True)
            if isinstance(module, torch.nn.Linear):
                quantize_linear(module, scheme)
    return decoder.eval()
