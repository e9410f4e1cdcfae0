"""Visual side of LITA: CLIP vision tower, projector, and LITA's visual-token layouts."""

from lita_serve.encode.clip import CLIPVisionTower
from lita_serve.encode.encoder import VisualEncoder
from lita_serve.encode.projector import build_projector
from lita_serve.encode.visual_tokens import (
    num_visual_tokens,
    pool_visual_tokens,
    select_frame_indices,
    visual_token_segments,
)

__all__ = [
    "CLIPVisionTower",
    "VisualEncoder",
    "build_projector",
    "num_visual_tokens",
    "pool_visual_tokens",
    "select_frame_indices",
    "visual_token_segments",
]
