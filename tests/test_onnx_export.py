"""The visual encoder exported to ONNX and run with onnxruntime matches the PyTorch encoder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx
import pytest
import torch

from build_fixtures import model_for
from lita_build.onnx_export import INPUT_NAME, OUTPUT_NAME, build_tensorrt_engine, export_encoder_onnx, run_onnx
from lita_serve.vision_encoder.visual_tokens import num_visual_tokens
from lita_serve.errors import MissingDependencyError

MAX_ABS_DIFF = 1e-4  # float32 end to end; observed ~2e-7 on the tiny models


@pytest.mark.parametrize("version", ["1.0", "1.5"])
def test_onnx_matches_pytorch(tmp_path: Path, version: str) -> None:
    model = model_for(version, seed=3)
    cfg = model.config
    path = export_encoder_onnx(model.encoder, tmp_path / "encoder.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == [INPUT_NAME] and [o.name for o in graph.output] == [OUTPUT_NAME]
    size = cfg.vision.image_size
    frames = torch.randn(3, cfg.lita.sample_frames, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model.encoder(frames)
    got = run_onnx(path, frames)  # batch 3 on a graph exported at batch 1: the batch axis is dynamic
    assert got.shape == (3, num_visual_tokens(cfg), cfg.text.hidden_size)
    diff = (got - want).abs().max().item()
    print(f"ONNX vs PyTorch encoder ({version}): max abs diff {diff:.3e}")
    assert diff < MAX_ABS_DIFF


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_engine_needs_tensorrt(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        build_tensorrt_engine(tmp_path / "x.onnx", tmp_path / "x.plan", frames_shape=(8, 3, 56, 56), max_batch_size=2)
