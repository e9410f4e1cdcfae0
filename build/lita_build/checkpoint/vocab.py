"""Growing ``embed_tokens`` / ``lm_head`` to the tokenizer size, padded like NeMo/Megatron.

New rows (added tokens such as LITA's time tokens when the checkpoint lacks them, and padding
rows) are set to the mean of the existing rows, the rule LLaVA/LITA use when they add tokens
(``smart_tokenizer_and_embedding_resize``); it is deterministic and keeps padded logits ordinary.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Megatron's make_vocab_size_divisible_by default; NeMo's LLaVA converter starts from 128 too.
DEFAULT_VOCAB_MULTIPLE = 128


def padded_vocab_size(current: int, tokenizer_size: int, multiple: int = DEFAULT_VOCAB_MULTIPLE) -> int:
    """max(current, tokenizer_size) rounded up to a multiple of ``multiple``."""
    if multiple < 1:
        raise ValueError(f"vocab multiple must be >= 1, got {multiple}")
    size = max(current, tokenizer_size)
    return -(-size // multiple) * multiple


def grow_rows(weight: Tensor, rows: int) -> Tensor:
    """[V,H] -> [rows,H]; the added rows are the mean of the existing ones (float32 mean)."""
    extra = rows - weight.shape[0]
    if extra <= 0:
        return weight
    mean = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
    return torch.cat([weight, mean.expand(extra, -1)], dim=0)
