"""The visual encoder (CLIP tower + projector + LITA pooling) as ONNX, and as a TensorRT engine.

The ONNX graph takes ``frames [B, F, 3, S, S]`` (F = ``lita.sample_frames``, B dynamic) and
returns ``embeddings [B, N_vis, text_hidden]``, the same contract as the ``vision_encoder``
Triton model, so a TensorRT engine built from it can replace the PyTorch encoder.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

from lita_serve.vision_encoder.encoder import VisualEncoder
from lita_serve.vision_encoder.runtimes import EMBEDDINGS_OUTPUT as OUTPUT_NAME
from lita_serve.vision_encoder.runtimes import FRAMES_INPUT as INPUT_NAME
from lita_serve.vision_encoder.runtimes import OnnxRuntimeEncoder
from lita_serve.vision_encoder.visual_tokens import pool_visual_tokens
from lita_serve.errors import MissingDependencyError
ONNX_OPSET = 17


class _UnchunkedEncoder(nn.Module):
    """The encoder's forward without its frame-chunk loop (whose split sizes would freeze the batch)."""

    def __init__(self, encoder: VisualEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        b, f, c, h, w = frames.shape
        tokens = enc.mm_projector(enc.vision_tower(frames.reshape(b * f, c, h, w)))  # [B*F, S, D]
        tokens = tokens.reshape(b, f, tokens.shape[1], tokens.shape[2])  # [B, F, S, D]
        return pool_visual_tokens(tokens, enc.cfg.lita, enc.cfg.vision.grid)  # [B, N_vis, D]


def export_encoder_onnx(encoder: VisualEncoder, path: Path, *, batch_size: int = 1,
                        opset: int = ONNX_OPSET) -> Path:
    """Export ``encoder`` (float32 recommended) with a dynamic batch axis; returns ``path``."""
    cfg = encoder.cfg
    size, frames = cfg.vision.image_size, cfg.lita.sample_frames
    weight = next(encoder.parameters())
    example = torch.zeros(batch_size, frames, 3, size, size, dtype=weight.dtype, device=weight.device)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks that are constant for this export
        torch.onnx.export(_UnchunkedEncoder(encoder.eval()), (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return path


def run_onnx(path: Path, frames: torch.Tensor) -> torch.Tensor:
    """Run an exported encoder with onnxruntime on CPU: frames [B,F,3,S,S] -> [B,N_vis,H]."""
    return OnnxRuntimeEncoder(path)(frames)


def build_tensorrt_engine(onnx_path: Path, engine_path: Path, *, frames_shape: tuple[int, int, int, int],
                          max_batch_size: int, fp16: bool = True) -> Path:
    """Build a serialized TensorRT engine (``.plan``) for batch 1..max_batch_size from the ONNX file."""
    if importlib.util.find_spec("tensorrt") is None:
        raise MissingDependencyError(
            "building the TensorRT encoder engine needs NVIDIA TensorRT (the `tensorrt` package, shipped in "
            "nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3) and an NVIDIA GPU")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, *frames_shape), (1, *frames_shape), (max_batch_size, *frames_shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    return engine_path
