"""LLaMA decoder parity with transformers, KV cache, padding, sampling and generation."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lita_serve.config import TextConfig
from lita_serve.llm.generate import GenerationRequest, generate, generate_batch
from lita_serve.llm.llama import LlamaDecoder
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.llm.token_sampling import sample_next
from lita_serve.llm.token_sampling import make_generator
from lita_serve.errors import InvalidInputError, LimitExceededError

TEXT = TextConfig(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rope_theta=50000.0, max_position_embeddings=96)


def _hf_pair() -> tuple[LlamaForCausalLM, LlamaDecoder]:
    hf_cfg = LlamaConfig(vocab_size=TEXT.vocab_size, hidden_size=TEXT.hidden_size,
                         intermediate_size=TEXT.intermediate_size, num_hidden_layers=TEXT.num_hidden_layers,
                         num_attention_heads=TEXT.num_attention_heads, num_key_value_heads=TEXT.num_key_value_heads,
                         rope_theta=TEXT.rope_theta, rms_norm_eps=TEXT.rms_norm_eps,
                         max_position_embeddings=TEXT.max_position_embeddings, attn_implementation="eager")
    torch.manual_seed(0)
    hf = LlamaForCausalLM(hf_cfg).eval()
    ours = LlamaDecoder(TEXT).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)  # same parameter names, identity key map
    return hf, ours


@pytest.fixture(scope="module")
def pair() -> tuple[LlamaForCausalLM, LlamaDecoder]:
    return _hf_pair()


@pytest.fixture(scope="module")
def decoder(pair) -> LlamaDecoder:
    return pair[1]


def _full_logits(dec: LlamaDecoder, ids: list[int]) -> torch.Tensor:
    t = torch.tensor([ids])
    return dec(dec.embed(t), torch.arange(len(ids)))[0]  # [T,V]


@torch.no_grad()
def test_full_forward_matches_transformers(pair) -> None:
    hf, ours = pair
    ids = torch.randint(0, TEXT.vocab_size, (2, 13), generator=torch.Generator().manual_seed(1))
    ref = hf(ids).logits
    got = ours(ours.embed(ids), torch.arange(13))
    assert got.shape == (2, 13, TEXT.vocab_size)
    assert (ref - got).abs().max().item() < 1e-4


@torch.no_grad()
def test_kv_cached_decoding_equals_full_forward(decoder) -> None:
    ids = torch.randint(0, TEXT.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2))
    full = decoder(decoder.embed(ids), torch.arange(12))
    cache = decoder.new_cache(2, 20)
    parts = [decoder(decoder.embed(ids[:, :5]), torch.arange(5), cache)]
    for i in range(5, 12):
        parts.append(decoder(decoder.embed(ids[:, i:i + 1]), torch.tensor([i]), cache))
    assert (torch.cat(parts, 1) - full).abs().max().item() < 1e-5


@torch.no_grad()
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_matches_single_rows(decoder, side: str) -> None:
    rows = [[5, 17, 3, 99, 42, 7, 8], [11, 12, 13]]
    width = max(map(len, rows))
    ids = torch.zeros(2, width, dtype=torch.long)
    valid = torch.zeros(2, width, dtype=torch.bool)
    positions = torch.zeros(2, width, dtype=torch.long)
    for b, r in enumerate(rows):
        start = width - len(r) if side == "left" else 0
        ids[b, start:start + len(r)] = torch.tensor(r)
        valid[b, start:start + len(r)] = True
        positions[b, start:start + len(r)] = torch.arange(len(r))
    cache = decoder.new_cache(2, 16)
    batched = decoder(decoder.embed(ids), positions, cache, valid)
    nxt = torch.tensor([[1], [2]])
    step = decoder(decoder.embed(nxt), torch.tensor([[len(rows[0])], [len(rows[1])]]), cache)
    for b, r in enumerate(rows):
        single = _full_logits(decoder, r)
        got = batched[b][valid[b]]
        assert (got - single).abs().max().item() < 1e-5
        single_next = _full_logits(decoder, r + [int(nxt[b])])[-1]
        assert (step[b, 0] - single_next).abs().max().item() < 1e-5


@torch.no_grad()
def test_embed_puts_prompt_table_rows_at_fake_ids(decoder) -> None:
    table = torch.randn(4, TEXT.hidden_size)
    v = TEXT.vocab_size
    ids = torch.tensor([[3, v + 2, v + 0, 9, v + 3]])
    out = decoder.embed(ids, table)
    emb = decoder.model.embed_tokens.weight
    expected = torch.stack([emb[3], table[2], table[0], emb[9], table[3]])
    assert torch.equal(out[0], expected)
    with pytest.raises(InvalidInputError):
        decoder.embed(torch.tensor([[v + 4]]), table)
    with pytest.raises(InvalidInputError):
        decoder.embed(torch.tensor([[v]]), None)


def test_generate_greedy_equals_argmax_loop(decoder) -> None:
    prompt = [4, 8, 15, 16, 23, 42]
    expected: list[int] = []
    with torch.no_grad():
        seq = list(prompt)
        for _ in range(10):
            tok = int(_full_logits(decoder, seq)[-1].argmax())
            expected.append(tok)
            seq.append(tok)
    streamed: list[int] = []
    got = generate(decoder, prompt, None, SamplingParams(max_tokens=10), eos_id=-1, on_token=streamed.append)
    assert got == expected
    assert streamed == expected


def test_generate_with_prompt_table_matches_embedding_forward(decoder) -> None:
    table = torch.randn(3, TEXT.hidden_size, generator=torch.Generator().manual_seed(5))
    v = TEXT.vocab_size
    prompt = [1, v, v + 1, v + 2, 7]
    got = generate(decoder, prompt, table, SamplingParams(max_tokens=4), eos_id=-1)
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(4):
            ids = torch.tensor([seq])
            logits = decoder(decoder.embed(ids, table), torch.arange(len(seq)))[0, -1]
            seq.append(int(logits.argmax()))
    assert got == seq[len(prompt):]


def test_eos_and_stop_ids_stop_generation(decoder) -> None:
    prompt = [4, 8, 15]
    free = generate(decoder, prompt, None, SamplingParams(max_tokens=8), eos_id=-1)
    assert len(free) == 8
    cut = generate(decoder, prompt, None, SamplingParams(max_tokens=8), eos_id=free[3])
    first = free.index(free[3])
    assert cut == free[:first]
    stopped = generate(decoder, prompt, None, SamplingParams(max_tokens=8), eos_id=-1, stop_ids=(free[2],))
    assert stopped == free[:free.index(free[2])]


def test_sampling_is_reproducible_per_seed(decoder) -> None:
    def run(seed: int) -> list[int]:
        p = SamplingParams(max_tokens=12, greedy=False, temperature=1.5, seed=seed)
        return generate(decoder, [3, 1, 4, 1, 5], None, p, eos_id=-1)

    a, b = run(7), run(7)
    assert a == b and len(a) == 12
    others = [run(s) for s in (8, 9, 10)]
    assert any(o != a for o in others)


def test_max_tokens_and_on_token_count(decoder) -> None:
    calls: list[int] = []
    out = generate(decoder, [2, 3], None, SamplingParams(max_tokens=5, greedy=False, seed=1), eos_id=-1,
                   on_token=calls.append)
    assert len(out) == 5 and calls == out


def test_generate_batch_matches_single_requests(decoder) -> None:
    reqs = [GenerationRequest([4, 8, 15, 16, 23], params=SamplingParams(max_tokens=6)),
            GenerationRequest([9, 9], params=SamplingParams(max_tokens=3)),
            GenerationRequest([1, 2, 3], params=SamplingParams(max_tokens=5, greedy=False, seed=3))]
    batched = generate_batch(decoder, reqs, eos_id=-1)
    singles = [generate(decoder, r.input_ids, None, r.params, eos_id=-1) for r in reqs]
    assert batched == singles
    assert [len(o) for o in batched] == [6, 3, 5]


def test_generate_rejects_too_long_requests(decoder) -> None:
    with pytest.raises(LimitExceededError, match="max_position_embeddings"):
        generate(decoder, [1] * 90, None, SamplingParams(max_tokens=10), eos_id=2)
    with pytest.raises(InvalidInputError, match="empty"):
        generate(decoder, [], None, SamplingParams(max_tokens=10), eos_id=2)


@pytest.mark.parametrize("field,value,err", [
    ("max_tokens", 0, InvalidInputError), ("max_tokens", -3, InvalidInputError),
    ("max_tokens", 513, LimitExceededError), ("temperature", -0.1, InvalidInputError),
    ("temperature", float("nan"), InvalidInputError), ("temperature", float("inf"), InvalidInputError),
    ("top_p", 0.0, InvalidInputError), ("top_p", 1.5, InvalidInputError), ("top_k", -1, InvalidInputError),
    ("repetition_penalty", 0.0, InvalidInputError), ("repetition_penalty", -1.0, InvalidInputError),
    ("seed", -5, InvalidInputError),
])
def test_validate_names_the_bad_parameter(field: str, value, err) -> None:
    params = SamplingParams(**{field: value})
    with pytest.raises(err, match=field):
        params.validate(512)


def test_validate_accepts_defaults() -> None:
    assert SamplingParams().validate(512).max_tokens == 128
    with pytest.raises(LimitExceededError):
        SamplingParams().validate(64)


def test_repetition_penalty_top_k_top_p() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    greedy = SamplingParams(repetition_penalty=4.0)
    assert int(sample_next(logits, greedy, None, torch.tensor([[3]]))[0]) == 0  # 3.0/4 < 2.0
    assert int(sample_next(logits, greedy, None, torch.tensor([[-1, 200]]))[0]) == 3  # invalid ids ignored
    top1 = SamplingParams(greedy=False, top_k=1)
    gen = make_generator(0)
    assert all(int(sample_next(logits, top1, gen)[0]) == 3 for _ in range(20))
    # top_p keeps the smallest prefix reaching the mass: tokens 3 and 0 here
    nucleus = SamplingParams(greedy=False, top_p=0.8)
    drawn = {int(sample_next(logits, nucleus, gen)[0]) for _ in range(200)}
    assert drawn == {0, 3}
    # negative logits are multiplied by the penalty
    pen = SamplingParams(repetition_penalty=2.0)
    from lita_serve.llm.token_sampling import apply_repetition_penalty
    out = apply_repetition_penalty(logits, torch.tensor([[1, 2]]), pen.repetition_penalty)
    assert torch.equal(out, torch.tensor([[2.0, -2.0, 0.25, 3.0]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_decoder_matches_cpu(decoder) -> None:
    gpu = _hf_pair()[1].cuda()
    prompt = [4, 8, 15, 16, 23, 42]
    cpu_out = generate(decoder, prompt, None, SamplingParams(max_tokens=8), eos_id=-1)
    gpu_out = generate(gpu, prompt, None, SamplingParams(max_tokens=8), eos_id=-1)
    assert gpu_out == cpu_out
    with torch.no_grad():
        ids = torch.tensor([prompt])
        diff = gpu(gpu.embed(ids.cuda()), torch.arange(6)).cpu() - decoder(decoder.embed(ids), torch.arange(6))
    assert diff.abs().max().item() < 1e-3
