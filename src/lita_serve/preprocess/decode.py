"""Decode chosen frames of a video, already resized so the shortest side is the model's size.

Two backends return the same thing, uint8 ``[F, H', W', 3]`` RGB frames plus the stream's
frame count and frame rate:

* decord (preferred): seeks to the wanted frames and lets ffmpeg's scaler (bicubic) shrink
  them while decoding, so a 1080p clip never materialises at full resolution in Python;
* PyAV (fallback when decord cannot be imported): decodes sequentially and reformats only the
  wanted frames (bicubic as well).

Every decoder failure becomes a :class:`VideoDecodeError`; nothing from decord escapes raw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lita_serve.errors import VideoDecodeError
from lita_serve.preprocess.probe import count_video_packets
from lita_serve.preprocess.source import VideoSource

try:  # decord is optional: the PyAV path below works without it
    import decord as _decord
except ImportError:  # pragma: no cover - depends on the environment
    _decord = None


@dataclass(frozen=True)
class DecodedFrames:
    frames: np.ndarray  # uint8 [F, H', W', 3]
    num_source_frames: int
    fps: float


PlanFn = Callable[[int, float], np.ndarray]  # (num_source_frames, fps) -> indices to decode; may raise


def available_backends() -> tuple[str, ...]:
    return ("decord", "pyav") if _decord is not None else ("pyav",)


def _short_reason(exc: BaseException) -> str:
    """decord's message without its '[hh:mm:ss] /path/file.cc:123:' prefixes, one line, short."""
    text = re.sub(r"\[\d\d:\d\d:\d\d\] [^:]*:\d+: ", "", str(exc))
    text = " ".join(text.split())
    return text[:200] or type(exc).__name__


def _open_failure(src: VideoSource, exc: BaseException) -> VideoDecodeError:
    if count_video_packets(src) == 0:
        return VideoDecodeError(f"{src.label} holds no video frames")
    return VideoDecodeError(f"{src.label} could not be decoded (corrupt or truncated?): {_short_reason(exc)}")


def decode_decord(src: VideoSource, plan: PlanFn, width: int, height: int,
                  num_threads: int = 0) -> DecodedFrames:
    """Decode the ``plan(n, fps)`` frames at ``width x height`` with decord."""
    if _decord is None:
        raise VideoDecodeError("decord is not installed; use the 'pyav' backend")
    try:
        reader = _decord.VideoReader(src.open_stream(), ctx=_decord.cpu(0), width=width, height=height,
                                     num_threads=num_threads)
        num = len(reader)
        fps = float(reader.get_avg_fps())
    except Exception as exc:  # DECORDError, RuntimeError, AssertionError (zero frames)
        raise _open_failure(src, exc) from None
    indices = plan(num, fps)
    try:
        batch = reader.get_batch(indices)  # [F, H', W', 3] uint8
    except Exception as exc:
        raise VideoDecodeError(
            f"{src.label} is truncated or corrupt: frames could not be decoded ({_short_reason(exc)})"
        ) from None
    frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)  # any decord bridge
    return DecodedFrames(frames=frames, num_source_frames=num, fps=fps)


def _pyav_fps(src: VideoSource) -> float:
    import av  # noqa: PLC0415

    try:
        with av.open(src.open_stream(), mode="r") as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            return float(rate) if rate else 0.0
    except Exception:  # noqa: BLE001 - probe_video already opened it; treat as unknown rate
        return 0.0


def decode_pyav(src: VideoSource, plan: PlanFn, width: int, height: int,
                num_threads: int = 0) -> DecodedFrames:
    """Decode the ``plan(n, fps)`` frames at ``width x height`` with PyAV (sequential decode)."""
    import av  # noqa: PLC0415

    num = count_video_packets(src, stop_after=2**62)
    fps = _pyav_fps(src)
    indices = plan(num, fps)
    wanted: dict[int, list[int]] = {}
    for slot, idx in enumerate(indices.tolist()):
        wanted.setdefault(idx, []).append(slot)
    frames = np.empty((len(indices), height, width, 3), np.uint8)
    filled = 0
    try:
        with av.open(src.open_stream(), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if num_threads:
                stream.codec_context.thread_count = num_threads
            last = int(indices.max())
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    rgb = frame.reformat(width=width, height=height, format="rgb24",
                                         interpolation="BICUBIC").to_ndarray()
                    for slot in wanted[i]:
                        frames[slot] = rgb
                        filled += 1
                if i >= last:
                    break
    except Exception as exc:  # av.FFmpegError and friends
        raise VideoDecodeError(f"{src.label} is truncated or corrupt: {exc}") from None
    if filled < len(indices):
        raise VideoDecodeError(
            f"{src.label} is truncated or corrupt: decoded fewer frames than its {num} packets"
        )
    return DecodedFrames(frames=frames, num_source_frames=num, fps=fps)


BACKENDS: dict[str, Callable[..., DecodedFrames]] = {"decord": decode_decord, "pyav": decode_pyav}
