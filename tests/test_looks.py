"""Varied looks: drawn reproducibly, held-out families never used for training, shapes still visible."""

from __future__ import annotations

import dataclasses

import decord
import numpy as np
import pytest

from lita_serve.data.looks import HELDOUT_FAMILIES, LOOK_FAMILIES, TRAINING_FAMILIES, random_look
from lita_serve.data.synthetic import BACKGROUNDS, COLORS, Event, VideoSpec, encode_spec, event_mask, random_video_spec, render_frame
from lita_serve.train.dataset import draw_specs


def test_training_and_heldout_families_are_disjoint_and_cover_every_family():
    assert not set(TRAINING_FAMILIES) & set(HELDOUT_FAMILIES)
    assert set(TRAINING_FAMILIES) | set(HELDOUT_FAMILIES) == set(LOOK_FAMILIES)
    rng = np.random.default_rng(0)
    drawn = {random_look(rng).family for _ in range(300)}
    assert drawn == set(TRAINING_FAMILIES)  # every training family, never a held-out one


def test_looks_vary_and_are_reproducible():
    specs = draw_specs(200, seed=4, looks=TRAINING_FAMILIES)
    assert specs == draw_specs(200, seed=4, looks=TRAINING_FAMILIES)
    looks = [s.look for s in specs]
    greys = {c[0] for lk in looks for c in lk.colors[:1] if c[0] == c[1] == c[2]}
    assert min(greys) < 60 and max(greys) > 200  # dark to light greys
    assert any(lk.colors[0][0] != lk.colors[0][1] for lk in looks)  # and colours
    assert any(lk.speed != (0.0, 0.0) for lk in looks) and any(lk.brightness > 0 for lk in looks)
    assert any(lk.camera_noise > 0 for lk in looks) and any(lk.blur for lk in looks)
    sizes = {e.size for s in specs for e in s.events}
    assert min(sizes) < 0.11 and max(sizes) > 0.15
    # shape colours stand out against their background's colours, unless too few colours do
    # (a faint test card can be close to every colour): then any colour is drawn
    for s in specs:
        standing_out = sum(s.look.contrasts_with(c) for c in COLORS.values())
        assert standing_out == 0 or all(s.look.contrasts_with(COLORS[e.color]) for e in s.events)
    assert sum(s.look.contrasts_with(COLORS[e.color]) for s in specs for e in s.events) > 0.9 * sum(
        len(s.events) for s in specs)


def test_a_classic_share_keeps_some_videos_in_the_classic_look():
    specs = draw_specs(400, seed=5, looks=TRAINING_FAMILIES, classic_share=0.2)
    assert specs == draw_specs(400, seed=5, looks=TRAINING_FAMILIES, classic_share=0.2)
    classic = [s for s in specs if s.look is None]
    assert 0.14 < len(classic) / len(specs) < 0.26
    assert {s.background for s in classic} <= set(BACKGROUNDS)  # the generator's dark grey backgrounds
    # share 0 draws nothing extra: earlier splits (the evaluation's) keep their videos
    assert draw_specs(50, seed=5, looks=TRAINING_FAMILIES, classic_share=0.0) == draw_specs(
        50, seed=5, looks=TRAINING_FAMILIES)


def test_frames_are_deterministic_and_moving_patterns_move():
    spec = random_video_spec(np.random.default_rng(3), looks=("stripes",), resolutions=((96, 64),))
    spec = dataclasses.replace(spec, look=dataclasses.replace(spec.look, speed=(0.3, 0.0), camera_noise=0.0))
    assert np.array_equal(render_frame(spec, 5), render_frame(spec, 5))
    assert not np.array_equal(render_frame(spec, 0), render_frame(spec, 2 * spec.fps))


@pytest.mark.parametrize("family", LOOK_FAMILIES)
def test_encoded_shape_keeps_its_colour_on_every_family(tmp_path, family):
    look = random_look(np.random.default_rng(1), (family,))
    look = dataclasses.replace(look, brightness=0.0, contrast=0.0, camera_noise=0.0, blur=0)  # exact colours
    event = Event("square", "red" if look.contrasts_with(COLORS["red"]) else "cyan", 1.0, 2.0, x=0.5, y=0.5,
                  size=0.2)
    spec = encode_spec(VideoSpec(duration_s=3.0, fps=10, width=96, height=64, events=[event], look=look, seed=2),
                       tmp_path / f"{family}.mp4")
    frames = decord.VideoReader(str(spec.path)).get_batch([5, 15]).asnumpy().astype(np.float32)  # [2,H,W,3]
    inner = event_mask(dataclasses.replace(event, size=0.12), 1.5, 96, 64)
    shown = frames[1][inner].mean(axis=0)
    assert np.abs(shown - np.array(COLORS[event.color])).max() < 30, (family, shown)
    before = frames[0][inner].mean(axis=0)
    assert np.linalg.norm(before - shown) > 60, (family, before)  # the background there is something else
