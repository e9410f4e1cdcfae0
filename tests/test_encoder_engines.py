"""The vision encoder served from what the build exported: the demo model built with
``--encoder-engine onnxruntime`` answers the demo question through the real server exactly as
the PyTorch encoder does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lita_build.builder import build
from lita_serve.serving.demo import QUESTION, make_demo_video
from lita_serve.serving.inprocess import LitaPipeline
from lita_serve.adapters.layout import RepositoryLayout
from lita_serve.serving.launcher import Ports, TritonServer
from lita_serve.adapters.resources import demo_assets
from lita_serve.engine.torch_engine import load_encoder
from lita_serve.vision_encoder.runtimes import OnnxRuntimeEncoder, load_encoder_runtime

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def onnx_demo_repo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx_demo") / "repo"
    assets = demo_assets()
    build(assets, assets / "tokenizer.model", lita_version="1.0", engine="torch", output=out,
          encoder_engine="onnxruntime", progress=False)
    return out


def test_onnx_encoder_matches_torch(onnx_demo_repo: Path) -> None:
    layout = RepositoryLayout.of(onnx_demo_repo)
    cfg = layout.load_config()
    runtime = load_encoder_runtime(layout, cfg)
    assert isinstance(runtime, OnnxRuntimeEncoder)
    size = cfg.vision.image_size
    frames = torch.randn(2, cfg.lita.sample_frames, 3, size, size)  # batch 2: the batch axis is dynamic
    with torch.inference_mode():
        expected = load_encoder(layout, cfg, device="cpu")(frames)
    got = runtime(frames)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


def test_onnx_encoder_serves_the_demo_answer(onnx_demo_repo: Path, tmp_path: Path) -> None:
    from lita_client import LitaClient

    video = make_demo_video(tmp_path / "demo.mp4")
    reference = LitaPipeline(onnx_demo_repo, device="cpu").ask(video.read_bytes(), QUESTION)  # torch encoder
    with TritonServer(onnx_demo_repo, ports=Ports.free(), log_path=tmp_path / "server.log") as server, \
            LitaClient(server.grpc_url) as client:
        answer = client.ask(video, QUESTION)
    assert answer.stats.get("encoder_engine") == "onnxruntime", answer.stats
    assert answer.raw_text == reference.raw_text, (answer.raw_text, reference.raw_text)
    assert answer.text == reference.text and answer.segments
