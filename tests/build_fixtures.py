"""Small LITA checkpoints in every input layout the build accepts, with known weights.

The .nemo writers follow NeMo's ``convert_hf_llava_to_neva.py`` naming (mcore): q/k/v interleaved
per query group into ``linear_qkv``, ``linear_fc1 = cat(gate_proj, up_proj)``, the projector under
``model.embedding.word_embeddings.adapter_layer.mm_projector_adapter.mm_projector``.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from lita_build.checkpoint import save_hf_checkpoint, save_vision_tower
from lita_build.checkpoint.random_init import build_random_model
from lita_build.checkpoint.files import read_weights
from lita_serve.config import LitaConfig
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.llm.generate import generate
from lita_serve.engine.model import LitaModel
from lita_serve.adapters.layout import RepositoryLayout
from lita_serve.engine.torch_engine import load_decoder, load_encoder
from lita_serve.text.tokenizer import train_tiny_sentencepiece

FRAMES = 8
LITA_KEYS = ("num_time_tokens", "video_arch", "visual_token_format", "num_frames", "num_spatial_frames",
             "spatial_pool", "lita_version", "input_type", "mm_vision_config")
VICUNA_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "model_type")
TEXTS = ["the person opens the door and walks into the room",
         "a dog runs across the field at 12 seconds", "what happens between <t3> and <t9>?",
         "Describe the video. The man picks up a cup, then puts it down."] * 4


def tiny_config(version: str) -> LitaConfig:
    """1.0: tiny preset; 1.5: a tiny 1.5-like model (mlp2x_gelu, temporal_all_resolution, im_vid_start_end)."""
    cfg = LitaConfig.from_name("tiny")
    if version == "1.0":
        return replace(cfg, lita=replace(cfg.lita, sample_frames=FRAMES))
    return replace(cfg, vision=replace(cfg.vision, image_size=56),
                   lita=replace(cfg.lita, lita_version="1.5", projector_type="mlp2x_gelu", sample_frames=FRAMES,
                                video_arch="temporal_all_resolution", visual_token_format="im_vid_start_end"))


def base_tokenizer(path: Path) -> Path:
    return train_tiny_sentencepiece(TEXTS, path, vocab_size=300)


def model_for(version: str, seed: int = 11) -> LitaModel:
    return build_random_model(tiny_config(version), seed)


def hf_lita(model: LitaModel, out: Path) -> Path:
    return save_hf_checkpoint(model, out, safetensors=True)


def _strip_lita_keys(directory: Path, keep: tuple[str, ...] | None = None) -> dict:
    cfg = json.loads((directory / "config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if (k in keep if keep else k not in LITA_KEYS)}
    (directory / "config.json").write_text(json.dumps(cfg))
    return cfg


def llava_pretrained(model: LitaModel, out: Path) -> tuple[Path, Path]:
    """ShareGPT4V-style: LLM + projector (LLaVA config, no LITA keys) and a separate tower directory."""
    llm = save_hf_checkpoint(model, out / "llm", include_vision_tower=False)
    _strip_lita_keys(llm)
    return llm, save_vision_tower(model, out / "tower", safetensors=True)


def vicuna_plus_projector(model: LitaModel, out: Path) -> tuple[Path, Path, Path]:
    """Vicuna-style LLM-only directory, a LLaVA pretrain projector directory and the tower."""
    full = save_hf_checkpoint(model, out / "full", include_vision_tower=False)
    weights = read_weights(full)
    projector = {k: weights.pop(k) for k in list(weights) if k.startswith("model.mm_projector.")}
    llm = out / "vicuna"
    llm.mkdir(parents=True)
    torch.save(weights, llm / "pytorch_model.bin")
    hf = json.loads((full / "config.json").read_text())
    (llm / "config.json").write_text(json.dumps({k: hf[k] for k in VICUNA_KEYS}))
    proj = out / "projector"
    proj.mkdir()
    torch.save(projector, proj / "mm_projector.bin")
    (proj / "config.json").write_text(json.dumps({k: v for k, v in hf.items() if k not in LITA_KEYS}))
    return llm, proj, save_vision_tower(model, out / "tower")


def _interleave_qkv(q, k, v, heads: int, groups: int) -> torch.Tensor:
    d = q.shape[0] // heads
    q, k, v = q.reshape(heads, d, -1), k.reshape(groups, d, -1), v.reshape(groups, d, -1)
    per = heads // groups
    parts = [torch.cat([q[g * per:(g + 1) * per], k[g:g + 1], v[g:g + 1]]) for g in range(groups)]
    return torch.cat(parts).reshape(-1, q.shape[-1])


def nemo_state(model: LitaModel) -> dict[str, torch.Tensor]:
    """The model's decoder + projector under NeMo NeVA (mcore) names."""
    t = model.config.text
    dec = model.decoder
    emb = "model.embedding.word_embeddings."
    out = {emb + "weight": dec.model.embed_tokens.weight, "model.output_layer.weight": dec.lm_head.weight,
           "model.decoder.final_layernorm.weight": dec.model.norm.weight}
    for name, p in model.encoder.mm_projector.state_dict().items():
        out[emb + "adapter_layer.mm_projector_adapter.mm_projector." + name] = p
    for i, layer in enumerate(dec.model.layers):
        p, a, m = f"model.decoder.layers.{i}.", layer.self_attn, layer.mlp
        out[p + "self_attention.linear_qkv.weight"] = _interleave_qkv(
            a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, t.num_attention_heads, t.num_key_value_heads)
        out[p + "self_attention.linear_qkv.layer_norm_weight"] = layer.input_layernorm.weight
        out[p + "self_attention.linear_proj.weight"] = a.o_proj.weight
        out[p + "mlp.linear_fc1.weight"] = torch.cat([m.gate_proj.weight, m.up_proj.weight])
        out[p + "mlp.linear_fc1.layer_norm_weight"] = layer.post_attention_layernorm.weight
        out[p + "mlp.linear_fc2.weight"] = m.down_proj.weight
    return {k: v.detach().clone() for k, v in out.items()}


def nemo_config(model: LitaModel, tower: Path) -> dict:
    c, t = model.config, model.config.text
    return {"num_layers": t.num_hidden_layers, "hidden_size": t.hidden_size, "ffn_hidden_size": t.intermediate_size,
            "num_attention_heads": t.num_attention_heads, "num_query_groups": t.num_key_value_heads,
            "max_position_embeddings": t.max_position_embeddings, "encoder_seq_length": t.max_position_embeddings,
            "layernorm_epsilon": t.rms_norm_eps, "rotary_base": t.rope_theta, "activation": "fast-swiglu",
            "normalization": "rmsnorm", "bias": False, "mcore_gpt": True, "make_vocab_size_divisible_by": 128,
            "data": {"num_frames": c.lita.sample_frames, "media_type": "video"},
            "mm_cfg": {"mm_mlp_adapter_type": c.lita.projector_type,
                       "use_im_start_end": c.lita.visual_token_format == "im_vid_start_end",
                       "vision_encoder": {"from_pretrained": str(tower), "vision_select_layer": c.vision.select_layer,
                                          "hidden_size": c.vision.hidden_size},
                       "lita": {"lita_video_arch": c.lita.video_arch, "visual_token_format": c.lita.visual_token_format,
                                "sample_frames": c.lita.num_spatial_frames}}}


def _tar(src: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as tar:
        for p in sorted(src.rglob("*")):
            tar.add(p, arcname="./" + p.relative_to(src).as_posix(), recursive=False)
    return out


def nemo_legacy(model: LitaModel, out: Path) -> tuple[Path, Path]:
    """A .nemo with model_weights.ckpt (plus a TransformerEngine-style _extra_state entry) and its tower."""
    tower = save_vision_tower(model, out / "tower")
    stage = out / "stage"
    stage.mkdir(parents=True)
    (stage / "model_config.yaml").write_text(yaml.safe_dump(nemo_config(model, tower)))
    state = nemo_state(model)
    state["model.decoder.layers.0.self_attention.linear_qkv._extra_state"] = torch.zeros(0)
    torch.save(state, stage / "model_weights.ckpt")
    return _tar(stage, out / "lita.nemo"), tower


def nemo_distributed(model: LitaModel, out: Path) -> tuple[Path, Path]:
    """A .nemo with a torch_dist ``model_weights/`` checkpoint, layer tensors stacked over layers."""
    from torch.distributed import checkpoint as dcp

    tower = save_vision_tower(model, out / "tower")
    stage = out / "stage"
    (stage / "model_weights").mkdir(parents=True)
    (stage / "model_config.yaml").write_text(yaml.safe_dump(nemo_config(model, tower)))
    flat = nemo_state(model)
    stacked: dict[str, torch.Tensor] = {}
    layers = model.config.text.num_hidden_layers
    for key in [k for k in flat if k.startswith("model.decoder.layers.0.")]:
        name = key[len("model.decoder.layers.0."):]
        stacked["model.decoder.layers." + name] = torch.stack(
            [flat.pop(f"model.decoder.layers.{i}.{name}") for i in range(layers)])
    stacked.update(flat)
    dcp.save(stacked, storage_writer=dcp.FileSystemWriter(str(stage / "model_weights")), no_dist=True)
    (stage / "model_weights" / "metadata.json").write_text(
        json.dumps({"sharded_backend": "torch_dist", "sharded_backend_version": 1}))
    return _tar(stage, out / "lita-dist.nemo"), tower


def greedy(model_or_repo, frames: torch.Tensor, max_tokens: int = 8) -> tuple[list[int], torch.Tensor]:
    """Greedy ids for a fixed prompt around the video's visual tokens, from a LitaModel or a built repo."""
    if isinstance(model_or_repo, LitaModel):
        encoder, decoder, vocab = model_or_repo.encoder, model_or_repo.decoder, model_or_repo.config.text.vocab_size
    else:
        layout = RepositoryLayout.of(model_or_repo)
        cfg = layout.load_config()
        encoder = load_encoder(layout, cfg, device="cpu", dtype=torch.float32)
        decoder = load_decoder(layout, cfg, device="cpu", dtype=torch.float32)
        vocab = cfg.text.vocab_size
    with torch.no_grad():
        table = encoder(frames[None])[0]  # [N_vis, H]
    prompt = [1, 5, 17, 42] + [vocab + i for i in range(table.shape[0])] + [9, 33, 7]
    return generate(decoder, prompt, table, SamplingParams(max_tokens=max_tokens), eos_id=-1), table


def frames_for(cfg: LitaConfig, seed: int = 0) -> torch.Tensor:
    size = cfg.vision.image_size
    return torch.randn(FRAMES, 3, size, size, generator=torch.Generator().manual_seed(seed))
