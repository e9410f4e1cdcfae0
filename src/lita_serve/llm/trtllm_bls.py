"""Decode with a TensorRT-LLM engine served by Triton's ``tensorrtllm`` backend, via BLS.

On a GPU deployment (``lita build --engine tensorrt_llm``) the ``llm`` python model keeps its
interface (prompt text + visual embeddings in, streamed ids out) but hands generation to the
``tensorrt_llm`` model: the visual embeddings become its ``prompt_embedding_table`` and the
prompt ids carry fake ids ``vocab_size … vocab_size+N-1`` at the video position, which is
exactly how TensorRT-LLM's prompt-tuning path looks them up. Tensor names follow the backend's
``all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt``; names that changed between
releases (the seed) come from :mod:`lita_serve.llm.trtllm_release`.

The prompt table goes in the engine's dtype: numpy has no bfloat16, so it travels as a torch
tensor through DLPack (``pb_utils.Tensor.from_dlpack``); every other input is a numpy array.

``pb_utils`` exists only inside Triton's python stub, so it is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.llm.trtllm_release import TrtllmRelease, trtllm_release
from lita_serve.errors import LitaError

if TYPE_CHECKING:
    from lita_serve.adapters.layout import BuildManifest

TRTLLM_MODEL = "tensorrt_llm"
# The engine's dtype (build --dtype) -> the prompt table's Triton type and torch dtype.
TABLE_TYPES = {"float16": ("FP16", torch.float16), "bfloat16": ("BF16", torch.bfloat16),
               "float32": ("FP32", torch.float32)}
TRITON_TYPES = {np.dtype(np.int32): "INT32", np.dtype(np.uint64): "UINT64", np.dtype(np.float32): "FP32",
                np.dtype(np.bool_): "BOOL", torch.float16: "FP16", torch.bfloat16: "BF16", torch.float32: "FP32"}

RequestTensor = np.ndarray | torch.Tensor


class TensorRTLLMError(LitaError):
    """The tensorrt_llm model returned an error."""


def triton_type(value: RequestTensor) -> str:
    """The Triton data type (``"BF16"``, ``"INT32"`` ...) a request tensor is sent as."""
    return TRITON_TYPES[value.dtype]


def request_tensors(input_ids: list[int], table: np.ndarray, params: SamplingParams, eos_id: int,
                    pad_id: int, *, dtype: str = "float16",
                    release: TrtllmRelease | None = None) -> dict[str, RequestTensor]:
    """The ``tensorrt_llm`` inputs of one request (batch 1), named as ``release`` expects.

    ``table`` is the visual embeddings [N_vis, H]; it is sent in ``dtype`` (the engine's).
    """
    release = release or trtllm_release()
    tensors: dict[str, RequestTensor] = {
        "input_ids": np.array([input_ids], dtype=np.int32),  # [1, T]
        "input_lengths": np.array([[len(input_ids)]], dtype=np.int32),
        "request_output_len": np.array([[params.max_tokens]], dtype=np.int32),
        "end_id": np.array([[eos_id]], dtype=np.int32),
        "pad_id": np.array([[pad_id]], dtype=np.int32),
        "streaming": np.array([[True]], dtype=np.bool_),
        "prompt_embedding_table": torch.from_numpy(np.ascontiguousarray(table, np.float32))
        .to(TABLE_TYPES[dtype][1])[None].contiguous(),  # [1, N_vis, H] in the engine's dtype
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
        tensors[release.seed_input] = np.array([[params.seed]], dtype=np.uint64)
    return tensors


def _pb_tensor(pb_utils: Any, name: str, value: RequestTensor) -> Any:
    if isinstance(value, torch.Tensor):  # bfloat16 has no numpy type: hand the memory over as is
        return pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(value))
    return pb_utils.Tensor(name, value)


def stream_ids(pb_utils: Any, tensors: dict[str, RequestTensor], eos_id: int) -> Iterator[list[int]]:
    """Send one BLS request to ``tensorrt_llm`` (decoupled) and yield the new ids of each response."""
    request = pb_utils.InferenceRequest(
        model_name=TRTLLM_MODEL,
        inputs=[_pb_tensor(pb_utils, name, value) for name, value in tensors.items()],
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
                         eos_id: int, pad_id: int, on_token: Callable[[int], None], *, dtype: str = "float16",
                         release: TrtllmRelease | None = None) -> list[int]:
    """Generate through the engine, calling ``on_token`` per new id; returns every generated id."""
    out: list[int] = []
    tensors = request_tensors(input_ids, table, params, eos_id, pad_id, dtype=dtype, release=release)
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

    supports_logprobs = False  # the engine's log-probabilities are not forwarded yet

    def __init__(self, pb_utils: Any, vocab_size: int, pad_id: int, *, dtype: str = "float16",
                 release: TrtllmRelease | None = None, max_parallel: int = 64) -> None:
        if dtype not in TABLE_TYPES:
            raise ValueError(f"engine dtype {dtype!r} is not one of {sorted(TABLE_TYPES)}")
        self.pb_utils = pb_utils
        self.vocab_size = int(vocab_size)
        self.pad_id = int(pad_id)
        self.dtype = dtype
        self.release = release or trtllm_release()
        self.max_parallel = max_parallel

    @classmethod
    def from_manifest(cls, pb_utils: Any, manifest: BuildManifest, vocab_size: int,
                      pad_id: int) -> "TensorRTLLMBackend":
        """The backend for a repository built with ``--engine tensorrt_llm`` (``build.json``'s
        ``trtllm`` block names the engine's dtype and the container release)."""
        built = manifest.trtllm
        if not built:
            raise ValueError("build.json has no `trtllm` block: rebuild with `lita build --engine tensorrt_llm`")
        return cls(pb_utils, vocab_size, pad_id, dtype=built["dtype"], release=trtllm_release(built["release"]))

    def table(self, prompt_table: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(prompt_table, dtype=np.float32)  # [N_vis, H]

    def generate(self, requests: list, eos_id: int) -> list[list[int]]:
        from concurrent.futures import ThreadPoolExecutor

        def one(r) -> list[int]:
            return generate_with_trtllm(self.pb_utils, r.input_ids, r.prompt_table, r.params, eos_id, self.pad_id,
                                        r.on_token or (lambda _t: None), dtype=self.dtype,
                                        release=self.release)

        with ThreadPoolExecutor(min(self.max_parallel, max(1, len(requests)))) as pool:
            return list(pool.map(one, requests))
