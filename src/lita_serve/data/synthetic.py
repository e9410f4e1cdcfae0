"""Real short videos with known events, for tests, the demo and training a small model.

A video is a plain (or noisy) dark grey background — or, with a :class:`~lita_serve.data.looks.Look`,
any of a family of backgrounds, patterns and camera effects — on which coloured shapes appear at
known times and disappear at known times, optionally moving or changing colour meanwhile. Because the ground
truth is exact, the files double as temporal-localisation data: :func:`questions_for` asks
"When does the red circle appear?" and "Describe the video with timestamps." with answers in
seconds.

A shape is visible in frame ``i`` iff ``start_s <= i / fps < end_s``. Files are H.264 yuv420p
mp4s written by PyAV with libx264's ``ultrafast`` preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from lita_serve.data.looks import BACKGROUND_GRAY, Look, apply_look, background, random_look, textured
from lita_serve.preprocess.frame_sampling import crop_and_normalize, frame_indices

SHAPES = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (25, 200, 25),
    "blue": (25, 25, 230),
    "yellow": (235, 235, 20),
    "magenta": (220, 30, 220),
    "cyan": (20, 220, 220),
    "white": (245, 245, 245),
    "orange": (245, 140, 10),
}
BACKGROUNDS = ("plain", "noise")
NOISE_AMPLITUDE = 12  # +- grey levels of the "noise" background


@dataclass(frozen=True)
class Event:
    """One shape on screen from ``start_s`` (inclusive) to ``end_s`` (exclusive).

    Positions are the shape's centre as fractions of the frame width/height; ``size`` is its
    radius as a fraction of the frame's shorter side. ``end_x``/``end_y`` make it move linearly
    over its lifetime; ``end_color`` switches its colour at the midpoint.
    """

    shape: str
    color: str
    start_s: float
    end_s: float
    x: float = 0.5
    y: float = 0.5
    size: float = 0.15
    end_x: float | None = None
    end_y: float | None = None
    end_color: str | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; known: {SHAPES}")
        for c in (self.color, self.end_color):
            if c is not None and c not in COLORS:
                raise ValueError(f"unknown colour {c!r}; known: {sorted(COLORS)}")
        if not 0 <= self.start_s < self.end_s:
            raise ValueError(f"event needs 0 <= start_s < end_s, got {self.start_s}..{self.end_s}")

    @property
    def name(self) -> str:
        """How questions refer to it: "red circle"."""
        return f"{self.color} {self.shape}"

    @property
    def caption(self) -> str:
        """A one-sentence description of what happens in the event."""
        article = "An" if self.color[0] in "aeiou" else "A"
        text = f"{article} {self.name} appears"
        if self.end_x is not None or self.end_y is not None:
            text += " and moves across the screen"
        if self.end_color is not None:
            text += f" and turns {self.end_color}"
        return text + "."

    def visible_at(self, t: float) -> bool:
        return self.start_s <= t < self.end_s

    def state_at(self, t: float) -> tuple[float, float, str]:
        """(centre x, centre y, colour name) at time ``t`` (within the event)."""
        progress = (t - self.start_s) / (self.end_s - self.start_s)
        x = self.x + ((self.end_x if self.end_x is not None else self.x) - self.x) * progress
        y = self.y + ((self.end_y if self.end_y is not None else self.y) - self.y) * progress
        color = self.end_color if (self.end_color is not None and progress >= 0.5) else self.color
        return x, y, color


@dataclass
class VideoSpec:
    """Everything needed to draw a video and to know its ground truth."""

    duration_s: float
    fps: int
    width: int
    height: int
    events: list[Event]
    background: str = "plain"
    seed: int = 0
    path: Path | None = None  # set once encoded
    look: Look | None = None  # when set, drawn instead of ``background`` (:mod:`lita_serve.data.looks`)

    @property
    def num_frames(self) -> int:
        return int(round(self.duration_s * self.fps))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path) if self.path is not None else None
        return d


def shape_mask(shape: str, cx: float, cy: float, radius: float, width: int, height: int) -> np.ndarray:
    """Boolean ``[height, width]`` mask of a shape centred at pixel (cx, cy)."""
    ys, xs = np.ogrid[:height, :width]
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    # Upward triangle inscribed in the circle: apex at the top, base at cy + radius / 2.
    base_y = radius / 2
    half_width = (dy + radius) / (1.5 * radius) * (radius * np.sqrt(3) / 2)
    return (dy >= -radius) & (dy <= base_y) & (np.abs(dx) <= half_width)


def event_mask(event: Event, t: float, width: int, height: int) -> np.ndarray:
    """Pixel mask of ``event`` at time ``t`` (all False outside the event)."""
    if not event.visible_at(t):
        return np.zeros((height, width), bool)
    x, y, _ = event.state_at(t)
    return shape_mask(event.shape, x * width, y * height, event.size * min(width, height), width, height)


def render_frame(spec: VideoSpec, index: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """RGB uint8 ``[height, width, 3]`` frame ``index`` of ``spec``."""
    t = index / spec.fps
    if spec.look is not None:
        return _render_look_frame(spec, t, rng if rng is not None else np.random.default_rng(spec.seed + index))
    frame = np.full((spec.height, spec.width, 3), BACKGROUND_GRAY, np.uint8)
    if spec.background == "noise":
        rng = rng if rng is not None else np.random.default_rng(spec.seed + index)
        noise = rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, (spec.height, spec.width, 1))
        frame[:] = np.clip(BACKGROUND_GRAY + noise, 0, 255).astype(np.uint8)
    return _draw_events(spec, t, frame)


def _render_look_frame(spec: VideoSpec, t: float, rng: np.random.Generator) -> np.ndarray:
    """A frame of a spec with a :class:`Look`: background, its noise, the shapes, then camera effects."""
    look = spec.look
    assert look is not None
    frame = textured(look, background(look, t, spec.width, spec.height), rng)  # [H,W,3] float32
    return apply_look(look, _draw_events(spec, t, frame), t, rng)


def _draw_events(spec: VideoSpec, t: float, frame: np.ndarray) -> np.ndarray:
    """``frame`` [H,W,3] with the shapes of ``spec`` on screen at ``t`` painted in (later events on top)."""
    for event in spec.events:
        if event.visible_at(t):
            frame[event_mask(event, t, spec.width, spec.height)] = COLORS[event.state_at(t)[2]]
    return frame


def sampled_pixels(spec: VideoSpec, num_frames: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``num_frames`` frames of a square ``spec`` drawn (not encoded), sampled evenly as the
    preprocess step samples and CLIP-normalised: float32 ``[F, 3, S, S]`` with ``S = spec.width``."""
    if spec.width != spec.height:
        raise ValueError(f"sampled_pixels draws square frames, got {spec.width}x{spec.height}")
    picks = frame_indices(spec.num_frames, num_frames)
    frames = np.stack([render_frame(spec, int(i)) for i in picks])  # [F, S, S, 3] uint8
    return crop_and_normalize(frames, spec.width, mean, std)


def encode_spec(spec: VideoSpec, path: str | Path, crf: int = 23) -> VideoSpec:
    """Draw ``spec`` frame by frame into an H.264 mp4 at ``path``; returns the spec with ``path`` set."""
    import av  # noqa: PLC0415 - only needed when writing videos

    path = Path(path)
    rng = np.random.default_rng(spec.seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(spec.fps))
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": str(crf)}
        for i in range(spec.num_frames):
            frame = av.VideoFrame.from_ndarray(render_frame(spec, i, rng), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return dataclasses.replace(spec, path=path)


def make_event_video(
    path: str | Path,
    *,
    duration_s: float,
    fps: int,
    width: int,
    height: int,
    events: list[Event],
    seed: int = 0,
    background: str = "plain",
) -> VideoSpec:
    """Encode a video of ``events`` to ``path`` and return its :class:`VideoSpec`.

    ``width`` and ``height`` must be even (yuv420p); events must end by ``duration_s``.
    """
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; known: {BACKGROUNDS}")
    for event in events:
        if event.end_s > duration_s + 1e-9:
            raise ValueError(f"{event.name} ends at {event.end_s} s, after the video ({duration_s} s)")
    spec = VideoSpec(duration_s=duration_s, fps=fps, width=width, height=height, events=list(events),
                     background=background, seed=seed)
    return encode_spec(spec, path)


RESOLUTIONS = ((160, 120), (224, 224), (320, 180), (320, 240), (426, 240), (480, 270), (640, 360))
# Centres of the cells that events are placed in, so that simultaneous shapes never overlap.
_SLOTS = ((0.25, 0.3), (0.75, 0.3), (0.5, 0.72))


def _random_event(rng: np.random.Generator, duration_s: float, name: tuple[str, str], slot: tuple[float, float],
                  min_event_s: float, size: float = 0.13) -> Event:
    shape, color = name
    length = rng.uniform(min_event_s, max(min_event_s, duration_s * 0.6))
    start = float(np.round(rng.uniform(0, duration_s - length), 1))
    end = float(np.round(min(duration_s, start + length), 1))
    kind = rng.choice(["static", "static", "move", "recolor"])
    end_x = end_color = None
    if kind == "move":
        end_x = float(np.clip(slot[0] + rng.choice([-0.12, 0.12]), 0.15, 0.85))
    elif kind == "recolor":
        end_color = str(rng.choice([c for c in COLORS if c != color]))
    return Event(shape=shape, color=color, start_s=start, end_s=end, x=slot[0], y=slot[1], size=size,
                 end_x=end_x, end_color=end_color)


def random_video_spec(
    rng: np.random.Generator,
    *,
    duration_range: tuple[float, float] = (5.0, 60.0),
    fps_range: tuple[int, int] = (10, 30),
    resolutions: tuple[tuple[int, int], ...] = RESOLUTIONS,
    max_events: int = 3,
    min_event_s: float = 1.0,
    looks: tuple[str, ...] | None = None,
) -> VideoSpec:
    """Draw a varied spec (length, frame rate, size, background, 1..``max_events`` events).

    Each event has a distinct (shape, colour) so questions about it are unambiguous, and its
    own screen region so shapes never occlude each other. Nothing is encoded: pass the spec to
    :func:`encode_spec`.

    With ``looks`` (families of :mod:`lita_serve.data.looks`) the video gets a random
    :class:`Look` from those families, its shapes vary in size and (slightly) in position, and
    only colours that stand out against the look's background colours are drawn.
    """
    duration = float(np.round(rng.uniform(*duration_range), 1))
    fps = int(rng.integers(fps_range[0], fps_range[1] + 1))
    width, height = resolutions[int(rng.integers(len(resolutions)))]
    look = random_look(rng, looks) if looks is not None else None
    num_events = int(rng.integers(1, min(max_events, len(_SLOTS)) + 1))
    names = [(s, c) for s in SHAPES for c in COLORS]
    if look is not None:
        standing_out = [(s, c) for s, c in names if look.contrasts_with(COLORS[c])]
        names = standing_out if len(standing_out) >= num_events else names
    picks = rng.choice(len(names), size=num_events, replace=False)
    slots = rng.permutation(len(_SLOTS))[:num_events]
    events = [_random_event(rng, duration, names[p], _SLOTS[s], min_event_s) if look is None
              else _random_look_event(rng, duration, names[p], _SLOTS[s], min_event_s, look)
              for p, s in zip(picks, slots)]
    events.sort(key=lambda e: (e.start_s, e.end_s))
    background = str(rng.choice(BACKGROUNDS)) if look is None else look.family
    return VideoSpec(duration_s=duration, fps=fps, width=width, height=height, events=events,
                     background=background, seed=int(rng.integers(2**31)), look=look)


SHAPE_SIZE_RANGE = (0.09, 0.17)  # radius / shorter side, for videos with a look
SLOT_JITTER = 0.04  # +- fraction of the frame a slot's centre moves, for videos with a look


def _random_look_event(rng: np.random.Generator, duration_s: float, name: tuple[str, str], slot: tuple[float, float],
                       min_event_s: float, look: Look) -> Event:
    """:func:`_random_event` for a video with ``look``: a varied size, a jittered slot, and no
    colour change into a colour that does not stand out against the background."""
    jitter = rng.uniform(-SLOT_JITTER, SLOT_JITTER, 2)
    slot = (float(slot[0] + jitter[0]), float(slot[1] + jitter[1]))
    event = _random_event(rng, duration_s, name, slot, min_event_s, float(rng.uniform(*SHAPE_SIZE_RANGE)))
    if event.end_color is not None and not look.contrasts_with(COLORS[event.end_color]):
        event = dataclasses.replace(event, end_color=None)
    return event


def questions_for(spec: VideoSpec) -> list[dict]:
    """Question/answer pairs with exact answers in seconds.

    * ``{"task": "event_localization", "question": "When does the red circle appear?",
      "answer": (start_s, end_s), "event": Event}`` for each event;
    * ``{"task": "dense_captioning", "question": "Describe the video with timestamps.",
      "answer": [(start_s, end_s, caption), ...]}`` ordered by start time.
    """
    events = sorted(spec.events, key=lambda e: (e.start_s, e.end_s))
    out: list[dict] = [
        {"task": "event_localization", "question": f"When does the {e.name} appear?", "answer": (e.start_s, e.end_s),
         "event": e}
        for e in events
    ]
    out.append({
        "task": "dense_captioning",
        "question": "Describe the video with timestamps.",
        "answer": [(e.start_s, e.end_s, e.caption) for e in events],
    })
    return out
