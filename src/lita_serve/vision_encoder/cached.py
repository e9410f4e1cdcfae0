"""The vision-encoder step with the feature cache: cached features are reused, the rest are
encoded in one batch and stored.

Each request carries either frames (decoded by the preprocess step) or no frames and a cache pin
(the preprocess step found the features and pinned them, so an eviction in between cannot take
them away: :meth:`~lita_serve.feature_cache.FeatureCache.pin`). The video itself never reaches
this step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lita_serve.config import LitaConfig
from lita_serve.feature_cache import FeatureCache
from lita_serve.preprocess.frame_sampling import normalization_affine
from lita_serve.vision_encoder.runtimes import placement


@dataclass
class EncodeJob:
    """One request's input to the encoder step."""

    frames: np.ndarray  # uint8 pixels or normalised float32 [F, 3, S, S]; [0, 3, S, S] after a cache hit
    key: str = ""  # feature-cache key; "" when the cache is off
    source_duration: float = 0.0  # the video's measured duration, stored with the features
    pin: str = ""  # on a cache hit: the entry the preprocess step pinned for this request
    meta: dict[str, Any] = field(default_factory=dict)  # stored with the features (feature_cache.ENTRY_STATS)


@dataclass
class EncodeResult:
    embeddings: np.ndarray | None  # float32 [N_vis, H]
    stats: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None


class CachedEncoder:
    """Wraps an encoder (a :class:`~lita_serve.vision_encoder.encoder.VisualEncoder` or one of
    :mod:`~lita_serve.vision_encoder.runtimes`) with a :class:`FeatureCache`."""

    def __init__(self, encoder, cfg: LitaConfig, cache: FeatureCache) -> None:
        self.encoder = encoder
        self.cfg = cfg
        self.cache = cache
        self.device, self.dtype = placement(encoder)
        scale, offset = normalization_affine(cfg.vision.image_mean, cfg.vision.image_std)  # [1, 3, 1, 1]
        self.scale = torch.from_numpy(scale[None]).to(self.device)  # [1, 1, 3, 1, 1]
        self.offset = torch.from_numpy(offset[None]).to(self.device)

    def run(self, jobs: list[EncodeJob]) -> list[EncodeResult]:
        """Features for every job; cache hits first, then one encoder batch for the misses."""
        results = [self._lookup(job) for job in jobs]
        todo = [i for i, r in enumerate(results) if r.embeddings is None and r.error is None]
        if todo:
            self._encode([jobs[i] for i in todo], [results[i] for i in todo])
        return results

    def _lookup(self, job: EncodeJob) -> EncodeResult:
        if not self.cache.enabled or not job.key:
            return EncodeResult(None, {"cache": "off"})
        if job.frames.shape[0] > 0:  # the preprocess step missed: count it, encode below
            self.cache.counters.misses += 1
            return EncodeResult(None, {"cache": "miss"})
        found = self.cache.take_pinned(job.pin) if job.pin else None
        if found is None:  # only when the pin outlived PIN_MAX_AGE_S or the cache folder was wiped
            return EncodeResult(None, {"cache": "miss"},
                                RuntimeError(f"no frames and no pinned feature-cache entry for key {job.key!r}"))
        return EncodeResult(np.array(found[0], np.float32), {"cache": "hit"})

    def _normalized(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 pixels -> CLIP-normalised frames on the encoder's device (float frames pass through)."""
        if frames.dtype != np.uint8:
            return torch.from_numpy(frames).to(self.device, self.dtype)
        pixels = torch.from_numpy(frames).to(self.device)  # uint8: 4x less to move than floats
        x = pixels.float() * self.scale - self.offset  # the same float32 ops as normalize_chw
        return x.to(self.dtype)

    def _encode(self, jobs: list[EncodeJob], results: list[EncodeResult]) -> None:
        start = time.perf_counter()
        try:
            batch = self._normalized(np.stack([j.frames for j in jobs]))  # [B,F,3,S,S]
            with torch.inference_mode():
                embeddings = self.encoder(batch).float().cpu().numpy()  # [B, N_vis, H]
        except Exception as exc:  # noqa: BLE001 - the batch failed as a whole
            for r in results:
                r.error = exc
            return
        encode_ms = round((time.perf_counter() - start) * 1e3, 3)
        for job, result, emb in zip(jobs, results, embeddings):
            result.embeddings = emb
            result.stats.update({"encode_ms": encode_ms, "encode_batch": len(jobs)})
            if job.key:
                self.cache.put(job.key, emb, {**job.meta, "duration": float(job.source_duration)})
