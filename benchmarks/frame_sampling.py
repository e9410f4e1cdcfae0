"""Frame sampling: 100 frames from 30/120/600 s H.264 videos at 720p and 1080p.

Ours (:func:`lita_serve.preprocess.sample_video`: CLIP-ready float frames) against
* a straightforward ``decord.VideoReader(path).get_batch(indices)`` at full resolution, and
* PyAV sequential decode (every frame up to the last wanted one, full-resolution RGB for the wanted ones).
Test videos are generated once into ``artifacts/bench/videos``.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ARTIFACTS, compare, interleaved_min, machine_note

NUM_FRAMES = 100
FPS = 30
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
FULL = [(30, "720p"), (120, "720p"), (600, "720p"), (30, "1080p"), (120, "1080p"), (600, "1080p")]
SHORT = [(30, "720p"), (120, "720p")]


def make_video(seconds: int, size: str, folder: Path = ARTIFACTS / "videos") -> Path:
    """An H.264 (libx264 veryfast: B-frames, GOP 250, yuv420p) video of moving gradients; reused when present."""
    import av  # noqa: PLC0415

    width, height = SIZES[size]
    path = folder / f"{seconds}s_{size}.mp4"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    xs = np.arange(width, dtype=np.uint16)[None, :]
    ys = np.arange(height, dtype=np.uint16)[:, None]
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "28"}  # x264 defaults: B-frames, GOP 250
        for i in range(seconds * FPS):
            rgb = np.empty((height, width, 3), np.uint8)
            rgb[..., 0] = ((xs + 4 * i) % 256).astype(np.uint8)
            rgb[..., 1] = ((ys + 2 * i) % 256).astype(np.uint8)
            rgb[..., 2] = (i * 3) % 256
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    tmp.rename(path)
    return path


def decord_baseline(path: Path) -> np.ndarray:
    import decord  # noqa: PLC0415

    from lita_serve.preprocess.frame_sampling import frame_indices  # noqa: PLC0415

    reader = decord.VideoReader(str(path))
    return reader.get_batch(frame_indices(len(reader), NUM_FRAMES)).asnumpy()  # [F, H, W, 3]


def pyav_baseline(path: Path) -> np.ndarray:
    import av  # noqa: PLC0415

    from lita_serve.preprocess.frame_sampling import frame_indices  # noqa: PLC0415

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        wanted = frame_indices(stream.frames, NUM_FRAMES)
        want, out = set(wanted.tolist()), {}
        for i, frame in enumerate(container.decode(stream)):
            if i in want:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= wanted[-1]:
                break
    return np.stack([out[i] for i in wanted.tolist()])


def ours(path: Path) -> np.ndarray:
    from lita_serve.config import LitaConfig  # noqa: PLC0415
    from lita_serve.preprocess.video import sample_video  # noqa: PLC0415

    v = LitaConfig.from_name("lita-13b").vision
    return sample_video(path, NUM_FRAMES, v.image_size, v.image_mean, v.image_std).frames


def run(short: bool = False, repeat: int = 3) -> list[dict[str, Any]]:
    print(machine_note())
    results = []
    for seconds, size in SHORT if short else FULL:
        path = make_video(seconds, size)
        reps = 1 if seconds >= 600 else repeat
        best = interleaved_min({"ours": lambda: ours(path), "decord": lambda: decord_baseline(path),
                                "pyav": lambda: pyav_baseline(path)}, repeat=reps, warmup=0 if seconds >= 600 else 1)
        t_ours, t_decord, t_pyav = best["ours"], best["decord"], best["pyav"]
        label = f"frame sampling {NUM_FRAMES} frames, {seconds} s {size}"
        target = 2.0 if (seconds, size) == (120, "720p") else None
        results.append(compare(label, "decord get_batch full-res", t_decord, t_ours, "s", target=target))
        results.append(compare(label, "PyAV sequential", t_pyav, t_ours, "s"))
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true")
    run(p.parse_args().short)
