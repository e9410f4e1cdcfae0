"""``run_load_test``: input data from real videos -> perf_analyzer over streaming gRPC -> CSV + PNG."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from lita_serve.loadtest.inputs import DEFAULT_QUESTIONS, make_videos, write_input_data
from lita_serve.loadtest.perf import PerfOptions, perf_command, read_csv, run_perf_analyzer
from lita_serve.loadtest.plot import plot_report

logger = logging.getLogger(__name__)


def summarize(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Per concurrency: throughput (req/s) and p50/p90/p99/avg latency in ms."""
    out = []
    for r in rows:
        item = {"concurrency": int(r["Concurrency"]), "throughput": r["Inferences/Second"]}
        for key, column in (("p50_ms", "p50 latency"), ("p90_ms", "p90 latency"), ("p99_ms", "p99 latency"),
                            ("avg_ms", "Avg latency")):
            if column in r:
                item[key] = r[column] / 1e3
        out.append(item)
    return out


def run_load_test(repository: str | Path | None, out_dir: str | Path, concurrency: tuple[int, int] = (1, 8), *,
                  url: str | None = None, videos: Sequence[str | Path] | None = None,
                  questions: Sequence[str] = DEFAULT_QUESTIONS, sampling: dict[str, Any] | None = None,
                  options: PerfOptions | None = None, timeout: float | None = None,
                  omp_threads: int | None = None) -> dict[str, Any]:
    """Load-test the ``lita`` ensemble with perf_analyzer; returns the summary (also saved as JSON).

    ``url`` (host:grpc_port) targets a running server; otherwise a tritonserver is started on
    ``repository`` for the run. ``videos`` default to two synthetic event videos. Writes
    ``input_data.json``, ``perf.csv``, ``perf.png``, ``perf_analyzer.log`` and ``summary.json``
    into ``out_dir``. ``omp_threads`` sets OMP_NUM_THREADS for a server started here: each model
    instance is a process with its own torch pool, and on a small host one thread each avoids
    oversubscription (measured on 2 cores: warm requests 35 ms with 1, 70-700 ms with 2).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    opts = options or PerfOptions()
    opts.concurrency = tuple(concurrency)  # type: ignore[assignment]
    video_paths = list(videos) if videos else make_videos(out / "videos")
    input_data = write_input_data(video_paths, out / "input_data.json", questions, sampling)
    csv_path, log_path = out / "perf.csv", out / "perf_analyzer.log"
    if url is None:
        if repository is None:
            raise ValueError("give a repository to serve or the url of a running server")
        from lita_serve.launcher import Ports, TritonServer  # noqa: PLC0415 - needs the serve extra

        previous = os.environ.get("OMP_NUM_THREADS")
        if omp_threads:
            os.environ["OMP_NUM_THREADS"] = str(omp_threads)
        try:
            with TritonServer(Path(repository), ports=Ports.free()) as server:
                run_perf_analyzer(perf_command(server.grpc_url, input_data, csv_path, opts), log_path, timeout)
        finally:
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = previous
    else:
        run_perf_analyzer(perf_command(url, input_data, csv_path, opts), log_path, timeout)
    rows = read_csv(csv_path)
    plot = plot_report(rows, out / "perf.png")
    summary = {"csv": str(csv_path), "plot": str(plot), "input_data": str(input_data), "log": str(log_path),
               "videos": [str(v) for v in video_paths], "results": summarize(rows)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lita_serve.loadtest.run --repository REPO --out DIR [--concurrency 1:8]``."""
    import argparse  # noqa: PLC0415

    p = argparse.ArgumentParser(description="perf_analyzer load test of the lita ensemble")
    p.add_argument("--repository", default="model_repository")
    p.add_argument("--out", default="artifacts/load")
    p.add_argument("--url", default=None, help="host:grpc_port of a running server (default: start one)")
    p.add_argument("--concurrency", default="1:8", help="start:end")
    p.add_argument("--video", action="append", default=None, help="video file (repeatable)")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--request-count", type=int, default=0, help="requests per level (0: time windows)")
    p.add_argument("--omp-threads", type=int, default=None, help="OMP_NUM_THREADS for the started server")
    args = p.parse_args(argv)
    lo, hi = (int(x) for x in args.concurrency.split(":"))
    summary = run_load_test(args.repository, args.out, (lo, hi), url=args.url, videos=args.video,
                            sampling={"max_tokens": args.max_tokens, "greedy": True},
                            options=PerfOptions(request_count=args.request_count), omp_threads=args.omp_threads)
    for r in summary["results"]:
        print(f"concurrency {r['concurrency']}: {r['throughput']:.2f} req/s, p50 {r.get('p50_ms', 0):.1f} ms, "
              f"p99 {r.get('p99_ms', 0):.1f} ms")
    print(f"csv: {summary['csv']}\nplot: {summary['plot']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
