"""A media matrix made the way the world makes video: the ``ffmpeg`` command line (Debian's
5.1, with libx264/libx265/libvpx/SVT-AV1/mpeg4/mjpeg/mpeg2video), not the project's own writer.

Every file shows the same scene on its own timeline: a red disc visible from 25 % to 60.4 % of
the video (6.0 s to 14.5 s of 24 s), near the frame's centre so every aspect ratio keeps it
after CLIP's centre crop. The look differs from the demo model's training videos (a grey
gradient, another size and place for the disc), so the matrix tests the pipeline rather
than the model's memory of its data. Each entry names its twin: the plain H.264 file of the same
shown size, whose answer it must match.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from videos import ffmpeg_binary

DURATION_S = 24.0
EVENT_S = (6.0, 14.5)
FPS = 30


@dataclass(frozen=True)
class MediaSpec:
    name: str
    suffix: str
    args: tuple[str, ...]  # ffmpeg output options (codec, filters)
    size: tuple[int, int] = (192, 108)  # shown width, height
    duration_s: float = DURATION_S
    fps: int = FPS
    rotate: int = 0  # display-matrix rotation written with a remux (degrees, as ffmpeg's tag)
    display_matrix: tuple[int, ...] = ()  # any other display matrix (flips), written with a PyAV remux
    twin: str = "h264"  # the plain H.264 file of the same shown size
    start_s: float = 0.0  # first timestamp the container holds
    notes: str = ""

    @property
    def event(self) -> tuple[float, float]:
        scale = self.duration_s / DURATION_S
        return EVENT_S[0] * scale, EVENT_S[1] * scale


_ONE = 1 << 16  # 1.0 in a display matrix's 16.16 fixed point
X264 = ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-bf", "2", "-g", "60")

MATRIX: tuple[MediaSpec, ...] = (
    MediaSpec("h264", ".mp4", X264, notes="the twin: H.264 8-bit 4:2:0, B-frames"),
    MediaSpec("h264_10bit", ".mp4", ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p10le")),
    MediaSpec("h264_444_odd", ".mkv", ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv444p",
                                       "-vf", "scale=191:107"), size=(191, 107),
              notes="odd size, 4:4:4, Matroska (millisecond timestamps)"),
    MediaSpec("hevc", ".mp4", ("-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1",
                               "-x265-params", "log-level=error")),
    MediaSpec("vp9", ".webm", ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "400k")),
    MediaSpec("vp8", ".webm", ("-c:v", "libvpx", "-deadline", "good", "-cpu-used", "5", "-b:v", "300k",
                               "-auto-alt-ref", "1", "-lag-in-frames", "16"), notes="VP8 with hidden alt-ref frames"),
    MediaSpec("av1", ".mkv", ("-c:v", "libsvtav1", "-preset", "12", "-pix_fmt", "yuv420p")),
    MediaSpec("mpeg4", ".avi", ("-c:v", "mpeg4", "-q:v", "4", "-bf", "2"), notes="MPEG-4 part 2, B-frames, AVI"),
    MediaSpec("mjpeg", ".avi", ("-c:v", "mjpeg", "-q:v", "4", "-pix_fmt", "yuvj420p")),
    MediaSpec("mpeg2_ts", ".ts", ("-c:v", "mpeg2video", "-q:v", "4", "-bf", "2", "-f", "mpegts"),
              start_s=1.4, notes="MPEG-2 in MPEG-TS: timestamps start at 1.4 s"),
    MediaSpec("fragmented_mp4", ".mp4", (*X264, "-movflags", "frag_keyframe+empty_moov+default_base_moof")),
    MediaSpec("open_gop", ".mkv", ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                                   "-x264-params", "open-gop=1:keyint=48:bframes=3:b-pyramid=normal")),
    MediaSpec("vfr_two_rates", ".mp4", ("-vf", "select='if(lt(t,12),not(mod(n,3)),1)'", "-fps_mode", "vfr", *X264),
              notes="10 fps for 12 s, then 30 fps: a phone's variable rate"),
    MediaSpec("vfr_dropped", ".mp4", ("-vf", "select='not(between(n,200,245))*not(eq(mod(n,13),5))'",
                                      "-fps_mode", "vfr", *X264),
              notes="a 1.5 s hole and one frame in 13 dropped"),
    MediaSpec("offset_start", ".mkv", (*X264, "-output_ts_offset", "3.5"), start_s=3.5),
    MediaSpec("anamorphic", ".mp4", ("-vf", "scale=144:108,setsar=4/3", *X264),
              notes="stored 144x108 with 4:3 pixels, shown 192x108"),
    MediaSpec("rot90", ".mp4", ("-vf", "transpose=1", *X264), size=(108, 192), rotate=90, twin="portrait",
              notes="portrait phone video: stored landscape, display matrix turns it"),
    MediaSpec("rot180", ".mp4", ("-vf", "transpose=1,transpose=1", *X264), rotate=180),
    MediaSpec("rot270", ".mp4", ("-vf", "transpose=2", *X264), size=(108, 192), rotate=270, twin="portrait"),
    MediaSpec("hflip", ".mp4", X264, display_matrix=(-_ONE, 0, 0, 0, _ONE, 0, 0, 0, 1 << 30),
              notes="mirrored by its display matrix (a front camera's selfie view)"),
    MediaSpec("transposed", ".mp4", X264, size=(108, 192), display_matrix=(0, _ONE, 0, _ONE, 0, 0, 0, 0, 1 << 30),
              notes="a quarter turn plus a flip"),
    MediaSpec("portrait", ".mp4", X264, size=(108, 192), notes="the portrait twin, stored upright"),
    MediaSpec("hd1080", ".mp4", ("-vf", "scale=1920:1080:flags=bicubic", "-c:v", "libx264", "-preset", "ultrafast",
                                 "-pix_fmt", "yuv420p"), notes="1080p, rendered small and scaled up"),
    MediaSpec("tiny32", ".mp4", ("-vf", "scale=32:32", *X264), size=(32, 32)),
    MediaSpec("h264_pyramid", ".mp4", ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                                       "-x264-params", "bframes=3:b-pyramid=normal:ref=3:keyint=90"),
              notes="B-pyramid: middle B-frames are references for their neighbours"),
    MediaSpec("hevc_pyramid", ".mkv", ("-c:v", "libx265", "-preset", "veryfast", "-x265-params",
                                       "log-level=error:bframes=4:b-pyramid=1:keyint=60:open-gop=1")),
    MediaSpec("long_lowfps", ".mp4", (*X264[:-2], "-g", "30"), duration_s=3600.0, fps=1, twin="",
              notes="one hour at one frame per second"),
)

BY_NAME = {spec.name: spec for spec in MATRIX}


def render(t: float, size: tuple[int, int], event: tuple[float, float]) -> np.ndarray:
    """The scene at ``t`` seconds, uint8 [H, W, 3]: a grey that darkens towards the top left (so
    every orientation looks different) and, during ``event``, a red disc."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = 0.55 * width, 0.45 * height
    frame = np.empty((height, width, 3), np.float32)
    frame[...] = (36.0 + 30.0 * xs / width + 14.0 * ys / height)[..., None] * np.array([1.0, 1.0, 1.08], np.float32)
    if event[0] <= t < event[1]:
        radius = 0.16 * min(width, height)
        disc = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2
        frame[disc] = (215.0, 35.0, 30.0)
    return np.clip(frame, 0, 255).astype(np.uint8)


def _source_size(spec: MediaSpec) -> tuple[int, int]:
    """What is rendered and piped to ffmpeg: the shown size, or the landscape base that ffmpeg
    scales or turns (rotated files are stored turned and shown upright)."""
    if spec.name in ("portrait",):
        return spec.size
    if spec.rotate in (90, 270):
        return spec.size  # rendered as shown (portrait); transpose stores it landscape
    if spec.display_matrix:
        return (192, 108)  # stored as rendered; the matrix mirrors or turns it
    return (192, 108)


def make(spec: MediaSpec, folder: Path) -> Path:
    """Encode ``spec`` into ``folder`` with the ffmpeg command line; -> the file."""
    ffmpeg = ffmpeg_binary()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{spec.name}{spec.suffix}"
    encoded = out if not (spec.rotate or spec.display_matrix) else folder / f"{spec.name}.stored{spec.suffix}"
    width, height = _source_size(spec)
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{width}x{height}", "-r", str(spec.fps), "-i", "-", *spec.args, "-an", str(encoded)]
    log = folder / f"{spec.name}.ffmpeg.log"
    with open(log, "wb") as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=errors)
        try:
            for i in range(int(round(spec.duration_s * spec.fps))):
                proc.stdin.write(render(i / spec.fps, (width, height), spec.event).tobytes())
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed for {spec.name}: {log.read_text(errors='replace')[-800:]}")
    log.unlink()
    if spec.rotate:
        subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(encoded), "-c", "copy",
                        "-metadata:s:v:0", f"rotate={spec.rotate}", str(out)], check=True)
        encoded.unlink()
    elif spec.display_matrix:  # ffmpeg 5.1 writes rotations only: PyAV (libavformat) remuxes with any matrix
        _remux_with_matrix(encoded, out, spec.display_matrix)
        encoded.unlink()
    return out


def _remux_with_matrix(source: Path, target: Path, matrix: tuple[int, ...]) -> None:
    import av

    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        out.set_display_matrix(np.array(matrix, np.int32))
        for packet in src.demux(stream):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)


def player_frame(path: Path, index: int, size: tuple[int, int]) -> np.ndarray:
    """Frame ``index`` (display order) as the ffmpeg command line shows it (autorotate on): uint8
    [H, W, 3] for the shown ``size``."""
    raw = subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-i", str(path),
                          "-vf", f"select=eq(n\\,{index})", "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    width, height = size
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3)


@dataclass
class BadFile:
    name: str
    data: bytes
    expected: str  # a fragment of the error message
    notes: str = field(default="")


def bad_files(good: Path, folder: Path) -> list[BadFile]:
    """Files a service will be sent that are not videos, made from ``good`` and with ffmpeg."""
    ffmpeg = ffmpeg_binary()
    audio = folder / "audio_only.m4a"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=2", "-c:a", "aac", str(audio)], check=True)
    png = folder / "still.png"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=red:s=64x48", "-frames:v", "1", str(png)], check=True)
    data = good.read_bytes()
    return [
        BadFile("empty", b"", "empty"),
        BadFile("random", np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
                "not a readable video"),
        BadFile("truncated", data[: len(data) // 3], "video"),
        BadFile("audio_only", audio.read_bytes(), "audio-only"),
        BadFile("png", png.read_bytes(), "still image"),
        BadFile("text", b"hello, this is not a video\n" * 20, "not a readable video"),
    ]
