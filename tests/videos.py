"""Encoders for the small real media files the tests decode.

Every helper writes an actual file with PyAV (libx264 / aac / png), so the decoders under test
see exactly what a user would upload. Import from tests as ``from videos import make_mp4``.
Tests that encode with the ffmpeg command line instead get it from :func:`ffmpeg_binary`.
"""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np

ColorFn = Callable[[int], tuple[int, int, int]]


def ffmpeg_binary() -> str:
    """The ffmpeg command line's path; a clear error where it is missing."""
    found = shutil.which("ffmpeg")
    if found is None:
        raise RuntimeError("these tests need the ffmpeg command line (`make media-deps` installs it)")
    return found


def _solid(color: tuple[int, int, int]) -> ColorFn:
    return lambda _i: color


def make_mp4(
    path: str | Path,
    seconds: float = 2.0,
    fps: int = 10,
    size: tuple[int, int] = (160, 120),
    color_fn: ColorFn | None = None,
    frame_fn: Callable[[int], np.ndarray] | None = None,
    crf: int = 18,
) -> Path:
    """Encode an H.264 yuv420p mp4 of ``round(seconds * fps)`` frames; return its path.

    ``size`` is (width, height). Each frame is a solid ``color_fn(i)`` RGB colour, or the
    ``[height, width, 3]`` uint8 array returned by ``frame_fn(i)`` when given. The default colour
    steps through grey levels so each frame is distinguishable.
    """
    path = Path(path)
    width, height = size
    n = max(1, int(round(seconds * fps)))
    color_fn = color_fn or (lambda i: (i * 37 % 256, i * 11 % 256, 128))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": str(crf)}
        for i in range(n):
            if frame_fn is not None:
                rgb = np.ascontiguousarray(frame_fn(i), dtype=np.uint8)
            else:
                rgb = np.empty((height, width, 3), np.uint8)
                rgb[:] = color_fn(i)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_one_frame_video(path: str | Path, fps: int = 10, size: tuple[int, int] = (64, 48),
                         color: tuple[int, int, int] = (0, 0, 255)) -> Path:
    """An mp4 holding exactly one frame of a solid colour."""
    return make_mp4(path, seconds=1.0 / fps, fps=fps, size=size, color_fn=_solid(color))


def make_still_png(path: str | Path, size: tuple[int, int] = (64, 48),
                   color: tuple[int, int, int] = (255, 0, 0)) -> Path:
    """A single still image (what a user sends by uploading a picture instead of a video).

    PNG by default; a ``.jpg``/``.jpeg`` suffix writes a JPEG instead.
    """
    path = Path(path)
    width, height = size
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = color
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    codec, pix_fmt = ("mjpeg", "yuvj420p") if jpeg else ("png", "rgb24")
    with av.open(str(path), mode="w", format="image2") as container:
        stream = container.add_stream(codec, rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def make_audio_only(path: str | Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """An audio-only file (AAC in .m4a, or MP3 in .mp3) holding a 440 Hz tone."""
    path = Path(path)
    codec = "mp3" if path.suffix.lower() == ".mp3" else "aac"
    n = int(seconds * rate)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        chunk = 1024
        for start in range(0, n, chunk):
            samples = tone[start:start + chunk][None, :]  # [channels=1, samples] planar float
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def truncate(path: str | Path, fraction: float, dest: str | Path | None = None) -> Path:
    """Keep only the first ``fraction`` of ``path``'s bytes (in ``dest``, or in place)."""
    src = Path(path)
    data = src.read_bytes()
    out = Path(dest) if dest is not None else src
    out.write_bytes(data[: int(len(data) * fraction)])
    return out
