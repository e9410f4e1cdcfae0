"""Read a video's container metadata (no frame decoding) and reject what is not a video.

PyAV opens the container's header in well under a millisecond, gives the stored size, frame rate
and duration, and raises Python exceptions on garbage, so it is used for every input before
the (faster-decoding but terser-failing) decord reader sees it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lita_serve.errors import VideoDecodeError
from lita_serve.preprocess.source import VideoSource

# ffmpeg demuxers that read one still picture (png_pipe, jpeg_pipe, webp_pipe, ... and image2).
_IMAGE_DEMUXERS = ("image2", "image2pipe")


@dataclass(frozen=True)
class VideoInfo:
    """Container-level facts about the first video stream."""

    format_name: str
    codec_name: str
    width: int
    height: int
    fps: float  # average frame rate; 0.0 when the container does not say
    num_frames: int  # frames the container declares; 0 when it does not say
    duration_s: float | None  # container duration, None when unknown


def _import_av():
    try:
        import av  # noqa: PLC0415 - optional at import time of the package
    except ImportError as exc:  # pragma: no cover - av is part of the serve extras
        from lita_serve.errors import MissingDependencyError

        raise MissingDependencyError("PyAV ('av') is needed to read videos: pip install av") from exc
    return av


def is_still_image_format(format_name: str) -> bool:
    """True for ffmpeg's single-image demuxers (``png_pipe``, ``jpeg_pipe``, ``image2``, ...)."""
    names = format_name.split(",")
    return any(n in _IMAGE_DEMUXERS or n.endswith("_pipe") for n in names)


def probe_video(src: VideoSource) -> VideoInfo:
    """Open ``src``'s container and describe its first video stream.

    Raises :class:`VideoDecodeError` when the input is not a container ffmpeg recognises
    (random bytes, text, an mp4 cut before its index), has no video stream (audio only),
    or is a single still image.
    """
    av = _import_av()
    try:
        container = av.open(src.open_stream(), mode="r")
    except Exception as exc:  # av.FFmpegError and friends: never let a demuxer error escape raw
        raise VideoDecodeError(
            f"{src.label} is not a readable video container (corrupt, truncated or not a video): "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from None
    with container:
        fmt = container.format.name
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            if kinds == ["audio"]:
                raise VideoDecodeError(f"{src.label} has no video stream: it is audio-only (format {fmt})")
            raise VideoDecodeError(
                f"{src.label} has no video stream (streams: {', '.join(kinds) or 'none'}, format {fmt}); "
                "truncated or not a video?"
            )
        if is_still_image_format(fmt):
            raise VideoDecodeError(
                f"{src.label} is a still image ({fmt}), not a video; send a video file instead"
            )
        stream = container.streams.video[0]
        codec = stream.codec_context
        if codec is None:  # an unknown or damaged codec id: PyAV has no decoder to ask
            raise VideoDecodeError(f"{src.label} has a video stream in a codec this server cannot decode "
                                   f"(format {fmt})")
        rate = stream.average_rate or stream.guessed_rate
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        if duration is not None and not math.isfinite(duration):
            duration = None
        return VideoInfo(
            format_name=fmt,
            codec_name=codec.name,
            width=int(codec.width or 0),
            height=int(codec.height or 0),
            fps=float(rate) if rate else 0.0,
            num_frames=int(stream.frames or 0),
            duration_s=duration,
        )


def count_video_packets(src: VideoSource, stop_after: int = 1) -> int:
    """Count the first video stream's non-empty packets, up to ``stop_after`` (demux only).

    Used to explain a decoder failure: a container whose video stream holds no packet at all
    is reported as "no frames" rather than as corrupt.
    """
    av = _import_av()
    count = 0
    try:
        with av.open(src.open_stream(), mode="r") as container:
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    count += 1
                    if count >= stop_after:
                        break
    except Exception:  # noqa: BLE001 - a diagnostic only; the caller already has an error to raise
        pass
    return count
