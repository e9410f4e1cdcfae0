"""The cost of the OpenAI-compatible HTTP layer: the same requests over Triton's gRPC and over
``/v1/chat/completions``, measured by the same tool in the same run.

For each concurrency level, perf_analyzer sends the same streamed, greedy question about the
same videos first over streaming gRPC to the ``lita`` ensemble, then as OpenAI chat requests
(the video as a base64 data URL) to the frontend, which forwards them to the same server. Both
runs export per-response timestamps, so throughput, request latency, time to first token and
inter-token latency come out side by side, with the HTTP/gRPC ratio. CPU time is counted as
well: perf_analyzer's own (the client), tritonserver's with its model processes, and the
frontend's (it runs in this process, which otherwise only waits), each per request.

The videos are answered from the feature cache after their first request (the warm regime), so
what differs between the two columns is the transport, not the decoding.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from lita_serve.loadtest.inputs import DEFAULT_QUESTIONS, make_videos, write_input_data, write_openai_input_data
from lita_serve.loadtest.perf import PerfOptions, openai_perf_command, perf_command, read_csv, run_perf_analyzer
from lita_serve.loadtest.token_timing import latency_by_concurrency, read_profile_export, shrink_export
from lita_serve.serving.proc_stat import process_tree_cpu_seconds

logger = logging.getLogger(__name__)

ENDPOINTS = ("grpc", "openai")


@dataclass
class EndpointLevel:
    """One endpoint at one concurrency level."""

    endpoint: str
    concurrency: int
    throughput: float  # requests/s
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float | None
    ttft_p90_ms: float | None
    ttft_p99_ms: float | None
    itl_p50_ms: float | None
    itl_p90_ms: float | None
    itl_p99_ms: float | None
    requests: int  # every request perf_analyzer sent in the run (what the CPU times are divided by)
    client_cpu_ms: float  # perf_analyzer, per request
    frontend_cpu_ms: float  # this process (the OpenAI frontend's thread), per request
    triton_cpu_ms: float | None  # tritonserver and its model processes, per request (None: not ours)


class _CpuMeter:
    """CPU seconds spent by perf_analyzer runs (children), this process, and the server's process
    tree (tritonserver and its model processes)."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def read(self) -> tuple[float, float, float | None]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        server = process_tree_cpu_seconds(self.server_pid) if self.server_pid else None
        return children.ru_utime + children.ru_stime, time.process_time(), server


def _level(endpoint: str, level: int, csv_path: Path, profile: Path, before: tuple, after: tuple) -> EndpointLevel:
    row = read_csv(csv_path)[0]
    stream = latency_by_concurrency(profile).get(level)
    sent = sum(len(e.get("requests", [])) for e in read_profile_export(profile).get("experiments", []))
    per = 1e3 / max(sent, 1)
    flat = stream.flat() if stream is not None else {}
    return EndpointLevel(
        endpoint, level, row["Inferences/Second"], row.get("p50 latency", 0.0) / 1e3, row.get("p99 latency", 0.0) / 1e3,
        *(flat.get(f"{kind}_p{q}_ms") for kind in ("ttft", "itl") for q in (50, 90, 99)),
        requests=sent, client_cpu_ms=round((after[0] - before[0]) * per, 3),
        frontend_cpu_ms=round((after[1] - before[1]) * per, 3),
        triton_cpu_ms=None if before[2] is None else round((after[2] - before[2]) * per, 3))


def _warm_up(url: str, videos: Sequence[Path], question: str, max_tokens: int) -> None:
    """One request per video, so that both endpoints are measured on cached features."""
    from lita_client import LitaClient  # noqa: PLC0415

    with LitaClient(url, timeout=600, wait_ready=60) as client:
        for video in videos:
            client.ask(video, question, max_tokens=max_tokens)


def compare_endpoints(repository: str | Path | None, out_dir: str | Path, levels: Sequence[int] = (1, 8), *,
                      url: str | None = None, videos: Sequence[str | Path] | None = None,
                      question: str = DEFAULT_QUESTIONS[0], max_tokens: int = 16,
                      options: PerfOptions | None = None, timeout: float | None = None) -> dict[str, Any]:
    """Measure gRPC and the OpenAI endpoint at each of ``levels``; returns (and writes
    ``endpoints.json``) the levels and the OpenAI/gRPC ratios. A server is started on
    ``repository`` unless ``url`` (host:grpc_port) names a running one; the frontend always
    runs here, forwarding to it."""
    from lita_serve.openai_api import FrontendSettings, OpenAIFrontend  # noqa: PLC0415 - the serve extra
    from lita_serve.serving.launcher import Ports, TritonServer  # noqa: PLC0415
    from lita_serve.openai_api.frontend_settings import limits_of  # noqa: PLC0415

    out = Path(out_dir)
    runs = out / "endpoints"
    runs.mkdir(parents=True, exist_ok=True)
    # Both endpoints get the same fixed load: three windows of ``request_count`` requests, not a
    # search for stability (a shared 2-core host rarely settles; the comparison is what matters).
    opts = options or PerfOptions(request_count=24, max_trials=3, stability_percentage=1000)
    sources = [Path(v) for v in videos] if videos else make_videos(out / "videos", count=2, seconds=6.0)
    grpc_input = write_input_data(sources, runs / "grpc_input.json", [question],
                                  {"max_tokens": max_tokens, "greedy": True, "stream": True})
    openai_input = write_openai_input_data(sources, runs / "openai_input.json", [question], max_tokens)
    results: list[EndpointLevel] = []
    with ExitStack() as stack:
        server_pid = None
        if url is None:
            server = stack.enter_context(TritonServer(Path(repository), ports=Ports.free()))
            url = server.grpc_url
            server_pid = server.process.pid
        settings = FrontendSettings(url, limits=limits_of(repository))
        frontend = stack.enter_context(OpenAIFrontend(settings, port=Ports.free().http))
        _warm_up(url, sources, question, max_tokens)
        meter = _CpuMeter(server_pid)
        for level in levels:
            level_opts = replace(opts, concurrency=(level, level))
            for endpoint in ENDPOINTS:
                csv_path, profile = runs / f"{endpoint}_c{level}.csv", runs / f"{endpoint}_c{level}_profile.json"
                if endpoint == "grpc":
                    cmd = perf_command(url, grpc_input, csv_path, level_opts, profile_path=profile)
                else:
                    cmd = openai_perf_command(f"{frontend.host}:{frontend.port}", openai_input, csv_path, level_opts,
                                              profile_path=profile)
                before = meter.read()
                run_perf_analyzer(cmd, runs / f"{endpoint}_c{level}.log", timeout)
                results.append(_level(endpoint, level, csv_path, profile, before, meter.read()))
                shrink_export(profile, runs / f"{endpoint}_c{level}_tokens.json")
                logger.info("endpoint level measured", extra=asdict(results[-1]))
    summary = {"levels": [asdict(r) for r in results], "ratios": _ratios(results),
               "videos": [str(p) for p in sources], "max_tokens": max_tokens}
    (out / "endpoints.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _ratios(results: Sequence[EndpointLevel]) -> dict[str, dict[str, float | None]]:
    """Per level: OpenAI / gRPC for throughput, TTFT p50 and server-side CPU per request."""
    by = {(r.endpoint, r.concurrency): r for r in results}
    ratios: dict[str, dict[str, float | None]] = {}
    for level in sorted({r.concurrency for r in results}):
        grpc, http = by.get(("grpc", level)), by.get(("openai", level))
        if grpc is None or http is None:
            continue

        def ratio(a: float | None, b: float | None) -> float | None:
            return None if a is None or not b else round(a / b, 3)

        server = (lambda r: None if r.triton_cpu_ms is None else r.triton_cpu_ms + r.frontend_cpu_ms)
        ratios[str(level)] = {"throughput": ratio(http.throughput, grpc.throughput),
                              "ttft_p50": ratio(http.ttft_p50_ms, grpc.ttft_p50_ms),
                              "itl_p50": ratio(http.itl_p50_ms, grpc.itl_p50_ms),
                              "server_cpu_per_request": ratio(server(http), server(grpc))}
    return ratios


def format_table(summary: dict[str, Any]) -> str:
    """The levels side by side, one line each, and the ratios."""
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [f"{'endpoint':8} {'conc':>4} {'req/s':>7} {'p50 ms':>8} {'TTFT p50/p90/p99 ms':>22} "
             f"{'ITL p50/p90/p99 ms':>19} {'CPU ms/req client/frontend/triton':>34}"]
    for r in summary["levels"]:
        lines.append(f"{r['endpoint']:8} {r['concurrency']:>4} {r['throughput']:>7.2f} {r['p50_ms']:>8.1f} "
                     f"{ms(r['ttft_p50_ms']) + '/' + ms(r['ttft_p90_ms']) + '/' + ms(r['ttft_p99_ms']):>22} "
                     f"{ms(r['itl_p50_ms']) + '/' + ms(r['itl_p90_ms']) + '/' + ms(r['itl_p99_ms']):>19} "
                     f"{ms(r['client_cpu_ms']) + '/' + ms(r['frontend_cpu_ms']) + '/' + ms(r['triton_cpu_ms']):>34}")
    for level, ratio in summary["ratios"].items():
        parts = ", ".join(f"{k} {'-' if v is None else f'{v:.2f}x'}" for k, v in ratio.items())
        lines.append(f"openai/grpc at concurrency {level}: {parts}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lita_serve.loadtest.endpoint_compare --repository REPO [--levels 1,8]``."""
    import argparse  # noqa: PLC0415

    p = argparse.ArgumentParser(description="gRPC vs the OpenAI-compatible endpoint, measured by perf_analyzer")
    p.add_argument("--repository", default="model_repository")
    p.add_argument("--out", default="artifacts/load")
    p.add_argument("--url", default=None, help="host:grpc_port of a running server (default: start one)")
    p.add_argument("--levels", default="1,8", help="comma-separated concurrency levels")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--request-count", type=int, default=24, help="requests per measurement window")
    args = p.parse_args(argv)
    summary = compare_endpoints(args.repository, args.out, [int(x) for x in args.levels.split(",")], url=args.url,
                                max_tokens=args.max_tokens,
                                options=PerfOptions(request_count=args.request_count, max_trials=3,
                                                    stability_percentage=1000))
    print(format_table(summary))
    print(f"json: {Path(args.out) / 'endpoints.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
