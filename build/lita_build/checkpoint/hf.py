"""Load and save LITA/LLaVA checkpoints in the released Hugging Face layout.

Supported sources:

* a full LITA checkpoint directory: ``config.json`` + ``pytorch_model*.bin`` or ``model*.safetensors``
  (+ index), keys ``model.*``, ``lm_head.weight``, ``model.mm_projector.*`` and, when the tower is
  stored inside, ``model.vision_tower.vision_tower.vision_model.*``;
* a separate vision tower directory (HF ``CLIPVisionModel``/``CLIPModel`` layout, keys ``vision_model.*``);
* an LLM-only checkpoint plus a separate ``mm_projector.bin`` (a file, or a directory holding it and
  optionally the LITA ``config.json``, whose keys then take precedence, as LITA's ``model_base`` path does).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lita_build.checkpoint import keymap
from lita_build.checkpoint.files import read_file, read_weights, write_weights
from lita_build.checkpoint.hf_config import clip_vision_config, config_from_hf, config_to_hf
from lita_build.checkpoint.vocab import DEFAULT_VOCAB_MULTIPLE, grow_rows, padded_vocab_size
from lita_serve.config import LitaConfig
from lita_serve.errors import CheckpointError
from lita_serve.engine.model import LitaModel

log = logging.getLogger(__name__)

PROJECTOR_FILE = "mm_projector.bin"
DEFAULT_SHARD_SIZE_MB = 10_000  # transformers' max_shard_size default ("10GB") is in this range


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def _map_keys(tensors: dict[str, Tensor], table: tuple[tuple[str, str], ...], source: str,
              ignore_prefixes: tuple[str, ...] = ()) -> tuple[dict[str, Tensor], list[str]]:
    """HF tensors -> internal names; returns (mapped, unexpected HF keys annotated with source)."""
    mapped, unexpected = {}, []
    for key, tensor in tensors.items():
        if keymap.is_ignored(key, ignore_prefixes):
            continue
        ours = keymap.to_internal(key, table)
        if ours is None:
            unexpected.append(f"{key} ({source})")
        else:
            mapped[ours] = tensor
    return mapped, unexpected


def _projector_source(path: Path) -> tuple[Path, dict[str, Any]]:
    """(mm_projector.bin path, its config.json dict or {})."""
    if path.is_dir():
        cfg_path = path / "config.json"
        return path / PROJECTOR_FILE, (_read_json(cfg_path) if cfg_path.is_file() else {})
    return path, {}


def _tower_dir(root: Path, hf: dict[str, Any], given: Path | None) -> Path | None:
    """The tower directory: the given one, else mm_vision_tower when it names an existing local dir."""
    if given is not None:
        return given
    name = hf.get("mm_vision_tower")
    if isinstance(name, str) and name:
        for candidate in (Path(name), root / name):
            if (candidate / "config.json").is_file():
                return candidate
    return None


def _validate(state: dict[str, Tensor], model: LitaModel, unexpected: list[str]) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor (HF names)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    def hf_name(k: str) -> str:
        return keymap.to_hf(k, keymap.LITA_PREFIXES) or k
    missing = [hf_name(k) for k in expected if k not in state]
    unexpected = unexpected + [hf_name(k) for k in state if k not in expected]
    shapes = [f"{hf_name(k)}: checkpoint {tuple(t.shape)} vs model {expected[k]}"
              for k, t in state.items() if k in expected and tuple(t.shape) != expected[k]]
    parts = [f"{label} ({len(items)}): {', '.join(items)}" for label, items in
             (("missing tensors", missing), ("unexpected tensors", unexpected), ("mis-shaped tensors", shapes)) if items]
    if parts:
        raise CheckpointError("checkpoint does not match its config: " + "; ".join(parts))


def _expand_vocab(state: dict[str, Tensor], cfg: LitaConfig, tokenizer_size: int | None, multiple: int) -> LitaConfig:
    """Grow embed_tokens/lm_head to the padded tokenizer size; returns the config with the new vocab."""
    if tokenizer_size is None:
        return cfg
    size = padded_vocab_size(cfg.text.vocab_size, tokenizer_size, multiple)
    for key in (keymap.EMBED_KEY, keymap.LM_HEAD_KEY):
        if key in state and state[key].dim() == 2 and state[key].shape[0] == cfg.text.vocab_size:
            state[key] = grow_rows(state[key], size)
    if size != cfg.text.vocab_size:
        log.info("vocab %d -> %d (tokenizer %d, multiple of %d)", cfg.text.vocab_size, size, tokenizer_size, multiple)
    return replace(cfg, text=replace(cfg.text, vocab_size=size))


def _time_token_rows(state: dict[str, Tensor], extra: dict[str, Tensor], hf: dict[str, Any]) -> None:
    """Copy time-token rows of embed_tokens/lm_head stored next to the projector (LITA's model_base flow)."""
    ids = hf.get("time_token_ids")
    for src, dst in (("model.embed_tokens.weight", keymap.EMBED_KEY), ("lm_head.weight", keymap.LM_HEAD_KEY)):
        if src not in extra:
            continue
        if not ids:
            raise CheckpointError(f"{PROJECTOR_FILE} holds {src} but config.json has no time_token_ids")
        rows = torch.tensor(ids)
        if int(rows.max()) >= min(extra[src].shape[0], state[dst].shape[0]):
            raise CheckpointError(f"time_token_ids exceed the rows of {src} / the model's vocabulary")
        state[dst] = state[dst].clone()
        state[dst][rows] = extra[src][rows].to(state[dst].dtype)


def load_lita(path: str | Path, *, vision_tower_path: str | Path | None = None,
              mm_projector_path: str | Path | None = None, tokenizer_size: int | None = None,
              device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              hf_overrides: dict[str, Any] | None = None,
              vocab_multiple: int = DEFAULT_VOCAB_MULTIPLE) -> LitaModel:
    """Load a released LITA/LLaVA HF checkpoint into a :class:`LitaModel` (eval mode).

    ``tokenizer_size`` (after adding time tokens) grows the vocabulary, then pads it to a multiple
    of ``vocab_multiple``; ``hf_overrides`` supplies config.json keys the checkpoint lacks.
    """
    root = Path(path)
    hf = _read_json(root / "config.json")
    projector_file, projector_cfg = (None, {}) if mm_projector_path is None else _projector_source(Path(mm_projector_path))
    hf = {**hf, **projector_cfg, **(hf_overrides or {})}
    tower_dir = _tower_dir(root, hf, None if vision_tower_path is None else Path(vision_tower_path))
    cfg = config_from_hf(hf, None if tower_dir is None else _read_json(tower_dir / "config.json"))

    state, unexpected = _map_keys(read_weights(root), keymap.LITA_PREFIXES, root.name)
    has_tower = any(k.startswith(keymap.TOWER_INTERNAL_PREFIX) for k in state)
    if tower_dir is not None and (vision_tower_path is not None or not has_tower):
        state = {k: v for k, v in state.items() if not k.startswith(keymap.TOWER_INTERNAL_PREFIX)}
        tower, bad = _map_keys(read_weights(tower_dir), keymap.VISION_TOWER_PREFIXES, tower_dir.name,
                               keymap.IGNORED_TOWER_PREFIXES)
        state.update(tower)
        unexpected += bad
    elif not has_tower:
        raise CheckpointError(f"{root} holds no vision tower weights and mm_vision_tower "
                              f"{hf.get('mm_vision_tower')!r} is not a local directory: pass vision_tower_path")
    extra: dict[str, Tensor] = {}
    if projector_file is not None:
        tensors = read_file(projector_file)
        extra = {k: tensors.pop(k) for k in ("model.embed_tokens.weight", "lm_head.weight") if k in tensors}
        proj, bad = _map_keys(tensors, keymap.PROJECTOR_PREFIXES, projector_file.name)
        state.update(proj)
        unexpected += bad
    cfg = _expand_vocab(state, cfg, tokenizer_size, vocab_multiple)
    model = LitaModel.build(cfg, device="meta")
    _validate(state, model, unexpected)
    if extra:
        _time_token_rows(state, extra, hf)
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


def _dtype_name(model: LitaModel) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def save_hf_checkpoint(model: LitaModel, path: str | Path, *, shard_size_mb: float = DEFAULT_SHARD_SIZE_MB,
                       safetensors: bool = False, include_vision_tower: bool = True,
                       extra_config: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a LitaLlamaForCausalLM checkpoint: config.json + (sharded) weights.

    ``extra_config`` adds keys to config.json (e.g. ``time_token_ids`` from the tokenizer).
    Without the tower, write it with :func:`save_vision_tower` and point ``mm_vision_tower`` at it.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    hf_cfg = {**config_to_hf(model.config, _dtype_name(model)), **(extra_config or {})}
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    state = {}
    for key, tensor in model.state_dict().items():
        if not include_vision_tower and key.startswith(keymap.TOWER_INTERNAL_PREFIX):
            continue
        state[keymap.to_hf(key, keymap.LITA_PREFIXES)] = tensor
    write_weights(state, out, max_shard_bytes=int(shard_size_mb * 1024 * 1024), safetensors=safetensors)
    return out


def save_vision_tower(model: LitaModel, path: str | Path, *, safetensors: bool = False) -> Path:
    """Write the vision tower alone in HF ``CLIPVisionModel`` layout (config.json + ``vision_model.*``)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {**clip_vision_config(model.config.vision), "torch_dtype": _dtype_name(model)}
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    state = {keymap.to_hf(k, keymap.VISION_TOWER_PREFIXES): v for k, v in model.state_dict().items()
             if k.startswith(keymap.TOWER_INTERNAL_PREFIX)}
    write_weights(state, out, max_shard_bytes=2**62, safetensors=safetensors)
    return out
