"""LITA's visual-token layouts: how per-frame projected patch tokens become the LLM's visual tokens.

Input everywhere: ``tokens: [B, T, S, D]`` -- T frames, S = grid*grid patches per frame, D the
LLM width. The tokens are ALREADY PROJECTED: the references run LLaVA's ``encode_images``
(vision tower, then ``mm_projector``) on every frame and pool afterwards -- NVlabs/LITA
``lita/model/lita_arch.py`` ``videos_to_tokens`` and NeMo's ``encode_vision_x`` (which ends with
the projector adapter) followed by ``LitaWordEmbeddingMixin.add_lita_layer``. With a
non-linear projector (``mlp2x_gelu``) pooling first would give different tokens.

Layouts (checked against NVlabs/LITA ``lita_arch.py``; NeMo
``nemo/collections/multimodal/models/multimodal_llm/neva/...`` ``add_lita_layer``; and
``nemo/export/multimodal/run.py`` ``preprocess_lita_visual`` for the TRT-LLM runtime):

* ``temporal``: mean over patches -> T tokens.
* ``spatial``: mean over frames -> S tokens.
* ``temporal_spatial``: [T temporal, S spatial].
* ``temporal_spatial_pool`` (LITA 1.0): [T temporal, slow], where slow takes
  ``num_spatial_frames`` frames at ``round(linspace(0, T-1, n))`` and average-pools each on its
  grid with kernel ``spatial_pool`` (16x16 -> 8x8), flattened frame-major then row-major.
  The reference hard-codes the 16x16 grid (LITA) or takes sqrt(S) (NeMo); here it is the
  config's grid.
* ``spatial_pool``: the slow tokens only.
* ``temporal_all_resolution`` (LITA 1.5 in NeMo): ``num_spatial_frames`` frames (NeMo's
  ``lita.sample_frames``) picked the same way, kept at full resolution (n*S tokens, frame-major),
  followed by the T temporal tokens: [n*S image, T video]. NeMo's prompt wraps each image frame
  in <im_start>/<im_end> and the video block in <vid_start>/<vid_end>; ``visual_token_segments``
  describes the blocks so the prompt builder can do that. As in NeMo's training code, frames
  repeat when T < n (the TRT-LLM runtime instead clamps n to T); the count stays static here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lita_serve.config import VIDEO_ARCHS, LitaConfig, LitaOptions

# Block names used by ``visual_token_segments``.
TEMPORAL, SPATIAL, IMAGE, VIDEO = "temporal", "spatial", "image", "video"


def select_frame_indices(num_frames: int, count: int) -> list[int]:
    """Evenly spaced frame indices, exactly as the references: round(linspace(0, T-1, count))."""
    return [int(i) for i in np.round(np.linspace(0, num_frames - 1, count)).astype(int)]


def temporal_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """[B, T, S, D] -> [B, T, D]: each frame's patches averaged."""
    return tokens.mean(dim=2)


def spatial_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """[B, T, S, D] -> [B, S, D]: each patch averaged over frames."""
    return tokens.mean(dim=1)


def selected_frames(tokens: torch.Tensor, count: int) -> torch.Tensor:
    """[B, T, S, D] -> [B, count, S, D] at ``select_frame_indices(T, count)``."""
    index = torch.tensor(select_frame_indices(tokens.shape[1], count), device=tokens.device)
    return tokens.index_select(1, index)


def pooled_spatial_tokens(tokens: torch.Tensor, grid: int, count: int, pool: int) -> torch.Tensor:
    """LITA's slow tokens: [B, T, S, D] -> [B, count * (grid // pool) ** 2, D]."""
    b, _, s, d = tokens.shape
    if s != grid * grid:
        raise ValueError(f"{s} patches per frame do not form a {grid}x{grid} grid")
    frames = selected_frames(tokens, count)  # [B, n, S, D]
    maps = frames.reshape(b * count, grid, grid, d).permute(0, 3, 1, 2)  # [B*n, D, g, g] (row-major)
    pooled = F.avg_pool2d(maps, kernel_size=pool)  # [B*n, D, g/p, g/p]
    return pooled.permute(0, 2, 3, 1).reshape(b, -1, d)  # [B, n*(g/p)^2, D], frame then row then col


def all_resolution_image_tokens(tokens: torch.Tensor, count: int) -> torch.Tensor:
    """LITA 1.5's image tokens: [B, T, S, D] -> [B, count * S, D], full resolution, frame-major."""
    frames = selected_frames(tokens, count)
    return frames.reshape(frames.shape[0], -1, frames.shape[-1])


def _check_arch(arch: str) -> None:
    if arch not in VIDEO_ARCHS:
        raise ValueError(f"unknown video_arch {arch!r}; known: {list(VIDEO_ARCHS)}")


def pool_visual_tokens(tokens: torch.Tensor, opts: LitaOptions, grid: int) -> torch.Tensor:
    """Apply ``opts.video_arch`` to projected frame tokens: [B, T, S, D] -> [B, N_vis, D]."""
    arch = opts.video_arch
    _check_arch(arch)
    if arch == "temporal":
        return temporal_tokens(tokens)
    if arch == "spatial":
        return spatial_tokens(tokens)
    if arch == "temporal_spatial":
        return torch.cat([temporal_tokens(tokens), spatial_tokens(tokens)], dim=1)
    if arch == "temporal_all_resolution":
        image = all_resolution_image_tokens(tokens, opts.num_spatial_frames)
        return torch.cat([image, temporal_tokens(tokens)], dim=1)
    slow = pooled_spatial_tokens(tokens, grid, opts.num_spatial_frames, opts.spatial_pool)
    if arch == "spatial_pool":
        return slow
    return torch.cat([temporal_tokens(tokens), slow], dim=1)  # temporal_spatial_pool


def visual_token_segments(cfg: LitaConfig, num_frames: int | None = None) -> list[tuple[str, int]]:
    """The ordered blocks of the visual tokens as (kind, count); their counts sum to N_vis.

    ``num_frames`` defaults to ``cfg.lita.sample_frames``. For ``temporal_all_resolution`` there
    is one ``image`` block per selected frame, then one ``video`` block.
    """
    opts = cfg.lita
    _check_arch(opts.video_arch)
    t = opts.sample_frames if num_frames is None else num_frames
    s = cfg.vision.num_patches
    n = opts.num_spatial_frames
    slow = n * (cfg.vision.grid // opts.spatial_pool) ** 2
    layouts: dict[str, list[tuple[str, int]]] = {
        "temporal": [(TEMPORAL, t)],
        "spatial": [(SPATIAL, s)],
        "temporal_spatial": [(TEMPORAL, t), (SPATIAL, s)],
        "temporal_spatial_pool": [(TEMPORAL, t), (SPATIAL, slow)],
        "spatial_pool": [(SPATIAL, slow)],
        "temporal_all_resolution": [(IMAGE, s)] * n + [(VIDEO, t)],
    }
    return layouts[opts.video_arch]


def num_visual_tokens(cfg: LitaConfig, num_frames: int | None = None) -> int:
    """Number of visual tokens the encoder emits for ``cfg`` (356 for LITA 1.0 at 100 frames, 224 px)."""
    return sum(count for _, count in visual_token_segments(cfg, num_frames))
