"""Key tables between released HF checkpoints and :class:`~lita_serve.engine.model.LitaModel` state dicts.

The tables are data: (HF prefix, internal prefix) pairs, most specific first. The decoder uses
HF's own names, so the text part maps by prefix only.
"""

from __future__ import annotations

# LITA/LLaVA checkpoint (LitaLlamaForCausalLM) <-> LitaModel.
LITA_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.vision_tower.vision_tower.vision_model.", "encoder.vision_tower."),
    ("model.mm_projector.", "encoder.mm_projector."),
    ("model.", "decoder.model."),
    ("lm_head.", "decoder.lm_head."),
)

# A separate tower directory (CLIPVisionModel or a full CLIPModel) <-> LitaModel.
VISION_TOWER_PREFIXES: tuple[tuple[str, str], ...] = (("vision_model.", "encoder.vision_tower."),)

# A separate projector file (``mm_projector.bin``); embed/lm_head rows there are time-token rows.
PROJECTOR_PREFIXES: tuple[tuple[str, str], ...] = (("model.mm_projector.", "encoder.mm_projector."),)

# Tensors that released checkpoints carry but that are recomputed here (non-persistent buffers in
# current transformers): RoPE inverse frequencies and CLIP position ids.
IGNORED_SUFFIXES: tuple[str, ...] = (".rotary_emb.inv_freq", "embeddings.position_ids")

# Parts of a full CLIPModel checkpoint that the vision tower does not use.
IGNORED_TOWER_PREFIXES: tuple[str, ...] = ("text_model.", "visual_projection.", "text_projection.", "logit_scale")

TOWER_INTERNAL_PREFIX = "encoder.vision_tower."
EMBED_KEY = "decoder.model.embed_tokens.weight"
LM_HEAD_KEY = "decoder.lm_head.weight"


def is_ignored(key: str, extra_prefixes: tuple[str, ...] = ()) -> bool:
    return key.endswith(IGNORED_SUFFIXES) or key.startswith(extra_prefixes)


def to_internal(key: str, table: tuple[tuple[str, str], ...]) -> str | None:
    """HF key -> internal key, or None when no prefix of the table matches."""
    for hf_prefix, ours in table:
        if key.startswith(hf_prefix):
            return ours + key[len(hf_prefix):]
    return None


def to_hf(key: str, table: tuple[tuple[str, str], ...]) -> str | None:
    """Internal key -> HF key, or None when no prefix of the table matches."""
    for hf_prefix, ours in table:
        if key.startswith(ours):
            return hf_prefix + key[len(ours):]
    return None
