"""The wire format of the ``lita`` ensemble on the client side: request tensors in, :class:`Chunk` out.

Names and types of every tensor come from the contract the server also reads
(:mod:`lita_client.contract`); every input goes out with shape [1, 1]
(batch of one, one element). BYTES inputs are ``np.object_`` arrays holding ``bytes``:
``np.bytes_`` would strip trailing zero bytes from binary video data.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import numpy as np

from lita_client.answer import Chunk
from lita_client.errors import InvalidRequestError, ServerError
from lita_client.contract import SAMPLING_INPUTS

# Client-settable sampling parameters (``stream`` is chosen by the call, not by the caller's kwargs).
SAMPLING_NAMES: tuple[str, ...] = tuple(name for name in SAMPLING_INPUTS if name != "stream")
_NUMPY = {"INT32": np.int32, "INT64": np.int64, "FP32": np.float32, "BOOL": np.bool_}


def sampling_dtype(name: str) -> str:
    """Triton datatype (``INT32``, ``FP32``, ``INT64``, ``BOOL``) of a sampling input."""
    return SAMPLING_INPUTS[name][1]


def _bytes_array(data: bytes) -> np.ndarray:
    array = np.empty((1, 1), dtype=np.object_)  # [1, 1]
    array[0, 0] = data
    return array


def _scalar(name: str, value: Any, dtype: str) -> np.ndarray:
    if dtype == "BOOL":
        if not isinstance(value, (bool, np.bool_)):
            raise InvalidRequestError(f"invalid request: {name} must be a boolean, got {value!r}")
    elif dtype.startswith("INT"):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidRequestError(f"invalid request: {name} must be an integer, got {value!r}")
        info = np.iinfo(_NUMPY[dtype])
        if not info.min <= int(value) <= info.max:
            raise InvalidRequestError(f"invalid request: {name} {value} does not fit {dtype}")
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not math.isfinite(float(value)):
            raise InvalidRequestError(f"invalid request: {name} must be a finite number, got {value!r}")
    return np.array([[value]], dtype=_NUMPY[dtype])  # [1, 1]


def request_arrays(video: bytes, question: str, duration: float | None, sampling: Mapping[str, Any],
                   stream: bool) -> list[tuple[str, np.ndarray, str]]:
    """``(name, [1, 1] array, Triton datatype)`` for every input of one request; None values are omitted."""
    unknown = sorted(set(sampling) - set(SAMPLING_NAMES))
    if unknown:
        raise InvalidRequestError(f"invalid request: unknown sampling parameter(s) {', '.join(unknown)}; "
                                  f"known: {', '.join(SAMPLING_NAMES)}")
    if not isinstance(question, str):
        raise InvalidRequestError(f"invalid request: question must be a string, got {type(question).__name__}")
    arrays = [("video", _bytes_array(video), "BYTES"),
              ("text_input", _bytes_array(question.encode("utf-8")), "BYTES")]
    if duration is not None:
        arrays.append(("duration", _scalar("duration", duration, "FP32"), "FP32"))
    for name in SAMPLING_NAMES:
        if sampling.get(name) is not None:
            arrays.append((name, _scalar(name, sampling[name], sampling_dtype(name)), sampling_dtype(name)))
    arrays.append(("stream", _scalar("stream", bool(stream), "BOOL"), "BOOL"))
    return arrays


def build_inputs(module: Any, arrays: list[tuple[str, np.ndarray, str]]) -> list[Any]:
    """``InferInput`` objects of ``module`` (``tritonclient.grpc`` or its ``aio`` twin) for ``arrays``."""
    inputs = []
    for name, array, dtype in arrays:
        tensor = module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _one(result: Any, name: str) -> Any:
    array = result.as_numpy(name)
    if array is None or array.size != 1:
        raise ServerError(f"server error: response lacks a single {name!r} element")
    return array.reshape(-1)[0]


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)


def parse_chunk(result: Any) -> Chunk:
    """A :class:`Chunk` from one tritonclient ``InferResult`` of the ensemble."""
    try:
        details = [{k: float(v) for k, v in s.items()} for s in json.loads(_text(_one(result, "segments")) or "[]")]
        segments = [(d["start"], d["end"]) for d in details]
        stats = json.loads(_text(_one(result, "stats")) or "{}")
        # a server from before log-probabilities has no such output
        logprobs = json.loads(_text(_one(result, "token_logprobs")) or "[]") \
            if result.as_numpy("token_logprobs") is not None else []
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ServerError(f"server error: malformed segments/stats in response: {exc}") from exc
    return Chunk(
        text=_text(_one(result, "text_output")),
        raw_text=_text(_one(result, "raw_text_output")),
        segments=segments,
        duration=float(_one(result, "video_duration")),
        num_input_tokens=int(_one(result, "num_input_tokens")),
        num_output_tokens=int(_one(result, "num_output_tokens")),
        is_final=bool(_one(result, "is_final")),
        stats=dict(stats),
        segment_details=details,
        logprobs=list(logprobs),
    )
