"""``config.json`` of a released LITA/LLaVA checkpoint <-> :class:`LitaConfig`.

Key names follow NVlabs/LITA (``lita/train/train.py`` copies ``num_frames``, ``num_time_tokens``,
``input_type``, ``video_arch`` into the model config; ``time_token_ids`` comes from
``initialize_time_tokenizer``) and LLaVA (``mm_vision_tower``, ``mm_hidden_size``,
``mm_projector_type``, ``mm_vision_select_layer``, ``mm_vision_select_feature``,
``mm_use_im_start_end``). An absent option is an error unless the reference code reads it with a
documented default (``DOCUMENTED_DEFAULTS``); every default used is logged.

Keys written here beyond the reference ones (read back if present): ``lita_version``,
``visual_token_format``, ``num_spatial_frames``, ``spatial_pool`` and, for towers not named in
``KNOWN_VISION_TOWERS``, ``mm_vision_config`` (the tower's ``CLIPVisionConfig`` fields).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from lita_serve.config import (DEFAULT_SAMPLE_FRAMES, PROJECTOR_TYPES, VIDEO_ARCHS, VISUAL_TOKEN_FORMATS,
                               LitaConfig, LitaOptions, TextConfig, VisionConfig)
from lita_serve.errors import CheckpointError

log = logging.getLogger(__name__)

# Towers named by mm_vision_tower whose architecture is that of a preset.
KNOWN_VISION_TOWERS: dict[str, str] = {
    "openai/clip-vit-large-patch14": "lita-13b",
    "openai/clip-vit-large-patch14-336": "lita-1.5-13b",
}

REQUIRED_TEXT = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "max_position_embeddings")
# LlamaConfig's own defaults, equal to TextConfig's; num_key_value_heads defaults to num_attention_heads.
LLAMA_DEFAULTED = ("rms_norm_eps", "rope_theta", "bos_token_id", "eos_token_id", "pad_token_id")

# (key, default, where the reference reads it with that default)
DOCUMENTED_DEFAULTS: dict[str, tuple[Any, str]] = {
    "mm_projector_type": ("linear", "LLaVA build_vision_projector: getattr(config, 'mm_projector_type', 'linear')"),
    "mm_vision_select_layer": (-1, "LITA ModelArguments.mm_vision_select_layer"),
    "mm_vision_select_feature": ("patch", "LLaVA CLIPVisionTower: getattr(args, 'mm_vision_select_feature', 'patch')"),
    "mm_use_im_start_end": (False, "LITA builder: getattr(model.config, 'mm_use_im_start_end', False)"),
    "input_type": ("image", "LITA lita_arch.visual_to_tokens: getattr(config, 'input_type', 'image')"),
    "video_arch": ("temporal", "LITA lita_arch.videos_to_tokens: getattr(config, 'video_arch', 'temporal')"),
    "num_frames": (DEFAULT_SAMPLE_FRAMES, "LITA ModelArguments.num_frames"),
    "lita_version": ("1.0", "NVlabs/LITA releases LITA 1.0 checkpoints"),
    "num_spatial_frames": (LitaOptions.num_spatial_frames, "LITA lita_arch: pool_size * pool_size frames"),
    "spatial_pool": (LitaOptions.spatial_pool, "LITA lita_arch: pool_size = 2"),
}
REQUIRED_LITA = ("mm_hidden_size", "num_time_tokens")
CLIP_FIELDS = ("image_size", "patch_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "layer_norm_eps")


def _option(hf: dict[str, Any], key: str, used: list[str]) -> Any:
    if key in hf and hf[key] is not None:
        return hf[key]
    default, source = DOCUMENTED_DEFAULTS[key]
    used.append(f"{key}={default!r} ({source})")
    return default


def _check_supported(hf: dict[str, Any]) -> list[str]:
    problems = []
    if hf.get("rope_scaling") not in (None, {}):
        problems.append(f"rope_scaling={hf['rope_scaling']!r} is not supported")
    if hf.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={hf['hidden_act']!r} is not supported (LLaMA uses silu)")
    if hf.get("tie_word_embeddings"):
        problems.append("tie_word_embeddings=true is not supported")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        problems.append("attention_bias/mlp_bias are not supported")
    return problems


def _text(hf: dict[str, Any], used: list[str]) -> TextConfig:
    values = {k: hf[k] for k in REQUIRED_TEXT}
    for key in LLAMA_DEFAULTED:
        if hf.get(key) is None:
            used.append(f"{key}={getattr(TextConfig, key)!r} (LlamaConfig default)")
        else:
            values[key] = hf[key]
    if hf.get("num_key_value_heads") is None:
        used.append("num_key_value_heads=num_attention_heads (LlamaConfig default)")
        values["num_key_value_heads"] = hf["num_attention_heads"]
    else:
        values["num_key_value_heads"] = hf["num_key_value_heads"]
    return TextConfig(**values)


def _vision(hf: dict[str, Any], vision_config: dict[str, Any] | None, select_layer: int) -> VisionConfig:
    clip = vision_config if vision_config is not None else hf.get("mm_vision_config")
    if clip is not None:
        clip = clip.get("vision_config", clip)  # a full CLIPModel config nests the vision part
        missing = [k for k in CLIP_FIELDS if k not in clip]
        if missing:
            raise CheckpointError(f"vision tower config lacks {missing}")
        if clip.get("hidden_act", "quick_gelu") != "quick_gelu":
            raise CheckpointError(f"vision tower hidden_act={clip['hidden_act']!r} is not supported (quick_gelu)")
        return replace(VisionConfig(), select_layer=select_layer, **{k: clip[k] for k in CLIP_FIELDS})
    tower = str(hf.get("mm_vision_tower", ""))
    if tower in KNOWN_VISION_TOWERS:
        return replace(LitaConfig.from_name(KNOWN_VISION_TOWERS[tower]).vision, select_layer=select_layer)
    raise CheckpointError(f"vision tower {tower!r} is not one of {sorted(KNOWN_VISION_TOWERS)}; "
                          "pass the tower directory (vision_tower_path) so its config.json can be read")


def _lita(hf: dict[str, Any], used: list[str]) -> LitaOptions:
    frames = hf.get("num_frames", hf.get("sample_frames"))
    if frames is None:
        frames = _option(hf, "num_frames", used)
    fmt = hf.get("visual_token_format")
    if fmt is None:
        fmt = "im_vid_start_end" if _option(hf, "mm_use_im_start_end", used) else "v1"
        used.append(f"visual_token_format={fmt!r} (from mm_use_im_start_end)")
    version = str(_option(hf, "lita_version", used))
    aspect = hf.get("image_aspect_ratio")
    if aspect is None:  # LITA 1.5 pads frames to squares (NeMo's LITA config), 1.0 crops their centre
        aspect = "pad" if version == "1.5" else "square"
        used.append(f"image_aspect_ratio={aspect!r} (LITA {version}'s preprocessing)")
    return LitaOptions(lita_version=version, video_arch=_option(hf, "video_arch", used),
                       visual_token_format=fmt, sample_frames=int(frames),
                       num_spatial_frames=int(_option(hf, "num_spatial_frames", used)),
                       spatial_pool=int(_option(hf, "spatial_pool", used)),
                       num_time_tokens=int(hf["num_time_tokens"]),
                       projector_type=_option(hf, "mm_projector_type", used), image_aspect_ratio=str(aspect))


def _check_values(cfg: LitaConfig, hf: dict[str, Any], used: list[str]) -> list[str]:
    problems = []
    if _option(hf, "input_type", used) != "video":
        problems.append(f"input_type={hf.get('input_type', 'image')!r}: only video LITA checkpoints are served")
    if _option(hf, "mm_vision_select_feature", used) != "patch":
        problems.append(f"mm_vision_select_feature={hf['mm_vision_select_feature']!r} is not supported (patch)")
    if cfg.lita.video_arch not in VIDEO_ARCHS:
        problems.append(f"video_arch={cfg.lita.video_arch!r} is not one of {list(VIDEO_ARCHS)}")
    if cfg.lita.visual_token_format not in VISUAL_TOKEN_FORMATS:
        problems.append(f"visual_token_format={cfg.lita.visual_token_format!r} is not one of {list(VISUAL_TOKEN_FORMATS)}")
    if cfg.lita.projector_type not in PROJECTOR_TYPES:
        problems.append(f"mm_projector_type={cfg.lita.projector_type!r} is not one of {list(PROJECTOR_TYPES)}")
    if hf["mm_hidden_size"] != cfg.vision.hidden_size:
        problems.append(f"mm_hidden_size={hf['mm_hidden_size']} differs from the vision tower's hidden_size "
                        f"{cfg.vision.hidden_size}")
    return problems


def config_from_hf_with_defaults(hf: dict[str, Any], vision_config: dict[str, Any] | None = None
                                 ) -> tuple[LitaConfig, list[str]]:
    """Like :func:`config_from_hf`, also returning the documented defaults that were applied."""
    missing = [k for k in REQUIRED_TEXT + REQUIRED_LITA if hf.get(k) is None]
    if "mm_vision_tower" not in hf and vision_config is None and "mm_vision_config" not in hf:
        missing.append("mm_vision_tower")
    if missing:
        raise CheckpointError(f"config.json lacks required keys: {missing}")
    problems = _check_supported(hf)
    if problems:
        raise CheckpointError("unsupported checkpoint config: " + "; ".join(problems))
    used: list[str] = []
    select_layer = int(_option(hf, "mm_vision_select_layer", used))
    cfg = LitaConfig(vision=_vision(hf, vision_config, select_layer), text=_text(hf, used), lita=_lita(hf, used),
                     name=str(hf.get("_name_or_path") or LitaConfig.name))
    problems = _check_values(cfg, hf, used)
    if problems:
        raise CheckpointError("unsupported checkpoint config: " + "; ".join(problems))
    return cfg, list(dict.fromkeys(used))


def config_from_hf(hf: dict[str, Any], vision_config: dict[str, Any] | None = None) -> LitaConfig:
    """Build a :class:`LitaConfig` from a LITA/LLaVA ``config.json`` dict (and the tower's config).

    Raises CheckpointError naming every missing required key or unsupported option; logs the
    documented defaults applied for absent optional keys.
    """
    cfg, used = config_from_hf_with_defaults(hf, vision_config)
    if used:
        log.warning("checkpoint config: using reference defaults for absent keys: %s", "; ".join(used))
    return cfg


def clip_vision_config(vision: VisionConfig) -> dict[str, Any]:
    """A ``CLIPVisionConfig``-style dict for a tower directory's ``config.json``."""
    return {"architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model", "hidden_act": "quick_gelu",
            "num_channels": 3, **{k: getattr(vision, k) for k in CLIP_FIELDS}}


def tower_name(vision: VisionConfig) -> str | None:
    """The released tower name whose architecture equals ``vision`` (ignoring select_layer), if any."""
    for name, preset in KNOWN_VISION_TOWERS.items():
        if replace(LitaConfig.from_name(preset).vision, select_layer=vision.select_layer) == vision:
            return name
    return None


def config_to_hf(cfg: LitaConfig, dtype_name: str = "float32") -> dict[str, Any]:
    """The ``config.json`` of a LitaLlamaForCausalLM checkpoint for ``cfg``."""
    t, lita = cfg.text, cfg.lita
    out: dict[str, Any] = {
        "_name_or_path": cfg.name, "architectures": ["LitaLlamaForCausalLM"], "model_type": "lita",
        "hidden_act": "silu", "initializer_range": 0.02, "rope_scaling": None, "tie_word_embeddings": False,
        "torch_dtype": dtype_name, "use_cache": True,
        **{k: getattr(t, k) for k in REQUIRED_TEXT + LLAMA_DEFAULTED}, "num_key_value_heads": t.num_key_value_heads,
        "mm_vision_tower": tower_name(cfg.vision) or f"{cfg.name}/vision_tower",
        "mm_hidden_size": cfg.vision.hidden_size, "mm_projector_type": lita.projector_type,
        "mm_vision_select_layer": cfg.vision.select_layer, "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": lita.visual_token_format == "im_vid_start_end", "mm_use_im_patch_token": False,
        "use_mm_proj": True, "image_aspect_ratio": lita.image_aspect_ratio, "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False, "num_frames": lita.sample_frames, "num_time_tokens": lita.num_time_tokens,
        "input_type": "video", "video_arch": lita.video_arch, "lita_version": lita.lita_version,
        "visual_token_format": lita.visual_token_format, "num_spatial_frames": lita.num_spatial_frames,
        "spatial_pool": lita.spatial_pool,
    }
    if tower_name(cfg.vision) is None:
        out["mm_vision_config"] = clip_vision_config(cfg.vision)
    return out
