"""The prepared GPU check (``make gpu-check``): the torch engine on CUDA against the CPU fp32
reference on the demo model, then LITA-13B figures from :mod:`benchmarks.gpu_13b`; one JSON file.

Runs in-process with the machine's own Python and torch (no tritonserver, no video decoder: the
demo event is rendered straight to frames), in a few minutes on one GPU:

* parity: the demo encoder's embeddings and the decoder's greedy answer on CUDA fp32 are the
  CPU's (token for token); in fp16 and bf16 the first-step logits stay within a tolerance and
  the greedy answer is reported next to the reference;
* LITA-13B (random weights, real dimensions): encoder ms for 100 frames, time to first token,
  decode tokens/s against the bound that the GPU's memory bandwidth sets.

Without CUDA it prints one line and exits with status 2.

    python -m benchmarks.gpu_check --bandwidth-tbs 4.8 --out artifacts/gpu_check.json   # H200
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

H200_TBS = 4.8  # NVIDIA's published HBM3e bandwidth of the H200, TB/s
QUESTION = "When does the red circle appear?"
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
    from lita_serve.demo import DEMO_DURATION_S, DEMO_EVENT  # noqa: PLC0415

    size = cfg.vision.image_size
    spec = VideoSpec(duration_s=DEMO_DURATION_S, fps=10, width=size, height=size, events=[DEMO_EVENT], seed=7)
    return torch.from_numpy(sampled_pixels(spec, cfg.lita.sample_frames, cfg.vision.image_mean,
                                           cfg.vision.image_std))[None]


def parity(repo: Path, device: str = "cuda") -> dict[str, Any]:
    """Demo model: ``device`` (fp32, fp16, bf16) against the CPU fp32 reference."""
    import torch  # noqa: PLC0415

    from lita_serve.layout import RepositoryLayout  # noqa: PLC0415
    from lita_serve.llm.generate import generate  # noqa: PLC0415
    from lita_serve.llm.sampling_params import SamplingParams  # noqa: PLC0415
    from lita_serve.prompt import build_input_ids  # noqa: PLC0415
    from lita_serve.tokenizer import LitaTokenizer  # noqa: PLC0415
    from lita_serve.torch_engine import load_decoder, load_encoder  # noqa: PLC0415

    layout = RepositoryLayout.of(repo)
    cfg = layout.load_config()
    tokenizer = LitaTokenizer.from_file(layout.tokenizer_path, cfg.lita.num_time_tokens)
    frames = demo_frames(cfg)
    params = SamplingParams(max_tokens=24)

    def run(device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
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
        return table.float().cpu(), logits, answer

    ref_table, ref_logits, ref_ids = run("cpu", torch.float32)
    out: dict[str, Any] = {"reference_answer": tokenizer.decode(ref_ids), "reference_ids": ref_ids}
    span = float(ref_logits.max() - ref_logits.min())
    for name, dtype in (("float32", torch.float32), ("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        table, logits, ids = run(device, dtype)
        row = {"embeddings_max_abs_diff": float((table - ref_table).abs().max()),
               "logits_max_abs_diff": float((logits - ref_logits).abs().max()),
               "answer": tokenizer.decode(ids), "token_exact": ids == ref_ids}
        if name == "float32":
            row["ok"] = row["token_exact"]
        else:
            row["ok"] = row["logits_max_abs_diff"] <= LOGIT_TOLERANCE[name] * span
        out[name] = row
        print(f"parity {name}: token-exact {row['token_exact']}, max |dlogit| {row['logits_max_abs_diff']:.4g} "
              f"(range {span:.3g}), answer {row['answer']!r} -> {'ok' if row['ok'] else 'FAIL'}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bandwidth-tbs", type=float, default=H200_TBS, help="the GPU's memory bandwidth, TB/s")
    p.add_argument("--config", default="lita-13b", help="LitaConfig preset for the 13B figures")
    p.add_argument("--out", type=Path, default=Path("artifacts/gpu_check.json"))
    args = p.parse_args(argv)
    problem = cuda_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    import torch  # noqa: PLC0415

    from benchmarks import gpu_13b  # noqa: PLC0415
    from lita_serve.demo import build_demo_repository  # noqa: PLC0415

    start = time.perf_counter()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "gpu": torch.cuda.get_device_name(0),
                              "torch": torch.__version__, "python": platform.python_version(),
                              "bandwidth_tbs": args.bandwidth_tbs}
    with tempfile.TemporaryDirectory(prefix="lita-gpu-check-") as tmp:
        repo = build_demo_repository(Path(tmp) / "repo", progress=False)
        report["parity"] = parity(repo)
    figures = Path(tempfile.mkdtemp(prefix="lita-gpu-13b-")) / "gpu_13b.json"
    code = gpu_13b.main(["--config", args.config, "--bandwidth-tbs", str(args.bandwidth_tbs), "--json", str(figures)])
    report["lita_13b"] = json.loads(figures.read_text()) if code == 0 and figures.is_file() else {"exit_code": code}
    report["wall_s"] = round(time.perf_counter() - start, 1)
    ok = all(report["parity"][d]["ok"] for d in ("float32", "float16", "bfloat16")) and code == 0
    report["ok"] = ok
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu-check {'ok' if ok else 'FAILED'} in {report['wall_s']} s: {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
