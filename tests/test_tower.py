"""Pretraining the demo's vision tower on what is on screen: labels, learning, freezing, determinism."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from lita_build.checkpoint.random_init import build_random_model
from lita_serve.config import LitaConfig
from lita_serve.data.synthetic import Event, VideoSpec
from lita_serve.errors import InvalidInputError
from lita_serve.train.dataset import make_split
from lita_serve.train.tower import NAMES, TowerSettings, collect_frames, pretrain_tower, visible_names


@pytest.fixture(scope="module")
def frames_and_labels(tmp_path_factory):
    """Real frames decoded with the server's sampling from six short encoded videos, with their labels."""
    cfg = LitaConfig.from_name("demo")
    cfg = dataclasses.replace(cfg, lita=dataclasses.replace(cfg.lita, sample_frames=12))
    specs = make_split(tmp_path_factory.mktemp("tower"), 6, seed=5, resolutions=((64, 64),),
                       duration_range=(5.0, 8.0), fps_range=(5, 6))
    frames, labels = collect_frames(specs, cfg, frames_per_video=12)
    return cfg, frames, labels


def test_visible_names_follow_the_events_colour_changes():
    spec = VideoSpec(duration_s=10.0, fps=10, width=64, height=64, events=[
        Event("circle", "red", 2.0, 6.0, end_color="blue"),  # red until its midpoint (4 s), then blue
        Event("square", "green", 5.0, 9.0),
    ])
    got = visible_names(spec, [1.0, 3.0, 5.5, 8.0, 9.5])
    named = [[NAMES[i] for i in row.nonzero()[0]] for row in got]
    assert named == [[], [("circle", "red")], [("circle", "blue"), ("square", "green")], [("square", "green")], []]


def test_collect_frames_labels_every_frame(frames_and_labels):
    cfg, frames, labels = frames_and_labels
    assert frames.shape[1:] == (3, cfg.vision.image_size, cfg.vision.image_size)
    assert labels.shape == (frames.shape[0], len(NAMES))
    assert 6 < frames.shape[0] <= 6 * 12
    assert 0 < float(labels.sum(1).max()) <= 3  # at most three shapes on screen


def _pretrain(cfg, frames, labels, steps: int = 40):
    tower = copy.deepcopy(build_random_model(cfg, seed=0).encoder.vision_tower)
    before = [p.detach().clone() for p in tower.parameters()]
    result = pretrain_tower(tower, frames, labels,
                            TowerSettings(seed=3, batch_size=16, max_steps=steps, max_seconds=1e9, warmup_steps=2))
    return tower, before, result


def test_pretraining_learns_then_freezes_the_tower(frames_and_labels):
    cfg, frames, labels = frames_and_labels
    tower, before, result = _pretrain(cfg, frames, labels)
    assert result.steps == 40 and result.stopped_by == "max_steps"
    assert sum(result.losses[-5:]) / 5 < 0.5 * sum(result.losses[:5]) / 5
    assert any(not torch.equal(a, b) for a, b in zip(before, tower.parameters()))
    assert not any(p.requires_grad for p in tower.parameters()) and not tower.training
    _, _, again = _pretrain(cfg, frames, labels)
    assert again.losses == result.losses  # same seed, same data: same run


def test_too_few_frames_is_refused(frames_and_labels):
    cfg, frames, labels = frames_and_labels
    tower = build_random_model(cfg, seed=0).encoder.vision_tower
    with pytest.raises(InvalidInputError, match="fewer than one batch"):
        pretrain_tower(tower, frames[:4], labels[:4], TowerSettings(batch_size=16))
