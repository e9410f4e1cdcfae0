"""Next-token selection for one request's :class:`~lita_serve.llm.sampling_params.SamplingParams`.

Processing order follows HF ``generate``: repetition penalty (CTRL rule: divide positive logits,
multiply negative ones, for every token already in the sequence), then greedy argmax, or
temperature -> top-k -> top-p -> multinomial draw from a per-request ``torch.Generator``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lita_serve.llm.sampling_params import SamplingParams


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one request: seeded when ``seed`` is given, else from OS entropy."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def apply_repetition_penalty(logits: Tensor, prev_tokens: Tensor, penalty: float) -> Tensor:
    """logits [B,V], prev_tokens [B,L] (entries < 0 or >= V ignored) -> penalised logits [B,V]."""
    b, v = logits.shape
    ids = torch.where((prev_tokens >= 0) & (prev_tokens < v), prev_tokens, v).long()  # invalid -> extra column
    seen = torch.zeros(b, v + 1, dtype=torch.bool, device=logits.device)
    seen.scatter_(1, ids.to(logits.device), True)
    seen = seen[:, :v]
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits per row (ties at the k-th value kept); others -> -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest prefix of sorted tokens whose mass reaches p (at least one)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of strictly better tokens
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: Tensor, params: SamplingParams, generator: torch.Generator | None = None,
                prev_tokens: Tensor | None = None) -> Tensor:
    """Choose the next token for each row: logits [B,V] -> ids [B] (long)."""
    logits = logits.float()
    if prev_tokens is not None and params.repetition_penalty != 1.0 and prev_tokens.numel():
        logits = apply_repetition_penalty(logits, prev_tokens, params.repetition_penalty)
    if params.is_greedy:
        return logits.argmax(dim=-1)
    logits = logits / params.temperature
    logits = filter_top_p(filter_top_k(logits, params.top_k), params.top_p)
    probs = logits.softmax(dim=-1)  # [B,V]
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
