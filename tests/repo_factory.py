"""Build small model repositories for tests (real tokenizer, real weights, real configs)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from helpers_text import converted_model

from lita_build.checkpoint.random_init import build_random_model
from lita_build.checkpoint.vocab import DEFAULT_VOCAB_MULTIPLE, padded_vocab_size
from lita_serve.config import LitaConfig
from lita_build.repository import Deployment, write_model_repository
from lita_serve.engine.torch_engine import export_torch_engine
from lita_serve.text.tokenizer import LitaTokenizer


def build_tiny_repository(root: Path, seed: int = 0, dep: Deployment = Deployment(),
                          cfg: LitaConfig | None = None) -> Path:
    """A repository with a random tiny LITA model and a converted SentencePiece tokenizer."""
    cfg = cfg or LitaConfig.from_name("tiny")
    tokenizer_path = converted_model(root / "tok", "1.0")
    size = padded_vocab_size(cfg.text.vocab_size, LitaTokenizer.from_file(tokenizer_path).vocab_size,
                             DEFAULT_VOCAB_MULTIPLE)
    cfg = replace(cfg, text=replace(cfg.text, vocab_size=size))
    cfg.limits.default_max_tokens = 12
    cfg.limits.max_video_bytes = 1 << 20  # small, so tests can exceed it cheaply
    cfg.limits.max_new_tokens = 64
    repo = root / "repo"
    write_model_repository(repo, cfg, dep)
    export_torch_engine(build_random_model(cfg, seed), tokenizer_path, repo)
    return repo
