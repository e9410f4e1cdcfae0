"""How a player shows a decoded frame: the display matrix (rotation, flips) and the pixel shape.

Phones store portrait video as landscape frames plus a display matrix that says "rotate 90°";
anamorphic video stores fewer columns than it shows (sample aspect ratio > 1). A player applies
both, so the model must see frames the same way. The matrix follows ffmpeg's convention
(``libavutil/display.h``): a stored pixel ``(p, q)`` is shown at ``(a*p + c*q, b*p + d*q)``
(plus a translation) for the 16.16 fixed-point entries ``[a, b, _, c, d, _, ...]``. Only
quarter turns and flips are applied; other angles keep the nearest axis-aligned orientation.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from lita_serve.preprocess.frame_sampling import fit_dims, resize_dims


def _sign(value: int) -> int:
    return 0 if abs(value) < 1 << 15 else (1 if value > 0 else -1)  # |entry| < 0.5 counts as 0


@dataclass(frozen=True)
class Display:
    """Orientation and pixel shape of a stream's frames."""

    transpose: bool = False  # rows and columns swap (a quarter turn)
    flip_rows: bool = False  # applied after the transpose
    flip_cols: bool = False
    sample_aspect: Fraction = Fraction(1)  # width of a stored pixel over its height

    @classmethod
    def from_matrix(cls, matrix: Sequence[int] | None, sample_aspect: Fraction | None = None) -> "Display":
        """The orientation a 3x3 display matrix (9 int32, row-major) describes; None: as stored."""
        sar = Fraction(sample_aspect) if sample_aspect else Fraction(1)
        if matrix is None or len(matrix) < 5:
            return cls(sample_aspect=sar)
        a, b, c, d = (_sign(int(matrix[i])) for i in (0, 1, 3, 4))
        if a == 0 and d == 0 and b and c:  # displayed column from the stored row: a quarter turn
            return cls(True, b < 0, c < 0, sar)
        return cls(False, d < 0, a < 0, sar)

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols) and self.sample_aspect == 1

    def shown_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) a player shows for stored ``width x height`` frames."""
        shown_width = max(1, round(width * self.sample_aspect))
        return (height, shown_width) if self.transpose else (shown_width, height)

    def stored_target(self, width: int, height: int, image_size: int, fit: bool = False) -> tuple[int, int]:
        """(width, height) to scale stored frames to, so that once oriented their shortest side is
        ``image_size`` with the shown aspect ratio (``fit``: their longest side, for padding)."""
        target_w, target_h = (fit_dims if fit else resize_dims)(*self.shown_size(width, height), image_size)
        return (target_h, target_w) if self.transpose else (target_w, target_h)

    def orient(self, rgb: np.ndarray) -> np.ndarray:
        """Stored-orientation ``[H, W, 3]`` pixels -> as shown (a view when possible)."""
        out = rgb.transpose(1, 0, 2) if self.transpose else rgb
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return out


def frame_display(frame: Any, sample_aspect: Fraction | None) -> Display:
    """The :class:`Display` of a decoded PyAV frame (its DISPLAYMATRIX side data, if any)."""
    matrix = None
    for side in frame.side_data:
        if getattr(side.type, "name", "") == "DISPLAYMATRIX":
            matrix = np.frombuffer(bytes(side), np.int32)
            break
    return Display.from_matrix(matrix, sample_aspect)
