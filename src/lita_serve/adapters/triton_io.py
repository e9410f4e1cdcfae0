"""Small helpers the ``model.py`` adapters share: reading request tensors and mapping errors.

``pb_utils`` (``triton_python_backend_utils``) exists only inside Triton's python stub, so it
is passed in rather than imported here; everything else stays testable without Triton.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from lita_serve.llm.sampling_params import SamplingParams
from lita_client.contract import REQUIRED_INPUTS, SAMPLING_INPUTS
from lita_client.contract import INTERNAL_ERROR_MARKER, SERVER_BUSY_MARKER
from lita_serve.errors import InvalidInputError, ServerBusyError

logger = logging.getLogger(__name__)


def instance_device(args: dict[str, Any], cuda_available: bool) -> str:
    """Where a model instance computes: ``cuda:<model_instance_device_id>`` for a GPU instance
    (Triton spreads KIND_GPU instances over the GPUs and tells each its device), else ``cpu``."""
    if args.get("model_instance_kind") == "GPU" and cuda_available:
        return f"cuda:{int(args.get('model_instance_device_id') or 0)}"
    return "cpu"


def single(request: Any, pb_utils: Any, name: str, *, required: bool = True) -> Any:
    """The one element of input ``name`` (shape [1, 1]); None when optional and absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        if required:
            raise InvalidInputError(f"input {REQUIRED_INPUTS.get(name, name)!r} is required")
        return None
    array = tensor.as_numpy()
    if array.size != 1:
        raise InvalidInputError(f"input {name!r} must hold exactly one element per request, got shape {list(array.shape)}")
    return array.reshape(-1)[0]


def array(request: Any, pb_utils: Any, name: str) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise InvalidInputError(f"input {name!r} is required")
    return tensor.as_numpy()


def text(value: Any, name: str) -> str:
    """A BYTES element as text; InvalidInputError when it is not UTF-8."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"input {name!r} is not valid UTF-8 text") from exc
    return str(value)


def check_batch_of_one(request: Any, pb_utils: Any, name: str) -> None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is not None and tensor.as_numpy().shape[0] != 1:
        raise InvalidInputError(f"one video and one question per request: {name!r} has batch size "
                                f"{tensor.as_numpy().shape[0]}")


_CASTS = {"INT32": int, "INT64": int, "FP32": float, "BOOL": bool}


def sampling_params(request: Any, pb_utils: Any, default_max_tokens: int) -> tuple[SamplingParams, bool]:
    """Sampling parameters and the ``stream`` flag from the optional inputs.

    Absent inputs keep :class:`SamplingParams`' defaults (``max_tokens``: the repository's).
    """
    given = {"max_tokens": default_max_tokens}
    for name, (tensor, dtype) in SAMPLING_INPUTS.items():
        value = single(request, pb_utils, tensor, required=False)
        if value is not None:
            given[name] = _CASTS[dtype](value)
    stream = bool(given.pop("stream", False))
    return SamplingParams(**given), stream


def stats_in(request: Any, pb_utils: Any) -> dict:
    value = single(request, pb_utils, "STATS", required=False)
    if value is None:
        return {}
    try:
        return dict(json.loads(text(value, "STATS") or "{}"))
    except (ValueError, TypeError):
        return {}


def bytes_tensor(pb_utils: Any, name: str, value: str | bytes) -> Any:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return pb_utils.Tensor(name, np.array([[data]], dtype=np.object_))


def error_response(pb_utils: Any, exc: BaseException) -> Any:
    """INVALID_ARG for a user's mistake, UNAVAILABLE when the server is at its concurrency limit
    (clients retry with backoff), INTERNAL (and a logged traceback) for anything else."""
    if isinstance(exc, InvalidInputError):
        code = pb_utils.TritonError.INVALID_ARG
        message = str(exc)
    elif isinstance(exc, ServerBusyError):
        code = pb_utils.TritonError.UNAVAILABLE
        message = f"{SERVER_BUSY_MARKER} {exc}"
    else:
        logger.error("request failed", exc_info=exc)
        code = pb_utils.TritonError.INTERNAL
        message = f"{INTERNAL_ERROR_MARKER} {type(exc).__name__}: {exc}"
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
