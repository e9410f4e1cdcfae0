"""Log-probabilities of generated tokens, and how sure the model is of each time it says.

Every figure is taken from the model's own next-token distribution (the raw logits, before
repetition penalty, temperature or top-k/top-p), as OpenAI-style ``logprobs`` are. A time token
is one draw from the distribution over ``<t0>``…``<t{N-1}>``; restricted to those tokens it gives
the expected index and its standard deviation, which the postprocess step turns into seconds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lita_serve.text.logprobs import TokenLogprobs


def token_logprobs(logits: Tensor, token: int, top: int, time_ids: Tensor | None) -> TokenLogprobs:
    """``logits`` [V] of the step that chose ``token``; ``time_ids`` [N] the ids of ``<t0>``…``<t{N-1}>``."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # [V]
    alternatives: list[tuple[int, float]] = []
    if top > 0:
        values, ids = torch.topk(logp, min(top, logp.shape[-1]))
        alternatives = [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist())]
    time = None
    if time_ids is not None and time_ids.numel():
        where = (time_ids == token).nonzero()
        if where.numel():
            p = torch.softmax(logits.float()[time_ids.to(logits.device)], dim=-1).double()  # [N]
            k = torch.arange(p.shape[0], dtype=torch.float64, device=p.device)
            mean = float((p * k).sum())
            std = math.sqrt(max(0.0, float((p * (k - mean) ** 2).sum())))
            time = (float(p[int(where[0, 0])]), mean, std)
    return TokenLogprobs(float(logp[token]), alternatives, time)
