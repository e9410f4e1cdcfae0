"""Bounded soak: concurrency 8 on loopback, 20 % bad requests, every request accounted for.

Starts its own tritonserver on a tiny LITA repository built here (random weights, a SentencePiece
tokenizer trained here), sends requests from 8 threads for a fixed time, and checks that every
request got a response (an answer or an error), that every good answer equals the in-process
pipeline's greedy answer, and how much the server's RSS (tritonserver + its stubs) grew.

    python -m benchmarks.soak --short        # ~60-90 s
    python -m benchmarks.soak --seconds 480  # the full run (<= 10 min)

The last line is ``requests <n> answered <a> errors <e> lost <l> rss_start_mb <x> rss_end_mb <y>``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lita_client import LitaClient
from lita_client.errors import LitaClientError
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.feature_cache import temporary_cache_root
from lita_serve.serving.inprocess import LitaPipeline
from lita_serve.serving.launcher import Ports, TritonServer, stub_processes

QUESTIONS = ["When does the colour change?", "What happens at the start?", "Describe the video."]
BAD_KINDS = ("corrupt_video", "empty_video", "oversized_video", "empty_question", "max_tokens_over_limit",
             "negative_duration")


@dataclass
class SoakReport:
    requests: int = 0
    answered: int = 0
    errors: int = 0
    lost: int = 0
    wrong_answers: int = 0
    unexpected: int = 0  # a good request that failed, or a bad one that was answered
    errors_by_kind: Counter = field(default_factory=Counter)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0

    def line(self) -> str:
        return (f"requests {self.requests} answered {self.answered} errors {self.errors} lost {self.lost} "
                f"rss_start_mb {self.rss_start_mb:.1f} rss_end_mb {self.rss_end_mb:.1f}")

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.wrong_answers == 0 and self.unexpected == 0


def rss_mb(server_pid: int) -> float:
    """Resident memory of tritonserver plus its python-backend stubs, in MiB (from /proc)."""
    pids = [server_pid, *(s.pid for s in stub_processes(server_pid))]
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024.0


def build_soak_repository(root: Path, seed: int = 0) -> Path:
    """A tiny-preset repository (random weights, a tokenizer trained here), 1 MiB video limit."""
    from dataclasses import replace

    from lita_build.checkpoint.random_init import build_random_model
    from lita_build.checkpoint.vocab import DEFAULT_VOCAB_MULTIPLE, padded_vocab_size
    from lita_serve.config import LitaConfig
    from lita_build.repository import write_model_repository
    from lita_serve.engine.torch_engine import export_torch_engine
    from lita_serve.text.tokenizer import LitaTokenizer, convert_tokenizer, train_tiny_sentencepiece

    lines = [f"{q} The square turns {c} after {i} seconds." for i in range(120) for q, c in
             zip(QUESTIONS, ["red", "blue", "green"])]
    base = train_tiny_sentencepiece(lines, root / "base.model", vocab_size=300)
    tok = root / "lita.model"
    convert_tokenizer(base, tok, "1.0")
    cfg = LitaConfig.from_name("tiny")
    size = padded_vocab_size(cfg.text.vocab_size, LitaTokenizer.from_file(tok).vocab_size, DEFAULT_VOCAB_MULTIPLE)
    cfg = replace(cfg, text=replace(cfg.text, vocab_size=size))
    cfg.limits.max_video_bytes = 1 << 20
    cfg.limits.max_new_tokens = 64
    repo = root / "repo"
    write_model_repository(repo, cfg)
    export_torch_engine(build_random_model(cfg, seed), tok, repo)
    return repo


def make_videos(root: Path) -> list[bytes]:
    import av
    import numpy as np
    from fractions import Fraction

    videos = []
    for k, (seconds, fps) in enumerate([(2.0, 8), (3.0, 6), (1.5, 10)]):
        path = root / f"v{k}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=Fraction(fps))
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for i in range(int(seconds * fps)):
                rgb = np.full((48, 64, 3), ((i * 23 + k * 80) % 256, 40 * k, 200 - 10 * i % 200), np.uint8)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            out.mux(stream.encode(None))
        videos.append(path.read_bytes())
    return videos


def bad_request(kind: str, video: bytes, limit_bytes: int) -> tuple[bytes, str, dict]:
    if kind == "corrupt_video":
        return video[: len(video) // 3][::-1], QUESTIONS[0], {}
    if kind == "empty_video":
        return b"", QUESTIONS[0], {}
    if kind == "oversized_video":
        return b"\0" * (limit_bytes + 1), QUESTIONS[0], {}
    if kind == "empty_question":
        return video, " ", {}
    if kind == "max_tokens_over_limit":
        return video, QUESTIONS[0], {"max_tokens": 100_000}
    return video, QUESTIONS[0], {"duration": -1.0}


def soak(url: str, server_pid: int, pipeline: LitaPipeline, videos: list[bytes], seconds: float,
         concurrency: int = 8, bad_fraction: float = 0.2, seed: int = 0, log=print) -> SoakReport:
    """Run the soak against a running server; ``pipeline`` gives the expected greedy answers."""
    max_tokens = 6
    expected = {(v, q): pipeline.ask(videos[v], QUESTIONS[q], SamplingParams(max_tokens=max_tokens)).raw_text
                for v in range(len(videos)) for q in range(len(QUESTIONS))}
    limit = pipeline.cfg.limits.max_video_bytes
    report = SoakReport(rss_start_mb=rss_mb(server_pid))
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(wid: int) -> None:
        rng = random.Random(seed * 1000 + wid)
        with LitaClient(url, timeout=120, retries=3) as client:
            while time.monotonic() < deadline:
                bad = rng.random() < bad_fraction
                v, q = rng.randrange(len(videos)), rng.randrange(len(QUESTIONS))
                kind = rng.choice(BAD_KINDS) if bad else "good"
                video, question, extra = (bad_request(kind, videos[v], limit) if bad
                                          else (videos[v], QUESTIONS[q], {}))
                extra.setdefault("max_tokens", max_tokens)
                with lock:
                    report.requests += 1
                try:
                    answer = client.ask(video, question, **extra)
                except LitaClientError as exc:
                    with lock:
                        report.errors += 1
                        report.errors_by_kind[f"{kind}: {type(exc).__name__}"] += 1
                        report.unexpected += not bad
                    if not bad:
                        log(f"unexpected error for a good request: {exc}")
                    continue
                except Exception as exc:  # noqa: BLE001 - anything else: the request has no response
                    with lock:
                        report.lost += 1
                    log(f"lost request ({kind}): {type(exc).__name__}: {exc}")
                    continue
                with lock:
                    report.answered += 1
                    report.unexpected += bad
                    if not bad and answer.raw_text != expected[(v, q)]:
                        report.wrong_answers += 1
                        log(f"wrong answer: {answer.raw_text!r} != {expected[(v, q)]!r}")

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    report.rss_end_mb = rss_mb(server_pid)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="a ~60 s run (the CI / make soak variant)")
    parser.add_argument("--seconds", type=float, default=480.0, help="how long to send requests (max 600)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--bad-fraction", type=float, default=0.2)
    parser.add_argument("--server-log", default=None, help="keep the tritonserver log here")
    args = parser.parse_args(argv)
    seconds = 45.0 if args.short else min(args.seconds, 600.0)
    with tempfile.TemporaryDirectory(prefix="lita-soak-") as tmp, temporary_cache_root("lita-soak-cache-"):
        root = Path(tmp)
        repo = build_soak_repository(root)
        videos = make_videos(root)
        pipeline = LitaPipeline(repo, device="cpu")
        log_path = Path(args.server_log) if args.server_log else None
        with TritonServer(repo, ports=Ports.free(), log_path=log_path) as server:  # binds 127.0.0.1 only
            print(f"soak: {seconds:g} s, concurrency {args.concurrency}, {args.bad_fraction:.0%} bad, "
                  f"server {server.grpc_url}", flush=True)
            report = soak(server.grpc_url, server.process.pid, pipeline, videos, seconds, args.concurrency,
                          args.bad_fraction)
    for kind, n in sorted(report.errors_by_kind.items()):
        print(f"errors {kind}: {n}")
    print(f"wrong_answers {report.wrong_answers} unexpected {report.unexpected}")
    print(report.line(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
