"""Read a NeMo NeVA/LITA ``.nemo`` checkpoint without NeMo and turn it into the LITA HF layout.

A ``.nemo`` file is a tar holding ``model_config.yaml`` and the weights, either a pickled state
dict ``model_weights.ckpt`` or a ``model_weights/`` distributed checkpoint (``metadata.json``
names the backend: ``torch_dist`` is read with ``torch.distributed.checkpoint``; ``zarr`` needs
megatron-core). Key names follow NeMo's ``convert_hf_llava_to_neva.py``
(examples/multimodal/multimodal_llm/neva/):

* mcore: ``model.embedding.word_embeddings.weight``, ``model.output_layer.weight``,
  ``model.decoder.layers.N.self_attention.linear_qkv.weight`` (q/k/v interleaved per query group:
  for each group, its q heads, then one k head, then one v head), ``...linear_qkv.layer_norm_weight``
  (input norm), ``...self_attention.linear_proj.weight`` (o_proj), ``...mlp.linear_fc1.weight``
  (cat(gate_proj, up_proj)), ``...mlp.linear_fc1.layer_norm_weight`` (post-attention norm),
  ``...mlp.linear_fc2.weight`` (down_proj), ``model.decoder.final_layernorm.weight``. The norms are
  named so with TransformerEngine's fused ``TELayerNormColumnParallelLinear``; megatron-core's local
  layer spec (``get_gpt_layer_local_spec`` in ``megatron/core/models/gpt/gpt_layer_specs.py``) keeps
  them as modules of their own: ``...layers.N.input_layernorm.weight`` and
  ``...layers.N.pre_mlp_layernorm.weight`` (its ``sharded_state_dict_keys_map`` maps those names
  to the fused ones);
* legacy (non-mcore): ``model.language_model.{embedding.word_embeddings, output_layer}``,
  ``...encoder.layers.N.self_attention.{query_key_value,dense}``, ``mlp.{dense_h_to_4h,dense_4h_to_h}``,
  ``input_layernorm``, ``post_attention_layernorm``, ``encoder.final_layernorm``;
* projector: ``<word_embeddings>.adapter_layer.mm_projector_adapter.mm_projector.<suffix>`` where
  ``<suffix>`` is the HF ``mm_projector`` suffix (``weight``, ``0.weight``, ...);
* a stored (unfrozen) vision tower: ``<word_embeddings>.vision_encoder.<HF CLIPVisionModel key>``
  (``neva_model.py``: the tower is ``embedding.word_embeddings.vision_encoder``, and
  ``get_keys_to_keep`` saves its tensors only when ``mm_cfg.vision_encoder.freeze`` is false).

``megatron_amp_O2`` checkpoints prefix everything with ``model.module.``. Distributed checkpoints
store each layer tensor stacked over layers (``model.decoder.layers.<name>`` with a leading layer axis).

Tensor-parallel archives (``mp_rank_00/model_weights.ckpt``, ``mp_rank_01/...``; NeMo's
``nemo/utils/model_utils.py`` ``inject_model_parallel_rank``) are merged as NeMo's own
``megatron_change_num_partitions.py`` does: column-parallel tensors (qkv, whose ranks each hold
whole query groups; the vocabulary-parallel embedding and output layer) concatenated on dim 0,
row-parallel ones (attention output, MLP down) on dim 1, the gated MLP input per half (each rank
holds ``[gate_r; up_r]``: all gate halves, then all up halves) and everything else (norms,
projector, vision tower) replicated. Pipeline-parallel archives (``tp_rank_XX_pp_rank_YYY/``) are
refused.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from lita_build.sources import NEMO_CONFIG, NEMO_DIST_WEIGHTS, NEMO_LEGACY_WEIGHTS
from lita_serve.errors import CheckpointError, MissingDependencyError

EMBED_STEMS = ("model.embedding.word_embeddings.", "model.language_model.embedding.word_embeddings.")
PROJECTOR_INFIX = "adapter_layer.mm_projector_adapter.mm_projector."
VISION_INFIX = "vision_encoder."
IGNORED_SUFFIXES = ("_extra_state", "rotary_pos_emb.inv_freq", "embeddings.position_ids")  # buffers

# (NeMo layer-relative name, HF layer-relative name) for tensors that map one to one.
MCORE_LAYER = {
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "input_layernorm.weight": "input_layernorm.weight",  # local (non-TransformerEngine) layer spec
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",  # local layer spec
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "mlp.linear_fc1.layer_norm_weight": "post_attention_layernorm.weight",
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
}
LEGACY_LAYER = {
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attention.dense.weight": "self_attn.o_proj.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
}
QKV_NAMES = ("self_attention.linear_qkv.weight", "self_attention.query_key_value.weight")
FC1_NAMES = ("mlp.linear_fc1.weight", "mlp.dense_h_to_4h.weight")
ROW_PARALLEL_NAMES = ("self_attention.linear_proj.weight", "self_attention.dense.weight", "mlp.linear_fc2.weight",
                      "mlp.dense_4h_to_h.weight")
VOCAB_PARALLEL_KEYS = ("model.embedding.word_embeddings.weight", "model.language_model.embedding.word_embeddings.weight",
                       "model.output_layer.weight", "model.language_model.output_layer.weight")
TP_RANK_RE = re.compile(r"^mp_rank_(\d+)$")
NEMO_POOLED_FRAMES = 4  # neva_model.py LitaWordEmbeddingMixin.add_lita_layer: pool_size = 2, pool_size**2 frames
LAYER_RE = re.compile(r"^model\.(?:decoder|language_model\.encoder)\.layers\.(\d+)\.(.+)$")
TOP_LEVEL = {
    "model.embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "model.language_model.embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "model.output_layer.weight": "lm_head.weight",
    "model.language_model.output_layer.weight": "lm_head.weight",
    "model.decoder.final_layernorm.weight": "model.norm.weight",
    "model.language_model.encoder.final_layernorm.weight": "model.norm.weight",
}


@dataclass
class NemoCheckpoint:
    """The parts of a .nemo file the build needs."""

    config: dict[str, Any]  # model_config.yaml
    state: dict[str, Tensor]  # NeMo names, model.module. prefix removed, stacked layers split
    weights_format: str  # "legacy" | "torch_dist"
    tokenizer_files: list[str]  # archive members that look like SentencePiece models
    tensor_parallel: int = 1  # mp_rank_XX archives merged


# --- reading -----------------------------------------------------------------------------------

def extract_nemo(path: Path, into: Path) -> Path:
    """Extract a .nemo tar into ``into`` (a directory is returned unchanged)."""
    if path.is_dir():
        return path
    into.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(path) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise CheckpointError(f"cannot extract {path}: {exc}") from exc
    return into


def _load_pickled_state(path: Path) -> dict[str, Any]:
    try:
        with torch.serialization.safe_globals([io.BytesIO]):  # TransformerEngine _extra_state blobs
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if isinstance(data, dict) and "state_dict" in data:
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return data


def _load_distributed(directory: Path) -> dict[str, Tensor]:
    meta_path = directory / "metadata.json"
    backend = json.loads(meta_path.read_text()).get("sharded_backend") if meta_path.is_file() else "torch_dist"
    if backend == "zarr":
        raise MissingDependencyError(
            f"{directory} is a zarr distributed checkpoint: reading it needs NeMo/megatron-core (pip install "
            "megatron-core zarr) or convert it first with NeMo's scripts/checkpoint_converters/"
            "convert_zarr_to_torch_dist.py (inside nvcr.io/nvidia/nemo)")
    if backend != "torch_dist":
        raise CheckpointError(f"{directory}: unknown sharded_backend {backend!r} (expected torch_dist or zarr)")
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(directory))
    try:
        metadata = reader.read_metadata()
    except Exception as exc:
        raise CheckpointError(f"cannot read the torch_dist metadata of {directory}: {exc}") from exc
    state = {key: torch.empty(tuple(m.size), dtype=m.properties.dtype)
             for key, m in metadata.state_dict_metadata.items()
             if isinstance(m, TensorStorageMetadata) and not key.endswith(IGNORED_SUFFIXES)}
    dcp.load(state, storage_reader=reader, no_dist=True)
    return state


def _unstack_layers(state: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """``model.decoder.layers.<name>`` [L, ...] -> ``model.decoder.layers.<i>.<name>`` [...]."""
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        match = re.match(r"^(model\.(?:decoder|language_model\.encoder)\.layers\.)(?!\d+\.)(.+)$", key)
        if match is None:
            out[key] = tensor
            continue
        if tensor.shape[0] != num_layers:
            raise CheckpointError(f"{key}: stacked layer tensor has {tensor.shape[0]} layers, config says {num_layers}")
        for i in range(num_layers):
            out[f"{match.group(1)}{i}.{match.group(2)}"] = tensor[i]
    return out


def tensor_parallel_dirs(root: Path) -> list[Path]:
    """``mp_rank_00 .. mp_rank_{N-1}`` directories holding model_weights.ckpt, in rank order."""
    ranks = {int(m.group(1)): d for d in root.iterdir() if d.is_dir() and (m := TP_RANK_RE.match(d.name))
             and (d / NEMO_LEGACY_WEIGHTS).is_file()}
    if sorted(ranks) != list(range(len(ranks))):
        raise CheckpointError(f"{root}: tensor-parallel ranks {sorted(ranks)} are not 0..N-1 (a rank is missing)")
    return [ranks[i] for i in range(len(ranks))]


def _clean(state: dict[str, Any]) -> dict[str, Tensor]:
    return {_strip_module(k): v for k, v in state.items() if isinstance(v, Tensor) and not k.endswith(IGNORED_SUFFIXES)}


def _merge_one(key: str, parts: list[Tensor]) -> Tensor:
    match = LAYER_RE.match(key)
    name = match.group(2) if match else ""
    if name in FC1_NAMES:  # each rank: [gate_r; up_r] -> [gate_0 .. gate_N-1; up_0 .. up_N-1]
        halves = [p.chunk(2, dim=0) for p in parts]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    if name in QKV_NAMES or key in VOCAB_PARALLEL_KEYS:  # column / vocabulary parallel
        return torch.cat(parts, dim=0)
    if name in ROW_PARALLEL_NAMES:
        return torch.cat(parts, dim=1)
    if any(p.shape != parts[0].shape or not torch.equal(p, parts[0]) for p in parts[1:]):
        raise CheckpointError(f"{key} differs between tensor-parallel ranks although NeMo replicates it")
    return parts[0]


def merge_tensor_parallel(ranks: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """One TP=1 state dict from the per-rank state dicts (rank order), as described above."""
    names = set(ranks[0])
    for i, state in enumerate(ranks[1:], start=1):
        if set(state) != names:
            diff = sorted(names.symmetric_difference(state))
            raise CheckpointError(f"tensor-parallel rank {i} holds other tensors than rank 0: {', '.join(diff[:10])}")
    return {key: _merge_one(key, [state[key] for state in ranks]) for key in ranks[0]}


def read_nemo(path: Path, workdir: Path) -> NemoCheckpoint:
    """Read ``model_config.yaml`` and the weights of a .nemo file (extracted under ``workdir``)."""
    root = extract_nemo(Path(path), workdir)
    config_path = root / NEMO_CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{path} has no {NEMO_CONFIG}")
    config = yaml.safe_load(config_path.read_text()) or {}
    tp = 1
    if (root / NEMO_LEGACY_WEIGHTS).is_file():
        state, fmt = _clean(_load_pickled_state(root / NEMO_LEGACY_WEIGHTS)), "legacy"
    elif (root / NEMO_DIST_WEIGHTS).is_dir():
        state, fmt = _clean(_load_distributed(root / NEMO_DIST_WEIGHTS)), "torch_dist"
    elif rank_dirs := tensor_parallel_dirs(root):
        tp = len(rank_dirs)
        stated = int(config.get("tensor_model_parallel_size", tp))
        if stated != tp:
            raise CheckpointError(f"{path} holds {tp} mp_rank_XX folders but tensor_model_parallel_size={stated}")
        state = merge_tensor_parallel([_clean(_load_pickled_state(d / NEMO_LEGACY_WEIGHTS)) for d in rank_dirs])
        fmt = "legacy"
    else:
        raise CheckpointError(f"{path} holds neither {NEMO_LEGACY_WEIGHTS} nor {NEMO_DIST_WEIGHTS}/")
    state = _unstack_layers(state, int(config.get("num_layers", 0)))
    tokenizers = sorted(p.relative_to(root).as_posix() for p in root.glob("*.model"))
    return NemoCheckpoint(config, state, fmt, tokenizers, tp)


def _strip_module(key: str) -> str:
    return "model." + key[len("model.module."):] if key.startswith("model.module.") else key


# --- tensors ----------------------------------------------------------------------------------

def split_qkv(qkv: Tensor, num_heads: int, num_groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """Megatron's grouped QKV [(heads + 2*groups)*D, H] -> q [heads*D, H], k, v [groups*D, H]."""
    per_group = num_heads // num_groups
    rows, hidden = qkv.shape
    head_dim = rows // (num_heads + 2 * num_groups)
    grouped = qkv.reshape(num_groups, per_group + 2, head_dim, hidden)  # [G, q..q k v, D, H]
    q = grouped[:, :per_group].reshape(num_heads * head_dim, hidden)
    k = grouped[:, per_group].reshape(num_groups * head_dim, hidden)
    v = grouped[:, per_group + 1].reshape(num_groups * head_dim, hidden)
    return q, k, v


def _layer_to_hf(layer: int, name: str, tensor: Tensor, heads: int, groups: int) -> dict[str, Tensor]:
    prefix = f"model.layers.{layer}."
    if name in QKV_NAMES:
        q, k, v = split_qkv(tensor, heads, groups)
        return {prefix + "self_attn.q_proj.weight": q, prefix + "self_attn.k_proj.weight": k,
                prefix + "self_attn.v_proj.weight": v}
    if name in FC1_NAMES:
        gate, up = tensor.chunk(2, dim=0)  # NeMo: cat(gate_proj, up_proj)
        return {prefix + "mlp.gate_proj.weight": gate, prefix + "mlp.up_proj.weight": up}
    hf = MCORE_LAYER.get(name) or LEGACY_LAYER.get(name)
    return {} if hf is None else {prefix + hf: tensor}


def nemo_state_to_hf(state: dict[str, Tensor], num_heads: int, num_groups: int) -> dict[str, Tensor]:
    """NeMo NeVA tensor names -> LITA HF names; CheckpointError naming every tensor not understood."""
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        match = LAYER_RE.match(key)
        if match:
            mapped = _layer_to_hf(int(match.group(1)), match.group(2), tensor, num_heads, num_groups)
        elif key in TOP_LEVEL:
            mapped = {TOP_LEVEL[key]: tensor}
        else:
            mapped = _embedding_child_to_hf(key, tensor)
        if not mapped:
            unknown.append(key)
        out.update(mapped)
    if unknown:
        raise CheckpointError(f"unrecognised tensors in the .nemo checkpoint ({len(unknown)}): {', '.join(unknown)}")
    return out


def _embedding_child_to_hf(key: str, tensor: Tensor) -> dict[str, Tensor]:
    for stem in EMBED_STEMS:
        if key.startswith(stem + PROJECTOR_INFIX):
            return {"model.mm_projector." + key[len(stem + PROJECTOR_INFIX):]: tensor}
        if key.startswith(stem + VISION_INFIX):
            return {"model.vision_tower.vision_tower." + key[len(stem + VISION_INFIX):]: tensor}
    return {}


# --- config -----------------------------------------------------------------------------------

def _get(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _check_llama(config: dict[str, Any]) -> None:
    problems = []
    activation = str(config.get("activation", "fast-swiglu"))
    if activation not in ("swiglu", "fast-swiglu"):
        problems.append(f"activation={activation!r} (LLaMA uses swiglu)")
    if str(config.get("normalization", "rmsnorm")).lower() != "rmsnorm":
        problems.append(f"normalization={config.get('normalization')!r} (LLaMA uses rmsnorm)")
    if config.get("bias", False):
        problems.append("bias=true (LLaMA has no linear biases)")
    if config.get("share_embeddings_and_output_weights", False):
        problems.append("share_embeddings_and_output_weights=true")
    if config.get("seq_len_interpolation_factor") not in (None, 1, 1.0):
        problems.append(f"seq_len_interpolation_factor={config['seq_len_interpolation_factor']!r} (RoPE scaling)")
    if int(config.get("pipeline_model_parallel_size", 1)) != 1:
        problems.append("pipeline_model_parallel_size > 1 (re-save at PP=1 with NeMo's megatron_change_num_partitions.py)")
    if problems:
        raise CheckpointError("unsupported .nemo model: " + "; ".join(problems))


def nemo_config_to_hf(config: dict[str, Any], hf_state: dict[str, Tensor]) -> dict[str, Any]:
    """A LITA HF ``config.json`` dict for a NeMo config; vocab and tower width come from the tensors."""
    required = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads")
    missing = [k for k in required if config.get(k) is None]
    if missing:
        raise CheckpointError(f"{NEMO_CONFIG} lacks {missing}")
    _check_llama(config)
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        if key not in hf_state:
            raise CheckpointError(f"the .nemo weights lack the tensor that maps to {key}")
    projector_in = [t.shape[1] for k, t in hf_state.items() if k in ("model.mm_projector.weight", "model.mm_projector.0.weight")]
    if not projector_in:
        raise CheckpointError("the .nemo weights hold no mm_projector (adapter_layer.mm_projector_adapter.mm_projector.*)")
    heads = int(config["num_attention_heads"])
    lita = _get(config, "mm_cfg.lita", {}) or {}
    hf: dict[str, Any] = {
        "model_type": "lita", "architectures": ["LitaLlamaForCausalLM"], "hidden_act": "silu",
        "vocab_size": int(hf_state["model.embed_tokens.weight"].shape[0]),
        "hidden_size": int(config["hidden_size"]), "intermediate_size": int(config["ffn_hidden_size"]),
        "num_hidden_layers": int(config["num_layers"]), "num_attention_heads": heads,
        "num_key_value_heads": int(config.get("num_query_groups") or heads),
        "max_position_embeddings": int(config.get("max_position_embeddings") or config.get("encoder_seq_length")),
        "rms_norm_eps": float(config.get("layernorm_epsilon", 1e-5)),
        "rope_theta": float(config.get("rotary_base", 10000.0)),
        "mm_hidden_size": int(projector_in[0]),
        "mm_projector_type": _get(config, "mm_cfg.mm_mlp_adapter_type", "linear"),
        "mm_vision_tower": _get(config, "mm_cfg.vision_encoder.from_pretrained"),
        "mm_vision_select_layer": int(_get(config, "mm_cfg.vision_encoder.vision_select_layer", -2)),
        "mm_use_im_start_end": bool(_get(config, "mm_cfg.use_im_start_end", False)),
        "input_type": "video" if lita or _get(config, "data.media_type") == "video" else "image",
    }
    optional = {"video_arch": lita.get("lita_video_arch"), "visual_token_format": lita.get("visual_token_format"),
                "num_spatial_frames": nemo_spatial_frames(lita), "num_time_tokens": lita.get("num_time_tokens"),
                "num_frames": _get(config, "data.num_frames"),
                # NeMo's LITA configs set data.image_aspect_ratio: pad (frames padded to squares)
                "image_aspect_ratio": _get(config, "data.image_aspect_ratio")}
    hf.update({k: v for k, v in optional.items() if v is not None})
    return hf


def nemo_spatial_frames(lita: dict[str, Any]) -> int | None:
    """The frames NeMo keeps for spatial tokens: ``lita.sample_frames`` for ``temporal_all_resolution``
    only; ``temporal_spatial_pool`` pools a fixed 4 frames; ``temporal_spatial`` averages all frames.

    NeMo (``neva_model.py`` ``LitaWordEmbeddingMixin.add_lita_layer``, ``neva_dataset.py``
    ``preprocess_multimodal``) reads ``sample_frames`` in the ``temporal_all_resolution`` branch
    alone; the mixin's default architecture is ``temporal_spatial_pool``.
    """
    arch = lita.get("lita_video_arch", "temporal_spatial_pool")
    if arch == "temporal_all_resolution":
        return lita.get("sample_frames")
    return NEMO_POOLED_FRAMES if arch == "temporal_spatial_pool" else None


def nemo_to_hf(checkpoint: NemoCheckpoint) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(LITA HF config.json dict, HF-named tensors) for a read .nemo checkpoint."""
    cfg = checkpoint.config
    heads = int(cfg.get("num_attention_heads", 0))
    groups = int(cfg.get("num_query_groups") or heads)
    if heads <= 0 or heads % groups:
        raise CheckpointError(f"num_attention_heads={heads} is not a multiple of num_query_groups={groups}")
    state = nemo_state_to_hf(checkpoint.state, heads, groups)
    return nemo_config_to_hf(cfg, state), state
