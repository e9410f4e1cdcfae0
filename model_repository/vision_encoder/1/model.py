"""Triton adapter: frames -> LITA visual embeddings (tower + projector + pooling), dynamically batched,
with the visual-feature cache (lita_serve.vision_encoder.cached): hits skip encoding, misses are stored.

Hit/miss counts are exported with Triton's metrics as ``lita_feature_cache_lookups_total``
(label ``result``) and reported in each response's stats (``"cache": "hit"|"miss"``).
"""

import serving_env  # noqa: F401 - first: the serving environment's packages (see serving_env.py)

import json

import torch
import triton_python_backend_utils as pb_utils

from lita_serve.feature_cache import FeatureCache, entry_stats
from lita_serve.vision_encoder.cached import CachedEncoder, EncodeJob
from lita_serve.adapters import triton_io
from lita_serve.adapters.layout import RepositoryLayout
from lita_serve.vision_encoder.runtimes import load_encoder_runtime


class CacheMetrics:
    """Prometheus counters for cache lookups; a no-op where the backend has no custom metrics."""

    def __init__(self):
        self.counters = {}
        try:
            family = pb_utils.MetricFamily(name="lita_feature_cache_lookups_total",
                                           description="Visual-feature cache lookups by result",
                                           kind=pb_utils.MetricFamily.COUNTER)
            self.counters = {r: family.Metric(labels={"result": r}) for r in ("hit", "miss")}
            self._family = family
        except Exception:  # noqa: BLE001 - metrics disabled or unsupported: stats still report it
            self.counters = {}

    def count(self, result):
        metric = self.counters.get(result)
        if metric is not None:
            metric.increment(1)


class TritonPythonModel:
    def initialize(self, args):
        layout = RepositoryLayout.from_model_dir(args["model_repository"])
        self.cfg = layout.load_config()
        device = triton_io.instance_device(args, torch.cuda.is_available())
        cache = FeatureCache.for_repository(layout.root, self.cfg)
        # torch weights, encoder.onnx (onnxruntime) or encoder.plan (TensorRT): as built
        self.encoder = CachedEncoder(load_encoder_runtime(layout, self.cfg, device=device), self.cfg, cache)
        self.engine = layout.encoder_engine()
        self.metrics = CacheMetrics()

    def _job(self, request):
        frames = triton_io.array(request, pb_utils, "FRAMES")  # [1, F or 0, 3, S, S]
        key = triton_io.single(request, pb_utils, "CACHE_KEY", required=False)
        source_duration = triton_io.single(request, pb_utils, "SOURCE_DURATION", required=False)
        pin = triton_io.single(request, pb_utils, "CACHE_PIN", required=False)
        video_stats = entry_stats(triton_io.stats_in(request, pb_utils))
        return EncodeJob(frames=frames.reshape(frames.shape[-4:]),
                         key=triton_io.text(key, "CACHE_KEY") if key is not None else "",
                         source_duration=float(source_duration) if source_duration is not None else 0.0,
                         pin=triton_io.text(pin, "CACHE_PIN") if pin is not None else "", meta=video_stats)

    def execute(self, requests):
        try:
            jobs = [self._job(r) for r in requests]
        except Exception as exc:  # noqa: BLE001 - malformed step inputs fail the batch
            return [triton_io.error_response(pb_utils, exc) for _ in requests]
        responses = []
        for request, result in zip(requests, self.encoder.run(jobs)):
            if result.error is not None:
                responses.append(triton_io.error_response(pb_utils, result.error))
                continue
            self.metrics.count(result.stats.get("cache"))
            stats = triton_io.stats_in(request, pb_utils)
            stats.update(result.stats)
            if "encode_ms" in result.stats:  # encoded here, not taken from the cache
                stats["encoder_engine"] = self.engine
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("EMBEDDINGS", result.embeddings[None]),  # [1, N_vis, H]
                triton_io.bytes_tensor(pb_utils, "STATS_OUT", json.dumps(stats)),
            ]))
        return responses
