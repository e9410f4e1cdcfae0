"""The client-server contract of the ``lita`` ensemble: the one place that defines it.

The server side (generated Triton configs, the model adapters) imports this module; the client
builds its requests and reads its responses from it. Plain Python only: no numpy, no tritonclient.
"""

from __future__ import annotations

from dataclasses import dataclass

# The ensemble a client calls (the Triton model name).
ENSEMBLE = "lita"

# Markers the server puts in front of error messages that are not the user's fault. Per-request
# errors on a gRPC stream reach clients as text only (see lita_client.errors), so these markers
# are how a client tells a server fault or a busy server from a bad request.
INTERNAL_ERROR_MARKER = "internal error:"
SERVER_BUSY_MARKER = "server busy:"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # Triton TYPE_* without the prefix
    dims: tuple[int, ...]
    optional: bool = False

    def pbtxt(self) -> str:
        opt = "\n    optional: true" if self.optional else ""
        dims = ", ".join(str(d) for d in self.dims)
        return f'  {{\n    name: "{self.name}"\n    data_type: TYPE_{self.dtype}\n    dims: [ {dims} ]{opt}\n  }}'


# Sampling parameters: ensemble name -> (step tensor name, dtype). All optional.
SAMPLING_INPUTS = {
    "max_tokens": ("MAX_TOKENS", "INT32"),
    "temperature": ("TEMPERATURE", "FP32"),
    "top_k": ("TOP_K", "INT32"),
    "top_p": ("TOP_P", "FP32"),
    "repetition_penalty": ("REPETITION_PENALTY", "FP32"),
    "seed": ("SEED", "INT64"),
    "greedy": ("GREEDY", "BOOL"),
    # Token log-probabilities: absent = none; N >= 0 = each generated token's log-probability and
    # its N most likely alternatives, plus a confidence for every time in the segments.
    "logprobs": ("LOGPROBS", "INT32"),
    "stream": ("STREAM", "BOOL"),
}
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class ValueRange:
    """The values a numeric sampling input may take: ``low`` (excluded when ``low_open``) to
    ``high`` (excluded when ``high_open``); None: unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """``>= 0``, ``> 0``, ``in (0, 1]``: how error messages and help texts state the range."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        high = "2**63" if self.high == 2**63 else f"{self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {high}{')' if self.high_open else ']'}"


# The values each numeric sampling input accepts (the server also caps max_tokens at its limit).
SAMPLING_RANGES = {
    "max_tokens": ValueRange(0, low_open=True),
    "temperature": ValueRange(0),
    "top_k": ValueRange(0),
    "top_p": ValueRange(0, 1, low_open=True),
    "repetition_penalty": ValueRange(0, low_open=True),
    "seed": ValueRange(0, 2**63, high_open=True),
    "logprobs": ValueRange(0, MAX_TOP_LOGPROBS),
}


# Inputs every request needs, by step tensor name -> client-facing name; the step that reads
# one reports it missing by its client-facing name.
REQUIRED_INPUTS = {"VIDEO": "video", "QUESTION": "text_input"}


def ensemble_tensors() -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The client-facing interface; identical for every engine and deployment.

    ``video`` and ``text_input`` are required, yet declared optional: tritonserver 2.51 only
    counts a request's inputs, so a request that omits a required input but sends an optional
    one is accepted, and the ensemble then waits for the missing tensor for ever. Declared
    optional, a missing one reaches the step that needs it, which answers at once with an
    error naming it (:data:`REQUIRED_INPUTS`).
    """
    inputs = [
        TensorSpec("video", "STRING", (1,), optional=True),
        TensorSpec("text_input", "STRING", (1,), optional=True),
        TensorSpec("duration", "FP32", (1,), optional=True),
        *[TensorSpec(name, dt, (1,), optional=True) for name, (_, dt) in SAMPLING_INPUTS.items()],
    ]
    outputs = [TensorSpec(name, dtype, (1,)) for name, dtype in OUTPUTS.items()]
    return inputs, outputs


# Every response of the ensemble carries these outputs: name -> Triton dtype.
OUTPUTS = {
    "text_output": "STRING",  # new text since the previous response, times as seconds
    "raw_text_output": "STRING",  # the same with LITA's <tK> tokens
    # JSON [{"start": s, "end": s}, ...] of the answer so far; with logprobs each segment also has
    # start_prob/end_prob (probability of the chosen time token) and start_mean/start_std,
    # end_mean/end_std (seconds, under the model's distribution over the time tokens there).
    "segments": "STRING",
    # JSON [{"token": piece, "logprob": x, "top": [{"token": piece, "logprob": x}, ...]}, ...] for
    # the new tokens of this response; [] unless logprobs was asked for.
    "token_logprobs": "STRING",
    "video_duration": "FP32",  # seconds the times refer to
    "num_input_tokens": "INT32",
    "num_output_tokens": "INT32",
    "is_final": "BOOL",
    "stats": "STRING",  # JSON server-side timings
}

