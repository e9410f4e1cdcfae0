"""Which input layout a checkpoint is in, decided from explicit flags and file structure only.

Layouts (never guessed from substrings of paths):

* ``nemo``: a ``.nemo`` tar (or its extracted directory) holding ``model_config.yaml`` and either
  ``model_weights.ckpt`` (legacy), a ``model_weights/`` distributed checkpoint, or one
  ``mp_rank_XX/model_weights.ckpt`` per tensor-parallel rank (merged by :mod:`lita_build.nemo`).
* ``llm+mm_projector``: an LLM-only HF directory (e.g. Vicuna) plus ``--mm-projector`` (a
  ``mm_projector.bin`` file or a directory holding it and optionally its ``config.json``).
* ``hf-lita``: a finetuned LITA HF directory: ``config.json`` carries LITA's keys
  (``num_time_tokens``) and the weights hold ``model.mm_projector.*``.
* ``llava-pretrained``: a LLaVA-style HF directory (ShareGPT4V LLM + projector): the weights hold
  the projector, ``config.json`` has ``mm_hidden_size`` but no LITA keys; the tower is separate.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from lita_build.checkpoint.files import weight_files
from lita_serve.errors import CheckpointError

NEMO_CONFIG = "model_config.yaml"
NEMO_LEGACY_WEIGHTS = "model_weights.ckpt"
NEMO_DIST_WEIGHTS = "model_weights"
PROJECTOR_PREFIX = "model.mm_projector."
TOWER_PREFIX = "model.vision_tower."
LITA_MARKER_KEY = "num_time_tokens"  # present in every LITA finetuned config.json


class SourceLayout(str, Enum):
    HF_LITA = "hf-lita"
    LLAVA_PRETRAINED = "llava-pretrained"
    LLM_MM_PROJECTOR = "llm+mm_projector"
    NEMO = "nemo"


@dataclass(frozen=True)
class SourceDescription:
    """What the build reads: the layout, its parts and how the layout was recognised."""

    layout: SourceLayout
    checkpoint: Path
    lita_version: str
    vision_tower: Path | None = None
    mm_projector: Path | None = None
    nemo_weights: str | None = None  # "legacy" | "distributed" | "tensor-parallel" for .nemo sources
    evidence: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """A short human name: ``HF LITA 1.5``, ``.nemo (distributed)``, ..."""
        if self.layout is SourceLayout.HF_LITA:
            return f"HF LITA {self.lita_version}"
        if self.layout is SourceLayout.NEMO:
            return f".nemo ({self.nemo_weights})"
        if self.layout is SourceLayout.LLAVA_PRETRAINED:
            return "LLaVA LLM+projector, separate vision tower"
        return "LLM + mm_projector.bin"

    @property
    def is_pretrained(self) -> bool:
        """True for finetuning starting points, whose configs carry no LITA options."""
        return self.layout in (SourceLayout.LLAVA_PRETRAINED, SourceLayout.LLM_MM_PROJECTOR)


def _tar_names(path: Path) -> set[str]:
    try:
        with tarfile.open(path) as tar:
            return {name.removeprefix("./").rstrip("/") for name in tar.getnames()}
    except (tarfile.TarError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable .nemo tar archive: {exc}") from exc


def nemo_weights_kind(names: set[str], where: Path) -> str:
    """``legacy`` (model_weights.ckpt), ``distributed`` (model_weights/) or ``tensor-parallel``
    (mp_rank_XX/model_weights.ckpt) from archive member names."""
    if NEMO_CONFIG not in names:
        raise CheckpointError(f"{where} has no {NEMO_CONFIG}: not a .nemo checkpoint")
    if NEMO_LEGACY_WEIGHTS in names:
        return "legacy"
    if any(n == NEMO_DIST_WEIGHTS or n.startswith(NEMO_DIST_WEIGHTS + "/") for n in names):
        return "distributed"
    ranks = sorted(n for n in names if n.endswith("/" + NEMO_LEGACY_WEIGHTS))
    if ranks and all(re.fullmatch(r"mp_rank_\d+/" + re.escape(NEMO_LEGACY_WEIGHTS), n) for n in ranks):
        return "tensor-parallel"
    if ranks:
        raise CheckpointError(f"{where} is a pipeline-parallel .nemo ({', '.join(ranks)}); tensor-parallel "
                              "mp_rank_XX archives are merged here, pipeline stages are not: re-save it at PP=1 "
                              "with NeMo's megatron_change_num_partitions.py")
    raise CheckpointError(f"{where} holds neither {NEMO_LEGACY_WEIGHTS} nor {NEMO_DIST_WEIGHTS}/")


def weight_keys(directory: Path) -> set[str]:
    """Tensor names of an HF checkpoint directory without reading the tensors' data."""
    keys: set[str] = set()
    for path in weight_files(directory):
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                keys.update(f.keys())
        else:
            keys.update(torch.load(path, map_location="cpu", mmap=True, weights_only=True).keys())
    return keys


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has neither config.json (HF layout) nor {NEMO_CONFIG} (.nemo layout)")
    return json.loads(path.read_text())


def _describe_hf(root: Path, version: str, tower: Path | None, projector: Path | None) -> SourceDescription:
    hf = _read_config(root)
    keys = weight_keys(root)
    has_projector = any(k.startswith(PROJECTOR_PREFIX) for k in keys)
    has_tower = any(k.startswith(TOWER_PREFIX) for k in keys)
    evidence = [f"config.json ({len(hf)} keys)", f"{len(keys)} tensors",
                "projector in weights" if has_projector else "no projector in weights",
                "tower in weights" if has_tower else "no tower in weights"]
    if projector is not None:
        evidence.append("--mm-projector given")
        return SourceDescription(SourceLayout.LLM_MM_PROJECTOR, root, version, tower, projector, evidence=evidence)
    if not has_projector:
        raise CheckpointError(f"{root} holds no model.mm_projector.* tensors: it is an LLM-only checkpoint; "
                              "pass the pretrained projector (--mm-projector DIR_OR_mm_projector.bin)")
    if LITA_MARKER_KEY in hf:
        evidence.append(f"config.json has {LITA_MARKER_KEY}")
        return SourceDescription(SourceLayout.HF_LITA, root, version, tower, evidence=evidence)
    if "mm_hidden_size" not in hf:
        raise CheckpointError(f"{root}/config.json has neither LITA ({LITA_MARKER_KEY}) nor LLaVA (mm_hidden_size) "
                              "keys although the weights hold a projector")
    evidence.append("LLaVA config.json without LITA keys")
    return SourceDescription(SourceLayout.LLAVA_PRETRAINED, root, version, tower, evidence=evidence)


def describe_source(checkpoint: Path, *, lita_version: str, vision_tower: Path | None = None,
                    mm_projector: Path | None = None) -> SourceDescription:
    """Recognise the layout of ``checkpoint`` (plus the separately given parts); CheckpointError if unknown."""
    checkpoint = Path(checkpoint)
    for part, flag in ((checkpoint, "--checkpoint"), (vision_tower, "--vision-tower"), (mm_projector, "--mm-projector")):
        if part is not None and not Path(part).exists():
            raise CheckpointError(f"{flag} {part} does not exist")
    if checkpoint.is_file():
        kind = nemo_weights_kind(_tar_names(checkpoint), checkpoint)
        return SourceDescription(SourceLayout.NEMO, checkpoint, lita_version, vision_tower, mm_projector, kind,
                                 [f"tar archive with {NEMO_CONFIG}"])
    if (checkpoint / NEMO_CONFIG).is_file():
        names = {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*")}
        kind = nemo_weights_kind(names, checkpoint)
        return SourceDescription(SourceLayout.NEMO, checkpoint, lita_version, vision_tower, mm_projector, kind,
                                 [f"extracted .nemo directory with {NEMO_CONFIG}"])
    return _describe_hf(checkpoint, lita_version, vision_tower, mm_projector)
