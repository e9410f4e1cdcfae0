"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with their HTTP status.

:func:`from_client_error` is the one place where the SDK's typed errors become HTTP statuses:
a bad request 400 (with the server's message), a busy server 429, an unreachable one or a model
that is not ready 503, a timeout 504, anything else 500.
"""

from __future__ import annotations

from typing import Any

from lita_client.contract import SERVER_BUSY_MARKER
from lita_client.errors import (
    InvalidRequestError,
    LitaClientError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerUnavailableError,
)

# HTTP status -> OpenAI error type.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
          503: "service_unavailable_error", 504: "timeout_error"}


class ApiError(Exception):
    """A request that ends in an OpenAI-style error response."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param, code)


def from_client_error(exc: LitaClientError) -> ApiError:
    """The HTTP error for a failure the LITA client reported while forwarding a request."""
    message = str(exc)
    if isinstance(exc, InvalidRequestError):
        return ApiError(400, message, code="invalid_request")
    if isinstance(exc, ServerUnavailableError):
        if SERVER_BUSY_MARKER in message.lower():
            return ApiError(429, message, code="server_busy")
        return ApiError(503, message, code="server_unavailable")
    if isinstance(exc, ModelNotReadyError):
        return ApiError(503, message, code="model_not_ready")
    if isinstance(exc, RequestTimeoutError):
        return ApiError(504, message, code="timeout")
    return ApiError(500, message, code="server_error")
