"""Run the OpenAI-compatible frontend with uvicorn on a thread of the ``lita serve`` process.

The main thread keeps supervising tritonserver and handling signals; uvicorn installs no signal
handlers off the main thread, so :meth:`OpenAIFrontend.stop` is how it ends.
"""

from __future__ import annotations

import threading
import time

import uvicorn

from lita_serve.errors import LitaError
from lita_serve.openai_api.frontend_settings import FrontendSettings
from lita_serve.openai_api.http_app import create_app


class OpenAIFrontend:
    """``start()`` binds ``host:port`` and serves :func:`create_app` until ``stop()``; also a context manager."""

    def __init__(self, settings: FrontendSettings, host: str = "127.0.0.1", port: int = 9000) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self._server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port,
                                                     log_level="warning", access_log=False,
                                                     timeout_graceful_shutdown=5))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The OpenAI base URL (``http://host:port/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 15.0) -> "OpenAIFrontend":
        self._thread = threading.Thread(target=self._server.run, name="openai-frontend", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise LitaError(f"the OpenAI frontend did not start on {self.host}:{self.port} "
                                "(port in use or not allowed?)")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> "OpenAIFrontend":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
