"""Where things live inside a built model repository.

A repository is self-contained: Triton ignores plain files at its root, so the shared
``lita.json`` (the :class:`~lita_serve.config.LitaConfig`) and ``tokenizer.model`` sit there,
and each model's weights sit in its version folder::

    REPO/lita.json                      LitaConfig: the one source of truth
    REPO/tokenizer.model                SentencePiece model with LITA's time tokens
    REPO/vision_encoder/1/weights/      encoder.safetensors  (vision tower + projector)
    REPO/llm/1/weights/                 decoder.safetensors  (LLaMA decoder)
    REPO/vision_encoder/1/encoder.onnx  the same encoder as ONNX (--encoder-engine onnxruntime|tensorrt)
    REPO/vision_encoder/1/encoder.plan  ... as a TensorRT engine (--encoder-engine tensorrt)
    REPO/<model>/config.pbtxt, REPO/<model>/1/model.py
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lita_client.contract import ENSEMBLE
from lita_serve.config import LitaConfig
from lita_serve.errors import CheckpointError
from lita_serve.engine.quantization_names import NO_QUANTIZATION

CONFIG_FILE = "lita.json"
BUILD_MANIFEST = "build.json"  # written by `lita build`: which engine, from what source
TOKENIZER_FILE = "tokenizer.model"
ENCODER_WEIGHTS = "vision_encoder/1/weights/encoder.safetensors"
DECODER_WEIGHTS = "llm/1/weights/decoder.safetensors"
ENCODER_ONNX = "vision_encoder/1/encoder.onnx"
ENCODER_PLAN = "vision_encoder/1/encoder.plan"
# build.json "weights": a repository whose weights are drawn at load (shapes only, for measurements)
DUMMY_WEIGHTS = "dummy"
# What runs the vision encoder step: the PyTorch weights, the ONNX graph, or the TensorRT engine.
ENCODER_ENGINES = ("torch", "onnxruntime", "tensorrt")

STEPS = ("preprocess", "vision_encoder", "llm", "postprocess")
MODELS = (*STEPS, ENSEMBLE)


@dataclass
class BuildManifest:
    """``build.json``: how ``lita build`` made a repository's engines, written and read here only.

    A repository written without ``lita build`` has none; its engines are then PyTorch's.
    """

    engine: str = "torch"  # "torch" | "tensorrt_llm"
    encoder_engine: str = "torch"  # one of ENCODER_ENGINES
    source: str = ""  # what was built: the checkpoint's layout and path, or "dummy:<preset>"
    layout: str = ""  # lita_build.sources.SourceLayout value, or "dummy"
    dtype: str | None = None  # what the engines compute in on a GPU (None: fp16); the CPU computes in float32
    tp_size: int = 1
    max_batch_size: int = 8
    gpus: list[int] | None = None  # GPU instances pinned to these devices; None: every GPU
    dry_run: bool = False
    quantization: str = NO_QUANTIZATION
    device: str = "cpu"  # where the PyTorch models run: "cpu" | "cuda"
    weights: str | None = None  # DUMMY_WEIGHTS: drawn at load; None: the files the build wrote
    notes: list[str] = field(default_factory=list)
    trtllm: dict[str, Any] | None = None  # release, dtype, tp_size, trtllm_build_command, quantization, ...
    encoder_plan: dict[str, Any] | None = None  # a dry run's settings for building encoder.plan later

    def to_json(self) -> dict[str, Any]:
        """The JSON object (optional blocks only when present)."""
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items() if v is not None or k in ("gpus",)}

    @classmethod
    def from_json(cls, data: dict[str, Any], origin: str = BUILD_MANIFEST) -> "BuildManifest":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{origin} has fields this lita-serve does not know: {unknown}; "
                                  "rebuild the repository with this version's `lita build`")
        return cls(**data)

    def write(self, root: str | Path) -> Path:
        path = Path(root) / BUILD_MANIFEST
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, root: str | Path) -> "BuildManifest | None":
        """The repository's manifest; None when it has none."""
        path = Path(root) / BUILD_MANIFEST
        return cls.from_json(json.loads(path.read_text()), str(path)) if path.is_file() else None


@dataclass(frozen=True)
class RepositoryLayout:
    """Paths of one model repository."""

    root: Path

    @classmethod
    def of(cls, root: str | Path) -> "RepositoryLayout":
        return cls(Path(root).resolve())

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> "RepositoryLayout":
        """From the ``args["model_repository"]`` Triton hands a python model (``REPO/<model>``)."""
        return cls.of(Path(model_dir).resolve().parent)

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.root / TOKENIZER_FILE

    @property
    def encoder_weights(self) -> Path:
        return self.root / ENCODER_WEIGHTS

    @property
    def decoder_weights(self) -> Path:
        return self.root / DECODER_WEIGHTS

    @property
    def encoder_onnx(self) -> Path:
        return self.root / ENCODER_ONNX

    @property
    def encoder_plan(self) -> Path:
        return self.root / ENCODER_PLAN

    def model_dir(self, name: str) -> Path:
        return self.root / name

    def manifest(self) -> BuildManifest:
        """The build manifest (``build.json``); the defaults for a repository written without ``lita build``."""
        return BuildManifest.read(self.root) or BuildManifest()

    def engine(self) -> str:
        """``"torch"`` or ``"tensorrt_llm"``, from the build manifest."""
        return self.manifest().engine

    def encoder_engine(self) -> str:
        """One of :data:`ENCODER_ENGINES`, from the build manifest."""
        return self.manifest().encoder_engine

    def quantization(self) -> str:
        """The decoder's weight quantization from the build manifest (``"none"`` when there is none)."""
        return self.manifest().quantization or NO_QUANTIZATION

    def has_dummy_weights(self) -> bool:
        """Whether the repository was built with dummy weights (``lita build --dummy-weights``):
        the engines draw random weights of the model's shapes at load, from a fixed seed."""
        return self.manifest().weights == DUMMY_WEIGHTS

    def load_config(self) -> LitaConfig:
        """The repository's :class:`LitaConfig`; CheckpointError when it was never built."""
        if not self.config_path.is_file():
            raise CheckpointError(
                f"{self.config_path} is missing: build the repository first (`lita build` or `make demo`)"
            )
        return LitaConfig.load(self.config_path)
