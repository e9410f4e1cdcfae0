"""A tiny randomly initialised LITA checkpoint in the released HF layout, for demos and tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from lita_build.checkpoint.hf import save_hf_checkpoint
from lita_build.checkpoint.vocab import DEFAULT_VOCAB_MULTIPLE, padded_vocab_size
from lita_serve.config import LitaConfig
from lita_serve.engine.model import DEMO_INIT_STD, LitaModel, randomize_  # noqa: F401 - re-exported

def build_random_model(cfg: LitaConfig, seed: int) -> LitaModel:
    """A LitaModel with N(0, 0.02) weights (norm scales 1, biases 0), reproducible from ``seed``."""
    return randomize_(LitaModel(cfg).eval(), torch.Generator().manual_seed(seed))


def write_demo_checkpoint(out_dir: Path, cfg: LitaConfig, seed: int, tokenizer_size: int | None = None,
                          *, safetensors: bool = False) -> Path:
    """Write a random LITA checkpoint for ``cfg`` (e.g. ``LitaConfig.from_name("tiny")``) to ``out_dir``.

    With ``tokenizer_size`` the vocabulary covers it (padded to DEFAULT_VOCAB_MULTIPLE), so a
    tokenizer with added time tokens fits. ``time_token_ids`` is left to whoever builds the tokenizer.
    """
    if tokenizer_size is not None:
        size = padded_vocab_size(cfg.text.vocab_size, tokenizer_size, DEFAULT_VOCAB_MULTIPLE)
        cfg = replace(cfg, text=replace(cfg.text, vocab_size=size))
    model = build_random_model(cfg, seed)
    return save_hf_checkpoint(model, Path(out_dir), safetensors=safetensors)
