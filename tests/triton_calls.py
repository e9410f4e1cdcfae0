"""Raw tritonclient calls against the ``lita`` ensemble (no SDK), for server-level tests."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

NP_TO_TRITON = {np.object_: "BYTES", np.float32: "FP32", np.int32: "INT32", np.int64: "INT64", np.bool_: "BOOL"}


def tensor(name: str, value, dtype) -> grpcclient.InferInput:
    arr = np.array([[value]], dtype=dtype)
    t = grpcclient.InferInput(name, list(arr.shape), NP_TO_TRITON[np.dtype(dtype).type])
    t.set_data_from_numpy(arr)
    return t


def request_inputs(video: bytes | None, question: str | None, **extra) -> list[grpcclient.InferInput]:
    types = {"duration": np.float32, "max_tokens": np.int32, "temperature": np.float32, "top_k": np.int32,
             "top_p": np.float32, "repetition_penalty": np.float32, "seed": np.int64, "greedy": np.bool_,
             "stream": np.bool_}
    inputs = []
    if video is not None:
        inputs.append(tensor("video", video, np.object_))
    if question is not None:
        inputs.append(tensor("text_input", question.encode(), np.object_))
    for name, value in extra.items():
        if isinstance(value, tuple):  # (value, dtype) to force a dtype
            inputs.append(tensor(name, value[0], value[1]))
        else:
            inputs.append(tensor(name, value, types[name]))
    return inputs


@dataclass
class Result:
    texts: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    segments: str = "[]"
    duration: float = 0.0
    num_output_tokens: int = 0
    error: InferenceServerException | None = None

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def raw_text(self) -> str:
        return "".join(self.raw)


def run(url: str, inputs: list[grpcclient.InferInput], timeout: float = 120.0) -> Result:
    """One request over a fresh bidirectional stream; collects every response until is_final."""
    client = grpcclient.InferenceServerClient(url)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    out = Result()
    try:
        client.async_stream_infer("lita", inputs)
        while True:
            result, error = responses.get(timeout=timeout)
            if error is not None:
                out.error = error
                return out
            out.texts.append(result.as_numpy("text_output")[0][0].decode())
            out.raw.append(result.as_numpy("raw_text_output")[0][0].decode())
            out.segments = result.as_numpy("segments")[0][0].decode()
            out.duration = float(result.as_numpy("video_duration")[0][0])
            out.num_output_tokens = int(result.as_numpy("num_output_tokens")[0][0])
            if result.as_numpy("is_final")[0][0]:
                return out
    finally:
        client.stop_stream()
        client.close()
