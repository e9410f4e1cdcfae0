"""The whole LITA model: visual encoder + LLaMA decoder, sharing one :class:`LitaConfig`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lita_serve.config import LitaConfig
from lita_serve.llm.llama import LlamaDecoder
from lita_serve.vision_encoder.encoder import VisualEncoder
from lita_serve.errors import InvalidInputError


DEMO_INIT_STD = 0.02  # LlamaConfig.initializer_range: keeps random logits in a sane range


def randomize_(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """N(0, 0.02) weights, unit norm scales, zero biases, in place: finite activations in fp16 too.

    A CPU ``generator`` draws on the CPU, so the draw is the same whatever the module's device; a
    CUDA one draws on its GPU (fast, for 13B-sized dummy weights).
    """
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif "norm" in name:
                param.fill_(1.0)
            elif generator is not None and generator.device.type == "cpu":
                param.copy_(torch.randn(param.shape, generator=generator) * DEMO_INIT_STD)
            else:
                param.normal_(0.0, DEMO_INIT_STD, generator=generator)
    return module


class LitaModel(nn.Module):
    """``encoder`` turns frames into visual tokens; ``decoder`` consumes them as a prompt table."""

    def __init__(self, config: LitaConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VisualEncoder(config)
        self.decoder = LlamaDecoder(config.text)

    @classmethod
    def build(cls, config: LitaConfig, device: torch.device | str = "cpu",
              dtype: torch.dtype | None = None) -> "LitaModel":
        """Construct on ``device`` (``"meta"`` to fill later with ``load_state_dict(assign=True)``)."""
        with torch.device(device):
            model = cls(config)
        if dtype is not None:
            model = model.to(dtype=dtype)
        return model.eval()

    @torch.inference_mode()
    def encode_video(self, frames: Tensor) -> Tensor:
        """frames [F,3,S,S] -> [N_vis,H], or [B,F,3,S,S] -> [B,N_vis,H] (normalised pixels)."""
        if frames.dim() == 4:
            return self.encode_video(frames[None])[0]
        if frames.dim() != 5:
            raise InvalidInputError(f"frames must be [F,3,S,S] or [B,F,3,S,S], got {tuple(frames.shape)}")
        weight = next(self.encoder.parameters())
        return self.encoder(frames.to(device=weight.device, dtype=weight.dtype))
