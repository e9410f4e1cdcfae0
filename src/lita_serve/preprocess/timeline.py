"""A video's presentation timeline and LITA's frame sampling by time.

LITA's time tokens mean evenly spaced *times*: ``<tK>`` is ``K / (N - 1)`` of the video's
duration. Its reference loader picks ``F`` frame *indices* ``round(linspace(0, n - 1, F))``,
which is the same thing only when frames are evenly spaced. Phones record variable frame rates,
so here the ``F`` sample points are evenly spaced times over the presentation timeline, from
the first frame's timestamp to the last frame's, and each takes the frame nearest to it in time
(an exact tie goes to the even display index, as ``numpy.round`` does). On a constant-frame-rate
video this is exactly LITA's index rule; the arithmetic is done on the stream's integer
timestamps with exact fractions, so no rounding error can move a sample to a neighbour.

The duration the time tokens refer to is the same timeline's length: from the first frame's
timestamp to the end of the last frame (its own duration, else the typical frame spacing). A
non-zero start time (MPEG-TS, offset MKV/MP4 files) is subtracted: times are seconds from the
first frame shown.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Timeline:
    """When each frame is shown, in display order, in the stream's integer time units."""

    pts: tuple[int, ...]  # ascending presentation timestamps, one per frame
    time_base: Fraction  # seconds per unit
    end: int  # when the last frame stops being shown, same units

    @classmethod
    def from_timestamps(cls, pts: Sequence[int], time_base: Fraction, last_duration: int | None = None,
                        fallback_spacing: int | None = None) -> "Timeline":
        """The timeline of frames with presentation timestamps ``pts`` (any order, distinct).

        ``last_duration`` is how long the last frame is shown (its packet's duration); when it
        is unknown or not positive, the median spacing of the frames is used, and for a single
        frame ``fallback_spacing`` (one frame interval at the stream's nominal rate).
        """
        ordered = tuple(sorted(int(p) for p in pts))
        if not ordered:
            raise ValueError("a timeline needs at least one frame")
        if len(set(ordered)) != len(ordered):
            raise ValueError("frame timestamps must be distinct")
        if last_duration is None or last_duration <= 0:
            gaps = np.diff(np.asarray(ordered, np.int64))
            last_duration = int(np.median(gaps)) if gaps.size else (fallback_spacing or 0)
        return cls(ordered, Fraction(time_base), ordered[-1] + max(int(last_duration), 0))

    @classmethod
    def constant_rate(cls, num_frames: int, fps: float) -> "Timeline":
        """Frame ``i`` at ``i / fps`` (for streams without usable timestamps); a rate that is not a
        positive finite number gives a timeline of zero duration, which callers reject."""
        if num_frames < 1:
            raise ValueError("a timeline needs at least one frame")
        usable = math.isfinite(fps) and fps > 0
        time_base = 1 / Fraction(fps).limit_denominator(1_000_000) if usable else Fraction(0)
        return cls(tuple(range(num_frames)), time_base, num_frames)

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def duration(self) -> float:
        """Seconds from the first frame's timestamp to the end of the last frame."""
        return float((self.end - self.pts[0]) * self.time_base)

    def seconds(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """float64 seconds from the first frame of the frames at display ``indices`` (default: all)."""
        pts = np.asarray(self.pts, np.int64)
        if indices is not None:
            pts = pts[np.asarray(indices, np.int64)]
        return (pts - self.pts[0]).astype(np.float64) * float(self.time_base)

    def sample(self, num_samples: int) -> np.ndarray:
        """Display indices (int64 ``[num_samples]``) of the frames nearest to ``num_samples`` times
        evenly spaced from the first frame to the last (see the module docstring)."""
        first, last = self.pts[0], self.pts[-1]
        if num_samples == 1 or first == last:
            # LITA's rule with one sample takes the first frame; one frame is every sample.
            return np.zeros(num_samples, np.int64)
        out = np.empty(num_samples, np.int64)
        for k in range(num_samples):
            target = first + Fraction(k * (last - first), num_samples - 1)
            i = bisect.bisect_right(self.pts, target) - 1  # the last frame at or before the target
            if i + 1 < len(self.pts):
                past = (target - self.pts[i]) * 2 - (self.pts[i + 1] - self.pts[i])  # sign: nearer which
                if past > 0 or (past == 0 and i % 2 == 1):
                    i += 1
            out[k] = i
        return out

    def spacing(self) -> tuple[float, float]:
        """(shortest, longest) gap between consecutive frames, seconds; (0, 0) for one frame."""
        if self.num_frames < 2:
            return 0.0, 0.0
        gaps = np.diff(np.asarray(self.pts, np.int64)) * float(self.time_base)
        return float(gaps.min()), float(gaps.max())
