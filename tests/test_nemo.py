"""Reading .nemo checkpoints without NeMo: NeVA key names, grouped QKV, stacked distributed layers."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from build_fixtures import _interleave_qkv, hf_lita, model_for, nemo_config, nemo_distributed, nemo_legacy
from nemo_facts import nemo_from_hf, split_tensor_parallel, write_nemo
from lita_build.checkpoint.files import read_weights
from lita_build.nemo import nemo_spatial_frames, nemo_to_hf, read_nemo, split_qkv
from lita_build.sources import describe_source
from lita_build.checkpoint.keymap import LITA_PREFIXES, to_hf
from lita_serve.errors import CheckpointError, MissingDependencyError


def test_split_qkv_grouped_query_attention() -> None:
    heads, groups, d, h = 8, 2, 3, 5
    q = torch.arange(heads * d * h, dtype=torch.float32).reshape(heads * d, h)
    k = -torch.arange(groups * d * h, dtype=torch.float32).reshape(groups * d, h) - 1
    v = k - 1000
    fused = _interleave_qkv(q, k, v, heads, groups)
    # group 0 = q heads 0..3, k head 0, v head 0 (NeMo's layout)
    assert torch.equal(fused[4 * d:5 * d], k[:d]) and torch.equal(fused[5 * d:6 * d], v[:d])
    assert torch.equal(fused[6 * d:7 * d], q[4 * d:5 * d])
    for got, want in zip(split_qkv(fused, heads, groups), (q, k, v)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("writer,fmt", [(nemo_legacy, "legacy"), (nemo_distributed, "torch_dist")])
def test_read_nemo_to_hf_names(tmp_path: Path, writer, fmt: str) -> None:
    model = model_for("1.5", seed=9)
    nemo_file, tower = writer(model, tmp_path)
    assert describe_source(nemo_file, lita_version="1.5").nemo_weights == ("legacy" if fmt == "legacy" else "distributed")
    ckpt = read_nemo(nemo_file, tmp_path / "x")
    assert ckpt.weights_format == fmt
    hf_cfg, state = nemo_to_hf(ckpt)
    expected = {to_hf(k, LITA_PREFIXES): v for k, v in model.state_dict().items()
                if not k.startswith("encoder.vision_tower.")}
    assert state.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor), key
    t = model.config.text
    assert hf_cfg["vocab_size"] == t.vocab_size and hf_cfg["num_key_value_heads"] == t.num_key_value_heads
    assert hf_cfg["mm_projector_type"] == "mlp2x_gelu" and hf_cfg["video_arch"] == "temporal_all_resolution"
    assert hf_cfg["num_spatial_frames"] == model.config.lita.num_spatial_frames
    assert hf_cfg["mm_hidden_size"] == model.config.vision.hidden_size and hf_cfg["input_type"] == "video"


def test_unknown_tensors_and_zarr_are_reported(tmp_path: Path) -> None:
    model = model_for("1.0", seed=1)
    nemo_file, _ = nemo_legacy(model, tmp_path)
    ckpt = read_nemo(nemo_file, tmp_path / "x")
    ckpt.state["model.decoder.layers.0.self_attention.core_attention.foo"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unrecognised tensors .*core_attention\.foo"):
        nemo_to_hf(ckpt)
    stage = tmp_path / "zarr"
    (stage / "model_weights").mkdir(parents=True)
    (stage / "model_config.yaml").write_text("num_layers: 2\n")
    (stage / "model_weights" / "metadata.json").write_text(json.dumps({"sharded_backend": "zarr"}))
    with pytest.raises(MissingDependencyError, match="megatron-core"):
        read_nemo(stage, tmp_path / "y")
    bad = tmp_path / "bad.nemo"
    with tarfile.open(bad, "w") as tar:
        tar.add(stage / "model_config.yaml", arcname="model_config.yaml")
    with pytest.raises(CheckpointError, match="neither model_weights.ckpt"):
        describe_source(bad, lita_version="1.0")


# --- inputs written from the NeMo fact tables (tests/nemo_facts.py) --------------------------------

def _hf_state(model, tmp_path: Path) -> dict[str, torch.Tensor]:
    return read_weights(hf_lita(model, tmp_path / "hf"))


def _expected_hf(model, *, tower: bool) -> dict[str, torch.Tensor]:
    return {to_hf(k, LITA_PREFIXES): v for k, v in model.state_dict().items()
            if tower or not k.startswith("encoder.vision_tower.")}


def _assert_same_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert state.keys() == expected.keys(), sorted(state.keys() ^ expected.keys())
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor), key


def test_local_layer_spec_norm_names(tmp_path: Path) -> None:
    """megatron-core's local spec: input_layernorm / pre_mlp_layernorm instead of TransformerEngine's fused names."""
    model = model_for("1.0", seed=3)
    t = model.config.text
    state = nemo_from_hf(_hf_state(model, tmp_path), t.num_attention_heads, t.num_key_value_heads, norms="local")
    assert "model.decoder.layers.1.pre_mlp_layernorm.weight" in state
    assert not any("layer_norm_weight" in k for k in state)
    nemo_file = write_nemo(tmp_path / "local.nemo", nemo_config(model, tmp_path / "tower"), [state])
    _, hf_state = nemo_to_hf(read_nemo(nemo_file, tmp_path / "x"))
    _assert_same_tensors(hf_state, _expected_hf(model, tower=False))


@pytest.mark.parametrize("tp", [1, 2])
def test_stored_tower_and_tensor_parallel_ranks_read_as_one_model(tmp_path: Path, tp: int) -> None:
    model = model_for("1.5", seed=4)
    t = model.config.text
    full = nemo_from_hf(_hf_state(model, tmp_path), t.num_attention_heads, t.num_key_value_heads, tower=True)
    assert any(k.startswith("model.embedding.word_embeddings.vision_encoder.vision_model.encoder.") for k in full)
    cfg = {**nemo_config(model, tmp_path / "tower"), "tensor_model_parallel_size": tp}
    ranks = split_tensor_parallel(full, tp)
    if tp > 1:  # the fixture is really sharded: rank 0 holds half of qkv, of the vocabulary and of o_proj's inputs
        qkv = "model.decoder.layers.0.self_attention.linear_qkv.weight"
        assert ranks[0][qkv].shape[0] * tp == full[qkv].shape[0]
        assert ranks[1]["model.output_layer.weight"].shape[0] * tp == t.vocab_size
        assert ranks[0]["model.decoder.layers.0.self_attention.linear_proj.weight"].shape[1] * tp == t.hidden_size
    nemo_file = write_nemo(tmp_path / "m.nemo", cfg, ranks)
    src = describe_source(nemo_file, lita_version="1.5")
    assert src.nemo_weights == ("legacy" if tp == 1 else "tensor-parallel")
    ckpt = read_nemo(nemo_file, tmp_path / "x")
    assert ckpt.tensor_parallel == tp
    _, hf_state = nemo_to_hf(ckpt)
    _assert_same_tensors(hf_state, _expected_hf(model, tower=True))


def test_tensor_parallel_archive_errors(tmp_path: Path) -> None:
    model = model_for("1.0", seed=5)
    t = model.config.text
    full = nemo_from_hf(_hf_state(model, tmp_path), t.num_attention_heads, t.num_key_value_heads)
    ranks = split_tensor_parallel(full, 2)
    cfg = {**nemo_config(model, tmp_path / "tower"), "tensor_model_parallel_size": 4}
    with pytest.raises(CheckpointError, match="2 mp_rank_XX folders but tensor_model_parallel_size=4"):
        read_nemo(write_nemo(tmp_path / "a.nemo", cfg, ranks), tmp_path / "a")
    ranks[1]["model.decoder.final_layernorm.weight"] = ranks[1]["model.decoder.final_layernorm.weight"] + 1
    cfg["tensor_model_parallel_size"] = 2
    with pytest.raises(CheckpointError, match="final_layernorm.weight differs between tensor-parallel ranks"):
        read_nemo(write_nemo(tmp_path / "b.nemo", cfg, ranks), tmp_path / "b")
    pp = tmp_path / "pp.nemo"
    with tarfile.open(pp, "w") as tar:
        for name in ("model_config.yaml", "tp_rank_00_pp_rank_000/model_weights.ckpt"):
            info = tarfile.TarInfo(name)
            tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(CheckpointError, match="pipeline-parallel"):
        describe_source(pp, lita_version="1.0")


@pytest.mark.parametrize("arch,sample_frames,spatial", [
    ("temporal_all_resolution", 3, 3),  # NeMo: idx = linspace(0, T-1, sample_frames)
    ("temporal_spatial_pool", 7, 4),  # NeMo: pool_size * pool_size = 4 frames, sample_frames unused
    ("temporal_spatial", 7, None),  # NeMo: spatial tokens averaged over all frames
])
def test_sample_frames_only_where_nemo_reads_it(arch: str, sample_frames: int, spatial) -> None:
    assert nemo_spatial_frames({"lita_video_arch": arch, "sample_frames": sample_frames}) == spatial
    assert nemo_spatial_frames({"sample_frames": 9}) == 4  # NeMo's default arch is temporal_spatial_pool
