"""Turn what a caller holds (a path, bytes, a file object) into the raw video bytes the server decodes.

The server receives the file's bytes unchanged (its ``video`` input), so nothing is decoded
here. Batch prompt files name videos relative to a media base path; :func:`resolve_media_path`
keeps those names inside it (no ``..``, no absolute path elsewhere, no symlink leading out).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Union

from lita_client.errors import VideoInputError

VideoLike = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


def read_video(video: VideoLike) -> bytes:
    """The raw bytes of ``video``: a path (str / PathLike), a bytes-like object, or a binary file object."""
    if isinstance(video, (bytes, bytearray, memoryview)):
        return bytes(video)
    if isinstance(video, (str, os.PathLike)):
        return _read_path(Path(video))
    read = getattr(video, "read", None)
    if callable(read):
        data = read()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise VideoInputError(f"video file object must be opened in binary mode, read() gave {type(data).__name__}")
        return bytes(data)
    raise VideoInputError(f"video must be a path, bytes or a binary file object, got {type(video).__name__}")


def _read_path(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise VideoInputError(f"video file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise VideoInputError(f"video path is a directory: {path}") from exc
    except OSError as exc:
        raise VideoInputError(f"cannot read video file {path}: {exc.strerror or exc}") from exc


def resolve_media_path(base: str | os.PathLike, name: str) -> Path:
    """``name`` resolved under the media base directory ``base``; VideoInputError if it would leave it.

    Relative names are joined to ``base``; an absolute name is accepted only when it lies inside
    ``base``. Any ``..`` component is rejected outright, and the fully resolved path (symlinks
    followed) must still be inside the resolved base.
    """
    if not isinstance(name, str) or not name.strip():
        raise VideoInputError(f"video name must be a non-empty string, got {name!r}")
    root = Path(base).resolve()
    candidate = Path(name)
    if ".." in candidate.parts:
        raise VideoInputError(f"video path {name!r} may not contain '..'")
    joined = candidate if candidate.is_absolute() else root / candidate
    resolved = joined.resolve()
    if not resolved.is_relative_to(root):
        raise VideoInputError(f"video path {name!r} is outside the media base path {root}")
    return resolved
