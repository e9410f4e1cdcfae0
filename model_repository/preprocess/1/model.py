"""Triton adapter: video bytes -> cropped uint8 frames + the video's duration (lita_serve.preprocess).

The encoder normalises the pixels (a quarter of the bytes of float frames cross the process boundary).

With the visual-feature cache on, a video whose features the cache already holds is not
decoded: FRAMES is empty ([1, 0, 3, S, S]) and CACHE_PIN names the entry pinned for the encoder.
This process never imports torch.
"""

import serving_env  # noqa: F401 - first: the serving environment's packages (see serving_env.py)

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from lita_serve.text.conversation import check_question
from lita_serve.feature_cache import FeatureCache
from lita_serve.preprocess.heap import limit_arenas, release_free_memory
from lita_serve.preprocess.request import prepare_cached
from lita_serve.adapters import triton_io
from lita_serve.adapters.layout import RepositoryLayout


class TritonPythonModel:
    def initialize(self, args):
        limit_arenas()  # before any decoding thread exists
        layout = RepositoryLayout.from_model_dir(args["model_repository"])
        self.cfg = layout.load_config()
        self.cache = FeatureCache.for_repository(layout.root, self.cfg)

    def execute(self, requests):
        responses = [self._one(request) for request in requests]
        release_free_memory()  # the decoded frames are gone; keep the process small
        return responses

    def _one(self, request):
        try:
            triton_io.check_batch_of_one(request, pb_utils, "VIDEO")
            question = triton_io.single(request, pb_utils, "QUESTION", required=False)
            if question is not None:  # reject a bad question before decoding the video
                check_question(triton_io.text(question, "text_input"), self.cfg.limits.max_question_chars)
            data = triton_io.single(request, pb_utils, "VIDEO")
            duration = triton_io.single(request, pb_utils, "DURATION", required=False)
            video = prepare_cached(bytes(data), self.cfg, self.cache,
                                   None if duration is None else float(duration), normalize=False)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
            return triton_io.error_response(pb_utils, exc)
        return pb_utils.InferenceResponse([
            pb_utils.Tensor("FRAMES", video.frames[None]),  # uint8 [1, F, 3, S, S], or [1, 0, 3, S, S] on a hit
            pb_utils.Tensor("VIDEO_DURATION", np.array([[video.duration]], dtype=np.float32)),
            triton_io.bytes_tensor(pb_utils, "STATS", json.dumps(video.stats)),
            triton_io.bytes_tensor(pb_utils, "CACHE_KEY", video.key),
            triton_io.bytes_tensor(pb_utils, "CACHE_PIN", video.pin),
            pb_utils.Tensor("SOURCE_DURATION", np.array([[video.source_duration]], dtype=np.float32)),
        ])
