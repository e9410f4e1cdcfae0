"""Python SDK for a LITA server on Triton: :class:`LitaClient` (blocking) and :class:`AsyncLitaClient` (asyncio).

The ``lita`` ensemble is decoupled, so every request travels on a gRPC bidirectional stream,
even a non-streaming one; each request gets its own stream, and
:func:`~lita_client.errors.translate` maps every failure to a typed error. A stream that
ended with an error is closed, not cancelled (cancelling it races tritonserver 2.51's
cancellation handling).

A request that failed with UNAVAILABLE before any response arrived is retried with
exponential backoff (nothing was generated yet, so it is idempotent); once a response
arrived it is never retried.

Example::

    with LitaClient("127.0.0.1:8001", wait_ready=30) as client:
        answer = client.ask("climb.mp4", "When does the man reach the top?", max_tokens=64)
        print(answer.text, answer.segments)
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any, AsyncIterator, Callable, Iterator

import grpc
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from lita_client.answer import Answer, AnswerBuilder, Chunk
from lita_client.errors import (
    LitaClientError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
    translate,
)
from lita_client.options import STREAM_HEADERS, ConnectionOptions, Health, RetryPolicy, default_url
from lita_client.contract import ENSEMBLE
from lita_client.wire import build_inputs, parse_chunk, request_arrays
from lita_client.video_input import VideoLike, read_video

_TRANSPORT_ERRORS = (InferenceServerException, grpc.RpcError)
_POLL_S = 0.25


def _finish(builder: AnswerBuilder, url: str) -> Answer:
    """The builder's answer; a ServerError when the stream ended before the final response."""
    if not builder.done:
        raise ServerError(f"server error: the stream from {url} ended before the final response")
    return builder.answer()


def _gave_up(exc: ServerUnavailableError, attempts: int) -> ServerUnavailableError:
    return ServerUnavailableError(f"{exc} (gave up after {attempts} attempt{'s' if attempts > 1 else ''})")


class _Base:
    """Settings shared by both clients."""

    def __init__(self, url: str | None = None, *, timeout: float | None = 120.0, ssl: bool = False,
                 root_certificates: str | None = None, private_key: str | None = None,
                 certificate_chain: str | None = None, retries: int = 3, backoff_s: float = 0.25,
                 model_name: str = ENSEMBLE, wait_ready: float | None = None) -> None:
        self.options = ConnectionOptions(url or default_url(), timeout, ssl, root_certificates, private_key,
                                         certificate_chain)
        self.retry = RetryPolicy(retries, backoff_s)
        self.model_name = model_name
        self.wait_ready = wait_ready

    @property
    def url(self) -> str:
        return self.options.url

    def _translate(self, exc: BaseException) -> LitaClientError:
        return translate(exc, self.url, self.options.timeout)

    def _arrays(self, video: VideoLike, question: str, duration: float | None, sampling: dict[str, Any],
                stream: bool) -> list:
        return request_arrays(read_video(video), question, duration, sampling, stream)

    def _health(self, flags: list[bool], exc: Exception | None = None) -> Health:
        """Health from the live/ready/model-ready flags answered so far (False for the rest after ``exc``)."""
        if exc is None:
            return Health(self.url, self.model_name, *flags)
        return Health(self.url, self.model_name, *(flags + [False] * 3)[:3], error=str(self._translate(exc)))

    def _not_ready(self, health: Health, waited: float) -> LitaClientError:
        if not health.server_live:
            return ServerUnavailableError(f"server at {self.url} not reachable after {waited:g} s"
                                          + (f": {health.error}" if health.error else ""))
        return ModelNotReadyError(f"model {self.model_name!r} on {self.url} not ready after {waited:g} s")

    def _connect_kwargs(self) -> dict[str, Any]:
        return self.options.client_kwargs()


def _make(factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        return factory(**kwargs)
    except (OSError, InferenceServerException) as exc:
        raise LitaClientError(f"cannot set up the connection to {kwargs.get('url')}: {exc}") from exc


class AnswerStream:
    """Iterate for the text pieces of a streamed answer; ``answer`` holds the whole :class:`Answer` afterwards."""

    def __init__(self, chunks: Iterator[Chunk], url: str) -> None:
        self._chunks = chunks
        self._url = url
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        builder = AnswerBuilder()
        for chunk in self._chunks:
            builder.add(chunk)
            if chunk.text:
                yield chunk.text
        self.answer = _finish(builder, self._url)


class LitaClient(_Base):
    """Blocking client. One request at a time per instance (a lock serialises them); use
    :class:`AsyncLitaClient` for concurrency. ``wait_ready`` (seconds) makes ``with`` wait for readiness."""

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._client = _make(grpcclient.InferenceServerClient, self._connect_kwargs())
        self._lock = threading.Lock()

    # --- readiness ---------------------------------------------------------------------------
    def health(self) -> Health:
        """Liveness / readiness of the server and the model; never raises for an unreachable server."""
        flags: list[bool] = []
        try:
            t = self.options.timeout
            flags.append(self._client.is_server_live(client_timeout=t))
            flags.append(self._client.is_server_ready(client_timeout=t))
            flags.append(self._client.is_model_ready(self.model_name, client_timeout=t))
        except _TRANSPORT_ERRORS as exc:
            return self._health(flags, exc)
        return self._health(flags)

    def is_ready(self) -> bool:
        return self.health().ok

    def wait_until_ready(self, timeout: float = 60.0) -> Health:
        """Poll until server and model are ready; ServerUnavailableError / ModelNotReadyError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if health.ok:
                return health
            if time.monotonic() >= deadline:
                raise self._not_ready(health, timeout)
            time.sleep(_POLL_S)

    # --- requests ----------------------------------------------------------------------------
    def ask(self, video: VideoLike, question: str, *, duration: float | None = None, **sampling: Any) -> Answer:
        """The whole answer to ``question`` about ``video`` (one response from the server)."""
        builder = AnswerBuilder()
        for chunk in self._chunks(video, question, duration, sampling, stream=False):
            builder.add(chunk)
        return _finish(builder, self.url)

    def stream(self, video: VideoLike, question: str, *, duration: float | None = None,
               **sampling: Any) -> AnswerStream:
        """An :class:`AnswerStream` yielding text pieces as the server generates them."""
        return AnswerStream(self._chunks(video, question, duration, sampling, stream=True), self.url)

    def _chunks(self, video: VideoLike, question: str, duration: float | None, sampling: dict[str, Any],
                stream: bool) -> Iterator[Chunk]:
        arrays = self._arrays(video, question, duration, sampling, stream)
        delays = self.retry.delays()
        attempts = 0
        while True:
            attempts += 1
            started = False
            try:
                for chunk in self._attempt(arrays):
                    started = True
                    yield chunk
                return
            except ServerUnavailableError as exc:
                delay = None if started else next(delays, None)
                if delay is None:
                    raise (exc if started else _gave_up(exc, attempts)) from exc
                time.sleep(delay)

    def _attempt(self, arrays: list) -> Iterator[Chunk]:
        """One request on its own stream; translated errors, stream closed (cancelled if unfinished)."""
        responses: "queue.Queue[tuple[Any, Any]]" = queue.Queue()
        timeout = self.options.timeout
        with self._lock:
            try:
                self._client.start_stream(callback=lambda result, error: responses.put((result, error)),
                                          stream_timeout=timeout, headers=STREAM_HEADERS)
            except _TRANSPORT_ERRORS as exc:
                raise self._translate(exc) from exc
            finished = False
            try:
                self._send(arrays, responses)
                while not finished:
                    try:
                        # The gRPC deadline normally fires first; this is a backstop.
                        result, error = responses.get(timeout=None if timeout is None else timeout + 5.0)
                    except queue.Empty:
                        raise RequestTimeoutError(f"no answer from {self.url} within the client timeout "
                                                  f"of {timeout:g} s") from None
                    if error is not None:
                        # The server already ended this stream; cancelling it as well races
                        # tritonserver 2.51's cancellation handling (server PRs #7840, #8078).
                        finished = True
                        raise self._translate(error) from error
                    chunk = parse_chunk(result)
                    finished = chunk.is_final
                    yield chunk
            except _TRANSPORT_ERRORS as exc:
                raise self._translate(exc) from exc
            finally:
                try:
                    self._client.stop_stream(cancel_requests=not finished)
                except _TRANSPORT_ERRORS:
                    pass  # the stream already failed; its error was raised above

    def _send(self, arrays: list, responses: "queue.Queue[tuple[Any, Any]]") -> None:
        """Enqueue the request; if the stream already died, raise the error its callback reports."""
        try:
            self._client.async_stream_infer(self.model_name, build_inputs(grpcclient, arrays))
        except InferenceServerException as exc:
            try:
                # The stream marks itself dead just before its callback hands over the cause.
                _, error = responses.get(timeout=5.0)
            except queue.Empty:
                error = None
            raise self._translate(error or exc) from (error or exc)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "LitaClient":
        if self.wait_ready is not None:
            try:
                self.wait_until_ready(self.wait_ready)
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncAnswerStream:
    """``async for`` over the text pieces of a streamed answer; ``answer`` holds the :class:`Answer` afterwards."""

    def __init__(self, chunks: AsyncIterator[Chunk], url: str) -> None:
        self._chunks = chunks
        self._url = url
        self.answer: Answer | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        builder = AnswerBuilder()
        async for chunk in self._chunks:
            builder.add(chunk)
            if chunk.text:
                yield chunk.text
        self.answer = _finish(builder, self._url)


class AsyncLitaClient(_Base):
    """asyncio client on ``tritonclient.grpc.aio``; safe for many concurrent requests on one instance."""

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._client: Any = None  # created on first use, inside the running event loop

    def _get(self) -> Any:
        if self._client is None:
            self._client = _make(aioclient.InferenceServerClient, self._connect_kwargs())
        return self._client

    async def health(self) -> Health:
        client, t = self._get(), self.options.timeout
        flags: list[bool] = []
        try:
            flags.append(await client.is_server_live(client_timeout=t))
            flags.append(await client.is_server_ready(client_timeout=t))
            flags.append(await client.is_model_ready(self.model_name, client_timeout=t))
        except _TRANSPORT_ERRORS as exc:
            return self._health(flags, exc)
        return self._health(flags)

    async def is_ready(self) -> bool:
        return (await self.health()).ok

    async def wait_until_ready(self, timeout: float = 60.0) -> Health:
        deadline = time.monotonic() + timeout
        while True:
            health = await self.health()
            if health.ok:
                return health
            if time.monotonic() >= deadline:
                raise self._not_ready(health, timeout)
            await asyncio.sleep(_POLL_S)

    async def ask(self, video: VideoLike, question: str, *, duration: float | None = None,
                  **sampling: Any) -> Answer:
        builder = AnswerBuilder()
        async for chunk in self._chunks(video, question, duration, sampling, stream=False):
            builder.add(chunk)
        return _finish(builder, self.url)

    def stream(self, video: VideoLike, question: str, *, duration: float | None = None,
               **sampling: Any) -> AsyncAnswerStream:
        return AsyncAnswerStream(self._chunks(video, question, duration, sampling, stream=True), self.url)

    async def _chunks(self, video: VideoLike, question: str, duration: float | None, sampling: dict[str, Any],
                      stream: bool) -> AsyncIterator[Chunk]:
        arrays = self._arrays(video, question, duration, sampling, stream)
        delays = self.retry.delays()
        attempts = 0
        while True:
            attempts += 1
            started = False
            try:
                async for chunk in self._attempt(arrays):
                    started = True
                    yield chunk
                return
            except ServerUnavailableError as exc:
                delay = None if started else next(delays, None)
                if delay is None:
                    raise (exc if started else _gave_up(exc, attempts)) from exc
                await asyncio.sleep(delay)

    async def _attempt(self, arrays: list) -> AsyncIterator[Chunk]:
        client = self._get()
        finished = asyncio.Event()  # keeps the request side open until the final response

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": self.model_name, "inputs": build_inputs(aioclient, arrays)}
            await finished.wait()

        responses = None
        try:
            responses = client.stream_infer(requests(), stream_timeout=self.options.timeout, headers=STREAM_HEADERS)
            async for result, error in responses:
                if error is not None:
                    finished.set()  # ended by the server: no cancel (see the sync client)
                    raise self._translate(error) from error
                chunk = parse_chunk(result)
                yield chunk
                if chunk.is_final:
                    finished.set()
                    return
        except _TRANSPORT_ERRORS as exc:
            raise self._translate(exc) from exc
        finally:
            if not finished.is_set():
                finished.set()
                if responses is not None:
                    responses.cancel()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> "AsyncLitaClient":
        if self.wait_ready is not None:
            try:
                await self.wait_until_ready(self.wait_ready)
            except BaseException:
                await self.close()
                raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
