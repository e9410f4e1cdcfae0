"""What the OpenAI-compatible frontend needs to know: where Triton is, who may call, what it accepts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lita_client.contract import ENSEMBLE
from lita_serve.config import LitaConfig, ServeLimits

# The API key, when ``--api-key`` is not given.
API_KEY_ENV = "LITA_API_KEY"


@dataclass(frozen=True)
class FrontendSettings:
    """Settings of one frontend. ``limits`` are the served repository's (its ``lita.json``)."""

    triton_url: str  # host:grpc_port of the tritonserver to forward to
    model: str = ENSEMBLE  # the model id clients name (and the Triton ensemble called)
    api_key: str | None = None  # when set, every /v1 request needs "Authorization: Bearer <key>"
    allowed_media_path: Path | None = None  # file:// video URLs are read only under this folder
    allow_remote_media: bool = False  # fetch http(s) video URLs (off: refused, against request forgery)
    timeout_s: float = 120.0  # one whole request, forwarded as the gRPC deadline
    retries: int = 2  # attempts after UNAVAILABLE before any response (the SDK's backoff)
    limits: ServeLimits = field(default_factory=ServeLimits)

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read: a base64 video at the video limit plus 1 MiB of JSON and text."""
        return self.limits.max_video_bytes * 4 // 3 + 4 + (1 << 20)


def limits_of(repository: str | os.PathLike | None) -> ServeLimits:
    """The limits a repository was built with (``lita.json``); the defaults when it has none."""
    if repository is not None and (Path(repository) / "lita.json").is_file():
        return LitaConfig.load(Path(repository) / "lita.json").limits
    return ServeLimits()


def api_key_from(explicit: str | None) -> str | None:
    """``--api-key`` if given, else ``$LITA_API_KEY``; empty means none."""
    return explicit or os.environ.get(API_KEY_ENV) or None
