"""The FastAPI application: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``.

Each chat request is checked (:mod:`~lita_serve.openai_api.chat_request`), its video fetched
(:mod:`~lita_serve.openai_api.media_source`) and forwarded to Triton by one shared
:class:`~lita_client.AsyncLitaClient`. A streamed request waits for its first token before the
response starts, so a request that fails before generating anything (a bad video, a busy or
absent server) still gets its proper HTTP status; a failure after that ends the event stream
with an error event.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lita_client import AsyncLitaClient, LitaClientError
from lita_serve.openai_api import chat_render, media_source
from lita_serve.openai_api.api_errors import ApiError, bad_request, from_client_error
from lita_serve.openai_api.chat_request import VideoChat, parse_chat
from lita_serve.openai_api.frontend_settings import FrontendSettings
from lita_serve.openai_api.triton_upstream import TritonUpstream

logger = logging.getLogger(__name__)


def _error_response(err: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def _read_body(request: Request, limit: int) -> Any:
    """The JSON body, refused with 413 as soon as it passes ``limit`` bytes (before any decoding)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is {declared} bytes, over the server's limit of {limit} bytes",
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over the server's limit of {limit} bytes",
                           code="request_too_large")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from exc


def _check_key(request: Request, key: str | None) -> None:
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(401, "invalid or missing API key (Authorization: Bearer <key>)", code="invalid_api_key")


async def _video_bytes(chat: VideoChat, settings: FrontendSettings) -> bytes:
    url, limit = chat.video_url, settings.limits.max_video_bytes
    scheme = media_source.scheme_of(url)
    if scheme == "data":
        return media_source.from_data_url(url, limit)
    if scheme == "file":
        return await asyncio.to_thread(media_source.from_file_url, url, settings.allowed_media_path, limit)
    if scheme in ("http", "https"):
        if not settings.allow_remote_media:
            raise bad_request("remote video URLs are refused (the server does not fetch what clients name); send "
                              "the video as a data:video/...;base64 URL", media_source.PARAM, "remote_media_refused")
        return await asyncio.to_thread(media_source.from_remote_url, url, limit, settings.timeout_s)
    raise bad_request(f"unsupported video URL scheme {scheme!r}: use a data: URL", media_source.PARAM)


def create_app(settings: FrontendSettings) -> FastAPI:
    """The ASGI application forwarding to the Triton server ``settings.triton_url``."""
    upstream = TritonUpstream(settings)

    def failed(client: AsyncLitaClient, exc: LitaClientError) -> ApiError:
        err = from_client_error(exc)
        if err.code == "server_unavailable":  # unreachable, not busy: reconnect on the next request
            upstream.renew(client)
        return err

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await upstream.close()

    app = FastAPI(title="LITA (OpenAI-compatible)", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.get("/health")
    async def health() -> JSONResponse:
        client = upstream.client
        state = await client.health()
        if not state.server_live:
            upstream.renew(client)
        return JSONResponse(state.to_dict(), status_code=200 if state.ok else 503)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        _check_key(request, settings.api_key)
        return JSONResponse({"object": "list", "data": [
            {"id": settings.model, "object": "model", "created": 0, "owned_by": "lita-serve"}]})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        _check_key(request, settings.api_key)
        chat = parse_chat(await _read_body(request, settings.max_body_bytes), settings.limits, settings.model)
        video = await _video_bytes(chat, settings)
        max_tokens = chat.max_tokens or settings.limits.default_max_tokens
        started = time.perf_counter()
        client = upstream.client
        if not chat.stream:
            try:
                answer = await client.ask(video, chat.question, duration=chat.duration, **chat.sampling)
            except LitaClientError as exc:
                raise failed(client, exc) from exc
            logger.info("chat completion", extra={"ms": round((time.perf_counter() - started) * 1e3, 1),
                                                  "completion_tokens": answer.num_output_tokens})
            return JSONResponse(chat_render.completion(answer, settings.model, max_tokens))
        return await _streamed(client, chat, video, settings.model, max_tokens, failed)

    return app


async def _streamed(client: AsyncLitaClient, chat: VideoChat, video: bytes, model: str, max_tokens: int,
                    failed: Callable[[AsyncLitaClient, LitaClientError], ApiError]) -> StreamingResponse:
    stream = client.stream(video, chat.question, duration=chat.duration, **chat.sampling)
    pieces = stream.__aiter__()
    try:
        first: str | None = await pieces.__anext__()
    except StopAsyncIteration:
        first = None  # an empty answer: only the closing events
    except LitaClientError as exc:
        raise failed(client, exc) from exc
    writer = chat_render.ChunkWriter(model, chat.include_usage)

    async def events() -> AsyncIterator[str]:
        try:
            if first is not None:
                yield writer.token(first)
                async for piece in pieces:
                    yield writer.token(piece)
        except LitaClientError as exc:
            yield writer.error(failed(client, exc).body())
            return
        finally:
            await pieces.aclose()  # a client that went away cancels the Triton stream
        if stream.answer is not None:
            yield writer.finish(stream.answer, max_tokens)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
