"""Decode with a TensorRT-LLM engine served by Triton's ``tensorrtllm`` backend, via BLS.

On a GPU deployment (``lita build --engine tensorrt_llm``) the ``llm`` python model keeps its
interface (prompt text + visual embeddings in, streamed ids out) but hands generation to the
``tensorrt_llm`` model: the visual embeddings become its ``prompt_embedding_table`` and the
prompt ids carry fake ids ``vocab_size … vocab_size+N-1`` at the video position, which is
exactly how TensorRT-LLM's prompt-tuning path looks them up. Tensor names follow
tensorrtllm_backend's ``inflight_batcher_llm/tensorrt_llm/config.pbtxt``.

``pb_utils`` exists only inside Triton's python stub, so it is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.errors import LitaError

TRTLLM_MODEL = "tensorrt_llm"
NP_TABLE_DTYPES = {"FP16": np.float16, "FP32": np.float32}


class TensorRTLLMError(LitaError):
    """The tensorrt_llm model returned an error."""


def request_tensors(input_ids: list[int], table: np.ndarray, params: SamplingParams, eos_id: int,
                    pad_id: int, table_dtype: str = "FP16") -> dict[str, np.ndarray]:
    """The ``tensorrt_llm`` inputs of one request (batch 1)."""
    tensors = {
        "input_ids": np.array([input_ids], dtype=np.int32),  # [1, T]
        "input_lengths": np.array([[len(input_ids)]], dtype=np.int32),
        "request_output_len": np.array([[params.max_tokens]], dtype=np.int32),
        "end_id": np.array([[eos_id]], dtype=np.int32),
        "pad_id": np.array([[pad_id]], dtype=np.int32),
        "streaming": np.array([[True]], dtype=np.bool_),
        "prompt_embedding_table": table[None].astype(NP_TABLE_DTYPES[table_dtype]),  # [1, N_vis, H]
        "prompt_vocab_size": np.array([[table.shape[0]]], dtype=np.int32),
        "repetition_penalty": np.array([[params.repetition_penalty]], dtype=np.float32),
    }
    if params.is_greedy:
        tensors["runtime_top_k"] = np.array([[1]], dtype=np.int32)
    else:
        tensors["temperature"] = np.array([[params.temperature]], dtype=np.float32)
        tensors["runtime_top_k"] = np.array([[params.top_k]], dtype=np.int32)
        tensors["runtime_top_p"] = np.array([[params.top_p]], dtype=np.float32)
    if params.seed is not None:
        tensors["random_seed"] = np.array([[params.seed]], dtype=np.uint64)
    return tensors


def stream_ids(pb_utils: Any, tensors: dict[str, np.ndarray], eos_id: int) -> Iterator[list[int]]:
    """Send one BLS request to ``tensorrt_llm`` (decoupled) and yield the new ids of each response."""
    request = pb_utils.InferenceRequest(
        model_name=TRTLLM_MODEL,
        inputs=[pb_utils.Tensor(name, value) for name, value in tensors.items()],
        requested_output_names=["output_ids", "sequence_length"],
    )
    for response in request.exec(decoupled=True):
        if response.has_error():
            raise TensorRTLLMError(response.error().message())
        out = pb_utils.get_output_tensor_by_name(response, "output_ids")
        if out is None:  # the empty final response of a decoupled model
            continue
        ids = [int(t) for t in out.as_numpy().reshape(-1) if int(t) != eos_id]
        if ids:
            yield ids


def generate_with_trtllm(pb_utils: Any, input_ids: list[int], table: np.ndarray, params: SamplingParams,
                         eos_id: int, pad_id: int, on_token: Callable[[int], None],
                         table_dtype: str = "FP16") -> list[int]:
    """Generate through the engine, calling ``on_token`` per new id; returns every generated id."""
    out: list[int] = []
    tensors = request_tensors(input_ids, table, params, eos_id, pad_id, table_dtype)
    for ids in stream_ids(pb_utils, tensors, eos_id):
        for token in ids:
            out.append(token)
            on_token(token)
    return out


class TensorRTLLMBackend:
    """A :class:`~lita_serve.llm.service.DecodeBackend` over the ``tensorrt_llm`` model.

    The engine batches in flight by itself, so each request of a batch is sent at once on its
    own thread and streams back independently.
    """

    def __init__(self, pb_utils: Any, vocab_size: int, pad_id: int, table_dtype: str = "FP16",
                 max_parallel: int = 64) -> None:
        self.pb_utils = pb_utils
        self.vocab_size = int(vocab_size)
        self.pad_id = int(pad_id)
        self.table_dtype = table_dtype
        self.max_parallel = max_parallel

    def table(self, prompt_table: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(prompt_table, dtype=np.float32)  # [N_vis, H]

    def generate(self, requests: list, eos_id: int) -> list[list[int]]:
        from concurrent.futures import ThreadPoolExecutor

        def one(r) -> list[int]:
            return generate_with_trtllm(self.pb_utils, r.input_ids, r.prompt_table, r.params, eos_id, self.pad_id,
                                        r.on_token or (lambda _t: None), self.table_dtype)

        with ThreadPoolExecutor(min(self.max_parallel, max(1, len(requests)))) as pool:
            return list(pool.map(one, requests))
