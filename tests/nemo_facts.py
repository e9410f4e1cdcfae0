"""NeMo NeVA/LITA ``.nemo`` checkpoints written from tables of facts about NeMo, not from the build's reader.

Sources (NVIDIA/NeMo v2.4.0, the last release line with NeMo 1 NeVA/LITA; NVIDIA/Megatron-LM core):

* ``examples/multimodal/multimodal_llm/neva/convert_llava_to_neva.py`` ``convert()``: the mcore names
  below; q/k/v interleaved per query group (``for i in range(num_query_groups)``: the group's q heads,
  then its k head, then its v head); ``linear_fc1 = cat(gate_proj, up_proj)``; the projector under
  ``model.embedding.word_embeddings.adapter_layer.mm_projector_adapter.mm_projector<suffix>``;
  ``rotary_pos_emb.inv_freq`` saved when the HF model has it.
* ``megatron/core/models/gpt/gpt_layer_specs.py``: TransformerEngine's spec fuses the norms into
  ``linear_qkv.layer_norm_weight`` / ``linear_fc1.layer_norm_weight``; the local spec
  (``get_gpt_layer_local_spec``) has ``input_layernorm`` and ``pre_mlp_layernorm`` modules, with
  ``sharded_state_dict_keys_map = {'input_layernorm.': 'self_attention.linear_qkv.layer_norm_',
  'pre_mlp_layernorm.': 'mlp.linear_fc1.layer_norm_'}``.
* ``nemo/collections/multimodal/models/multimodal_llm/neva/neva_model.py``: the vision tower is
  ``embedding.word_embeddings.vision_encoder`` (an HF ``CLIPVisionModel``: ``vision_model.*``), kept
  in the saved state dict only when ``mm_cfg.vision_encoder.freeze`` is false (``get_keys_to_keep``).
* ``nemo/utils/model_utils.py`` ``inject_model_parallel_rank``: ``mp_rank_{tp:02d}/model_weights.ckpt``
  per tensor-parallel rank. Megatron's partitioning: ``ColumnParallelLinear`` (linear_qkv, linear_fc1,
  output_layer) and ``VocabParallelEmbedding`` split dim 0, ``RowParallelLinear`` (linear_proj,
  linear_fc2) dim 1; a gated ``linear_fc1`` rank holds ``[gate_r; up_r]`` (megatron-core ``mlp.py``
  swiglu sharding; NeMo ``examples/nlp/language_modeling/megatron_change_num_partitions.py``
  ``compute_tp_merge`` joins "all the first halves and all the second halves"); norms, the projector
  and the tower are replicated.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import torch
import yaml

EMB = "model.embedding.word_embeddings."
# HF LLaVA name -> NeMo mcore name (convert_llava_to_neva.py).
TOP = {"model.embed_tokens.weight": EMB + "weight", "lm_head.weight": "model.output_layer.weight",
       "model.norm.weight": "model.decoder.final_layernorm.weight"}
PROJECTOR_HF, PROJECTOR_NEMO = "model.mm_projector", EMB + "adapter_layer.mm_projector_adapter.mm_projector"
TOWER_HF, TOWER_NEMO = "model.vision_tower.vision_tower.", EMB + "vision_encoder."
LAYER = {  # per layer: HF name -> NeMo name; None = fused specially below
    "self_attn.o_proj.weight": "self_attention.linear_proj.weight",
    "mlp.down_proj.weight": "mlp.linear_fc2.weight",
}
NORMS = {  # layer-norm names by megatron-core layer spec
    "te": {"input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
           "post_attention_layernorm.weight": "mlp.linear_fc1.layer_norm_weight"},
    "local": {"input_layernorm.weight": "input_layernorm.weight",
              "post_attention_layernorm.weight": "pre_mlp_layernorm.weight"},
}
# Megatron tensor-parallel layout by NeMo name suffix: (dim, gated halves).
TP_SPLIT = {"self_attention.linear_qkv.weight": (0, False), "mlp.linear_fc1.weight": (0, True),
            "self_attention.linear_proj.weight": (1, False), "mlp.linear_fc2.weight": (1, False),
            EMB + "weight": (0, False), "model.output_layer.weight": (0, False)}


def _qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, groups: int) -> torch.Tensor:
    d, hidden = q.shape[0] // heads, q.shape[1]
    q, k, v = q.view(heads, d, hidden), k.view(groups, d, hidden), v.view(groups, d, hidden)
    per = heads // groups
    rows = []
    for i in range(groups):
        rows += [q[i * per:(i + 1) * per], k[i:i + 1], v[i:i + 1]]
    return torch.cat(rows).reshape(-1, hidden)


def nemo_from_hf(hf: dict[str, torch.Tensor], heads: int, groups: int, *, norms: str = "te",
                 tower: bool = False) -> dict[str, torch.Tensor]:
    """NeMo mcore state dict for HF LLaVA/LITA-named tensors, following the tables above."""
    out: dict[str, torch.Tensor] = {}
    layers = sorted({int(k.split(".")[2]) for k in hf if k.startswith("model.layers.")})
    for l in layers:
        h, n = f"model.layers.{l}.", f"model.decoder.layers.{l}."
        out[n + "self_attention.linear_qkv.weight"] = _qkv(hf[h + "self_attn.q_proj.weight"], hf[h + "self_attn.k_proj.weight"],
                                                          hf[h + "self_attn.v_proj.weight"], heads, groups)
        out[n + "mlp.linear_fc1.weight"] = torch.cat([hf[h + "mlp.gate_proj.weight"], hf[h + "mlp.up_proj.weight"]])
        for src, dst in {**LAYER, **NORMS[norms]}.items():
            out[n + dst] = hf[h + src]
    for src, dst in TOP.items():
        out[dst] = hf[src]
    for key, t in hf.items():
        if key.startswith(PROJECTOR_HF):
            out[PROJECTOR_NEMO + key[len(PROJECTOR_HF):]] = t
        elif tower and key.startswith(TOWER_HF):
            out[TOWER_NEMO + key[len(TOWER_HF):]] = t
    if tower:  # the persistent HF buffer of older transformers releases
        rows = hf[TOWER_HF + "vision_model.embeddings.position_embedding.weight"].shape[0]
        out[TOWER_NEMO + "vision_model.embeddings.position_ids"] = torch.arange(rows)[None]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def split_tensor_parallel(state: dict[str, torch.Tensor], tp: int) -> list[dict[str, torch.Tensor]]:
    """The per-rank state dicts Megatron holds for ``state`` at tensor-parallel size ``tp``."""
    ranks: list[dict[str, torch.Tensor]] = [{} for _ in range(tp)]
    for key, t in state.items():
        rule = next((r for suffix, r in TP_SPLIT.items() if key.endswith(suffix)), None)
        if rule is None:
            parts = [t] * tp
        elif rule[1]:  # gated: rank r holds [gate_r; up_r]
            gate, up = t.chunk(2, dim=0)
            parts = [torch.cat([g, u]) for g, u in zip(gate.chunk(tp, 0), up.chunk(tp, 0))]
        else:
            parts = list(t.chunk(tp, dim=rule[0]))
        for r in range(tp):
            ranks[r][key] = parts[r].clone().contiguous()
    return ranks


def write_nemo(out: Path, config: dict, ranks: list[dict[str, torch.Tensor]]) -> Path:
    """A .nemo tar: model_config.yaml plus model_weights.ckpt (one rank) or mp_rank_XX/model_weights.ckpt."""
    stage = out.with_suffix(".stage")
    stage.mkdir(parents=True)
    (stage / "model_config.yaml").write_text(yaml.safe_dump(config))
    if len(ranks) == 1:
        torch.save(ranks[0], stage / "model_weights.ckpt")
    else:
        for r, state in enumerate(ranks):
            (stage / f"mp_rank_{r:02d}").mkdir()
            torch.save(state, stage / f"mp_rank_{r:02d}" / "model_weights.ckpt")
    with tarfile.open(out, "w") as tar:
        for p in sorted(stage.rglob("*")):
            tar.add(p, arcname="./" + p.relative_to(stage).as_posix(), recursive=False)
    return out
