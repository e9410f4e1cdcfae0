"""LITA's frame sampling and CLIP's image transform, as small pure functions.

Sampling follows NVlabs/LITA ``lita/utils.py::load_video``: ``F`` indices spread uniformly over
the whole clip with ``np.round(np.linspace(0, n - 1, F))`` (so a clip shorter than ``F`` frames
repeats frames), and the clip length is ``n / fps``.

The transform is CLIP's (``CLIPImageProcessor``): resize the shortest side to ``S`` with bicubic
filtering, center-crop ``S x S``, scale to [0, 1] and normalise per channel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def frame_indices(num_source_frames: int, num_frames: int) -> np.ndarray:
    """``num_frames`` int64 indices uniform over ``[0, num_source_frames - 1]``, rounded (LITA)."""
    return np.round(np.linspace(0, num_source_frames - 1, num_frames)).astype(np.int64)


def resize_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after scaling the shortest side to ``size``, aspect kept.

    The long side is truncated like ``transformers``' ``get_resize_output_image_size``.
    """
    if width <= height:
        return size, max(size, int(size * height / width))
    return max(size, int(size * width / height)), size


def fit_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after scaling the longest side to ``size``, aspect kept (at least 1 pixel):
    the picture inside LLaVA's ``expand2square`` square once that square is resized to ``size``."""
    if width >= height:
        return size, max(1, min(size, round(size * height / width)))
    return max(1, min(size, round(size * width / height))), size


def pad_color(mean: Sequence[float]) -> tuple[int, int, int]:
    """LLaVA's padding colour: ``tuple(int(x * 255) for x in image_processor.image_mean)``."""
    return tuple(int(x * 255) for x in mean)  # type: ignore[return-value]


def pad_chw(frames: np.ndarray, size: int, color: Sequence[int]) -> np.ndarray:
    """Centre uint8 ``[F, H, W, 3]`` frames (``H, W <= size``) on ``size x size`` squares of ``color``:
    channel-first uint8 ``[F, 3, size, size]`` (LLaVA's expand2square, after the resize)."""
    count, height, width, _ = frames.shape
    out = np.empty((count, 3, size, size), np.uint8)
    out[:] = np.asarray(color, np.uint8).reshape(1, 3, 1, 1)
    top, left = (size - height) // 2, (size - width) // 2
    out[:, :, top:top + height, left:left + width] = frames.transpose(0, 3, 1, 2)
    return out


def center_crop_offsets(width: int, height: int, size: int) -> tuple[int, int]:
    """(top, left) of the centred ``size x size`` window (``transformers``' ``center_crop``)."""
    return (height - size) // 2, (width - size) // 2


def normalization_affine(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset), float32 ``[1, 3, 1, 1]``, with ``x * scale - offset == (x / 255 - mean) / std``.

    Folding the /255 rescale into the normalisation makes it two in-place passes over the output.
    """
    mean64 = np.asarray(mean, np.float64)
    std64 = np.asarray(std, np.float64)
    scale = (1.0 / (255.0 * std64)).astype(np.float32).reshape(1, 3, 1, 1)
    offset = (mean64 / std64).astype(np.float32).reshape(1, 3, 1, 1)
    return scale, offset


def crop_and_normalize(frames: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Center-crop uint8 ``[F, H, W, 3]`` frames and return CLIP-normalised float32 ``[F, 3, size, size]``.

    ``frames`` must already have its shortest side equal to ``size``. The channel-first uint8
    copy is cheap (1 byte/value) and makes the float passes contiguous, which is several times
    faster than converting straight from the strided crop.
    """
    return normalize_chw(crop_chw(frames, size), mean, std)


def crop_chw(frames: np.ndarray, size: int) -> np.ndarray:
    """Center-crop uint8 ``[F, H, W, 3]`` frames to channel-first uint8 ``[F, 3, size, size]``.

    A quarter of the bytes of the normalised floats: what the preprocess step sends on to the
    encoder, which normalises (:func:`normalize_chw` or its torch twin) where it runs.
    """
    _, height, width, _ = frames.shape
    top, left = center_crop_offsets(width, height, size)
    crop = frames[:, top:top + size, left:left + size, :]  # view [F, S, S, 3]
    return np.ascontiguousarray(crop.transpose(0, 3, 1, 2))  # uint8 [F, 3, S, S]


def normalize_chw(chw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 ``[F, 3, S, S]`` -> CLIP-normalised float32 ``[F, 3, S, S]`` (two passes, no temporaries)."""
    scale, offset = normalization_affine(mean, std)
    out = np.empty(chw.shape, np.float32)
    np.multiply(chw, scale, out=out)
    out -= offset
    return out
