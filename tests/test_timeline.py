"""Sampling by presentation time and showing frames as players do, as pure functions."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from lita_serve.preprocess.display import Display
from lita_serve.preprocess.frame_sampling import frame_indices
from lita_serve.preprocess.timeline import Timeline

U = 1 << 16  # 1.0 in a display matrix


@pytest.mark.parametrize("num_samples", [100, 16, 8, 7, 3, 2, 1])
def test_constant_rate_sampling_is_lita_index_rule(num_samples):
    """Evenly spaced frames in any time base and with any start: exactly round(linspace(0, n-1, F)),
    ties included (numpy rounds half to even; so does the exact arithmetic here)."""
    for n in range(1, 400):
        for step, start in ((1, 0), (512, 1000), (3003, 90_000)):
            timeline = Timeline.from_timestamps([start + i * step for i in range(n)], Fraction(1, 30000))
            np.testing.assert_array_equal(timeline.sample(num_samples), frame_indices(n, num_samples),
                                          err_msg=f"n={n} step={step}")


def test_variable_rate_samples_are_even_in_time():
    """10 fps for 12 s then 30 fps for 12 s: half the samples in each half, each within half a
    frame of its evenly spaced time; the index rule would put only a quarter in the first half."""
    pts = [i * 3 for i in range(120)] + [360 + i for i in range(360)]  # units of 1/30 s
    timeline = Timeline.from_timestamps(pts, Fraction(1, 30))
    assert timeline.duration == pytest.approx(24.0)
    times = timeline.seconds(timeline.sample(100))
    targets = np.linspace(0, timeline.seconds()[-1], 100)
    gaps = np.where(targets < 12.0, 0.1, 1 / 30)
    assert np.all(np.abs(times - targets) <= gaps / 2 + 1e-9)
    assert np.sum(times < 12.0) == 50
    assert np.sum(frame_indices(480, 100) < 120) == 25


def test_duration_runs_from_the_first_frame_to_the_end_of_the_last():
    offset = Timeline.from_timestamps([90_000 + 3000 * i for i in range(10)], Fraction(1, 90_000), 3000)
    assert offset.duration == pytest.approx(10 / 30)  # a 1 s start offset is not part of the video
    assert offset.seconds()[0] == 0.0
    unknown_last = Timeline.from_timestamps([0, 10, 20, 40, 50], Fraction(1, 100))
    assert unknown_last.duration == pytest.approx(0.6)  # the last frame lasts the median gap
    single = Timeline.from_timestamps([7], Fraction(1, 25), fallback_spacing=1)
    assert single.duration == pytest.approx(0.04) and single.sample(4).tolist() == [0, 0, 0, 0]
    assert Timeline.from_timestamps([3, 1, 2], Fraction(1, 10)).pts == (1, 2, 3)  # decode order in, display out
    with pytest.raises(ValueError, match="distinct"):
        Timeline.from_timestamps([0, 1, 1], Fraction(1, 10))
    assert Timeline.constant_rate(25, 12.5).duration == pytest.approx(2.0)
    assert Timeline.constant_rate(25, 0.0).duration == 0.0  # no rate: callers reject it


def test_spacing_names_the_shortest_and_longest_gap():
    timeline = Timeline.from_timestamps([0, 1, 2, 5, 6], Fraction(1, 10))
    assert timeline.spacing() == pytest.approx((0.1, 0.3))


@pytest.mark.parametrize("matrix,expected", [
    ((U, 0, 0, 0, U, 0), lambda a: a),
    ((0, -U, 0, U, 0, 0), lambda a: np.rot90(a, 1)),  # ffmpeg's rotate=90 tag
    ((-U, 0, 0, 0, -U, 0), lambda a: np.rot90(a, 2)),
    ((0, U, 0, -U, 0, 0), lambda a: np.rot90(a, -1)),
    ((-U, 0, 0, 0, U, 0), lambda a: a[:, ::-1]),  # mirrored
    ((U, 0, 0, 0, -U, 0), lambda a: a[::-1]),
    ((0, U, 0, U, 0, 0), lambda a: a.transpose(1, 0, 2)),
    ((0, -U, 0, -U, 0, 0), lambda a: a.transpose(1, 0, 2)[::-1, ::-1]),
])
def test_display_matrix_orientation(matrix, expected):
    """The orientations ffmpeg's player gives for each matrix (checked against the ffmpeg command
    line in test_media_matrix)."""
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    np.testing.assert_array_equal(Display.from_matrix(matrix).orient(image), expected(image))


def test_pixel_aspect_and_quarter_turns_set_the_shown_and_scaled_size():
    anamorphic = Display.from_matrix(None, Fraction(4, 3))
    assert anamorphic.shown_size(144, 108) == (192, 108)
    assert anamorphic.stored_target(144, 108, 56) == (99, 56)
    turned = Display.from_matrix((0, -U, 0, U, 0, 0))
    assert turned.shown_size(192, 108) == (108, 192)
    assert turned.stored_target(192, 108, 56) == (99, 56)  # scaled as stored, then turned to 56x99
    assert Display().is_identity and not turned.is_identity and not anamorphic.is_identity
