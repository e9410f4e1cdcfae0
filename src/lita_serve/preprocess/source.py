"""Turn a user-supplied video (a path, or the raw bytes of a request) into something a demuxer
can open, after the cheap checks that need no decoding: missing file, empty input, byte limit."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

from lita_serve.errors import LimitExceededError, VideoDecodeError

VideoInput = Union[str, Path, bytes, bytearray, memoryview]


@dataclass(frozen=True)
class VideoSource:
    """A validated input: ``path`` for files on disk, ``data`` for in-memory bytes (never both)."""

    path: str | None
    data: bytes | memoryview | None
    num_bytes: int

    @property
    def label(self) -> str:
        """How error messages name this input."""
        return f"video file {self.path!r}" if self.path is not None else f"video bytes ({self.num_bytes} B)"

    def open_stream(self) -> str | BinaryIO:
        """A fresh handle for a demuxer: the path itself, or a new in-memory reader."""
        if self.path is not None:
            return self.path
        return io.BytesIO(self.data)  # BytesIO shares an immutable bytes object's buffer


def load_source(source: VideoInput, max_bytes: int | None = None) -> VideoSource:
    """Validate ``source`` without decoding it.

    Raises :class:`VideoDecodeError` for a missing file or empty input, and
    :class:`LimitExceededError` when the input is larger than ``max_bytes``.
    """
    if isinstance(source, (str, Path)):
        path = os.fspath(source)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise VideoDecodeError(f"video file {path!r} cannot be read: {exc.strerror or exc}") from None
        if not os.path.isfile(path):
            raise VideoDecodeError(f"video path {path!r} is not a regular file")
        src = VideoSource(path=path, data=None, num_bytes=st.st_size)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = source
        if isinstance(data, memoryview):
            data = data.cast("B") if data.contiguous else data.tobytes()
        src = VideoSource(path=None, data=bytes(data) if isinstance(data, bytearray) else data,
                          num_bytes=len(data))
    else:
        raise VideoDecodeError(
            f"video must be a path or bytes, got {type(source).__name__}"
        )
    if src.num_bytes == 0:
        raise VideoDecodeError(f"{src.label} is empty (0 bytes)")
    if max_bytes is not None and src.num_bytes > max_bytes:
        raise LimitExceededError(
            f"{src.label} is {src.num_bytes} bytes, over the limit of {max_bytes} bytes"
        )
    return src
