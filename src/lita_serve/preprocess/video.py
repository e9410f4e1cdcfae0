"""Video -> the ``F`` CLIP-normalised frames LITA's vision tower consumes.

``sample_video`` validates the input (bytes limit, container, video stream, duration limit),
picks ``F`` frames at evenly spaced *times* of the presentation timeline
(:mod:`lita_serve.preprocess.timeline`; on constant-frame-rate video exactly NVlabs/LITA's
``np.round(np.linspace(0, n - 1, F))``, ``lita/utils.py::load_video``), decodes only those
frames as a player shows them (display matrix, pixel aspect), already shrunk so the shortest
side is the model's image size, then center-crops and normalises them.

Conventions:

* the clip length is the timeline's: from the first frame's timestamp to the end of the last
  frame (LITA's ``vid_len`` on constant-rate video), and times are seconds from the first frame;
* a clip with fewer than ``F`` frames repeats frames; a one-frame video is valid (all ``F``
  samples are that frame, duration one frame interval);
* a still image (PNG, JPEG, ... as a picture file) is rejected: it has no time axis to ask
  about, and its "frame rate" would be made up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lita_serve.config import IMAGE_ASPECT_RATIOS, LitaConfig
from lita_serve.errors import InvalidInputError, LimitExceededError, VideoDecodeError
from lita_serve.preprocess.frame_decode import BACKENDS, available_backends
from lita_serve.preprocess.frame_sampling import crop_chw, normalize_chw, pad_chw, pad_color
from lita_serve.preprocess.probe import probe_video
from lita_serve.preprocess.source import VideoInput, VideoSource, load_source
from lita_serve.preprocess.timeline import Timeline


@dataclass
class SampledVideo:
    """The model-ready frames of one video and where they sit in time."""

    frames: np.ndarray  # float32 [F, 3, S, S], CLIP-normalised (uint8 cropped pixels with normalize=False)
    duration: float  # seconds: the presentation timeline's length
    timestamps: np.ndarray  # float64 [F], seconds of each sampled frame from the first frame
    indices: np.ndarray  # int64 [F], display indices of the sampled frames
    timeline: Timeline
    fps: float  # the stream's average rate as the container says (0.0: unknown)
    width: int  # stored size of the source video
    height: int
    container_duration: float | None = None  # what the container header says, None when it does not

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_source_frames(self) -> int:
        return self.timeline.num_frames


def _check_request(num_frames: int, image_size: int, max_frames: int | None) -> None:
    if num_frames < 1:
        raise InvalidInputError(f"num_frames must be >= 1, got {num_frames}")
    if max_frames is not None and num_frames > max_frames:
        raise LimitExceededError(f"num_frames={num_frames} is over the limit of {max_frames} frames")
    if image_size < 1:
        raise InvalidInputError(f"image_size must be >= 1, got {image_size}")


def check_timing(label: str, timeline: Timeline, max_duration_s: float | None) -> float:
    """Return the timeline's duration after checking it is usable.

    Raises :class:`VideoDecodeError` for no frames or a duration that is <= 0 or not finite
    (no timestamps and no frame rate), and :class:`LimitExceededError` above ``max_duration_s``.
    """
    if timeline.num_frames <= 0:
        raise VideoDecodeError(f"{label} holds no video frames")
    duration = timeline.duration
    if not math.isfinite(duration) or duration <= 0:
        raise VideoDecodeError(f"{label} has no usable timestamps or frame rate, so its duration is unknown")
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
    image_aspect_ratio: str = "square",
) -> SampledVideo:
    """Decode ``num_frames`` frames uniformly spread over ``source`` into CLIP's input format.

    ``source`` is a path or the video's bytes. Returns float32 ``[F, 3, S, S]`` frames with
    ``S = image_size``. Raises :class:`VideoDecodeError` for anything that is not a decodable
    video and :class:`LimitExceededError` when ``max_bytes``/``max_duration_s``/``max_frames``
    is exceeded. ``backend`` is ``"auto"`` (PyAV, the first of :func:`available_backends`), ``"decord"`` or ``"pyav"``.
    ``image_aspect_ratio`` ``"square"`` crops the centre of frames scaled to cover the square;
    ``"pad"`` scales them to fit inside it and pads with the mean colour (LLaVA's expand2square).
    """
    if image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
        raise InvalidInputError(f"image_aspect_ratio must be one of {list(IMAGE_ASPECT_RATIOS)}, "
                                f"got {image_aspect_ratio!r}")
    pad = image_aspect_ratio == "pad"
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

    def plan(timeline: Timeline) -> np.ndarray:
        # Runs once the decoder knows every frame's timestamp, before any frame is decoded.
        check_timing(src.label, timeline, max_duration_s)
        return timeline.sample(num_frames)

    decoded = BACKENDS[_pick_backend(backend)](src, plan, image_size, num_threads, pad)
    if pad:
        frames = pad_chw(decoded.frames, image_size, pad_color(mean))  # uint8 [F, 3, S, S]
    else:
        frames = crop_chw(decoded.frames, image_size)  # uint8 [F, 3, S, S]
    if normalize:
        frames = normalize_chw(frames, mean, std)  # float32 [F, 3, S, S]; else the encoder normalises
    return SampledVideo(
        frames=frames,
        duration=decoded.timeline.duration,
        timestamps=decoded.timeline.seconds(decoded.indices),
        indices=decoded.indices,
        timeline=decoded.timeline,
        fps=decoded.fps,
        width=info.width,
        height=info.height,
        container_duration=info.duration_s,
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
        image_aspect_ratio=cfg.lita.image_aspect_ratio,
        **kwargs,
    )
