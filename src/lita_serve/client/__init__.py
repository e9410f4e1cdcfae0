"""Client side of lita-serve: the Python SDK (sync and asyncio), the batch runner and the ``lita-client`` CLI."""

from lita_serve.client.answer import Answer
from lita_serve.client.errors import (
    InvalidRequestError,
    LitaClientError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
    VideoInputError,
)
from lita_serve.client.options import Health
from lita_serve.client.sdk import AnswerStream, AsyncAnswerStream, AsyncLitaClient, LitaClient

__all__ = [
    "Answer", "AnswerStream", "AsyncAnswerStream", "AsyncLitaClient", "Health", "InvalidRequestError",
    "LitaClient", "LitaClientError", "ModelNotReadyError", "RequestTimeoutError", "ServerError",
    "ServerUnavailableError", "VideoInputError",
]
