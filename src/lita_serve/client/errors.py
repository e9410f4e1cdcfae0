"""Typed client errors, and the one place where tritonclient / gRPC failures become them.

Translation looks only at the gRPC status code (never at message text): the client opens its
streams with the ``triton_grpc_error`` header, so a failed request closes its stream with a
real status code (``INVALID_ARGUMENT`` for a bad input, ``UNAVAILABLE`` when nothing listens,
``DEADLINE_EXCEEDED`` when the client timeout passed, ...).
"""

from __future__ import annotations

from typing import Any


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
    cls = _BY_STATUS.get(status or "", ServerError)
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
