"""Video decoding, LITA frame sampling and the CLIP transform, on real encoded files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lita_serve.config import LitaConfig
from lita_serve.errors import InvalidInputError, LimitExceededError, VideoDecodeError
from lita_serve.preprocess.video import sample_video, sample_video_for
from lita_serve.preprocess.frame_decode import available_backends
from lita_serve.preprocess.frame_sampling import center_crop_offsets, frame_indices, resize_dims
from lita_serve.preprocess.timeline import Timeline
from lita_serve.preprocess.video import check_timing
from videos import make_audio_only, make_mp4, make_one_frame_video, make_still_png, truncate

CFG = LitaConfig.from_name("tiny")
MEAN, STD = CFG.vision.image_mean, CFG.vision.image_std
RED = (255, 0, 0)
BACKENDS = available_backends()


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    textured = lambda i: np.clip(  # noqa: E731 - smooth gradients + noise, so resizing filters matter
        np.add.outer(np.linspace(0, 200, 180), np.linspace(0, 55, 320))[:, :, None]
        + np.array([0, 60, 120]) + rng.integers(0, 30, (180, 320, 3)) + 3 * i, 0, 255)
    def checker(i: int) -> np.ndarray:  # 20-px blocks over gradients, downscaled 360 -> 224
        yy, xx = np.mgrid[:360, :640]
        block = (((yy // 20) + (xx // 20) + i) % 2) * 120
        return np.clip(np.stack([block + xx // 6, block + yy // 3, 200 - block], -1), 0, 255)

    files = {
        "checker": make_mp4(d / "checker.mp4", seconds=0.5, fps=10, size=(640, 360), frame_fn=checker),
        "red": make_mp4(d / "red.mp4", seconds=2.0, fps=10, size=(160, 120), color_fn=lambda i: RED),
        "steps": make_mp4(d / "steps.mp4", seconds=3.0, fps=12, size=(96, 64)),
        "wide": make_mp4(d / "wide.mp4", seconds=1.0, fps=10, size=(320, 180), frame_fn=textured),
        "tall": make_mp4(d / "tall.mp4", seconds=1.0, fps=10, size=(120, 200)),
        "short": make_mp4(d / "short.mp4", seconds=0.5, fps=10, size=(64, 48)),
        "one": make_one_frame_video(d / "one.mp4"),
        "png": make_still_png(d / "still.png"),
        "jpg": make_still_png(d / "still.jpg"),
        "m4a": make_audio_only(d / "tone.m4a"),
        "mp3": make_audio_only(d / "tone.mp3"),
    }
    (d / "random.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (d / "text.mp4").write_text("this is a text file, not a video\n" * 30)
    files["random"], files["text"] = d / "random.mp4", d / "text.mp4"
    return files


def _sample(source, n=8, size=224, backend="auto", **kw):
    return sample_video(source, n, size, MEAN, STD, backend=backend, **kw)


# ---------------------------------------------------------------- sampling maths
def test_frame_indices_follow_lita_linspace():
    assert frame_indices(100, 5).tolist() == [0, 25, 50, 74, 99]  # round(linspace(0, 99, 5))
    assert frame_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]  # shorter than F: frames repeat
    assert frame_indices(1, 4).tolist() == [0, 0, 0, 0]


def test_resize_keeps_aspect_with_short_side_at_size():
    assert resize_dims(320, 180, 224) == (398, 224)
    assert resize_dims(180, 320, 336) == (336, 597)
    assert resize_dims(64, 64, 224) == (224, 224)
    assert center_crop_offsets(398, 224, 224) == (0, 87)


# ---------------------------------------------------------------- decoded output
@pytest.mark.parametrize("backend", BACKENDS)
def test_shapes_dtype_and_timestamps(media, backend):
    v = _sample(media["steps"], n=10, size=224, backend=backend)
    assert v.frames.shape == (10, 3, 224, 224) and v.frames.dtype == np.float32
    assert v.frames.flags.c_contiguous
    assert (v.num_source_frames, v.fps, v.width, v.height) == (36, 12.0, 96, 64)
    assert v.duration == pytest.approx(3.0, abs=1 / 12)  # encoded length within one frame
    np.testing.assert_array_equal(v.indices, frame_indices(36, 10))  # constant rate: LITA's index rule
    np.testing.assert_allclose(v.timestamps, frame_indices(36, 10) / 12.0, atol=1e-6)  # decord: microseconds
    assert v.timestamps[0] == 0.0 and v.timestamps[-1] == pytest.approx(v.duration - 1 / v.fps)
    assert np.all(np.diff(v.timestamps) > 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [224, 336])
def test_uniform_red_video_normalises_to_clip_values(media, backend, size):
    v = _sample(media["red"], n=4, size=size, backend=backend)
    expected = (np.array([1.0, 0.0, 0.0]) - np.array(MEAN)) / np.array(STD)
    got = v.frames.mean(axis=(0, 2, 3))
    # yuv420p + limited range rounds pure red by a few grey levels: 6/255 / 0.27 ~ 0.09
    np.testing.assert_allclose(got, expected, atol=0.1)
    assert v.frames.std(axis=(0, 2, 3)).max() < 0.05  # uniform across the whole frame


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampled_frames_are_the_frames_at_the_indices(media, backend):
    # steps.mp4 frame i has red = i*37 % 256: each sample must show its own index's colour.
    v = _sample(media["steps"], n=6, size=224, backend=backend)
    red = v.frames[:, 0].mean(axis=(1, 2)) * STD[0] + MEAN[0]  # back to [0, 1]
    idx = frame_indices(36, 6)
    np.testing.assert_allclose(red * 255, (idx * 37) % 256, atol=6)


def test_bytes_and_path_inputs_agree(media):
    path = media["wide"]
    data = path.read_bytes()
    a = _sample(path)
    for source in (data, memoryview(data), bytearray(data), str(path)):
        b = _sample(source)
        np.testing.assert_array_equal(a.frames, b.frames)
        assert (a.duration, a.num_source_frames) == (b.duration, b.num_source_frames)


def _reference(path: Path, n: int, size: int) -> np.ndarray:
    """Full-resolution decode, PIL bicubic shortest-side resize, center crop, normalise."""
    import decord

    vr = decord.VideoReader(str(path))
    full = vr.get_batch(frame_indices(len(vr), n)).asnumpy()  # [F, H, W, 3] uint8
    out = []
    for frame in full:
        w, h = resize_dims(frame.shape[1], frame.shape[0], size)
        img = np.asarray(Image.fromarray(frame).resize((w, h), Image.BICUBIC), np.float64)
        top, left = center_crop_offsets(w, h, size)
        crop = img[top:top + size, left:left + size] / 255.0
        out.append(((crop - MEAN) / STD).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


@pytest.mark.skipif("decord" not in BACKENDS, reason="decord not installed")
@pytest.mark.parametrize("name, tolerance", [("wide", 0.03), ("tall", 0.03), ("checker", 0.1)])
def test_fast_path_matches_full_res_decode_and_pil_resize(media, name, tolerance):
    # Upscaled smooth clips agree to ~1-2 grey levels on average; at sharp block edges ffmpeg's
    # bicubic (sharper than PIL's) differs by ~5. A one-pixel crop shift alone costs > 0.15.
    ref = _reference(media[name], 5, 224)
    for backend in BACKENDS:
        fast = _sample(media[name], n=5, size=224, backend=backend).frames
        assert fast.shape == ref.shape
        assert np.abs(fast - ref).mean() < tolerance, backend
        assert np.abs(fast[..., 1:] - ref[..., :-1]).mean() > np.abs(fast - ref).mean()


def test_short_and_one_frame_videos_repeat_frames(media):
    short = _sample(media["short"], n=8)
    assert short.num_source_frames == 5
    assert frame_indices(5, 8).tolist() == [0, 1, 1, 2, 2, 3, 3, 4]
    np.testing.assert_array_equal(short.frames[1], short.frames[2])  # source frame 1 twice
    assert np.abs(short.frames[0] - short.frames[1]).max() > 0.1
    one = _sample(media["one"], n=8)
    assert one.num_source_frames == 1 and one.duration == pytest.approx(0.1)
    assert np.all(one.timestamps == 0.0)
    assert np.abs(one.frames - one.frames[:1]).max() == 0
    blue = (np.array([0, 0, 1.0]) - MEAN) / STD
    np.testing.assert_allclose(one.frames.mean(axis=(0, 2, 3)), blue, atol=0.1)


def test_sample_video_for_reads_the_config(media):
    cfg = LitaConfig.from_name("tiny")
    cfg.lita.sample_frames = 12
    v = sample_video_for(media["steps"], cfg)
    assert v.frames.shape == (12, 3, cfg.vision.image_size, cfg.vision.image_size)
    cfg.limits.max_duration_s = 1.0
    with pytest.raises(LimitExceededError, match="over the limit of 1 s"):
        sample_video_for(media["steps"], cfg)
    cfg.limits.max_duration_s = 100.0
    cfg.limits.max_video_bytes = 100
    with pytest.raises(LimitExceededError, match="over the limit of 100 bytes"):
        sample_video_for(media["steps"].read_bytes(), cfg)
    cfg.limits.max_video_bytes = 10**9
    cfg.lita.sample_frames = cfg.limits.max_frames + 1
    with pytest.raises(LimitExceededError, match="frames"):
        sample_video_for(media["steps"], cfg)


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, message", [
    ("random", "not a readable video container"),
    ("text", "not a readable video container"),
    ("png", "still image"),
    ("jpg", "still image"),
    ("m4a", "audio-only"),
    ("mp3", "audio-only"),
])
def test_non_videos_raise_typed_errors(media, backend, name, message):
    for source in (media[name], media[name].read_bytes()):
        with pytest.raises(VideoDecodeError, match=message):
            _sample(source, backend=backend)


def test_empty_missing_and_oversized_inputs(media, tmp_path):
    with pytest.raises(VideoDecodeError, match="empty"):
        _sample(b"")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty"):
        _sample(tmp_path / "empty.mp4")
    with pytest.raises(VideoDecodeError, match="cannot be read"):
        _sample(tmp_path / "missing.mp4")
    with pytest.raises(VideoDecodeError, match="path or bytes"):
        _sample(12345)
    size = os.path.getsize(media["red"])
    with pytest.raises(LimitExceededError, match=f"{size} bytes, over the limit of {size - 1}"):
        _sample(media["red"], max_bytes=size - 1)
    _sample(media["red"], max_bytes=size)  # exactly at the limit is fine


def test_duration_and_frame_count_limits(media):
    with pytest.raises(LimitExceededError, match=r"3\.0 s long, over the limit of 2\.5 s"):
        _sample(media["steps"], max_duration_s=2.5)
    with pytest.raises(LimitExceededError, match="over the limit of 4 frames"):
        _sample(media["steps"], n=5, max_frames=4)
    with pytest.raises(InvalidInputError, match="num_frames"):
        _sample(media["steps"], n=0)


def test_invalid_timing_is_a_decode_error():
    for fps in (0.0, -1.0, float("nan"), float("inf")):  # no timestamps and no usable rate
        with pytest.raises(VideoDecodeError, match="frame rate"):
            check_timing("clip", Timeline.constant_rate(10, fps), None)
    assert check_timing("clip", Timeline.constant_rate(50, 25.0), 2.0) == 2.0
    with pytest.raises(LimitExceededError, match="over the limit"):
        check_timing("clip", Timeline.constant_rate(51, 25.0), 2.0)


def test_zero_frame_video(tmp_path):
    import av

    path = tmp_path / "zero.avi"
    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()  # header with a video stream, then no packet at all
    container.close()
    for backend in BACKENDS:
        with pytest.raises(VideoDecodeError, match="no video frames"):
            _sample(path, backend=backend)


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_mp4s_raise_or_decode_never_crash(tmp_path, faststart):
    """Cut an mp4 at many points: each cut either still decodes fully or raises VideoDecodeError."""
    path = tmp_path / "full.mp4"
    rng = np.random.default_rng(1)
    make_mp4(path, seconds=3.0, fps=10, size=(96, 64), frame_fn=lambda i: rng.integers(0, 256, (64, 96, 3)))
    if faststart:  # index (moov) first, frame data after: cuts lose frames, not the index
        import av

        src, path = path, tmp_path / "faststart.mp4"
        with av.open(str(src)) as inp, av.open(str(path), "w", options={"movflags": "faststart"}) as out:
            ostream = out.add_stream_from_template(inp.streams.video[0])
            for packet in inp.demux(inp.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = ostream
                    out.mux(packet)
    errors = 0
    for fraction in (0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.97):
        cut = truncate(path, fraction, dest=tmp_path / f"cut{fraction}.mp4")
        for backend in BACKENDS:
            for source in (cut, cut.read_bytes()):
                try:
                    v = _sample(source, n=30, backend=backend)
                except VideoDecodeError as exc:
                    errors += 1
                    assert "video" in str(exc) and len(str(exc)) < 400
                else:
                    assert v.frames.shape == (30, 3, 224, 224) and np.isfinite(v.frames).all()
    assert errors > 0
