"""perf_analyzer's ``--input-data`` JSON for the ``lita`` ensemble, built from real videos.

Format (one entry per request perf_analyzer cycles through)::

    {"data": [{"video": {"b64": "..."}, "text_input": ["When does ...?"],
               "max_tokens": [16], "greedy": [true]}, ...]}

perf_analyzer copies a ``b64`` value, once decoded, verbatim into the request as the tensor's
serialized bytes. For a BYTES tensor that serialization is, per element, a 4-byte little-endian
length followed by the bytes, so the length prefix must be part of what is base64-encoded
(:func:`encode_bytes_b64`); without it the server reads the video's first bytes as a length.

Cold requests need videos the server has not seen. :func:`distinct_copies` makes them from a few
real videos by appending an MP4 ``free`` box with a unique payload: the bytes (and so the
feature-cache key) differ while the decoding work is exactly the source's, and each copy adds
only its own size to the input file. :data:`VIDEO_MIX` is the default mix of sizes and lengths.
"""

from __future__ import annotations

import base64
import itertools
import json
import struct
from pathlib import Path
from typing import Any, Iterator, Sequence

from lita_client.contract import ENSEMBLE, SAMPLING_INPUTS
from lita_serve.serving.demo import QUESTION

DEFAULT_QUESTIONS = (QUESTION, "Describe the video with timestamps.")
# The cold regime's videos: (width, height, seconds) at 25 fps, H.264 with B-frames. Flat
# synthetic scenes keep each file small (11-36 KB) while decoding still costs what the size and
# length cost, so a perf_analyzer input file of a few hundred distinct copies stays a few MB.
VIDEO_MIX = ((426, 240, 10.0), (640, 360, 20.0), (854, 480, 30.0), (1280, 720, 20.0))


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


def write_input_data(videos: Sequence[str | Path | bytes], path: str | Path,
                     questions: Sequence[str] = DEFAULT_QUESTIONS, sampling: dict[str, Any] | None = None) -> Path:
    """Write the JSON for every (video, question) pair to ``path``; returns ``path``.

    ``videos`` are files or the videos' bytes."""
    if not videos:
        raise ValueError("at least one video is needed")
    sampling = {"max_tokens": 16, "greedy": True} if sampling is None else sampling
    data = [request_entry(v if isinstance(v, bytes) else Path(v).read_bytes(), q, sampling)
            for v in videos for q in questions]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": data}))
    return path


def distinct_copies(videos: Sequence[str | Path], tag: str) -> Iterator[bytes]:
    """Endless distinct variants of ``videos`` (MP4), in turn: each is its source plus a ``free``
    box naming ``tag`` and a serial number, so no two share a feature-cache key."""
    sources = [Path(v).read_bytes() for v in videos]
    for serial in itertools.count():
        payload = f"lita-load {tag} {serial:08d}".encode()
        yield sources[serial % len(sources)] + struct.pack(">I", 8 + len(payload)) + b"free" + payload


def make_video_mix(folder: str | Path, mix: Sequence[tuple[int, int, float]] = VIDEO_MIX) -> list[Path]:
    """The cold regime's source videos (:data:`VIDEO_MIX`), made once and reused across runs."""
    from lita_serve.data.synthetic import Event, make_event_video  # noqa: PLC0415 - needs PyAV

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for width, height, seconds in mix:
        path = folder / f"mix_{height}p_{seconds:g}s.mp4"
        if not path.is_file():
            event = Event(shape="circle", color="red", start_s=0.3 * seconds, end_s=0.6 * seconds, x=0.5, y=0.5,
                          size=0.2)
            make_event_video(path, duration_s=seconds, fps=25, width=width, height=height, events=[event],
                             seed=height)
        paths.append(path)
    return paths


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


def chat_body(video: bytes, question: str, max_tokens: int, model: str = ENSEMBLE) -> dict[str, Any]:
    """A streamed, greedy ``/v1/chat/completions`` body asking ``question`` about ``video`` (a data URL)."""
    url = "data:video/mp4;base64," + base64.b64encode(video).decode("ascii")
    return {"model": model, "max_tokens": max_tokens, "stream": True,
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                      {"type": "text", "text": question}]}]}


def write_openai_input_data(videos: Sequence[str | Path | bytes], path: str | Path, questions: Sequence[str],
                            max_tokens: int) -> Path:
    """perf_analyzer's input for its ``openai`` service kind: ``{"data": [{"payload": [body]}, ...]}``,
    one entry per (video, question) pair, each body streamed (see perf_analyzer's docs/benchmarking.md)."""
    data = [{"payload": [chat_body(v if isinstance(v, bytes) else Path(v).read_bytes(), q, max_tokens)]}
            for v in videos for q in questions]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": data}))
    return path
