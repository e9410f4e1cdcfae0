"""CLIP ViT vision tower in plain PyTorch.

The module tree mirrors ``transformers.CLIPVisionModel`` without its leading ``vision_model.``
prefix, so a released tower (e.g. ``openai/clip-vit-large-patch14``) loads by stripping that
prefix from its state dict. Only the layers up to ``select_layer`` run: LLaVA/LITA take the
penultimate layer's hidden states (``hidden_states[-2]``, where ``hidden_states[0]`` is the
embedding output) and drop the CLS token, so the last layer and ``post_layernorm`` are held
for checkpoint compatibility but never computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lita_serve.config import VisionConfig
from lita_serve.errors import InvalidInputError


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's activation: ``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


def num_layers_to_run(num_hidden_layers: int, select_layer: int) -> int:
    """How many encoder layers produce ``hidden_states[select_layer]``.

    ``hidden_states`` has ``num_hidden_layers + 1`` entries (embedding output first), so
    index ``-2`` of a 24-layer tower is the output of layer 23.
    """
    total = num_hidden_layers + 1
    index = select_layer + total if select_layer < 0 else select_layer
    if not 0 <= index < total:
        raise ValueError(f"select_layer {select_layer} is out of range for {num_hidden_layers} layers")
    return index


class CLIPVisionEmbeddings(nn.Module):
    """Patchify + CLS token + learned absolute position embeddings."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.image_size = cfg.image_size
        self.class_embedding = nn.Parameter(torch.randn(cfg.hidden_size) * cfg.hidden_size**-0.5)
        self.patch_embedding = nn.Conv2d(3, cfg.hidden_size, kernel_size=cfg.patch_size,
                                         stride=cfg.patch_size, bias=False)
        # No position_ids buffer: a meta-built module loaded with assign=True must have no
        # tensors that the checkpoint does not provide.
        self.position_embedding = nn.Embedding(cfg.num_patches + 1, cfg.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # pixels: [B, 3, S, S] -> patches: [B, P, H]
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)  # [B, 1, H]
        x = torch.cat([cls, patches], dim=1)  # [B, P + 1, H]
        return x + self.position_embedding.weight.unsqueeze(0)


class CLIPAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (HF key names)."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"hidden_size {cfg.hidden_size} is not divisible by "
                             f"num_attention_heads {cfg.num_attention_heads}")
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # [B, N, H] -> [B, heads, N, head_dim]
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, head_dim], scale 1/sqrt(d)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h))


class CLIPMLP(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)); x + mlp(ln2(x))."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.self_attn = CLIPAttention(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = CLIPMLP(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))


class CLIPVisionTower(nn.Module):
    """CLIP ViT returning the ``select_layer`` patch features (CLS dropped).

    ``forward(pixels: [B, 3, S, S]) -> [B, grid*grid, hidden]``.
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_run_layers = num_layers_to_run(cfg.num_hidden_layers, cfg.select_layer)
        self.embeddings = CLIPVisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)  # HF's spelling
        self.encoder = CLIPEncoder(cfg)
        # Held so released checkpoints load strictly; the "patch" features never use it.
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        size = self.cfg.image_size
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise InvalidInputError(f"pixels must be [B, 3, {size}, {size}], got {tuple(pixels.shape)}")
        x = self.pre_layrnorm(self.embeddings(pixels.to(self.embeddings.patch_embedding.weight.dtype)))
        for layer in self.encoder.layers[: self.num_run_layers]:
            x = layer(x)  # [B, P + 1, H]
        return x[:, 1:]  # drop CLS -> [B, P, H]
