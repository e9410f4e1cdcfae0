"""Prefill + KV-cached decode loops for one request or a batch of requests.

Rows of a batch are right-padded; each row keeps its own positions, sampling parameters, seeded
generator and stop state, so a request's output does not depend on what it is batched with
(up to floating-point differences of batched matmuls).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lita_serve.llm.cuda_graphs import DecodeGraphs
from lita_serve.llm.llama import KVCache, LlamaDecoder
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.llm.token_logprobs import token_logprobs
from lita_serve.text.logprobs import TokenLogprobs
from lita_serve.llm.token_sampling import make_generator, sample_next
from lita_serve.errors import InvalidInputError, LimitExceededError


@dataclass
class GenerationRequest:
    """One sequence to continue. ``prompt_table`` [N_vis,H] backs ids >= vocab_size in input_ids."""

    input_ids: list[int]
    prompt_table: Tensor | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    on_token: Callable[[int], None] | None = None
    # With params.logprobs set: called with each token's log-probabilities before on_token;
    # time_ids [N] are the ids of the time tokens, whose distribution it also reports.
    on_logprobs: Callable[[TokenLogprobs], None] | None = None
    time_ids: Tensor | None = None


def generate(decoder: LlamaDecoder, input_ids: list[int], prompt_table: Tensor | None, params: SamplingParams,
             eos_id: int, on_token: Callable[[int], None] | None = None, stop_ids: Sequence[int] = (),
             graphs: DecodeGraphs | None = None) -> list[int]:
    """Continue ``input_ids`` until EOS, a stop id or ``params.max_tokens`` new tokens.

    Returns the generated ids without the terminating EOS/stop id; ``on_token`` is called once per
    returned id, as soon as it is chosen (streaming).
    """
    request = GenerationRequest(list(input_ids), prompt_table, params, on_token)
    return generate_batch(decoder, [request], eos_id, stop_ids, graphs)[0]


def generate_batch(decoder: LlamaDecoder, requests: Sequence[GenerationRequest], eos_id: int,
                   stop_ids: Sequence[int] = (), graphs: DecodeGraphs | None = None,
                   ahead: bool | None = None) -> list[list[int]]:
    """Run several requests through one right-padded batch; returns one id list per request.

    With ``graphs`` (and a batch that fits them) the decode steps run over their static cache, from
    CUDA graphs on a GPU; otherwise over a cache made for this batch, eagerly. ``ahead`` (default:
    on a GPU) launches each decode step before streaming the tokens of the step before, so the
    host's callbacks overlap the device's work; the tokens and their order do not change.
    """
    if not requests:
        return []
    _check_requests(decoder, requests)
    stops = {int(eos_id), *(int(s) for s in stop_ids)}
    device = decoder.lm_head.weight.device
    lens = torch.tensor([len(r.input_ids) for r in requests], device=device)
    gens = [make_generator(r.params.seed, device) for r in requests]
    history = [list(r.input_ids) for r in requests]
    outputs: list[list[int]] = [[] for _ in requests]
    active = [True] * len(requests)
    max_len = max(len(r.input_ids) + r.params.max_tokens for r in requests)
    with torch.inference_mode():
        if graphs is not None and graphs.fits(len(requests), max_len):
            cache, decode = graphs.session(len(requests), max_len)
        else:
            cache = decoder.new_cache(len(requests), max_len)
            decode = _eager_decode(decoder, cache)
        embeds, valid = _embed_prompts(decoder, requests, int(lens.max()))  # [B,T,H], [B,T]
        positions = torch.arange(embeds.shape[1], device=device)
        logits = decoder(embeds, positions, cache, valid, output_index=lens - 1)[:, 0]  # [B,V]
        next_pos = lens.clone()
        # On a GPU the next step is launched before this step's tokens are streamed, so the host's
        # callbacks (responses, log-probabilities) overlap the step instead of idling the GPU; on
        # the CPU each token is streamed before the next step computes.
        ahead = device.type == "cuda" if ahead is None else ahead
        while any(active):
            chosen_from = logits
            tokens, emitted = _choose(chosen_from, requests, gens, history, active, outputs, stops)  # [B]
            more = any(active)
            if more and ahead:
                logits = decode(tokens.to(device), next_pos, torch.tensor(active, device=device))  # [B,V]
            _deliver(chosen_from, requests, emitted)
            if more and not ahead:
                logits = decode(tokens.to(device), next_pos, torch.tensor(active, device=device))
            next_pos += 1
    return outputs


def _eager_decode(decoder: LlamaDecoder, cache: KVCache) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """A decode step run op by op: tokens [B], positions [B], valid [B] -> logits [B,V]."""
    def step(tokens: Tensor, positions: Tensor, valid: Tensor) -> Tensor:
        embeds = decoder.embed(tokens[:, None])  # [B,1,H]
        return decoder(embeds, positions[:, None], cache, valid[:, None])[:, 0]
    return step


def _check_requests(decoder: LlamaDecoder, requests: Sequence[GenerationRequest]) -> None:
    limit = decoder.config.max_position_embeddings
    for i, r in enumerate(requests):
        if not r.input_ids:
            raise InvalidInputError(f"request {i}: input_ids is empty")
        r.params.validate(limit)
        if len(r.input_ids) + r.params.max_tokens > limit:
            raise LimitExceededError(
                f"request {i}: prompt length {len(r.input_ids)} + max_tokens {r.params.max_tokens} "
                f"exceeds max_position_embeddings {limit}")


def _embed_prompts(decoder: LlamaDecoder, requests: Sequence[GenerationRequest], width: int) -> tuple[Tensor, Tensor]:
    """Embed each prompt with its own table and right-pad: -> embeds [B,T,H], valid [B,T]."""
    device = decoder.lm_head.weight.device
    hidden = decoder.config.hidden_size
    embeds = torch.zeros(len(requests), width, hidden, dtype=decoder.lm_head.weight.dtype, device=device)
    valid = torch.zeros(len(requests), width, dtype=torch.bool, device=device)
    for b, r in enumerate(requests):
        ids = torch.tensor([r.input_ids], dtype=torch.long, device=device)  # [1,T_b]
        table = None if r.prompt_table is None else r.prompt_table.to(device)
        embeds[b, : ids.shape[1]] = decoder.embed(ids, table)[0]
        valid[b, : ids.shape[1]] = True
    return embeds, valid


def _choose(logits: Tensor, requests: Sequence[GenerationRequest], gens: list[torch.Generator],
            history: list[list[int]], active: list[bool], outputs: list[list[int]],
            stops: set[int]) -> tuple[Tensor, list[tuple[int, int]]]:
    """Sample one token per active row and update stop state; -> tokens [B] (0 for idle rows) and
    the (row, token) pairs to stream. Plain greedy rows share one argmax (one device sync)."""
    tokens = torch.zeros(len(requests), dtype=torch.long)
    plain = [b for b, r in enumerate(requests)
             if active[b] and r.params.is_greedy and r.params.repetition_penalty == 1.0]
    picks = dict(zip(plain, logits[plain].float().argmax(dim=-1).tolist())) if plain else {}
    emitted = []
    for b, r in enumerate(requests):
        if not active[b]:
            continue
        if b in picks:
            token = picks[b]
        else:
            prev = None
            if r.params.repetition_penalty != 1.0:
                prev = torch.tensor([history[b]], dtype=torch.long, device=logits.device)
            token = int(sample_next(logits[b : b + 1], r.params, gens[b], prev)[0])
        if token in stops:
            active[b] = False
            continue
        outputs[b].append(token)
        history[b].append(token)
        tokens[b] = token
        emitted.append((b, token))
        if len(outputs[b]) >= r.params.max_tokens:
            active[b] = False
    return tokens, emitted


def _deliver(logits: Tensor, requests: Sequence[GenerationRequest], emitted: list[tuple[int, int]]) -> None:
    """Stream the tokens ``_choose`` picked from ``logits``: log-probabilities first, then the token."""
    for b, token in emitted:
        r = requests[b]
        if r.on_logprobs is not None and r.params.logprobs is not None:
            r.on_logprobs(token_logprobs(logits[b], token, r.params.logprobs, r.time_ids))
        if r.on_token is not None:
            r.on_token(token)
