"""Decode chosen frames of a video as a player shows them, resized so the shortest side is the
model's size.

Two backends return the same thing: uint8 ``[F, H', W', 3]`` RGB frames, oriented by the
stream's display matrix and shaped by its sample aspect ratio
(:mod:`lita_serve.preprocess.display`), and the stream's presentation :class:`Timeline`, from
which the caller's plan picks the frames by time (:mod:`lita_serve.preprocess.timeline`):

* PyAV (preferred): one demux pass, then only the packets the wanted frames depend on are
  decoded (GOPs without a wanted frame and unwanted non-reference H.264/HEVC frames are never
  sent, :mod:`lita_serve.preprocess.packets`; the decoder itself drops the unwanted
  non-reference frames of the codecs in :data:`DECODER_DROPS_NONREF`), and only the wanted
  frames are converted and shrunk (bicubic, one swscale call each) — exact frames, about half
  the decoding work on typical H.264. H.264 reference frames that no wanted frame reads (by the
  slice headers' reference lists, :mod:`lita_serve.preprocess.h264_refs`) go in cut after their
  headers, so that the decoder's reference buffer stays exact without decoding them. When the
  needed GOPs start at IDR frames (VP8/VP9: keyframes), they are shared out among
  single-threaded decoders running side by side, which costs less CPU than FFmpeg's frame
  threads and uses the same cores;
* decord: seeks to the wanted frames and lets ffmpeg's scaler (bicubic) shrink them while
  decoding, but converts every decoded frame. It knows nothing of display matrices, so
  files a player would rotate, flip or stretch go to PyAV instead.

Every decoder failure becomes a :class:`VideoDecodeError`; nothing from decord escapes raw.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Callable

import numpy as np

from lita_serve.errors import VideoDecodeError
from lita_serve.preprocess.display import Display, frame_display
from lita_serve.preprocess.packets import PacketLayout
from lita_serve.preprocess.probe import count_video_packets
from lita_serve.preprocess.source import VideoSource
from lita_serve.preprocess.timeline import Timeline

# decord is optional and imported only when used: the PyAV path works without it, and the
# preprocess process stays smaller without its libraries.
_HAS_DECORD = importlib.util.find_spec("decord") is not None


@dataclass(frozen=True)
class DecodedFrames:
    frames: np.ndarray  # uint8 [F, H', W', 3], as shown, shortest side = the model's image size
    indices: np.ndarray  # int64 [F], display indices of the frames (what the plan chose)
    timeline: Timeline  # every frame of the stream
    fps: float  # the stream's average frame rate (0.0 when it does not say)
    decoded_frames: int = 0  # frames the decoder produced, wanted or not (PyAV; 0 where the backend does not say)
    total_packets: int = 0  # the stream's packets (PyAV; 0 where the backend does not say)
    decoders: int = 1  # decoders that ran side by side, one thread each when more than one (PyAV)


PlanFn = Callable[[Timeline], np.ndarray]  # the stream's timeline -> display indices to decode; may raise


def available_backends() -> tuple[str, ...]:
    return ("pyav", "decord") if _HAS_DECORD else ("pyav",)


def _short_reason(exc: BaseException) -> str:
    """decord's message without its '[hh:mm:ss] /path/file.cc:123:' prefixes, one line, short."""
    text = re.sub(r"\[\d\d:\d\d:\d\d\] [^:]*:\d+: ", "", str(exc))
    text = " ".join(text.split())
    return text[:200] or type(exc).__name__


def _open_failure(src: VideoSource, exc: BaseException) -> VideoDecodeError:
    if count_video_packets(src) == 0:
        return VideoDecodeError(f"{src.label} holds no video frames")
    return VideoDecodeError(f"{src.label} could not be decoded (corrupt or truncated?): {_short_reason(exc)}")


def decode_decord(src: VideoSource, plan: PlanFn, image_size: int, num_threads: int = 0,
                  fit: bool = False) -> DecodedFrames:
    """Decode the frames ``plan(timeline)`` picks with decord.

    decord ignores display matrices and pixel shapes, and its ffmpeg lacks some codecs (VP9 in
    WebM, AV1 here): such files are decoded with :func:`decode_pyav` instead, which also names
    the problem when a file is really broken.
    """
    if not _HAS_DECORD:
        raise VideoDecodeError("decord is not installed; use the 'pyav' backend")
    import decord  # noqa: PLC0415
    display, (stored_w, stored_h) = probe_display(src)
    if not display.is_identity:
        return decode_pyav(src, plan, image_size, num_threads, fit)
    width, height = display.stored_target(stored_w, stored_h, image_size, fit)
    try:
        reader = decord.VideoReader(src.open_stream(), ctx=decord.cpu(0), width=width, height=height,
                                     num_threads=num_threads)
        num = len(reader)
        fps = float(reader.get_avg_fps())
        times = np.asarray(reader.get_frame_timestamp(range(num)), np.float64)  # [n, 2] start, end seconds
    except Exception:  # noqa: BLE001 - DECORDError, RuntimeError, AssertionError (zero frames)
        return decode_pyav(src, plan, image_size, num_threads, fit)
    if num == 0:
        return decode_pyav(src, plan, image_size, num_threads, fit)
    timeline = _decord_timeline(times, fps)
    indices = plan(timeline)
    try:
        batch = reader.get_batch(indices)  # [F, H', W', 3] uint8
    except Exception:  # noqa: BLE001 - decord could not decode them; PyAV decodes or names the problem
        return decode_pyav(src, plan, image_size, num_threads, fit)
    frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)  # any decord bridge
    return DecodedFrames(frames=frames, indices=indices, timeline=timeline, fps=fps)


_MICROSECOND = Fraction(1, 1_000_000)

# Decoders whose ``skip_frame = NONREF`` drops exactly the frames no other frame refers to, as
# the bitstream marks them (FFmpeg 8.0 as bundled with PyAV 18): H.264 NAL units with
# ``nal_ref_idc == 0`` (libavcodec/h264dec.c, decode_nal_units), MPEG-1/2 B pictures
# (libavcodec/mpeg12dec.c, decode_chunks), MPEG-4 part 2 / H.263 B-VOPs (libavcodec/h263dec.c,
# ff_h263_decode_frame) and VP8 frames that refresh no reference buffer (libavcodec/vp8.c,
# vp78_decode_frame). HEVC is left out: FFmpeg's test ignores the temporal sub-layer, so
# non-reference HEVC pictures are chosen by :mod:`lita_serve.preprocess.packets` instead.
DECODER_DROPS_NONREF = frozenset({"h264", "mpeg1video", "mpeg2video", "mpeg4", "h263", "vp8"})
# Smallest picture for which H.264 frames go in header only. Modelling the reference buffer
# costs about 0.09 ms of CPU per needed packet; a frame left undecoded saves about 0.1 ms at
# 320x180 and 2.4 ms at 1280x720 (x264 veryfast B-references, this machine), and about 0.4 of
# the needed frames can be cut, so below about 640x360 the model costs more than it saves.
HEADER_CUT_MIN_PIXELS = 640 * 360
_NO_CUTS: Mapping[int, bytes] = MappingProxyType({})


def _decord_timeline(times: np.ndarray, fps: float) -> Timeline:
    """decord's per-frame (start, end) seconds as a timeline in microseconds (else constant rate)."""
    if not times.size or not np.all(np.isfinite(times)) or np.abs(times).max() > 1e9:  # no usable timestamps
        return Timeline.constant_rate(len(times), fps)
    starts = np.round(times[:, 0] * 1e6).astype(np.int64)
    if np.all(np.diff(starts) > 0):
        last = int(round((times[-1, 1] - times[-1, 0]) * 1e6))
        return Timeline.from_timestamps(starts.tolist(), _MICROSECOND, last, _spacing(fps, _MICROSECOND))
    return Timeline.constant_rate(len(times), fps)


def _spacing(fps: float, time_base: Fraction) -> int | None:
    """One frame interval at ``fps`` in ``time_base`` units (None when the rate is unknown)."""
    return max(1, round(1 / (fps * time_base))) if fps > 0 and time_base > 0 else None


def probe_display(src: VideoSource) -> tuple[Display, tuple[int, int]]:
    """How ``src``'s frames are shown (read from its first decoded frame) and their stored size."""
    import av  # noqa: PLC0415

    try:
        with av.open(src.open_stream(), mode="r") as container:
            stream = container.streams.video[0]
            codec = stream.codec_context
            if codec is None:
                raise VideoDecodeError(f"{src.label} uses a video codec this server cannot decode")
            size = (int(codec.width or 0), int(codec.height or 0))
            for frame in container.decode(stream):
                return frame_display(frame, codec.sample_aspect_ratio), size
    except VideoDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the decoder reports it properly
        raise _open_failure(src, exc) from None
    raise VideoDecodeError(f"{src.label} holds no video frames")


def decode_pyav(src: VideoSource, plan: PlanFn, image_size: int, num_threads: int = 0,
                fit: bool = False, header_cut_min_pixels: int = HEADER_CUT_MIN_PIXELS) -> DecodedFrames:
    """Decode the frames ``plan(timeline)`` picks with PyAV, skipping what is not needed.

    One demux pass lists the packets and their presentation timestamps; then only packets that
    the wanted frames depend on go to the decoder
    (:func:`lita_serve.preprocess.packets.PacketLayout.needed_packets`): GOPs without a wanted
    frame are skipped and so are non-reference H.264 frames that are not wanted. The result is
    exactly the frames a full sequential decode gives. Only the wanted frames are converted.

    ``num_threads`` (0: every core this process may use) is how many threads the decode may
    take. When the needed GOPs hold at least two places where a fresh decoder is exact
    (:meth:`~lita_serve.preprocess.packets.PacketLayout.independent_runs`), they are shared out
    among that many single-threaded decoders; otherwise one decoder uses FFmpeg's frame threads.
    H.264 pictures of at least ``header_cut_min_pixels`` may go in header only
    (:meth:`~lita_serve.preprocess.packets.PacketLayout.header_only`).
    """
    import av  # noqa: PLC0415

    try:
        container = av.open(src.open_stream(), mode="r")
    except Exception as exc:  # av.FFmpegError and friends
        raise _open_failure(src, exc) from None
    with container:
        stream = container.streams.video[0]
        codec = stream.codec_context
        if codec is None:
            raise VideoDecodeError(f"{src.label} uses a video codec this server cannot decode")
        try:
            packets = [p for p in container.demux(stream) if p.size]
        except Exception as exc:  # noqa: BLE001
            raise VideoDecodeError(f"{src.label} is truncated or corrupt: {exc}") from None
        if not packets:
            raise VideoDecodeError(f"{src.label} holds no video frames")
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        layout = PacketLayout.of(packets, codec.name, codec.extradata)
        timeline = _packet_timeline(packets, layout, stream.time_base, fps)
        indices = plan(timeline)
        out = _Frames(len(indices), image_size, codec.sample_aspect_ratio, fit)
        slots = _slots(indices)
        cut = codec.width * codec.height >= header_cut_min_pixels
        headers = layout.header_only(set(slots)) if cut else {}
        shares = _shares(layout.independent_runs(set(slots)), packets, decode_threads(num_threads), headers)
        if len(shares) > 1:  # one single-threaded decoder per share of the runs, in parallel
            made = _decode_parallel(src, packets, layout, shares, slots, out, headers)
        else:  # one decoder through the whole stream, with FFmpeg's frame threads
            stream.thread_type = "AUTO"
            if num_threads:
                codec.thread_count = num_threads
            made = _decode_selected(codec, packets, layout, layout.needed_packets(set(slots)), slots, out, src,
                                    headers)
    if out.filled < len(indices):
        raise VideoDecodeError(
            f"{src.label} is truncated or corrupt: decoded fewer frames than its {len(packets)} packets"
        )
    return DecodedFrames(frames=out.frames, indices=indices, timeline=timeline, fps=fps, decoded_frames=made,
                         total_packets=len(packets), decoders=len(shares))


def _packet_timeline(packets, layout: PacketLayout, time_base: Fraction | None, fps: float) -> Timeline:
    """The presentation timeline from the packets' timestamps (constant rate when they are unusable)."""
    if not layout.timestamps_usable or not time_base:
        return Timeline.constant_rate(len(packets), fps)
    last = max(packets, key=lambda p: p.pts)
    return Timeline.from_timestamps([p.pts for p in packets], Fraction(time_base), last.duration or None,
                                    _spacing(fps, Fraction(time_base)))


class _Frames:
    """The output frames, sized once the first decoded frame says how it is shown.

    Safe to fill from several decoding threads: each thread converts with its own swscale
    context (one per thread, reused for all its frames) and writes its own slots.
    """

    def __init__(self, count: int, image_size: int, sample_aspect: Fraction | None, fit: bool = False) -> None:
        self.count, self.image_size, self.sample_aspect, self.fit = count, image_size, sample_aspect, fit
        self.frames: np.ndarray = np.empty((count, image_size, image_size, 3), np.uint8)
        self.display: Display | None = None
        self.target = (image_size, image_size)
        self.filled = 0
        self._lock = threading.Lock()
        self._local = threading.local()  # .scaler: this thread's swscale context

    def put(self, frame, slots: list[int]) -> None:
        with self._lock:
            if self.display is None:  # every frame of a stream is shown the same way
                display = frame_display(frame, self.sample_aspect)
                self.target = display.stored_target(frame.width, frame.height, self.image_size, self.fit)
                shown_h, shown_w = (self.target[0], self.target[1]) if display.transpose else self.target[::-1]
                self.frames = np.empty((self.count, shown_h, shown_w, 3), np.uint8)
                self.display = display
        scaler = getattr(self._local, "scaler", None)
        if scaler is None:
            from av.video.reformatter import VideoReformatter  # noqa: PLC0415

            scaler = self._local.scaler = VideoReformatter()
        width, height = self.target
        # Colour conversion and the shrink in one swscale call, only for the wanted frames.
        rgb = scaler.reformat(frame, width=width, height=height, format="rgb24",
                              interpolation="BICUBIC").to_ndarray()  # [H', W', 3] stored orientation
        shown = self.display.orient(rgb)  # [H', W', 3] as a player shows it
        for slot in slots:
            self.frames[slot] = shown
        with self._lock:
            self.filled += len(slots)


def decode_threads(num_threads: int = 0) -> int:
    """Threads one decode may use: ``num_threads``, or (0) the cores this process may run on."""
    if num_threads > 0:
        return num_threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _slots(indices: np.ndarray) -> dict[int, list[int]]:
    """Display index -> the output slots that show it (a frame may be sampled twice)."""
    slots: dict[int, list[int]] = {}
    for slot, idx in enumerate(indices.tolist()):
        slots.setdefault(idx, []).append(slot)
    return slots


def _shares(runs: list[list[int]], packets, workers: int, headers: Mapping[int, bytes] = _NO_CUTS) -> list[list[int]]:
    """Cut the runs, in order, into at most ``workers`` shares whose largest holds the fewest coded bytes.

    Coded bytes stand in for decoding work (a packet that goes in header only, ``headers``, counts
    nothing). Each share keeps whole runs, so it starts where a fresh decoder is exact. The
    smallest feasible largest share is found by bisection; packing greedily under it gives the
    shares (possibly fewer than ``workers`` when that is as fast).
    """
    if not runs:
        return []
    sizes = [sum(packets[pos].size for pos in run if pos not in headers) for run in runs]

    def pack(cap: int) -> list[list[int]]:
        shares: list[list[int]] = [[]]
        load = 0
        for run, size in zip(runs, sizes):
            if shares[-1] and load + size > cap:
                shares.append([])
                load = 0
            shares[-1] += run
            load += size
        return shares

    lo, hi = max(sizes), sum(sizes)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(pack(mid)) <= workers:
            hi = mid
        else:
            lo = mid + 1
    return pack(lo)


def _decode_parallel(src: VideoSource, packets, layout: PacketLayout, shares: list[list[int]],
                     slots: dict[int, list[int]], out: _Frames, headers: Mapping[int, bytes]) -> int:
    """Decode each share on its own thread with its own single-threaded decoder; -> frames decoded.

    One decoder per thread costs less CPU than FFmpeg's frame threads on the same cores (no
    hand-over between threads, no waiting on a reference another thread is still decoding), and
    the shares start at fresh starts, so every frame is what one decoder gives. PyAV lets go of
    the GIL while FFmpeg decodes and converts.
    """
    import av  # noqa: PLC0415

    def work(share: list[int]) -> int:
        wanted = {layout.display[pos]: slots[layout.display[pos]] for pos in share if layout.display[pos] in slots}
        try:
            container = av.open(src.open_stream(), mode="r")  # its own decoder, set up from the same stream
        except Exception as exc:  # noqa: BLE001
            raise _open_failure(src, exc) from None
        with container:
            codec = container.streams.video[0].codec_context
            codec.thread_count = 1
            return _decode_selected(codec, packets, layout, share, wanted, out, src, headers)

    with ThreadPoolExecutor(max_workers=len(shares), thread_name_prefix="lita-decode") as pool:
        return sum(pool.map(work, shares))


def _decode_selected(codec, packets, layout: PacketLayout, positions: list[int], slots: dict[int, list[int]],
                     out: _Frames, src: VideoSource, headers: Mapping[int, bytes]) -> int:
    """Feed ``packets[positions]`` to ``codec``; put the frames ``slots`` wants into ``out``; -> frames decoded.

    Where the decoder can tell non-reference frames itself (:data:`DECODER_DROPS_NONREF`), every
    packet that is not a wanted frame goes in with ``skip_frame = NONREF`` and a wanted one with
    ``DEFAULT``: a dropped frame is one nothing refers to, so the others decode exactly as in a
    full decode. With frame threading the setting is taken when a packet is submitted
    (libavcodec/pthread_frame.c, update_context_from_user), so it applies per packet.

    Packets in ``headers`` go in as the bytes given there, cut after their slice headers
    (:meth:`~lita_serve.preprocess.packets.PacketLayout.header_only`), with FFmpeg's error
    concealment off (``ec=0``) so that the decoder neither decodes nor fills their pixels, which
    nothing wanted reads; they are not counted as decoded. ``slots`` is emptied as the frames arrive.
    """
    import av  # noqa: PLC0415

    drop_nonref = codec.name in DECODER_DROPS_NONREF
    hidden = {layout.display[pos] for pos in positions if pos in headers}
    if hidden:
        codec.options = {**codec.options, "ec": "0"}
    made = 0

    def store(frame) -> None:
        nonlocal made
        shown = layout.display_index(frame.pts)
        if shown in hidden:
            return
        made += 1
        wanted = slots.pop(shown, None)
        if wanted:
            out.put(frame, wanted)

    skipping = None
    try:
        for pos in positions:
            if drop_nonref:
                skip = "DEFAULT" if layout.display[pos] in slots else "NONREF"
                if skip != skipping:
                    codec.skip_frame = skipping = skip
            packet = packets[pos]
            if pos in headers:
                cut = av.Packet(headers[pos])
                cut.pts, cut.dts, cut.time_base = packet.pts, packet.dts, packet.time_base
                packet = cut
            for frame in codec.decode(packet):
                store(frame)
            if not slots:
                break
        if slots:
            for frame in codec.decode(None):
                store(frame)
    except Exception as exc:  # av.FFmpegError and friends
        raise VideoDecodeError(f"{src.label} is truncated or corrupt: {exc}") from None
    return made


BACKENDS: dict[str, Callable[..., DecodedFrames]] = {"decord": decode_decord, "pyav": decode_pyav}
