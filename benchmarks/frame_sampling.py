"""Frame sampling: 100 frames from 30/120/600 s H.264 videos at 720p and 1080p, and from a
10-minute low-resolution one.

Ours (:func:`lita_serve.preprocess.sample_video` as the server's preprocess step calls it: the
cropped uint8 frames the vision encoder normalises) against
* a straightforward ``decord.VideoReader(path).get_batch(indices)`` at full resolution,
* PyAV sequential decode (every frame up to the last wanted one, full-resolution RGB for the wanted ones), and
* a full decode of every frame (PyAV with FFmpeg's frame threads on every core, as
  ``ffmpeg -threads N`` decodes; no conversion): what a straightforward implementation pays, and
* the same full decode on one thread: the least CPU any decode of every frame costs.
Each is timed in wall seconds and in process CPU seconds (all threads), runs interleaved.
Test videos are generated once into ``artifacts/bench/videos``.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ARTIFACTS, compare, interleaved_min_cpu, machine_note

NUM_FRAMES = 100
FPS = 30
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "180p": (320, 180)}
FULL = [(30, "720p"), (120, "720p"), (600, "720p"), (30, "1080p"), (120, "1080p"), (600, "1080p"), (600, "180p")]
SHORT = [(30, "720p"), (120, "720p"), (600, "180p")]
WALL_TARGET = {(120, "720p"): 3.0}  # ours vs decord get_batch, wall
CPU_TARGET = {(120, "720p"): 2.0}  # a full decode's CPU over ours: ours at most half of it


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


def full_decode(path: Path, threads: int = 0) -> int:
    """Decode every frame, convert none; -> the number of frames.

    ``threads`` 0: FFmpeg's frame threads, one per core this process may use; 1: one thread.
    """
    import av  # noqa: PLC0415

    from lita_serve.preprocess.frame_decode import decode_threads  # noqa: PLC0415

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = decode_threads(threads)
        return sum(1 for _ in container.decode(stream))


def ours(path: Path) -> np.ndarray:
    from lita_serve.config import LitaConfig  # noqa: PLC0415
    from lita_serve.preprocess.video import sample_video  # noqa: PLC0415

    v = LitaConfig.from_name("lita-13b").vision
    return sample_video(path, NUM_FRAMES, v.image_size, v.image_mean, v.image_std, normalize=False).frames


def run(short: bool = False, repeat: int = 3) -> list[dict[str, Any]]:
    print(machine_note())
    results = []
    for seconds, size in SHORT if short else FULL:
        path = make_video(seconds, size)
        long = seconds >= 600 and size != "180p"
        best = interleaved_min_cpu({"ours": lambda: ours(path), "decord": lambda: decord_baseline(path),
                                    "pyav": lambda: pyav_baseline(path), "full": lambda: full_decode(path),
                                    "full1": lambda: full_decode(path, threads=1)},
                                   repeat=1 if long else repeat, warmup=0 if long else 1)
        label = f"frame sampling {NUM_FRAMES} frames, {seconds} s {size}"
        (t_ours, c_ours), (t_decord, c_decord), (t_pyav, c_pyav), (t_full, c_full), (t_full1, c_full1) = (
            best[k] for k in ("ours", "decord", "pyav", "full", "full1"))
        key = (seconds, size)
        results.append(compare(label, "decord get_batch full-res", t_decord, t_ours, "s", target=WALL_TARGET.get(key)))
        results.append(compare(label, "PyAV sequential", t_pyav, t_ours, "s"))
        results.append(compare(label, "full decode of every frame", t_full, t_ours, "s"))
        cpu_label = f"{label}, CPU"
        results.append(compare(cpu_label, "decord get_batch full-res", c_decord, c_ours, "s"))
        results.append(compare(cpu_label, "PyAV sequential", c_pyav, c_ours, "s"))
        results.append(compare(cpu_label, "full decode of every frame", c_full, c_ours, "s",
                               target=CPU_TARGET.get(key)))
        results.append(compare(cpu_label, "full decode of every frame, one thread", c_full1, c_ours, "s"))
        print(f"{cpu_label}: ours {c_ours:.2f} s = {c_ours / c_full:.2f} of a full decode's {c_full:.2f} s, "
              f"{c_ours / c_full1:.2f} of a one-thread full decode's {c_full1:.2f} s "
              f"(decord {c_decord:.2f} s, PyAV sequential {c_pyav:.2f} s)", flush=True)
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true")
    run(p.parse_args().short)
