"""Triton adapter (decoupled): prompt + visual embeddings + sampling parameters -> streamed token ids.

The video's duration and the timings of earlier steps are echoed on every response, so the
postprocess step can use them after this decoupled step (triton-inference-server/server#7275).
"""

import serving_env  # noqa: F401 - first: the serving environment's packages (see serving_env.py)

import json

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from lita_serve.llm.service import DecodeEvent, DecoderService
from lita_serve.llm.trtllm_bls import TensorRTLLMBackend
from lita_serve.adapters import triton_io
from lita_serve.adapters.layout import RepositoryLayout
from lita_serve.engine.torch_engine import load_decoder
from lita_serve.text.tokenizer import LitaTokenizer

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        layout = RepositoryLayout.from_model_dir(args["model_repository"])
        self.cfg = layout.load_config()
        config = json.loads(args["model_config"])
        tokenizer = LitaTokenizer.from_file(layout.tokenizer_path, self.cfg.lita.num_time_tokens)
        if layout.engine() == "tensorrt_llm":  # generation runs in the tensorrt_llm model (BLS)
            backend = TensorRTLLMBackend.from_manifest(pb_utils, layout.manifest(), self.cfg.text.vocab_size,
                                                       pad_id=max(tokenizer.eos_id, 0))
        else:
            device = triton_io.instance_device(args, torch.cuda.is_available())
            backend = load_decoder(layout, self.cfg, device=device)
        self.service = DecoderService(backend, tokenizer, self.cfg, max_batch=max(1, config["max_batch_size"])).start()

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                triton_io.check_batch_of_one(request, pb_utils, "QUESTION")
                question = triton_io.text(triton_io.single(request, pb_utils, "QUESTION"), "text_input")
                table = triton_io.array(request, pb_utils, "PROMPT_EMBEDDING_TABLE")  # [1, N_vis, H]
                duration = float(triton_io.single(request, pb_utils, "DURATION"))
                params, stream = triton_io.sampling_params(request, pb_utils, self.cfg.limits.default_max_tokens)
                job = self.service.prepare(question, table.reshape(table.shape[-2:]), duration, params,
                                           stream=stream, emit=self._emitter(sender),
                                           stats=triton_io.stats_in(request, pb_utils))
                self.service.submit(job)  # ServerBusyError beyond limits.max_concurrent_requests
            except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
                sender.send(triton_io.error_response(pb_utils, exc), flags=FINAL)
        return None

    @staticmethod
    def _emitter(sender):
        def emit(event: DecodeEvent) -> None:
            flags = FINAL if event.final else 0
            if event.error is not None:
                sender.send(triton_io.error_response(pb_utils, event.error), flags=FINAL)
                return
            sender.send(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT_IDS", np.array([event.ids], dtype=np.int32)),
                pb_utils.Tensor("NEW_TOKENS", np.array([[event.new_tokens]], dtype=np.int32)),
                pb_utils.Tensor("DURATION_OUT", np.array([[event.duration]], dtype=np.float32)),
                triton_io.bytes_tensor(pb_utils, "STATS_OUT", json.dumps(event.stats)),
                pb_utils.Tensor("NUM_INPUT_TOKENS", np.array([[event.num_input_tokens]], dtype=np.int32)),
                pb_utils.Tensor("IS_FINAL", np.array([[event.final]], dtype=np.bool_)),
                triton_io.bytes_tensor(pb_utils, "TOKEN_LOGPROBS",
                                       json.dumps([t.to_json() for t in event.logprobs or []])),
            ]), flags=flags)
        return emit

    def finalize(self):
        self.service.stop()
