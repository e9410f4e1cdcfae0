"""``make demo``: build the demo model, serve it, ask about a generated video, print, stop.

The video is made here with a known event (a red circle visible from 6.0 s to 14.5 s of a
24 s clip, drawn like the demo model's training videos), so the printed answer can be checked
against the truth; the deviation is printed in time-token bins (duration / (N - 1) seconds).
"""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lita_serve.data.synthetic import Event, make_event_video
from lita_serve.adapters.resources import demo_assets

QUESTION = "When does the red circle appear?"
DEMO_EVENT = Event(shape="circle", color="red", start_s=6.0, end_s=14.5, x=0.25, y=0.3, size=0.13)
DEMO_DURATION_S = 24.0


@dataclass
class DemoResult:
    answer_text: str
    segments: list[tuple[float, float]]
    truth: tuple[float, float]
    bin_s: float
    video: Path

    @property
    def error_bins(self) -> tuple[float, float] | None:
        """(start, end) deviation from the truth in time-token bins; None without a segment."""
        if not self.segments:
            return None
        start, end = self.segments[0]
        return abs(start - self.truth[0]) / self.bin_s, abs(end - self.truth[1]) / self.bin_s

    @property
    def within_one_bin(self) -> bool:
        err = self.error_bins
        return err is not None and max(err) <= 1.0


def _ports_free(ports: tuple[int, ...]) -> bool:
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def build_demo_repository(repository: Path, assets: Path | None = None, progress: bool = True) -> Path:
    """Build ``assets`` (default: the demo checkpoint that ships with lita-serve) into ``repository``."""
    from lita_build.builder import build

    assets = demo_assets() if assets is None else assets
    build(assets, assets / "tokenizer.model", lita_version="1.0", engine="torch", output=repository,
          progress=progress)
    return repository


def make_demo_video(path: Path) -> Path:
    make_event_video(path, duration_s=DEMO_DURATION_S, fps=10, width=96, height=64, events=[DEMO_EVENT], seed=7)
    return path


def run_demo(repository: Path, workdir: Path, assets: Path | None = None, printer=print) -> DemoResult:
    from lita_client import LitaClient
    from lita_serve.serving.launcher import Ports, TritonServer

    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build_demo_repository(repository, assets)
    printer(f"built {repository} in {time.perf_counter() - t0:.1f} s")
    video = make_demo_video(workdir / "demo_red_circle.mp4")
    printer(f"video: {video} ({DEMO_DURATION_S:.0f} s; the red circle is visible from "
            f"{DEMO_EVENT.start_s:.1f} s to {DEMO_EVENT.end_s:.1f} s)")
    ports = Ports() if _ports_free((8000, 8001, 8002)) else Ports.free()
    with TritonServer(repository, ports=ports, log_path=workdir / "tritonserver.log") as server:
        printer(f"tritonserver ready on {server.grpc_url}")
        with LitaClient(server.grpc_url) as client:
            printer(f"Q: {QUESTION}")
            answer = client.ask(video, QUESTION)
    from lita_serve.adapters.layout import RepositoryLayout

    cfg = RepositoryLayout.of(repository).load_config()
    result = DemoResult(answer.text, [tuple(s) for s in answer.segments], (DEMO_EVENT.start_s, DEMO_EVENT.end_s),
                        answer.duration / (cfg.lita.num_time_tokens - 1), video)
    printer(f"A: {answer.text}")
    printer(f"   raw: {answer.raw_text}")
    err = result.error_bins
    off = "no segment in the answer" if err is None else f"start off by {err[0]:.1f} bins, end by {err[1]:.1f} bins"
    verdict = "within one time-token bin" if result.within_one_bin else "not within one time-token bin"
    printer(f"truth: {result.truth[0]:.1f}s - {result.truth[1]:.1f}s; one bin = {result.bin_s:.2f} s; {off} ({verdict})")
    return result


def main(repository: Path, workdir: Path) -> int:
    result = run_demo(repository, workdir)
    return 0 if result.segments else 1


if __name__ == "__main__":
    sys.exit(main(Path("model_repository"), Path("artifacts/demo")))
