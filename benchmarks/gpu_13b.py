"""LITA-13B on CUDA with the torch engine: random fp16 weights with the real dimensions
(Vicuna-13B + CLIP ViT-L/14 at 224 px for ``lita-13b``, 336 px for ``lita-1.5-13b``).

Reports the visual-encoding time for the video's frames (100 by default), the time to first
token (prefill of the visual tokens + a question), and decode tokens/s next to the
memory-bandwidth bound: every decode step reads all decoder weights once, so
``bound = bandwidth / weight bytes per token`` (the KV cache read is added too). Decode is timed
twice: op by op, and from CUDA graphs over the static cache (:mod:`lita_serve.llm.cuda_graphs`),
as the server runs it on a GPU.

    python -m benchmarks.gpu_13b                       # CUDA, lita-13b, H100 SXM bandwidth
    python -m benchmarks.gpu_13b --config lita-1.5-13b --bandwidth-tbs 4.8   # e.g. H200
    python -m benchmarks.gpu_13b --device cpu --config tiny                   # smoke test

Without CUDA (and ``--device cuda``) it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Callable

import torch

from lita_serve.llm.cuda_graphs import DecodeGraphs
from lita_serve.engine.model import randomize_

H100_SXM_TBS = 3.35  # NVIDIA's published HBM3 bandwidth of the H100 SXM, TB/s
PROMPT_TEXT_TOKENS = 40  # the question and the conversation template around the visual tokens


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, repeat: int) -> float:
    """Median seconds of ``fn`` after one warm-up run."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(cfg, device: torch.device, dtype: torch.dtype):
    """(encoder, decoder) built directly on ``device`` in ``dtype`` (no CPU copy of 13B weights)."""
    from lita_serve.llm.llama import LlamaDecoder  # noqa: PLC0415
    from lita_serve.vision_encoder.encoder import VisualEncoder  # noqa: PLC0415

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            encoder = VisualEncoder(cfg).eval()
            decoder = LlamaDecoder(cfg.text).eval()
    finally:
        torch.set_default_dtype(previous)
    randomize_(encoder)
    randomize_(decoder)
    return encoder, decoder


def weight_bytes_per_token(decoder: torch.nn.Module) -> int:
    """Bytes of decoder weights one decode step reads (the embedding table: one row only)."""
    total = sum(p.numel() * p.element_size() for p in decoder.parameters())
    emb = decoder.model.embed_tokens.weight
    return total - emb.numel() * emb.element_size() + emb.shape[1] * emb.element_size()


def _batch_rate(decoder, prompt: list[int], table: torch.Tensor, params, batch: int, repeat: int) -> float:
    """Aggregate decode tokens/s of ``batch`` copies of the prompt run as one batch from CUDA graphs."""
    from lita_serve.llm.generate import GenerationRequest, generate_batch  # noqa: PLC0415

    graphs = DecodeGraphs(decoder, batch, len(prompt) + params.max_tokens)
    rates = []
    for i in range(repeat + 1):
        marks: list[float] = []
        requests = [GenerationRequest(prompt, table, params) for _ in range(batch)]
        requests[0].on_token = lambda _t: marks.append(time.perf_counter())
        generate_batch(decoder, requests, eos_id=-1, graphs=graphs)
        if i:
            rates.append(batch * (len(marks) - 1) / (marks[-1] - marks[0]))
    return statistics.median(rates)


def _replay_ms(graphs, max_len: int, n: int = 50) -> float | None:
    """GPU milliseconds of one replay of the batch-of-one decode graph (no host work between replays)."""
    step = graphs.session(1, max_len)[1]
    graph = step.entry.graph
    if graph is None:
        return None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(n):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / n


def _kernels_per_step(decoder, prompt: list[int], table: torch.Tensor) -> int | None:
    """Device kernels one op-by-op decode step launches (torch.profiler; None where it cannot tell)."""
    device = decoder.lm_head.weight.device
    if device.type != "cuda":
        return None
    try:
        with torch.inference_mode():
            cache = decoder.new_cache(1, len(prompt) + 2)
            ids = torch.tensor([prompt], device=device)
            decoder(decoder.embed(ids, table), torch.arange(len(prompt), device=device), cache)
            token, pos = torch.tensor([[5]], device=device), torch.tensor([[len(prompt)]], device=device)
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                decoder(decoder.embed(token), pos, cache)
                torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    except Exception:  # noqa: BLE001 - the profiler needs CUPTI; the count is a diagnostic only
        return None


def kv_bytes_per_token(cfg, context: int, element_size: int) -> int:
    """Bytes of KV cache one decode step reads at ``context`` tokens."""
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * context * element_size


def run(config: str = "lita-13b", device_name: str = "cuda", frames: int = 100, new_tokens: int = 128,
        bandwidth_tbs: float = H100_SXM_TBS, repeat: int = 3) -> dict[str, Any]:
    from lita_serve.config import LitaConfig  # noqa: PLC0415
    from lita_serve.llm.generate import generate  # noqa: PLC0415
    from lita_serve.llm.sampling_params import SamplingParams  # noqa: PLC0415
    from lita_serve.vision_encoder.visual_tokens import num_visual_tokens  # noqa: PLC0415

    device = torch.device(device_name)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    cfg = LitaConfig.from_name(config)
    cfg.lita.sample_frames = frames
    encoder, decoder = build(cfg, device, dtype)
    size = cfg.vision.image_size
    pixels = torch.randn(1, frames, 3, size, size, device=device, dtype=dtype)  # [1, F, 3, S, S]

    with torch.inference_mode():
        encode_s = _timed(lambda: encoder(pixels), device, repeat)
        table = encoder(pixels)[0]  # [N_vis, H]
    n_vis = num_visual_tokens(cfg)
    vocab = decoder.vocab_size
    text = torch.randint(3, min(vocab, 32000), (PROMPT_TEXT_TOKENS,), generator=torch.Generator().manual_seed(0))
    prompt = [1, *range(vocab, vocab + n_vis), *text.tolist()]  # BOS, visual tokens, question
    params = SamplingParams(max_tokens=new_tokens, greedy=True)

    def timed_decode(graphs: DecodeGraphs | None) -> tuple[float, float, list[int]]:
        """Median (time to first token, decode tokens/s) over ``repeat`` runs after a warm-up; the ids."""
        marks: list[float] = []
        ttfts, rates = [], []
        for i in range(repeat + 1):  # the first run warms up (kernels, allocator, graph capture)
            marks.clear()
            marks.append(time.perf_counter())
            ids = generate(decoder, prompt, table, params, eos_id=-1, graphs=graphs,
                           on_token=lambda _t: marks.append(time.perf_counter()))
            if i:
                ttfts.append(marks[1] - marks[0])
                rates.append((len(marks) - 2) / (marks[-1] - marks[1]))
        return statistics.median(ttfts), statistics.median(rates), ids

    # op by op; from CUDA graphs; from CUDA graphs with fused projections (as the server runs on CUDA)
    variants: dict[str, dict[str, Any]] = {}
    ttft_s, eager_tok_s, eager_ids = timed_decode(None)
    variants["op_by_op"] = {"tok_s": eager_tok_s, "kernels_per_step": _kernels_per_step(decoder, prompt, table)}
    tok_s, graph_ids = eager_tok_s, eager_ids
    if device.type == "cuda":
        for name in ("cuda_graphs", "cuda_graphs_fused"):
            if name == "cuda_graphs_fused":
                decoder.fuse_projections()
            graphs = DecodeGraphs(decoder, 1, len(prompt) + new_tokens)
            ttft_s, tok_s, graph_ids = timed_decode(graphs)
            variants[name] = {"tok_s": tok_s, "ids_equal_op_by_op": graph_ids == eager_ids,
                              "replay_ms": _replay_ms(graphs, len(prompt) + new_tokens),
                              "kernels_per_step": _kernels_per_step(decoder, prompt, table)}
            del graphs
            torch.cuda.empty_cache()
        variants["cuda_graphs_fused_batch_8"] = {"tok_s": _batch_rate(decoder, prompt, table, params, 8, repeat)}
    w_bytes = weight_bytes_per_token(decoder)
    kv = kv_bytes_per_token(cfg.text, len(prompt) + new_tokens // 2, torch.finfo(dtype).bits // 8)
    bound = bandwidth_tbs * 1e12 / (w_bytes + kv)
    result = {
        "config": cfg.name, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""), "frames": frames, "visual_tokens": n_vis,
        "prompt_tokens": len(prompt), "new_tokens": new_tokens,
        "visual_encoding_ms": encode_s * 1e3, "ttft_ms": ttft_s * 1e3, "video_to_first_token_ms": (encode_s + ttft_s) * 1e3,
        "decode_tok_s": tok_s, "decode_tok_s_eager": eager_tok_s, "decode_variants": variants,
        "weight_gb_per_token": w_bytes / 1e9, "kv_gb_per_token": kv / 1e9,
        "bandwidth_tbs": bandwidth_tbs, "bandwidth_bound_tok_s": bound, "fraction_of_bound": tok_s / bound,
    }
    print(f"{result['config']} on {result['device']} ({result['dtype']}), {frames} frames -> {n_vis} visual tokens, "
          f"prompt {len(prompt)} tokens")
    print(f"visual encoding: {result['visual_encoding_ms']:.1f} ms for {frames} frames")
    print(f"time to first token (prefill): {result['ttft_ms']:.1f} ms; video to first token: "
          f"{result['video_to_first_token_ms']:.1f} ms")
    for name, row in variants.items():
        print(f"decode {name}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in row.items()))
    print(f"decode: {tok_s:.1f} tok/s; bandwidth bound {bound:.1f} tok/s "
          f"({w_bytes / 1e9:.2f} GB weights + {kv / 1e9:.3f} GB KV per token at {bandwidth_tbs:g} TB/s): "
          f"{result['fraction_of_bound'] * 100:.0f} % of the bound")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="lita-13b", help="LitaConfig preset: lita-13b, lita-1.5-13b, tiny, ...")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test with a small config)")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--bandwidth-tbs", type=float, default=H100_SXM_TBS,
                   help=f"GPU memory bandwidth in TB/s (default {H100_SXM_TBS}: H100 SXM)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_13b: CUDA is not available (no NVIDIA GPU visible to torch, or a CPU-only torch build); "
              "run it on a GPU machine, or use `--device cpu --config tiny` for a smoke test.", file=sys.stderr)
        return 2
    result = run(args.config, args.device, args.frames, args.new_tokens, args.bandwidth_tbs, args.repeat)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
