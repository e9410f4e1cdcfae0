"""Video -> the ``F`` CLIP-normalised frames LITA's vision tower consumes.

``sample_video`` validates the input (bytes limit, container, video stream, duration limit),
picks ``F`` frame indices uniformly over the whole clip the way NVlabs/LITA does
(``np.round(np.linspace(0, n - 1, F))``, ``lita/utils.py::load_video``), decodes only those
frames, already shrunk so the shortest side is the model's image size, then center-crops and
normalises them.

Conventions:

* the clip length is ``num_source_frames / fps`` (LITA's ``vid_len``), and frame ``i`` is at
  ``i / fps`` seconds;
* a clip with fewer than ``F`` frames repeats frames; a one-frame video is valid (all ``F``
  samples are that frame, duration ``1 / fps``);
* a still image (PNG, JPEG, ... as a picture file) is rejected: it has no time axis to ask
  about, and its "frame rate" would be made up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lita_serve.config import LitaConfig
from lita_serve.errors import InvalidInputError, LimitExceededError, VideoDecodeError
from lita_serve.preprocess.frame_decode import BACKENDS, available_backends
from lita_serve.preprocess.probe import probe_video
from lita_serve.preprocess.frame_sampling import crop_and_normalize, crop_chw, frame_indices, resize_dims
from lita_serve.preprocess.source import VideoInput, VideoSource, load_source


@dataclass
class SampledVideo:
    """The model-ready frames of one video and where they sit in time."""

    frames: np.ndarray  # float32 [F, 3, S, S], CLIP-normalised (uint8 cropped pixels with normalize=False)
    duration: float  # seconds: num_source_frames / fps
    timestamps: np.ndarray  # float64 [F], seconds of each sampled frame
    fps: float
    num_source_frames: int
    width: int  # stored size of the source video
    height: int

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def _check_request(num_frames: int, image_size: int, max_frames: int | None) -> None:
    if num_frames < 1:
        raise InvalidInputError(f"num_frames must be >= 1, got {num_frames}")
    if max_frames is not None and num_frames > max_frames:
        raise LimitExceededError(f"num_frames={num_frames} is over the limit of {max_frames} frames")
    if image_size < 1:
        raise InvalidInputError(f"image_size must be >= 1, got {image_size}")


def check_timing(label: str, num_source_frames: int, fps: float, max_duration_s: float | None) -> float:
    """Return the clip length ``num_source_frames / fps`` after checking it is usable.

    Raises :class:`VideoDecodeError` for no frames or a missing/invalid frame rate (the
    duration would be <= 0 or not finite) and :class:`LimitExceededError` above
    ``max_duration_s``.
    """
    if num_source_frames <= 0:
        raise VideoDecodeError(f"{label} holds no video frames")
    if not math.isfinite(fps) or fps <= 0:
        raise VideoDecodeError(f"{label} has no valid frame rate (fps={fps}), so its duration is unknown")
    duration = num_source_frames / fps
    if not math.isfinite(duration) or duration <= 0:
        raise VideoDecodeError(f"{label} has an invalid duration ({duration} s)")
    if max_duration_s is not None and duration > max_duration_s:
        raise LimitExceededError(
            f"{label} is {duration:.1f} s long, over the limit of {max_duration_s:g} s"
        )
    return duration


def _pick_backend(backend: str) -> str:
    backends = available_backends()
    if backend == "auto":
        return backends[0]
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; known: {sorted(BACKENDS)}")
    if backend not in backends:
        raise VideoDecodeError(f"video backend {backend!r} is not installed")
    return backend


def sample_video(
    source: VideoInput,
    num_frames: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    max_bytes: int | None = None,
    max_duration_s: float | None = None,
    max_frames: int | None = None,
    num_threads: int = 0,
    backend: str = "auto",
    normalize: bool = True,
) -> SampledVideo:
    """Decode ``num_frames`` frames uniformly spread over ``source`` into CLIP's input format.

    ``source`` is a path or the video's bytes. Returns float32 ``[F, 3, S, S]`` frames with
    ``S = image_size``. Raises :class:`VideoDecodeError` for anything that is not a decodable
    video and :class:`LimitExceededError` when ``max_bytes``/``max_duration_s``/``max_frames``
    is exceeded. ``backend`` is ``"auto"`` (decord when installed), ``"decord"`` or ``"pyav"``.
    """
    _check_request(num_frames, image_size, max_frames)
    src: VideoSource = load_source(source, max_bytes)
    info = probe_video(src)
    if max_duration_s is not None and info.duration_s is not None and info.duration_s > max_duration_s:
        # Early reject from the container header; the decoded frame count is checked again below.
        raise LimitExceededError(
            f"{src.label} is {info.duration_s:.1f} s long, over the limit of {max_duration_s:g} s"
        )
    if info.width <= 0 or info.height <= 0:
        raise VideoDecodeError(f"{src.label} has no frame size in its video stream ({info.codec_name})")
    width, height = resize_dims(info.width, info.height, image_size)

    def plan(n: int, fps: float) -> np.ndarray:
        # Runs once the decoder knows the frame count and rate, before any frame is decoded.
        check_timing(src.label, n, fps, max_duration_s)
        return frame_indices(n, num_frames)

    decoded = BACKENDS[_pick_backend(backend)](src, plan, width, height, num_threads)
    duration = decoded.num_source_frames / decoded.fps
    indices = frame_indices(decoded.num_source_frames, num_frames)
    if normalize:
        frames = crop_and_normalize(decoded.frames, image_size, mean, std)  # float32 [F, 3, S, S]
    else:
        frames = crop_chw(decoded.frames, image_size)  # uint8 [F, 3, S, S], normalised by the encoder
    return SampledVideo(
        frames=frames,
        duration=duration,
        timestamps=indices / decoded.fps,
        fps=decoded.fps,
        num_source_frames=decoded.num_source_frames,
        width=info.width,
        height=info.height,
    )


def sample_video_for(source: VideoInput, cfg: LitaConfig, **kwargs) -> SampledVideo:
    """:func:`sample_video` with every number taken from ``cfg``.

    ``num_frames = cfg.lita.sample_frames``, ``S = cfg.vision.image_size``, CLIP mean/std from
    ``cfg.vision`` and the byte/duration/frame limits from ``cfg.limits``. ``kwargs`` passes
    ``num_threads``/``backend`` through.
    """
    return sample_video(
        source,
        cfg.lita.sample_frames,
        cfg.vision.image_size,
        cfg.vision.image_mean,
        cfg.vision.image_std,
        max_bytes=cfg.limits.max_video_bytes,
        max_duration_s=cfg.limits.max_duration_s,
        max_frames=cfg.limits.max_frames,
        **kwargs,
    )
