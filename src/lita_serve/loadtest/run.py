"""``run_load_test``: two regimes, each measured by perf_analyzer one concurrency level at a time.

* **cold** (what sizing should use): every request carries a video the server has never seen
  (:func:`~lita_serve.loadtest.inputs.distinct_copies` of the :data:`VIDEO_MIX`), so every
  request decodes and encodes;
* **warm**: the same few videos over and over, answered from the visual-feature cache.

Each level gets its own input file of fresh copies (perf_analyzer starts from the first entry on
every run) and is bracketed by reads of the server's ``lita_feature_cache_lookups_total``
counters, so the report proves its regime: a cold level whose hit ratio is over
:data:`MAX_COLD_HIT_RATIO` is marked invalid. A cold request's latency measured with the SDK on
other fresh copies checks the cold level-1 throughput from outside perf_analyzer.

Requests ask for one response per token (``stream``), and every level's perf_analyzer run
exports its per-response timestamps, from which each level gets its time to first token and
inter-token latency percentiles (:mod:`~lita_serve.loadtest.token_timing`).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import statistics
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from lita_serve.loadtest.inputs import DEFAULT_QUESTIONS, distinct_copies, make_video_mix, write_input_data
from lita_serve.loadtest.perf import PerfOptions, perf_command, read_csv, run_perf_analyzer
from lita_serve.loadtest.plot import plot_regimes
from lita_serve.loadtest.token_timing import PERCENTILES, StreamLatency, latency_by_concurrency, shrink_export

logger = logging.getLogger(__name__)

REGIMES = ("cold", "warm")
# The streaming-latency columns of the CSV (and keys of each level in summary.json).
STREAM_COLUMNS = tuple(f"{kind}_p{q}_ms" for kind in ("ttft", "itl") for q in PERCENTILES)
MAX_COLD_HIT_RATIO = 0.1
_LOOKUPS = "lita_feature_cache_lookups_total"


@dataclass
class LevelResult:
    """One concurrency level of one regime."""

    concurrency: int
    throughput: float  # requests/s
    p50_ms: float
    p90_ms: float
    p99_ms: float
    avg_ms: float
    hits: int
    misses: int
    # Streaming latency (ms) from the per-response timestamps; None where no token was timed.
    ttft_p50_ms: float | None = None
    ttft_p90_ms: float | None = None
    ttft_p99_ms: float | None = None
    itl_p50_ms: float | None = None
    itl_p90_ms: float | None = None
    itl_p99_ms: float | None = None
    tokens: int = 0

    def with_stream(self, stream: StreamLatency | None) -> "LevelResult":
        """This level with the TTFT / ITL percentiles of ``stream``."""
        if stream is None:
            return self
        values = {k: v for k, v in stream.flat().items() if k.startswith(("ttft_", "itl_"))}
        return replace(self, tokens=stream.tokens, **values)

    @property
    def hit_ratio(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "hit_ratio": self.hit_ratio}


def cache_lookups(metrics_url: str) -> dict[str, float]:
    """The server's feature-cache lookup counters: {"hit": n, "miss": n} (summed over labels)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    counts = {"hit": 0.0, "miss": 0.0}
    for line in text.splitlines():
        if line.startswith(_LOOKUPS):
            for result in counts:
                if f'result="{result}"' in line:
                    counts[result] += float(line.split()[-1])
    return counts


def answered_requests(metrics_url: str, model: str = "lita") -> int:
    """Requests ``model`` answered since the server started: Triton's ``nv_inference_request_success``
    (summed over versions). Counting it on each replica shows where a client's requests went."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("nv_inference_request_success{") and f'model="{model}"' in line))


def _level_row(row: dict[str, float], concurrency: int, before: dict[str, float], after: dict[str, float]
               ) -> LevelResult:
    ms = {key: row.get(column, 0.0) / 1e3 for key, column in (("p50_ms", "p50 latency"), ("p90_ms", "p90 latency"),
                                                                ("p99_ms", "p99 latency"), ("avg_ms", "Avg latency"))}
    return LevelResult(concurrency, row["Inferences/Second"], hits=int(after["hit"] - before["hit"]),
                       misses=int(after["miss"] - before["miss"]), **ms)


def requests_bound(opts: PerfOptions, concurrency: int) -> int:
    """How many requests one perf_analyzer run of ``opts`` can send at most (count windows)."""
    return (opts.max_trials + 1) * (opts.request_count + concurrency) + 2 * concurrency


def client_cold_latencies_ms(url: str, videos: Iterator[bytes], question: str, sampling: dict[str, Any],
                             samples: int) -> list[float]:
    """Latencies of ``lita-client``'s ``ask`` on ``samples`` fresh cold videos, one at a time."""
    from lita_client import LitaClient  # noqa: PLC0415

    times = []
    with LitaClient(url, timeout=600) as client:
        for video in itertools.islice(videos, samples):
            start = time.perf_counter()
            client.ask(video, question, **sampling)
            times.append((time.perf_counter() - start) * 1e3)
    return times


@contextmanager
def _served(repository: str | Path | None, url: str | None, metrics_url: str | None,
            omp_threads: int | None) -> Iterator[tuple[str, str | None]]:
    """(gRPC url, metrics url) of the given server, or of one started here for the run."""
    if url is not None:
        yield url, metrics_url
        return
    if repository is None:
        raise ValueError("give a repository to serve or the url of a running server")
    from lita_serve.serving.launcher import Ports, TritonServer  # noqa: PLC0415 - needs the serve extra

    previous = os.environ.get("OMP_NUM_THREADS")
    if omp_threads:
        os.environ["OMP_NUM_THREADS"] = str(omp_threads)
    try:
        with TritonServer(Path(repository), ports=Ports.free()) as server:
            yield server.grpc_url, f"http://{server.host}:{server.ports.metrics}/metrics"
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous


def run_load_test(repository: str | Path | None, out_dir: str | Path, concurrency: tuple[int, int] = (1, 8), *,
                  url: str | None = None, metrics_url: str | None = None,
                  videos: Sequence[str | Path] | None = None, warm_videos: Sequence[str | Path] | None = None,
                  question: str = DEFAULT_QUESTIONS[0], sampling: dict[str, Any] | None = None,
                  options: PerfOptions | None = None, timeout: float | None = None,
                  omp_threads: int | None = None, client_rounds: int = 2) -> dict[str, Any]:
    """Load-test the ``lita`` ensemble in both regimes; returns the summary (also ``summary.json``).

    ``url``/``metrics_url`` target a running server (without ``metrics_url`` the hit ratios, and
    so the cold regime's validity, are unknown); otherwise a tritonserver is started on
    ``repository``. ``videos`` are the cold regime's sources (default :data:`VIDEO_MIX`, made
    once in ``out_dir/videos``); ``warm_videos`` default to the first two of them. Writes
    ``summary.json``, ``perf.csv`` (one row per regime and level), ``perf.png`` and, per level,
    perf_analyzer's own input, CSV and log into ``out_dir/runs``. Then ``client_rounds`` times
    every source video, as fresh copies, is asked with the SDK one at a time (the outside check).
    """
    out = Path(out_dir)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    sampling = {"max_tokens": 16, "greedy": True} if sampling is None else dict(sampling)
    sampling.setdefault("stream", True)  # one response per token: TTFT and ITL are measurable
    # Count windows bound the requests per level, so each level's input file can hold one fresh
    # video per request. Cold requests take seconds each: a few windows of 8, judged leniently.
    opts = options or PerfOptions(request_count=8, max_trials=6, stability_percentage=100)
    if opts.request_count <= 0:
        opts = replace(opts, request_count=8)
    # Warm requests are cheap and need no fresh inputs: longer windows, so the levels stabilise.
    warm_opts = replace(opts, request_count=4 * opts.request_count, max_trials=max(opts.max_trials, 10))
    sources = [Path(v) for v in videos] if videos else make_video_mix(out / "videos")
    warm_sources = [Path(v) for v in warm_videos] if warm_videos else sources[:2]
    lo, hi = concurrency
    results: dict[str, list[LevelResult]] = {regime: [] for regime in REGIMES}
    with _served(repository, url, metrics_url, omp_threads) as (grpc_url, metrics):
        fresh = distinct_copies(sources, tag=f"{time.time_ns()}")  # unseen by this and earlier runs
        warm_input = write_input_data(warm_sources, runs / "warm_input.json", [question], sampling)
        for regime in REGIMES:
            for level in range(lo, hi + 1):
                if regime == "cold":
                    batch = list(itertools.islice(fresh, requests_bound(opts, level)))
                    input_data = write_input_data(batch, runs / f"cold_c{level}_input.json", [question], sampling)
                else:
                    input_data = warm_input
                before = cache_lookups(metrics) if metrics else {"hit": 0.0, "miss": 0.0}
                csv_path = runs / f"{regime}_c{level}.csv"
                profile = runs / f"{regime}_c{level}_profile.json"
                level_opts = replace(opts if regime == "cold" else warm_opts, concurrency=(level, level))
                run_perf_analyzer(perf_command(grpc_url, input_data, csv_path, level_opts, profile_path=profile),
                                  runs / f"{regime}_c{level}.log", timeout)
                after = cache_lookups(metrics) if metrics else before
                row = _level_row(read_csv(csv_path)[0], level, before, after).with_stream(
                    latency_by_concurrency(profile).get(level))
                shrink_export(profile, runs / f"{regime}_c{level}_tokens.json")
                results[regime].append(row)
                logger.info("load level measured", extra={"regime": regime, **row.to_json()})
        one_shot = {k: v for k, v in sampling.items() if k != "stream"}  # the SDK chooses streaming per call
        client_ms = client_cold_latencies_ms(grpc_url, fresh, question, one_shot, client_rounds * len(sources))
    return _report(out, results, sources, client_ms, metrics is not None)


def _report(out: Path, results: dict[str, list[LevelResult]], sources: Sequence[Path], client_ms: list[float],
            counted: bool) -> dict[str, Any]:
    cold = results["cold"]
    worst = max((r.hit_ratio for r in cold if r.hit_ratio is not None), default=None)
    summary: dict[str, Any] = {
        "regimes": {regime: [r.to_json() for r in rows] for regime, rows in results.items()},
        "cold_valid": (worst is not None and worst <= MAX_COLD_HIT_RATIO) if counted else None,
        "cold_worst_hit_ratio": worst,
        "videos": [{"file": str(p), "bytes": p.stat().st_size} for p in sources],
        "csv": str(out / "perf.csv"),
        "plot": str(out / "perf.png"),
    }
    if client_ms and cold and cold[0].concurrency == 1:
        # One request at a time over a mix of videos: throughput is 1 / the mean latency (the
        # median of a mixed set sits below the mean), so the check uses the mean; both are kept.
        summary["client_cold_median_ms"] = round(statistics.median(client_ms), 1)
        summary["client_cold_mean_ms"] = round(statistics.fmean(client_ms), 1)
        summary["cold_c1_throughput_vs_client"] = round(cold[0].throughput * statistics.fmean(client_ms) / 1e3, 3)
    with open(out / "perf.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["regime", "concurrency", "throughput", "p50_ms", "p90_ms", "p99_ms", "avg_ms", "hit_ratio",
                         *STREAM_COLUMNS])
        for regime, rows in results.items():
            for r in rows:
                writer.writerow([regime, r.concurrency, f"{r.throughput:.4f}", f"{r.p50_ms:.1f}", f"{r.p90_ms:.1f}",
                                 f"{r.p99_ms:.1f}", f"{r.avg_ms:.1f}",
                                 "" if r.hit_ratio is None else f"{r.hit_ratio:.3f}",
                                 *("" if getattr(r, c) is None else f"{getattr(r, c):.2f}" for c in STREAM_COLUMNS)])
    plot_regimes(results, out / "perf.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lita_serve.loadtest.run --repository REPO --out DIR [--concurrency 1:8]``."""
    import argparse  # noqa: PLC0415

    p = argparse.ArgumentParser(description="perf_analyzer load test of the lita ensemble (cold and warm)")
    p.add_argument("--repository", default="model_repository")
    p.add_argument("--out", default="artifacts/load")
    p.add_argument("--url", default=None, help="host:grpc_port of a running server (default: start one)")
    p.add_argument("--metrics-url", default=None, help="its metrics endpoint, e.g. http://host:8002/metrics")
    p.add_argument("--concurrency", default="1:8", help="start:end")
    p.add_argument("--video", action="append", default=None, help="cold-regime source video (repeatable)")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--request-count", type=int, default=8, help="requests per measurement window")
    p.add_argument("--omp-threads", type=int, default=None, help="OMP_NUM_THREADS for the started server")
    args = p.parse_args(argv)
    lo, hi = (int(x) for x in args.concurrency.split(":"))
    summary = run_load_test(args.repository, args.out, (lo, hi), url=args.url, metrics_url=args.metrics_url,
                            videos=args.video, sampling={"max_tokens": args.max_tokens, "greedy": True},
                            options=PerfOptions(request_count=args.request_count, max_trials=6,
                                                stability_percentage=100),
                            omp_threads=args.omp_threads)
    print_summary(summary)
    return 0 if summary["cold_valid"] is not False else 1


def print_summary(summary: dict[str, Any]) -> None:
    for regime, rows in summary["regimes"].items():
        for r in rows:
            ratio = "?" if r["hit_ratio"] is None else f"{r['hit_ratio']:.2f}"
            stream = "" if r.get("ttft_p50_ms") is None else (
                f", TTFT p50/p99 {r['ttft_p50_ms']:.0f}/{r['ttft_p99_ms']:.0f} ms, "
                f"ITL p50/p99 {r['itl_p50_ms'] or 0:.1f}/{r['itl_p99_ms'] or 0:.1f} ms")
            print(f"{regime} concurrency {r['concurrency']}: {r['throughput']:.2f} req/s, p50 {r['p50_ms']:.0f} ms, "
                  f"p99 {r['p99_ms']:.0f} ms, cache hit ratio {ratio}{stream}")
    validity = {True: "valid", False: "INVALID (cache hits over 10 %)", None: "unverified (no metrics url)"}
    print(f"cold regime: {validity[summary['cold_valid']]}")
    if "client_cold_mean_ms" in summary:
        print(f"lita-client ask, cold, one at a time: mean {summary['client_cold_mean_ms']:.0f} ms, median "
              f"{summary['client_cold_median_ms']:.0f} ms; cold throughput at concurrency 1 is "
              f"{summary['cold_c1_throughput_vs_client']:.2f}x 1/mean")
    print(f"csv: {summary['csv']}\nplot: {summary['plot']}")


if __name__ == "__main__":
    raise SystemExit(main())
