"""The ``lita`` ensemble's client-facing interface, shared by the server and the client.

Kept free of heavy imports (no torch) so that the client package can use it.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    "stream": ("STREAM", "BOOL"),
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
    outputs = [
        TensorSpec("text_output", "STRING", (1,)),
        TensorSpec("raw_text_output", "STRING", (1,)),
        TensorSpec("segments", "STRING", (1,)),
        TensorSpec("video_duration", "FP32", (1,)),
        TensorSpec("num_input_tokens", "INT32", (1,)),
        TensorSpec("num_output_tokens", "INT32", (1,)),
        TensorSpec("is_final", "BOOL", (1,)),
        TensorSpec("stats", "STRING", (1,)),
    ]
    return inputs, outputs
