"""Shared helpers: timing, ratio reports, the machine note, artifact folders, a bench repository."""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

ARTIFACTS = Path(os.environ.get("LITA_BENCH_DIR", "artifacts/bench"))


def machine_note() -> str:
    """Where the numbers come from: core count (shared with other processes on this host), torch threads."""
    return (f"machine: {os.cpu_count()} CPU cores visible (shared with other processes; timings are noisy), "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, Python {platform.python_version()}")


def interleaved_min(fns: dict[str, Callable[[], Any]], repeat: int = 3, warmup: int = 1) -> dict[str, float]:
    """Best wall time (s) of each function, runs interleaved (a, b, a, b, ...).

    On a host shared with other processes the minimum over interleaved runs is the figure least
    distorted by interference, and interleaving exposes every contender to the same load.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def compare(name: str, baseline_label: str, baseline: float, ours: float, unit: str,
            higher_is_better: bool = False, target: float | None = None) -> dict[str, Any]:
    """Print one line ``name: baseline X, ours Y, ratio R`` and return the numbers.

    ``ratio`` is always "how many times better ours is": baseline/ours for times, ours/baseline
    for rates.
    """
    ratio = (ours / baseline if higher_is_better else baseline / ours) if baseline and ours else float("nan")
    goal = "" if target is None else f" (target >= {target:g}x: {'met' if ratio >= target else 'NOT met'})"
    print(f"{name}: {baseline_label} {baseline:.4g} {unit}, ours {ours:.4g} {unit}, ratio {ratio:.2f}x{goal}",
          flush=True)
    return {"name": name, "baseline_label": baseline_label, "baseline": baseline, "ours": ours, "unit": unit,
            "ratio": ratio, "target": target}


def build_bench_repository(root: Path, feature_cache_bytes: int, seed: int = 0) -> Path:
    """A tiny-preset LITA repository (random weights, a SentencePiece tokenizer trained here)."""
    from lita_build.checkpoint.random_init import build_random_model  # noqa: PLC0415
    from lita_build.checkpoint.vocab import DEFAULT_VOCAB_MULTIPLE, padded_vocab_size  # noqa: PLC0415
    from lita_serve.config import LitaConfig  # noqa: PLC0415
    from lita_build.repository import write_model_repository  # noqa: PLC0415
    from lita_serve.engine.torch_engine import export_torch_engine  # noqa: PLC0415
    from lita_serve.text.tokenizer import LitaTokenizer, convert_tokenizer, train_tiny_sentencepiece  # noqa: PLC0415

    root = Path(root)
    repo = root / "repo"
    if (repo / "lita.json").is_file():
        return repo
    root.mkdir(parents=True, exist_ok=True)
    words = ["when", "does", "the", "red", "blue", "circle", "square", "appear", "describe", "video", "with",
             "timestamps", "what", "happens", "after", "a", "man", "opens", "door", "seconds"]
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(8)) + f" {i}." for i in range(300)]
    base = train_tiny_sentencepiece(lines, root / "base.model", vocab_size=300)
    tok_path = root / "lita.model"
    cfg = LitaConfig.from_name("tiny")
    convert_tokenizer(base, tok_path, cfg.lita.lita_version)
    size = padded_vocab_size(cfg.text.vocab_size, LitaTokenizer.from_file(tok_path).vocab_size, DEFAULT_VOCAB_MULTIPLE)
    cfg = replace(cfg, text=replace(cfg.text, vocab_size=size))
    cfg.limits.feature_cache_bytes = feature_cache_bytes
    write_model_repository(repo, cfg)
    export_torch_engine(build_random_model(cfg, seed), tok_path, repo)
    return repo


def process_cpu_seconds() -> float:
    """CPU seconds (user + system, every thread) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def interleaved_min_cpu(fns: dict[str, Callable[[], Any]], repeat: int = 3,
                        warmup: int = 1) -> dict[str, tuple[float, float]]:
    """Best wall time and best process CPU time (s) of each function, runs interleaved.

    CPU time counts every thread of this process (a decoder's worker threads included), so it
    is what a run costs the machine whatever the other processes on the host do; the minimum of
    each is taken separately, as for :func:`interleaved_min`.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start, cpu = time.perf_counter(), process_cpu_seconds()
            fn()
            wall, used = time.perf_counter() - start, process_cpu_seconds() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], used))
    return best
