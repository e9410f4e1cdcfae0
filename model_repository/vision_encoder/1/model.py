"""Triton adapter: frames -> LITA visual embeddings (tower + projector + pooling), dynamically batched."""

import os
import sys

# The python backend stub starts an isolated interpreter that ignores PYTHONPATH; honour it here.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from lita_serve.serve import triton_io  # noqa: E402
from lita_serve.serve.layout import RepositoryLayout  # noqa: E402
from lita_serve.serve.torch_engine import load_encoder  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        layout = RepositoryLayout.from_model_dir(args["model_repository"])
        self.cfg = layout.load_config()
        device = "cuda" if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available() else "cpu"
        self.encoder = load_encoder(layout, self.cfg, device=device)
        weight = next(self.encoder.parameters())
        self.device, self.dtype = weight.device, weight.dtype

    def execute(self, requests):
        start = time.perf_counter()
        try:
            frames = [triton_io.array(r, pb_utils, "FRAMES") for r in requests]  # each [b, F, 3, S, S]
            batch = torch.from_numpy(np.concatenate(frames)).to(self.device, self.dtype)
            with torch.inference_mode():
                embeddings = self.encoder(batch).float().cpu().numpy()  # [sum b, N_vis, H]
        except Exception as exc:  # noqa: BLE001 - the batch failed as a whole
            return [triton_io.error_response(pb_utils, exc) for _ in requests]
        encode_ms = (time.perf_counter() - start) * 1e3
        responses, offset = [], 0
        for request, f in zip(requests, frames):
            stats = triton_io.stats_in(request, pb_utils)
            stats.update({"encode_ms": round(encode_ms, 3), "encode_batch": len(requests)})
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("EMBEDDINGS", embeddings[offset: offset + f.shape[0]]),
                pb_utils.Tensor("STATS_OUT", np.array([[json.dumps(stats).encode()]] * f.shape[0], dtype=np.object_)),
            ]))
            offset += f.shape[0]
        return responses
