"""Vision encoder on the CPU: the exported ONNX graph in onnxruntime (``--encoder-engine
onnxruntime``) against the PyTorch encoder (the default), same weights, same frames.

The model is the demo checkpoint's encoder (what ``make demo`` serves): one request is
``sample_frames`` frames; a batch of 8 is what the encoder step's dynamic batching forms under
load. Wall time and this process's CPU time are each the best of interleaved runs (both runtimes
use the same thread count).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import compare, interleaved_min_cpu, machine_note


def run(short: bool = False) -> list[dict[str, Any]]:
    from lita_build.builder import build  # noqa: PLC0415
    from lita_serve.adapters.layout import RepositoryLayout  # noqa: PLC0415
    from lita_serve.adapters.resources import demo_assets  # noqa: PLC0415
    from lita_serve.engine.torch_engine import load_encoder  # noqa: PLC0415
    from lita_serve.vision_encoder.runtimes import load_encoder_runtime  # noqa: PLC0415

    print(machine_note())
    results = []
    with tempfile.TemporaryDirectory(prefix="lita-bench-encoder-") as tmp:
        assets = demo_assets()
        repo = Path(tmp) / "repo"
        build(assets, assets / "tokenizer.model", lita_version="1.0", output=repo, encoder_engine="onnxruntime",
              progress=False)
        layout = RepositoryLayout.of(repo)
        cfg = layout.load_config()
        torch_encoder = load_encoder(layout, cfg, device="cpu")
        onnx_encoder = load_encoder_runtime(layout, cfg)
        size = cfg.vision.image_size
        for batch in (1, 8):
            frames = torch.randn(batch, cfg.lita.sample_frames, 3, size, size)  # [B, F, 3, S, S]

            def with_torch(frames=frames):
                with torch.inference_mode():
                    return torch_encoder(frames)

            best = interleaved_min_cpu({"torch": with_torch, "onnxruntime": lambda frames=frames: onnx_encoder(frames)},
                                       repeat=5 if short else 15)
            label = f"encoder onnxruntime, {batch} x {cfg.lita.sample_frames} frames ({size}px)"
            results.append(compare(f"{label}, wall", "torch", best["torch"][0] * 1e3, best["onnxruntime"][0] * 1e3,
                                   "ms"))
            results.append(compare(f"{label}, CPU", "torch", best["torch"][1] * 1e3, best["onnxruntime"][1] * 1e3,
                                   "ms"))
    return results


if __name__ == "__main__":
    run()
