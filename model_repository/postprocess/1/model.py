"""Triton adapter: token ids -> text with times in seconds, segments JSON (lita_serve.postprocess).

This process never imports torch.
"""

import serving_env  # noqa: F401 - first: the serving environment's packages (see serving_env.py)

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from lita_serve.text.logprobs import TokenLogprobs
from lita_serve.postprocess.render import Renderer
from lita_serve.adapters import triton_io
from lita_serve.adapters.layout import RepositoryLayout
from lita_serve.text.tokenizer import LitaTokenizer


class TritonPythonModel:
    def initialize(self, args):
        layout = RepositoryLayout.from_model_dir(args["model_repository"])
        cfg = layout.load_config()
        tokenizer = LitaTokenizer.from_file(layout.tokenizer_path, cfg.lita.num_time_tokens)
        self.renderer = Renderer(tokenizer, cfg.lita.num_time_tokens)

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        try:
            ids = triton_io.array(request, pb_utils, "OUTPUT_IDS").reshape(-1).tolist()
            new = int(triton_io.single(request, pb_utils, "NEW_TOKENS"))
            duration = float(triton_io.single(request, pb_utils, "DURATION"))
            logprobs = triton_io.single(request, pb_utils, "TOKEN_LOGPROBS", required=False)
            entries = json.loads(triton_io.text(logprobs, "TOKEN_LOGPROBS")) if logprobs is not None else []
            chunk = self.renderer.render(ids, new, duration,
                                         [TokenLogprobs.from_json(e) for e in entries] if entries else None)
            stats = triton_io.single(request, pb_utils, "STATS")
            n_in = triton_io.single(request, pb_utils, "NUM_INPUT_TOKENS")
            final = triton_io.single(request, pb_utils, "IS_FINAL")
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
            return triton_io.error_response(pb_utils, exc)
        return pb_utils.InferenceResponse([
            triton_io.bytes_tensor(pb_utils, "TEXT", chunk.text),
            triton_io.bytes_tensor(pb_utils, "RAW_TEXT", chunk.raw_text),
            triton_io.bytes_tensor(pb_utils, "SEGMENTS", chunk.segments_json()),
            pb_utils.Tensor("DURATION_OUT", np.array([[duration]], dtype=np.float32)),
            pb_utils.Tensor("NUM_INPUT_TOKENS_OUT", np.array([[n_in]], dtype=np.int32)),
            pb_utils.Tensor("NUM_OUTPUT_TOKENS", np.array([[len(ids)]], dtype=np.int32)),
            pb_utils.Tensor("IS_FINAL_OUT", np.array([[final]], dtype=np.bool_)),
            triton_io.bytes_tensor(pb_utils, "STATS_OUT", stats),
            triton_io.bytes_tensor(pb_utils, "LOGPROBS", chunk.logprobs_json()),
        ])
