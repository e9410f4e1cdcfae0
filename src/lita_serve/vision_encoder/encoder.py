"""The whole visual side of LITA: frames -> visual tokens in the LLM's embedding space."""

from __future__ import annotations

import torch
from torch import nn

from lita_serve.config import LitaConfig
from lita_serve.vision_encoder.clip import CLIPVisionTower
from lita_serve.vision_encoder.projector import build_projector
from lita_serve.vision_encoder.visual_tokens import pool_visual_tokens
from lita_serve.errors import InvalidInputError

DEFAULT_FRAME_CHUNK = 32  # frames per tower call; bounds activation memory, not a model constant


class VisualEncoder(nn.Module):
    """CLIP tower + ``mm_projector`` + LITA pooling.

    ``forward(frames: [B, F, 3, S, S]) -> [B, N_vis, text_hidden]`` where ``N_vis`` is
    ``num_visual_tokens(cfg, F)``. Frames go through the tower and the projector in chunks of
    ``frame_chunk``; pooling runs after the projector, as in the reference. The chunk loop
    depends only on shapes, so the forward traces/exports with static shapes.
    """

    def __init__(self, cfg: LitaConfig, frame_chunk: int = DEFAULT_FRAME_CHUNK) -> None:
        super().__init__()
        if frame_chunk < 1:
            raise ValueError(f"frame_chunk must be >= 1, got {frame_chunk}")
        self.cfg = cfg
        self.frame_chunk = frame_chunk
        self.vision_tower = CLIPVisionTower(cfg.vision)
        self.mm_projector = build_projector(cfg.lita.projector_type, cfg.vision.hidden_size, cfg.text.hidden_size)

    @classmethod
    def from_config(cls, cfg: LitaConfig, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None, frame_chunk: int = DEFAULT_FRAME_CHUNK) -> "VisualEncoder":
        """Build on ``device`` (``"meta"`` for a later ``load_state_dict(..., assign=True)``) in ``dtype``."""
        with torch.device(device if device is not None else "cpu"):
            model = cls(cfg, frame_chunk=frame_chunk)
        if dtype is not None:
            model = model.to(dtype=dtype)
        return model.eval()

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """LLaVA's ``encode_images`` in chunks: [N, 3, S, S] -> [N, grid*grid, text_hidden]."""
        chunks = torch.split(pixels, self.frame_chunk, dim=0)
        return torch.cat([self.mm_projector(self.vision_tower(c)) for c in chunks], dim=0)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        size = self.cfg.vision.image_size
        if frames.dim() != 5 or tuple(frames.shape[2:]) != (3, size, size):
            raise InvalidInputError(f"frames must be [B, F, 3, {size}, {size}], got {tuple(frames.shape)}")
        b, f = frames.shape[:2]
        tokens = self.encode_frames(frames.reshape(b * f, 3, size, size))  # [B*F, S, D]
        tokens = tokens.reshape(b, f, tokens.shape[1], tokens.shape[2])  # [B, F, S, D]
        return pool_visual_tokens(tokens, self.cfg.lita, self.cfg.vision.grid)  # [B, N_vis, D]
