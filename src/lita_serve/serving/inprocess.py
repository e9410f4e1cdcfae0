"""The whole LITA pipeline in one process, from a built model repository.

It runs the very steps the Triton models run (preprocess -> encode -> decode -> postprocess),
so it is the reference the served answers are compared with, and the baseline of the
serving-overhead benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.llm.service import DecodeEvent, DecoderService
from lita_serve.feature_cache import FeatureCache, config_fingerprint, entry_stats
from lita_serve.vision_encoder.cached import CachedEncoder, EncodeJob
from lita_serve.postprocess.render import Renderer
from lita_serve.preprocess.request import prepare_cached
from lita_serve.adapters.layout import RepositoryLayout
from lita_serve.engine.torch_engine import load_decoder, load_encoder
from lita_serve.text.time_tokens import Segment
from lita_serve.text.tokenizer import LitaTokenizer


@dataclass
class PipelineAnswer:
    text: str
    raw_text: str
    segments: list[Segment]
    token_ids: list[int]
    duration: float
    num_input_tokens: int
    stats: dict[str, float] = field(default_factory=dict)


class LitaPipeline:
    """In-process equivalent of the ``lita`` ensemble."""

    def __init__(self, repository: str | Path, device: str | None = None, feature_cache: bool = False) -> None:
        """``feature_cache=True`` uses the repository's visual-feature cache like the server does
        (off by default, so the pipeline stays the uncached reference)."""
        layout = RepositoryLayout.of(repository)
        self.cfg = layout.load_config()
        self.encoder = load_encoder(layout, self.cfg, device=device)
        cache = (FeatureCache.for_repository(layout.root, self.cfg) if feature_cache
                 else FeatureCache(".", 0, config_fingerprint(self.cfg, layout.encoder_weights)))
        self.cached_encoder = CachedEncoder(self.encoder, self.cfg, cache)
        decoder = load_decoder(layout, self.cfg, device=device)
        self.tokenizer = LitaTokenizer.from_file(layout.tokenizer_path, self.cfg.lita.num_time_tokens)
        self.decoder = DecoderService(decoder, self.tokenizer, self.cfg, max_batch=1)
        self.renderer = Renderer(self.tokenizer, self.cfg.lita.num_time_tokens)

    def encode(self, video: bytes, duration: float | None = None):
        """-> (embeddings [N_vis, H] numpy, duration, stats)."""
        prepared = prepare_cached(video, self.cfg, self.cached_encoder.cache, duration,
                                  normalize=False)  # uint8 pixels, normalised by the encoder, as served
        job = EncodeJob(prepared.frames, prepared.key, prepared.source_duration, prepared.pin,
                        entry_stats(prepared.stats))
        result = self.cached_encoder.run([job])[0]
        if result.error is not None:
            raise result.error
        stats = {**prepared.stats, **{k: v for k, v in result.stats.items() if k != "encode_batch"}}
        if not self.cached_encoder.cache.enabled:
            stats.pop("cache", None)
        return result.embeddings, prepared.duration, stats

    def ask(self, video: bytes, question: str, params: SamplingParams | None = None,
            duration: float | None = None) -> PipelineAnswer:
        table, video_duration, stats = self.encode(video, duration)
        events: list[DecodeEvent] = []
        job = self.decoder.prepare(question, table, video_duration, params or SamplingParams(
            max_tokens=self.cfg.limits.default_max_tokens), stream=False, emit=events.append, stats=stats)
        self.decoder.run([job])
        final = events[-1]
        if final.error is not None:
            raise final.error
        chunk = self.renderer.render(final.ids, len(final.ids), video_duration)
        return PipelineAnswer(chunk.text, chunk.raw_text, chunk.segments, final.ids, video_duration,
                              final.num_input_tokens, final.stats)
