"""Synthetic event videos: the encoded file shows each shape exactly when the spec says."""

from __future__ import annotations

import time

import decord
import numpy as np
import pytest

from lita_serve.config import LitaConfig
from lita_serve.data.synthetic import (
    COLORS,
    Event,
    VideoSpec,
    encode_spec,
    event_mask,
    make_event_video,
    questions_for,
    random_video_spec,
)
from lita_serve.preprocess.video import sample_video_for

EVENTS = [
    Event("circle", "red", 2.0, 5.0, x=0.25, y=0.3),
    Event("square", "green", 4.0, 8.0, x=0.75, y=0.3, end_color="blue"),
    Event("triangle", "yellow", 6.0, 9.5, x=0.5, y=0.72, end_x=0.7),
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> VideoSpec:
    path = tmp_path_factory.mktemp("synthetic") / "events.mp4"
    return make_event_video(path, duration_s=10.0, fps=10, width=160, height=120, events=EVENTS, seed=3,
                            background="noise")


def _mean_color(frame: np.ndarray, event: Event, t: float, spec: VideoSpec) -> np.ndarray:
    """Mean RGB inside the shape's mask at ``t`` (eroded away from chroma-subsampled edges)."""
    shrunk = Event(event.shape, event.color, event.start_s, event.end_s, event.x, event.y,
                   event.size * 0.6, event.end_x, event.end_y, event.end_color)
    mask = event_mask(shrunk, t, spec.width, spec.height)
    assert mask.sum() > 20
    return frame[mask].mean(axis=0)


def _close(rgb: np.ndarray, name: str) -> bool:
    return bool(np.abs(rgb - np.array(COLORS[name])).max() < 25)


def test_shapes_appear_and_disappear_on_time(clip):
    reader = decord.VideoReader(str(clip.path))
    assert len(reader) == 100 and reader.get_avg_fps() == pytest.approx(10.0)
    # Frames just inside and just outside each event, plus both halves of the colour change.
    probes = {
        EVENTS[0]: [(1.9, None), (2.0, "red"), (4.9, "red"), (5.0, None)],
        EVENTS[1]: [(3.9, None), (4.0, "green"), (5.9, "green"), (6.0, "blue"), (7.9, "blue"), (8.0, None)],
        EVENTS[2]: [(5.9, None), (6.0, "yellow"), (9.4, "yellow"), (9.5, None)],
    }
    for event, checks in probes.items():
        for t, expected in checks:
            frame = reader[int(round(t * 10))].asnumpy()
            # Outside the event, look where the shape would be at its nearest visible moment.
            t_shape = min(max(t, event.start_s), event.end_s - 0.1)
            rgb = _mean_color(frame, event, t_shape, clip)
            if expected is None:
                assert np.abs(rgb - 64).max() < 15, (event.name, t, rgb)  # background grey
            else:
                assert _close(rgb, expected), (event.name, t, rgb, expected)


def test_moving_shape_moves(clip):
    reader = decord.VideoReader(str(clip.path))
    event = EVENTS[2]
    early, late = reader[60].asnumpy(), reader[94].asnumpy()
    assert _close(_mean_color(early, event, 6.0, clip), "yellow")
    assert _close(_mean_color(late, event, 9.4, clip), "yellow")
    # Its starting position is background again by the end.
    assert np.abs(_mean_color(late, event, 6.0, clip) - 64).max() < 30


def test_questions_have_exact_answers(clip):
    qa = questions_for(clip)
    by_question = {q["question"]: q for q in qa}
    assert by_question["When does the red circle appear?"]["answer"] == (2.0, 5.0)
    assert by_question["When does the yellow triangle appear?"]["answer"] == (6.0, 9.5)
    dense = by_question["Describe the video with timestamps."]
    assert dense["task"] == "dense_captioning"
    assert dense["answer"] == [
        (2.0, 5.0, "A red circle appears."),
        (4.0, 8.0, "A green square appears and turns blue."),
        (6.0, 9.5, "A yellow triangle appears and moves across the screen."),
    ]


def test_sampled_frames_see_the_events(clip):
    cfg = LitaConfig.from_name("tiny")
    cfg.lita.sample_frames = 20
    v = sample_video_for(clip.path, cfg)
    assert v.duration == pytest.approx(clip.duration_s)
    # The red circle is in the top-left area; the CLIP crop of 160x120 keeps the whole height.
    red = v.frames[:, 0, 40:80, 40:80].mean(axis=(1, 2))
    visible = (v.timestamps >= 2.0) & (v.timestamps < 5.0)
    assert visible.any() and (~visible).any()
    assert red[visible].min() > red[~visible].max()


def test_random_specs_are_varied_and_valid():
    rng = np.random.default_rng(7)
    specs = [random_video_spec(rng) for _ in range(40)]
    assert min(s.duration_s for s in specs) >= 5 and max(s.duration_s for s in specs) <= 60
    assert all(10 <= s.fps <= 30 for s in specs)
    assert len({(s.width, s.height) for s in specs}) >= 4
    assert {len(s.events) for s in specs} == {1, 2, 3}
    for s in specs:
        assert all(0 <= e.start_s < e.end_s <= s.duration_s for e in s.events)
        assert len({e.name for e in s.events}) == len(s.events)
        assert len(questions_for(s)) == len(s.events) + 1
    assert random_video_spec(np.random.default_rng(7)) == specs[0]  # seeded: reproducible


def test_random_spec_encodes_to_a_matching_file(tmp_path):
    spec = random_video_spec(np.random.default_rng(11), duration_range=(5, 8), fps_range=(10, 12),
                             resolutions=((160, 120),))
    out = encode_spec(spec, tmp_path / "random.mp4")
    reader = decord.VideoReader(str(out.path))
    assert len(reader) == spec.num_frames
    assert reader[0].shape == (120, 160, 3)


def test_encoding_is_fast(tmp_path):
    start = time.perf_counter()
    make_event_video(tmp_path / "long.mp4", duration_s=60, fps=10, width=160, height=120, events=EVENTS)
    assert time.perf_counter() - start < 5.0  # ~0.3 s alone; generous for a shared 2-core machine


def test_invalid_events_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        Event("hexagon", "red", 0, 1)
    with pytest.raises(ValueError, match="colour"):
        Event("circle", "mauve", 0, 1)
    with pytest.raises(ValueError, match="start_s < end_s"):
        Event("circle", "red", 3, 2)
    with pytest.raises(ValueError, match="after the video"):
        make_event_video(tmp_path / "x.mp4", duration_s=2, fps=10, width=64, height=48,
                         events=[Event("circle", "red", 1, 3)])
    with pytest.raises(ValueError, match="even"):
        make_event_video(tmp_path / "x.mp4", duration_s=2, fps=10, width=65, height=48, events=[])
