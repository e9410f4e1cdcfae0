"""Baselines that ignore the video, scored the same way as the model."""

from __future__ import annotations

import json

import pytest

from lita_serve.serving.demo import demo_assets
from lita_serve.evaluate.baselines import (
    MEAN_SPAN, RANDOM, WHOLE_VIDEO, baseline_scores, baselines_line, best_baseline, mean_relative_span,
)
from lita_serve.evaluate.scorer import score
from lita_serve.evaluate.heldout import training_relative_span
from lita_serve.train.dataset import draw_specs
from lita_serve.train.demo_training import MANIFEST_FILE


def _records():
    # video a (10 s): events 2-4 and 5-9; video b (20 s): event 0-20
    return [
        {"question_id": "1", "video": "a", "duration": 10.0, "gt": (2.0, 4.0), "category": "x", "prediction_text": ""},
        {"question_id": "2", "video": "a", "duration": 10.0, "gt": (5.0, 9.0), "category": "x", "prediction_text": ""},
        {"question_id": "3", "video": "b", "duration": 20.0, "gt": (0.0, 20.0), "category": "y", "prediction_text": ""},
    ]


def test_mean_relative_span():
    assert mean_relative_span([(2, 4, 10), (0, 20, 20)]) == pytest.approx((0.1, 0.7))
    assert mean_relative_span([(5, 30, 20)]) == pytest.approx((0.25, 1.0))  # an end past the video is clamped
    with pytest.raises(ValueError):
        mean_relative_span([])


def test_whole_video_and_mean_span_scored_per_video_like_the_model():
    report = score(_records(), "lita", average="video")
    scores = baseline_scores(report, (0.3, 0.6))
    # whole video: a -> 0.2 and 0.4 (mean 0.3), b -> 1.0; per video then over videos
    assert scores["all"][WHOLE_VIDEO]["mIoU"] == pytest.approx((0.3 + 1.0) / 2)
    assert scores["x"][WHOLE_VIDEO]["mIoU"] == pytest.approx(0.3)
    assert scores["y"][WHOLE_VIDEO]["R@0.5"] == 1.0
    # mean span on a = (3, 6): IoU with (2, 4) = 1/4, with (5, 9) = 1/6; on b = (6, 12): 6/20
    assert scores["x"][MEAN_SPAN]["mIoU"] == pytest.approx((1 / 4 + 1 / 6) / 2)
    assert scores["y"][MEAN_SPAN]["mIoU"] == pytest.approx(0.3)
    # random is the report's own seeded baseline
    assert scores["all"][RANDOM]["mIoU"] == pytest.approx(report.overall["random_mIoU"])
    assert best_baseline(scores["y"])["name"] == WHOLE_VIDEO
    line = baselines_line(scores["all"])
    assert line.startswith("baselines mIoU") and "whole video 0.650" in line and "mean span" in line


def test_mean_span_is_that_of_the_set_the_shipped_model_trained_on():
    """The eval's mean-span baseline comes from the training videos as the manifest of the shipped
    demo model records them (seed, count, look families, classic share)."""
    manifest = json.loads((demo_assets() / MANIFEST_FILE).read_text())
    specs = draw_specs(manifest["train_videos"], manifest["seed"], looks=tuple(manifest["train_looks"]),
                       classic_share=manifest["classic_share"])
    trained_on = mean_relative_span((e.start_s, e.end_s, s.duration_s) for s in specs for e in s.events)
    assert training_relative_span() == pytest.approx(trained_on, abs=1e-12)
