"""Decode steps over the static, bucketed KV cache of :mod:`lita_serve.llm.cuda_graphs`.

On the CPU the steps run eagerly (no capture), so these tests check what the graphs replay on a
GPU: the buckets, the cache views, padded rows and reuse of the cache by later batches give the
same tokens as a cache made for each batch. ``make gpu-check`` checks the captured graphs on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from lita_serve.config import TextConfig
from lita_serve.llm.cuda_graphs import LENGTH_STEP, DecodeGraphs, batch_bucket, length_bucket
from lita_serve.llm.generate import GenerationRequest, generate_batch
from lita_serve.llm.llama import LlamaDecoder
from lita_serve.llm.sampling_params import SamplingParams

TEXT = TextConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=600)


@pytest.fixture(scope="module")
def decoder() -> LlamaDecoder:
    torch.manual_seed(3)
    dec = LlamaDecoder(TEXT).eval()
    with torch.no_grad():  # larger than default init: answers that differ between prompts
        for p in dec.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    return dec


def _requests(lengths: list[int], params: list[SamplingParams], seed: int) -> list[GenerationRequest]:
    g = torch.Generator().manual_seed(seed)
    return [GenerationRequest(torch.randint(3, TEXT.vocab_size, (n,), generator=g).tolist(), None, p)
            for n, p in zip(lengths, params)]


def test_buckets_round_up_within_bounds() -> None:
    assert [batch_bucket(n, 8) for n in (1, 2, 3, 5, 8)] == [1, 2, 4, 8, 8]
    assert [batch_bucket(n, 6) for n in (5, 6)] == [6, 6]
    assert LENGTH_STEP == 256
    assert [length_bucket(n, 600) for n in (1, 10, 256, 257, 300, 513)] == [256, 256, 256, 512, 512, 600]


@pytest.mark.parametrize("lengths", [[7], [5, 19, 11], [30, 2, 9, 14, 3]])
def test_static_cache_gives_the_tokens_of_a_cache_per_batch(decoder, lengths) -> None:
    graphs = DecodeGraphs(decoder, max_batch=8, max_seq_len=600, capture=False)
    greedy = [SamplingParams(max_tokens=12 + i, greedy=True) for i in range(len(lengths))]
    sampled = [SamplingParams(max_tokens=10, greedy=False, temperature=0.9, top_p=0.95, seed=40 + i) for i in range(len(lengths))]
    for params in (greedy, sampled):
        want = generate_batch(decoder, _requests(lengths, params, seed=1), eos_id=-1)
        got = generate_batch(decoder, _requests(lengths, params, seed=1), eos_id=-1, graphs=graphs)
        assert got == want
        assert all(len(ids) == p.max_tokens for ids, p in zip(got, params))


def test_reused_cache_holds_nothing_of_earlier_batches(decoder) -> None:
    """A long batch fills the cache; a shorter one in the same bucket afterwards answers as if alone."""
    graphs = DecodeGraphs(decoder, max_batch=4, max_seq_len=600, capture=False)
    long = _requests([200, 180, 150, 120], [SamplingParams(max_tokens=40, greedy=True)] * 4, seed=2)
    generate_batch(decoder, long, eos_id=-1, graphs=graphs)
    short = [SamplingParams(max_tokens=8, greedy=True)] * 3
    want = generate_batch(decoder, _requests([6, 17, 4], short, seed=3), eos_id=-1)
    assert generate_batch(decoder, _requests([6, 17, 4], short, seed=3), eos_id=-1, graphs=graphs) == want


def test_batches_outside_the_static_cache_run_eagerly(decoder) -> None:
    graphs = DecodeGraphs(decoder, max_batch=2, max_seq_len=300, capture=False)
    params = [SamplingParams(max_tokens=5, greedy=True)] * 3
    want = generate_batch(decoder, _requests([4, 5, 6], params, seed=4), eos_id=-1)
    assert not graphs.fits(3, 11)
    assert generate_batch(decoder, _requests([4, 5, 6], params, seed=4), eos_id=-1, graphs=graphs) == want
    long = [SamplingParams(max_tokens=20, greedy=True)]
    assert not graphs.fits(1, 300 + 1)
    want = generate_batch(decoder, _requests([290], long, seed=5), eos_id=-1)
    assert generate_batch(decoder, _requests([290], long, seed=5), eos_id=-1, graphs=graphs) == want


def test_cache_view_shares_memory_and_bounds() -> None:
    dec = LlamaDecoder(TextConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)).eval()
    cache = dec.new_cache(4, 64)
    view = cache.view(2, 16)
    assert view.k.shape[1:] == (2, 2, 17, 8) and view.valid.shape == (2, 17)
    view.k[0, 1, 0, 3] = 5.0
    assert float(cache.k[0, 1, 0, 3, 0]) == 5.0
    with pytest.raises(Exception, match="does not fit"):
        cache.view(5, 16)


def test_fused_projections_compute_the_same_function(decoder) -> None:
    """The GPU form (one q/k/v matmul, one gate/up matmul, rolled rotation, additive mask) equals
    the op-by-op form up to rounding, with a cache and padding, and keeps the weights and their names."""
    fused = LlamaDecoder(TEXT).eval()
    fused.load_state_dict(decoder.state_dict())
    fused.fuse_projections()
    state = fused.state_dict()
    assert state.keys() == decoder.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in decoder.state_dict().items())
    attn = fused.model.layers[0].self_attn
    assert attn.q_proj.weight.data_ptr() == attn.qkv.data_ptr()  # a view: no second copy
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, TEXT.vocab_size, (3, 20), generator=g)
    valid = torch.ones(3, 20, dtype=torch.bool)
    valid[1, 14:] = False
    valid[2, 5:] = False
    with torch.no_grad():
        outs = []
        for dec in (decoder, fused):
            cache = dec.new_cache(3, 64)
            prefill = dec(dec.embed(ids), torch.arange(20), cache, valid)
            step = dec(dec.embed(ids[:, :1]), torch.tensor([[20], [14], [5]]), cache, torch.ones(3, 1, dtype=torch.bool))
            outs.append(torch.cat([prefill[valid], step[:, 0]]))
    assert (outs[0] - outs[1]).abs().max().item() < 1e-4
    greedy = [SamplingParams(max_tokens=10, greedy=True)] * 2
    assert generate_batch(fused, _requests([9, 13], greedy, seed=8), eos_id=-1) == \
        generate_batch(decoder, _requests([9, 13], greedy, seed=8), eos_id=-1)


def test_streaming_ahead_keeps_tokens_and_their_order(decoder) -> None:
    """Launching each step before streaming the previous one (the GPU's order) changes neither the
    tokens nor the order in which callbacks see them, log-probabilities included."""
    def run(ahead: bool) -> tuple[list[list[int]], list[tuple]]:
        seen: list[tuple] = []
        params = [SamplingParams(max_tokens=9, greedy=True, logprobs=2),
                  SamplingParams(max_tokens=6, greedy=False, temperature=0.8, seed=5),
                  SamplingParams(max_tokens=7, greedy=True, repetition_penalty=1.3)]
        requests = _requests([8, 3, 12], params, seed=9)
        for i, r in enumerate(requests):
            r.on_token = lambda t, i=i: seen.append(("token", i, t))
            r.on_logprobs = lambda lp, i=i: seen.append(("logprobs", i, round(lp.logprob, 5)))
        out = generate_batch(decoder, requests, eos_id=-1, graphs=DecodeGraphs(decoder, 4, 64, capture=False),
                             ahead=ahead)
        return out, seen

    assert run(True) == run(False)
    out, seen = run(True)
    assert [len(ids) for ids in out] == [9, 6, 7]
    assert [e[2] for e in seen if e[:2] == ("token", 0)] == out[0]
