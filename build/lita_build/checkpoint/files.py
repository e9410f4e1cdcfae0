"""Reading and writing HF-style weight files: single or sharded ``.bin`` / ``.safetensors``.

Layout written (as ``transformers.save_pretrained``): one shard -> ``pytorch_model.bin`` or
``model.safetensors``; several -> ``pytorch_model-0000i-of-0000n.bin`` + ``pytorch_model.bin.index.json``
or ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from lita_serve.errors import CheckpointError

INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_NAMES = ("model.safetensors", "pytorch_model.bin")


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory, preferring an index, then single files, then globs."""
    for name in INDEX_NAMES:
        index = directory / name
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index}: no weight_map")
            files = [directory / f for f in dict.fromkeys(weight_map.values())]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{index} names missing shard files: {missing}")
            return files
    for name in SINGLE_NAMES:
        if (directory / name).is_file():
            return [directory / name]
    found = sorted(directory.glob("model*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))
    if not found:
        raise CheckpointError(f"no weight files (*.safetensors / pytorch_model*.bin) in {directory}")
    return found


def read_file(path: Path) -> dict[str, Tensor]:
    """All tensors of one ``.bin`` (memory-mapped, weights only) or ``.safetensors`` file."""
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:  # corrupt/unreadable files
        raise CheckpointError(f"cannot read weights from {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointError(f"{path} does not hold a flat name -> tensor dict")
    return data


def read_weights(directory: Path) -> dict[str, Tensor]:
    """Every tensor of a checkpoint directory; a key in two shards is an error."""
    out: dict[str, Tensor] = {}
    for path in weight_files(directory):
        for key, tensor in read_file(path).items():
            if key in out:
                raise CheckpointError(f"tensor {key} appears in more than one shard ({path.name})")
            out[key] = tensor
    return out


def _shards(state: dict[str, Tensor], max_bytes: int) -> list[dict[str, Tensor]]:
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def write_weights(state: dict[str, Tensor], directory: Path, *, max_shard_bytes: int, safetensors: bool) -> list[Path]:
    """Write ``state`` (HF key names) in HF's file layout; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}  # no shared storage
    shards = _shards(state, max_shard_bytes)
    stem, ext, index_name = ("model", "safetensors", INDEX_NAMES[0]) if safetensors else \
        ("pytorch_model", "bin", INDEX_NAMES[1])
    n = len(shards)
    names = [f"{stem}.{ext}"] if n == 1 else [f"{stem}-{i:05d}-of-{n:05d}.{ext}" for i in range(1, n + 1)]
    for name, shard in zip(names, shards):
        if safetensors:
            save_file(shard, str(directory / name), metadata={"format": "pt"})
        else:
            torch.save(shard, directory / name)
    if n > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": {k: name for name, shard in zip(names, shards) for k in shard}}
        (directory / index_name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return [directory / name for name in names]
