"""Released-layout checkpoints written and read back: round trips, validation, separate parts, vocab."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lita_build.checkpoint import config_from_hf, config_to_hf, load_lita, save_hf_checkpoint, save_vision_tower
from lita_build.checkpoint.random_init import build_random_model, write_demo_checkpoint
from lita_build.checkpoint.files import read_weights
from lita_serve.config import LitaConfig
from lita_serve.errors import CheckpointError

TINY = LitaConfig.from_name("tiny")


@pytest.fixture(scope="module")
def model():
    return build_random_model(TINY, seed=3)


def _same_state(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("safetensors", [False, True])
def test_round_trip_sharded(model, tmp_path: Path, safetensors: bool) -> None:
    out = save_hf_checkpoint(model, tmp_path / "ckpt", shard_size_mb=0.25, safetensors=safetensors)
    names = sorted(p.name for p in out.iterdir())
    index = "model.safetensors.index.json" if safetensors else "pytorch_model.bin.index.json"
    assert index in names and "config.json" in names
    shards = [n for n in names if n.endswith(".safetensors" if safetensors else ".bin")]
    assert len(shards) > 1 and shards[0].endswith(f"-00001-of-{len(shards):05d}." + shards[0].rsplit(".", 1)[1])
    keys = read_weights(out)
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" in keys
    assert "model.mm_projector.weight" in keys
    assert "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight" in keys
    assert "model.layers.1.self_attn.q_proj.weight" in keys
    hf_cfg = json.loads((out / "config.json").read_text())
    assert hf_cfg["model_type"] == "lita" and hf_cfg["mm_hidden_size"] == TINY.vision.hidden_size
    loaded = load_lita(out)
    _same_state(model, loaded)
    assert loaded.config.text == TINY.text and loaded.config.vision == TINY.vision and loaded.config.lita == TINY.lita


def test_released_configs_round_trip() -> None:
    for name in ("lita-13b", "lita-1.5-13b"):
        cfg = LitaConfig.from_name(name)
        hf = config_to_hf(cfg)
        assert "mm_vision_config" not in hf  # a released tower is named, not described
        back = config_from_hf(hf)
        assert (back.vision, back.text, back.lita) == (cfg.vision, cfg.text, cfg.lita)


def test_config_missing_keys_are_reported_and_defaults_documented(caplog) -> None:
    hf = config_to_hf(LitaConfig.from_name("lita-13b"))
    for key in ("num_time_tokens", "hidden_size"):
        broken = {k: v for k, v in hf.items() if k != key}
        with pytest.raises(CheckpointError, match=key):
            config_from_hf(broken)
    minimal = {k: v for k, v in hf.items() if k not in ("video_arch", "mm_projector_type", "visual_token_format")}
    with caplog.at_level("WARNING"):
        cfg = config_from_hf(minimal)
    assert cfg.lita.video_arch == "temporal" and cfg.lita.projector_type == "linear"
    assert "video_arch='temporal'" in caplog.text and "mm_projector_type='linear'" in caplog.text
    with pytest.raises(CheckpointError, match="input_type"):
        config_from_hf({k: v for k, v in hf.items() if k != "input_type"})  # reference default is 'image'
    with pytest.raises(CheckpointError, match="rope_scaling"):
        config_from_hf({**hf, "rope_scaling": {"type": "linear", "factor": 2.0}})
    with pytest.raises(CheckpointError, match="clip-vit-huge"):
        config_from_hf({**hf, "mm_vision_tower": "openai/clip-vit-huge"})


def _rewrite(src: Path, dst: Path, edit) -> Path:
    model = load_lita(src)
    save_hf_checkpoint(model, dst)
    weights = torch.load(dst / "pytorch_model.bin", weights_only=True)
    edit(weights)
    torch.save(weights, dst / "pytorch_model.bin")
    return dst


def test_missing_and_misshaped_tensors_are_named(model, tmp_path: Path) -> None:
    src = save_hf_checkpoint(model, tmp_path / "ok")
    key = "model.layers.1.mlp.down_proj.weight"
    missing = _rewrite(src, tmp_path / "missing", lambda w: w.pop(key))
    with pytest.raises(CheckpointError, match=r"missing tensors \(1\): " + key.replace(".", r"\.")):
        load_lita(missing)
    shape_key = "model.mm_projector.weight"
    bad = _rewrite(src, tmp_path / "bad", lambda w: w.__setitem__(shape_key, torch.zeros(3, 3)))
    with pytest.raises(CheckpointError, match=shape_key.replace(".", r"\.") + r": checkpoint \(3, 3\)"):
        load_lita(bad)
    extra = _rewrite(src, tmp_path / "extra", lambda w: w.__setitem__("model.foo.weight", torch.zeros(1)))
    with pytest.raises(CheckpointError, match=r"unexpected tensors \(1\): model\.foo\.weight"):
        load_lita(extra)


def test_separate_vision_tower_directory(model, tmp_path: Path) -> None:
    llm = save_hf_checkpoint(model, tmp_path / "lita", include_vision_tower=False, safetensors=True)
    assert not any("vision_tower" in k for k in read_weights(llm))
    with pytest.raises(CheckpointError, match="vision_tower_path"):
        load_lita(llm)
    tower = save_vision_tower(model, tmp_path / "clip")
    # released CLIP checkpoints also carry the text model and position_ids buffers
    weights = torch.load(tower / "pytorch_model.bin", weights_only=True)
    weights["vision_model.embeddings.position_ids"] = torch.arange(TINY.vision.num_patches + 1)[None]
    weights["text_model.embeddings.token_embedding.weight"] = torch.zeros(4, 4)
    weights["logit_scale"] = torch.tensor(1.0)
    torch.save(weights, tower / "pytorch_model.bin")
    _same_state(model, load_lita(llm, vision_tower_path=tower))
    # mm_vision_tower naming a local directory (relative to the checkpoint) is followed too
    cfg = json.loads((llm / "config.json").read_text())
    cfg["mm_vision_tower"] = "../clip"
    cfg.pop("mm_vision_config")
    (llm / "config.json").write_text(json.dumps(cfg))
    _same_state(model, load_lita(llm))


def test_llm_plus_separate_projector(model, tmp_path: Path) -> None:
    full = save_hf_checkpoint(model, tmp_path / "full")
    weights = torch.load(full / "pytorch_model.bin", weights_only=True)
    projector = {k: weights.pop(k) for k in list(weights) if "mm_projector" in k}
    llm = tmp_path / "vicuna"
    llm.mkdir()
    torch.save(weights, llm / "pytorch_model.bin")
    hf_cfg = json.loads((full / "config.json").read_text())
    vicuna_keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                   "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "model_type")
    (llm / "config.json").write_text(json.dumps({k: hf_cfg[k] for k in vicuna_keys}))
    proj_dir = tmp_path / "projector"
    proj_dir.mkdir()
    torch.save(projector, proj_dir / "mm_projector.bin")
    with pytest.raises(CheckpointError, match="mm_hidden_size"):
        load_lita(llm, mm_projector_path=proj_dir / "mm_projector.bin")  # no LITA keys anywhere
    (proj_dir / "config.json").write_text(json.dumps(hf_cfg))
    _same_state(model, load_lita(llm, mm_projector_path=proj_dir))
    # a projector file alone, LITA keys given explicitly
    lita_keys = {k: v for k, v in hf_cfg.items() if k not in vicuna_keys}
    _same_state(model, load_lita(llm, mm_projector_path=proj_dir / "mm_projector.bin", hf_overrides=lita_keys))


def test_vocab_expansion_to_tokenizer_size(model, tmp_path: Path) -> None:
    src = save_hf_checkpoint(model, tmp_path / "ckpt", safetensors=True)
    vocab = TINY.text.vocab_size
    grown = load_lita(src, tokenizer_size=vocab + 100)  # e.g. 100 time tokens
    assert grown.config.text.vocab_size == 640 and 640 % 128 == 0
    for new, old in ((grown.decoder.model.embed_tokens.weight, model.decoder.model.embed_tokens.weight),
                     (grown.decoder.lm_head.weight, model.decoder.lm_head.weight)):
        assert new.shape == (640, TINY.text.hidden_size)
        assert torch.equal(new[:vocab], old)
        assert torch.allclose(new[vocab:], old.mean(0).expand(640 - vocab, -1))
    assert load_lita(src, tokenizer_size=vocab).config.text.vocab_size == vocab  # already a multiple
    assert load_lita(src, tokenizer_size=vocab + 1, vocab_multiple=64).config.text.vocab_size == vocab + 64
    # the grown model still decodes and saves in the same layout
    resaved = load_lita(save_hf_checkpoint(grown, tmp_path / "grown"))
    _same_state(grown, resaved)


def test_projector_time_token_rows(model, tmp_path: Path) -> None:
    """LITA's model_base flow: time-token rows of embed/lm_head travel in mm_projector.bin."""
    full = save_hf_checkpoint(model, tmp_path / "full")
    weights = torch.load(full / "pytorch_model.bin", weights_only=True)
    vocab = TINY.text.vocab_size
    trained_embed = torch.randn(vocab + 128, TINY.text.hidden_size)
    trained_head = torch.randn(vocab + 128, TINY.text.hidden_size)
    projector = {k: weights.pop(k) for k in list(weights) if "mm_projector" in k}
    projector.update({"model.embed_tokens.weight": trained_embed, "lm_head.weight": trained_head})
    llm = tmp_path / "llm"
    llm.mkdir()
    torch.save(weights, llm / "pytorch_model.bin")
    (llm / "config.json").write_text((full / "config.json").read_text())
    proj = tmp_path / "proj"
    proj.mkdir()
    torch.save(projector, proj / "mm_projector.bin")
    time_ids = list(range(vocab, vocab + 100))
    cfg = json.loads((full / "config.json").read_text())
    (proj / "config.json").write_text(json.dumps({**cfg, "time_token_ids": time_ids}))
    loaded = load_lita(llm, mm_projector_path=proj, tokenizer_size=vocab + 100)
    assert torch.equal(loaded.decoder.model.embed_tokens.weight[time_ids], trained_embed[time_ids])
    assert torch.equal(loaded.decoder.lm_head.weight[time_ids], trained_head[time_ids])
    assert torch.equal(loaded.decoder.model.embed_tokens.weight[:vocab], model.decoder.model.embed_tokens.weight)


def test_demo_checkpoint_is_reproducible_and_loads(tmp_path: Path) -> None:
    a = write_demo_checkpoint(tmp_path / "a", TINY, seed=5, tokenizer_size=TINY.text.vocab_size + 100)
    b = write_demo_checkpoint(tmp_path / "b", TINY, seed=5, tokenizer_size=TINY.text.vocab_size + 100)
    ma, mb = load_lita(a), load_lita(b)
    _same_state(ma, mb)
    assert ma.config.text.vocab_size == 640
    frames = torch.randn(2, 3, TINY.vision.image_size, TINY.vision.image_size)
    tokens = ma.encode_video(frames)
    assert tokens.dim() == 2 and tokens.shape[1] == TINY.text.hidden_size
    from lita_serve.llm.sampling_params import SamplingParams
    from lita_serve.llm.generate import generate
    vocab = ma.config.text.vocab_size
    prompt = [1, 5] + [vocab + i for i in range(tokens.shape[0])] + [9]
    out = generate(ma.decoder, prompt, tokens, SamplingParams(max_tokens=4), eos_id=-1)
    assert len(out) == 4 and all(0 <= t < vocab for t in out)
    other = load_lita(write_demo_checkpoint(tmp_path / "c", TINY, seed=6))
    assert not torch.equal(other.decoder.lm_head.weight, ma.decoder.lm_head.weight[:TINY.text.vocab_size])


def test_load_in_half_precision(model, tmp_path: Path) -> None:
    src = save_hf_checkpoint(model, tmp_path / "ckpt")
    half = load_lita(src, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    assert replace(half.config, limits=TINY.limits).text == TINY.text
