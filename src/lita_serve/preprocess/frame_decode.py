"""Decode chosen frames of a video, already resized so the shortest side is the model's size.

Two backends return the same thing, uint8 ``[F, H', W', 3]`` RGB frames plus the stream's
frame count and frame rate:

* PyAV (preferred): one demux pass, then only the packets the wanted frames depend on are
  decoded (GOPs without a wanted frame and unwanted non-reference H.264 frames are skipped,
  :mod:`lita_serve.preprocess.packets`), and only the wanted frames are converted and shrunk
  (bicubic) — exact frames, about half the decoding work on typical H.264;
* decord: seeks to the wanted frames and lets ffmpeg's scaler (bicubic) shrink them while
  decoding, but converts every decoded frame.

Every decoder failure becomes a :class:`VideoDecodeError`; nothing from decord escapes raw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lita_serve.errors import VideoDecodeError
from lita_serve.preprocess.packets import PacketLayout
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
    return ("pyav", "decord") if _decord is not None else ("pyav",)


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


def decode_pyav(src: VideoSource, plan: PlanFn, width: int, height: int,
                num_threads: int = 0) -> DecodedFrames:
    """Decode the ``plan(n, fps)`` frames at ``width x height`` with PyAV, skipping what is not needed.

    One demux pass lists the packets; then only packets that the wanted frames depend on go to
    the decoder (:func:`lita_serve.preprocess.packets.needed_packets`): GOPs without a wanted
    frame are skipped and so are non-reference H.264 frames that are not wanted. The result is
    exactly the frames a full sequential decode gives. Only the wanted frames are converted.
    """
    import av  # noqa: PLC0415

    try:
        container = av.open(src.open_stream(), mode="r")
    except Exception as exc:  # av.FFmpegError and friends
        raise _open_failure(src, exc) from None
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if num_threads:
            stream.codec_context.thread_count = num_threads
        try:
            packets = [p for p in container.demux(stream) if p.size]
        except Exception as exc:  # noqa: BLE001
            raise VideoDecodeError(f"{src.label} is truncated or corrupt: {exc}") from None
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        indices = plan(len(packets), fps)
        layout = PacketLayout.of(packets, stream.codec_context.name, stream.codec_context.extradata)
        frames = np.empty((len(indices), height, width, 3), np.uint8)
        filled = _decode_selected(stream.codec_context, packets, layout, indices, frames, width, height, src)
    if filled < len(indices):
        raise VideoDecodeError(
            f"{src.label} is truncated or corrupt: decoded fewer frames than its {len(packets)} packets"
        )
    return DecodedFrames(frames=frames, num_source_frames=len(packets), fps=fps)


def _decode_selected(codec, packets, layout: "PacketLayout", indices: np.ndarray, out: np.ndarray,
                     width: int, height: int, src: VideoSource) -> int:
    """Feed the needed packets to ``codec``; write the wanted frames into ``out``; -> slots filled."""
    slots: dict[int, list[int]] = {}
    for slot, idx in enumerate(indices.tolist()):
        slots.setdefault(idx, []).append(slot)
    filled = 0

    try:
        for pos in layout.needed_packets(set(slots)):
            for frame in codec.decode(packets[pos]):
                filled += _store(frame, layout, slots, out, width, height)
            if not slots:
                break
        if slots:
            for frame in codec.decode(None):
                filled += _store(frame, layout, slots, out, width, height)
    except Exception as exc:  # av.FFmpegError and friends
        raise VideoDecodeError(f"{src.label} is truncated or corrupt: {exc}") from None
    return filled


def _store(frame, layout: "PacketLayout", slots: dict[int, list[int]], out: np.ndarray, width: int,
           height: int) -> int:
    """Convert ``frame`` into its output slots if it is wanted; -> slots filled."""
    index = layout.display_index(frame.pts)
    wanted = slots.pop(index, None)
    if not wanted:
        return 0
    rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray()
    for slot in wanted:
        out[slot] = rgb
    return len(wanted)


BACKENDS: dict[str, Callable[..., DecodedFrames]] = {"decord": decode_decord, "pyav": decode_pyav}
