"""Pretraining the demo's vision tower on what is on screen: labels, learning, freezing, determinism."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from lita_build.checkpoint.random_init import build_random_model
from lita_serve.config import LitaConfig
from lita_serve.data.synthetic import Event, VideoSpec
from lita_serve.errors import InvalidInputError
from lita_serve.data.looks import TRAINING_FAMILIES
from lita_serve.preprocess.frame_decode import decode_pyav
from lita_serve.preprocess.frame_sampling import crop_and_normalize
from lita_serve.preprocess.source import load_source
from lita_serve.train.dataset import make_split
from lita_serve.train.tower import NAMES, TowerSettings, collect_frames, pretrain_tower, rendered_frames, visible_names


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


def test_rendered_frames_match_the_decoded_frames_of_the_same_video(frames_and_labels, tmp_path):
    """Drawn frames stand in for decoded ones: the same frames decoded from the encoded video by
    the server's path differ only by the codec's losses, and the labels name what is drawn."""
    cfg = frames_and_labels[0]
    spec = make_split(tmp_path, 1, seed=11, resolutions=((96, 80),), duration_range=(6.0, 6.0), fps_range=(10, 10),
                      looks=TRAINING_FAMILIES)[0]
    frames, labels = rendered_frames([spec], cfg, 7)  # [7,3,S,S], [7,K]
    picks = np.unique(np.round(np.linspace(0, spec.num_frames - 1, 7)).astype(np.int64))
    decoded = decode_pyav(load_source(str(spec.path)), lambda timeline: picks, cfg.vision.image_size)
    served = crop_and_normalize(decoded.frames, cfg.vision.image_size, cfg.vision.image_mean, cfg.vision.image_std)
    assert frames.shape == served.shape == (len(picks), 3, cfg.vision.image_size, cfg.vision.image_size)
    gap = float(np.abs(frames.numpy() - served).mean())  # CLIP units: 0.05 is about 3.5 grey levels
    assert gap < 0.05, gap  # measured 0.021; the neighbouring frames differ by 0.095
    assert torch.equal(labels, torch.from_numpy(visible_names(spec, picks / spec.fps)))
    assert float(labels.sum()) > 0  # the draw puts at least one event on screen in these frames
