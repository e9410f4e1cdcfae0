"""Connection settings shared by the sync and asyncio clients, the retry policy and the health report."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

DEFAULT_URL = "127.0.0.1:8001"
URL_ENV = "LITA_URL"
STREAM_HEADERS: dict[str, str] = {}  # no triton_grpc_error header: see lita_client.errors


def default_url() -> str:
    """``$LITA_URL`` when set, else Triton's default gRPC address on loopback."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for requests that failed with UNAVAILABLE before any response arrived.

    ``retries`` extra attempts, waiting ``backoff_s * 2**k`` (capped at ``max_backoff_s``) before attempt k+1.
    """

    retries: int = 3
    backoff_s: float = 0.25
    max_backoff_s: float = 4.0

    def delays(self) -> Iterator[float]:
        for k in range(max(0, self.retries)):
            yield min(self.backoff_s * (2 ** k), self.max_backoff_s)


@dataclass(frozen=True)
class ConnectionOptions:
    """Where and how to reach the server."""

    url: str = DEFAULT_URL
    timeout: float | None = 120.0  # seconds for one whole request (and for each readiness call)
    ssl: bool = False
    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of tritonclient's (sync or aio) ``InferenceServerClient``."""
        return dict(url=self.url, ssl=self.ssl, root_certificates=self.root_certificates,
                    private_key=self.private_key, certificate_chain=self.certificate_chain)


@dataclass(frozen=True)
class Health:
    """Readiness of the server and of the ``lita`` model; ``error`` says why when unreachable."""

    url: str
    model: str
    server_live: bool
    server_ready: bool
    model_ready: bool
    error: str | None = None
    replicas: tuple["Health", ...] = ()  # each server's own, when the client has several

    @property
    def ok(self) -> bool:
        return self.server_live and self.server_ready and self.model_ready

    def to_dict(self) -> dict[str, Any]:
        data = {"url": self.url, "model": self.model, "server_live": self.server_live,
                "server_ready": self.server_ready, "model_ready": self.model_ready, "ok": self.ok,
                "error": self.error}
        if self.replicas:
            data["replicas"] = [r.to_dict() for r in self.replicas]
        return data

    def lines(self) -> list[str]:
        yes = {True: "yes", False: "no"}
        if self.replicas:
            ready = sum(r.ok for r in self.replicas)
            return [f"{ready} of {len(self.replicas)} servers ready"] + [line for r in self.replicas for line in r.lines()]
        return [f"server {self.url}: live={yes[self.server_live]} ready={yes[self.server_ready]}",
                f"model {self.model}: ready={yes[self.model_ready]}"]
