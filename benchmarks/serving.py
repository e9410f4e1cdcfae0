"""Serving benchmarks through the real tritonserver (tiny LITA model, torch engine, CPU):

* overhead: end-to-end latency through the server vs :class:`~lita_serve.serving.inprocess.LitaPipeline`
  in-process, concurrency 1, same video, question and sampling (feature cache off for both);
* throughput: steady-state requests/s at concurrency 1, 2, 4, 8 and 1 again (dynamic batching in the
  encoder, batched decoding in the LLM step; cache off so every request decodes and encodes),
  measured like ``perf_analyzer`` in a window that holds neither the ramp-up nor the drain; and
  against its limit: the CPU seconds one request costs at concurrency 1 (the server's process
  tree plus the client in this process, both on this host) imply at most
  ``cores / cpu_per_request`` requests/s; concurrency 8 is reported as a percentage of that;
* cache: a repeated question on the same video (warm, features cached) vs the first one (cold).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import ARTIFACTS, build_bench_repository, compare, machine_note, process_cpu_seconds
from lita_serve.serving.proc_stat import process_tree_cpu_seconds
from lita_serve.serving.demo import QUESTION

MAX_TOKENS = 16


def bench_video(short: bool) -> bytes:
    """A 30 s 720p H.264 video (the frame-sampling benchmark's), or a small synthetic one with --short."""
    if short:
        from lita_serve.loadtest.inputs import make_videos  # noqa: PLC0415

        return make_videos(ARTIFACTS / "serving_videos", count=1, seconds=10.0)[0].read_bytes()
    from benchmarks.frame_sampling import make_video  # noqa: PLC0415

    return make_video(30, "720p").read_bytes()


def _ask(client, video: bytes) -> float:
    start = time.perf_counter()
    client.ask(video, QUESTION, max_tokens=MAX_TOKENS, greedy=True)
    return time.perf_counter() - start


def overhead(url: str, repo: Path, video: bytes, repeat: int, threads: int) -> dict[str, Any]:
    from lita_client import LitaClient  # noqa: PLC0415
    from lita_serve.llm.sampling_params import SamplingParams  # noqa: PLC0415
    from lita_serve.serving.inprocess import LitaPipeline  # noqa: PLC0415

    pipeline = LitaPipeline(repo, device="cpu")
    params = SamplingParams(max_tokens=MAX_TOKENS, greedy=True)
    served, local = [], []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the same per-process thread count as the server's models
    with LitaClient(url) as client:
        _ask(client, video)
        pipeline.ask(video, QUESTION, params)
        for _ in range(repeat):  # interleaved, so both see the same background load
            served.append(_ask(client, video))
            start = time.perf_counter()
            pipeline.ask(video, QUESTION, params)
            local.append(time.perf_counter() - start)
    torch.set_num_threads(before)
    t_local, t_served = statistics.median(local), statistics.median(served)
    result = compare("serving latency, concurrency 1 (median)", "in-process pipeline", t_local * 1e3,
                     t_served * 1e3, "ms")
    result["overhead_pct"] = (t_served / t_local - 1) * 100
    print(f"serving overhead: {result['overhead_pct']:.1f} % of in-process latency (target <= 10 %)")
    return result


def throughput(url: str, video: bytes, levels: tuple[int, ...], window_s: float,
               server_pid: int | None = None) -> list[dict[str, Any]]:
    """Steady-state requests/s and CPU seconds per request at each concurrency in ``levels``.

    Like ``perf_analyzer``'s measurement windows: ``c`` workers keep ``c`` requests in flight
    the whole time; the window opens at the ``c``-th completion (the warm-up: the pipeline is
    full) and closes at the first completion ``window_s`` seconds or more after that. Requests
    still in flight then finish outside the window, so neither the ramp-up nor the drain, when
    fewer than ``c`` requests are in flight, is counted. CPU (server process tree + this process)
    is read at those two completions only. A level listed twice (concurrency 1 first and last)
    pools its windows, so a host that speeds up or slows down during the run moves the
    concurrency-1 figures (the limit) and the others alike.
    """
    from lita_client import LitaClient  # noqa: PLC0415

    def cpu_now() -> float:
        used = process_cpu_seconds()
        return used + (process_tree_cpu_seconds(server_pid) if server_pid else 0.0)

    windows: dict[int, list[tuple[int, float, float]]] = {}  # concurrency -> (requests, seconds, CPU s) per window
    for c in levels:
        clients = [LitaClient(url) for _ in range(c)]
        marks: list[tuple[int, float, float]] = []  # (completions so far, time, CPU so far): window open, close
        completions = 0
        lock, stop = threading.Lock(), threading.Event()
        try:
            def worker(client) -> None:
                nonlocal completions
                while not stop.is_set():
                    try:
                        _ask(client, video)
                    except BaseException:
                        stop.set()  # the other workers end too, so the failure surfaces
                        raise
                    now = time.perf_counter()
                    with lock:
                        completions += 1
                        if completions == c or (len(marks) == 1 and now - marks[0][1] >= window_s):
                            marks.append((completions, now, cpu_now()))
                            if len(marks) == 2:
                                stop.set()

            _ask(clients[0], video)
            with ThreadPoolExecutor(c) as pool:
                for job in [pool.submit(worker, client) for client in clients]:
                    job.result()
            (n0, t0, cpu0), (n1, t1, cpu1) = marks
            count, seconds, cpu = n1 - n0, t1 - t0, cpu1 - cpu0
            windows.setdefault(c, []).append((count, seconds, cpu))
        finally:
            for client in clients:
                client.close()
        print(f"throughput at concurrency {c}: {count / seconds:.3f} req/s, {cpu / count:.3f} CPU s per request, "
              f"{cpu / seconds:.2f} cores busy ({count} requests in {seconds:.1f} s, steady state)", flush=True)
    rates, cpu_per_request, busy = {}, {}, {}
    for c, measured in windows.items():  # a level measured twice (first and last) pools its windows
        count, seconds, cpu = (sum(w[i] for w in measured) for i in range(3))
        rates[c], cpu_per_request[c], busy[c] = count / seconds, cpu / count, cpu / seconds
    top = max(levels)
    results = [compare(f"throughput, concurrency {top} vs 1", "concurrency 1", rates[1], rates[top], "req/s",
                       higher_is_better=True, target=1.6),
               {"name": "throughput by concurrency", "rates": rates, "cpu_s_per_request": cpu_per_request,
                "busy_cores": busy}]
    if server_pid:
        results.append(throughput_limit(rates[top], top, cpu_per_request[1], busy_cores=busy[top],
                                        cpu_at_concurrency=cpu_per_request[top]))
    return results


def throughput_limit(rate: float, concurrency: int, cpu_per_request: float, cores: int | None = None,
                     busy_cores: float | None = None, cpu_at_concurrency: float | None = None) -> dict[str, Any]:
    """Print and return the CPU-bound throughput limit ``cores / cpu_per_request`` and ``rate``
    as a percentage of it (target >= 90 %).

    ``busy_cores`` (CPU seconds per second our processes got while at ``concurrency``) says how
    much of the machine the run actually had: on a host shared with other work it is below
    ``cores``, and the percentage is then bounded by ``busy_cores / cores`` whatever the server does.
    ``cpu_at_concurrency`` (CPU seconds per request at ``concurrency``) says why the rate is off
    the limit: batching in the encoder and the LLM can make a request cheaper than it is alone,
    two busy processes sharing the cores can make it dearer.
    """
    cores = cores or os.cpu_count() or 1
    limit = cores / cpu_per_request if cpu_per_request > 0 else float("nan")
    pct = 100 * rate / limit if limit == limit else float("nan")
    got = "" if busy_cores is None else f"; our processes had {busy_cores:.2f} of the {cores} cores meanwhile"
    if cpu_at_concurrency is not None:
        got += f", at {cpu_at_concurrency:.3f} CPU s per request"
    print(f"CPU per request at concurrency 1: {cpu_per_request:.3f} s (server processes + client); "
          f"limit on {cores} cores: {limit:.3f} req/s; concurrency {concurrency}: {rate:.3f} req/s = "
          f"{pct:.0f} % of the limit (target >= 90 %: {'met' if pct >= 90 else 'NOT met'}){got}", flush=True)
    return {"name": f"throughput at concurrency {concurrency} vs the CPU-bound limit", "cpu_s_per_request": cpu_per_request,
            "cores": cores, "limit_req_s": limit, "rate_req_s": rate, "pct_of_limit": pct, "target_pct": 90.0,
            "busy_cores": busy_cores, "cpu_s_per_request_at_concurrency": cpu_at_concurrency}


def cache_warm_vs_cold(url: str, repo: Path, video: bytes, repeat: int) -> dict[str, Any]:
    from lita_client import LitaClient  # noqa: PLC0415
    from lita_serve.feature_cache import FeatureCache  # noqa: PLC0415
    from lita_serve.adapters.layout import RepositoryLayout  # noqa: PLC0415

    cache = FeatureCache.for_repository(repo, RepositoryLayout.of(repo).load_config())
    cold, warm = [], []
    with LitaClient(url) as client:
        _ask(client, video)
        for _ in range(repeat):
            cache.clear()  # the next request finds nothing: decode + encode
            cold.append(_ask(client, video))
            warm.append(_ask(client, video))  # same bytes, same sampling: features from the cache
    return compare("repeated question, same video (median end to end)", "cold", statistics.median(cold) * 1e3,
                   statistics.median(warm) * 1e3, "ms", target=5.0)


@contextmanager
def server_threads(n: int):
    """Start servers with ``n`` OpenMP threads per model process.

    Every Triton model instance is its own process with its own torch thread pool; with the
    default (all cores each) the idle pools' spinning threads fight the busy one on a 2-core
    host: warm requests measured 70-700 ms instead of ~35 ms.
    """
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before


def run(short: bool = False, server_omp_threads: int = 1) -> list[dict[str, Any]]:
    from lita_serve.serving.launcher import Ports, TritonServer  # noqa: PLC0415

    print(machine_note())
    print(f"server: {server_omp_threads} OpenMP thread(s) per model process; in-process pipeline: the same")
    video = bench_video(short)
    repeat = 3 if short else 8
    results: list[dict[str, Any]] = []
    plain = build_bench_repository(ARTIFACTS / "repo_nocache", feature_cache_bytes=0)
    with server_threads(server_omp_threads), TritonServer(plain, ports=Ports.free()) as server:
        results.append(overhead(server.grpc_url, plain, video, repeat, server_omp_threads))
        results += throughput(server.grpc_url, video, (1, 2, 4, 8, 1), window_s=8.0 if short else 30.0,
                              server_pid=server.process.pid if server.process else None)
    cached = build_bench_repository(ARTIFACTS / "repo_cache", feature_cache_bytes=256 << 20)
    with server_threads(server_omp_threads), TritonServer(cached, ports=Ports.free()) as server:
        results.append(cache_warm_vs_cold(server.grpc_url, cached, video, repeat))
    return results


if __name__ == "__main__":
    from lita_serve.feature_cache import temporary_cache_root

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true")
    with temporary_cache_root("lita-bench-cache-"):
        run(p.parse_args().short)
