"""Reading .nemo checkpoints without NeMo: NeVA key names, grouped QKV, stacked distributed layers."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch

from build_fixtures import _interleave_qkv, model_for, nemo_distributed, nemo_legacy
from lita_build.nemo import nemo_to_hf, read_nemo, split_qkv
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
