"""Tests of the visual side: CLIP parity with transformers, projector keys, LITA pooling layouts."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from lita_serve.config import VIDEO_ARCHS, LitaConfig, VisionConfig
from lita_serve.vision_encoder.clip import CLIPVisionTower
from lita_serve.vision_encoder.encoder import VisualEncoder
from lita_serve.vision_encoder.projector import build_projector
from lita_serve.vision_encoder.visual_tokens import num_visual_tokens, pool_visual_tokens, select_frame_indices, visual_token_segments
from lita_serve.errors import InvalidInputError

torch.manual_seed(0)


def tiny_vision(image_size: int = 224, layers: int = 3) -> VisionConfig:
    return VisionConfig(image_size=image_size, patch_size=14, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=layers, num_attention_heads=4)


def hf_tower(vc: VisionConfig) -> CLIPVisionModel:
    """A transformers CLIP tower with randomised (non-default) weights."""
    hf_cfg = CLIPVisionConfig(image_size=vc.image_size, patch_size=vc.patch_size, hidden_size=vc.hidden_size,
                              intermediate_size=vc.intermediate_size, num_hidden_layers=vc.num_hidden_layers,
                              num_attention_heads=vc.num_attention_heads, layer_norm_eps=vc.layer_norm_eps,
                              hidden_act="quick_gelu", attn_implementation="eager")
    model = CLIPVisionModel(hf_cfg).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("vision_model."): v for k, v in state.items()}


@pytest.mark.parametrize("image_size", [224, 336])
def test_clip_tower_matches_transformers(image_size: int) -> None:
    vc = tiny_vision(image_size)
    hf = hf_tower(vc)
    ours = CLIPVisionTower(vc).eval()
    hf_state = strip_prefix(hf.state_dict())
    assert set(ours.state_dict()) == set(hf_state)
    ours.load_state_dict(hf_state, strict=True)

    pixels = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        want = hf(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        got = ours(pixels)
    assert got.shape == (2, vc.grid * vc.grid, vc.hidden_size)
    assert (got - want).abs().max().item() < 1e-4


def test_clip_tower_select_layer_and_skipped_layers() -> None:
    vc = dataclasses.replace(tiny_vision(), select_layer=1)
    hf = hf_tower(vc)
    ours = CLIPVisionTower(vc).eval()
    ours.load_state_dict(strip_prefix(hf.state_dict()))
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        want = hf(pixel_values=pixels, output_hidden_states=True).hidden_states[1][:, 1:]
        # Layers after the selected one and post_layernorm must not be computed: poison them.
        for layer in ours.encoder.layers[1:]:
            for p in layer.parameters():
                p.fill_(float("nan"))
        ours.post_layernorm.weight.fill_(float("nan"))
        got = ours(pixels)
    assert torch.isfinite(got).all()
    assert (got - want).abs().max().item() < 1e-4


def test_clip_tower_rejects_bad_input_and_select_layer() -> None:
    tower = CLIPVisionTower(tiny_vision())
    with pytest.raises(InvalidInputError):
        tower(torch.zeros(1, 3, 336, 336))
    with pytest.raises(ValueError):
        CLIPVisionTower(dataclasses.replace(tiny_vision(), select_layer=-5))


def test_projector_keys_and_shapes() -> None:
    linear = build_projector("linear", 32, 48)
    assert {k: tuple(v.shape) for k, v in linear.state_dict().items()} == {"weight": (48, 32), "bias": (48,)}
    mlp = build_projector("mlp2x_gelu", 32, 48)
    assert {k: tuple(v.shape) for k, v in mlp.state_dict().items()} == {
        "0.weight": (48, 32), "0.bias": (48,), "2.weight": (48, 48), "2.bias": (48,)}
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        want = mlp[2](torch.nn.functional.gelu(mlp[0](x)))
        assert torch.allclose(mlp(x), want)
    assert linear(x).shape == (3, 5, 48)
    with pytest.raises(ValueError):
        build_projector("mlp3x_gelu", 32, 48)


# ---- pooling ----------------------------------------------------------------------------------

def coded_tokens(t: int, grid: int, d: int) -> torch.Tensor:
    """tokens[0, t, s, d] = 100 t + 10 s + d, so every pooled value can be worked out by hand."""
    s = grid * grid
    return (100 * torch.arange(t).view(t, 1, 1) + 10 * torch.arange(s).view(1, s, 1)
            + torch.arange(d).view(1, 1, d)).float().unsqueeze(0)


def opts(arch: str, **kw) -> LitaConfig:
    cfg = LitaConfig.from_name("tiny")
    return dataclasses.replace(cfg, lita=dataclasses.replace(cfg.lita, video_arch=arch, **kw))


T, GRID, D = 7, 4, 2  # frames, 4x4 patches, width


def expected_temporal() -> list[list[float]]:
    # mean over s in 0..15 of 10 s = 75
    return [[100 * t + 75 + d for d in range(D)] for t in range(T)]


def expected_spatial() -> list[list[float]]:
    # mean over t in 0..6 of 100 t = 300
    return [[300 + 10 * s + d for d in range(D)] for s in range(GRID * GRID)]


def expected_slow(frames: list[int]) -> list[list[float]]:
    # 2x2 block (R, C) holds s = 4 r + c with r in {2R, 2R+1}, c in {2C, 2C+1}: mean s = 8R + 2C + 2.5
    return [[100 * t + 10 * (8 * r + 2 * c + 2.5) + d for d in range(D)]
            for t in frames for r in range(2) for c in range(2)]


def expected_full(frames: list[int]) -> list[list[float]]:
    return [[100 * t + 10 * s + d for d in range(D)] for t in frames for s in range(GRID * GRID)]


def test_select_frame_indices() -> None:
    assert select_frame_indices(100, 4) == [0, 33, 66, 99]
    assert select_frame_indices(T, 4) == [0, 2, 4, 6]
    assert select_frame_indices(1, 4) == [0, 0, 0, 0]


@pytest.mark.parametrize("arch", VIDEO_ARCHS)
def test_pooling_hand_computed(arch: str) -> None:
    frames = [0, 2, 4, 6]
    expected = {
        "temporal": expected_temporal(),
        "spatial": expected_spatial(),
        "temporal_spatial": expected_temporal() + expected_spatial(),
        "temporal_spatial_pool": expected_temporal() + expected_slow(frames),
        "spatial_pool": expected_slow(frames),
        "temporal_all_resolution": expected_full(frames) + expected_temporal(),
    }[arch]
    got = pool_visual_tokens(coded_tokens(T, GRID, D), opts(arch).lita, GRID)
    assert got.tolist() == [expected]


def test_pooling_spatial_kernel_and_frame_count_follow_config() -> None:
    o = opts("spatial_pool", num_spatial_frames=2, spatial_pool=4).lita
    got = pool_visual_tokens(coded_tokens(T, GRID, D), o, GRID)
    # frames round(linspace(0, 6, 2)) = [0, 6]; one 4x4 block per frame: mean s = 7.5
    assert got.tolist() == [[[100 * t + 75 + d for d in range(D)] for t in (0, 6)]]


def test_num_visual_tokens_for_presets_and_grids() -> None:
    lita10 = LitaConfig.from_name("lita-13b")
    assert lita10.vision.grid == 16
    assert num_visual_tokens(lita10) == 100 + 4 * 8 * 8 == 356
    lita15 = LitaConfig.from_name("lita-1.5-13b")
    assert lita15.vision.grid == 24
    assert num_visual_tokens(lita15) == 4 * 24 * 24 + 100
    assert visual_token_segments(lita15) == [("image", 576)] * 4 + [("video", 100)]
    pool336 = dataclasses.replace(lita15, lita=dataclasses.replace(lita15.lita, video_arch="temporal_spatial_pool"))
    assert num_visual_tokens(pool336) == 100 + 4 * 12 * 12
    assert visual_token_segments(pool336) == [("temporal", 100), ("spatial", 576)]
    assert num_visual_tokens(lita10, num_frames=8) == 8 + 256
    with pytest.raises(ValueError):
        num_visual_tokens(opts("temporal_spatial_unknown"))


# ---- encoder ----------------------------------------------------------------------------------

def tiny_cfg(arch: str = "temporal_spatial_pool", projector: str = "linear") -> LitaConfig:
    cfg = LitaConfig.from_name("tiny")
    return dataclasses.replace(cfg, vision=tiny_vision(),
                               lita=dataclasses.replace(cfg.lita, video_arch=arch, projector_type=projector))


def frames(b: int, f: int, size: int = 224) -> torch.Tensor:
    return torch.randn(b, f, 3, size, size, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("arch", VIDEO_ARCHS)
def test_encoder_token_count_matches_config(arch: str) -> None:
    cfg = tiny_cfg(arch)
    enc = VisualEncoder.from_config(cfg)
    with torch.no_grad():
        out = enc(frames(2, 5))
    assert out.shape == (2, num_visual_tokens(cfg, num_frames=5), cfg.text.hidden_size)


def test_mlp2x_gelu_projects_before_pooling() -> None:
    cfg = tiny_cfg("temporal_spatial_pool", "mlp2x_gelu")
    enc = VisualEncoder.from_config(cfg)
    x = frames(1, 6)
    with torch.no_grad():
        got = enc(x)
        patch = enc.vision_tower(x[0]).unsqueeze(0)  # [1, F, S, Dv]
        project_then_pool = pool_visual_tokens(enc.mm_projector(patch), cfg.lita, cfg.vision.grid)
        pool_then_project = enc.mm_projector(pool_visual_tokens(patch, cfg.lita, cfg.vision.grid))
    assert torch.allclose(got, project_then_pool, atol=1e-5)
    assert (got - pool_then_project).abs().max().item() > 1e-3


def test_frame_chunking_does_not_change_output() -> None:
    cfg = tiny_cfg()
    enc = VisualEncoder.from_config(cfg, frame_chunk=2)
    x = frames(2, 5)
    with torch.no_grad():
        chunked = enc(x)
        enc.frame_chunk = 64
        whole = enc(x)
    assert torch.allclose(chunked, whole, atol=1e-5)
    with pytest.raises(InvalidInputError):
        enc(torch.zeros(1, 3, 224, 224))


def test_meta_build_then_assign_load() -> None:
    cfg = tiny_cfg(projector="mlp2x_gelu")
    real = VisualEncoder.from_config(cfg)
    meta = VisualEncoder.from_config(cfg, device="meta", dtype=torch.float16)
    assert all(p.is_meta and p.dtype == torch.float16 for p in meta.parameters())
    meta.load_state_dict(real.state_dict(), assign=True)
    assert not any(t.is_meta for t in list(meta.parameters()) + list(meta.buffers()))
    x = frames(1, 4)
    with torch.no_grad():
        assert torch.equal(meta(x), real(x))


def test_bf16_cpu_close_to_fp32() -> None:
    cfg = tiny_cfg()
    enc = VisualEncoder.from_config(cfg)
    x = frames(1, 4)
    with torch.no_grad():
        want = enc(x)
        got = enc.to(torch.bfloat16)(x)
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max().item() < 0.05 * want.abs().max().item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_matches_cpu_fp32() -> None:
    cfg = tiny_cfg(projector="mlp2x_gelu")
    enc = VisualEncoder.from_config(cfg)
    x = frames(2, 6)
    with torch.no_grad():
        want = enc(x)
        gpu = VisualEncoder.from_config(cfg, device="cuda", dtype=torch.float16)
        gpu.load_state_dict(enc.state_dict())
        got = gpu(x.cuda().half())
    assert got.dtype == torch.float16 and got.is_cuda
    assert (got.float().cpu() - want).abs().max().item() < 1e-2 * max(1.0, want.abs().max().item())
