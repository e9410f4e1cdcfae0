"""The prepared GPU check (``make gpu-check``): one run on a GPU machine, one JSON report.

Runs with the machine's own Python and torch plus the offline bundle of ``make gpu-bundle``
(tritonserver with the python backend, numpy 1.x for its stub, a video decoder, tritonclient),
in a few minutes on one GPU:

* the device-to-device copy bandwidth, measured (the bound below uses it and the published one);
* parity: the demo encoder's embeddings and the decoder's greedy answer on CUDA fp32 are the
  CPU's (token for token), also from CUDA graphs; in fp16 and bf16 the first-step logits stay
  within a tolerance and the greedy answer is reported next to the reference;
* LITA-13B in-process (dummy weights, real dimensions, :mod:`benchmarks.gpu_13b`): encoder ms
  for 100 frames, decode op by op and from CUDA graphs;
* the demo repository served by the real ``tritonserver`` on the CPU and on CUDA: the same answer;
* a LITA-13B-shaped repository served by ``tritonserver`` (:mod:`benchmarks.gpu_serving`): time to
  first token, prefill, decode tokens/s at concurrency 1 and 8, against the bandwidth bound.

Each part records an error instead of stopping the run. Without CUDA it prints one line and
exits with status 2; ``--table REPORT`` prints the README table of a report.

    make gpu-check                                    # GPU machine, after `make gpu-bundle` here
    python -m benchmarks.gpu_check --table docs/gpu_results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from lita_serve.serving.demo import QUESTION

if TYPE_CHECKING:
    import torch

H200_TBS = 4.8  # NVIDIA's published HBM3e bandwidth of the H200, TB/s
LOGIT_TOLERANCE = {"float16": 0.05, "bfloat16": 0.25}  # max |logit - fp32 CPU logit|, relative to the logit range


def cuda_problem() -> str | None:
    """Why this machine cannot run the check (None when it can)."""
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return "gpu-check: torch is not installed"
    if not torch.cuda.is_available():
        return "gpu-check: CUDA is not available on this machine (no NVIDIA GPU or driver); nothing to check"
    return None


def demo_frames(cfg) -> "torch.Tensor":
    """The demo event's sampled frames, drawn at the model's size (no decoder needed) and
    CLIP-normalised: [1, F, 3, S, S]."""
    import torch  # noqa: PLC0415

    from lita_serve.data.synthetic import VideoSpec, sampled_pixels  # noqa: PLC0415
    from lita_serve.serving.demo import DEMO_DURATION_S, DEMO_EVENT  # noqa: PLC0415

    size = cfg.vision.image_size
    spec = VideoSpec(duration_s=DEMO_DURATION_S, fps=10, width=size, height=size, events=[DEMO_EVENT], seed=7)
    return torch.from_numpy(sampled_pixels(spec, cfg.lita.sample_frames, cfg.vision.image_mean,
                                           cfg.vision.image_std))[None]


def parity(repo: Path, device: str = "cuda") -> dict[str, Any]:
    """Demo model: ``device`` (fp32, fp16, bf16) against the CPU fp32 reference."""
    import torch  # noqa: PLC0415

    from lita_serve.adapters.layout import RepositoryLayout  # noqa: PLC0415
    from lita_serve.llm.cuda_graphs import DecodeGraphs  # noqa: PLC0415
    from lita_serve.llm.generate import generate  # noqa: PLC0415
    from lita_serve.llm.sampling_params import SamplingParams  # noqa: PLC0415
    from lita_serve.text.prompt import build_input_ids  # noqa: PLC0415
    from lita_serve.text.tokenizer import LitaTokenizer  # noqa: PLC0415
    from lita_serve.engine.torch_engine import load_decoder, load_encoder  # noqa: PLC0415

    layout = RepositoryLayout.of(repo)
    cfg = layout.load_config()
    tokenizer = LitaTokenizer.from_file(layout.tokenizer_path, cfg.lita.num_time_tokens)
    frames = demo_frames(cfg)
    params = SamplingParams(max_tokens=24)

    def run(device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
        encoder = load_encoder(layout, cfg, device=device, dtype=dtype)
        decoder = load_decoder(layout, cfg, device=device, dtype=dtype)
        with torch.inference_mode():
            table = encoder(frames.to(device, dtype))[0]  # [N_vis, H]
            ids = build_input_ids(tokenizer, QUESTION, table.shape[0], cfg.text.vocab_size,
                                  cfg.lita.visual_token_format, options=cfg.prompt)
            embeds = decoder.embed(torch.tensor([ids], device=device), table)  # [1, T, H]
            positions = torch.arange(embeds.shape[1], device=device)
            logits = decoder(embeds, positions, None)[0, -1].float().cpu()  # [V]
        answer = generate(decoder, ids, table, params, tokenizer.eos_id)
        graphs = DecodeGraphs(decoder, 1, len(ids) + params.max_tokens, capture=device != "cpu")
        replayed = generate(decoder, ids, table, params, tokenizer.eos_id, graphs=graphs)
        return table.float().cpu(), logits, answer, replayed

    ref_table, ref_logits, ref_ids, _ = run("cpu", torch.float32)
    out: dict[str, Any] = {"reference_answer": tokenizer.decode(ref_ids), "reference_ids": ref_ids}
    span = float(ref_logits.max() - ref_logits.min())
    for name, dtype in (("float32", torch.float32), ("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        table, logits, ids, replayed = run(device, dtype)
        row = {"embeddings_max_abs_diff": float((table - ref_table).abs().max()),
               "logits_max_abs_diff": float((logits - ref_logits).abs().max()),
               "answer": tokenizer.decode(ids), "token_exact": ids == ref_ids,
               "cuda_graphs_answer": tokenizer.decode(replayed), "cuda_graphs_token_exact": replayed == ids}
        if name == "float32":
            row["ok"] = row["token_exact"] and row["cuda_graphs_token_exact"]
        else:
            row["ok"] = row["logits_max_abs_diff"] <= LOGIT_TOLERANCE[name] * span
        out[name] = row
        print(f"parity {name}: token-exact {row['token_exact']}, max |dlogit| {row['logits_max_abs_diff']:.4g} "
              f"(range {span:.3g}), answer {row['answer']!r}, from CUDA graphs the same: "
              f"{row['cuda_graphs_token_exact']} -> {'ok' if row['ok'] else 'FAIL'}", flush=True)
    return out


def copy_bandwidth_tbs(nbytes: int = 4 << 30, repeat: int = 20) -> float:
    """Device memory bandwidth from a device-to-device copy, counting bytes read and written (TB/s)."""
    import torch  # noqa: PLC0415

    src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device="cuda")  # not zeros: no shortcut
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / statistics.median(times) / 1e12


def driver_version() -> str | None:
    """The NVIDIA driver's version as nvidia-smi reports it (None without nvidia-smi)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _section(report: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    """Run one part of the check; a failure is recorded under ``name`` and the next part still runs."""
    start = time.perf_counter()
    print(f"--- {name}", flush=True)
    try:
        report[name] = fn()
    except Exception as exc:  # noqa: BLE001 - one GPU run must report every part it could
        traceback.print_exc()
        report[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"--- {name}: {time.perf_counter() - start:.1f} s", flush=True)
    return report[name]


def passed(report: dict[str, Any]) -> dict[str, bool]:
    """The acceptance checks of a report, by name."""
    parity = report.get("parity", {})
    demo = report.get("demo_served", {})
    served = report.get("lita_13b_served", {})
    return {
        "parity": all(parity.get(d, {}).get("ok", False) for d in ("float32", "float16", "bfloat16")),
        "demo_served_same_answer_as_cpu": bool(demo.get("same_answer")),
        "served_through_tritonserver": bool(served.get("served_through_tritonserver")),
        "decode_c1_at_least_60_percent_of_measured_bound": served.get("fraction_of_measured_bound_c1", 0.0) >= 0.6,
    }


def results_table(report: dict[str, Any]) -> str:
    """The README's table of a report (``--table``)."""
    served, inproc = report.get("lita_13b_served", {}), report.get("lita_13b_in_process", {})
    demo = report.get("demo_served", {})
    conc = served.get("concurrency", {})
    variants = inproc.get("decode_variants", {})
    cold = served.get("cold", {})
    rows = [
        ("GPU, driver, torch", f"{report.get('gpu')}, {report.get('driver')}, {report.get('torch')}"),
        ("Copy bandwidth (device to device, read + write)",
         f"{report.get('bandwidth_measured_tbs', 0):.2f} TB/s (published {report.get('bandwidth_published_tbs')} TB/s)"),
        ("Demo through tritonserver, CPU / CUDA",
         f"`{demo.get('cpu', {}).get('answer')}` / `{demo.get('cuda', {}).get('answer')}` "
         f"(same tokens: {demo.get('same_answer')})"),
        (f"{served.get('preset')} ({served.get('dtype')}): prompt",
         f"{served.get('prompt_tokens')} tokens ({served.get('visual_tokens')} visual, {served.get('frames')} frames "
         f"at {served.get('image_size')} px)"),
        ("Encoder, 100 frames at 224 px (in-process)", f"{inproc.get('visual_encoding_ms', 0):.1f} ms"),
        ("TTFT, new video (decode + encode + prefill)", f"{cold.get('ttft_ms', 0):.0f} ms "
         f"(server: decode {cold.get('stats', {}).get('decode_ms', 0):.0f} ms, encoder "
         f"{cold.get('stats', {}).get('encode_ms', 0):.0f} ms)"),
        ("TTFT, cached video (prefill; server-side prefill)",
         f"{served.get('ttft_ms', 0):.1f} ms ({served.get('prefill_ms', 0):.1f} ms)"),
        ("Decode, concurrency 1", f"{served.get('decode_tok_s_c1', 0):.1f} tok/s = "
         f"{served.get('fraction_of_measured_bound_c1', 0) * 100:.0f} % of the measured-bandwidth bound "
         f"({served.get('bound_tok_s_measured_bandwidth', 0):.1f} tok/s), "
         f"{served.get('fraction_of_published_bound_c1', 0) * 100:.0f} % of the published one "
         f"({served.get('bound_tok_s_published_bandwidth', 0):.1f})"),
        (f"Decode, concurrency {conc.get('clients')}", f"{conc.get('aggregate_tok_s', 0):.1f} tok/s in all, "
         f"{conc.get('per_request_tok_s', 0):.1f} per request (batches {conc.get('batch_sizes')})"),
        ("Decode in-process: op by op / CUDA graphs / + fused projections / batch of 8",
         " / ".join(f"{variants.get(k, {}).get('tok_s', 0):.1f}" for k in
                    ("op_by_op", "cuda_graphs", "cuda_graphs_fused", "cuda_graphs_fused_batch_8")) + " tok/s"),
    ]
    lines = ["| What | Measured |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bandwidth-tbs", type=float, default=H200_TBS, help="the GPU's published memory bandwidth, TB/s")
    p.add_argument("--config", default="lita-13b", help="LitaConfig preset for the 13B figures")
    p.add_argument("--media", type=Path, default=Path(".gpu-bundle/media"),
                   help="folder with the two videos `make gpu-bundle` writes (no video encoder on the GPU machine)")
    p.add_argument("--out", type=Path, default=Path("artifacts/gpu_check.json"))
    p.add_argument("--workdir", type=Path, default=Path("artifacts/gpu_check"),
                   help="where the repositories, the videos' answers and the servers' logs go (kept)")
    p.add_argument("--table", type=Path, default=None, metavar="REPORT",
                   help="print the README table of a report written earlier, and stop")
    args = p.parse_args(argv)
    if args.table is not None:
        print(results_table(json.loads(args.table.read_text())))
        return 0
    problem = cuda_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    import torch  # noqa: PLC0415

    from benchmarks import gpu_13b, gpu_serving  # noqa: PLC0415
    from lita_serve.serving.demo import build_demo_repository, demo_assets  # noqa: PLC0415

    start = time.perf_counter()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "gpu": torch.cuda.get_device_name(0),
                              "driver": driver_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                              "python": platform.python_version(), "bandwidth_published_tbs": args.bandwidth_tbs,
                              "commands": ["make gpu-bundle  # here, from registry wheels",
                                           "make gpu-check   # on the GPU machine: python -m benchmarks.gpu_check "
                                           + " ".join(sys.argv[1:] if argv is None else argv)]}
    measured = _section(report, "bandwidth_measured_tbs", copy_bandwidth_tbs)
    bandwidth = measured if isinstance(measured, float) else args.bandwidth_tbs
    print(f"device-to-device copy: {bandwidth:.2f} TB/s", flush=True)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)

    def demo_parity() -> dict[str, Any]:
        return parity(build_demo_repository(work / "parity-repo", progress=False))

    _section(report, "parity", demo_parity)
    _section(report, "lita_13b_in_process", lambda: gpu_13b.run(args.config, "cuda", bandwidth_tbs=bandwidth))
    torch.cuda.empty_cache()
    videos = tuple(args.media / name for name in gpu_serving.VIDEOS)

    def demo_served() -> dict[str, Any]:
        rows = {device: gpu_serving.serve_demo(work, videos[0], device) for device in ("cpu", "cuda")}
        return {**rows, "same_answer": rows["cpu"]["raw_answer"] == rows["cuda"]["raw_answer"]}

    _section(report, "demo_served", demo_served)
    _section(report, "lita_13b_served", lambda: gpu_serving.serve_13b(
        work, videos, demo_assets() / "tokenizer.model", preset=args.config,
        bandwidth_tbs=bandwidth, published_tbs=args.bandwidth_tbs))
    report["wall_s"] = round(time.perf_counter() - start, 1)
    report["checks"] = passed(report)
    ok = all(report["checks"].values())
    report["ok"] = ok
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(results_table(report))
    print(f"gpu-check {'ok' if ok else 'FAILED'} in {report['wall_s']} s: {args.out} {report['checks']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
