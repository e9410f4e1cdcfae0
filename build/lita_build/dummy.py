"""``lita build --dummy-weights PRESET``: a repository of a preset's shapes whose engines draw
random weights at load (vLLM's ``load_format="dummy"``).

Measuring serving speed needs a model of the real size, not its trained weights: a LITA-13B
repository holds 26 GB of fp16 weights that nobody may download here, and writing then reading
them costs a GPU machine minutes. This writes everything else exactly as a checkpoint build does
(the preset's ``lita.json``, the converted tokenizer, every Triton config) and records
``"weights": "dummy"`` in ``build.json``; :mod:`lita_serve.engine.torch_engine` then materialises the
encoder and the decoder on their device with N(0, 0.02) weights from a fixed seed. Answers are
meaningless; shapes, memory, kernels and timings are the real model's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lita_build.builder import check_device, check_dtype, convert_checked_tokenizer, deployment
from lita_build.checkpoint.vocab import DEFAULT_VOCAB_MULTIPLE, padded_vocab_size
from lita_build.lita_options import check_lita_options
from lita_build.repository import write_model_repository
from lita_build.summary import BuildSummary
from lita_serve.config import LitaConfig
from lita_serve.errors import InvalidInputError
from lita_serve.adapters.layout import DUMMY_WEIGHTS, BuildManifest, RepositoryLayout


def build_dummy(preset: str, tokenizer: Path, *, output: Path, dtype: str = "float16", device: str = "cuda",
                max_batch_size: int = 8, overrides: dict[str, Any] | None = None) -> BuildSummary:
    """Write a torch-engine repository for ``preset`` (:data:`lita_serve.config.PRESETS`) with dummy
    weights; ``overrides`` sets LITA options (e.g. ``sample_frames``) as ``lita build --set`` does."""
    check_dtype(dtype)
    check_device(device)
    try:
        cfg = LitaConfig.from_name(preset)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    unknown = set(overrides or {}) - {f.name for f in dataclasses.fields(cfg.lita)}
    if unknown:
        raise InvalidInputError(f"unknown LITA options {sorted(unknown)}")
    cfg.lita = dataclasses.replace(cfg.lita, **(overrides or {}))
    check_lita_options(cfg)
    layout = RepositoryLayout.of(output)
    layout.root.mkdir(parents=True, exist_ok=True)
    tok, added = convert_checked_tokenizer(Path(tokenizer), layout.tokenizer_path, cfg.lita.lita_version,
                                           cfg.lita.num_time_tokens)
    # as a checkpoint build does: the vocabulary grows to the tokenizer, padded to a multiple
    cfg.text.vocab_size = padded_vocab_size(cfg.text.vocab_size, tok.vocab_size, DEFAULT_VOCAB_MULTIPLE)
    cfg.save(layout.config_path)
    write_model_repository(layout.root, cfg, deployment("torch", "torch", device, max_batch_size, None))
    manifest = BuildManifest(source=f"{DUMMY_WEIGHTS}:{preset}", layout=DUMMY_WEIGHTS, weights=DUMMY_WEIGHTS,
                             dtype=dtype, max_batch_size=max_batch_size, device=device,
                             notes=["dummy weights: drawn at load from a fixed seed; answers are meaningless"])
    summary = BuildSummary(manifest.source, "torch", layout.root.resolve(), cfg, added, notes=manifest.notes)
    for what, path in (("config", layout.config_path), ("tokenizer", layout.tokenizer_path),
                       ("build manifest", manifest.write(layout.root))):
        summary.add(what, path)
    return summary

