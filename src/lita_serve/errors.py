"""Typed errors shared by the pipeline, the Triton models and the client.

Every error a user can cause is an :class:`InvalidInputError` (mapped to Triton's
``INVALID_ARG``); anything else is a server fault.
"""


class LitaError(Exception):
    """Base class of every error raised by lita-serve."""


class InvalidInputError(LitaError, ValueError):
    """The request is malformed or out of range; the message names the offending input."""


class VideoDecodeError(InvalidInputError):
    """The video bytes are empty, corrupt, not a video, or hold no decodable frame."""


class LimitExceededError(InvalidInputError):
    """A configured server limit (bytes, duration, frames, tokens, prompt length) was exceeded."""


class CheckpointError(LitaError):
    """A checkpoint is missing files or tensors, or disagrees with its config."""


class MissingDependencyError(LitaError, ImportError):
    """An optional package (TensorRT-LLM, TensorRT, NeMo, ...) is needed but not installed."""


class ServerBusyError(LitaError):
    """The server is at its concurrency limit; reported as UNAVAILABLE so clients back off and retry."""
