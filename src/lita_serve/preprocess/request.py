"""The preprocess step: one request's video bytes -> normalised frames and the video's duration.

With a :class:`~lita_serve.feature_cache.FeatureCache`, :func:`prepare_cached` first hashes the
bytes; when the cache holds that video's features it skips decoding and returns no frames
(``[0, 3, S, S]``), a pin that keeps the entry readable until the encoder step has read it, and
the measured duration stored with the entry.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lita_serve.config import LitaConfig
from lita_serve.feature_cache import FeatureCache, entry_stats, feature_key
from lita_serve.errors import InvalidInputError, LimitExceededError
from lita_serve.preprocess.source import load_source
from lita_serve.preprocess.video import SampledVideo, sample_video_for


@dataclass
class PreparedVideo:
    frames: np.ndarray  # float32 [F, 3, S, S] CLIP-normalised, or uint8 pixels with normalize=False
    duration: float  # seconds used to turn time tokens into seconds
    source_duration: float  # seconds measured from the video itself
    stats: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # feature-cache key ("" when the cache is off)
    pin: str = ""  # on a cache hit: the pinned entry the encoder step reads (FeatureCache.pin)

    @property
    def cached(self) -> bool:
        """True: frames is empty and the encoder step reads the features from :attr:`pin`."""
        return bool(self.pin)


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


def prepare_video(data: bytes, cfg: LitaConfig, duration: float | None = None, num_threads: int = 0,
                  normalize: bool = True) -> PreparedVideo:
    """Decode and sample ``data``; the declared ``duration`` (if any) overrides the measured one.

    ``normalize=False`` returns the cropped uint8 pixels ``[F, 3, S, S]`` for an encoder that
    normalises itself (:class:`~lita_serve.vision_encoder.cached.CachedEncoder`). The stats
    carry the timeline (:func:`timeline_stats`).
    """
    declared = check_declared_duration(duration, cfg)
    start = time.perf_counter()
    video = sample_video_for(data, cfg, num_threads=num_threads, normalize=normalize)
    decode_ms = (time.perf_counter() - start) * 1e3
    return PreparedVideo(
        frames=video.frames,
        duration=declared if declared is not None else float(video.duration),
        source_duration=float(video.duration),
        stats={"decode_ms": round(decode_ms, 3), **timeline_stats(video)},
    )


def timeline_stats(video: SampledVideo) -> dict[str, Any]:
    """What a client needs to check the times: each sample's time (seconds from the first frame),
    the shortest and longest gap between the video's frames (equal for a constant rate), and the
    container's own duration when it disagrees with the timeline (by more than 2 % and 0.5 s)."""
    shortest, longest = video.timeline.spacing()
    stats: dict[str, Any] = {
        "sample_times_s": [round(float(t), 3) for t in video.timestamps],
        "frame_spacing_s": [round(shortest, 4), round(longest, 4)],
    }
    declared = video.container_duration
    if declared is not None and abs(declared - video.duration) > max(0.5, 0.02 * video.duration):
        stats["container_duration_s"] = round(declared, 3)
    return stats


def empty_frames(cfg: LitaConfig, dtype: type = np.uint8) -> np.ndarray:
    """The no-frames tensor sent on a cache hit: [0, 3, S, S]."""
    s = cfg.vision.image_size
    return np.empty((0, 3, s, s), dtype)


def prepare_cached(data: bytes, cfg: LitaConfig, cache: FeatureCache, duration: float | None = None,
                   num_threads: int = 0, normalize: bool = True) -> PreparedVideo:
    """Like :func:`prepare_video`, but skip decoding when ``cache`` holds this video's features.

    Keys are made with the cache's own fingerprint (the serving encoder's). On a hit the frames are empty and ``cached`` is True; the request is still checked against
    the byte and duration limits.
    """
    if not cache.enabled:
        return prepare_video(data, cfg, duration, num_threads, normalize)
    declared = check_declared_duration(duration, cfg)
    load_source(data, cfg.limits.max_video_bytes)  # the byte limit, before hashing
    start = time.perf_counter()
    key = feature_key(data, cache.fingerprint)
    pinned = cache.pin(key)
    hash_ms = round((time.perf_counter() - start) * 1e3, 3)
    if pinned is not None and "duration" not in pinned[1].meta:  # not stored by the encoder step
        cache.release(pinned[0])
        pinned = None
    if pinned is not None:
        pin, info = pinned
        measured = float(info.meta["duration"])
        stats = {"hash_ms": hash_ms, **entry_stats(info.meta)}
        return PreparedVideo(frames=empty_frames(cfg, np.float32 if normalize else np.uint8),
                             duration=declared if declared is not None else measured,
                             source_duration=measured, stats=stats, key=key, pin=pin)
    video = prepare_video(data, cfg, declared, num_threads, normalize)
    video.key = key
    video.stats["hash_ms"] = hash_ms
    return video
