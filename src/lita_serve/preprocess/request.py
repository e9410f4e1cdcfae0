"""The preprocess step: one request's video bytes -> normalised frames and the video's duration."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from lita_serve.config import LitaConfig
from lita_serve.errors import InvalidInputError, LimitExceededError
from lita_serve.preprocess.video import sample_video_for


@dataclass
class PreparedVideo:
    frames: np.ndarray  # float32 [F, 3, S, S], CLIP-normalised
    duration: float  # seconds used to turn time tokens into seconds
    source_duration: float  # seconds measured from the video itself
    stats: dict[str, float] = field(default_factory=dict)


def check_declared_duration(duration: float | None, cfg: LitaConfig) -> float | None:
    """A client-declared duration (e.g. an annotation's) must be finite, > 0 and within the limit."""
    if duration is None:
        return None
    value = float(duration)
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"duration must be a finite number of seconds > 0, got {duration}")
    if value > cfg.limits.max_duration_s:
        raise LimitExceededError(f"duration {value:g} s is over the limit of {cfg.limits.max_duration_s:g} s")
    return value


def prepare_video(data: bytes, cfg: LitaConfig, duration: float | None = None, num_threads: int = 0) -> PreparedVideo:
    """Decode and sample ``data``; the declared ``duration`` (if any) overrides the measured one."""
    declared = check_declared_duration(duration, cfg)
    start = time.perf_counter()
    video = sample_video_for(data, cfg, num_threads=num_threads)
    decode_ms = (time.perf_counter() - start) * 1e3
    return PreparedVideo(
        frames=video.frames,
        duration=declared if declared is not None else float(video.duration),
        source_duration=float(video.duration),
        stats={"decode_ms": round(decode_ms, 3)},
    )
