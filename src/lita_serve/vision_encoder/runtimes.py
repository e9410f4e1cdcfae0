"""What runs the vision encoder: PyTorch weights, the exported ONNX graph through onnxruntime, or
the TensorRT engine built from that graph. All three take ``frames [B, F, 3, S, S]`` (CLIP-normalised
float32) and return ``embeddings [B, N_vis, H]``, so the encoder step serves whichever the
repository was built with (``build.json``'s ``encoder_engine``).

onnxruntime and TensorRT are imported only when a repository asks for them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lita_serve.config import LitaConfig
from lita_serve.errors import CheckpointError, MissingDependencyError
from lita_serve.adapters.layout import ENCODER_ENGINES, RepositoryLayout

# The exported graph's tensor names (lita_build.onnx_export writes them, these runtimes feed them).
FRAMES_INPUT = "frames"
EMBEDDINGS_OUTPUT = "embeddings"


def _threads() -> int:
    """Intra-op threads: the launcher's OMP_NUM_THREADS share of the cores (0: the runtime's default)."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


class OnnxRuntimeEncoder:
    """``encoder.onnx`` in an onnxruntime session (CUDA execution provider on a GPU instance)."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        try:
            import onnxruntime as ort  # noqa: PLC0415
        except ImportError as exc:
            raise MissingDependencyError("this repository serves its encoder with onnxruntime: "
                                         "pip install onnxruntime (or onnxruntime-gpu)") from exc
        if not Path(path).is_file():
            raise CheckpointError(f"{path} is missing: rebuild with --encoder-engine onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        dev = torch.device(device)
        providers: list = ["CPUExecutionProvider"]
        if dev.type == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": dev.index or 0}))
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.device, self.dtype = torch.device("cpu"), torch.float32  # inputs are handed over as numpy

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run([EMBEDDINGS_OUTPUT], {FRAMES_INPUT: frames.detach().cpu().float().numpy()})
        return torch.from_numpy(out)  # [B, N_vis, H]


class TensorRTEncoder:
    """``encoder.plan`` run with the TensorRT runtime on one GPU, on torch's current stream there."""

    def __init__(self, path: Path, device: str) -> None:
        try:
            import tensorrt as trt  # noqa: PLC0415
        except ImportError as exc:
            raise MissingDependencyError(
                "this repository serves its encoder with TensorRT (encoder.plan): run it in NVIDIA's Triton + "
                "TensorRT-LLM container, or rebuild with --encoder-engine onnxruntime|torch") from exc
        if not Path(path).is_file():
            raise CheckpointError(f"{path} is missing: rebuild with --encoder-engine tensorrt on a GPU")
        self.device, self.dtype = torch.device(device), torch.float32
        if self.device.type != "cuda":
            raise MissingDependencyError("the TensorRT encoder needs a GPU instance (KIND_GPU) and CUDA")
        with torch.cuda.device(self.device):
            self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(path).read_bytes())
            self.context = self.engine.create_execution_context()
        self.out_dtype = {trt.float32: torch.float32, trt.float16: torch.float16}[
            self.engine.get_tensor_dtype(EMBEDDINGS_OUTPUT)]

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(self.device, torch.float32).contiguous()  # [B, F, 3, S, S]
        self.context.set_input_shape(FRAMES_INPUT, tuple(frames.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(EMBEDDINGS_OUTPUT)), dtype=self.out_dtype,
                          device=self.device)  # [B, N_vis, H]
        self.context.set_tensor_address(FRAMES_INPUT, frames.data_ptr())
        self.context.set_tensor_address(EMBEDDINGS_OUTPUT, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT could not run the encoder engine")
        stream.synchronize()
        return out.float()


def placement(encoder) -> tuple[torch.device, torch.dtype]:
    """The device and dtype an encoder wants its input frames in."""
    if isinstance(encoder, torch.nn.Module):
        weight = next(encoder.parameters())
        return weight.device, weight.dtype
    return encoder.device, encoder.dtype


def load_encoder_runtime(layout: RepositoryLayout, cfg: LitaConfig, device: str = "cpu"):
    """The encoder the repository was built to serve, on ``device`` (``cpu`` or ``cuda:N``)."""
    engine = layout.encoder_engine()
    if engine not in ENCODER_ENGINES:
        raise CheckpointError(f"{layout.root}/build.json names encoder engine {engine!r}; "
                              f"known: {list(ENCODER_ENGINES)}")
    if engine == "onnxruntime":
        return OnnxRuntimeEncoder(layout.encoder_onnx, device)
    if engine == "tensorrt":
        return TensorRTEncoder(layout.encoder_plan, device)
    from lita_serve.engine.torch_engine import load_encoder  # noqa: PLC0415

    return load_encoder(layout, cfg, device=device)
