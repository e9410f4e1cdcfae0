"""LLM decode tokens/s: our LLaMA decoder (KV cache, ``decode/generate.py``) against Hugging Face
``transformers`` ``LlamaForCausalLM.generate()`` on the same weights, on CPU: same prompt, greedy,
the same number of new tokens (EOS disabled), fp32.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks.common import compare, interleaved_min, machine_note

# A small LLaMA (1/10 of Vicuna-13B's width) so that a CPU run takes seconds.
BENCH_TEXT = dict(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8)


def build_models(seed: int = 0):
    """(ours, hf) with identical weights."""
    from transformers import LlamaConfig, LlamaForCausalLM  # noqa: PLC0415

    from lita_serve.config import TextConfig  # noqa: PLC0415
    from lita_serve.llm.llama import LlamaDecoder  # noqa: PLC0415

    cfg = TextConfig(**BENCH_TEXT, max_position_embeddings=1024)
    torch.manual_seed(seed)
    ours = LlamaDecoder(cfg).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.copy_(torch.ones_like(p) if "norm" in name else torch.randn_like(p) * 0.02)
    hf_cfg = LlamaConfig(**BENCH_TEXT, max_position_embeddings=1024, rms_norm_eps=cfg.rms_norm_eps,
                         tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
    hf = LlamaForCausalLM(hf_cfg).eval()
    missing, unexpected = hf.load_state_dict(ours.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weights do not map: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return ours, hf


def run(short: bool = False) -> list[dict[str, Any]]:
    from lita_serve.llm.generate import generate  # noqa: PLC0415
    from lita_serve.llm.sampling_params import SamplingParams  # noqa: PLC0415

    print(machine_note())
    prompt_len, new_tokens = (64, 32) if short else (128, 64)
    ours, hf = build_models()
    prompt = torch.randint(3, BENCH_TEXT["vocab_size"], (1, prompt_len), generator=torch.Generator().manual_seed(1))
    params = SamplingParams(max_tokens=new_tokens, greedy=True)

    def run_ours() -> list[int]:
        return generate(ours, prompt[0].tolist(), None, params, eos_id=-1)

    def run_hf() -> list[int]:
        with torch.inference_mode():
            out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[0, prompt_len:].tolist()

    same = run_ours() == run_hf()
    best = interleaved_min({"hf": run_hf, "ours": run_ours}, repeat=2 if short else 4)
    t_hf, t_ours = best["hf"], best["ours"]
    print(f"decode: prompt {prompt_len} tokens, {new_tokens} new tokens, greedy; same tokens as transformers: {same}")
    return [compare(f"LLM decode tokens/s ({BENCH_TEXT['num_hidden_layers']} layers x {BENCH_TEXT['hidden_size']})",
                    "transformers generate()", new_tokens / t_hf, new_tokens / t_ours, "tok/s",
                    higher_is_better=True, target=1.0)]


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true")
    run(p.parse_args().short)
