"""The bytes of a ``video_url``: a ``data:`` URL, a ``file://`` path under an allowed folder, or
(only when allowed) an ``http(s)://`` URL.

Sizes are checked before any work: a data URL's base64 length gives its decoded size, a file's
size comes from ``stat``, a download stops one byte past the limit. Remote URLs are refused by
default, because a server that fetches what clients name can be made to reach internal hosts
(server-side request forgery).
"""

from __future__ import annotations

import base64
import binascii
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from lita_client.errors import VideoInputError
from lita_client.video_input import resolve_media_path
from lita_serve.openai_api.api_errors import ApiError, bad_request

PARAM = "messages.content.video_url"
# Media types a data URL may declare besides video/*.
_GENERIC_TYPES = ("application/octet-stream", "")


def _too_large(size: int, limit: int, what: str) -> ApiError:
    return ApiError(413, f"{what} is {size} bytes, over the server's video limit of {limit} bytes",
                    PARAM, "video_too_large")


def decoded_size(payload: str) -> int:
    """Bytes that the base64 text ``payload`` decodes to (without decoding it)."""
    stripped = payload.rstrip()
    return len(stripped) * 3 // 4 - (len(stripped) - len(stripped.rstrip("=")))


def from_data_url(url: str, max_bytes: int) -> bytes:
    """The video in ``data:video/mp4;base64,<data>``; 413 over ``max_bytes`` before decoding, 400 if malformed."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise bad_request("the video data URL has no ',' before its data", PARAM)
    parts = header.split(";")
    media_type = parts[0].strip().lower()
    if "base64" not in (p.strip().lower() for p in parts[1:]):
        raise bad_request("the video data URL must be base64 encoded (data:video/mp4;base64,...)", PARAM)
    if not (media_type.startswith("video/") or media_type in _GENERIC_TYPES):
        raise bad_request(f"the data URL holds {media_type!r}, not a video (video/*)", PARAM)
    size = decoded_size(payload)
    if size > max_bytes:
        raise _too_large(size, max_bytes, "the video in the data URL")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"the video data URL is not valid base64: {exc}", PARAM) from exc
    if not data:
        raise bad_request("the video data URL is empty", PARAM)
    return data


def from_file_url(url: str, allowed: Path | None, max_bytes: int) -> bytes:
    """The file a ``file://`` URL names, only inside ``allowed``."""
    if allowed is None:
        raise bad_request("file:// video URLs are refused: the server was not started with --allowed-media-path",
                          PARAM, "media_path_not_allowed")
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise bad_request(f"file:// URLs name no host, got {parsed.netloc!r}", PARAM)
    try:
        path = resolve_media_path(allowed, urllib.parse.unquote(parsed.path))
        size = path.stat().st_size
    except VideoInputError as exc:
        raise bad_request(str(exc), PARAM, "media_path_not_allowed") from exc
    except OSError as exc:
        raise bad_request(f"cannot read the video file {parsed.path}: {exc.strerror or exc}", PARAM) from exc
    if size > max_bytes:
        raise _too_large(size, max_bytes, f"the video file {parsed.path}")
    return path.read_bytes()


def from_remote_url(url: str, max_bytes: int, timeout_s: float) -> bytes:
    """Download ``url`` (blocking; run it off the event loop), at most ``max_bytes``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - scheme checked by caller
            data = response.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise bad_request(f"cannot fetch the video URL {url}: {exc}", PARAM) from exc
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes, f"the video at {url}")
    return data


def scheme_of(url: str) -> str:
    return url.split(":", 1)[0].lower() if ":" in url else ""
