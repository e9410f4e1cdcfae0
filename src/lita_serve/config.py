"""The one source of truth for every LITA constant.

A :class:`LitaConfig` describes one served model: the vision tower, the projector, LITA's
visual-token layout, the LLaMA decoder and the time tokens. The build step writes it as
``lita.json`` at the root of a model repository; the Triton models and the in-process pipeline
read it from there instead of repeating numbers (the client needs none of them: it reads the
tensor names of :mod:`lita_client.contract`).

:class:`ServeLimits` holds the server-side limits (video bytes, duration, new tokens, ...).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# LITA's reference defaults (NVlabs/LITA `lita/arguments.py`, NeMo `lita` config block).
DEFAULT_NUM_TIME_TOKENS = 100
DEFAULT_SAMPLE_FRAMES = 100
DEFAULT_SPATIAL_FRAMES = 4  # frames kept for the slow/spatial tokens (pool_size ** 2 in the reference)

VIDEO_ARCHS = ("temporal", "spatial", "temporal_spatial", "temporal_spatial_pool", "spatial_pool", "temporal_all_resolution")
VISUAL_TOKEN_FORMATS = ("v1", "im_vid_start_end")
PROJECTOR_TYPES = ("linear", "mlp2x_gelu")
# How a frame becomes a square: "square" resizes the shortest side and crops the centre (CLIP's
# processor); "pad" pads to a square with the image mean colour first (LLaVA's expand2square).
IMAGE_ASPECT_RATIOS = ("square", "pad")
# Prompt construction (see lita_serve.text.conversation): template names, where the video goes
# relative to the question, and how the text around the video is tokenized.
CONV_TEMPLATES = ("v1", "llava_v1")
MEDIA_PLACEMENTS = ("left", "right")
PROMPT_TOKENIZATIONS = ("per_chunk", "whole")


@dataclass
class VisionConfig:
    """CLIP ViT vision tower (``CLIPVisionConfig`` field names)."""

    image_size: int = 224
    patch_size: int = 14
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    layer_norm_eps: float = 1e-5
    select_layer: int = -2  # LLaVA's mm_vision_select_layer: penultimate layer, CLS dropped
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    @property
    def grid(self) -> int:
        """Patches per side: 224/14 = 16, 336/14 = 24."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid


@dataclass
class TextConfig:
    """LLaMA decoder (``LlamaConfig`` field names)."""

    vocab_size: int = 32000
    hidden_size: int = 5120
    intermediate_size: int = 13824
    num_hidden_layers: int = 40
    num_attention_heads: int = 40
    num_key_value_heads: int = 40
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0


@dataclass
class LitaOptions:
    """LITA's own options (NeMo's ``mm_cfg.lita`` block / the HF checkpoint's config)."""

    lita_version: str = "1.0"  # tokenizer token order: "1.0" or "1.5"
    video_arch: str = "temporal_spatial_pool"
    visual_token_format: str = "v1"
    sample_frames: int = DEFAULT_SAMPLE_FRAMES
    num_spatial_frames: int = DEFAULT_SPATIAL_FRAMES
    spatial_pool: int = 2  # avg-pool kernel for the slow tokens: 16x16 -> 8x8
    num_time_tokens: int = DEFAULT_NUM_TIME_TOKENS
    projector_type: str = "linear"
    image_aspect_ratio: str = "square"  # one of IMAGE_ASPECT_RATIOS; "pad" for LITA 1.5 (NeMo's LITA config)


@dataclass
class PromptOptions:
    """How a question becomes the decoder's prompt; chosen at build, stored in ``lita.json``.

    The defaults are LITA's reference prompt (its training template, the video left of the
    question on its own line, BOS first, each text chunk around the video tokenized on its own as
    LLaVA's ``tokenizer_image_token`` does). NeMo's NeVA/LITA inference corresponds to
    ``media_separator=""``, ``add_bos=False``, ``tokenization="whole"`` (see
    :mod:`lita_serve.text.conversation`). A ``lita.json`` written before these options existed loads
    with the defaults, which is the prompt it was served with.
    """

    conv_template: str = "v1"  # "v1" (LITA's training template) | "llava_v1" (LITA's eval and CLI)
    insert_media_token: str = "left"  # "left": video before the question; "right": after it
    media_separator: str = "\n"  # text between the video and the question ("left") or after it ("right")
    add_bos: bool = True  # BOS id first
    tokenization: str = "per_chunk"  # "per_chunk" | "whole"


@dataclass
class ServeLimits:
    """Server-side limits, enforced by the Triton models with clear per-request errors."""

    max_video_bytes: int = 256 * 1024 * 1024
    max_duration_s: float = 4 * 3600.0
    max_frames: int = 256
    max_new_tokens: int = 512
    default_max_tokens: int = 128
    max_question_chars: int = 4000
    max_prompt_tokens: int = 2048
    max_concurrent_requests: int = 64
    # Visual-feature cache shared by the preprocess and encoder processes (LRU by bytes; 0 disables).
    feature_cache_bytes: int = 1 << 30
    # Where its entries live; empty: a folder per repository under $XDG_RUNTIME_DIR/lita, else
    # under <temporary directory>/lita-<uid> (lita_serve.feature_cache.default_cache_dir).
    feature_cache_dir: str = ""


@dataclass
class LitaConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    lita: LitaOptions = field(default_factory=LitaOptions)
    limits: ServeLimits = field(default_factory=ServeLimits)
    name: str = "lita"
    prompt: PromptOptions = field(default_factory=PromptOptions)

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LitaConfig":
        def build(kind, data):
            known = {f.name for f in dataclasses.fields(kind)}
            unknown = set(data) - known
            if unknown:
                raise ValueError(f"unknown {kind.__name__} fields: {sorted(unknown)}")
            values = dict(data)
            for f in dataclasses.fields(kind):
                if f.name in values and isinstance(values[f.name], list):
                    values[f.name] = tuple(values[f.name])
            return kind(**values)

        return cls(
            vision=build(VisionConfig, d.get("vision", {})),
            text=build(TextConfig, d.get("text", {})),
            lita=build(LitaOptions, d.get("lita", {})),
            limits=build(ServeLimits, d.get("limits", {})),
            name=d.get("name", "lita"),
            prompt=build(PromptOptions, d.get("prompt", {})),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "LitaConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    # --- presets -------------------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str) -> "LitaConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        return cls.from_dict(PRESETS[name])


PRESETS: dict[str, dict[str, Any]] = {
    # LITA 1.0: Vicuna v1.3 13B + CLIP ViT-L/14 (224 px), linear projector.
    "lita-13b": {
        "name": "lita-13b",
        "lita": {"lita_version": "1.0", "projector_type": "linear"},
    },
    # LITA 1.5: LLaVA-1.5 13B (Vicuna v1.5) + CLIP ViT-L/14-336, mlp2x_gelu projector.
    "lita-1.5-13b": {
        "name": "lita-1.5-13b",
        "vision": {"image_size": 336},
        "lita": {"lita_version": "1.5", "projector_type": "mlp2x_gelu", "video_arch": "temporal_all_resolution",
                 "visual_token_format": "im_vid_start_end", "image_aspect_ratio": "pad"},
    },
    # A small LITA-architecture model for CPU tests and the demo.
    "tiny": {
        "name": "lita-tiny",
        "vision": {"image_size": 224, "patch_size": 14, "hidden_size": 64, "intermediate_size": 128,
                   "num_hidden_layers": 3, "num_attention_heads": 4},
        "text": {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 1024},
        "lita": {"lita_version": "1.0", "projector_type": "linear"},
    },
    # The CPU-trained demo (``lita train-demo``): 56 px frames (4x4 patches), 100 frames (one per
    # time token), 100 time tokens.
    "demo": {
        "name": "lita-demo",
        "vision": {"image_size": 56, "patch_size": 14, "hidden_size": 64, "intermediate_size": 128,
                   "num_hidden_layers": 3, "num_attention_heads": 4},
        "text": {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
                 "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 1024},
        "lita": {"lita_version": "1.0", "projector_type": "linear", "sample_frames": 100},
    },
}
