"""LLaVA's ``mm_projector``: maps CLIP patch features to the LLM's embedding width.

State-dict keys match LLaVA/LITA checkpoints (``model.mm_projector.*`` with the prefix
stripped): ``linear`` -> ``weight``/``bias``; ``mlp2x_gelu`` -> ``0.*`` and ``2.*``
(Linear, GELU, Linear as an ``nn.Sequential``).
"""

from __future__ import annotations

from torch import nn

from lita_serve.config import PROJECTOR_TYPES


def build_projector(projector_type: str, vision_hidden: int, text_hidden: int) -> nn.Module:
    """Build the projector named by ``projector_type`` (one of ``config.PROJECTOR_TYPES``)."""
    if projector_type == "linear":
        return nn.Linear(vision_hidden, text_hidden)
    if projector_type == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(vision_hidden, text_hidden), nn.GELU(), nn.Linear(text_hidden, text_hidden))
    raise ValueError(f"unknown projector_type {projector_type!r}; known: {list(PROJECTOR_TYPES)}")
