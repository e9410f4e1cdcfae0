"""Turning user videos into model inputs: decoding, LITA frame sampling, CLIP transform."""

from lita_serve.preprocess.probe import VideoInfo, probe_video
from lita_serve.preprocess.sampling import frame_indices
from lita_serve.preprocess.source import VideoSource, load_source
from lita_serve.preprocess.video import SampledVideo, sample_video, sample_video_for

__all__ = [
    "SampledVideo",
    "VideoInfo",
    "VideoSource",
    "frame_indices",
    "load_source",
    "probe_video",
    "sample_video",
    "sample_video_for",
]
