"""Decoder weight quantization on CPU: resident weight memory and greedy decode tokens/s of the
``int8_weight_only`` decoder (torchao, loaded the way the ``llm`` step loads it) against fp32 and
bf16 on the same weights, in one run; then what a LITA-13B decoder needs with each.

Every variant is loaded from one ``decoder.safetensors`` with
:func:`lita_serve.engine.torch_engine.load_decoder`. Ratios are against fp32 measured in the same run;
decode is timed as the best of interleaved runs (wall and this process's CPU time).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.common import compare, machine_note

# A small LLaMA (1/10 of Vicuna-13B's width, its vocabulary) so that a CPU run takes a minute.
BENCH_TEXT = dict(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8)
GiB = 1 << 30


def _write_weights(layout, cfg, seed: int = 0) -> None:
    from safetensors.torch import save_file  # noqa: PLC0415

    from lita_serve.llm.llama import LlamaDecoder  # noqa: PLC0415

    torch.manual_seed(seed)
    decoder = LlamaDecoder(cfg.text)
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            p.copy_(torch.ones_like(p) if "norm" in name else torch.randn_like(p) * 0.02)
    layout.decoder_weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(layout.decoder_weights))


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def weight_bytes_by_scheme(t) -> dict[str, int]:
    """Weight bytes of a LLaMA decoder with text config ``t`` per scheme, from its shapes.

    fp32/bf16: every tensor at 4/2 bytes. int8_weight_only (torchao, per-row): linear weights
    (attention, MLP, lm_head) 1 byte + per output row an fp32 scale and an int8 zero point (torchao
    keeps both, whatever the activation dtype), embeddings and norms bf16.
    int4_awq (TensorRT-LLM W4A16_AWQ): the layers' linear weights 0.5 byte + one fp16 scale per
    128-input group + one fp16 pre-quant scale per input channel; lm_head and embeddings fp16 (excluded).
    """
    h, i, n, v = t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.vocab_size
    kv = t.num_key_value_heads * (h // t.num_attention_heads)
    layer_linears = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]  # (out, in): q k v o, gate up, down
    layer_params = sum(o * k for o, k in layer_linears) * n
    head, embed, norms = v * h, v * h, (2 * n + 1) * h
    total = layer_params + head + embed + norms
    rows = sum(o for o, _ in layer_linears) * n + v
    awq = layer_params // 2 + sum(o * (k // 128) * 2 + k * 2 for o, k in layer_linears) * n
    return {"fp32": total * 4, "bf16": total * 2,
            "int8_weight_only": layer_params + head + rows * 5 + (embed + norms) * 2,
            "int4_awq": awq + (head + embed + norms) * 2}


def decoder_memory_13b() -> list[dict[str, Any]]:
    """What a LITA-13B decoder (Vicuna-13B dims) needs per scheme; the KV cache comes on top
    (2 x layers x hidden x 2 bytes per token in fp16)."""
    from lita_serve.config import LitaConfig  # noqa: PLC0415

    t = LitaConfig.from_name("lita-13b").text
    sizes = weight_bytes_by_scheme(t)
    total = sizes["fp32"] // 4
    kv_per_token = 2 * t.num_hidden_layers * t.hidden_size * 2
    print(f"LITA-13B decoder ({t.num_hidden_layers} layers x {t.hidden_size}, vocab {t.vocab_size}, "
          f"{total / 1e9:.2f} B parameters): weights " + ", ".join(f"{k} {b / GiB:.1f} GiB" for k, b in sizes.items())
          + f"; KV cache {kv_per_token / 2**20:.2f} MiB/token in fp16 ({kv_per_token * t.max_position_embeddings / GiB:.1f}"
            f" GiB for one {t.max_position_embeddings}-token sequence)")
    return [{"name": f"LITA-13B decoder weights, {k}", "bytes": b, "gib": round(b / GiB, 2)} for k, b in sizes.items()]


def run(short: bool = False) -> list[dict[str, Any]]:
    from lita_serve.config import LitaConfig, TextConfig  # noqa: PLC0415
    from lita_serve.adapters.layout import RepositoryLayout  # noqa: PLC0415
    from lita_serve.llm.generate import generate  # noqa: PLC0415
    from lita_serve.llm.sampling_params import SamplingParams  # noqa: PLC0415
    from lita_serve.llm.weight_quant import weight_bytes  # noqa: PLC0415
    from lita_serve.engine.torch_engine import load_decoder  # noqa: PLC0415

    print(machine_note())
    base = LitaConfig.from_name("tiny")
    cfg = replace(base, text=TextConfig(**BENCH_TEXT, max_position_embeddings=1024))
    prompt_len, new_tokens, repeat = (64, 16, 2) if short else (128, 32, 3)
    prompt = torch.randint(3, BENCH_TEXT["vocab_size"], (prompt_len,), generator=torch.Generator().manual_seed(1))
    params = SamplingParams(max_tokens=new_tokens, greedy=True)
    variants = {"fp32": (torch.float32, "none"), "bf16": (torch.bfloat16, "none"),
                "int8_weight_only": (torch.float32, "int8_weight_only"),
                "int8_weight_only + bf16 activations": (torch.bfloat16, "int8_weight_only")}
    with tempfile.TemporaryDirectory(prefix="lita-wq-") as tmp:
        layout = RepositoryLayout.of(Path(tmp))
        _write_weights(layout, cfg)
        decoders = {name: load_decoder(layout, cfg, device="cpu", dtype=dtype, quantization=q)
                    for name, (dtype, q) in variants.items()}
    memory = {name: weight_bytes(d) for name, d in decoders.items()}
    tokens = {name: generate(d, prompt.tolist(), None, params, eos_id=-1) for name, d in decoders.items()}
    best = {name: (float("inf"), float("inf")) for name in decoders}
    for _ in range(repeat):  # interleaved, so every variant sees the same background load
        for name, d in decoders.items():
            wall, cpu = _timed(lambda d=d: generate(d, prompt.tolist(), None, params, eos_id=-1))
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    print(f"decoder {BENCH_TEXT['num_hidden_layers']} layers x {BENCH_TEXT['hidden_size']}, vocab "
          f"{BENCH_TEXT['vocab_size']}; prompt {prompt_len} tokens, {new_tokens} new tokens, greedy, best of {repeat}")
    results = []
    for name in decoders:
        agree = sum(a == b for a, b in zip(tokens[name], tokens["fp32"])) / new_tokens
        print(f"  {name}: same greedy tokens as fp32 {agree:.0%}")
        if name == "fp32":
            continue
        results.append(compare(f"decoder weight memory, {name}", "fp32", memory["fp32"] / 2**20,
                               memory[name] / 2**20, "MiB"))
        results.append(compare(f"decode tokens/s (wall), {name}", "fp32", new_tokens / best["fp32"][0],
                               new_tokens / best[name][0], "tok/s", higher_is_better=True))
        results.append(compare(f"decode tokens per CPU-second, {name}", "fp32", new_tokens / best["fp32"][1],
                               new_tokens / best[name][1], "tok/cpu-s", higher_is_better=True))
    return results + decoder_memory_13b()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true")
    run(p.parse_args().short)
