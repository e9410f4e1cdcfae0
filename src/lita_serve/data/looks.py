"""Varied looks for synthetic event videos: backgrounds, distractor patterns and camera effects.

A model trained on one dark grey background learns "something bright appears on dark grey"
rather than "a red circle appears"; it then fails on the first video that looks different. A
:class:`Look` describes everything about a video's appearance that is not one of its events:

* a background **family** — ``plain`` (any grey or colour), ``gradient``, ``texture`` (blotchy,
  static or drifting), ``stripes``, ``bars`` (a few solid bars sweeping across), ``testcard``
  (desaturated colour bars over a grey ramp, scrolling) and ``checker`` (a checkerboard);
* optional fine **noise** (static or changing every frame) on top of the background;
* **brightness and contrast** that drift over time (applied to the whole picture, shapes too);
* occasional **camera noise** (fresh per frame) and a small box **blur**.

Families are grouped so that evaluation can hold a whole family out of training:
:data:`TRAINING_FAMILIES` are drawn for training videos, :data:`HELDOUT_FAMILIES` never are.
Every draw comes from the caller's generator, so a look is reproducible from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LOOK_FAMILIES = ("plain", "gradient", "texture", "stripes", "bars", "testcard", "checker")
TRAINING_FAMILIES = ("plain", "gradient", "texture", "stripes", "bars", "testcard")
HELDOUT_FAMILIES = ("checker",)  # a 2-D periodic pattern: never drawn for training videos
MIN_SHAPE_CONTRAST = 110.0  # RGB distance a shape's colour keeps from every background colour
# SMPTE-like bar colours (75 % intensity); the test card blends them towards grey.
_CARD_BARS = ((191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0), (191, 0, 191), (191, 0, 0), (0, 0, 191))
BACKGROUND_GRAY = 64  # the generator's classic dark grey: every shape colour stands out against it


@dataclass(frozen=True)
class Look:
    """How a video looks apart from its events (colours are RGB 0..255, lengths fractions of the
    frame's shorter side, speeds fractions per second).

    ``colors`` are the background's main colours (the first is the base); for ``bars`` and
    ``testcard`` every further entry is one bar's colour.
    """

    family: str
    colors: tuple[tuple[int, int, int], ...]
    period: float = 0.25  # stripe / checker cell / bar width / texture blob size
    angle: float = 0.0  # direction of gradients and stripes, radians
    speed: tuple[float, float] = (0.0, 0.0)  # pattern drift (x, y)
    texture: float = 0.0  # +- grey levels of fine noise on the background
    texture_moves: bool = False  # fine noise redrawn every frame (else fixed for the video)
    brightness: float = 0.0  # +- grey levels of a slow brightness swing
    contrast: float = 0.0  # fraction of contrast lost at the swing's low point
    swing_s: float = 6.0  # period of the brightness/contrast swing
    camera_noise: float = 0.0  # sigma of per-frame Gaussian noise
    blur: int = 0  # box-blur radius in pixels
    seed: int = 0

    def __post_init__(self) -> None:
        if self.family not in LOOK_FAMILIES:
            raise ValueError(f"unknown look family {self.family!r}; known: {LOOK_FAMILIES}")
        if not self.colors:
            raise ValueError("a look needs at least one colour")

    def contrasts_with(self, rgb: tuple[int, int, int], minimum: float = MIN_SHAPE_CONTRAST) -> bool:
        """True when ``rgb`` is at least ``minimum`` (RGB distance) from every background colour."""
        c = np.asarray(rgb, np.float32)
        return all(float(np.linalg.norm(c - np.asarray(b, np.float32))) >= minimum for b in self.colors)


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A grey (half the time) or an arbitrary colour."""
    if rng.random() < 0.5:
        g = int(rng.integers(0, 256))
        return (g, g, g)
    return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _blend(a: tuple[int, int, int], b: tuple[int, int, int], w: float) -> tuple[int, int, int]:
    return tuple(int(round(x * (1 - w) + y * w)) for x, y in zip(a, b))  # type: ignore[return-value]


def random_look(rng: np.random.Generator, families: tuple[str, ...] = TRAINING_FAMILIES) -> Look:
    """Draw a look from ``families`` with random colours, motion and camera effects."""
    family = str(rng.choice(families))
    base = _random_color(rng)
    if family == "plain" and rng.random() < 0.125:  # one plain look in eight keeps the classic grey exactly
        base = (BACKGROUND_GRAY, BACKGROUND_GRAY, BACKGROUND_GRAY)
    colors: list[tuple[int, int, int]] = [base]
    if family in ("gradient", "stripes", "checker"):
        colors.append(_random_color(rng))
    elif family == "bars":
        colors.extend(_random_color(rng) for _ in range(int(rng.integers(1, 4))))
    elif family == "testcard":
        grey = int(rng.integers(60, 200))
        w = float(rng.uniform(0.3, 0.7))
        colors = [(grey, grey, grey)] + [_blend(c, (grey, grey, grey), w) for c in _CARD_BARS]
    moving = family != "plain" and rng.random() < 0.6
    speed = tuple(float(v) for v in rng.uniform(-0.4, 0.4, 2)) if moving else (0.0, 0.0)
    textured = family == "texture" or rng.random() < 0.3
    swing = rng.random() < 0.35
    return Look(
        family=family, colors=tuple(colors),
        period=float(rng.uniform(0.12, 0.5)), angle=float(rng.uniform(0, math.pi)), speed=speed,  # type: ignore[arg-type]
        texture=float(rng.uniform(5, 30)) if textured else 0.0, texture_moves=bool(rng.random() < 0.5),
        brightness=float(rng.uniform(10, 45)) if swing else 0.0,
        contrast=float(rng.uniform(0.1, 0.4)) if swing else 0.0, swing_s=float(rng.uniform(2, 12)),
        camera_noise=float(rng.uniform(3, 10)) if rng.random() < 0.2 else 0.0,
        blur=1 if rng.random() < 0.15 else 0, seed=int(rng.integers(2**31)),
    )


def _coords(look: Look, t: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates [H,1] and [1,W] in units of the short side, shifted by the drift."""
    short = float(min(width, height))
    ys = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / short - look.speed[1] * t
    xs = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / short - look.speed[0] * t
    return ys, xs


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], w: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two colours: w [H,W] in 0..1 -> [H,W,3] float32."""
    a_, b_ = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a_ + (b_ - a_) * w[..., None]


def background(look: Look, t: float, width: int, height: int) -> np.ndarray:
    """The look's background at time ``t``: float32 [height, width, 3] (before camera effects).

    A still background (no drift) is drawn once per look and size and copied after that.
    """
    if look.speed == (0.0, 0.0):
        return _still_background(look, width, height).copy()
    return _draw_background(look, t, width, height)


@lru_cache(maxsize=4)
def _still_background(look: Look, width: int, height: int) -> np.ndarray:
    return _draw_background(look, 0.0, width, height)


@lru_cache(maxsize=4)
def _still_noise(look: Look, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(look.seed + 1)
    return rng.uniform(-look.texture, look.texture, (height, width, 1)).astype(np.float32)


def _draw_background(look: Look, t: float, width: int, height: int) -> np.ndarray:
    ys, xs = _coords(look, t, width, height)
    ys, xs = np.broadcast_arrays(ys, xs)
    base = look.colors[0]
    if look.family == "plain":
        out = np.broadcast_to(np.asarray(base, np.float32), (height, width, 3)).copy()
    elif look.family == "gradient":
        u = xs * math.cos(look.angle) + ys * math.sin(look.angle)
        out = _mix(base, look.colors[1], np.abs(((u / (2 * look.period + 0.5)) % 2.0) - 1.0))  # triangle wave
    elif look.family == "stripes":
        u = xs * math.cos(look.angle) + ys * math.sin(look.angle)
        out = _mix(base, look.colors[1], ((u / look.period) % 1.0 < 0.5).astype(np.float32))
    elif look.family == "checker":
        cells = np.floor(xs / look.period) + np.floor(ys / look.period)
        out = _mix(base, look.colors[1], (cells % 2).astype(np.float32))
    elif look.family == "bars":
        out = np.broadcast_to(np.asarray(base, np.float32), (height, width, 3)).copy()
        vertical = look.angle < math.pi / 2
        u = xs if vertical else ys
        for k, color in enumerate(look.colors[1:]):
            centre = (k + 0.5) / (len(look.colors) - 1) * 1.5  # bars spread over 1.5 short sides, wrapping
            inside = np.abs(((u - centre) % 1.5) - 0.75) > 0.75 - look.period * 0.4
            out[inside] = color
    elif look.family == "testcard":
        bars = np.asarray(look.colors[1:], np.float32)  # [B,3]
        index = np.floor((xs % 1.5) / 1.5 * len(bars)).astype(np.int64) % len(bars)
        out = bars[index]
        ramp = np.repeat(((xs % 1.0) * 255.0)[..., None], 3, axis=-1)  # a grey ramp band under the bars
        out = np.where(((ys % 1.0) > 0.75)[..., None], ramp, out).astype(np.float32)
    else:  # texture: blotches of the base colour brightened and darkened
        rng = np.random.default_rng(look.seed)
        grid = rng.uniform(-1, 1, (9, 9)).astype(np.float32)
        gy = np.floor(ys / look.period).astype(np.int64) % 9
        gx = np.floor(xs / look.period).astype(np.int64) % 9
        out = np.asarray(base, np.float32) + 50.0 * grid[gy, gx][..., None]
    return out


def apply_look(look: Look, frame: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    """Fine noise, brightness/contrast swing, camera noise and blur on a float32 [H,W,3] frame -> uint8."""
    height, width = frame.shape[:2]
    if look.camera_noise > 0:
        frame = frame + rng.normal(0.0, look.camera_noise, (height, width, 1)).astype(np.float32)
    if look.brightness > 0 or look.contrast > 0:
        phase = 0.5 * (1 + math.sin(2 * math.pi * t / look.swing_s + look.seed % 7))  # 0..1
        gain = 1.0 - look.contrast * phase
        frame = (frame - 128.0) * gain + 128.0 + look.brightness * (2 * phase - 1)
    if look.blur > 0:
        r = look.blur
        padded = np.pad(frame, ((r, r), (r, r), (0, 0)), mode="edge")
        acc = np.zeros_like(frame)
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                acc += padded[dy:dy + height, dx:dx + width]
        frame = acc / float((2 * r + 1) ** 2)
    return np.clip(frame, 0, 255).astype(np.uint8)


def textured(look: Look, frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The background ``frame`` [H,W,3] float32 with the look's fine noise (fixed or per frame)."""
    if look.texture <= 0:
        return frame
    if not look.texture_moves:
        return frame + _still_noise(look, *frame.shape[:2])
    return frame + rng.uniform(-look.texture, look.texture, frame.shape[:2] + (1,)).astype(np.float32)
