"""Real-world media through the real server: codecs, containers, variable frame rates, rotation,
offsets, pixel shapes, sizes and lengths made with the ffmpeg command line (tests/media_matrix.py).

The committed demo model answers "When does the red circle appear?"; each file must give the
right duration, an answer within one time-token bin of its plain H.264 twin's, and leave the
server ready. In-process checks pin what a player shows (rotation, pixel aspect), LITA's index
rule on constant-rate video, and agreement between the decoders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from media_matrix import BY_NAME, DURATION_S, MATRIX, bad_files, make, player_frame
from PIL import Image

from lita_client import InvalidRequestError, LitaClient
from lita_serve.config import LitaConfig
from lita_serve.serving.demo import build_demo_repository
from lita_serve.serving.launcher import Ports, TritonServer
from lita_serve.preprocess.frame_decode import HEADER_CUT_MIN_PIXELS, available_backends, decode_pyav
from lita_serve.preprocess.frame_sampling import frame_indices
from lita_serve.preprocess.source import load_source
from lita_serve.preprocess.video import sample_video_for
from lita_serve.text.time_tokens import seconds_to_index
from lita_serve.serving.demo import QUESTION

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                                   reason="the media matrix needs the ffmpeg command line")]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media_matrix")
    return {spec.name: make(spec, folder) for spec in MATRIX}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo model, built and served by the real tritonserver: (server, its LitaConfig)."""
    root = tmp_path_factory.mktemp("demo_matrix")
    repo = build_demo_repository(root / "repo", progress=False)
    server = TritonServer(repo, ports=Ports.free(), log_path=root / "tritonserver.log")
    server.start(timeout=240)
    try:
        yield server, LitaConfig.load(repo / "lita.json")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def answers(media, demo):
    """Every matrix file asked once through the server: name -> Answer; readiness checked after each."""
    server, _ = demo
    found = {}
    with LitaClient(server.grpc_url, timeout=300) as client:
        for name, path in media.items():
            found[name] = client.ask(path, QUESTION)
            assert client.is_ready(), f"server not ready after {name}"
    return found


def _bin(duration: float, cfg: LitaConfig) -> float:
    return duration / (cfg.lita.num_time_tokens - 1)


@pytest.mark.server
@pytest.mark.parametrize("name", [spec.name for spec in MATRIX])
def test_each_file_gives_its_duration_and_its_twins_answer(name, answers, demo):
    _, cfg = demo
    spec, answer = BY_NAME[name], answers[name]
    assert answer.duration == pytest.approx(spec.duration_s, abs=max(0.5, 0.02 * spec.duration_s)), answer.stats
    assert answer.segments, f"{name}: no span in {answer.text!r}"
    one_bin = _bin(answer.duration, cfg)
    start, end = answer.segments[0]
    truth = spec.event
    # The demo model localizes this scene: within two bins of the truth on every file...
    assert abs(start - truth[0]) <= 2 * one_bin and abs(end - truth[1]) <= 2 * one_bin, (name, answer.text)
    if spec.twin:  # ...and within one time token of the same scene as plain H.264.
        # Compared as token indices: one token apart is 1.0 bin exactly, which the seconds of two
        # files can overshoot by a rounding error (or by a slightly different measured duration).
        twin, n = answers[spec.twin], cfg.lita.num_time_tokens
        ours = [seconds_to_index(t, answer.duration, n) for t in (start, end)]
        theirs = [seconds_to_index(t, twin.duration, n) for t in twin.segments[0]]
        assert all(abs(a - b) <= 1 for a, b in zip(ours, theirs)), (
            f"{name} answered {answer.text!r} (tokens {ours}), its twin {spec.twin} {twin.text!r} (tokens {theirs})")


@pytest.mark.server
def test_variable_frame_rate_samples_evenly_in_time(answers):
    """10 fps then 30 fps: the samples are evenly spaced in time (not in frame count), and the
    stats say so; a hole of 1.5 s is reported in the spacing."""
    stats = answers["vfr_two_rates"].stats
    times = np.asarray(stats["sample_times_s"])
    assert len(times) == 100 and times[0] == 0.0
    step = DURATION_S / 99
    assert np.all(np.abs(np.diff(times) - step) <= 0.1 + 1e-3), "samples drift from even spacing by more than a frame"
    assert np.sum(times < 12.0) in (49, 50, 51), "half the samples belong to the 10 fps half"
    assert stats["frame_spacing_s"] == pytest.approx([1 / 30, 1 / 10], abs=1e-3)
    assert answers["vfr_dropped"].stats["frame_spacing_s"][1] == pytest.approx(1.5667, abs=0.01)


@pytest.mark.server
def test_a_container_duration_that_disagrees_is_reported(answers):
    stats = answers["offset_start"].stats  # timestamps start at 3.5 s; the header counts from 0
    assert answers["offset_start"].duration == pytest.approx(DURATION_S, abs=0.05)
    assert stats["container_duration_s"] == pytest.approx(DURATION_S + 3.5, abs=0.1)
    assert "container_duration_s" not in answers["h264"].stats


@pytest.mark.server
def test_a_cache_hit_reports_the_same_sample_times(media, demo, answers):
    server, _ = demo
    with LitaClient(server.grpc_url) as client:
        again = client.ask(media["vfr_two_rates"], QUESTION)
    assert again.stats["cache"] == "hit"
    assert again.stats["sample_times_s"] == answers["vfr_two_rates"].stats["sample_times_s"]


def _frames(path: Path, cfg: LitaConfig, backend: str = "auto") -> np.ndarray:
    return sample_video_for(path.read_bytes(), cfg, normalize=False, backend=backend).frames.astype(np.int16)


@pytest.mark.parametrize("name,twin", [("rot90", "portrait"), ("rot270", "portrait"), ("rot180", "h264"),
                                       ("anamorphic", "h264")])
def test_frames_are_shown_as_a_player_shows_them(media, name, twin):
    """A rotated or anamorphic file gives the frames of its upright, square-pixel twin; read as
    stored, it would not."""
    cfg = LitaConfig.from_name("demo")
    shown, upright = _frames(media[name], cfg), _frames(media[twin], cfg)
    assert np.abs(shown - upright).mean() < 4.0
    if name.startswith("rot"):
        stored = np.rot90(upright, k={"rot90": -1, "rot270": 1, "rot180": 2}[name], axes=(2, 3))
        assert np.abs(stored - upright).mean() > 4 * np.abs(shown - upright).mean()


def _shown(path: Path, size: int = 56) -> np.ndarray:
    """Eight frames as decoded and oriented, before the centre crop: uint8 [8, H', W', 3]."""
    decoded = decode_pyav(load_source(path.read_bytes()), lambda timeline: timeline.sample(8), size)
    return decoded.frames


@pytest.mark.parametrize("name,twin,shape", [("anamorphic", "h264", (56, 99)), ("rot90", "portrait", (99, 56)),
                                             ("rot270", "portrait", (99, 56)), ("h264_444_odd", "h264", (56, 99))])
def test_shown_shape_follows_pixel_aspect_and_rotation(media, name, twin, shape):
    """Before cropping: 144x108 stored with 4:3 pixels is shown 192x108; a turned file is shown
    portrait; and the whole picture matches the twin's, sides included."""
    shown, upright = _shown(media[name]), _shown(media[twin])
    assert shown.shape[1:3] == shape == upright.shape[1:3]
    assert np.abs(shown.astype(np.int16) - upright).mean() < 4.0


@pytest.mark.parametrize("name", [s.name for s in MATRIX if s.rotate or s.display_matrix or s.name == "anamorphic"])
def test_frames_match_what_the_ffmpeg_player_shows(media, name):
    """Frame 300 (10 s in, the disc on screen) at full shown size, against the ffmpeg command
    line's own view of it (it applies the display matrix and pixel aspect when it decodes)."""
    spec = BY_NAME[name]
    shown = min(spec.size)
    ours = decode_pyav(load_source(media[name].read_bytes()), lambda timeline: np.array([300]), shown).frames[0]
    if name == "anamorphic":  # ffmpeg decodes the stored 144 columns; a player stretches them to 192
        player = np.asarray(Image.fromarray(player_frame(media[name], 300, (144, 108))).resize(spec.size, Image.BICUBIC))
    else:
        player = player_frame(media[name], 300, spec.size)
    assert ours.shape == player.shape
    assert np.abs(ours.astype(np.int16) - player).mean() < 3.0


def test_constant_rate_files_sample_lita_index_rule(media):
    cfg = LitaConfig.from_name("demo")
    for name in ("h264", "hevc", "mpeg2_ts", "mjpeg", "long_lowfps"):
        video = sample_video_for(media[name].read_bytes(), cfg, normalize=False)
        np.testing.assert_array_equal(video.indices, frame_indices(video.num_source_frames, cfg.lita.sample_frames),
                                      err_msg=name)


@pytest.mark.skipif("decord" not in available_backends(), reason="decord is not installed")
def test_decoders_pick_the_same_frames(media):
    """decord and PyAV choose the same frames everywhere; where decord cannot show a file as a
    player would (rotation, pixel aspect) or cannot decode it (VP9 in WebM, AV1), PyAV does."""
    cfg = LitaConfig.from_name("demo")
    for name, path in media.items():
        data = path.read_bytes()
        a = sample_video_for(data, cfg, normalize=False, backend="pyav")
        b = sample_video_for(data, cfg, normalize=False, backend="decord")
        np.testing.assert_array_equal(a.indices, b.indices, err_msg=name)
        assert b.duration == pytest.approx(a.duration, abs=0.1), name
        assert np.abs(a.frames.astype(np.int16) - b.frames).mean() < 3.0, name


@pytest.mark.server
def test_bad_files_are_named_and_the_server_keeps_serving(media, demo, tmp_path):
    server, _ = demo
    with LitaClient(server.grpc_url) as client:
        for bad in bad_files(media["h264"], tmp_path):
            with pytest.raises(InvalidRequestError, match=bad.expected):
                client.ask(bad.data, QUESTION)
            assert client.is_ready(), bad.name
        assert client.ask(media["h264"], QUESTION).segments


def _every_frame_then_pick(path: Path, indices: np.ndarray, size: int) -> np.ndarray:
    """The reference: decode every frame in order (single-threaded, nothing skipped), then take
    display ``indices`` and convert them the way the server does: uint8 [F, H', W', 3]."""
    import av

    from lita_serve.preprocess.display import frame_display

    wanted = {int(i) for i in indices}
    picked = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for shown_index, frame in enumerate(container.decode(stream)):
            if shown_index in wanted:
                display = frame_display(frame, stream.codec_context.sample_aspect_ratio)
                width, height = display.stored_target(frame.width, frame.height, size)
                rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray()
                picked[shown_index] = np.ascontiguousarray(display.orient(rgb))
    return np.stack([picked[int(i)] for i in indices])


# Files whose B-frames (and, for HEVC, non-reference pictures) leave something to skip.
# Files that one decoder must take from start to end: open GOPs (x264 open-gop, x265's CRAs with
# leading pictures), and codecs not known here to reset everything at a keyframe. Every other
# file has several IDR GOPs (VP8/VP9: keyframes) with samples, so three threads split it.
_ONE_DECODER = ("hevc", "hevc_pyramid", "open_gop", "av1", "mpeg4", "mjpeg", "mpeg2_ts")
_SKIPS_FRAMES = ("h264", "h264_pyramid", "open_gop", "hevc_pyramid", "mpeg4", "mpeg2_ts", "fragmented_mp4")


@pytest.mark.parametrize("name", [spec.name for spec in MATRIX])
def test_sampled_frames_are_bit_identical_to_a_full_decode(media, name):
    """Decoding only what the samples depend on (GOPs skipped, non-reference frames dropped)
    gives exactly the pixels a decode of every frame gives, on every file of the matrix
    (closed and open GOPs, B-pyramids, HEVC, VP9, MPEG-2/4), for the server's 100 samples and
    for a denser plan that lands on more B-frames; with one decoder, and with up to three
    single-threaded decoders that each take their own IDR GOPs; and with H.264 reference frames
    that nothing wanted reads going in header only at every picture size."""
    cfg = LitaConfig.from_name("demo")
    data = media[name].read_bytes()
    default = HEADER_CUT_MIN_PIXELS
    for count, threads, floor in ((cfg.lita.sample_frames, 1, default), (cfg.lita.sample_frames, 3, default),
                                  (157, 3, default), (cfg.lita.sample_frames, 1, 0)):  # floor 0: cut at any size
        decoded = decode_pyav(load_source(data), lambda timeline, n=count: timeline.sample(n), cfg.vision.image_size,
                              num_threads=threads, header_cut_min_pixels=floor)
        reference = _every_frame_then_pick(media[name], decoded.indices, cfg.vision.image_size)
        assert decoded.frames.shape == reference.shape, name
        assert np.array_equal(decoded.frames, reference), (name, count, threads, decoded.decoders, int(np.abs(
            decoded.frames.astype(np.int16) - reference).max()))
        if name in _SKIPS_FRAMES and count == cfg.lita.sample_frames:
            assert decoded.decoded_frames < 0.8 * decoded.total_packets, (name, decoded.decoded_frames)
        assert (decoded.decoders > 1) == (threads > 1 and name not in _ONE_DECODER), (name, threads, decoded.decoders)
