"""Triton adapter: video bytes -> CLIP-normalised frames + the video's duration (lita_serve.preprocess)."""

import os
import sys

# The python backend stub starts an isolated interpreter that ignores PYTHONPATH; honour it here.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import json  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from lita_serve.preprocess.request import prepare_video  # noqa: E402
from lita_serve.serve import triton_io  # noqa: E402
from lita_serve.serve.layout import RepositoryLayout  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.cfg = RepositoryLayout.from_model_dir(args["model_repository"]).load_config()

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        try:
            triton_io.check_batch_of_one(request, pb_utils, "VIDEO")
            data = triton_io.single(request, pb_utils, "VIDEO")
            duration = triton_io.single(request, pb_utils, "DURATION", required=False)
            video = prepare_video(bytes(data), self.cfg, None if duration is None else float(duration))
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
            return triton_io.error_response(pb_utils, exc)
        return pb_utils.InferenceResponse([
            pb_utils.Tensor("FRAMES", video.frames[None]),  # [1, F, 3, S, S]
            pb_utils.Tensor("VIDEO_DURATION", np.array([[video.duration]], dtype=np.float32)),
            triton_io.bytes_tensor(pb_utils, "STATS", json.dumps(video.stats)),
        ])
