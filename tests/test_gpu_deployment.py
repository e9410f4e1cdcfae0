"""The GPU deployment as written on a machine without a GPU: `lita build --engine tensorrt_llm
--dry-run` writes the whole repository for the current container release, the llm model's
request matches the generated tensorrt_llm config, and GPU models place themselves on the
device Triton gives each instance.

Upstream facts pinned here (NVIDIA/TensorRT-LLM 1.x, the release of the 25.12 container):
``triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt`` declares ``seed``
(TYPE_UINT64), ``prompt_embedding_table`` in the engine's dtype and the ``gpu_device_ids`` and
``executor_worker_path`` (/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker) parameters;
``tensorrt_llm/commands/build.py`` accepts ``--max_multimodal_len`` as an alias of
``--max_prompt_embedding_table_size``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lita_build.builder import build
from lita_serve.adapters.layout import RepositoryLayout
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.llm.trtllm_bls import TensorRTLLMBackend, request_tensors, triton_type
from lita_serve.llm.trtllm_release import DEFAULT_RELEASE, trtllm_release
from lita_serve.adapters.resources import adapter_path, demo_assets
from lita_serve.adapters.triton_io import instance_device

ROOT = Path(__file__).resolve().parents[1]


def declared_inputs(pbtxt: str) -> dict[str, str]:
    block = pbtxt.split("input [", 1)[1].split("output [", 1)[0]
    return dict(re.findall(r'name: "(\w+)"\s+data_type: TYPE_(\w+)', block))


def parameters(pbtxt: str) -> dict[str, str]:
    return dict(re.findall(r'key: "(\w+)"\s+value: \{\s+string_value: "([^"]*)"', pbtxt))


@pytest.fixture(scope="module")
def dry_run_bf16(tmp_path_factory) -> Path:
    """`lita build --engine tensorrt_llm --dtype bfloat16 --dry-run` through the CLI (no TensorRT-LLM here)."""
    out = tmp_path_factory.mktemp("trtllm_dry") / "repo"
    assets = demo_assets()
    proc = subprocess.run([sys.executable, "-m", "lita_serve.cli", "build", "--checkpoint", str(assets),
                           "--tokenizer", str(assets / "tokenizer.model"), "--lita-version", "1.0",
                           "--engine", "tensorrt_llm", "--dtype", "bfloat16", "--dry-run", "--output", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_dry_run_writes_the_current_release_repository(dry_run_bf16: Path) -> None:
    out = dry_run_bf16
    text = (out / "tensorrt_llm" / "config.pbtxt").read_text()
    declared = declared_inputs(text)
    assert declared["seed"] == "UINT64" and "random_seed" not in declared
    assert declared["prompt_embedding_table"] == "BF16"
    params = parameters(text)
    assert params["executor_worker_path"] == "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker"
    assert params["gpu_device_ids"] == "0"
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["dry_run"] and manifest["engine"] == "tensorrt_llm" and manifest["encoder_engine"] == "tensorrt"
    built = manifest["trtllm"]
    assert built["release"] == DEFAULT_RELEASE and built["version"] == trtllm_release().trtllm_version
    assert built["dtype"] == "bfloat16" and built["image"].endswith("-trtllm-python-py3")
    command = built["trtllm_build_command"]
    assert command[0] == "trtllm-build"
    flags = dict(zip(command[1::2], command[2::2]))
    assert Path(flags["--checkpoint_dir"]) == out / "tensorrt_llm_checkpoint"
    assert flags["--gemm_plugin"] == "bfloat16" and int(flags["--max_multimodal_len"]) > 0
    ckpt = json.loads((out / "tensorrt_llm_checkpoint" / "config.json").read_text())
    assert ckpt["dtype"] == "bfloat16" and ckpt["mapping"]["tp_size"] == 1
    assert (out / "tensorrt_llm_checkpoint" / "rank0.safetensors").is_file()
    assert (out / "vision_encoder" / "1" / "encoder.onnx").is_file()  # the plan is built from it on the GPU
    assert "encoder_plan" in manifest and not (out / "vision_encoder" / "1" / "encoder.plan").exists()
    # the GPU encoder runs on every GPU Triton sees; the llm step only forwards (BLS) and stays on the CPU
    assert "kind: KIND_GPU" in (out / "vision_encoder" / "config.pbtxt").read_text()
    assert "kind: KIND_CPU" in (out / "llm" / "config.pbtxt").read_text()
    assert "gpus:" not in (out / "vision_encoder" / "config.pbtxt").read_text()


def test_llm_request_matches_the_dry_run_config(dry_run_bf16: Path) -> None:
    """The llm model's backend, set up from build.json as its adapter does, sends exactly the
    generated config's names and types (BF16 table, `seed`)."""
    layout = RepositoryLayout.of(dry_run_bf16)
    cfg = layout.load_config()
    backend = TensorRTLLMBackend.from_manifest(None, layout.manifest(), cfg.text.vocab_size, pad_id=0)
    declared = declared_inputs((layout.root / "tensorrt_llm" / "config.pbtxt").read_text())
    table = np.ones((7, cfg.text.hidden_size), np.float32)
    tensors = request_tensors([1, 2, 3], table, SamplingParams(max_tokens=3, greedy=False, seed=11), eos_id=2,
                              pad_id=0, dtype=backend.dtype, release=backend.release)
    assert {name: triton_type(v) for name, v in tensors.items()} == {name: declared[name] for name in tensors}


def test_tensor_parallel_and_pinned_gpus(tmp_path: Path) -> None:
    """TP 2 on GPUs 2,3: the engine's ranks, the orchestrator's worker and the pinned instances."""
    assets = demo_assets()
    out = tmp_path / "repo"
    try:
        build(assets, assets / "tokenizer.model", lita_version="1.0", engine="tensorrt_llm", output=out,
              dtype="float16", tp_size=2, gpus=(2, 3), dry_run=True, progress=False)
    except Exception as exc:  # the demo decoder must split two ways; say so if it cannot
        pytest.fail(f"dry-run TP=2 build failed: {exc}")
    text = (out / "tensorrt_llm" / "config.pbtxt").read_text()
    assert parameters(text)["gpu_device_ids"] == "2,3"
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["trtllm"]["orchestrator"] is True and manifest["gpus"] == [2, 3]
    assert "--workers" in manifest["trtllm"]["trtllm_build_command"]
    assert sorted(p.name for p in (out / "tensorrt_llm_checkpoint").glob("rank*.safetensors")) == \
        ["rank0.safetensors", "rank1.safetensors"]
    assert "gpus: [ 2, 3 ]" in (out / "vision_encoder" / "config.pbtxt").read_text()


def test_an_older_release_gets_its_own_names(tmp_path: Path) -> None:
    assets = demo_assets()
    build(assets, assets / "tokenizer.model", lita_version="1.0", engine="tensorrt_llm", output=tmp_path / "r",
          dtype="float16", trtllm_release_tag="24.12", dry_run=True, progress=False)
    declared = declared_inputs((tmp_path / "r" / "tensorrt_llm" / "config.pbtxt").read_text())
    assert "random_seed" in declared and "seed" not in declared


def test_instances_compute_on_their_own_gpu() -> None:
    """Triton hands each KIND_GPU instance its device as model_instance_device_id."""
    gpu1 = {"model_instance_kind": "GPU", "model_instance_device_id": "1"}
    assert instance_device(gpu1, cuda_available=True) == "cuda:1"
    assert instance_device(gpu1, cuda_available=False) == "cpu"
    assert instance_device({"model_instance_kind": "CPU", "model_instance_device_id": "0"}, True) == "cpu"
    for step in ("vision_encoder", "llm"):
        source = adapter_path(step).read_text()
        assert "instance_device(args" in source and '"cuda" if' not in source, step


def test_gpus_flag_is_checked() -> None:
    proc = subprocess.run([sys.executable, "-m", "lita_serve.cli", "build", "--checkpoint", "x", "--tokenizer", "y",
                           "--lita-version", "1.0", "--gpus", "0,a"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--gpus takes GPU indices" in proc.stderr


def test_compose_and_image_follow_the_release_table() -> None:
    """docker-compose.yml and build/Dockerfile default to the table's release, pass it to the build,
    and run the server in orchestrator mode (multi-rank engines without an MPI launch)."""
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    tag = DEFAULT_RELEASE
    assert compose["services"]["serve"]["image"] == f"lita-serve:trtllm-${{TRITON_TAG:-{tag}}}"
    assert f"--trtllm-release ${{TRITON_TAG:-{tag}}}" in compose["services"]["build"]["command"]
    assert compose["services"]["serve"]["environment"]["TRTLLM_ORCHESTRATOR"] == "1"
    dockerfile = (ROOT / "build" / "Dockerfile").read_text()
    assert f"ARG TRITON_TAG={tag}\n" in dockerfile and "${TRITON_TAG}-trtllm-python-py3" in dockerfile
    docs = (ROOT / "docs" / "DEPLOY_GPU.md").read_text()
    assert trtllm_release().image in docs and f"TensorRT-LLM {trtllm_release().trtllm_version}" in docs
