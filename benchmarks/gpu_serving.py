"""Figures taken through the real ``tritonserver``: the demo answered on CPU and CUDA, and a
LITA-13B-shaped repository (dummy weights) timed as a client sees it.

Both run the product's own path: ``lita build`` code writes the repositories
(:func:`lita_build.builder.build` for the demo with ``device``, :func:`lita_build.dummy.build_dummy`
for 13B), :class:`lita_serve.serving.launcher.TritonServer` serves them, :class:`lita_client.LitaClient`
streams the answers over gRPC. Used by :mod:`benchmarks.gpu_check` on a GPU; with
``device="cpu"`` and the ``tiny`` preset the same code runs on any machine (its smoke test).
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_13b import kv_bytes_per_token, weight_bytes_per_token

VIDEOS = ("demo_red_circle.mp4", "second_video.mp4")  # what write_media makes, in that order
QUESTION_13B = "When does the red circle appear, and what happens after it disappears?"
DECODE_TOKENS = 256  # new tokens per timed request (greedy; dummy weights rarely choose EOS)


def write_media(folder: Path) -> tuple[Path, Path]:
    """The two videos the served checks ask about: the demo video and a second one (another event,
    size and length), made here since the GPU machine has no video encoder."""
    import dataclasses  # noqa: PLC0415

    from lita_serve.data.synthetic import make_event_video  # noqa: PLC0415
    from lita_serve.serving.demo import DEMO_EVENT, make_demo_video  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    demo, second = (folder / name for name in VIDEOS)
    make_demo_video(demo)
    make_event_video(second, duration_s=12.0, fps=10, width=128, height=96,
                     events=[dataclasses.replace(DEMO_EVENT, start_s=3.0, end_s=9.0)], seed=11)
    return demo, second


def _timings(stats: dict[str, Any]) -> dict[str, Any]:
    """The server's stats without its per-frame lists."""
    return {k: v for k, v in stats.items() if not isinstance(v, list)}


def serve_demo(workdir: Path, video: Path, device: str) -> dict[str, Any]:
    """Build the demo model for ``device`` (fp32), serve it, ask the demo question about ``video``."""
    from lita_build.builder import build  # noqa: PLC0415
    from lita_client import LitaClient  # noqa: PLC0415
    from lita_serve.serving.demo import QUESTION, demo_assets  # noqa: PLC0415
    from lita_serve.serving.launcher import Ports, TritonServer  # noqa: PLC0415

    assets = demo_assets()
    repo = workdir / f"demo-{device}"
    build(assets, assets / "tokenizer.model", lita_version="1.0", engine="torch", output=repo, progress=False,
          device=device)
    start = time.perf_counter()
    with TritonServer(repo, ports=Ports.free(), log_path=workdir / f"demo-{device}.log") as server:
        ready_s = time.perf_counter() - start
        with LitaClient(server.grpc_url) as client:
            answer = client.ask(video, QUESTION)
    row = {"device": device, "question": QUESTION, "answer": answer.text, "raw_answer": answer.raw_text,
           "segments": [list(s) for s in answer.segments], "server_ready_s": round(ready_s, 1),
           "stats": _timings(answer.stats)}
    print(f"demo served on {device}: {answer.raw_text!r} -> {answer.text!r} (server ready in {ready_s:.1f} s)",
          flush=True)
    return row


def _stream(client, video: Path, question: str, max_tokens: int) -> dict[str, Any]:
    """One streamed request: client-side time to first token, per-token arrival times, server stats."""
    start = time.perf_counter()
    stream = client.stream(video, question, max_tokens=max_tokens)
    arrivals = []
    for chunk in stream.chunks():
        if chunk.num_output_tokens > len(arrivals):  # a response that carries a new token
            arrivals.append(time.perf_counter())
    answer = stream.answer
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    return {"ttft_ms": (arrivals[0] - start) * 1e3 if arrivals else None, "tokens": len(arrivals),
            "decode_tok_s": rate, "total_s": time.perf_counter() - start, "stats": _timings(answer.stats),
            "num_input_tokens": answer.num_input_tokens, "arrivals": arrivals}


def _concurrent(url: str, video: Path, question: str, clients: int, max_tokens: int) -> dict[str, Any]:
    """``clients`` streams started together: aggregate tokens/s from the first token to the last."""
    from lita_client import LitaClient  # noqa: PLC0415

    results: list[dict[str, Any] | BaseException] = [None] * clients  # type: ignore[list-item]
    barrier = threading.Barrier(clients)

    def worker(i: int) -> None:
        try:
            with LitaClient(url) as client:
                barrier.wait()
                results[i] = _stream(client, video, question, max_tokens)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {clients} concurrent requests failed: {failed[0]!r}")
    first = min(r["arrivals"][0] for r in results)
    last = max(r["arrivals"][-1] for r in results)
    tokens = sum(r["tokens"] for r in results)
    return {"clients": clients, "tokens": tokens, "aggregate_tok_s": tokens / (last - first),
            "per_request_tok_s": statistics.median(r["decode_tok_s"] for r in results),
            "ttft_ms_median": statistics.median(r["ttft_ms"] for r in results),
            "batch_sizes": sorted(int(r["stats"].get("batch_size", 0)) for r in results)}


def serve_13b(workdir: Path, videos: tuple[Path, Path], tokenizer: Path, *, preset: str = "lita-13b", device: str = "cuda",
              dtype: str = "float16", bandwidth_tbs: float, published_tbs: float, repeat: int = 3,
              max_tokens: int = DECODE_TOKENS, clients: int = 8) -> dict[str, Any]:
    """Serve ``preset`` with dummy weights and time it through the server.

    The first video is asked about first (the server's first request), the second next (a cold
    request on a warm server: decoded, encoded, prefilled); then the first again, repeatedly
    (feature-cache hits: the time to first token is the prefill's), alone and from ``clients``
    clients at once.
    """
    import torch  # noqa: PLC0415

    from lita_build.dummy import build_dummy  # noqa: PLC0415
    from lita_client import LitaClient  # noqa: PLC0415
    from lita_serve.serving.launcher import Ports, TritonServer  # noqa: PLC0415
    from lita_serve.llm.llama import LlamaDecoder  # noqa: PLC0415
    from lita_serve.vision_encoder.visual_tokens import num_visual_tokens  # noqa: PLC0415

    repo = workdir / f"dummy-{preset}"
    summary = build_dummy(preset, tokenizer, output=repo, dtype=dtype, device=device, max_batch_size=clients)
    cfg = summary.config
    with torch.device("meta"):
        decoder = LlamaDecoder(cfg.text).to(getattr(torch, dtype))
    w_bytes = weight_bytes_per_token(decoder)
    start = time.perf_counter()
    with TritonServer(repo, ports=Ports.free(), log_path=workdir / f"dummy-{preset}.log") as server:
        ready_s = time.perf_counter() - start
        print(f"{preset} ({dtype}, dummy weights) served on {device}: ready in {ready_s:.1f} s", flush=True)
        with LitaClient(server.grpc_url, timeout=600.0) as client:
            first = _stream(client, videos[0], QUESTION_13B, 8)
            cold = _stream(client, videos[1], QUESTION_13B, 8)
            warm = [_stream(client, videos[0], QUESTION_13B, max_tokens) for _ in range(repeat + 1)][1:]
        prompt_tokens = warm[0]["num_input_tokens"]
        _concurrent(server.grpc_url, videos[0], QUESTION_13B, clients, max_tokens)  # captures the batch's graphs
        concurrent = _concurrent(server.grpc_url, videos[0], QUESTION_13B, clients, max_tokens)
    tok_s = statistics.median(r["decode_tok_s"] for r in warm)
    context = prompt_tokens + max_tokens // 2
    kv = kv_bytes_per_token(cfg.text, context, torch.finfo(getattr(torch, dtype)).bits // 8)
    bound = bandwidth_tbs * 1e12 / (w_bytes + kv)
    published_bound = published_tbs * 1e12 / (w_bytes + kv)
    result = {
        "preset": preset, "dtype": dtype, "device": device, "weights": "dummy (N(0, 0.02), drawn at load)",
        "served_through_tritonserver": True, "server_ready_s": round(ready_s, 1),
        "frames": cfg.lita.sample_frames, "image_size": cfg.vision.image_size,
        "visual_tokens": num_visual_tokens(cfg), "prompt_tokens": prompt_tokens, "max_tokens": max_tokens,
        "first_request": {"ttft_ms": first["ttft_ms"], "stats": first["stats"]},
        "cold": {"ttft_ms": cold["ttft_ms"], "stats": cold["stats"]},
        "ttft_ms": statistics.median(r["ttft_ms"] for r in warm),
        "prefill_ms": statistics.median(float(r["stats"].get("ttft_ms", 0.0)) for r in warm),
        "decode_tok_s_c1": tok_s, "tokens_c1": [r["tokens"] for r in warm],
        "concurrency": concurrent,
        "weight_gb_per_token": w_bytes / 1e9, "kv_gb_per_token": kv / 1e9,
        "bound_tok_s_measured_bandwidth": bound, "bound_tok_s_published_bandwidth": published_bound,
        "fraction_of_measured_bound_c1": tok_s / bound, "fraction_of_published_bound_c1": tok_s / published_bound,
        "warm_stats": warm[-1]["stats"],
    }
    print(f"{preset}: TTFT {result['ttft_ms']:.1f} ms warm (prefill {result['prefill_ms']:.1f} ms server-side), "
          f"{cold['ttft_ms']:.0f} ms cold; decode c1 {tok_s:.1f} tok/s = {tok_s / bound * 100:.0f} % of "
          f"{bound:.1f} tok/s ({bandwidth_tbs:.2f} TB/s measured), {tok_s / published_bound * 100:.0f} % of "
          f"{published_bound:.1f} ({published_tbs:g} TB/s published); c{clients}: "
          f"{concurrent['aggregate_tok_s']:.1f} tok/s aggregate, batches {concurrent['batch_sizes']}", flush=True)
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write the videos the GPU check asks about")
    parser.add_argument("--write-media", type=Path, required=True, metavar="DIR")
    for path in write_media(parser.parse_args().write_media):
        print(path)
