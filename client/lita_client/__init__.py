"""Client side of lita-serve: the Python SDK (sync and asyncio), the batch runner and the ``lita-client`` CLI."""

from lita_client.answer import Answer
from lita_client.errors import (
    InvalidRequestError,
    LitaClientError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
    VideoInputError,
)
from lita_client.options import Health
from lita_client.sdk import AnswerStream, AsyncAnswerStream, AsyncLitaClient, LitaClient

__all__ = [
    "Answer", "AnswerStream", "AsyncAnswerStream", "AsyncLitaClient", "Health", "InvalidRequestError",
    "LitaClient", "LitaClientError", "ModelNotReadyError", "RequestTimeoutError", "ServerError",
    "ServerUnavailableError", "VideoInputError",
]
