"""A tiny randomly initialised LITA checkpoint in the released HF layout, for demos and tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from lita_serve.checkpoint.hf import save_hf_checkpoint
from lita_serve.checkpoint.vocab import DEFAULT_VOCAB_MULTIPLE, padded_vocab_size
from lita_serve.config import LitaConfig
from lita_serve.model import LitaModel

DEMO_INIT_STD = 0.02  # LlamaConfig.initializer_range: keeps random logits in a sane range


def build_random_model(cfg: LitaConfig, seed: int) -> LitaModel:
    """A LitaModel with N(0, 0.02) weights (norm scales 1, biases 0), reproducible from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    model = LitaModel(cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif "norm" in name:
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * DEMO_INIT_STD)
    return model


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
