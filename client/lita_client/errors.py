"""Typed client errors, and the one place where tritonclient / gRPC failures become them.

Transport failures carry a gRPC status code (``UNAVAILABLE`` when nothing listens,
``DEADLINE_EXCEEDED`` when the client timeout passed, ...) and are translated by it.

A request that the server rejects or fails arrives on the stream as a message without a code:
tritonserver 2.51 only attaches codes to stream errors when the stream is opened with the
``triton_grpc_error`` header, and in that mode it aborts under concurrent failing requests
(``GRPC_CALL_ERROR_TOO_MANY_OPERATIONS``, and cancellation races fixed upstream in server
PRs #7840 and #8078). Such errors are told apart by the markers the LITA models put in front of
their messages (:data:`lita_client.contract.INTERNAL_ERROR_MARKER`, ``SERVER_BUSY_MARKER``); every
other rejection is the request's own fault (a bad input, as the server's message says).
"""

from __future__ import annotations

from typing import Any

from lita_client.contract import INTERNAL_ERROR_MARKER, SERVER_BUSY_MARKER

# Stream errors of the python backend itself when a model's process died.
_STUB_FAILURE = "stub process"


class LitaClientError(Exception):
    """Base class of every error the LITA client raises; its message is one line."""


class ServerUnavailableError(LitaClientError):
    """The server could not be reached (nothing listening, connection refused, TLS failure)."""


class ModelNotReadyError(LitaClientError):
    """The server answers but the ``lita`` model is not loaded or not ready."""


class InvalidRequestError(LitaClientError, ValueError):
    """The request was rejected as invalid; the message is the server's (or names the local input)."""


class VideoInputError(InvalidRequestError):
    """The video could not be read locally: missing file, unreadable object, path outside the media base."""


class RequestTimeoutError(LitaClientError, TimeoutError):
    """No complete answer arrived within the client timeout."""


class ServerError(LitaClientError):
    """The server failed while answering (an internal error, a cancelled or dropped stream)."""


# gRPC status code name -> error class. Anything else is a ServerError.
_BY_STATUS: dict[str, type[LitaClientError]] = {
    "UNAVAILABLE": ServerUnavailableError,
    "DEADLINE_EXCEEDED": RequestTimeoutError,
    "INVALID_ARGUMENT": InvalidRequestError,
    "OUT_OF_RANGE": InvalidRequestError,
    "FAILED_PRECONDITION": InvalidRequestError,
    "NOT_FOUND": ModelNotReadyError,
}


def status_name(exc: BaseException) -> str | None:
    """The gRPC status code name (``"UNAVAILABLE"``) carried by ``exc``, or None when it has none.

    Handles ``grpc.RpcError`` (``code()`` is a ``grpc.StatusCode``) and tritonclient's
    ``InferenceServerException`` (``status()`` is ``"StatusCode.UNAVAILABLE"``).
    """
    code: Any = None
    if callable(getattr(exc, "code", None)):
        code = exc.code()
    elif callable(getattr(exc, "status", None)):
        code = exc.status()
    if code is None:
        return None
    name = getattr(code, "name", None) or str(code)
    return name.rsplit(".", 1)[-1]


def _classify_stream_error(detail: str) -> type[LitaClientError]:
    """The class of a code-less stream error (see the module docstring)."""
    text = detail.lower()
    if SERVER_BUSY_MARKER in text:
        return ServerUnavailableError
    if INTERNAL_ERROR_MARKER in text or _STUB_FAILURE in text:
        return ServerError
    if "unknown model" in text or "is not ready" in text:
        return ModelNotReadyError
    return InvalidRequestError


def _detail(exc: BaseException) -> str:
    if callable(getattr(exc, "details", None)):
        text = exc.details()
    elif callable(getattr(exc, "message", None)):
        text = exc.message()
    else:
        text = str(exc)
    return " ".join(str(text or type(exc).__name__).split())


def translate(exc: BaseException, url: str, timeout: float | None = None) -> LitaClientError:
    """The typed error for a tritonclient / gRPC failure ``exc`` of a call to ``url``.

    Callers ``raise translate(e, url) from e`` so the original stays attached as the cause.
    """
    if isinstance(exc, LitaClientError):
        return exc
    status = status_name(exc)
    detail = _detail(exc)
    cls = _BY_STATUS.get(status or "", ServerError) if status else _classify_stream_error(detail)
    if cls is ServerUnavailableError:
        message = f"cannot reach the LITA server at {url}: {detail}"
    elif cls is RequestTimeoutError:
        limit = f" of {timeout:g} s" if timeout is not None else ""
        message = f"no answer from {url} within the client timeout{limit}"
    elif cls is ModelNotReadyError:
        message = f"model not available on {url}: {detail}"
    elif cls is InvalidRequestError:
        message = f"invalid request: {detail}"
    else:
        message = f"server error ({status or 'no status'}) from {url}: {detail}"
    return cls(message)
