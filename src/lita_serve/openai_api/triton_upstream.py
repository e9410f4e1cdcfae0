"""The LITA client the frontend forwards with, renewed after the server was unreachable.

A gRPC channel that failed to connect waits with growing backoff (up to two minutes) before it
tries again, so a frontend started before tritonserver became ready, or outliving a restart
under ``--supervise``, would keep answering 503 long after the server is back. After an
unreachable server (not a busy one) the next request gets a fresh client; the old one is closed
once the requests that may still use it have had their full timeout. A fresh client alone is
not enough: gRPC keeps subchannels (and their backoff) in a process-wide pool shared by every
channel to the same address, so the frontend's channels use a pool of their own
(``grpc.use_local_subchannel_pool``), with tritonclient's other channel defaults kept.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tritonclient.grpc.aio import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

from lita_client import AsyncLitaClient
from lita_serve.openai_api.frontend_settings import FrontendSettings


def channel_args() -> list[tuple[str, int]]:
    """tritonclient's default channel options, plus a subchannel pool private to the channel."""
    keepalive = KeepAliveOptions()
    return [("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.use_local_subchannel_pool", 1)]


class OwnChannelLitaClient(AsyncLitaClient):
    """:class:`AsyncLitaClient` whose gRPC channel has its own subchannel pool (see the module docstring)."""

    def _connect_kwargs(self, address: str) -> dict[str, Any]:
        return {**super()._connect_kwargs(address), "channel_args": channel_args()}


class TritonUpstream:
    """Holds the shared :class:`AsyncLitaClient` (safe for concurrent requests) and renews it."""

    def __init__(self, settings: FrontendSettings) -> None:
        self._settings = settings
        self.client = self._new()
        self._retired: set[AsyncLitaClient] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def _new(self) -> AsyncLitaClient:
        s = self._settings
        return OwnChannelLitaClient(s.triton_url, timeout=s.timeout_s, retries=s.retries, model_name=s.model)

    def renew(self, failed: AsyncLitaClient) -> None:
        """Replace ``failed`` (if it is still the current client) with a fresh connection."""
        if failed is not self.client:
            return  # another request renewed it already
        self.client = self._new()
        self._retired.add(failed)
        loop = asyncio.get_running_loop()
        loop.call_later(self._settings.timeout_s + 5.0, self._close_later, failed)

    def _close_later(self, old: AsyncLitaClient) -> None:
        if old in self._retired:
            self._retired.discard(old)
            task = asyncio.ensure_future(old.close())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for old in [*self._retired, self.client]:
            await old.close()
        self._retired.clear()
