"""LITA options for the build: read from the checkpoint config, overridden by flags, and checked."""

from __future__ import annotations

from typing import Any

from lita_serve.config import (DEFAULT_NUM_TIME_TOKENS, IMAGE_ASPECT_RATIOS, PROJECTOR_TYPES, VIDEO_ARCHS,
                               VISUAL_TOKEN_FORMATS, LitaConfig)
from lita_serve.errors import CheckpointError, InvalidInputError
from lita_serve.text.special_tokens import LITA_VERSIONS

# LitaOptions field (what users pass) -> LITA config.json key.
OVERRIDE_KEYS: dict[str, str] = {
    "video_arch": "video_arch",
    "visual_token_format": "visual_token_format",
    "sample_frames": "num_frames",
    "num_spatial_frames": "num_spatial_frames",
    "spatial_pool": "spatial_pool",
    "num_time_tokens": "num_time_tokens",
    "projector_type": "mm_projector_type",
    "image_aspect_ratio": "image_aspect_ratio",
}
VERSION_PRESETS = {"1.0": "lita-13b", "1.5": "lita-1.5-13b"}
POOLED_ARCHS = ("temporal_spatial_pool", "spatial_pool")


def override_keys(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """User overrides (LitaOptions names) -> config.json keys; InvalidInputError for unknown names."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise InvalidInputError(f"unknown LITA options {unknown}; known: {sorted(OVERRIDE_KEYS)}")
    return {OVERRIDE_KEYS[k]: v for k, v in overrides.items() if v is not None}


def pretrained_defaults(version: str, present: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """LITA keys a finetuning starting point lacks, from the ``version``'s preset; and notes saying so."""
    opts = LitaConfig.from_name(VERSION_PRESETS[version]).lita
    wanted = {"input_type": "video", "num_time_tokens": opts.num_time_tokens, "video_arch": opts.video_arch,
              "visual_token_format": opts.visual_token_format, "num_frames": opts.sample_frames,
              "num_spatial_frames": opts.num_spatial_frames, "spatial_pool": opts.spatial_pool}
    added = {k: v for k, v in wanted.items() if present.get(k) is None}
    notes = [f"{k}={v!r} from the LITA {version} preset" for k, v in added.items()]
    return added, notes


def resolve_hf_overrides(merged: dict[str, Any], version: str, overrides: dict[str, Any] | None,
                         pretrained: bool) -> tuple[dict[str, Any], list[str]]:
    """The ``hf_overrides`` for :func:`load_lita` and the notes on where values came from."""
    if version not in LITA_VERSIONS:
        raise InvalidInputError(f"--lita-version must be one of {list(LITA_VERSIONS)}, got {version!r}")
    stored = merged.get("lita_version")
    if stored is not None and str(stored) != version:
        raise CheckpointError(f"the checkpoint says lita_version={stored!r} but --lita-version {version} was given")
    user = override_keys(overrides)
    out: dict[str, Any] = {"lita_version": version}
    notes: list[str] = []
    if pretrained:
        added, notes = pretrained_defaults(version, {**merged, **user})
        out.update(added)
    elif {**merged, **user}.get("num_time_tokens") is None:
        out["num_time_tokens"] = DEFAULT_NUM_TIME_TOKENS
        notes.append(f"num_time_tokens={DEFAULT_NUM_TIME_TOKENS} (LITA default; absent from the checkpoint)")
    out.update(user)
    notes += [f"{k}={v!r} from the command line" for k, v in user.items()]
    return out, notes


def check_lita_options(cfg: LitaConfig) -> None:
    """CheckpointError naming every LITA option outside the values the server supports."""
    o, problems = cfg.lita, []
    if o.lita_version not in LITA_VERSIONS:
        problems.append(f"lita_version={o.lita_version!r} is not one of {list(LITA_VERSIONS)}")
    if o.video_arch not in VIDEO_ARCHS:
        problems.append(f"video_arch={o.video_arch!r} is not one of {list(VIDEO_ARCHS)}")
    if o.visual_token_format not in VISUAL_TOKEN_FORMATS:
        problems.append(f"visual_token_format={o.visual_token_format!r} is not one of {list(VISUAL_TOKEN_FORMATS)}")
    if o.projector_type not in PROJECTOR_TYPES:
        problems.append(f"projector_type={o.projector_type!r} is not one of {list(PROJECTOR_TYPES)}")
    if o.image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
        problems.append(f"image_aspect_ratio={o.image_aspect_ratio!r} is not one of {list(IMAGE_ASPECT_RATIOS)}")
    if not 1 <= o.sample_frames <= cfg.limits.max_frames:
        problems.append(f"sample_frames={o.sample_frames} is outside 1..{cfg.limits.max_frames} (limits.max_frames)")
    if o.num_spatial_frames < 1:
        problems.append(f"num_spatial_frames={o.num_spatial_frames} must be >= 1")
    if o.num_time_tokens < 1:
        problems.append(f"num_time_tokens={o.num_time_tokens} must be >= 1")
    if o.video_arch in POOLED_ARCHS and (o.spatial_pool < 1 or cfg.vision.grid % o.spatial_pool):
        problems.append(f"spatial_pool={o.spatial_pool} does not divide the {cfg.vision.grid}x{cfg.vision.grid} grid")
    if problems:
        raise CheckpointError("unsupported LITA options: " + "; ".join(problems))
