"""Python SDK for a LITA server on Triton: :class:`LitaClient` (blocking) and :class:`AsyncLitaClient` (asyncio).

The ``lita`` ensemble is decoupled, so every request travels on a gRPC bidirectional stream,
even a non-streaming one; each request gets its own stream, and
:func:`~lita_client.errors.translate` maps every failure to a typed error. A stream that
ended with an error is closed, not cancelled (cancelling it races tritonserver 2.51's
cancellation handling).

A request that failed with UNAVAILABLE before any response arrived is retried with
exponential backoff (nothing was generated yet, so it is idempotent); once a response
arrived it is never retried.

Several servers: ``url`` may list addresses (``"a:8001,b:8001"``) or name a headless
Service (``"dns:///lita-triton-grpc:8001"``, every address the name resolves to). Requests then go
round-robin over the replicas that are ready; a request that failed with UNAVAILABLE (or found
the model not ready) before any response is placed on another replica at once, and the failed
replica gets no requests until a readiness check finds it ready again (see
:mod:`lita_client.replicas`). Once every replica failed a request, it waits as above before
the next round; ``retries`` counts rounds.

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
from lita_client.replicas import Replica, ReplicaSet
from lita_client.wire import build_inputs, parse_chunk, request_arrays
from lita_client.video_input import VideoLike, read_video

_TRANSPORT_ERRORS = (InferenceServerException, grpc.RpcError)
_POLL_S = 0.25
CHECK_TIMEOUT_S = 2.0  # one readiness check of a replica that was down
# Failures that move a request to another replica (only before its first response).
_FAILOVER_ERRORS = (ServerUnavailableError, ModelNotReadyError)


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
        self.replicas = ReplicaSet(self.options.url)
        # Clients replaced after a replica came back; closed once no stream can still use them.
        self._retired: list[tuple[float, Any]] = []

    @property
    def url(self) -> str:
        return self.options.url

    def _translate(self, exc: BaseException, address: str | None = None) -> LitaClientError:
        return translate(exc, address or self.url, self.options.timeout)

    def _failover(self, replica: Replica, tried: set[str]) -> bool:
        """After a failure before any response from ``replica``: whether to try another replica now
        (one not tried in this round: the ready ones first, then those that are down).

        False when every replica failed in this round: the caller backs off (or gives up, or
        re-raises: a model that is not ready on the only server is reported as before).
        """
        if self.replicas.single:
            return False
        self.replicas.mark_down(replica)
        tried.add(replica.address)
        return any(r.address not in tried for r in self.replicas.replicas)

    def _after_failure(self, replica: Replica, exc: LitaClientError, started: bool, tried: set[str],
                       delays: Iterator[float], attempts: int) -> float:
        """What follows a failed attempt on ``replica``, for the sync and the asyncio loop alike:
        0 to try another replica at once, else the wait before the next round; raises ``exc``
        when the request must not be sent again (a response had arrived: the replica that
        dropped it leaves the rotation) or when :meth:`_backoff` gives up."""
        if started:
            if not self.replicas.single:
                self.replicas.mark_down(replica)
            raise exc
        if self._failover(replica, tried):
            return 0.0
        delay = self._backoff(exc, delays, attempts)
        tried.clear()
        return delay

    def _backoff(self, exc: LitaClientError, delays: Iterator[float], attempts: int) -> float:
        """The wait before the next attempt after ``exc``; raises when there is none.

        One server that answers "model not ready" is reported at once (not retried); with several,
        every server may be tried again once the wait is over. Retries used up: UNAVAILABLE is
        reported with the number of attempts.
        """
        delay = next(delays, None) if isinstance(exc, ServerUnavailableError) or not self.replicas.single else None
        if delay is not None:
            return delay
        if isinstance(exc, ServerUnavailableError):
            raise _gave_up(exc, attempts) from exc
        raise exc

    def _retire(self, client: Any) -> None:
        if client is not None:
            self._retired.append((time.monotonic(), client))

    def _expired_clients(self) -> list[Any]:
        """Retired clients older than the longest a stream may last (the client timeout)."""
        if self.options.timeout is None:
            return []
        limit = time.monotonic() - self.options.timeout - 5.0
        old = [c for t, c in self._retired if t < limit]
        self._retired = [(t, c) for t, c in self._retired if t >= limit]
        return old

    def _combined(self, healths: list[Health]) -> Health:
        """One Health for several replicas: ok when at least one is; each replica's in ``replicas``."""
        ok = [h for h in healths if h.ok]
        errors = "; ".join(f"{h.url}: {h.error}" for h in healths if h.error)
        return Health(self.url, self.model_name, any(h.server_live for h in healths),
                      any(h.server_ready for h in healths), bool(ok),
                      error=None if ok else (errors or None), replicas=tuple(healths))

    def _arrays(self, video: VideoLike, question: str, duration: float | None, sampling: dict[str, Any],
                stream: bool) -> list:
        return request_arrays(read_video(video), question, duration, sampling, stream)

    def _health(self, flags: list[bool], exc: Exception | None = None, address: str | None = None) -> Health:
        """Health from the live/ready/model-ready flags answered so far (False for the rest after ``exc``)."""
        url = address or self.url
        if exc is None:
            return Health(url, self.model_name, *flags)
        return Health(url, self.model_name, *(flags + [False] * 3)[:3], error=str(self._translate(exc, url)))

    def _not_ready(self, health: Health, waited: float) -> LitaClientError:
        if not health.server_live:
            return ServerUnavailableError(f"server at {self.url} not reachable after {waited:g} s"
                                          + (f": {health.error}" if health.error else ""))
        return ModelNotReadyError(f"model {self.model_name!r} on {self.url} not ready after {waited:g} s")

    def _connect_kwargs(self, address: str) -> dict[str, Any]:
        return {**self.options.client_kwargs(), "url": address}


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
        for chunk in self.chunks():
            if chunk.text:
                yield chunk.text

    def chunks(self) -> Iterator[Chunk]:
        """Every response as it arrives (one per generated token, including tokens that add no text)."""
        builder = AnswerBuilder()
        for chunk in self._chunks:
            builder.add(chunk)
            yield chunk
        self.answer = _finish(builder, self._url)


class LitaClient(_Base):
    """Blocking client. One request at a time per instance (a lock serialises them); use
    :class:`AsyncLitaClient` for concurrency. ``wait_ready`` (seconds) makes ``with`` wait for readiness."""

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        for replica in self.replicas.replicas:
            replica.client = self._new_client(replica.address)
        self._lock = threading.Lock()

    def _new_client(self, address: str) -> Any:
        return _make(grpcclient.InferenceServerClient, self._connect_kwargs(address))

    def _client_of(self, replica: Replica) -> Any:
        if replica.client is None:  # a replica a later DNS answer added
            replica.client = self._new_client(replica.address)
        return replica.client

    # --- readiness ---------------------------------------------------------------------------
    def _probe(self, client: Any, address: str, timeout: float | None) -> Health:
        flags: list[bool] = []
        try:
            flags.append(client.is_server_live(client_timeout=timeout))
            flags.append(client.is_server_ready(client_timeout=timeout))
            flags.append(client.is_model_ready(self.model_name, client_timeout=timeout))
        except _TRANSPORT_ERRORS as exc:
            return self._health(flags, exc, address)
        return self._health(flags, address=address)

    def _check(self, replica: Replica, timeout: float | None = CHECK_TIMEOUT_S) -> Health:
        """Readiness of a replica that was down, on a fresh connection (the old one may be in
        gRPC's reconnect backoff); when ready, that connection takes its requests from now on."""
        replica.checking = True
        try:
            probe = self._new_client(replica.address)
            health = self._probe(probe, replica.address, timeout)
        finally:
            replica.checking = False
        if health.ok:
            self._retire(replica.client)
            replica.client = probe
            self.replicas.mark_up(replica)
        else:
            probe.close()
            self.replicas.mark_down(replica)
        return health

    def health(self) -> Health:
        """Liveness / readiness of the server and the model; never raises for an unreachable server.

        With several servers: each one is checked (and taken out of or back into rotation);
        ``ok`` when at least one is ready, each server's own in ``replicas``.
        """
        if self.replicas.single:
            return self._probe(self.replicas.replicas[0].client, self.url, self.options.timeout)
        self._housekeeping(check=False)
        healths = []
        for replica in list(self.replicas.replicas):
            if replica.up:
                health = self._probe(self._client_of(replica), replica.address, self.options.timeout)
                if not health.ok:
                    self.replicas.mark_down(replica)
            else:
                health = self._check(replica, self.options.timeout)
            healths.append(health)
        return self._combined(healths)

    def is_ready(self) -> bool:
        return self.health().ok

    def wait_until_ready(self, timeout: float = 60.0) -> Health:
        """Poll until server and model are ready (with several servers: at least one);
        ServerUnavailableError / ModelNotReadyError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if health.ok:
                return health
            if time.monotonic() >= deadline:
                raise self._not_ready(health, timeout)
            time.sleep(_POLL_S)

    def _housekeeping(self, check: bool = True) -> None:
        """New DNS answers, due readiness checks of down replicas, old connections closed."""
        for dropped in self.replicas.refresh():
            self._retire(dropped.client)
        if check:
            for replica in self.replicas.due():
                self._check(replica)
        for client in self._expired_clients():
            client.close()

    def _choose(self, tried: set[str]) -> Replica:
        if not self.replicas.single:
            self._housekeeping()
        replica = self.replicas.pick(tried) or self.replicas.fallback(tried)
        self._client_of(replica)
        return replica

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
        tried: set[str] = set()
        while True:
            attempts += 1
            started = False
            replica = self._choose(tried)
            try:
                for chunk in self._attempt(replica, arrays):
                    started = True
                    yield chunk
                if not replica.up:
                    self.replicas.mark_up(replica)
                return
            except _FAILOVER_ERRORS as exc:
                delay = self._after_failure(replica, exc, started, tried, delays, attempts)
                if delay:
                    time.sleep(delay)

    def _attempt(self, replica: Replica, arrays: list) -> Iterator[Chunk]:
        """One request on its own stream to ``replica``; translated errors, stream closed (cancelled if unfinished)."""
        responses: "queue.Queue[tuple[Any, Any]]" = queue.Queue()
        timeout = self.options.timeout
        client, address = replica.client, replica.address
        replica.requests += 1
        with self._lock:
            try:
                client.start_stream(callback=lambda result, error: responses.put((result, error)),
                                    stream_timeout=timeout, headers=STREAM_HEADERS)
            except _TRANSPORT_ERRORS as exc:
                raise self._translate(exc, address) from exc
            finished = False
            try:
                self._send(client, address, arrays, responses)
                while not finished:
                    try:
                        # The gRPC deadline normally fires first; this is a backstop.
                        result, error = responses.get(timeout=None if timeout is None else timeout + 5.0)
                    except queue.Empty:
                        raise RequestTimeoutError(f"no answer from {address} within the client timeout "
                                                  f"of {timeout:g} s") from None
                    if error is not None:
                        # The server already ended this stream; cancelling it as well races
                        # tritonserver 2.51's cancellation handling (server PRs #7840, #8078).
                        finished = True
                        raise self._translate(error, address) from error
                    chunk = parse_chunk(result)
                    finished = chunk.is_final
                    yield chunk
            except _TRANSPORT_ERRORS as exc:
                raise self._translate(exc, address) from exc
            finally:
                try:
                    client.stop_stream(cancel_requests=not finished)
                except _TRANSPORT_ERRORS:
                    pass  # the stream already failed; its error was raised above

    def _send(self, client: Any, address: str, arrays: list, responses: "queue.Queue[tuple[Any, Any]]") -> None:
        """Enqueue the request; if the stream already died, raise the error its callback reports."""
        try:
            client.async_stream_infer(self.model_name, build_inputs(grpcclient, arrays))
        except InferenceServerException as exc:
            try:
                # The stream marks itself dead just before its callback hands over the cause.
                _, error = responses.get(timeout=5.0)
            except queue.Empty:
                error = None
            raise self._translate(error or exc, address) from (error or exc)

    def close(self) -> None:
        for replica in self.replicas.replicas:
            if replica.client is not None:
                replica.client.close()
        for _, client in self._retired:
            client.close()
        self._retired = []

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
        # Each replica's client is created on first use, inside the running event loop.

    def _new_client(self, address: str) -> Any:
        return _make(aioclient.InferenceServerClient, self._connect_kwargs(address))

    def _client_of(self, replica: Replica) -> Any:
        if replica.client is None:
            replica.client = self._new_client(replica.address)
        return replica.client

    # --- readiness ---------------------------------------------------------------------------
    async def _probe(self, client: Any, address: str, timeout: float | None) -> Health:
        flags: list[bool] = []
        try:
            flags.append(await client.is_server_live(client_timeout=timeout))
            flags.append(await client.is_server_ready(client_timeout=timeout))
            flags.append(await client.is_model_ready(self.model_name, client_timeout=timeout))
        except _TRANSPORT_ERRORS as exc:
            return self._health(flags, exc, address)
        return self._health(flags, address=address)

    async def _check(self, replica: Replica, timeout: float | None = CHECK_TIMEOUT_S) -> Health:
        """See :meth:`LitaClient._check`; one check per replica at a time."""
        replica.checking = True
        try:
            probe = self._new_client(replica.address)
            health = await self._probe(probe, replica.address, timeout)
        finally:
            replica.checking = False
        if health.ok:
            self._retire(replica.client)
            replica.client = probe
            self.replicas.mark_up(replica)
        else:
            await probe.close()
            self.replicas.mark_down(replica)
        return health

    async def health(self) -> Health:
        """See :meth:`LitaClient.health`."""
        if self.replicas.single:
            replica = self.replicas.replicas[0]
            return await self._probe(self._client_of(replica), self.url, self.options.timeout)
        await self._housekeeping(check=False)

        async def one(replica: Replica) -> Health:
            if not replica.up:
                return await self._check(replica, self.options.timeout)
            health = await self._probe(self._client_of(replica), replica.address, self.options.timeout)
            if not health.ok:
                self.replicas.mark_down(replica)
            return health

        return self._combined(list(await asyncio.gather(*(one(r) for r in list(self.replicas.replicas)))))

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

    async def _housekeeping(self, check: bool = True) -> None:
        for dropped in self.replicas.refresh():
            self._retire(dropped.client)
        if check:
            due = self.replicas.due()
            if due:
                await asyncio.gather(*(self._check(r) for r in due))
        for client in self._expired_clients():
            await client.close()

    async def _choose(self, tried: set[str]) -> Replica:
        if not self.replicas.single:
            await self._housekeeping()
        replica = self.replicas.pick(tried) or self.replicas.fallback(tried)
        self._client_of(replica)
        return replica

    # --- requests ----------------------------------------------------------------------------
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
        tried: set[str] = set()
        while True:
            attempts += 1
            started = False
            replica = await self._choose(tried)
            try:
                async for chunk in self._attempt(replica, arrays):
                    started = True
                    yield chunk
                if not replica.up:
                    self.replicas.mark_up(replica)
                return
            except _FAILOVER_ERRORS as exc:
                delay = self._after_failure(replica, exc, started, tried, delays, attempts)
                if delay:
                    await asyncio.sleep(delay)

    async def _attempt(self, replica: Replica, arrays: list) -> AsyncIterator[Chunk]:
        client, address = replica.client, replica.address
        replica.requests += 1
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
                    raise self._translate(error, address) from error
                chunk = parse_chunk(result)
                yield chunk
                if chunk.is_final:
                    finished.set()
                    return
        except _TRANSPORT_ERRORS as exc:
            raise self._translate(exc, address) from exc
        finally:
            if not finished.is_set():
                finished.set()
                if responses is not None:
                    responses.cancel()

    async def close(self) -> None:
        for replica in self.replicas.replicas:
            if replica.client is not None:
                await replica.client.close()
                replica.client = None
        for _, client in self._retired:
            await client.close()
        self._retired = []

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
