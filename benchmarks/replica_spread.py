"""Client-side spreading over replicas (tiny LITA model, real tritonservers on loopback, CPU).

* spread: one batch at concurrency 8 against one server (baseline), then against two servers
  through one client URL ``a,b``: wall time, the client's CPU time, and how the requests split
  (from each server's ``nv_inference_request_success{model="lita"}``). On a machine whose cores
  the two servers share, two replicas cannot be faster: this shows the cost of spreading and
  that the split is even, not a speed-up.
* failover: the same batch on two servers with one killed (SIGKILL, the server and its model
  processes) once a third of the requests were placed: answered / lost, requests placed again,
  and wall time against the run without a kill.

    python -m benchmarks.replica_spread [--requests 48]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from typing import Any

from benchmarks.common import ARTIFACTS, build_bench_repository, compare, machine_note
from lita_serve.loadtest.run import answered_requests
from lita_serve.serving.demo import QUESTION

MAX_TOKENS = 8
CONCURRENCY = 8


def served_by(server) -> int:
    """Requests the ``lita`` ensemble answered on ``server`` since it started (Triton's own counter)."""
    return answered_requests(f"http://{server.host}:{server.ports.metrics}/metrics")


def run_batch(url: str, video: bytes, n: int, kill: Any = None) -> dict[str, Any]:
    """``n`` asks at concurrency 8 through one AsyncLitaClient; ``kill``: a server to SIGKILL after n/3 placed."""
    from lita_client import AsyncLitaClient  # noqa: PLC0415
    from lita_client.errors import LitaClientError  # noqa: PLC0415

    async def main() -> dict[str, Any]:
        async with AsyncLitaClient(url, timeout=300, wait_ready=60) as client:
            gate = asyncio.Semaphore(CONCURRENCY)
            errors: list[str] = []

            async def one() -> None:
                async with gate:
                    try:
                        await client.ask(video, QUESTION, max_tokens=MAX_TOKENS)
                    except LitaClientError as exc:
                        errors.append(str(exc))

            async def killer() -> None:
                while sum(r.requests for r in client.replicas.replicas) < n // 3:
                    await asyncio.sleep(0.02)
                os.killpg(kill.process.pid, signal.SIGKILL)

            task = asyncio.create_task(killer()) if kill is not None else None
            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one() for _ in range(n)))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if task is not None:
                await task
            placed = sum(r.requests for r in client.replicas.replicas)
            return {"wall_s": wall, "cpu_s": cpu, "errors": errors, "placed": placed}

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from lita_serve.feature_cache import temporary_cache_root  # noqa: PLC0415
    from lita_serve.serving.launcher import Ports, TritonServer  # noqa: PLC0415
    from lita_serve.loadtest.inputs import make_videos  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=48)
    args = p.parse_args(argv)
    n = args.requests
    print(machine_note(), flush=True)
    repo = build_bench_repository(ARTIFACTS / "replicas", feature_cache_bytes=0)  # every request decodes
    video = make_videos(ARTIFACTS / "replicas_videos", count=1, seconds=6.0)[0].read_bytes()
    results: dict[str, Any] = {}
    with temporary_cache_root("lita-bench-cache-"), \
            TritonServer(repo, ports=Ports.free()) as a, TritonServer(repo, ports=Ports.free()) as b:
        run_batch(a.grpc_url, video, CONCURRENCY)  # warm both
        run_batch(b.grpc_url, video, CONCURRENCY)
        one = run_batch(a.grpc_url, video, n)
        before = {s.grpc_url: served_by(s) for s in (a, b)}
        two = run_batch(f"{a.grpc_url},{b.grpc_url}", video, n)
        split = {s.grpc_url: served_by(s) - before[s.grpc_url] for s in (a, b)}
        print(f"spread: {n} requests, concurrency {CONCURRENCY}: per server {list(split.values())}, "
              f"errors {len(one['errors'])}/{len(two['errors'])}", flush=True)
        results["spread_wall"] = compare("spread wall time", "one server", one["wall_s"], two["wall_s"], "s")
        results["spread_cpu"] = compare("spread client CPU", "one server", one["cpu_s"], two["cpu_s"], "s")
        killed = run_batch(f"{a.grpc_url},{b.grpc_url}", video, n, kill=b)
        answered = n - len(killed["errors"])
        print(f"failover: {n} requests, one server killed after {n // 3} placed: answered {answered}, "
              f"lost {len(killed['errors'])}, placed again {killed['placed'] - n}", flush=True)
        results["failover_wall"] = compare("failover wall time", "two servers, no kill", two["wall_s"],
                                           killed["wall_s"], "s")
        results["failover"] = {"answered": answered, "lost": len(killed["errors"]), "placed_again": killed["placed"] - n}
    return results


if __name__ == "__main__":
    main()
