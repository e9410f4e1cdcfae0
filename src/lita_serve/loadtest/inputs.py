"""perf_analyzer's ``--input-data`` JSON for the ``lita`` ensemble, built from real videos.

Format (one entry per request perf_analyzer cycles through)::

    {"data": [{"video": {"b64": "..."}, "text_input": ["When does ...?"],
               "max_tokens": [16], "greedy": [true]}, ...]}

perf_analyzer copies a ``b64`` value, once decoded, verbatim into the request as the tensor's
serialized bytes. For a BYTES tensor that serialization is, per element, a 4-byte little-endian
length followed by the bytes, so the length prefix must be part of what is base64-encoded
(:func:`encode_bytes_b64`); without it the server reads the video's first bytes as a length.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any, Sequence

from lita_client.contract import SAMPLING_INPUTS

DEFAULT_QUESTIONS = ("When does the red circle appear?", "Describe the video with timestamps.")


def encode_bytes_b64(data: bytes) -> str:
    """One BYTES element as perf_analyzer's ``b64`` value: base64 of (uint32 LE length + data)."""
    return base64.b64encode(struct.pack("<I", len(data)) + data).decode("ascii")


def request_entry(video: bytes, question: str, sampling: dict[str, Any]) -> dict[str, Any]:
    """One request of the input-data JSON; ``sampling`` keys are the ensemble's optional inputs."""
    unknown = set(sampling) - set(SAMPLING_INPUTS)
    if unknown:
        raise ValueError(f"unknown sampling inputs {sorted(unknown)}; known: {sorted(SAMPLING_INPUTS)}")
    entry: dict[str, Any] = {"video": {"b64": encode_bytes_b64(video)}, "text_input": [question]}
    for name, value in sampling.items():
        entry[name] = [value]
    return entry


def write_input_data(videos: Sequence[str | Path], path: str | Path, questions: Sequence[str] = DEFAULT_QUESTIONS,
                     sampling: dict[str, Any] | None = None) -> Path:
    """Write the JSON for every (video, question) pair to ``path``; returns ``path``."""
    if not videos:
        raise ValueError("at least one video is needed")
    sampling = {"max_tokens": 16, "greedy": True} if sampling is None else sampling
    data = [request_entry(Path(v).read_bytes(), q, sampling) for v in videos for q in questions]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": data}))
    return path


def make_videos(folder: str | Path, count: int = 2, seconds: float = 6.0) -> list[Path]:
    """``count`` real H.264 test videos with one timed event each (synthetic, exact ground truth)."""
    from lita_serve.data.synthetic import Event, make_event_video  # noqa: PLC0415 - needs PyAV

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"load_{i}.mp4"
        if not path.is_file():
            event = Event(shape="circle", color="red", start_s=1.0 + i, end_s=min(seconds, 3.0 + i),
                          x=0.5, y=0.5, size=0.2)
            make_event_video(path, duration_s=seconds, fps=10, width=160, height=120, events=[event], seed=i)
        paths.append(path)
    return paths
