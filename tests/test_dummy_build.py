"""``lita build --dummy-weights`` and ``--device cuda``: repositories for speed measurements on GPUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lita_build.builder import build
from lita_build.dummy import build_dummy
from lita_build.repository import check_model_repository
from lita_serve.cli import main as lita_main
from lita_serve.serving.demo import demo_assets
from lita_serve.errors import InvalidInputError
from lita_serve.adapters.layout import RepositoryLayout
from lita_serve.engine.torch_engine import load_decoder, load_encoder

TOKENIZER = demo_assets() / "tokenizer.model"


def _kinds(repo: Path) -> dict[str, str]:
    return {step: next(line.split(":")[1].strip() for line in (repo / step / "config.pbtxt").read_text().splitlines()
                       if line.strip().startswith("kind:"))
            for step in ("preprocess", "vision_encoder", "llm", "postprocess")}


def test_dummy_repository_has_no_weights_and_loads_the_presets_shapes(tmp_path) -> None:
    summary = build_dummy("tiny", TOKENIZER, output=tmp_path / "repo", dtype="float16", device="cpu",
                          overrides={"sample_frames": 16})
    layout = RepositoryLayout.of(tmp_path / "repo")
    assert check_model_repository(layout.root) == []
    assert not layout.encoder_weights.exists() and not layout.decoder_weights.exists()
    manifest = layout.manifest()
    assert manifest.weights == "dummy" and manifest.source == "dummy:tiny" and manifest.dtype == "float16"
    cfg = layout.load_config()
    assert cfg.lita.sample_frames == 16 and cfg.name == "lita-tiny"
    assert cfg.text.vocab_size >= summary.config.text.vocab_size >= 710  # grown to the demo tokenizer, padded
    first, again = load_decoder(layout, cfg, device="cpu"), load_decoder(layout, cfg, device="cpu")
    assert first.lm_head.weight.dtype == torch.float32  # the CPU computes in fp32 whatever the build's dtype
    assert torch.equal(first.lm_head.weight, again.lm_head.weight)  # the same draw at every load
    std = float(first.lm_head.weight.detach().std())
    assert 0.015 < std < 0.025
    encoder = load_encoder(layout, cfg, device="cpu")
    assert encoder(torch.zeros(1, 16, 3, 224, 224)).shape[-1] == cfg.text.hidden_size


def test_device_cuda_puts_the_torch_models_on_gpu_instances(tmp_path) -> None:
    assets = demo_assets()
    build(assets, TOKENIZER, lita_version="1.0", output=tmp_path / "gpu", progress=False, device="cuda")
    assert _kinds(tmp_path / "gpu") == {"preprocess": "KIND_CPU", "vision_encoder": "KIND_GPU", "llm": "KIND_GPU",
                                        "postprocess": "KIND_CPU"}
    assert json.loads((tmp_path / "gpu" / "build.json").read_text())["device"] == "cuda"
    build_dummy("tiny", TOKENIZER, output=tmp_path / "cpu", device="cpu")
    assert set(_kinds(tmp_path / "cpu").values()) == {"KIND_CPU"}


def test_bad_dummy_builds_name_the_problem(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="unknown preset"):
        build_dummy("lita-7b", TOKENIZER, output=tmp_path / "a")
    with pytest.raises(InvalidInputError, match="unknown LITA options"):
        build_dummy("tiny", TOKENIZER, output=tmp_path / "b", overrides={"frames": 8})
    with pytest.raises(InvalidInputError, match="--device"):
        build_dummy("tiny", TOKENIZER, output=tmp_path / "c", device="tpu")


def test_cli_takes_a_checkpoint_or_dummy_weights(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit, match="--dummy-weights"):
        lita_main(["build", "--tokenizer", str(TOKENIZER), "--output", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="--lita-version"):
        lita_main(["build", "--checkpoint", str(demo_assets()), "--tokenizer", str(TOKENIZER),
                   "--output", str(tmp_path / "y")])
    assert lita_main(["build", "--dummy-weights", "tiny", "--tokenizer", str(TOKENIZER), "--device", "cpu",
                      "--set", "sample_frames=8", "--output", str(tmp_path / "z")]) == 0
    assert RepositoryLayout.of(tmp_path / "z").has_dummy_weights()
    assert "dummy:tiny" in capsys.readouterr().out
